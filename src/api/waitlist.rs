//! The waiting list: join, read one's place or promotion, leave.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, payload::Json};

use super::Tag;
use crate::{
    auth::Caller,
    error::ErrorResponse,
    ids::SaleId,
    limits::RateLimits,
    state::AppState,
    waitlist::{Joined, WaitView},
};

#[derive(Default)]
pub struct WaitlistApi;

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct JoinRequest {
    /// Units wanted when stock comes back, 1..=1000 and within the limit.
    #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
    pub quantity: i64,
}

#[derive(ApiResponse)]
enum JoinResponse {
    /// In line now.
    #[oai(status = 201)]
    Joined(Json<WaitView>),
    /// Already in line (same place) or already promoted.
    #[oai(status = 200)]
    Existing(Json<WaitView>),
}

#[derive(ApiResponse)]
enum LeaveResponse {
    /// Out of the line (or was not in it).
    #[oai(status = 204)]
    Left,
}

#[OpenApi(tag = "Tag::Waitlist")]
impl WaitlistApi {
    /// Join the sale's waiting list. 409 `stock_available` while units are
    /// free and nobody waits, `sold_out` once every unit is sold for good,
    /// `limit_exceeded` when the buyer could never be served.
    #[oai(
        path = "/sales/:id/waitlist",
        method = "post",
        operation_id = "joinWaitlist"
    )]
    async fn join(
        &self,
        state: Data<&AppState>,
        limits: Data<&Arc<RateLimits>>,
        caller: Caller,
        id: Path<String>,
        body: Json<JoinRequest>,
    ) -> Result<JoinResponse, ErrorResponse> {
        limits.check_buyer(caller.buyer_id()).await?;
        let sale = SaleId::parse(&id)?;
        Ok(
            match state
                .waitlist
                .join(&sale, caller.buyer_id(), body.quantity)
                .await?
            {
                Joined::New(view) => JoinResponse::Joined(Json(view)),
                Joined::Existing(view) => JoinResponse::Existing(Json(view)),
            },
        )
    }

    /// The caller's place in line, or the hold made for them.
    #[oai(
        path = "/sales/:id/waitlist/me",
        method = "get",
        operation_id = "myWaitlist"
    )]
    async fn me(
        &self,
        state: Data<&AppState>,
        caller: Caller,
        id: Path<String>,
    ) -> Result<Json<WaitView>, ErrorResponse> {
        let sale = SaleId::parse(&id)?;
        Ok(Json(state.waitlist.place(&sale, caller.buyer_id()).await?))
    }

    /// Leave the line.
    #[oai(
        path = "/sales/:id/waitlist/me",
        method = "delete",
        operation_id = "leaveWaitlist"
    )]
    async fn leave(
        &self,
        state: Data<&AppState>,
        limits: Data<&Arc<RateLimits>>,
        caller: Caller,
        id: Path<String>,
    ) -> Result<LeaveResponse, ErrorResponse> {
        limits.check_buyer(caller.buyer_id()).await?;
        let sale = SaleId::parse(&id)?;
        state.waitlist.leave(&sale, caller.buyer_id()).await?;
        Ok(LeaveResponse::Left)
    }
}
