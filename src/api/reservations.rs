//! Buyer endpoints: reserve units, read, confirm and cancel a hold, and list
//! one's own orders.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{
    ApiResponse, Object, OpenApi, param::Header, param::Path, param::Query, payload::Json,
};

use super::Tag;
use crate::{
    auth::Caller,
    error::ErrorResponse,
    holds::{Canceller, OrderView, Outcome, ReservationView},
    ids::{ReservationId, SaleId},
    limits::RateLimits,
    state::AppState,
};

#[derive(Default)]
pub struct ReservationsApi;

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct ReserveRequest {
    /// Units to hold, 1..=1000 and within the sale's per-buyer limit.
    #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
    pub quantity: i64,
}

#[derive(ApiResponse)]
enum ReserveResponse {
    /// A new hold.
    #[oai(status = 201)]
    Created(Json<ReservationView>),
    /// The buyer's live hold on this sale, returned instead of a second one.
    #[oai(status = 200)]
    Existing(Json<ReservationView>),
}

#[derive(ApiResponse)]
enum ConfirmResponse {
    /// The order, durable in MongoDB.
    #[oai(status = 201)]
    Created(Json<OrderView>),
    /// The same order, confirmed before.
    #[oai(status = 200)]
    Existing(Json<OrderView>),
}

#[derive(ApiResponse)]
enum CancelResponse {
    /// Cancelled; the units are back in stock.
    #[oai(status = 204)]
    Cancelled,
}

fn default_limit() -> i64 {
    100
}

#[OpenApi(tag = "Tag::Reservations")]
impl ReservationsApi {
    /// Hold units of a sale. One live hold per buyer and sale: asking again
    /// returns that hold (200). With `Idempotency-Key`, a repeat returns the
    /// first answer.
    #[oai(
        path = "/sales/:id/reservations",
        method = "post",
        operation_id = "reserve"
    )]
    async fn reserve(
        &self,
        state: Data<&AppState>,
        limits: Data<&Arc<RateLimits>>,
        caller: Caller,
        id: Path<String>,
        /// Makes a retry safe: a repeat with the same key gets the first
        /// answer. 1..=128 visible ASCII characters.
        #[oai(
            name = "Idempotency-Key",
            validator(max_length = 128, pattern = "^[!-~]{1,128}$")
        )]
        idempotency_key: Header<Option<String>>,
        body: Json<ReserveRequest>,
    ) -> Result<ReserveResponse, ErrorResponse> {
        limits.check_buyer(caller.buyer_id()).await?;
        let sale = SaleId::parse(&id)?;
        let result = state
            .holds
            .reserve(
                &sale,
                caller.buyer_id(),
                body.quantity,
                idempotency_key.as_deref(),
            )
            .await;
        let outcome_label = match &result {
            Ok((_, Outcome::Created)) => "created",
            Ok((_, Outcome::Existing)) => "existing",
            Err(e) => e.code().as_str(),
        };
        metrics::counter!("flashdrop_reservations_total", "outcome" => outcome_label).increment(1);
        let (hold, outcome) = result?;
        Ok(match outcome {
            Outcome::Created => ReserveResponse::Created(Json(hold)),
            Outcome::Existing => ReserveResponse::Existing(Json(hold)),
        })
    }

    /// The state of one of the caller's holds.
    #[oai(
        path = "/reservations/:rid",
        method = "get",
        operation_id = "getReservation"
    )]
    async fn get(
        &self,
        state: Data<&AppState>,
        caller: Caller,
        rid: Path<String>,
    ) -> Result<Json<ReservationView>, ErrorResponse> {
        let rid = ReservationId::parse(&rid)?;
        Ok(Json(
            state.holds.reservation(&rid, caller.buyer_id()).await?,
        ))
    }

    /// Confirm a hold into an order. A repeat returns the same order (200);
    /// with the same `Idempotency-Key` it returns the first answer (201).
    #[oai(
        path = "/reservations/:rid/confirm",
        method = "post",
        operation_id = "confirm"
    )]
    async fn confirm(
        &self,
        state: Data<&AppState>,
        limits: Data<&Arc<RateLimits>>,
        caller: Caller,
        rid: Path<String>,
        /// Makes a retry safe: a repeat with the same key gets the first
        /// answer. 1..=128 visible ASCII characters.
        #[oai(
            name = "Idempotency-Key",
            validator(max_length = 128, pattern = "^[!-~]{1,128}$")
        )]
        idempotency_key: Header<Option<String>>,
    ) -> Result<ConfirmResponse, ErrorResponse> {
        limits.check_buyer(caller.buyer_id()).await?;
        let rid = ReservationId::parse(&rid)?;
        let repeat = match idempotency_key.as_deref() {
            Some(key) => {
                state
                    .holds
                    .seen_confirm_key(&rid, caller.buyer_id(), key)
                    .await?
            }
            None => false,
        };
        let (order, outcome) = state.holds.confirm(&rid, caller.buyer_id()).await?;
        Ok(match (outcome, repeat) {
            (Outcome::Created, _) | (Outcome::Existing, true) => {
                ConfirmResponse::Created(Json(order))
            }
            (Outcome::Existing, false) => ConfirmResponse::Existing(Json(order)),
        })
    }

    /// Cancel a hold; its units go back.
    #[oai(
        path = "/reservations/:rid",
        method = "delete",
        operation_id = "cancelReservation"
    )]
    async fn cancel(
        &self,
        state: Data<&AppState>,
        limits: Data<&Arc<RateLimits>>,
        caller: Caller,
        rid: Path<String>,
    ) -> Result<CancelResponse, ErrorResponse> {
        limits.check_buyer(caller.buyer_id()).await?;
        let rid = ReservationId::parse(&rid)?;
        state.holds.cancel(&rid, caller.buyer_id()).await?;
        Ok(CancelResponse::Cancelled)
    }

    /// Cancel one of the caller's orders, within the sale's
    /// `cancel_seconds` of placing it (409 `cancel_closed` after, or when
    /// the sale allows none). Its units go back as for an admin's cancel;
    /// a repeat answers the same order.
    #[oai(
        path = "/me/orders/:id",
        method = "delete",
        operation_id = "cancelMyOrder"
    )]
    async fn cancel_my_order(
        &self,
        state: Data<&AppState>,
        limits: Data<&Arc<RateLimits>>,
        caller: Caller,
        id: Path<String>,
    ) -> Result<Json<OrderView>, ErrorResponse> {
        limits.check_buyer(caller.buyer_id()).await?;
        let order = ReservationId::parse(&id)?;
        let by = Canceller::Buyer(caller.buyer_id().to_owned());
        Ok(Json(
            state
                .holds
                .cancel_order(&order, by, "cancelled by the buyer")
                .await?,
        ))
    }

    /// The caller's orders, newest first.
    #[oai(path = "/me/orders", method = "get", operation_id = "myOrders")]
    async fn my_orders(
        &self,
        state: Data<&AppState>,
        caller: Caller,
        /// At most this many orders (1..=500).
        #[oai(
            default = "default_limit",
            validator(minimum(value = "1"), maximum(value = "500"))
        )]
        limit: Query<i64>,
    ) -> Result<Json<Vec<OrderView>>, ErrorResponse> {
        Ok(Json(
            state.holds.orders_of(caller.buyer_id(), limit.0).await?,
        ))
    }
}
