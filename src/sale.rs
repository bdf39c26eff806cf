//! Sales: the rules an admin's sale must satisfy, its live view (window from
//! MongoDB, counts from Redis), and opening it in Redis, which doubles as
//! the rebuild from MongoDB when Redis has lost a running sale.

use std::collections::HashMap;
use std::time::Duration;

use bson::{DateTime as BsonDateTime, doc};
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use poem_openapi::{Enum, Object};
use redis::AsyncCommands;

use crate::{
    error::ApiError,
    state::AppState,
    store::{
        StoreError,
        mongo::{SaleDoc, find_all},
        redis::{SaleKeys, run_json},
    },
};

pub const MAX_TOTAL: i64 = 10_000_000;
pub const MAX_HOLD_SECONDS: i64 = 86_400;
pub const MAX_NAME_CHARS: usize = 200;

/// New ids are MongoDB ObjectIds in hex: short, time-ordered, and safe inside
/// a Redis hash tag.
pub fn new_id() -> String {
    bson::oid::ObjectId::new().to_hex()
}

/// Whether `id` has the form of a sale id. Anything else is answered 404
/// without touching a store.
pub fn is_sale_id(id: &str) -> bool {
    id.len() == 24
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum SaleStatus {
    Upcoming,
    Active,
    SoldOut,
    Ended,
}

/// A sale as buyers and admins see it, with live counts.
#[derive(Debug, Clone, Object)]
pub struct SaleView {
    pub id: String,
    pub name: String,
    pub status: SaleStatus,
    /// Price of one unit in minor units (cents).
    pub price_cents: i64,
    /// ISO 4217 code, e.g. `EUR`.
    pub currency: String,
    pub total: i64,
    pub available: i64,
    pub held: i64,
    pub sold: i64,
    pub per_user_limit: i64,
    pub waitlist_length: i64,
    pub waitlist_enabled: bool,
    pub hold_seconds: i64,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub server_time: DateTime<Utc>,
}

#[derive(Debug, Clone, Object)]
pub struct CreateSale {
    /// 1..=200 characters.
    pub name: String,
    /// Price of one unit in minor units, >= 0.
    pub price_cents: i64,
    /// Three upper-case letters (ISO 4217).
    pub currency: String,
    /// Units on sale, 1..=10,000,000.
    pub total: i64,
    /// Most units one buyer may hold and buy, 1..=total.
    pub per_user_limit: i64,
    pub starts_at: DateTime<Utc>,
    /// After `starts_at` and in the future.
    pub ends_at: DateTime<Utc>,
    /// How long a hold lasts before it expires, 1..=86,400.
    pub hold_seconds: i64,
    /// Whether buyers may join a waiting list when stock runs out.
    #[oai(default = "default_true")]
    pub waitlist_enabled: bool,
}

fn default_true() -> bool {
    true
}

/// A change to a sale; absent fields stay as they are. Once the sale has
/// started only `name`, `ends_at` and `hold_seconds` may change, and stock
/// may only be raised.
#[derive(Debug, Clone, Default, Object)]
pub struct PatchSale {
    pub name: Option<String>,
    pub price_cents: Option<i64>,
    pub currency: Option<String>,
    pub total: Option<i64>,
    pub per_user_limit: Option<i64>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub hold_seconds: Option<i64>,
    pub waitlist_enabled: Option<bool>,
}

/// The rules every sale satisfies, checked on create and after a patch.
pub fn validate(s: &CreateSale, now: DateTime<Utc>) -> Result<(), ApiError> {
    let chars = s.name.trim().chars().count();
    if chars == 0 || s.name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::invalid("name must be 1..=200 characters"));
    }
    if s.price_cents < 0 {
        return Err(ApiError::invalid("price_cents must be >= 0"));
    }
    if !(s.currency.len() == 3 && s.currency.bytes().all(|b| b.is_ascii_uppercase())) {
        return Err(ApiError::invalid(
            "currency must be three upper-case letters, e.g. EUR",
        ));
    }
    if !(1..=MAX_TOTAL).contains(&s.total) {
        return Err(ApiError::invalid("total must be 1..=10000000"));
    }
    if s.per_user_limit < 1 || s.per_user_limit > s.total {
        return Err(ApiError::invalid("per_user_limit must be 1..=total"));
    }
    if s.starts_at >= s.ends_at {
        return Err(ApiError::invalid("starts_at must be before ends_at"));
    }
    if s.ends_at <= now {
        return Err(ApiError::invalid("ends_at must be in the future"));
    }
    if !(1..=MAX_HOLD_SECONDS).contains(&s.hold_seconds) {
        return Err(ApiError::invalid("hold_seconds must be 1..=86400"));
    }
    Ok(())
}

