//! Confirming a hold into an order that is durable in MongoDB before the
//! buyer hears 201, and settling a confirm that was cut off.
//!
//! The hold moves to `confirming` with a lease, the order is written (its
//! `_id` is the reservation id, so at most one order per hold), then Redis
//! marks the hold confirmed. If the process dies in between, the reaper
//! settles the hold when the lease ends: confirmed when the order is there,
//! otherwise back to held (or expired past its deadline).

use bson::DateTime as BsonDateTime;

use super::{
    Holds, OrderView, Outcome,
    group_commit::{Committed, Finished},
};
use crate::{
    error::{ApiError, ErrorCode},
    ids::ReservationId,
    store::{
        StoreError,
        mongo::{OrderDoc, OrderWrite},
        scripts::{AbortReply, BeginReply, FinishReply, HoldFinish, RepairReply},
    },
};

/// Where a confirm that reached MongoDB ended up.
enum Written {
    New(OrderDoc),
    Earlier(OrderDoc),
}

impl Holds {
    /// Turns a hold into an order that is durable in MongoDB before this
    /// returns `Created`.
    pub async fn confirm(
        &self,
        rid: &ReservationId,
        buyer: &str,
    ) -> Result<(OrderView, Outcome), ApiError> {
        let begin = self
            .store
            .redis
            .confirm_begin(rid, buyer, self.confirm_lease)
            .await?;
        let (qty, units, slots, price, currency) = match begin {
            BeginReply::Confirming {
                qty,
                units,
                slots,
                price,
                currency,
                ..
            } => (qty, units, slots, price, currency),
            BeginReply::Confirmed | BeginReply::Missing => {
                return match self.store.mongo.order_of(rid, buyer).await? {
                    Some(order) => Ok((order.into(), Outcome::Existing)),
                    None => Err(ApiError::not_found("reservation")),
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
        let order = OrderDoc {
            id: rid.to_string(),
            sale_id: rid.sale().to_string(),
            user_id: buyer.to_owned(),
            quantity: qty,
            units,
            slots,
            unit_price_cents: price,
            total_cents: price * qty,
            currency,
            created_at: BsonDateTime::now(),
        };
        // MongoDB that does not answer in time costs the buyer a 503, not a
        // hanging request; the hold stays confirming and is settled later.
        let commit = self.group_commit.commit(rid.clone(), order);
        let Ok((order, committed)) = tokio::time::timeout(self.mongodb_timeout, commit).await
        else {
            return Err(ApiError::unavailable(
                "MongoDB did not answer in time; the order may still be written",
            ));
        };
        let written = match committed {
            Committed::Inserted(finished) => {
                match finished {
                    Finished::Hold(HoldFinish::Confirmed | HoldFinish::Already)
                    | Finished::Rebuilt => {}
                    Finished::Hold(outcome @ (HoldFinish::Missing | HoldFinish::Stale)) => {
                        tracing::error!(%rid, ?outcome, "order written for a hold Redis no longer had live; MongoDB's unique indexes guard against a second sale");
                    }
                    // The order is durable: the buyer hears so, and the
                    // reaper marks the hold when its confirm lease ends.
                    Finished::Failed(err) => {
                        tracing::warn!(%rid, error = %err, "order durable, Redis not told yet; the reaper settles the hold");
                    }
                    Finished::Skipped => {
                        return Err(ApiError::unavailable("fault point: after order write"));
                    }
                }
                return Ok((order.into(), Outcome::Created));
            }
            Committed::NotInserted(OrderWrite::Inserted) => Written::New(order),
            Committed::NotInserted(OrderWrite::Refused) => {
                match self.store.mongo.order_of(rid, buyer).await? {
                    Some(earlier) => Written::Earlier(earlier),
                    None => return Err(self.repair_conflict(rid, &order).await),
                }
            }
            Committed::NotInserted(OrderWrite::NotSent(err)) => {
                self.abort_confirm(rid).await;
                return Err(err.into());
            }
            Committed::NotInserted(OrderWrite::Unknown(err)) => {
                match self.store.mongo.order_of(rid, buyer).await {
                    Ok(Some(earlier)) => Written::Earlier(earlier),
                    Ok(None) => {
                        self.abort_confirm(rid).await;
                        return Err(err.into());
                    }
                    // Cannot tell whether the order landed: leave the hold
                    // confirming; the reaper settles it when the lease ends.
                    Err(check) => {
                        tracing::warn!(%rid, error = %check, "confirm outcome unknown; reaper will settle it");
                        return Err(err.into());
                    }
                }
            }
        };
        let (order, outcome) = match written {
            Written::New(order) => (order, Outcome::Created),
            Written::Earlier(order) => (order, Outcome::Existing),
        };
        self.finish_confirm(rid).await?;
        Ok((order.into(), outcome))
    }

    /// Marks a hold whose order is in MongoDB as confirmed in Redis.
    pub(crate) async fn finish_confirm(&self, rid: &ReservationId) -> Result<(), StoreError> {
        match self.store.redis.confirm_finish(rid.sale(), &[rid]).await? {
            FinishReply::Done { holds } => {
                if let Some(outcome @ (HoldFinish::Missing | HoldFinish::Stale)) = holds.first() {
                    tracing::error!(%rid, ?outcome, "order written for a hold Redis no longer had live; MongoDB's unique indexes guard against a second sale");
                }
            }
            // Redis lost the sale; a rebuild counts the order from MongoDB.
            FinishReply::Missing => {
                if let Ok(sale) = self.recovery.sale_doc(rid.sale()).await {
                    self.recovery.restore(&sale).await?;
                }
            }
        }
        Ok(())
    }

    /// The order is known not to be in MongoDB: back to held (or expired).
    pub(crate) async fn abort_confirm(&self, rid: &ReservationId) {
        match self.store.redis.confirm_abort(rid).await {
            Ok(AbortReply::Held | AbortReply::Expired) => {}
            Ok(AbortReply::Missing | AbortReply::Unchanged { .. }) => {}
            Err(err) => {
                tracing::warn!(%rid, error = %err, "confirm abort failed; the reaper will settle the hold");
            }
        }
    }

    /// Settles a confirming hold whose lease ran out: confirmed when its
    /// order is in MongoDB, otherwise back to held or expired.
    pub(crate) async fn settle_confirming(&self, rid: &ReservationId) -> Result<(), StoreError> {
        let Some(order) = self.store.mongo.order(rid.as_str()).await? else {
            tracing::info!(%rid, "settled: no order, confirm undone");
            self.abort_confirm(rid).await;
            return Ok(());
        };
        tracing::info!(%rid, buyer = order.user_id, "settled: order found, hold confirmed");
        self.finish_confirm(rid).await
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
