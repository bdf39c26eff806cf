//! `GET /sales/{id}/live`: the WebSocket of a sale's live stock and, with a
//! token, the buyer's own events.

use poem::{
    Request,
    web::Data,
    web::websocket::{BoxWebSocketUpgraded, WebSocket},
};
use poem_openapi::{OpenApi, param::Path, param::Query};

use super::Tag;
use crate::{
    error::{ApiError, ErrorResponse},
    live,
    state::AppState,
};

pub struct LiveApi;

#[OpenApi(tag = "Tag::Sales")]
impl LiveApi {
    /// Live feed (WebSocket, JSON text frames). First frame
    /// `{"type":"snapshot","seq","sale"}`, then one
    /// `{"type":"stock","seq","available","held","sold","status","waitlist_length","ts"}`
    /// per change; `seq` rises by one per change, so a gap means missed
    /// changes (a slow client skips to the newest state). With a token
    /// (`?access_token=` or a bearer header) also `promoted`, `reservation`,
    /// `waitlist` and `sale_closed`. The server pings every 15 s.
    #[oai(path = "/sales/:id/live", method = "get", operation_id = "liveFeed")]
    async fn live(
        &self,
        state: Data<&AppState>,
        id: Path<String>,
        /// A buyer token, for browsers that cannot set headers.
        access_token: Query<Option<String>>,
        req: &Request,
        ws: WebSocket,
    ) -> Result<BoxWebSocketUpgraded, ErrorResponse> {
        let header_token = req
            .headers()
            .get(poem::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let buyer = match access_token.0.as_deref().or(header_token) {
            Some(token) => Some(
                state
                    .jwt
                    .verify(token)
                    .map_err(|e| ApiError::Unauthorized(e.to_string()))?
                    .sub,
            ),
            None => None,
        };
        let sale = state.find_sale(&id).await?;
        let state = state.clone();
        Ok(ws
            .config(live::socket_config())
            .on_upgrade(move |socket| live::serve_socket(state, sale.id, buyer, socket))
            .boxed())
    }
}
