//! The life cycle of a hold: reserve units, read the hold, cancel it, and
//! (in [`confirm`]) turn it into a durable order.
//!
//! held --confirm--> confirming --order written--> confirmed
//! held --cancel--> cancelled; held --deadline--> expired (the reaper)
//! confirming --order absent--> held, or expired past its deadline

mod cancel_order;
mod confirm;
mod coverage;
mod group_commit;
pub(crate) mod script_batch;

pub use group_commit::FINISH_CHUNK;

pub use cancel_order::{Canceller, OrderStatus};
pub(crate) use confirm::NewOrder;
pub use coverage::Coverage;
use script_batch::ScriptBatches;

use std::{sync::Arc, time::Duration};

use bson::DateTime as BsonDateTime;
use chrono::{DateTime, Utc};
use poem_openapi::Object;

use crate::{
    config::Settings,
    error::{ApiError, ErrorCode},
    ids::{ReservationId, SaleId},
    recovery::Recovery,
    store::{
        Store,
        mongo::{OrderDoc, OrderLookup},
        redis::HoldState,
        scripts::{CancelReply, ReserveItem, ReserveReply},
    },
};

/// Most units one hold may take.
pub const MAX_QUANTITY: i64 = 1000;
/// How long an `Idempotency-Key` is remembered.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Object)]
pub struct ReservationView {
    pub reservation_id: String,
    pub sale_id: String,
    pub quantity: i64,
    pub status: HoldState,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Object)]
pub struct OrderView {
    /// The order's id, equal to the reservation id it confirmed.
    pub order_id: String,
    pub reservation_id: String,
    pub sale_id: String,
    pub quantity: i64,
    /// Unit serial numbers, 1..=total of the sale.
    pub units: Vec<i64>,
    pub unit_price_cents: i64,
    pub total_cents: i64,
    pub currency: String,
    pub created_at: DateTime<Utc>,
    /// `cancelled` once the order was cancelled: its units went back.
    pub status: OrderStatus,
    #[oai(skip_serializing_if_is_none)]
    pub cancelled_at: Option<DateTime<Utc>>,
    #[oai(skip_serializing_if_is_none)]
    pub cancel_reason: Option<String>,
    /// The payment that confirmed it, for a sale that takes payment.
    #[oai(skip_serializing_if_is_none)]
    pub payment_id: Option<String>,
}

impl From<OrderDoc> for OrderView {
    fn from(o: OrderDoc) -> Self {
        let (status, cancelled_at, cancel_reason) = match o.cancelled {
            Some(c) => (
                OrderStatus::Cancelled,
                Some(c.at.to_chrono()),
                Some(c.reason),
            ),
            None => (OrderStatus::Confirmed, None, None),
        };
        OrderView {
            order_id: o.id.clone(),
            reservation_id: o.id,
            sale_id: o.sale_id,
            quantity: o.quantity,
            units: o.units,
            unit_price_cents: o.unit_price_cents,
            total_cents: o.total_cents,
            currency: o.currency,
            created_at: o.created_at.to_chrono(),
            status,
            cancelled_at,
            cancel_reason,
            payment_id: o.payment_id,
        }
    }
}

/// Whether a call made something new (201) or returned what was there (200).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Existing,
}

pub fn check_quantity(quantity: i64) -> Result<(), ApiError> {
    if !(1..=MAX_QUANTITY).contains(&quantity) {
        return Err(ApiError::invalid(format!(
            "quantity must be 1..={MAX_QUANTITY}"
        )));
    }
    Ok(())
}

pub fn check_idempotency_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > 128 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid(
            "Idempotency-Key must be 1..=128 visible ASCII characters",
        ));
    }
    Ok(())
}

fn at(ms: i64) -> DateTime<Utc> {
    BsonDateTime::from_millis(ms).to_chrono()
}