impl CreateSale {
    pub fn into_doc(self, id: String, now: DateTime<Utc>) -> SaleDoc {
        SaleDoc {
            id,
            name: self.name,
            price_cents: self.price_cents,
            currency: self.currency,
            total: self.total,
            per_user_limit: self.per_user_limit,
            starts_at: BsonDateTime::from_chrono(self.starts_at),
            ends_at: BsonDateTime::from_chrono(self.ends_at),
            hold_seconds: self.hold_seconds,
            waitlist_enabled: self.waitlist_enabled,
            created_at: BsonDateTime::from_chrono(now),
            closed_at: None,
        }
    }

    fn from_doc(d: &SaleDoc) -> Self {
        CreateSale {
            name: d.name.clone(),
            price_cents: d.price_cents,
            currency: d.currency.clone(),
            total: d.total,
            per_user_limit: d.per_user_limit,
            starts_at: d.starts_at.to_chrono(),
            ends_at: d.ends_at.to_chrono(),
            hold_seconds: d.hold_seconds,
            waitlist_enabled: d.waitlist_enabled,
        }
    }
}

impl PatchSale {
    /// Whether this change needs the sale not to have started yet.
    fn needs_upcoming(&self, before: &SaleDoc) -> bool {
        self.price_cents.is_some_and(|v| v != before.price_cents)
            || self
                .currency
                .as_ref()
                .is_some_and(|v| *v != before.currency)
            || self.total.is_some_and(|v| v != before.total)
            || self
                .per_user_limit
                .is_some_and(|v| v != before.per_user_limit)
            || self
                .starts_at
                .is_some_and(|v| v != before.starts_at.to_chrono())
            || self
                .waitlist_enabled
                .is_some_and(|v| v != before.waitlist_enabled)
    }

    fn apply(self, before: &SaleDoc) -> CreateSale {
        let base = CreateSale::from_doc(before);
        CreateSale {
            name: self.name.unwrap_or(base.name),
            price_cents: self.price_cents.unwrap_or(base.price_cents),
            currency: self.currency.unwrap_or(base.currency),
            total: self.total.unwrap_or(base.total),
            per_user_limit: self.per_user_limit.unwrap_or(base.per_user_limit),
            starts_at: self.starts_at.unwrap_or(base.starts_at),
            ends_at: self.ends_at.unwrap_or(base.ends_at),
            hold_seconds: self.hold_seconds.unwrap_or(base.hold_seconds),
            waitlist_enabled: self.waitlist_enabled.unwrap_or(base.waitlist_enabled),
        }
    }
}

/// Counts of a sale as Redis has them.
#[derive(Debug, Clone, Copy, Default)]
struct LiveCounts {
    total: i64,
    available: i64,
    held: i64,
    sold: i64,
    starts_ms: i64,
    ends_ms: i64,
    closed: bool,
    waitlist_length: i64,
    seq: i64,
}

fn status_at(c: &LiveCounts, now_ms: i64) -> SaleStatus {
    if c.closed || now_ms >= c.ends_ms {
        SaleStatus::Ended
    } else if now_ms < c.starts_ms {
        SaleStatus::Upcoming
    } else if c.available == 0 {
        SaleStatus::SoldOut
    } else {
        SaleStatus::Active
    }
}

#[derive(serde::Deserialize)]
struct ScriptReply {
    r: String,
}

impl AppState {
    pub async fn find_sale(&self, sale_id: &str) -> Result<SaleDoc, ApiError> {
        if !is_sale_id(sale_id) {
            return Err(ApiError::not_found("sale"));
        }
        self.mongo
            .sales
            .find_one(doc! {"_id": sale_id})
            .await
            .map_err(StoreError::from)?
            .ok_or_else(|| ApiError::not_found("sale"))
    }

