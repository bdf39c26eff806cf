//! Confirming a hold into an order that is durable in MongoDB before the
//! buyer hears 201, and settling a confirm that was cut off.
//!
//! The hold moves to `confirming` with a lease, the order is written (its
//! `_id` is the reservation id, so at most one order per hold), then Redis
//! marks the hold confirmed. A write whose outcome is unknown leaves the
//! hold confirming. When the lease ends, the reaper settles the hold: it
//! first fences the order off (claims its `_id`), so a write still on its
//! way can never land after the units went back; if the order had landed
//! the hold is confirmed, otherwise it expires. A write known to have
//! failed puts the hold back to held until its deadline.

use super::{
    Holds, OrderView, Outcome,
    group_commit::{Committed, Finished},
};
use crate::{
    error::{ApiError, ErrorCode},
    ids::ReservationId,
    store::{
        StoreError,
        mongo::{Fence, OrderDoc, OrderLookup},
        scripts::{
            AbortCause, AbortReply, ApplyReply, BeginReply, FinishReply, HoldFinish, RepairReply,
        },
    },
};

/// What a confirming hold's order is made of, as its script handed it over.
pub(crate) struct NewOrder {
    pub buyer: String,
    pub qty: i64,
    pub units: Vec<i64>,
    pub slots: Vec<i64>,
    pub price: i64,
    pub currency: String,
    /// The payment that confirms it, for a sale that takes payment.
    pub payment_id: Option<String>,
}

fn order_cancelled() -> ApiError {
    ApiError::new(
        ErrorCode::ReservationExpired,
        "the order of this reservation was cancelled",
    )
}

fn given_up() -> ApiError {
    ApiError::new(
        ErrorCode::ReservationExpired,
        "the confirm was given up after MongoDB did not answer in time; the hold has expired",
    )
}

impl Holds {
    /// Turns a hold into an order that is durable in MongoDB before this
    /// returns `Created`.
    pub async fn confirm(
        &self,
        rid: &ReservationId,
        buyer: &str,
    ) -> Result<(OrderView, Outcome), ApiError> {
        let begin = self.begins.run((rid.clone(), buyer.to_owned())).await?;
        let (qty, units, slots, price, currency, lease) = match begin {
            BeginReply::Confirming {
                qty,
                units,
                slots,
                price,
                currency,
                lease,
                ..
            } => (qty, units, slots, price, currency, lease),
            BeginReply::PaymentRequired => {
                return Err(ApiError::new(
                    ErrorCode::PaymentRequired,
                    "this sale takes payment: pay through POST /reservations/{rid}/payment, and the payment confirms the hold",
                ));
            }
            BeginReply::Confirmed | BeginReply::Missing => {
                return match self.store.mongo.order_of(rid, buyer).await? {
                    OrderLookup::Order(order) => Ok((order.into(), Outcome::Existing)),
                    OrderLookup::Voided => Err(given_up()),
                    OrderLookup::Cancelled => Err(order_cancelled()),
                    OrderLookup::Absent => Err(ApiError::not_found("reservation")),
                };
            }
            BeginReply::NotFound => return Err(ApiError::not_found("reservation")),
            BeginReply::Cancelled => {
                return Err(ApiError::new(
                    ErrorCode::ReservationExpired,
                    "the reservation was cancelled",
                ));
            }
            BeginReply::Expired => {
                return Err(ApiError::new(
                    ErrorCode::ReservationExpired,
                    "the reservation has expired",
                ));
            }
        };
        let order = self.new_order(
            rid,
            NewOrder {
                buyer: buyer.to_owned(),
                qty,
                units,
                slots,
                price,
                currency,
                payment_id: None,
            },
        );
        self.write_order(rid, order, lease).await
    }

    /// The order of a confirming hold, made now.
    pub(crate) fn new_order(&self, rid: &ReservationId, o: NewOrder) -> OrderDoc {
        OrderDoc {
            id: rid.to_string(),
            sale_id: rid.sale().to_string(),
            user_id: o.buyer,
            quantity: o.qty,
            units: o.units,
            slots: o.slots,
            unit_price_cents: o.price,
            total_cents: o.price * o.qty,
            currency: o.currency,
            created_at: self.store.clock.now_bson(),
            payment_id: o.payment_id,
            cancelled: None,
        }
    }

