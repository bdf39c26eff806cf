//! What an admin's sale must satisfy, and the shapes a sale takes on the
//! API: the create and patch bodies and the live view.

use bson::DateTime as BsonDateTime;
use chrono::{DateTime, Utc};
use poem_openapi::{Enum, Object};

use crate::{
    error::{ApiError, ErrorCode},
    ids::SaleId,
    lobby::{draw::Seed, seal::SeedKey},
    store::{
        mongo::{LobbyDoc, SaleDoc},
        scripts::{LiveSale, LiveStatus},
    },
    text::Text,
};

pub const MAX_TOTAL: i64 = 10_000_000;
pub const MAX_HOLD_SECONDS: i64 = 86_400;
/// How far ahead a sale may end. Times cross the Lua boundary as
/// milliseconds, which Redis's JSON prints exactly below 10^14 (the year
/// 5138); a decade is far inside that.
pub const MAX_YEARS_AHEAD: i64 = 10;
pub const MAX_NAME_CHARS: usize = 200;
/// Highest unit price in minor units: a hold of 1000 units stays well
/// inside an i64.
pub const MAX_PRICE_CENTS: i64 = 1_000_000_000_000_000;

/// How a hold becomes an order: the buyer confirms (`none`, as for cash
/// on delivery), or the payment provider's webhook does (`webhook`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Enum)]
#[oai(rename_all = "snake_case")]
pub enum PaymentMode {
    #[default]
    None,
    Webhook,
}

/// How long a payment may take unless the sale says otherwise.
pub const DEFAULT_PAYMENT_SECONDS: i64 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum SaleStatus {
    Upcoming,
    Active,
    SoldOut,
    Ended,
}

impl From<LiveStatus> for SaleStatus {
    fn from(s: LiveStatus) -> Self {
        match s {
            LiveStatus::Upcoming => SaleStatus::Upcoming,
            LiveStatus::Active => SaleStatus::Active,
            LiveStatus::SoldOut => SaleStatus::SoldOut,
            LiveStatus::Ended => SaleStatus::Ended,
        }
    }
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
    /// Whether buyers are let in from a lobby (`GET /sales/{id}/lobby`):
    /// reserve and waiting-list join then need an admission.
    pub lobby: bool,
    /// `webhook`: a hold is paid for (`POST /reservations/{rid}/payment`)
    /// and the payment confirms it; `none`: the buyer confirms.
    pub payment: PaymentMode,
    /// How long a buyer may take to pay, for a sale that takes payment
    /// (absent otherwise).
    #[oai(skip_serializing_if_is_none)]
    pub payment_seconds: Option<i64>,
}

fn at(ms: i64) -> DateTime<Utc> {
    BsonDateTime::from_millis(ms).to_chrono()
}

impl SaleView {
    /// The view of a sale as Redis has it, all of it read in one step.
    pub fn from_live(id: &SaleId, s: LiveSale) -> Self {
        SaleView {
            id: id.to_string(),
            name: s.name,
            status: s.status.into(),
            price_cents: s.price,
            currency: s.currency,
            total: s.total,
            available: s.available,
            held: s.held,
            sold: s.sold,
            per_user_limit: s.limit,
            waitlist_length: s.waitlist_length,
            waitlist_enabled: s.waitlist,
            hold_seconds: s.hold_ms / 1000,
            starts_at: at(s.starts),
            ends_at: at(s.ends),
            server_time: at(s.now),
            lobby: s.lobby,
            payment: match s.pay_ms {
                0 => PaymentMode::None,
                _ => PaymentMode::Webhook,
            },
            payment_seconds: (s.pay_ms > 0).then_some(s.pay_ms / 1000),
        }
    }
}

