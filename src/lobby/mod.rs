//! The lobby before a sale opens: everyone who arrives before the start is
//! ordered by a draw anyone can verify, latecomers queue behind, and buyers
//! are admitted at a set rate. Every decision (open, started, early or
//! late, lapsed) is taken on the Redis clock, inside the scripts.
//!
//! How it is kept (keys under the sale's hash tag, declared in
//! `store/keys.rs`; one script per transition):
//!
//! - The seed is drawn when the sale is created and stored in MongoDB
//!   sealed with `FLASHDROP_SEED_KEY` ([`seal`]); only its SHA-256 is
//!   shown, from the opening.
//! - A join is recorded in MongoDB first (with the Redis clock's time),
//!   then `lobby_join` decides: before the start the buyer joins the
//!   sale's `early` set, which says nothing of where they will stand;
//!   from the start on they queue behind the draw by join time.
//! - At the start `lobby_tick` hands one instance a lease to make the
//!   draw: it opens the seed, orders the early set by
//!   `HMAC-SHA256(key = seed, message = buyer id)`, stores the draw in
//!   MongoDB (once: the first stored draw is the draw) and loads it into
//!   the sale's `lobby`, a chunk a call ([`frozen`] serves it).
//! - Admission: every instance's keeper calls `lobby_tick` about ten times
//!   a second; once the draw is loaded it admits buyers from the head
//!   (`ZPOPMIN`) at the sale's rate, each with a deadline, and lapses
//!   unused admissions, which frees their turns. Reserve and waitlist join
//!   check the admission inside their own scripts. Every admission, lapse
//!   and use goes to the lobby's log in the same script, and the recorder
//!   copies the log into MongoDB.

pub mod draw;
mod freeze;

pub use freeze::LOAD_CHUNK;
pub mod frozen;
pub mod seal;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use bson::DateTime as BsonDateTime;
use chrono::{DateTime, Utc};
use poem_openapi::Object;

use self::{
    frozen::{Draws, FrozenDraw},
    seal::SeedKey,
};
use crate::{
    error::{ApiError, ErrorCode},
    ids::SaleId,
    recovery::Recovery,
    store::{
        Store,
        mongo::LobbyEntryDoc,
        scripts::{LobbyJoinReply, LobbyPlace, LobbyReadReply, LobbyState},
    },
};

/// Why a lobby sale refuses a buyer without a live admission.
pub const NOT_ADMITTED: &str = "this sale lets buyers in from its lobby: join it (POST /api/v1/sales/{id}/lobby) and wait for your turn; an admission that ran out cannot be used";

/// A lobby as anyone may see it. The seed's SHA-256 is public from the
/// opening, the seed itself once the draw is made at the start: check
/// that the one hashes to the other, then recompute the draw
/// (`GET .../lobby/draw`).
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct LobbyView {
    pub opens_at: DateTime<Utc>,
    /// SHA-256 (lowercase hex) of the seed's text; from the opening on.
    pub seed_sha256: Option<String>,
    /// The seed, revealed with the draw at the start.
    pub seed: Option<String>,
    pub admit_per_second: i64,
    pub admission_seconds: i64,
    /// Buyers who joined, in the lobby or after the start.
    pub joined: i64,
    /// Buyers in the draw (those who joined before the start), once it is
    /// made: the length of its `order`.
    pub drawn: Option<i64>,
    /// Buyers let in so far.
    pub admitted: i64,
    /// Buyers still waiting for their turn.
    pub lobby_length: i64,
}

/// Where a buyer stands in a lobby.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "snake_case")]
pub enum LobbyStatus {
    /// Joined before the start: placed by the draw at the start (also
    /// while the draw is being made).
    Lobby,
    /// Waiting for a turn once the draw is made (drawn, or a latecomer
    /// behind the draw in arrival order), with a position.
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
    /// 1-based place among those waiting, once the draw is made: the draw
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
/// `HMAC-SHA256(key = seed, message = buyer id)`, in it. It never changes
/// once made: it is served with an `ETag` and as immutable.
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
            LobbyState::Waiting if place.sold_out => LobbyStatus::SoldOut,
            LobbyState::Waiting if !place.drawn => LobbyStatus::Lobby,
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
    fn of(place: &LobbyPlace, draw: Option<&FrozenDraw>) -> Self {
        Self {
            opens_at: at_ms(place.opens).unwrap_or_default(),
            seed_sha256: place.commit.clone().filter(|_| place.opened),
            seed: draw.map(|d| d.seed.clone()),
            admit_per_second: place.rate,
            admission_seconds: place.admission_ms / 1000,
            joined: place.joined,
            drawn: place.drawn.then_some(place.draw_count),
            admitted: place.admitted_count,
            lobby_length: place.length,
        }
    }
}

/// The lobby's service: joins, places, views and the draw, from Redis and
/// from memory on every request; MongoDB only for a first join and for a
/// draw this instance has not read yet.
#[derive(Clone)]
pub struct Lobby {
    store: Store,
    recovery: Recovery,
    draws: Draws,
    /// Per sale, when this instance last found its draw not made yet, and
    /// whether the sale had started: the crowd that asks for the draw at
    /// the start costs one Redis read per [`NOT_YET_FOR`], not one per
    /// request.
    not_yet: Arc<parking_lot::Mutex<HashMap<SaleId, (Instant, bool)>>>,
    seed_key: Option<SeedKey>,
}

/// How long "the draw is not made yet" is taken as still true.
const NOT_YET_FOR: Duration = Duration::from_millis(250);

