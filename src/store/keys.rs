//! The Redis key layout, in one place. Every key of a sale starts with
//! `fd:{<sale id>}:`: the hash tag puts all of them in one slot, so each Lua
//! script touches one slot and runs unchanged on Redis Cluster. The word
//! after the tag is the key's *role*; the scripts find their keys by role
//! (see `lua/prelude.lua`), which is why every key a script touches can be
//! declared in KEYS without the two sides agreeing on an order.
//!
//! | role        | type   | holds                                                  |
//! |-------------|--------|--------------------------------------------------------|
//! | `sale`      | hash   | name total limit starts ends hold_ms closed next available held sold seq price currency waitlist wl_closed epoch version taken_n, counters (holds_*, promotions, waitlist_joins), wait_ticket, promotion_seq; a lobby's admit_rate admit_ms opens commit (the seed's SHA-256) drawn draw_count draw_lease lobby_* |
//! | `holds`     | hash   | reservation id -> JSON hold {user qty units slots state created expires lease} |
//! | `deadlines` | zset   | live reservation id -> deadline, or lease end while confirming (ms) |
//! | `ended`     | zset   | ended reservation id -> when it ended (ms); pruned from `holds` after a day |
//! | `free`      | set    | serials given back (never-issued serials are next..=total, so opening a sale is O(1)) |
//! | `taken`     | set    | never-issued serials (>= next) that an order took anyway: it landed after a rebuild had reset `next` below its units; issuing skips them |
//! | `bought`    | hash   | buyer -> units bought                                  |
//! | `holding`   | hash   | buyer -> their one live reservation id                 |
//! | `events`    | stream | every change in seq order, until the persister has it in MongoDB |
//! | `wait`      | zset   | waiting buyer -> join ticket (FIFO)                    |
//! | `waitq`     | hash   | waiting buyer -> units wanted                          |
//! | `promoted`  | hash   | buyer -> reservation id made for them from the line    |
//! | `early`     | hash   | buyer who joined the lobby before the start -> joined ms (Redis clock), until the draw places them; no order can be read from it |
//! | `lobby`     | zset   | buyers waiting for their turn, all at score 0, ordered by member (from the draw on): `0:<draw value>:<buyer>` for those the draw placed (HMAC-SHA256 of the buyer id keyed by the seed, hex), `1:<joined ms, 15 digits>:<buyer>` for latecomers |
//! | `lobbyin`   | hash   | buyer waiting in `lobby` -> `<joined ms> <member of lobby>` |
//! | `admitted`  | hash   | admitted buyer -> `<state> <deadline ms> <admitted ms> <joined ms>`; state `d` live and unused, `u` used, `l` lapsed |
//! | `admitdue`  | zset   | admitted buyer whose admission is unused -> its deadline (ms) |
//! | `lobbylog`  | stream | each admission (`k a`, buyer, at, until), lapse (`k l`) and use (`k u`), until the recorder has it in MongoDB |
//! | `idem:…`    | string | `idem:<buyer len>:<buyer>:<key>` -> reservation id an Idempotency-Key made (24 h) |
//! | `returned`  | hash   | cancelled order id -> 1: its units are back (a repeat of the cancel, or one after a rebuild that read it cancelled, returns nothing twice) |
//! | `restore`   | string | owner token of the rebuild lock                        |
//! | `stage<role>:<token>` for each role in [`STAGED`] | as the role | what a rebuild stages before `restore_sale` swaps it in (expire on their own if the rebuild dies) |
//!
//! Channel (not a key): `fd:{<sale id>}:live`, the sale's live feed.
//!
//! One key is a buyer's, not a sale's: `fd:{q:<sha-256 of the buyer id,
//! 32 hex>}:quota`, the buyer's write budget (a GCRA timestamp), in a slot
//! of the buyer's own.

use crate::ids::SaleId;