#[derive(Clone)]
pub struct Holds {
    store: Store,
    recovery: Recovery,
    coverage: Arc<Coverage>,
    group_commit: group_commit::GroupCommit,
    reserves: ScriptBatches<script_batch::Reserve>,
    begins: ScriptBatches<script_batch::Begin>,
    confirm_lease: Duration,
    mongodb_timeout: Duration,
}

impl Holds {
    pub fn new(
        store: Store,
        recovery: Recovery,
        coverage: Arc<Coverage>,
        settings: &Settings,
    ) -> Self {
        let group_commit =
            group_commit::GroupCommit::start(store.clone(), recovery.clone(), settings);
        let reserves = ScriptBatches::new(script_batch::Reserve {
            store: store.clone(),
            idempotency_ttl: IDEMPOTENCY_TTL,
        });
        let begins = ScriptBatches::new(script_batch::Begin {
            store: store.clone(),
            lease: settings.confirm_lease,
        });
        Self {
            store,
            recovery,
            coverage,
            group_commit,
            reserves,
            begins,
            confirm_lease: settings.confirm_lease,
            mongodb_timeout: settings.mongodb_timeout,
        }
    }

    /// How long a confirm may take before the reaper settles its hold.
    pub fn confirm_lease(&self) -> Duration {
        self.confirm_lease
    }

    pub async fn reserve(
        &self,
        sale: &SaleId,
        buyer: &str,
        quantity: i64,
        idempotency_key: Option<&str>,
    ) -> Result<(ReservationView, Outcome), ApiError> {
        check_quantity(quantity)?;
        if let Some(key) = idempotency_key {
            check_idempotency_key(key)?;
        }
        let rid = ReservationId::new(sale);
        let reply = self
            .recovery
            .with_sale(sale, || {
                self.reserves.run(ReserveItem {
                    rid: rid.clone(),
                    buyer: buyer.to_owned(),
                    quantity,
                    idempotency_key: idempotency_key.map(str::to_owned),
                })
            })
            .await?;
        let refused = |code, message: String| Err(ApiError::new(code, message));
        match reply {
            ReserveReply::Created { expires } => {
                self.coverage.hold_made(sale);
                tracing::debug!(%rid, quantity, "hold created");
                Ok((
                    ReservationView {
                        reservation_id: rid.to_string(),
                        sale_id: sale.to_string(),
                        quantity,
                        status: HoldState::Held,
                        expires_at: at(expires),
                    },
                    Outcome::Created,
                ))
            }
            ReserveReply::Existing { rid, repeat_key } => {
                let rid = ReservationId::parse(&rid)
                    .map_err(|_| anyhow::anyhow!("reserve returned a malformed id {rid:?}"))?;
                let view = self.reservation(&rid, buyer).await?;
                // A repeat of an idempotent request gets the first answer.
                let outcome = if repeat_key {
                    Outcome::Created
                } else {
                    Outcome::Existing
                };
                Ok((view, outcome))
            }
            ReserveReply::Upcoming => refused(
                ErrorCode::SaleNotActive,
                "the sale has not started yet".into(),
            ),
            ReserveReply::Ended => refused(ErrorCode::SaleNotActive, "the sale has ended".into()),
            ReserveReply::NotAdmitted => {
                refused(ErrorCode::NotAdmitted, crate::lobby::NOT_ADMITTED.into())
            }
            ReserveReply::LimitExceeded { bought, limit } => refused(
                ErrorCode::LimitExceeded,
                format!("the limit is {limit} per buyer and you have bought {bought}"),
            ),
            ReserveReply::SoldOut { waiting, .. } if waiting > 0 => refused(
                ErrorCode::SoldOut,
                format!("{waiting} buyers are waiting for returned units; join the waiting list"),
            ),
            ReserveReply::SoldOut { .. } => refused(
                ErrorCode::SoldOut,
                "not enough units are free; held units may come back when holds expire".into(),
            ),
            ReserveReply::Missing => Err(ApiError::rebuilding()),
        }
    }