#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
pub struct CreateSale {
    /// 1..=200 characters, not only blanks.
    #[oai(validator(min_length = 1, max_length = 200, pattern = "\\S"))]
    pub name: Text,
    /// Price of one unit in minor units, 0..=10^15.
    #[oai(validator(minimum(value = "0"), maximum(value = "1000000000000000")))]
    pub price_cents: i64,
    /// Three upper-case letters (ISO 4217).
    #[oai(validator(pattern = "^[A-Z]{3}$"))]
    pub currency: Text,
    /// Units on sale, 1..=10,000,000.
    #[oai(validator(minimum(value = "1"), maximum(value = "10000000")))]
    pub total: i64,
    /// Most units one buyer may hold and buy, 1..=total.
    #[oai(validator(minimum(value = "1"), maximum(value = "10000000")))]
    pub per_user_limit: i64,
    /// Before `ends_at`.
    pub starts_at: DateTime<Utc>,
    /// After `starts_at`, in the future, and within 10 years.
    pub ends_at: DateTime<Utc>,
    /// How long a hold lasts before it expires, 1..=86,400.
    #[oai(validator(minimum(value = "1"), maximum(value = "86400")))]
    pub hold_seconds: i64,
    /// Whether buyers may join a waiting list when stock runs out.
    #[oai(default = "default_true")]
    pub waitlist_enabled: bool,
    /// Opens a lobby at this time, before `starts_at`: buyers who join it
    /// are ordered by a draw at the start and admitted at
    /// `admit_per_second`. Without it, the sale works first come, first
    /// served.
    pub lobby_opens_at: Option<DateTime<Utc>>,
    /// Buyers let in per second from the start, 1..=100,000.
    #[oai(
        default = "default_admit_per_second",
        validator(minimum(value = "1"), maximum(value = "100000"))
    )]
    pub admit_per_second: i64,
    /// How long an admitted buyer may take to reserve, 1..=3,600 seconds.
    #[oai(
        default = "default_admission_seconds",
        validator(minimum(value = "1"), maximum(value = "3600"))
    )]
    pub admission_seconds: i64,
    /// `webhook`: buyers pay for a hold and the provider's signed webhook
    /// confirms it (the server needs `FLASHDROP_PAYMENT_WEBHOOK_SECRET`);
    /// `none` (the default): buyers confirm.
    #[oai(default)]
    pub payment: PaymentMode,
    /// How long a buyer may take to pay, 30..=1,800 seconds, counted from
    /// the payment intent (webhook sales).
    #[oai(
        default = "default_payment_seconds",
        validator(minimum(value = "30"), maximum(value = "1800"))
    )]
    pub payment_seconds: i64,
    /// How long after an order its buyer may cancel it
    /// (`DELETE /me/orders/{id}`), 0..=2,592,000 seconds; 0 (the default):
    /// only an admin can.
    #[oai(default, validator(minimum(value = "0"), maximum(value = "2592000")))]
    pub cancel_seconds: i64,
}

fn default_true() -> bool {
    true
}

fn default_admit_per_second() -> i64 {
    100
}

fn default_admission_seconds() -> i64 {
    120
}

fn default_payment_seconds() -> i64 {
    DEFAULT_PAYMENT_SECONDS
}

/// A change to a sale; absent fields stay as they are. Before the start
/// stock may be raised, never lowered; once the sale has started only
/// `name`, `ends_at` and `hold_seconds` may change.
#[derive(Debug, Clone, Default, Object)]
#[oai(deny_unknown_fields)]
pub struct PatchSale {
    /// 1..=200 characters, not only blanks.
    #[oai(validator(min_length = 1, max_length = 200, pattern = "\\S"))]
    pub name: Option<Text>,
    /// 0..=10^15; before the start only.
    #[oai(validator(minimum(value = "0"), maximum(value = "1000000000000000")))]
    pub price_cents: Option<i64>,
    /// Three upper-case letters; before the start only.
    #[oai(validator(pattern = "^[A-Z]{3}$"))]
    pub currency: Option<Text>,
    /// 1..=10,000,000, never lower than before.
    #[oai(validator(minimum(value = "1"), maximum(value = "10000000")))]
    pub total: Option<i64>,
    /// 1..=total; before the start only.
    #[oai(validator(minimum(value = "1"), maximum(value = "10000000")))]
    pub per_user_limit: Option<i64>,
    /// Before the start only.
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    /// 1..=86,400.
    #[oai(validator(minimum(value = "1"), maximum(value = "86400")))]
    pub hold_seconds: Option<i64>,
    /// Before the start only.
    pub waitlist_enabled: Option<bool>,
    /// Before the lobby opens only (and before the start).
    pub lobby_opens_at: Option<DateTime<Utc>>,
    /// 1..=100,000; before the lobby opens only.
    #[oai(validator(minimum(value = "1"), maximum(value = "100000")))]
    pub admit_per_second: Option<i64>,
    /// 1..=3,600; before the lobby opens only.
    #[oai(validator(minimum(value = "1"), maximum(value = "3600")))]
    pub admission_seconds: Option<i64>,
}