/// A key's role: the word after the sale's hash tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, strum::IntoStaticStr)]
#[strum(serialize_all = "lowercase")]
pub enum Role {
    Sale,
    Holds,
    Deadlines,
    Ended,
    Free,
    Taken,
    Bought,
    Holding,
    Events,
    Wait,
    Waitq,
    Promoted,
    Early,
    Lobby,
    Lobbyin,
    Admitted,
    Admitdue,
    Lobbylog,
    Idem,
    Returned,
    Restore,
    Stagefree,
    Stagebought,
    Stagewait,
    Stagewaitq,
    Stageearly,
    Stagelobby,
    Stagelobbyin,
    Stageadmitted,
    Stageadmitdue,
    Stagereturned,
    Quota,
}

/// What a rebuild stages, as (the live role, its staging role): one list,
/// which `stage_rebuild` fills and `restore_sale` renames into place.
pub const STAGED: [(Role, Role); 10] = [
    (Role::Free, Role::Stagefree),
    (Role::Bought, Role::Stagebought),
    (Role::Wait, Role::Stagewait),
    (Role::Waitq, Role::Stagewaitq),
    (Role::Early, Role::Stageearly),
    (Role::Lobby, Role::Stagelobby),
    (Role::Lobbyin, Role::Stagelobbyin),
    (Role::Admitted, Role::Stageadmitted),
    (Role::Admitdue, Role::Stageadmitdue),
    (Role::Returned, Role::Stagereturned),
];

impl Role {
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// Keys of this role carry a further name (a buyer's idempotency key,
    /// a rebuild's token), so the caller supplies them.
    pub fn is_named(self) -> bool {
        self == Role::Idem
            || self == Role::Quota
            || STAGED.iter().any(|(_, staged)| *staged == self)
    }
}

/// Keys of one sale.
#[derive(Debug, Clone)]
pub struct SaleKeys {
    prefix: String,
}

impl SaleKeys {
    pub fn new(sale: &SaleId) -> Self {
        Self {
            prefix: format!("fd:{{{sale}}}:"),
        }
    }

    /// The key of a role that takes no further name.
    pub fn of(&self, role: Role) -> String {
        debug_assert!(!role.is_named(), "{role:?} keys carry a further name");
        format!("{}{}", self.prefix, role.name())
    }

    /// A rebuild's staging key of `role`, named by its lock token.
    pub fn staging(&self, role: Role, token: &str) -> String {
        debug_assert!(role.is_named() && role != Role::Idem);
        format!("{}{}:{token}", self.prefix, role.name())
    }

    pub fn sale(&self) -> String {
        self.of(Role::Sale)
    }
    pub fn holds(&self) -> String {
        self.of(Role::Holds)
    }
    pub fn deadlines(&self) -> String {
        self.of(Role::Deadlines)
    }
    pub fn ended(&self) -> String {
        self.of(Role::Ended)
    }
    pub fn free(&self) -> String {
        self.of(Role::Free)
    }
    pub fn bought(&self) -> String {
        self.of(Role::Bought)
    }
    pub fn holding(&self) -> String {
        self.of(Role::Holding)
    }
    pub fn events(&self) -> String {
        self.of(Role::Events)
    }
    pub fn wait(&self) -> String {
        self.of(Role::Wait)
    }
    pub fn waitq(&self) -> String {
        self.of(Role::Waitq)
    }
    pub fn promoted(&self) -> String {
        self.of(Role::Promoted)
    }
    pub fn restore(&self) -> String {
        self.of(Role::Restore)
    }

    /// What an `Idempotency-Key` of a buyer made. The buyer's length comes
    /// first so no buyer and key pair can collide with another.
    pub fn idempotency(&self, buyer: &str, key: &str) -> String {
        format!("{}idem:{}:{buyer}:{key}", self.prefix, buyer.len())
    }

    /// The pub/sub channel of the sale's live feed.
    pub fn channel(&self) -> String {
        format!("{}live", self.prefix)
    }

    /// Every key that holds the sale's live state (what a rebuild replaces).
    pub fn live_state(&self) -> Vec<String> {
        [
            Role::Sale,
            Role::Holds,
            Role::Deadlines,
            Role::Ended,
            Role::Holding,
            Role::Promoted,
            Role::Taken,
        ]
        .into_iter()
        .chain(STAGED.iter().map(|(live, _)| *live))
        .map(|r| self.of(r))
        .collect()
    }
}

/// The key of a buyer's write budget.
pub fn quota_key(buyer: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(buyer.as_bytes());
    format!("fd:{{q:{}}}:quota", &hex::encode(digest)[..32])
}

