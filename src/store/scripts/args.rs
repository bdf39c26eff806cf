//! The typed arguments the scripts take beyond ids: a sale's settings as
//! Redis keeps them, a rebuilt sale's hash, why a confirm is undone, one
//! buyer's reserve in a batch.

use crate::ids::ReservationId;

/// One buyer's reserve, sent with others of the same sale in one call.
#[derive(Debug, Clone)]
pub struct ReserveItem {
    /// The hold's id if one is made (it names the sale).
    pub rid: ReservationId,
    pub buyer: String,
    pub quantity: i64,
    /// The request's `Idempotency-Key`: a call carries at most one.
    pub idempotency_key: Option<String>,
}

/// What Redis keeps of a sale's settings: `open_sale` writes all of them,
/// `update_sale` the ones an admin may change.
#[derive(Debug, Clone)]
pub struct LiveSettings {
    pub name: String,
    pub total: i64,
    pub per_user_limit: i64,
    pub starts_ms: i64,
    pub ends_ms: i64,
    pub hold_ms: i64,
    pub price_cents: i64,
    pub currency: String,
    pub waitlist: bool,
    /// The sale's version in MongoDB these settings come from.
    pub version: i64,
    /// Lobby admissions per second; 0 for a sale without a lobby.
    pub admit_per_second: i64,
    /// How long an admission lasts.
    pub admission_ms: i64,
    /// When the lobby opens (0 without a lobby).
    pub opens_ms: i64,
    /// The SHA-256 of the lobby's seed: public from the opening.
    pub commit: String,
    /// How long a payment may take; 0 for a sale that takes none.
    pub payment_ms: i64,
}

/// Which copy of a sale a rebuild replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replaces<'a> {
    /// None: Redis has no sale.
    Absent,
    /// The copy whose seq is below this one (the seq MongoDB recorded).
    Below(i64),
    /// The copy of this epoch, whatever its seq.
    Copy(&'a str),
}

/// The sale hash of a rebuilt sale; the rest is staged.
#[derive(Debug)]
pub struct Restored<'a> {
    pub settings: &'a LiveSettings,
    pub closed: bool,
    pub sold: i64,
    /// The next never-issued serial.
    pub next: i64,
    /// Where this copy's seqs carry on from: past the last change
    /// recorded in MongoDB (see `recovery::SEQ_GAP`).
    pub seq: i64,
    /// The last batch of the log the rebuild read (its `restored` change
    /// says so).
    pub log_n: i64,
    /// The last join ticket handed out, so new joiners queue behind.
    pub last_ticket: i64,
    pub line_closed: bool,
    pub lobby: LobbyCounts,
}

/// A lobby's counts, as MongoDB has its entries.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LobbyCounts {
    pub joined: i64,
    pub admitted: i64,
    pub used: i64,
    pub lapsed: i64,
    /// The draw is made (and staged): buyers may be let in.
    pub drawn: bool,
    /// Buyers in the draw.
    pub draw_count: i64,
}

/// Why a confirm is undone, which decides whether the hold lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortCause {
    /// The order write of the confirm with this lease certainly failed:
    /// the hold goes back to held until its deadline, unless the reaper
    /// has claimed it since.
    Unwritten { lease: i64 },
    /// The confirm was given up and its order fenced off: the hold ends.
    Fenced,
}

/// A buyer's place in a lobby as Redis keeps it: their member of `lobby`
/// (see `store/keys.rs`) and when they joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LobbyWaiter {
    pub buyer: String,
    pub member: String,
    pub joined_ms: i64,
}

/// One step of loading a frozen draw (`lua/lobby_draw.lua`).
#[derive(Debug, Clone, Copy)]
pub enum DrawStep<'a> {
    /// Buyers the draw placed, at their places.
    Place(&'a [LobbyWaiter]),
    /// Early buyers the draw does not hold: behind it, as latecomers.
    Late(&'a [LobbyWaiter]),
    /// Every buyer is placed; the draw holds `count`.
    Done { count: i64 },
}