    /// The state of one hold, for its owner only.
    pub async fn reservation(
        &self,
        rid: &ReservationId,
        buyer: &str,
    ) -> Result<ReservationView, ApiError> {
        let Some(hold) = self.store.redis.hold(rid).await? else {
            // Pruned or lost from Redis: a confirmed hold lives on as its order.
            return match self.store.mongo.order_of(rid, buyer).await? {
                OrderLookup::Order(order) => Ok(ReservationView {
                    reservation_id: rid.to_string(),
                    sale_id: order.sale_id,
                    quantity: order.quantity,
                    status: HoldState::Confirmed,
                    expires_at: order.created_at.to_chrono(),
                }),
                OrderLookup::Voided | OrderLookup::Cancelled | OrderLookup::Absent => {
                    Err(ApiError::not_found("reservation"))
                }
            };
        };
        if hold.user != buyer {
            return Err(ApiError::not_found("reservation"));
        }
        Ok(ReservationView {
            reservation_id: rid.to_string(),
            sale_id: rid.sale().to_string(),
            quantity: hold.qty,
            status: hold.state,
            expires_at: at(hold.expires),
        })
    }

    pub async fn cancel(&self, rid: &ReservationId, buyer: &str) -> Result<(), ApiError> {
        let confirmed = || {
            ApiError::new(
                ErrorCode::ReservationConfirmed,
                "the reservation is confirmed; it cannot be cancelled",
            )
        };
        match self.store.redis.cancel(rid, buyer).await? {
            CancelReply::Cancelled => Ok(()),
            CancelReply::Expired => Err(ApiError::new(
                ErrorCode::ReservationExpired,
                "the reservation has expired",
            )),
            CancelReply::Confirming => Err(ApiError::new(
                ErrorCode::ReservationConfirming,
                "the reservation is being confirmed",
            )),
            CancelReply::Confirmed => Err(confirmed()),
            CancelReply::Missing => match self.store.mongo.order_of(rid, buyer).await? {
                OrderLookup::Order(_) => Err(confirmed()),
                OrderLookup::Voided | OrderLookup::Cancelled | OrderLookup::Absent => {
                    Err(ApiError::not_found("reservation"))
                }
            },
            CancelReply::NotFound => Err(ApiError::not_found("reservation")),
        }
    }

    /// Remembers that `key` confirmed `rid`; true when this is a repeat.
    pub async fn seen_confirm_key(
        &self,
        rid: &ReservationId,
        buyer: &str,
        key: &str,
    ) -> Result<bool, ApiError> {
        check_idempotency_key(key)?;
        let earlier = self
            .store
            .redis
            .remember_confirm_key(rid, buyer, key, IDEMPOTENCY_TTL)
            .await?;
        match earlier {
            None => Ok(false),
            Some(earlier) if earlier == rid.as_str() => Ok(true),
            Some(_) => Err(ApiError::invalid(
                "this Idempotency-Key was used to confirm another reservation",
            )),
        }
    }

    /// A buyer's orders, cancelled ones too, newest first.
    pub async fn orders_of(&self, buyer: &str, limit: i64) -> Result<Vec<OrderView>, ApiError> {
        let mongo = &self.store.mongo;
        let cancelled = mongo.cancelled_of_buyer(buyer, limit).await?;
        let gone: std::collections::HashSet<&str> =
            cancelled.iter().map(|o| o.id.as_str()).collect();
        let mut orders: Vec<OrderDoc> = mongo
            .orders_of_buyer(buyer, limit)
            .await?
            .into_iter()
            .filter(|o| !gone.contains(o.id.as_str()))
            .collect();
        orders.extend(cancelled);
        orders.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        orders.truncate(limit.max(0) as usize);
        Ok(orders.into_iter().map(OrderView::from).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_short_visible_ascii() {
        assert!(check_idempotency_key("abc-123").is_ok());
        assert!(check_idempotency_key("").is_err());
        assert!(check_idempotency_key("has space").is_err());
        assert!(check_idempotency_key(&"k".repeat(129)).is_err());
    }
}