/// The sale of a live-feed channel, `fd:{<sale id>}:live`.
pub fn sale_of_channel(channel: &str) -> Option<SaleId> {
    let tagged = channel.strip_prefix("fd:{")?.strip_suffix("}:live")?;
    SaleId::parse(tagged).ok()
}

// A hold's state: the one definition, as `lua/prelude.lua` writes it in
// the `holds` hash and as the API shows it (`HoldStatus` in the document,
// which says nothing more of it).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, poem_openapi::Enum, strum::IntoStaticStr,
)]
#[serde(rename_all = "lowercase")]
#[oai(rename = "HoldStatus", rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum HoldState {
    Held,
    /// Its buyer asked to pay (a sale that takes payment): the deadline
    /// was extended once, and the payment's webhook decides.
    Paying,
    Confirming,
    Confirmed,
    Cancelled,
    Expired,
}

impl HoldState {
    /// Whether the hold still has its units out (`fd_is_live` in
    /// `lua/prelude.lua`): held, paying or confirming.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Held | Self::Paying | Self::Confirming)
    }
}

/// A drawn buyer's member of the sale's `lobby`: `0:<value>:<buyer>`,
/// sorted by the draw's value (`lua/lobby_tick.lua` and `lobby_read.lua`
/// take the buyer back out; `tests/api/scripts.rs` checks the round trip).
pub fn drawn_member(value: &str, buyer: &str) -> String {
    format!("0:{value}:{buyer}")
}

/// A latecomer's member of the sale's `lobby`: `1:<joined ms, 15
/// digits>:<buyer>`, behind every drawn one in arrival order;
/// `lua/lobby_join.lua` builds the same from the same join time.
pub fn late_member(joined_ms: i64, buyer: &str) -> String {
    format!("1:{:015}:{buyer}", joined_ms.max(0))
}

/// An admission as the sale's `admitted` hash keeps it:
/// `<state> <deadline ms> <admitted at ms> <joined at ms>`, state `d`
/// (unused), `u` (used) or `l` (lapsed), as `lua/lobby_tick.lua` writes
/// it and `lua/prelude.lua` reads it.
pub fn admission_value(state: char, deadline_ms: i64, at_ms: i64, joined_ms: i64) -> String {
    format!("{state} {deadline_ms} {at_ms} {joined_ms}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `restore_sale.lua` renames the staged keys into place from its own
    /// table: it must be [`STAGED`], pair for pair.
    #[test]
    fn restore_sale_renames_exactly_the_staged_roles() {
        let lua = include_str!("../../lua/restore_sale.lua");
        let table = &lua[lua.find("local staged = {").expect("the staged table")..];
        let table = &table[..table.find("}}").expect("its end") + 2];
        let mut in_lua: Vec<(String, String)> = table
            .split("{K.")
            .skip(1)
            .map(|pair| {
                let mut names = pair
                    .split(|c: char| !c.is_ascii_alphanumeric())
                    .filter(|w| !w.is_empty() && *w != "K");
                let staged = names.next().unwrap_or_default().to_owned();
                let live = names.next().unwrap_or_default().to_owned();
                (live, staged)
            })
            .collect();
        let mut in_rust: Vec<(String, String)> = STAGED
            .iter()
            .map(|(live, staged)| (live.name().to_owned(), staged.name().to_owned()))
            .collect();
        in_lua.sort();
        in_rust.sort();
        assert_eq!(in_lua, in_rust);
    }

    #[test]
    fn every_key_of_a_sale_shares_its_hash_tag_and_names_its_role() {
        let sale = SaleId::new();
        let keys = SaleKeys::new(&sale);
        let tag = format!("{{{sale}}}");
        for key in keys.live_state() {
            assert!(key.contains(&tag), "{key}");
        }
        assert_eq!(keys.holds(), format!("fd:{tag}:holds"));
        assert_eq!(
            keys.idempotency("bob", "k:1"),
            format!("fd:{tag}:idem:3:bob:k:1")
        );
        assert_eq!(sale_of_channel(&keys.channel()), Some(sale));
        assert_eq!(sale_of_channel("fd:{x}:live"), None);
    }
}
