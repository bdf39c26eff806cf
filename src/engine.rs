//! The reservation life cycle on top of the Lua scripts: reserve, confirm
//! into a durable order, cancel, and settling holds whose confirm was cut off.
//!
//! held --confirm--> confirming --order written--> confirmed
//! held --cancel--> cancelled; held --deadline--> expired (reaper)
//! confirming --order absent--> held, or expired past its deadline

use bson::{DateTime as BsonDateTime, doc};
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use poem_openapi::{Enum, Object};
use redis::AsyncCommands;
use serde::Deserialize;

use crate::{
    error::ApiError,
    sale::{is_sale_id, new_id},
    state::AppState,
    store::{
        StoreError,
        mongo::{OrderDoc, find_all, is_duplicate_key, never_sent},
        redis::{SaleKeys, run_json},
    },
};

/// Most units one hold may take.
pub const MAX_QUANTITY: i64 = 1000;
/// How long an `Idempotency-Key` is remembered.
pub const IDEMPOTENCY_TTL_SECS: u64 = 24 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Deserialize)]
#[oai(rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum HoldStatus {
    Held,
    Confirming,
    Confirmed,
    Cancelled,
    Expired,
}

#[derive(Debug, Clone, Object)]
pub struct ReservationView {
    pub reservation_id: String,
    pub sale_id: String,
    pub quantity: i64,
    pub status: HoldStatus,
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
}

impl From<OrderDoc> for OrderView {
    fn from(o: OrderDoc) -> Self {
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
        }
    }
}

/// Whether a call made something new (201) or returned what was there (200).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Existing,
}

/// A reservation id is `<sale id>-<object id>`: it names its sale, so every
/// call on it goes straight to that sale's keys.
pub fn new_reservation_id(sale_id: &str) -> String {
    format!("{sale_id}-{}", new_id())
}

pub fn sale_of(rid: &str) -> Option<&str> {
    let (sale, own) = rid.split_once('-')?;
    (is_sale_id(sale) && is_sale_id(own)).then_some(sale)
}

