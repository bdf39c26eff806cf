//! The lobby before a sale: its public state, a buyer's join and place,
//! and the draw.

use std::sync::Arc;

use bytes::Bytes;
use poem::{IntoResponse, Response, web::Data};
use poem_openapi::{
    ApiResponse, OpenApi,
    param::{Header, Path},
    payload::{Json, Payload},
    registry::{MetaMediaType, MetaResponse, MetaResponses, MetaSchemaRef, Registry},
    types::Type,
};

use super::Tag;
use crate::{
    auth::Caller,
    error::{ApiError, ErrorResponse},
    ids::SaleId,
    limits::RateLimits,
    lobby::{
        LobbyDraw, LobbyEntry, LobbyView,
        frozen::{Frozen, LobbyDrawIndex, LobbyDrawPage, accepts_gzip},
    },
    state::AppState,
};

#[derive(Default)]
pub struct LobbyApi;

#[derive(ApiResponse)]
enum JoinResponse {
    /// In the lobby now.
    #[oai(status = 201)]
    Joined(Json<LobbyEntry>),
    /// In the lobby before: the same entry.
    #[oai(status = 200)]
    Existing(Json<LobbyEntry>),
}

/// How long a client or a cache may keep the draw: it never changes.
const DRAW_CACHE: &str = "public, max-age=31536000, immutable";

#[derive(ApiResponse)]
enum FrozenResponse<T: Type + Send> {
    /// The document (gzip-encoded when the client accepts it). It never
    /// changes: keep it, and ask again with `If-None-Match`.
    #[oai(status = 200)]
    Whole(
        Encoded<T>,
        #[oai(header = "ETag")] String,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "Vary")] String,
    ),
    /// The document named by `If-None-Match`: unchanged, as always.
    #[oai(status = 304)]
    NotModified(
        #[oai(header = "ETag")] String,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "Vary")] String,
    ),
}

impl<T: Type + Send> FrozenResponse<T> {
    /// A frozen document as the request asks for it.
    fn of(doc: &Frozen, if_none_match: Option<&str>, accept_encoding: Option<&str>) -> Self {
        let gzip = accept_encoding.is_some_and(accepts_gzip);
        let vary = || "Accept-Encoding".to_owned();
        if if_none_match.is_some_and(|tag| doc.matches(tag)) {
            return Self::NotModified(doc.etag(gzip), DRAW_CACHE.to_owned(), vary());
        }
        Self::Whole(
            Encoded {
                body: doc.body(gzip),
                gzip,
                shape: std::marker::PhantomData,
            },
            doc.etag(gzip),
            DRAW_CACHE.to_owned(),
            vary(),
        )
    }
}

/// A JSON body encoded once and sent as it is, documented as `T`.
pub struct Encoded<T> {
    body: Bytes,
    gzip: bool,
    shape: std::marker::PhantomData<fn() -> T>,
}

impl<T: Type> Payload for Encoded<T> {
    const CONTENT_TYPE: &'static str = "application/json; charset=utf-8";

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Send> IntoResponse for Encoded<T> {
    fn into_response(self) -> Response {
        let mut resp = Response::builder().content_type("application/json; charset=utf-8");
        if self.gzip {
            resp = resp.header("Content-Encoding", "gzip");
        }
        resp.body(self.body)
    }
}

impl<T: Type> ApiResponse for Encoded<T> {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "",
                status: Some(200),
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: Self::CONTENT_TYPE,
                    schema: Self::schema_ref(),
                }],
                headers: vec![],
            }],
        }
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

#[OpenApi(tag = "Tag::Lobby")]
impl LobbyApi {
    /// A sale's lobby: its opening, admission rate, how many joined, the
    /// SHA-256 of the draw's seed (from the opening) and the seed itself
    /// (once the draw is made, at the start).
    #[oai(path = "/sales/:id/lobby", method = "get", operation_id = "getLobby")]
    async fn lobby(
        &self,
        state: Data<&AppState>,
        id: Path<String>,
    ) -> Result<Json<LobbyView>, ErrorResponse> {
        let sale = SaleId::parse(&id)?;
        Ok(Json(state.lobby.view(&sale).await?))
    }

