//! Cancelling an order. MongoDB first: the order is marked cancelled and
//! leaves its sale, so the unique indexes free its units and slots (the
//! database still refuses oversell and over-limit). Then Redis gets
//! the units back in one step (`lua/return_order.lua`: to the head of the
//! waiting list first, else to stock; once per order), and the order is
//! marked returned. A cancel cut off between the two is finished by a
//! repeat, by the reaper's pass over cancelled orders not yet returned,
//! or by a rebuild, which reads the order cancelled.

use std::time::Duration;

use poem_openapi::Enum;

use super::{Holds, OrderView};
use crate::{
    error::{ApiError, ErrorCode},
    ids::ReservationId,
    store::{
        StoreError,
        mongo::{CancelRequest, OrderDoc},
        scripts::ReturnReply,
    },
};

/// Whether an order stands or was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum OrderStatus {
    Confirmed,
    Cancelled,
}

/// Who cancels an order.
#[derive(Debug, Clone)]
pub enum Canceller {
    Admin(String),
    /// The order's buyer, within the sale's `cancel_seconds`.
    Buyer(String),
}

impl Canceller {
    fn label(&self) -> String {
        match self {
            Self::Admin(who) => format!("admin:{who}"),
            Self::Buyer(who) => format!("buyer:{who}"),
        }
    }
}

/// How long a return waits for a rebuild of its sale before it answers 503
/// (the reaper finishes it later).
const REBUILD_WAIT: Duration = Duration::from_secs(5);

impl Holds {
    /// Cancels an order (a repeat answers the same). Its units come back
    /// at once: to the waiting list's head first while the sale is on.
    pub async fn cancel_order(
        &self,
        id: &ReservationId,
        by: Canceller,
        reason: &str,
    ) -> Result<OrderView, ApiError> {
        let mongo = &self.store.mongo;
        let not_found = || ApiError::not_found("order");
        let order = match mongo.cancelled_order(id.as_str()).await? {
            Some(cancelled) => cancelled,
            None => mongo.order(id.as_str()).await?.ok_or_else(not_found)?,
        };
        if let Canceller::Buyer(buyer) = &by {
            if order.user_id != *buyer {
                return Err(not_found());
            }
            if order.cancelled.is_none() {
                let sale = self.recovery.sale_doc(id.sale()).await?;
                let now = self.store.redis.now_ms().await?;
                let until = order.created_at.timestamp_millis() + sale.cancel_seconds * 1000;
                if sale.cancel_seconds == 0 || now > until {
                    return Err(ApiError::new(
                        ErrorCode::CancelClosed,
                        match sale.cancel_seconds {
                            0 => "this sale's buyers cannot cancel their orders".to_owned(),
                            s => format!("an order can be cancelled within {s} s of being placed"),
                        },
                    ));
                }
            }
        }
        let request = CancelRequest {
            at: self.store.clock.now_bson(),
            reason: reason.to_owned(),
            by: by.label(),
        };
        let order = mongo
            .cancel_order(id.as_str(), &request)
            .await?
            .ok_or_else(not_found)?;
        let returned = order.cancelled.as_ref().is_some_and(|c| c.returned);
        if !returned {
            self.return_units(&order).await?;
            tracing::info!(order = %id, by = %request.by, "order cancelled, units back");
            metrics::counter!("flashdrop_orders_cancelled_total").increment(1);
        }
        Ok(OrderView::from(order))
    }

    /// Gives a cancelled order's units back in Redis, once, and records it.
    /// The order is out of `orders` already (`Mongo::leave_sale`): only
    /// then may its units be sold again.
    pub(crate) async fn return_units(&self, order: &OrderDoc) -> Result<(), StoreError> {
        if order.cancelled.is_none() {
            return Ok(());
        }
        let id = ReservationId::parse(&order.id)
            .map_err(|_| anyhow::anyhow!("order {} has a bad id", order.id))?;
        let began = tokio::time::Instant::now();
        loop {
            let reply = self
                .store
                .redis
                .return_order(&id, &order.user_id, order.quantity, &order.units)
                .await?;
            match reply {
                ReturnReply::Returned | ReturnReply::Already | ReturnReply::Missing => break,
                ReturnReply::Rebuilding if began.elapsed() < REBUILD_WAIT => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                ReturnReply::Rebuilding => {
                    return Err(StoreError::Unavailable(
                        "the sale is being rebuilt; the order is cancelled and its units come back once that is done".into(),
                    ));
                }
            }
        }
        self.store.mongo.mark_returned(&order.id).await
    }

    /// Finishes the returns of cancelled orders that were cut off
    /// (cancelled over `settle_after` ago, not yet returned), up to 100 a
    /// call.
    pub async fn finish_returns(&self, settle_after: Duration) -> Result<usize, StoreError> {
        let before = bson::DateTime::from_millis(
            self.store.clock.now_ms() - settle_after.as_millis() as i64,
        );
        let pending = self.store.mongo.pending_returns(before, 100).await?;
        for order in &pending {
            // Out of `orders` first: the cancel may have been cut off before.
            self.store.mongo.leave_sale(order).await?;
            self.return_units(order).await?;
            tracing::warn!(order = %order.id, "a cancel cut off before its units came back: returned now");
        }
        Ok(pending.len())
    }
}