    /// Writes the order of a hold that is confirming under `lease` and
    /// tells Redis: `Created` once it is durable in MongoDB. The one path
    /// from a confirming hold to an order, for a buyer's confirm and for a
    /// payment's.
    pub(crate) async fn write_order(
        &self,
        rid: &ReservationId,
        order: OrderDoc,
        lease: i64,
    ) -> Result<(OrderView, Outcome), ApiError> {
        let buyer = order.user_id.clone();
        let buyer = buyer.as_str();
        // MongoDB that does not answer in time (or a batch lost on the
        // way) costs the buyer a 503, not a hanging request; the hold stays
        // confirming and is settled later.
        let commit = self.group_commit.commit(rid.clone(), order);
        let Ok(Some((order, committed))) = tokio::time::timeout(self.mongodb_timeout, commit).await
        else {
            return Err(ApiError::unavailable(
                "MongoDB did not answer in time; the order may still be written",
            ));
        };
        match committed {
            Committed::Inserted(Finished::Skipped) => {
                Err(ApiError::unavailable("fault point: after order write"))
            }
            Committed::Inserted(finished) => {
                if let Finished::Failed(err) = finished {
                    // The order is durable: the buyer hears so, and the
                    // reaper marks the hold when its confirm lease ends.
                    tracing::warn!(%rid, error = %err, "order durable, Redis not told yet; the reaper settles the hold");
                }
                Ok((order.into(), Outcome::Created))
            }
            // The rare outcomes are boxed: inline, their state (about 5 KB)
            // would be part of every in-flight confirm.
            Committed::Refused => Box::pin(self.write_refused(rid, buyer, &order)).await,
            Committed::NotSent(err) => {
                Box::pin(self.abort_confirm(rid, AbortCause::Unwritten { lease })).await;
                Err(err.into())
            }
            Committed::Unknown(err) => Box::pin(self.write_unknown(rid, buyer, err)).await,
        }
    }

    /// A unique index refused the order: written before, fenced off, or
    /// units or slots MongoDB has sold and Redis forgot.
    async fn write_refused(
        &self,
        rid: &ReservationId,
        buyer: &str,
        order: &OrderDoc,
    ) -> Result<(OrderView, Outcome), ApiError> {
        match self.store.mongo.order_of(rid, buyer).await? {
            OrderLookup::Order(earlier) => {
                self.finish_confirm(rid, &earlier).await?;
                Ok((earlier.into(), Outcome::Existing))
            }
            OrderLookup::Voided => Err(given_up()),
            OrderLookup::Cancelled => Err(order_cancelled()),
            OrderLookup::Absent => Err(self.repair_conflict(rid, order).await),
        }
    }

    /// The order may land yet: only a fence may undo this confirm.
    async fn write_unknown(
        &self,
        rid: &ReservationId,
        buyer: &str,
        err: StoreError,
    ) -> Result<(OrderView, Outcome), ApiError> {
        match self.store.mongo.order_of(rid, buyer).await {
            Ok(OrderLookup::Order(earlier)) => {
                self.finish_confirm(rid, &earlier).await?;
                Ok((earlier.into(), Outcome::Existing))
            }
            Ok(OrderLookup::Voided) => Err(given_up()),
            Ok(OrderLookup::Cancelled) => Err(order_cancelled()),
            Ok(OrderLookup::Absent) | Err(_) => {
                tracing::warn!(%rid, error = %err, "confirm outcome unknown; the reaper settles it when the lease ends");
                Err(err.into())
            }
        }
    }

