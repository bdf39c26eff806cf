//! The Redis key layout, in one place. Every key of a sale starts with
//! `fd:{<sale id>}:`: the hash tag puts all of them in one slot, so each Lua
//! script touches one slot and runs unchanged on Redis Cluster. The word
//! after the tag is the key's *role*; the scripts find their keys by role
//! (see `lua/prelude.lua`), which is why every key a script touches can be
//! declared in KEYS without the two sides agreeing on an order.
//!
//! | role        | type   | holds                                                  |
//! |-------------|--------|--------------------------------------------------------|
//! | `sale`      | hash   | name total limit starts ends hold_ms closed next available held sold seq price currency waitlist wl_closed, counters (holds_*, promotions, waitlist_joins), wait_ticket, promotion_seq |
//! | `holds`     | hash   | reservation id -> JSON hold {user qty units slots state created expires lease} |
//! | `deadlines` | zset   | live reservation id -> deadline, or lease end while confirming (ms) |
//! | `ended`     | zset   | ended reservation id -> when it ended (ms); pruned from `holds` after a day |
//! | `free`      | set    | serials given back (never-issued serials are next..=total, so opening a sale is O(1)) |
//! | `bought`    | hash   | buyer -> units bought                                  |
//! | `holding`   | hash   | buyer -> their one live reservation id                 |
//! | `events`    | stream | every change in seq order, until the persister has it in MongoDB |
//! | `wait`      | zset   | waiting buyer -> join ticket (FIFO)                    |
//! | `waitq`     | hash   | waiting buyer -> units wanted                          |
//! | `promoted`  | hash   | buyer -> reservation id made for them from the line    |
//! | `lobby`     | zset   | buyers waiting in a sale's lobby, all at score 0, ordered by member: `0:<draw value>:<buyer>` for those who joined before the start (the draw: HMAC-SHA256 of the buyer id keyed by the seed, hex), `1:<joined ms, 15 digits>:<buyer>` for latecomers |
//! | `lobbyin`   | hash   | waiting buyer -> `<joined ms> <member of lobby>`       |
//! | `admitted`  | hash   | admitted buyer -> `<state> <deadline ms> <admitted ms> <joined ms>`; state `d` live and unused, `u` used, `l` lapsed |
//! | `admitdue`  | zset   | admitted buyer whose admission is unused -> its deadline (ms) |
//! | `idem:…`    | string | `idem:<buyer len>:<buyer>:<key>` -> reservation id an Idempotency-Key made (24 h) |
//! | `restore`   | string | owner token of the rebuild lock                        |
//! | `stagefree:<token>`, `stagebought:<token>`, `stagewait:<token>`, `stagewaitq:<token>`, `stagelobby:<token>`, `stagelobbyin:<token>`, `stageadmitted:<token>`, `stageadmitdue:<token>` | as `free`, `bought`, `wait`, `waitq`, `lobby`, `lobbyin`, `admitted`, `admitdue` | what a rebuild stages before `restore_sale` swaps it in (expire on their own if the rebuild dies) |
//!
//! Channel (not a key): `fd:{<sale id>}:live`, the sale's live feed.
//!
//! One key is a buyer's, not a sale's: `fd:{q:<sha-256 of the buyer id,
//! 32 hex>}:quota`, the buyer's write budget (a GCRA timestamp), in a slot
//! of the buyer's own.

use crate::ids::SaleId;

/// A key's role: the word after the sale's hash tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Sale,
    Holds,
    Deadlines,
    Ended,
    Free,
    Bought,
    Holding,
    Events,
    Wait,
    Waitq,
    Promoted,
    Lobby,
    Lobbyin,
    Admitted,
    Admitdue,
    Idem,
    Restore,
    Stagefree,
    Stagebought,
    Stagewait,
    Stagewaitq,
    Stagelobby,
    Stagelobbyin,
    Stageadmitted,
    Stageadmitdue,
    Quota,
}

impl Role {
    pub const fn name(self) -> &'static str {
        match self {
            Role::Sale => "sale",
            Role::Holds => "holds",
            Role::Deadlines => "deadlines",
            Role::Ended => "ended",
            Role::Free => "free",
            Role::Bought => "bought",
            Role::Holding => "holding",
            Role::Events => "events",
            Role::Wait => "wait",
            Role::Waitq => "waitq",
            Role::Promoted => "promoted",
            Role::Lobby => "lobby",
            Role::Lobbyin => "lobbyin",
            Role::Admitted => "admitted",
            Role::Admitdue => "admitdue",
            Role::Idem => "idem",
            Role::Restore => "restore",
            Role::Stagefree => "stagefree",
            Role::Stagebought => "stagebought",
            Role::Stagewait => "stagewait",
            Role::Stagewaitq => "stagewaitq",
            Role::Stagelobby => "stagelobby",
            Role::Stagelobbyin => "stagelobbyin",
            Role::Stageadmitted => "stageadmitted",
            Role::Stageadmitdue => "stageadmitdue",
            Role::Quota => "quota",
        }
    }

    /// Keys of this role carry a further name (a buyer's idempotency key,
    /// a rebuild's token), so the caller supplies them.
    pub const fn is_named(self) -> bool {
        matches!(
            self,
            Role::Idem
                | Role::Stagefree
                | Role::Stagebought
                | Role::Stagewait
                | Role::Stagewaitq
                | Role::Stagelobby
                | Role::Stagelobbyin
                | Role::Stageadmitted
                | Role::Stageadmitdue
                | Role::Quota
        )
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
            Role::Free,
            Role::Bought,
            Role::Holding,
            Role::Wait,
            Role::Waitq,
            Role::Promoted,
            Role::Lobby,
            Role::Lobbyin,
            Role::Admitted,
            Role::Admitdue,
        ]
        .into_iter()
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

#[cfg(test)]
mod tests {
    use super::*;

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
