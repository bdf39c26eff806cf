//! One reply enum per script, tagged by the reply's `r` field, and the
//! records the read-only scripts return.

use serde::{Deserialize, Deserializer};

use super::lobby_replies::*;

/// Replies that can say the sale is not in Redis (it is rebuilt from
/// MongoDB and the call repeated).
pub trait SaleReply {
    fn sale_missing(&self) -> bool;
}

macro_rules! sale_reply {
    ($($reply:ident),*) => {$(
        impl SaleReply for $reply {
            fn sale_missing(&self) -> bool {
                matches!(self, $reply::Missing)
            }
        }
    )*};
}

pub(super) fn from_text<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    String::deserialize(d)?
        .parse()
        .map_err(serde::de::Error::custom)
}

pub(super) fn from_csv<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<i64>, D::Error> {
    String::deserialize(d)?
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum ReserveReply {
    Created {
        expires: i64,
    },
    /// The buyer's live hold; `repeat_key` when an earlier request with the
    /// same idempotency key made it.
    Existing {
        rid: String,
        repeat_key: bool,
    },
    /// The sale is not in Redis (the batch's reply said so for all).
    Missing,
    Upcoming,
    Ended,
    /// A lobby sale, and the buyer has no live admission.
    NotAdmitted,
    LimitExceeded {
        bought: i64,
        limit: i64,
    },
    SoldOut {
        available: i64,
        waiting: i64,
    },
}

/// What a reserve batch did: one [`ReserveReply`] per reserve, in the
/// order they were sent, or `Missing` for all of them.
#[derive(Debug, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum ReserveBatchReply {
    Done { holds: Vec<ReserveReply> },
    Missing,
}

/// What a batch of confirms begun did: one [`BeginReply`] per hold, in the
/// order they were sent, or `Missing` for all of them.
#[derive(Debug, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum BeginBatchReply {
    Done { holds: Vec<BeginReply> },
    Missing,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum BeginReply {
    Confirming {
        qty: i64,
        #[serde(deserialize_with = "from_csv")]
        units: Vec<i64>,
        #[serde(deserialize_with = "from_csv")]
        slots: Vec<i64>,
        #[serde(deserialize_with = "from_text")]
        price: i64,
        currency: String,
        expires: i64,
        /// The confirm's lease: proof that the hold is still this
        /// confirm's when it is undone.
        lease: i64,
    },
    Missing,
    NotFound,
    Confirmed,
    Cancelled,
    Expired,
    /// The sale takes payment: its webhook confirms, not the buyer.
    PaymentRequired,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum FinishReply {
    /// One outcome per reservation id, in the order given.
    Done {
        holds: Vec<HoldFinish>,
    },
    Missing,
}

/// How one hold of a confirm batch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldFinish {
    Confirmed,
    /// Confirmed before.
    Already,
    /// Redis has no such hold (lost or pruned).
    Missing,
    /// Its units were already returned.
    Stale,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum AbortReply {
    Held,
    /// Back to paying: its payment may still confirm it.
    Paying,
    Expired,
    Missing,
    Unchanged {
        state: crate::store::keys::HoldState,
    },
    /// The reaper claimed the hold since: it settles it.
    Reclaimed,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum ApplyReply {
    /// Counted.
    Applied,
    /// Counted before.
    Already,
    /// Cancelled, and its units returned in this copy: not counted.
    Returned,
    Missing,
    /// Other live holds have these units: nothing changed; reclaim them
    /// and call again.
    Contested {
        #[serde(deserialize_with = "from_csv_list")]
        units: Vec<i64>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum ReclaimReply {
    /// `n` units taken back; `missed` were no longer where named.
    Reclaimed {
        n: i64,
        #[serde(default, deserialize_with = "from_csv_list")]
        missed: Vec<i64>,
    },
    Missing,
}

fn from_csv_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<i64>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum CancelReply {
    Cancelled,
    Missing,
    NotFound,
    Expired,
    Confirming,
    Confirmed,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum ReapReply {
    Missing,
    Ok {
        expired: u64,
        /// Confirming holds whose lease ran out, now claimed by the caller.
        #[serde(default)]
        claimed: Vec<String>,
        /// When the next deadline falls (Redis clock, ms), or -1.
        next: i64,
        now: i64,
        /// A batch was full: call again.
        more: bool,
    },
}

#[derive(Debug, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum RepairReply {
    Repaired {
        lost: i64,
    },
    Missing,
    Unchanged {
        state: crate::store::keys::HoldState,
    },
}

#[derive(Debug, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum OpenReply {
    Opened,
    Exists,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum UpdateReply {
    Ok,
    Missing,
    Started,
    Ended,
    /// The change touches a lobby that has opened (or a sale that started).
    LobbyOpen,
    /// Redis has this version or a newer one already.
    Older,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum CloseReply {
    Ok,
    Missing,
    /// Closed before.
    Ended,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum JoinReply {
    Joined { position: i64 },
    Waiting { position: i64 },
    NotAdmitted,
    Promoted { rid: String },
    HasHold { rid: String },
    StockAvailable,
    SoldOut,
    LimitExceeded { bought: i64, limit: i64 },
    Disabled,
    Upcoming,
    Ended,
    Missing,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum LeaveReply {
    Left,
    NotListed,
    Missing,
}

/// Status of a sale as `fd_status` in `lua/prelude.lua` computes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LiveStatus {
    Upcoming,
    Active,
    SoldOut,
    Ended,
}

/// A sale's live view, read in one atomic step.
#[derive(Debug, Clone, Deserialize)]
pub struct LiveSale {
    pub name: String,
    pub status: LiveStatus,
    #[serde(deserialize_with = "from_text")]
    pub price: i64,
    pub currency: String,
    pub total: i64,
    pub available: i64,
    pub held: i64,
    pub sold: i64,
    pub limit: i64,
    pub waitlist_length: i64,
    pub waitlist: bool,
    pub hold_ms: i64,
    pub starts: i64,
    pub ends: i64,
    /// The last change this view includes.
    pub seq: i64,
    /// Names this Redis copy of the sale; a rebuild makes a new one.
    pub epoch: String,
    /// Redis' clock when it was read (ms).
    pub now: i64,
    /// Whether buyers are let in from a lobby.
    #[serde(default)]
    pub lobby: bool,
    /// How long a payment may take; 0 for a sale that takes none.
    #[serde(default)]
    pub pay_ms: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum ReadSaleReply {
    Sale(LiveSale),
    Missing,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum PlaceReply {
    /// A live hold was made for the buyer from the line.
    Promoted {
        rid: String,
        expires: i64,
        qty: i64,
    },
    Waiting {
        position: i64,
    },
    Closed,
    NotListed,
    Missing,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum QuotaReply {
    Ok,
    /// Over the budget: the next request fits in this many milliseconds.
    Limited {
        retry_ms: f64,
    },
}

#[derive(Debug, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum LockReply {
    Held,
    Released,
    Lost,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum RestoreReply {
    Restored,
    /// The rebuild lock lapsed and someone else owns it now.
    Lost,
    /// The sale is in Redis already (another rebuild was first).
    Exists,
    /// The sale is no longer stale (or no longer there).
    Changed,
}

sale_reply!(
    LobbyDrawReply,
    LobbyJoinReply,
    LobbyTickReply,
    LobbyReadReply,
    ReserveReply,
    BeginReply,
    FinishReply,
    AbortReply,
    ApplyReply,
    CancelReply,
    ReapReply,
    RepairReply,
    UpdateReply,
    CloseReply,
    JoinReply,
    LeaveReply,
    ReadSaleReply,
    PlaceReply
);