impl Lobby {
    pub fn new(store: Store, recovery: Recovery, seed_key: Option<SeedKey>) -> Self {
        Self {
            store,
            recovery,
            draws: Draws::default(),
            not_yet: Arc::default(),
            seed_key,
        }
    }

    /// A buyer's place and the lobby's figures; 404 when the sale has no
    /// lobby.
    pub async fn place(&self, sale: &SaleId, buyer: &str) -> Result<LobbyPlace, ApiError> {
        let read = self
            .recovery
            .with_sale(sale, || self.store.redis.lobby_read(sale, buyer))
            .await?;
        match read {
            LobbyReadReply::Place(place) if place.rate > 0 => Ok(place),
            LobbyReadReply::Place(_) => Err(ApiError::not_found("lobby")),
            LobbyReadReply::Missing => Err(ApiError::rebuilding()),
        }
    }

    /// A sale's lobby as anyone may see it; 404 when it has none.
    pub async fn view(&self, sale: &SaleId) -> Result<LobbyView, ApiError> {
        let place = self.place(sale, "").await?;
        let draw = match place.drawn {
            true => Some(self.frozen(sale).await?),
            false => None,
        };
        Ok(LobbyView::of(&place, draw.as_deref()))
    }

    /// Where a buyer stands, from Redis alone.
    pub async fn entry(&self, sale: &SaleId, buyer: &str) -> Result<LobbyEntry, ApiError> {
        Ok(LobbyEntry::of(&self.place(sale, buyer).await?))
    }

    /// A buyer takes a place in the lobby: true on the first join. A
    /// repeat is answered from Redis alone. A first join is recorded in
    /// MongoDB (with the Redis clock's time) before Redis places it, so no
    /// rebuild can lose it.
    pub async fn join(&self, sale: &SaleId, buyer: &str) -> Result<(LobbyEntry, bool), ApiError> {
        let place = self.place(sale, buyer).await?;
        if place.state != LobbyState::None {
            return Ok((LobbyEntry::of(&place), false));
        }
        if !place.opened {
            return Err(not_open(place.opens));
        }
        if place.ended {
            return Err(ApiError::new(ErrorCode::SaleEnded, "the sale has ended"));
        }
        let entry = LobbyEntryDoc {
            id: format!("{sale}:{buyer}"),
            sale_id: sale.to_string(),
            buyer: buyer.to_owned(),
            joined_at: BsonDateTime::from_millis(place.now),
            admitted_at: None,
            admission_expires_at: None,
            used: false,
            lapsed: false,
        };
        let first = self.store.mongo.join_lobby(&entry).await?;
        // A join cut off between MongoDB and Redis is finished with the
        // time MongoDB has, so a rebuild puts the buyer where Redis does.
        let joined_ms = match first {
            true => place.now,
            false => self
                .store
                .mongo
                .lobby_entry(sale, buyer)
                .await?
                .map_or(place.now, |e| e.joined_at.timestamp_millis()),
        };
        let reply = self
            .recovery
            .with_sale(sale, || self.store.redis.lobby_join(sale, buyer, joined_ms))
            .await?;
        match reply {
            LobbyJoinReply::Place(place) => Ok((LobbyEntry::of(&place), first)),
            LobbyJoinReply::NotOpen { opens } => Err(not_open(opens)),
            LobbyJoinReply::Ended => Err(ApiError::new(ErrorCode::SaleEnded, "the sale has ended")),
            LobbyJoinReply::None => Err(ApiError::not_found("lobby")),
            LobbyJoinReply::Missing => Err(ApiError::rebuilding()),
        }
    }

    /// The draw: from memory once this instance has read it. Before the
    /// start 409; between the start and the moment the draw is stored (a
    /// fraction of a second), 503 with a retry.
    pub async fn draw(&self, sale: &SaleId) -> Result<Arc<FrozenDraw>, ApiError> {
        if let Some(draw) = self.draws.get(sale) {
            return Ok(draw);
        }
        let not_yet = |started: bool| match started {
            false => ApiError::new(ErrorCode::SaleNotActive, "the draw is made at the start"),
            true => ApiError::unavailable("the draw is being made; retry in a moment"),
        };
        if let Some((at, started)) = self.not_yet.lock().get(sale).copied()
            && at.elapsed() < NOT_YET_FOR
        {
            return Err(not_yet(started));
        }
        let place = self.place(sale, "").await?;
        if !place.drawn {
            let mut known = self.not_yet.lock();
            known.retain(|_, (at, _)| at.elapsed() < NOT_YET_FOR);
            known.insert(sale.clone(), (Instant::now(), place.started));
            return Err(not_yet(place.started));
        }
        self.frozen(sale).await
    }

    /// The stored draw, read once per instance.
    async fn frozen(&self, sale: &SaleId) -> Result<Arc<FrozenDraw>, ApiError> {
        self.draws
            .get_or_load(sale, || async {
                match self.store.mongo.draw(sale).await? {
                    Some((head, chunks)) => Ok(FrozenDraw::new(&head, &chunks)?),
                    None => Err(ApiError::unavailable(
                        "the draw is being made; retry in a moment",
                    )),
                }
            })
            .await
    }
}

fn not_open(opens_ms: i64) -> ApiError {
    ApiError::new(
        ErrorCode::SaleNotActive,
        format!(
            "the lobby opens at {}",
            at_ms(opens_ms).unwrap_or_default().to_rfc3339()
        ),
    )
}