    /// Take a place in the lobby, from its opening on: before the start the
    /// draw places you; after it, you queue behind in arrival order. One
    /// place per buyer: joining again returns it (200). Counts against the
    /// buyer's write quota.
    #[oai(path = "/sales/:id/lobby", method = "post", operation_id = "joinLobby")]
    async fn join(
        &self,
        state: Data<&AppState>,
        limits: Data<&Arc<RateLimits>>,
        caller: Caller,
        id: Path<String>,
    ) -> Result<JoinResponse, ErrorResponse> {
        limits.check_buyer(caller.buyer_id()).await?;
        let sale = SaleId::parse(&id)?;
        let (entry, first) = state.lobby.join(&sale, caller.buyer_id()).await?;
        Ok(match first {
            true => JoinResponse::Joined(Json(entry)),
            false => JoinResponse::Existing(Json(entry)),
        })
    }

    /// The caller's place in the lobby.
    #[oai(path = "/sales/:id/lobby/me", method = "get", operation_id = "myLobby")]
    async fn me(
        &self,
        state: Data<&AppState>,
        caller: Caller,
        id: Path<String>,
    ) -> Result<Json<LobbyEntry>, ErrorResponse> {
        let sale = SaleId::parse(&id)?;
        Ok(Json(state.lobby.entry(&sale, caller.buyer_id()).await?))
    }

    /// The draw, from the start on: the revealed seed, its SHA-256, and
    /// the lobby's values in draw order (no buyer ids). Made once at the
    /// start and never changed: served with an `ETag` and as immutable;
    /// with `If-None-Match` naming it the answer is 304. Until it is made
    /// (a moment after the start) the answer is 503 with `Retry-After`.
    /// To check one place, the index and one page will do.
    #[oai(
        path = "/sales/:id/lobby/draw",
        method = "get",
        operation_id = "lobbyDraw"
    )]
    async fn draw(
        &self,
        state: Data<&AppState>,
        id: Path<String>,
        /// An `ETag` of the draw read before: 304 if it is this draw.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
        /// `gzip` gets the draw gzip-encoded.
        #[oai(name = "Accept-Encoding")]
        accept_encoding: Header<Option<String>>,
    ) -> Result<FrozenResponse<LobbyDraw>, ErrorResponse> {
        let sale = SaleId::parse(&id)?;
        let draw = state.lobby.draw(&sale).await?;
        Ok(FrozenResponse::of(
            &draw.whole,
            if_none_match.as_deref(),
            accept_encoding.as_deref(),
        ))
    }

    /// The draw's index, from the start on: the seed, its SHA-256, the
    /// count, and for each page of `page_size` values its first and last
    /// value and the SHA-256 of its values joined by `\n`. A buyer finds
    /// the page their own value falls in, reads it and checks its hash:
    /// their place, checked, without the whole draw. Immutable, like the
    /// draw.
    #[oai(
        path = "/sales/:id/lobby/draw/index",
        method = "get",
        operation_id = "lobbyDrawIndex"
    )]
    async fn draw_index(
        &self,
        state: Data<&AppState>,
        id: Path<String>,
        /// An `ETag` of the index read before: 304 if it is this one.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
        /// `gzip` gets it gzip-encoded.
        #[oai(name = "Accept-Encoding")]
        accept_encoding: Header<Option<String>>,
    ) -> Result<FrozenResponse<LobbyDrawIndex>, ErrorResponse> {
        let sale = SaleId::parse(&id)?;
        let draw = state.lobby.draw(&sale).await?;
        Ok(FrozenResponse::of(
            &draw.index,
            if_none_match.as_deref(),
            accept_encoding.as_deref(),
        ))
    }

    /// One page of the draw (1-based): its values in draw order and the
    /// place of its first. Immutable, like the draw; 404 past the last
    /// page.
    #[oai(
        path = "/sales/:id/lobby/draw/pages/:page",
        method = "get",
        operation_id = "lobbyDrawPage"
    )]
    async fn draw_page(
        &self,
        state: Data<&AppState>,
        id: Path<String>,
        /// The page, 1 to the index's last.
        #[oai(validator(minimum(value = "1"), maximum(value = "100000")))]
        page: Path<i64>,
        /// An `ETag` of the page read before: 304 if it is this one.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
        /// `gzip` gets it gzip-encoded.
        #[oai(name = "Accept-Encoding")]
        accept_encoding: Header<Option<String>>,
    ) -> Result<FrozenResponse<LobbyDrawPage>, ErrorResponse> {
        let sale = SaleId::parse(&id)?;
        let draw = state.lobby.draw(&sale).await?;
        let doc = draw
            .page(page.0)
            .ok_or_else(|| ApiError::not_found("page"))?;
        Ok(FrozenResponse::of(
            doc,
            if_none_match.as_deref(),
            accept_encoding.as_deref(),
        ))
    }
}