    /// Sales that may still change: their window has not ended longer ago
    /// than the longest hold. The reaper and the event persister walk these.
    pub async fn recent_sales(&self) -> Result<Vec<SaleDoc>, StoreError> {
        let horizon = BsonDateTime::from_millis(
            BsonDateTime::now().timestamp_millis() - (MAX_HOLD_SECONDS + 60) * 1000,
        );
        Ok(self
            .mongo
            .sales
            .find(doc! {"ends_at": {"$gt": horizon}})
            .await?
            .try_collect()
            .await?)
    }

    pub async fn create_sale(&self, spec: CreateSale) -> Result<SaleView, ApiError> {
        let now = Utc::now();
        validate(&spec, now)?;
        let doc = spec.into_doc(new_id(), now);
        self.mongo
            .sales
            .insert_one(&doc)
            .await
            .map_err(StoreError::from)?;
        // A failure here is repaired by the first read, which opens the sale
        // from MongoDB.
        self.open_in_redis(&doc, 0, 1, "opened", 0).await?;
        tracing::info!(sale_id = %doc.id, total = doc.total, "sale created");
        self.sale_view(&doc).await
    }

    pub async fn list_sales(&self, limit: i64) -> Result<Vec<SaleView>, ApiError> {
        let docs = find_all(
            &self.mongo.sales,
            doc! {},
            doc! {"starts_at": -1, "_id": -1},
            limit,
        )
        .await?;
        let mut views = Vec::with_capacity(docs.len());
        for doc in &docs {
            views.push(self.sale_view(doc).await?);
        }
        Ok(views)
    }

    pub async fn sale_view(&self, doc: &SaleDoc) -> Result<SaleView, ApiError> {
        Ok(self.sale_snapshot(doc).await?.0)
    }

    /// The sale's view and the `seq` of the last change it includes, read in
    /// one step so a live client can apply later changes on top.
    pub async fn sale_snapshot(&self, doc: &SaleDoc) -> Result<(SaleView, i64), ApiError> {
        let counts = match self.live_counts(&doc.id).await? {
            Some(c) => c,
            None => {
                self.restore_sale(doc).await?;
                self.live_counts(&doc.id)
                    .await?
                    .ok_or_else(|| ApiError::Unavailable("sale state is being rebuilt".into()))?
            }
        };
        let now = Utc::now();
        let view = SaleView {
            id: doc.id.clone(),
            name: doc.name.clone(),
            status: status_at(&counts, now.timestamp_millis()),
            price_cents: doc.price_cents,
            currency: doc.currency.clone(),
            total: counts.total,
            available: counts.available,
            held: counts.held,
            sold: counts.sold,
            per_user_limit: doc.per_user_limit,
            waitlist_length: counts.waitlist_length,
            waitlist_enabled: doc.waitlist_enabled,
            hold_seconds: doc.hold_seconds,
            starts_at: doc.starts_at.to_chrono(),
            ends_at: BsonDateTime::from_millis(counts.ends_ms).to_chrono(),
            server_time: now,
        };
        Ok((view, counts.seq))
    }

    async fn live_counts(&self, sale_id: &str) -> Result<Option<LiveCounts>, StoreError> {
        let keys = SaleKeys::new(sale_id);
        let mut conn = self.redis.clone();
        let (v, waiting): (Vec<Option<i64>>, i64) = redis::pipe()
            .cmd("HMGET")
            .arg(keys.sale())
            .arg(&[
                "total",
                "available",
                "held",
                "sold",
                "starts",
                "ends",
                "closed",
                "wl_closed",
                "seq",
            ])
            .zcard(keys.wait())
            .query_async(&mut conn)
            .await?;
        let Some(total) = v[0] else { return Ok(None) };
        let n = |i: usize| v[i].unwrap_or(0);
        Ok(Some(LiveCounts {
            total,
            available: n(1),
            held: n(2),
            sold: n(3),
            starts_ms: n(4),
            ends_ms: n(5),
            closed: n(6) == 1,
            waitlist_length: if n(7) == 1 { 0 } else { waiting },
            seq: n(8),
        }))
    }

