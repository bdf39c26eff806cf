//! The lobby before a sale: its public state, a buyer's join and place.

use poem::web::Data;
use poem_openapi::{ApiResponse, OpenApi, param::Path, payload::Json};

use super::Tag;
use crate::{
    auth::Caller,
    error::ErrorResponse,
    ids::SaleId,
    lobby::{LobbyDraw, LobbyEntry, LobbyView},
    state::AppState,
};

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

#[OpenApi(tag = "Tag::Lobby")]
impl LobbyApi {
    /// A sale's lobby: its opening, admission rate, how many joined, the
    /// SHA-256 of the draw's seed (from the opening) and the seed itself
    /// (from the start).
    #[oai(path = "/sales/:id/lobby", method = "get", operation_id = "getLobby")]
    async fn lobby(
        &self,
        state: Data<&AppState>,
        id: Path<String>,
    ) -> Result<Json<LobbyView>, ErrorResponse> {
        let sale = SaleId::parse(&id)?;
        Ok(Json(state.sales.lobby(&sale).await?))
    }

    /// Take a place in the lobby, from its opening on: before the start the
    /// draw places you; after it, you queue behind in arrival order. One
    /// place per buyer: joining again returns it (200).
    #[oai(path = "/sales/:id/lobby", method = "post", operation_id = "joinLobby")]
    async fn join(
        &self,
        state: Data<&AppState>,
        caller: Caller,
        id: Path<String>,
    ) -> Result<JoinResponse, ErrorResponse> {
        let sale = SaleId::parse(&id)?;
        let (entry, first) = state.sales.join_lobby(&sale, caller.buyer_id()).await?;
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
        Ok(Json(
            state.sales.lobby_entry(&sale, caller.buyer_id()).await?,
        ))
    }

    /// The draw, from the start on: the revealed seed, its SHA-256, and
    /// the lobby's values in draw order (no buyer ids).
    #[oai(
        path = "/sales/:id/lobby/draw",
        method = "get",
        operation_id = "lobbyDraw"
    )]
    async fn draw(
        &self,
        state: Data<&AppState>,
        id: Path<String>,
    ) -> Result<Json<LobbyDraw>, ErrorResponse> {
        let sale = SaleId::parse(&id)?;
        Ok(Json(state.sales.lobby_draw(&sale).await?))
    }
}
