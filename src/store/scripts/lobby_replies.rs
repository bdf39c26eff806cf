//! The lobby scripts' replies and the buyer's place they read.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum LobbyJoinReply {
    /// Where the buyer stands now; `joined` on their first join.
    Place(LobbyPlace),
    /// The lobby has not opened yet (Redis clock).
    NotOpen {
        opens: i64,
    },
    Ended,
    /// The sale has no lobby.
    None,
    Missing,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum LobbyTickReply {
    Ok {
        #[serde(default)]
        admitted: Vec<String>,
        #[serde(default)]
        lapsed: Vec<String>,
        /// The deadline of this call's admissions (Redis clock, ms).
        deadline: i64,
        now: i64,
        /// It admitted or lapsed all one call may: call again.
        #[serde(default)]
        more: bool,
    },
    /// The sale has started and its draw is not loaded: the caller holds
    /// the lease to make it and load it.
    Draw {
        token: String,
    },
    /// The sale has no lobby.
    None,
    Missing,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum LobbyDrawReply {
    /// A chunk placed `n` buyers.
    Loaded {
        n: i64,
    },
    /// The draw is loaded; admission begins.
    Done,
    /// Early buyers are still unplaced: place them as latecomers first.
    Left {
        n: i64,
    },
    /// The lease is gone (it ran out, or a rebuild replaced the sale), or
    /// the draw is loaded already.
    Lost,
    Missing,
}

/// A buyer's state in a lobby, as `lua/lobby_read.lua` reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LobbyState {
    Waiting,
    Admitted,
    Used,
    Lapsed,
    None,
}

/// Where a buyer stands in a lobby, and the lobby's figures, all on the
/// Redis clock.
#[derive(Debug, Clone, Deserialize)]
pub struct LobbyPlace {
    pub state: LobbyState,
    /// 0-based place among those waiting, once the draw is loaded.
    pub rank: Option<i64>,
    pub deadline: Option<i64>,
    pub admitted_at: Option<i64>,
    pub joined_at: Option<i64>,
    #[serde(default)]
    pub late: bool,
    /// The lobby has opened (joins are taken, the commitment is public).
    pub opened: bool,
    pub started: bool,
    /// The draw is loaded: places are known, buyers are let in.
    pub drawn: bool,
    /// The sale's window has closed.
    pub ended: bool,
    /// The seed's SHA-256, from the opening.
    pub commit: Option<String>,
    pub opens: i64,
    pub admission_ms: i64,
    /// The buyer joined with this call (`lobby_join` only).
    #[serde(default)]
    pub joined_now: bool,
    /// Nobody waiting can be served any more.
    #[serde(rename = "final")]
    pub sold_out: bool,
    /// Buyers waiting.
    pub length: i64,
    pub admitted_count: i64,
    pub joined: i64,
    /// Buyers in the draw, once it is made.
    #[serde(default)]
    pub draw_count: i64,
    pub rate: i64,
    pub now: i64,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum LobbyReadReply {
    Place(LobbyPlace),
    Missing,
}