    /// Marks a hold whose order is in MongoDB as confirmed in Redis; when
    /// Redis no longer holds the hold live, counts the order anyway.
    pub(crate) async fn finish_confirm(
        &self,
        rid: &ReservationId,
        order: &OrderDoc,
    ) -> Result<(), StoreError> {
        match self.store.redis.confirm_finish(rid.sale(), &[rid]).await? {
            FinishReply::Done { holds } => match holds.first() {
                Some(HoldFinish::Missing | HoldFinish::Stale) => self.apply_order(rid, order).await,
                _ => Ok(()),
            },
            // Redis lost the sale; a rebuild counts the order from MongoDB.
            FinishReply::Missing => {
                if let Ok(sale) = self.recovery.sale_doc(rid.sale()).await {
                    self.recovery.restore(&sale).await?;
                }
                Ok(())
            }
        }
    }

    /// Counts a durable order Redis had not counted (its hold was lost).
    pub(crate) async fn apply_order(
        &self,
        rid: &ReservationId,
        order: &OrderDoc,
    ) -> Result<(), StoreError> {
        let reply = self
            .store
            .redis
            .apply_order(rid, &order.user_id, &order.units)
            .await?;
        log_applied(rid, &reply);
        Ok(())
    }

    /// The order is known not to be in MongoDB and never to land.
    pub(crate) async fn abort_confirm(&self, rid: &ReservationId, cause: AbortCause) {
        match self.store.redis.confirm_abort(rid, cause).await {
            Ok(
                AbortReply::Held | AbortReply::Paying | AbortReply::Expired | AbortReply::Reclaimed,
            ) => {}
            Ok(AbortReply::Missing | AbortReply::Unchanged { .. }) => {}
            Err(err) => {
                tracing::warn!(%rid, error = %err, "confirm abort failed; the reaper will settle the hold");
            }
        }
    }

    /// Settles a confirming hold whose lease ran out: the order is fenced
    /// off first, so a write still on its way cannot land after the units
    /// go back; then the hold is confirmed if its order had landed, and
    /// expires otherwise.
    pub(crate) async fn settle_confirming(&self, rid: &ReservationId) -> Result<(), StoreError> {
        let now = self.store.clock.now_bson();
        match self.store.mongo.fence_order(rid, now).await? {
            Fence::Ordered(order) => {
                tracing::info!(%rid, "settled: order found, hold confirmed");
                self.finish_confirm(rid, &order).await
            }
            Fence::Voided => {
                tracing::info!(%rid, "settled: no order, fenced off, hold expired");
                self.abort_confirm(rid, AbortCause::Fenced).await;
                Ok(())
            }
        }
    }

    /// MongoDB refused the order by a unique index other than `_id`: Redis
    /// believed units or purchase slots were free that MongoDB has sold.
    /// Repair Redis from MongoDB and tell the buyer what happened.
    async fn repair_conflict(&self, rid: &ReservationId, order: &OrderDoc) -> ApiError {
        let result = async {
            let mongo = &self.store.mongo;
            let sold = mongo.sold_among(rid.sale(), &order.units).await?;
            let bought = mongo.bought_by(rid.sale(), &order.user_id).await?;
            let reply = self.store.redis.repair_hold(rid, &sold, bought).await?;
            if let RepairReply::Missing | RepairReply::Unchanged { .. } = reply {
                tracing::warn!(%rid, ?reply, "hold changed before it could be repaired");
            }
            Ok::<_, StoreError>(sold.is_empty())
        }
        .await;
        match result {
            Ok(true) => {
                tracing::error!(%rid, "MongoDB refused an order over the buyer's limit; Redis repaired");
                ApiError::new(
                    ErrorCode::LimitExceeded,
                    "you have already bought up to the limit",
                )
            }
            Ok(false) => {
                tracing::error!(%rid, "MongoDB refused units already sold; Redis repaired");
                ApiError::new(
                    ErrorCode::SoldOut,
                    "these units were already sold; please reserve again",
                )
            }
            Err(err) => err.into(),
        }
    }
}

/// What counting a durable order Redis had not counted came to.
pub(crate) fn log_applied(rid: &ReservationId, reply: &ApplyReply) {
    match reply {
        // Cancelled between the caller's look-up and now: its units are back.
        ApplyReply::Returned => {
            tracing::info!(%rid, "order cancelled and returned before it was counted; not counted");
        }
        _ => tracing::warn!(%rid, ?reply, "order landed after Redis lost its hold; counted it"),
    }
}