fn parse_csv(csv: &str) -> Vec<i64> {
    csv.split(',').filter_map(|s| s.parse().ok()).collect()
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

#[derive(Deserialize)]
struct Reply {
    r: String,
    rid: Option<String>,
    expires: Option<i64>,
    bought: Option<i64>,
    limit: Option<i64>,
    #[serde(default)]
    repeat_key: bool,
    #[serde(default)]
    waiting: i64,
}

#[derive(Deserialize)]
struct BeginReply {
    r: String,
    #[serde(default)]
    qty: i64,
    #[serde(default)]
    units: String,
    #[serde(default)]
    slots: String,
    #[serde(default)]
    price: i64,
    #[serde(default)]
    currency: String,
}

/// Where a confirm that reached MongoDB ended up.
enum Written {
    New(OrderDoc),
    Earlier(OrderDoc),
}

impl AppState {
    pub async fn reserve(
        &self,
        sale_id: &str,
        buyer: &str,
        quantity: i64,
        idempotency_key: Option<&str>,
    ) -> Result<(ReservationView, Outcome), ApiError> {
        if !is_sale_id(sale_id) {
            return Err(ApiError::not_found("sale"));
        }
        check_quantity(quantity)?;
        if let Some(key) = idempotency_key {
            check_idempotency_key(key)?;
        }
        let keys = SaleKeys::new(sale_id);
        let rid = new_reservation_id(sale_id);
        let reply: Reply = self
            .with_sale_state(
                sale_id,
                |r: &Reply| r.r == "missing",
                || async {
                    let mut conn = self.redis.clone();
                    run_json(
                        &mut conn,
                        self.scripts
                            .reserve
                            .key(keys.sale())
                            .key(keys.free())
                            .key(keys.deadlines())
                            .key(keys.bought())
                            .key(keys.holding())
                            .key(keys.events())
                            .key(keys.hold(&rid))
                            .key(keys.idempotency(buyer, idempotency_key.unwrap_or("")))
                            .key(keys.wait())
                            .arg(keys.channel())
                            .arg(&rid)
                            .arg(buyer)
                            .arg(quantity)
                            .arg(idempotency_key.map_or(0, |_| IDEMPOTENCY_TTL_SECS)),
                    )
                    .await
                },
            )
            .await?;
        match reply.r.as_str() {
            "created" => {
                let expires = reply.expires.unwrap_or_default();
                self.reaper.hold_made(sale_id);
                tracing::debug!(%rid, quantity, "hold created");
                Ok((
                    ReservationView {
                        reservation_id: rid,
                        sale_id: sale_id.to_owned(),
                        quantity,
                        status: HoldStatus::Held,
                        expires_at: BsonDateTime::from_millis(expires).to_chrono(),
                    },
                    Outcome::Created,
                ))
            }
            "existing" => {
                let rid = reply.rid.unwrap_or_default();
                let view = self.reservation(&rid, buyer).await?;
                // A repeat of an idempotent request gets the first answer.
                let outcome = if reply.repeat_key {
                    Outcome::Created
                } else {
                    Outcome::Existing
                };
                Ok((view, outcome))
            }
            "upcoming" => Err(ApiError::conflict(
                "sale_not_active",
                "the sale has not started yet",
            )),
            "ended" => Err(ApiError::conflict("sale_not_active", "the sale has ended")),
            "limit_exceeded" => Err(ApiError::conflict(
                "limit_exceeded",
                format!(
                    "the limit is {} per buyer and you have bought {}",
                    reply.limit.unwrap_or_default(),
                    reply.bought.unwrap_or_default()
                ),
            )),
            "sold_out" if reply.waiting > 0 => Err(ApiError::conflict(
                "sold_out",
                format!(
                    "{} buyers are waiting for returned units; join the waiting list",
                    reply.waiting
                ),
            )),
            "sold_out" => Err(ApiError::conflict(
                "sold_out",
                "not enough units are free; held units may come back when holds expire",
            )),
            "missing" => Err(ApiError::Unavailable("sale state is being rebuilt".into())),
            other => Err(anyhow::anyhow!("reserve: unexpected reply {other}").into()),
        }
    }

    /// The state of one hold, for its owner only.
    pub async fn reservation(&self, rid: &str, buyer: &str) -> Result<ReservationView, ApiError> {
        let sale_id = sale_of(rid).ok_or_else(|| ApiError::not_found("reservation"))?;
        let keys = SaleKeys::new(sale_id);
        let mut conn = self.redis.clone();
        let (hold, epoch): (Vec<Option<String>>, Option<String>) = redis::pipe()
            .cmd("HMGET")
            .arg(keys.hold(rid))
            .arg(&["user", "qty", "state", "expires", "epoch"])
            .hget(keys.sale(), "epoch")
            .query_async(&mut conn)
            .await
            .map_err(StoreError::from)?;
        let [user, qty, state, expires, hold_epoch] = <[Option<String>; 5]>::try_from(hold)
            .map_err(|_| anyhow::anyhow!("HMGET returned the wrong number of fields"))?;
        let (Some(user), Some(state)) = (user, state) else {
            return match self.order_by_id(rid, buyer).await? {
                Some(order) => Ok(ReservationView {
                    reservation_id: rid.to_owned(),
                    sale_id: order.sale_id,
                    quantity: order.quantity,
                    status: HoldStatus::Confirmed,
                    expires_at: order.created_at.to_chrono(),
                }),
                None => Err(ApiError::not_found("reservation")),
            };
        };
        if user != buyer {
            return Err(ApiError::not_found("reservation"));
        }
        let mut status: HoldStatus = serde_json::from_value(serde_json::Value::String(state))
            .map_err(|e| anyhow::anyhow!("unknown hold state: {e}"))?;
        if hold_epoch != epoch && status != HoldStatus::Confirmed {
            // Redis was rebuilt since this hold was made: its units are free.
            status = HoldStatus::Expired;
        }
        let millis = |v: Option<String>| v.and_then(|s| s.parse::<i64>().ok()).unwrap_or(0);
        Ok(ReservationView {
            reservation_id: rid.to_owned(),
            sale_id: sale_id.to_owned(),
            quantity: millis(qty),
            status,
            expires_at: BsonDateTime::from_millis(millis(expires)).to_chrono(),
        })
    }

    async fn order_by_id(&self, rid: &str, buyer: &str) -> Result<Option<OrderDoc>, StoreError> {
        Ok(self
            .mongo
            .orders
            .find_one(doc! {"_id": rid, "user_id": buyer})
            .await?)
    }

    /// Turns a hold into an order that is durable in MongoDB before this
    /// returns `Created`.
    pub async fn confirm(&self, rid: &str, buyer: &str) -> Result<(OrderView, Outcome), ApiError> {
        let sale_id = sale_of(rid).ok_or_else(|| ApiError::not_found("reservation"))?;
        let keys = SaleKeys::new(sale_id);
        let mut conn = self.redis.clone();
        let begin: BeginReply = run_json(
            &mut conn,
            self.scripts
                .confirm_begin
                .key(keys.sale())
                .key(keys.hold(rid))
                .key(keys.deadlines())
                .arg(rid)
                .arg(buyer)
                .arg(self.settings.confirm_lease.as_millis() as u64),
        )
        .await?;
        match begin.r.as_str() {
            "confirming" => {}
            "confirmed" | "missing" => {
                return match self.order_by_id(rid, buyer).await? {
                    Some(order) => Ok((order.into(), Outcome::Existing)),
                    None => Err(ApiError::not_found("reservation")),
                };
            }
            "not_found" => return Err(ApiError::not_found("reservation")),
            "cancelled" => return Err(ApiError::Expired("the reservation was cancelled".into())),
            "expired" => return Err(ApiError::Expired("the reservation has expired".into())),
            other => return Err(anyhow::anyhow!("confirm_begin: unexpected reply {other}").into()),
        }

        let units = parse_csv(&begin.units);
        let order = OrderDoc {
            id: rid.to_owned(),
            sale_id: sale_id.to_owned(),
            user_id: buyer.to_owned(),
            quantity: begin.qty,
            units,
            slots: parse_csv(&begin.slots),
            unit_price_cents: begin.price,
            total_cents: begin.price * begin.qty,
            currency: begin.currency,
            created_at: BsonDateTime::now(),
        };
        let write_started = std::time::Instant::now();
        let inserted = self.mongo.orders.insert_one(&order).await;
        metrics::histogram!("flashdrop_confirm_write_seconds")
            .record(write_started.elapsed().as_secs_f64());
        let written = match inserted {
            Ok(_) => Written::New(order),
            Err(err) if is_duplicate_key(&err) => match self.order_by_id(rid, buyer).await? {
                Some(earlier) => Written::Earlier(earlier),
                None => return Err(self.repair_conflict(&keys, rid, &order).await),
            },
            Err(err) => {
                let written = if never_sent(&err) {
                    Ok(None)
                } else {
                    self.order_by_id(rid, buyer).await
                };
                match written {
                    Ok(Some(earlier)) => Written::Earlier(earlier),
                    Ok(None) => {
                        self.abort_confirm(&keys, rid).await;
                        return Err(StoreError::from(err).into());
                    }
                    // Cannot tell whether the order landed: leave the hold
                    // confirming; the reaper settles it when the lease ends.
                    Err(check) => {
                        tracing::warn!(%rid, error = %check, "confirm outcome unknown; reaper will settle it");
                        return Err(StoreError::from(err).into());
                    }
                }
            }
        };
        if self.settings.fault_after_order_write {
            return Err(ApiError::Unavailable(
                "fault point: after order write".into(),
            ));
        }
        let (order, outcome) = match written {
            Written::New(order) => (order, Outcome::Created),
            Written::Earlier(order) => (order, Outcome::Existing),
        };
        self.finish_confirm(sale_id, rid).await?;
        Ok((order.into(), outcome))
    }

    /// Marks a hold whose order is in MongoDB as confirmed in Redis.
    async fn finish_confirm(&self, sale_id: &str, rid: &str) -> Result<(), StoreError> {
        let keys = SaleKeys::new(sale_id);
        let mut conn = self.redis.clone();
        let reply: Reply = run_json(
            &mut conn,
            self.scripts
                .confirm_finish
                .key(keys.sale())
                .key(keys.hold(rid))
                .key(keys.deadlines())
                .key(keys.bought())
                .key(keys.holding())
                .key(keys.events())
                .arg(keys.channel())
                .arg(rid),
        )
        .await?;
        match reply.r.as_str() {
            "confirmed" | "already" => {}
            // Redis lost the sale or the hold; a rebuild counts the order
            // from MongoDB.
            "missing" => {
                if let Ok(sale) = self.find_sale(sale_id).await {
                    self.restore_sale(&sale).await?;
                }
            }
            other => {
                tracing::error!(%rid, state = other, "order written for a hold whose units were already returned; MongoDB's unique indexes guard against a second sale");
            }
        }
        Ok(())
    }

    /// The order is known not to be in MongoDB: back to held (or expired).
    async fn abort_confirm(&self, keys: &SaleKeys, rid: &str) {
        let mut conn = self.redis.clone();
        let result: Result<Reply, StoreError> = run_json(
            &mut conn,
            self.scripts
                .confirm_abort
                .key(keys.sale())
                .key(keys.hold(rid))
                .key(keys.deadlines())
                .key(keys.free())
                .key(keys.holding())
                .key(keys.events())
                .arg(keys.channel())
                .arg(rid),
        )
        .await;
        if let Err(err) = result {
            tracing::warn!(%rid, error = %err, "confirm abort failed; the reaper will settle the hold");
        }
    }

    /// MongoDB refused the order by a unique index other than `_id`: Redis
    /// believed units or purchase slots were free that MongoDB has sold.
    /// Repair Redis from MongoDB and tell the buyer what happened.
    async fn repair_conflict(&self, keys: &SaleKeys, rid: &str, order: &OrderDoc) -> ApiError {
        let result = async {
            let taken: Vec<OrderDoc> = self
                .mongo
                .orders
                .find(doc! {"sale_id": &order.sale_id, "units": {"$in": &order.units}})
                .await?
                .try_collect()
                .await?;
            let sold: Vec<String> = taken
                .iter()
                .flat_map(|o| o.units.iter())
                .filter(|u| order.units.contains(u))
                .map(i64::to_string)
                .collect();
            let bought: Vec<OrderDoc> = self
                .mongo
                .orders
                .find(doc! {"sale_id": &order.sale_id, "user_id": &order.user_id})
                .await?
                .try_collect()
                .await?;
            let bought: i64 = bought.iter().map(|o| o.quantity).sum();
            let mut conn = self.redis.clone();
            let _: Reply = run_json(
                &mut conn,
                self.scripts
                    .repair_hold
                    .key(keys.sale())
                    .key(keys.hold(rid))
                    .key(keys.deadlines())
                    .key(keys.free())
                    .key(keys.holding())
                    .key(keys.bought())
                    .key(keys.events())
                    .arg(keys.channel())
                    .arg(rid)
                    .arg(sold.join(","))
                    .arg(bought),
            )
            .await?;
            Ok::<_, StoreError>(sold.is_empty())
        }
        .await;
        match result {
            Ok(true) => {
                tracing::error!(%rid, "MongoDB refused an order over the buyer's limit; Redis repaired");
                ApiError::conflict("limit_exceeded", "you have already bought up to the limit")
            }
            Ok(false) => {
                tracing::error!(%rid, "MongoDB refused units already sold; Redis repaired");
                ApiError::conflict(
                    "sold_out",
                    "these units were already sold; please reserve again",
                )
            }
            Err(err) => err.into(),
        }
    }

    pub async fn cancel(&self, rid: &str, buyer: &str) -> Result<(), ApiError> {
        let sale_id = sale_of(rid).ok_or_else(|| ApiError::not_found("reservation"))?;
        let keys = SaleKeys::new(sale_id);
        let mut conn = self.redis.clone();
        let reply: Reply = run_json(
            &mut conn,
            self.scripts
                .cancel
                .key(keys.sale())
                .key(keys.hold(rid))
                .key(keys.deadlines())
                .key(keys.free())
                .key(keys.holding())
                .key(keys.events())
                .arg(keys.channel())
                .arg(rid)
                .arg(buyer),
        )
        .await?;
        match reply.r.as_str() {
            "cancelled" => Ok(()),
            "expired" => Err(ApiError::Expired("the reservation has expired".into())),
            "confirming" => Err(ApiError::conflict(
                "reservation_confirming",
                "the reservation is being confirmed",
            )),
            "confirmed" => Err(ApiError::conflict(
                "reservation_confirmed",
                "the reservation is confirmed; it cannot be cancelled",
            )),
            "missing" => match self.order_by_id(rid, buyer).await? {
                Some(_) => Err(ApiError::conflict(
                    "reservation_confirmed",
                    "the reservation is confirmed; it cannot be cancelled",
                )),
                None => Err(ApiError::not_found("reservation")),
            },
            _ => Err(ApiError::not_found("reservation")),
        }
    }

    /// Remembers that `key` confirmed `rid`; true when this is a repeat.
    pub async fn seen_confirm_key(
        &self,
        rid: &str,
        buyer: &str,
        key: &str,
    ) -> Result<bool, ApiError> {
        check_idempotency_key(key)?;
        let sale_id = sale_of(rid).ok_or_else(|| ApiError::not_found("reservation"))?;
        let key = SaleKeys::new(sale_id).idempotency(buyer, &format!("confirm:{key}"));
        let mut conn = self.redis.clone();
        let earlier: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(rid)
            .arg("NX")
            .arg("GET")
            .arg("EX")
            .arg(IDEMPOTENCY_TTL_SECS)
            .query_async(&mut conn)
            .await
            .map_err(StoreError::from)?;
        match earlier {
            None => Ok(false),
            Some(earlier) if earlier == rid => Ok(true),
            Some(_) => Err(ApiError::invalid(
                "this Idempotency-Key was used to confirm another reservation",
            )),
        }
    }

    pub async fn orders_of(&self, buyer: &str, limit: i64) -> Result<Vec<OrderView>, ApiError> {
        let orders = find_all(
            &self.mongo.orders,
            doc! {"user_id": buyer},
            doc! {"created_at": -1},
            limit,
        )
        .await?;
        Ok(orders.into_iter().map(OrderView::from).collect())
    }

    /// Settles a confirming hold whose lease ran out: confirmed when its
    /// order is in MongoDB, otherwise back to held or expired.
    pub async fn settle_confirming(&self, sale_id: &str, rid: &str) -> Result<(), StoreError> {
        let keys = SaleKeys::new(sale_id);
        let mut conn = self.redis.clone();
        let buyer: Option<String> = conn.hget(keys.hold(rid), "user").await?;
        let Some(buyer) = buyer else { return Ok(()) };
        match self.order_by_id(rid, &buyer).await? {
            Some(_) => {
                tracing::info!(%rid, "settled: order found, hold confirmed");
                self.finish_confirm(sale_id, rid).await
            }
            None => {
                tracing::info!(%rid, "settled: no order, confirm undone");
                self.abort_confirm(&keys, rid).await;
                Ok(())
            }
        }
    }

    /// Expires a sale's due holds and settles its stuck confirms. Returns when
    /// the next hold of the sale falls due (Redis clock, ms) and Redis' now.
    pub async fn reap_sale(
        &self,
        sale: &crate::store::mongo::SaleDoc,
    ) -> Result<ReapReport, StoreError> {
        let keys = SaleKeys::new(&sale.id);
        let mut conn = self.redis.clone();
        let mut report = ReapReport::default();
        loop {
            let reply: ReapReply = run_json(
                &mut conn,
                self.scripts
                    .reap
                    .key(keys.sale())
                    .key(keys.deadlines())
                    .key(keys.free())
                    .key(keys.holding())
                    .key(keys.events())
                    .arg(keys.channel())
                    .arg(REAP_BATCH)
                    .arg(self.settings.confirm_lease.as_millis() as u64),
            )
            .await?;
            if reply.r == "missing" {
                self.restore_sale(sale).await?;
                continue;
            }
            report.expired += reply.expired;
            for rid in &reply.claimed {
                if let Err(err) = self.settle_confirming(&sale.id, rid).await {
                    tracing::warn!(%rid, error = %err, "could not settle a confirm; will retry after the lease");
                }
            }
            report.next_due_in_ms = (reply.next >= 0).then(|| (reply.next - reply.now).max(0));
            if !reply.more {
                return Ok(report);
            }
        }
    }
}

const REAP_BATCH: i64 = 500;

#[derive(Deserialize)]
struct ReapReply {
    r: String,
    #[serde(default)]
    expired: u64,
    #[serde(default)]
    claimed: Vec<String>,
    #[serde(default)]
    next: i64,
    #[serde(default)]
    now: i64,
    #[serde(default)]
    more: bool,
}

#[derive(Debug, Default)]
pub struct ReapReport {
    pub expired: u64,
    /// Milliseconds until the sale's next deadline, if it has one.
    pub next_due_in_ms: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservation_ids_name_their_sale() {
        let sale = new_id();
        let rid = new_reservation_id(&sale);
        assert_eq!(sale_of(&rid), Some(sale.as_str()));
        assert_eq!(sale_of("nope"), None);
        assert_eq!(sale_of(&format!("{sale}-x")), None);
    }

    #[test]
    fn idempotency_keys_are_short_visible_ascii() {
        assert!(check_idempotency_key("abc-123").is_ok());
        assert!(check_idempotency_key("").is_err());
        assert!(check_idempotency_key("has space").is_err());
        assert!(check_idempotency_key(&"k".repeat(129)).is_err());
    }
}