    /// Runs `open_sale.lua`. `sold` and `next` describe units already sold.
    async fn open_in_redis(
        &self,
        doc: &SaleDoc,
        sold: i64,
        next: i64,
        kind: &str,
        seq: i64,
    ) -> Result<bool, StoreError> {
        let keys = SaleKeys::new(&doc.id);
        let closed = doc.closed_at.is_some();
        let mut conn = self.redis.clone();
        let reply: ScriptReply = run_json(
            &mut conn,
            self.scripts
                .open_sale
                .key(keys.sale())
                .key(keys.events())
                .arg(keys.channel())
                .arg(doc.total)
                .arg(doc.per_user_limit)
                .arg(doc.starts_at.timestamp_millis())
                .arg(doc.ends_at.timestamp_millis())
                .arg(doc.hold_seconds * 1000)
                .arg(i64::from(closed))
                .arg(sold)
                .arg(next)
                .arg(new_id())
                .arg(doc.price_cents)
                .arg(&doc.currency)
                .arg(kind)
                .arg(i64::from(doc.waitlist_enabled))
                .arg(seq),
        )
        .await?;
        Ok(reply.r == "opened")
    }

    /// Runs a script of the sale; when Redis has lost the sale (`missing`
    /// says so of the reply), rebuilds it from MongoDB and runs it once more.
    pub async fn with_sale_state<T, F, Fut>(
        &self,
        sale_id: &str,
        missing: impl Fn(&T) -> bool,
        run: F,
    ) -> Result<T, ApiError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let reply = run().await?;
        if !missing(&reply) {
            return Ok(reply);
        }
        let sale = self.find_sale(sale_id).await?;
        self.restore_sale(&sale).await?;
        Ok(run().await?)
    }

    /// Rebuilds a sale's Redis state from MongoDB: units in orders stay sold,
    /// every other unit is free, buyers' bought counts come back. Holds and
    /// the waiting list that Redis lost are gone (their units are free again;
    /// waiters read `not_listed` and may join again). One instance
    /// rebuilds while the others wait for it.
    pub async fn restore_sale(&self, doc: &SaleDoc) -> Result<(), StoreError> {
        let keys = SaleKeys::new(&doc.id);
        let mut conn = self.redis.clone();
        let token = new_id();
        let locked: bool = redis::cmd("SET")
            .arg(keys.restore_lock())
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(30_000)
            .query_async::<Option<String>>(&mut conn)
            .await?
            .is_some();
        if !locked {
            // Another request or instance is rebuilding; wait for it.
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if conn.exists::<_, bool>(keys.sale()).await? {
                    return Ok(());
                }
            }
            return Err(StoreError::Unavailable(
                "sale state is being rebuilt; retry".into(),
            ));
        }
        let result = self.rebuild(doc, &keys, &mut conn).await;
        let _: i64 = self
            .scripts
            .unlock
            .key(keys.restore_lock())
            .arg(&token)
            .invoke_async(&mut conn)
            .await?;
        result
    }

    async fn rebuild(
        &self,
        doc: &SaleDoc,
        keys: &SaleKeys,
        conn: &mut redis::aio::ConnectionManager,
    ) -> Result<(), StoreError> {
        if conn.exists::<_, bool>(keys.sale()).await? {
            return Ok(());
        }
        let mut sold_units: Vec<i64> = Vec::new();
        let mut bought: HashMap<String, i64> = HashMap::new();
        let mut orders = self
            .mongo
            .orders
            .clone_with_type::<bson::Document>()
            .find(doc! {"sale_id": &doc.id})
            .projection(doc! {"units": 1, "user_id": 1, "quantity": 1})
            .await?;
        while let Some(order) = orders.try_next().await? {
            let units = order.get_array("units").map_err(anyhow::Error::from)?;
            sold_units.extend(units.iter().filter_map(bson::Bson::as_i64));
            let user = order.get_str("user_id").map_err(anyhow::Error::from)?;
            *bought.entry(user.to_owned()).or_default() +=
                order.get_i64("quantity").map_err(anyhow::Error::from)?;
        }
        sold_units.sort_unstable();
        let next = sold_units.last().copied().unwrap_or(0) + 1;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(&[
                keys.free(),
                keys.deadlines(),
                keys.bought(),
                keys.holding(),
                keys.wait(),
                keys.waitq(),
                keys.promoted(),
            ])
            .ignore();
        // Units below `next` that no order holds are free again.
        let mut sold_iter = sold_units.iter().peekable();
        let mut free_batch = Vec::with_capacity(10_000);
        for serial in 1..next {
            if sold_iter.peek() == Some(&&serial) {
                sold_iter.next();
                continue;
            }
            free_batch.push(serial);
            if free_batch.len() == 10_000 {
                pipe.sadd(keys.free(), std::mem::take(&mut free_batch))
                    .ignore();
            }
        }
        if !free_batch.is_empty() {
            pipe.sadd(keys.free(), free_batch).ignore();
        }
        for chunk in bought.into_iter().collect::<Vec<_>>().chunks(10_000) {
            pipe.hset_multiple(keys.bought(), chunk).ignore();
        }
        pipe.query_async::<()>(conn).await?;
        // Carry on from the last change recorded in MongoDB, so seq keeps
        // rising for the live feed and the event log.
        let last_seq = self
            .mongo
            .stock_events
            .find_one(doc! {"sale_id": &doc.id})
            .sort(doc! {"seq": -1})
            .await?
            .map_or(0, |e| e.seq);
        self.open_in_redis(doc, sold_units.len() as i64, next, "restored", last_seq)
            .await?;
        tracing::warn!(sale_id = %doc.id, sold = sold_units.len(), "sale state rebuilt from MongoDB");
        Ok(())
    }

    pub async fn patch_sale(&self, sale_id: &str, patch: PatchSale) -> Result<SaleView, ApiError> {
        let before = self.find_sale(sale_id).await?;
        let now = Utc::now();
        if before.closed_at.is_some() || before.ends_at.to_chrono() <= now {
            return Err(ApiError::conflict("sale_ended", "the sale has ended"));
        }
        let needs_upcoming = patch.needs_upcoming(&before);
        if needs_upcoming && before.starts_at.to_chrono() <= now {
            return Err(ApiError::conflict(
                "sale_started",
                "once a sale has started only name, ends_at and hold_seconds may change",
            ));
        }
        let after = patch.apply(&before);
        validate(&after, now)?;
        if after.total < before.total {
            return Err(ApiError::conflict(
                "invalid_change",
                "stock can only be raised",
            ));
        }
        let after = after.into_doc(before.id.clone(), before.created_at.to_chrono());
        // Redis first: its script is the atomic gate against the sale
        // starting between our check and the write.
        let keys = SaleKeys::new(&before.id);
        let mut conn = self.redis.clone();
        let reply: ScriptReply = run_json(
            &mut conn,
            self.scripts
                .update_sale
                .key(keys.sale())
                .key(keys.events())
                .arg(keys.channel())
                .arg(after.starts_at.timestamp_millis())
                .arg(after.ends_at.timestamp_millis())
                .arg(after.hold_seconds * 1000)
                .arg(after.total)
                .arg(after.per_user_limit)
                .arg(after.price_cents)
                .arg(&after.currency)
                .arg(i64::from(needs_upcoming))
                .arg(i64::from(after.waitlist_enabled)),
        )
        .await?;
        match reply.r.as_str() {
            "ok" => {}
            "missing" => {
                // Not in Redis: MongoDB alone is the truth; the next read
                // opens the sale from the updated document.
            }
            "started" => {
                return Err(ApiError::conflict("sale_started", "the sale has started"));
            }
            "ended" => return Err(ApiError::conflict("sale_ended", "the sale has ended")),
            _ => {
                return Err(ApiError::conflict(
                    "invalid_change",
                    "stock can only be raised",
                ));
            }
        }
        self.mongo
            .sales
            .replace_one(doc! {"_id": &after.id}, &after)
            .await
            .map_err(StoreError::from)?;
        self.sale_view(&after).await
    }

    pub async fn close_sale(&self, sale_id: &str) -> Result<SaleView, ApiError> {
        let mut doc = self.find_sale(sale_id).await?;
        let keys = SaleKeys::new(sale_id);
        #[derive(serde::Deserialize)]
        struct Closed {
            r: String,
            ends: Option<i64>,
        }
        let reply: Closed = self
            .with_sale_state(
                sale_id,
                |r: &Closed| r.r == "missing",
                || async {
                    let mut conn = self.redis.clone();
                    run_json(
                        &mut conn,
                        self.scripts
                            .close_sale
                            .key(keys.sale())
                            .key(keys.events())
                            .arg(keys.channel()),
                    )
                    .await
                },
            )
            .await?;
        if reply.r == "missing" {
            return Err(ApiError::Unavailable("sale state is being rebuilt".into()));
        }
        let ends = reply
            .ends
            .map(BsonDateTime::from_millis)
            .unwrap_or(doc.ends_at);
        let closed_at = doc.closed_at.unwrap_or_else(BsonDateTime::now);
        self.mongo
            .sales
            .update_one(
                doc! {"_id": sale_id},
                doc! {"$set": {"closed_at": closed_at, "ends_at": ends}},
            )
            .await
            .map_err(StoreError::from)?;
        doc.closed_at = Some(closed_at);
        doc.ends_at = ends;
        self.sale_view(&doc).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> CreateSale {
        let now = Utc::now();
        CreateSale {
            name: "Sneakers".into(),
            price_cents: 9_900,
            currency: "EUR".into(),
            total: 100,
            per_user_limit: 2,
            starts_at: now,
            ends_at: now + chrono::Duration::hours(1),
            hold_seconds: 120,
            waitlist_enabled: true,
        }
    }

    #[test]
    fn a_good_sale_passes() {
        validate(&spec(), Utc::now()).unwrap();
    }

    #[test]
    fn each_rule_is_enforced_with_a_message_naming_the_field() {
        let now = Utc::now();
        type Breaker = Box<dyn Fn(&mut CreateSale)>;
        let cases: Vec<(&str, Breaker)> = vec![
            ("name", Box::new(|s| s.name = " ".into())),
            ("name", Box::new(|s| s.name = "x".repeat(201))),
            ("price_cents", Box::new(|s| s.price_cents = -1)),
            ("currency", Box::new(|s| s.currency = "eur".into())),
            ("total", Box::new(|s| s.total = 0)),
            ("total", Box::new(|s| s.total = MAX_TOTAL + 1)),
            ("per_user_limit", Box::new(|s| s.per_user_limit = 101)),
            ("per_user_limit", Box::new(|s| s.per_user_limit = 0)),
            ("starts_at", Box::new(|s| s.starts_at = s.ends_at)),
            (
                "ends_at",
                Box::new(|s| {
                    s.starts_at = Utc::now() - chrono::Duration::hours(2);
                    s.ends_at = Utc::now() - chrono::Duration::hours(1);
                }),
            ),
            ("hold_seconds", Box::new(|s| s.hold_seconds = 0)),
            (
                "hold_seconds",
                Box::new(|s| s.hold_seconds = MAX_HOLD_SECONDS + 1),
            ),
        ];
        for (field, break_it) in cases {
            let mut s = spec();
            break_it(&mut s);
            let err = validate(&s, now).unwrap_err();
            assert!(err.to_string().contains(field), "{field}: {err}");
        }
    }

    #[test]
    fn status_follows_window_and_stock() {
        let c = LiveCounts {
            total: 10,
            available: 3,
            starts_ms: 100,
            ends_ms: 200,
            ..Default::default()
        };
        assert_eq!(status_at(&c, 50), SaleStatus::Upcoming);
        assert_eq!(status_at(&c, 150), SaleStatus::Active);
        assert_eq!(status_at(&c, 200), SaleStatus::Ended);
        let empty = LiveCounts { available: 0, ..c };
        assert_eq!(status_at(&empty, 150), SaleStatus::SoldOut);
        let closed = LiveCounts { closed: true, ..c };
        assert_eq!(status_at(&closed, 150), SaleStatus::Ended);
    }

    #[test]
    fn only_hex_object_ids_are_sale_ids() {
        assert!(is_sale_id(&new_id()));
        assert!(!is_sale_id("{x}"));
        assert!(!is_sale_id("65F0000000000000000000AA"));
    }
}
