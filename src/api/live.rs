//! `GET /sales/{id}/live`: the WebSocket of a sale's live stock and, with a
//! token, the buyer's own events.

use std::sync::Arc;

use poem::{
    Request,
    web::Data,
    web::websocket::{BoxWebSocketUpgraded, WebSocket},
};
use poem_openapi::{OpenApi, param::Path, param::Query};

use super::Tag;
use crate::{
    auth::JwtKeys,
    error::{ApiError, ErrorCode, ErrorResponse},
    ids::SaleId,
    limits::RateLimits,
    live::socket,
    state::AppState,
};

#[derive(Default)]
pub struct LiveApi;

#[OpenApi(tag = "Tag::Sales")]
impl LiveApi {
    /// Live feed (WebSocket, JSON text frames). First frame
    /// `{"type":"snapshot","seq","sale"}`, then one
    /// `{"type":"stock","seq","available","held","sold","status","waitlist_length","ts"}`
    /// per change; `seq` rises by one per change. Stock frames carry whole
    /// counts and a slow client gets only the newest, so a gap loses
    /// nothing. With a token
    /// (`?access_token=` or a bearer header) also `promoted`, `reservation`,
    /// `waitlist` and `sale_closed`. On a lobby sale every watcher gets
    /// `{"type":"lobby_figures","lobby_length","admitted","sold_out","started","ts"}`
    /// (at most once a second), and a buyer
    /// `{"type":"lobby","status","position","eta_seconds","admission_expires_at"}`
    /// on connect and when their status or place changes. The server pings
    /// every 15 s.
    #[oai(path = "/sales/:id/live", method = "get", operation_id = "liveFeed")]
    async fn live(
        &self,
        state: Data<&AppState>,
        limits: Data<&Arc<RateLimits>>,
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
        let watcher = match access_token.0.as_deref().or(header_token) {
            Some(token) => {
                let jwt = req.data::<Arc<JwtKeys>>().ok_or_else(|| {
                    ApiError::Internal(anyhow::anyhow!(
                        "the JWT keys are not attached to this route"
                    ))
                })?;
                let claims = jwt
                    .verify(token)
                    .map_err(|e| ApiError::new(ErrorCode::Unauthorized, e.to_string()))?;
                Some(socket::Watcher {
                    buyer: claims.sub,
                    token_expires: claims.exp,
                })
            }
            None => None,
        };
        let sale = SaleId::parse(&id)?;
        if state.live_context.stopping.is_unready() {
            return Err(ApiError::unavailable(
                "this instance is stopping; connect again to reach another",
            )
            .into());
        }
        // Refused before the upgrade: over the caps, or an unknown sale.
        let permit = state.live.admission.admit(limits.client_ip(req))?;
        state.sales.view(&sale).await?;
        let ctx = state.live_context.clone();
        Ok(ws
            .config(socket::socket_config())
            .on_upgrade(move |stream| socket::serve(ctx, sale, watcher, permit, stream))
            .boxed())
    }
}
