//! The lobby before a sale opens: everyone who arrives before the start is
//! ordered by a draw anyone can verify, latecomers queue behind, and buyers
//! are admitted at a set rate.
//!
//! How it is kept (keys under the sale's hash tag, declared in
//! `store/keys.rs`; one script per transition):
//!
//! - The seed is drawn when the sale is created with `lobby_opens_at` and
//!   stored in MongoDB; only `seed_sha256` is shown until the start.
//! - A join is recorded in MongoDB first, then put into the sale's `lobby`,
//!   a sorted set ordered by member: a joiner before the start at their
//!   draw value (`0:<HMAC>:<buyer>`), a latecomer behind everyone drawn at
//!   their join time (`1:<ms>:<buyer>`). The order is a function of durable
//!   data (the seed and the entries), so a rebuild after a Redis loss puts
//!   everyone back at the same place, and no step at the start has to sort.
//! - Admission: every instance's keeper calls `lobby_tick` about ten times
//!   a second; the script admits buyers from the head (`ZPOPMIN`) at the
//!   sale's rate, each with a deadline, and lapses unused admissions, which
//!   frees their turns. Reserve and waitlist join check the admission
//!   inside their own scripts. The keeper records admissions and lapses in
//!   MongoDB; the first use is recorded by the request that made it.

pub mod draw;
pub mod keeper;

use chrono::{DateTime, Utc};
use poem_openapi::Object;

use crate::store::{
    mongo::{LobbyDoc, LobbyEntryDoc},
    scripts::{LobbyPlace, LobbyState},
};
use crate::{ids::SaleId, store::Store};

/// Why a lobby sale refuses a buyer without a live admission.
pub const NOT_ADMITTED: &str = "this sale lets buyers in from its lobby: join it (POST /api/v1/sales/{id}/lobby) and wait for your turn; an admission that ran out cannot be used";

/// Records in MongoDB that a buyer used their admission, off the request's
/// path: Redis has it already; MongoDB's copy serves rebuilds and reports.
pub fn record_use(store: &Store, sale: &SaleId, buyer: &str) {
    let (store, sale, buyer) = (store.clone(), sale.clone(), buyer.to_owned());
    tokio::spawn(async move {
        if let Err(err) = store.mongo.record_admission_used(&sale, &buyer).await {
            tracing::warn!(sale_id = %sale, error = %err, "could not record a used admission");
        }
    });
}

/// Where a buyer goes in the lobby's order in Redis: see the module docs.
pub fn member(seed: &draw::Seed, entry: &LobbyEntryDoc) -> String {
    match entry.late {
        true => format!(
            "1:{:015}:{}",
            entry.joined_at.timestamp_millis().max(0),
            entry.buyer
        ),
        false => format!("0:{}:{}", seed.value_of(&entry.buyer), entry.buyer),
    }
}

/// A lobby as anyone may see it. The seed's SHA-256 is public from the
/// opening, the seed itself from the start: check that the one hashes to
/// the other, then recompute the draw (`GET .../lobby/draw`).
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct LobbyView {
    pub opens_at: DateTime<Utc>,
    /// SHA-256 (lowercase hex) of the seed's text; from the opening on.
    pub seed_sha256: Option<String>,
    /// The seed, revealed at the start.
    pub seed: Option<String>,
    pub admit_per_second: i64,
    pub admission_seconds: i64,
    /// Buyers who joined, in the lobby or after the start.
    pub joined: i64,
    /// Buyers let in so far.
    pub admitted: i64,
    /// Buyers still waiting for their turn.
    pub lobby_length: i64,
}

/// Where a buyer stands in a lobby.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "snake_case")]
pub enum LobbyStatus {
    /// Joined before the start: placed by the draw at the start.
    Lobby,
    /// Waiting for a turn from the start on (drawn, or a latecomer behind
    /// the draw in arrival order), with a position.
    Queued,
    /// Let in: reserve or join the waiting list before
    /// `admission_expires_at`.
    Admitted,
    /// The admission ran out.
    Expired,
    /// Every unit is sold for good (or the sale ended): no turn will come.
    SoldOut,
    /// Not in this lobby.
    NotListed,
}

/// A buyer's entry.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct LobbyEntry {
    pub status: LobbyStatus,
    pub joined_at: Option<DateTime<Utc>>,
    /// 1-based place among those waiting, from the start on: the draw
    /// first, then latecomers.
    pub position: Option<i64>,
    /// About how long until the turn comes, at the admission rate.
    pub eta_seconds: Option<i64>,
    /// Until when the admission lets the buyer reserve.
    pub admission_expires_at: Option<DateTime<Utc>>,
}

/// The draw, from the start on: anyone can check that `seed` hashes to
/// `seed_sha256` (public since the opening), that `order` is sorted and
/// as long as the lobby, and find their own value,
/// `HMAC-SHA256(key = seed, message = buyer id)`, in it.
#[derive(Debug, Clone, Object)]
pub struct LobbyDraw {
    pub seed: String,
    pub seed_sha256: String,
    /// The lobby's values (lowercase hex) in draw order.
    pub order: Vec<String>,
}

fn at_ms(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

impl LobbyEntry {
    /// A buyer's entry from where Redis has them.
    pub fn of(place: &LobbyPlace) -> Self {
        let mut entry = Self {
            status: LobbyStatus::NotListed,
            joined_at: place.joined_at.and_then(at_ms),
            position: None,
            eta_seconds: None,
            admission_expires_at: None,
        };
        let live = place.deadline.is_some_and(|d| place.now < d);
        entry.status = match place.state {
            LobbyState::None => LobbyStatus::NotListed,
            LobbyState::Waiting if !place.started => LobbyStatus::Lobby,
            LobbyState::Waiting if place.sold_out => LobbyStatus::SoldOut,
            LobbyState::Waiting => {
                let position = place.rank.unwrap_or(0) + 1;
                entry.position = Some(position);
                entry.eta_seconds = Some(eta(position, place.rate));
                LobbyStatus::Queued
            }
            LobbyState::Admitted | LobbyState::Used if live => {
                entry.admission_expires_at = place.deadline.and_then(at_ms);
                LobbyStatus::Admitted
            }
            LobbyState::Admitted | LobbyState::Used | LobbyState::Lapsed => LobbyStatus::Expired,
        };
        entry
    }
}

/// Seconds until the buyer at `position` is let in at `rate` a second.
pub fn eta(position: i64, rate: i64) -> i64 {
    let rate = rate.max(1);
    (position + rate - 1) / rate
}

impl LobbyView {
    pub fn at(
        lobby: &LobbyDoc,
        starts_at: DateTime<Utc>,
        now: DateTime<Utc>,
        figures: &LobbyPlace,
    ) -> Self {
        let opened = lobby.opens_at.to_chrono() <= now;
        Self {
            opens_at: lobby.opens_at.to_chrono(),
            seed_sha256: opened.then(|| lobby.seed_sha256.clone()),
            seed: (starts_at <= now).then(|| lobby.seed.clone()),
            admit_per_second: lobby.admit_per_second,
            admission_seconds: lobby.admission_seconds,
            joined: figures.joined,
            admitted: figures.admitted_count,
            lobby_length: figures.length,
        }
    }
}