/// The rules every sale satisfies, checked on create and after a patch.
pub fn validate(s: &CreateSale, now: DateTime<Utc>) -> Result<(), ApiError> {
    let chars = s.name.trim().chars().count();
    if chars == 0 || s.name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::invalid("name must be 1..=200 characters"));
    }
    if !(0..=MAX_PRICE_CENTS).contains(&s.price_cents) {
        return Err(ApiError::invalid(
            "price_cents must be 0..=1000000000000000",
        ));
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
    if s.ends_at > now + chrono::Duration::days(MAX_YEARS_AHEAD * 366) {
        return Err(ApiError::invalid(format!(
            "ends_at must be within {MAX_YEARS_AHEAD} years from now"
        )));
    }
    if !(1..=MAX_HOLD_SECONDS).contains(&s.hold_seconds) {
        return Err(ApiError::invalid("hold_seconds must be 1..=86400"));
    }
    if s.lobby_opens_at.is_some_and(|opens| opens >= s.starts_at) {
        return Err(ApiError::invalid("lobby_opens_at must be before starts_at"));
    }
    if !(1..=100_000).contains(&s.admit_per_second) {
        return Err(ApiError::invalid("admit_per_second must be 1..=100000"));
    }
    if !(1..=3_600).contains(&s.admission_seconds) {
        return Err(ApiError::invalid("admission_seconds must be 1..=3600"));
    }
    if !(30..=1_800).contains(&s.payment_seconds) {
        return Err(ApiError::invalid("payment_seconds must be 30..=1800"));
    }
    if !(0..=2_592_000).contains(&s.cancel_seconds) {
        return Err(ApiError::invalid("cancel_seconds must be 0..=2592000"));
    }
    Ok(())
}

impl CreateSale {
    /// The sale as MongoDB keeps it. A lobby gets a fresh seed, sealed with
    /// `key`; without a key no lobby can be made (409 `not_configured`).
    pub fn into_doc(
        self,
        id: &SaleId,
        created: DateTime<Utc>,
        key: Option<&SeedKey>,
    ) -> Result<SaleDoc, ApiError> {
        let lobby = match (self.lobby_opens_at, key) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(ApiError::new(
                    ErrorCode::NotConfigured,
                    "this server has no FLASHDROP_SEED_KEY, which seals a lobby's seed until its draw: set it to create sales with lobby_opens_at",
                ));
            }
            (Some(opens), Some(key)) => {
                let seed = Seed::draw()?;
                Some(LobbyDoc {
                    opens_at: BsonDateTime::from_chrono(opens),
                    admit_per_second: self.admit_per_second,
                    admission_seconds: self.admission_seconds,
                    seed_sha256: seed.commitment(),
                    seed_sealed: Some(key.seal(id, &seed)?),
                    seed: None,
                })
            }
        };
        Ok(SaleDoc {
            id: id.to_string(),
            name: self.name.into(),
            price_cents: self.price_cents,
            currency: self.currency.into(),
            total: self.total,
            per_user_limit: self.per_user_limit,
            starts_at: BsonDateTime::from_chrono(self.starts_at),
            ends_at: BsonDateTime::from_chrono(self.ends_at),
            hold_seconds: self.hold_seconds,
            waitlist_enabled: self.waitlist_enabled,
            created_at: BsonDateTime::from_chrono(created),
            closed_at: None,
            version: 0,
            lobby,
            payment_seconds: (self.payment == PaymentMode::Webhook).then_some(self.payment_seconds),
            cancel_seconds: self.cancel_seconds,
        })
    }

    fn from_doc(d: &SaleDoc) -> Self {
        CreateSale {
            name: d.name.as_str().into(),
            price_cents: d.price_cents,
            currency: d.currency.as_str().into(),
            total: d.total,
            per_user_limit: d.per_user_limit,
            starts_at: d.starts_at.to_chrono(),
            ends_at: d.ends_at.to_chrono(),
            hold_seconds: d.hold_seconds,
            waitlist_enabled: d.waitlist_enabled,
            lobby_opens_at: d.lobby.as_ref().map(|l| l.opens_at.to_chrono()),
            admit_per_second: d
                .lobby
                .as_ref()
                .map_or_else(default_admit_per_second, |l| l.admit_per_second),
            admission_seconds: d
                .lobby
                .as_ref()
                .map_or_else(default_admission_seconds, |l| l.admission_seconds),
            payment: match d.payment_seconds {
                Some(_) => PaymentMode::Webhook,
                None => PaymentMode::None,
            },
            payment_seconds: d.payment_seconds.unwrap_or(DEFAULT_PAYMENT_SECONDS),
            cancel_seconds: d.cancel_seconds,
        }
    }
}

impl PatchSale {
    /// Whether this change needs the sale not to have started yet.
    /// Whether this patch changes the lobby's settings, which may change
    /// only before the lobby opens.
    pub fn touches_lobby(&self) -> bool {
        self.lobby_opens_at.is_some()
            || self.admit_per_second.is_some()
            || self.admission_seconds.is_some()
    }

    pub fn needs_upcoming(&self, before: &SaleDoc) -> bool {
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

    pub fn apply(self, before: &SaleDoc) -> CreateSale {
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
            lobby_opens_at: self.lobby_opens_at.or(base.lobby_opens_at),
            admit_per_second: self.admit_per_second.unwrap_or(base.admit_per_second),
            admission_seconds: self.admission_seconds.unwrap_or(base.admission_seconds),
            payment: base.payment,
            payment_seconds: base.payment_seconds,
            cancel_seconds: base.cancel_seconds,
        }
    }
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
