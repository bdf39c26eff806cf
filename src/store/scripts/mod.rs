//! The typed boundary to the Lua scripts in `lua/`: one function per script
//! with typed arguments, and one reply enum per script, so every match on a
//! reply is exhaustive and a new reply is a compile error where it is not
//! handled. The table below declares the key roles each script touches; the
//! scripts find their keys by role (see `lua/prelude.lua`), and a test
//! checks each table row against what the script and the prelude helpers it
//! calls really touch.

mod args;
mod lobby_replies;
mod pay_replies;
mod replies;

pub use args::*;
pub use lobby_replies::*;
pub use pay_replies::*;
pub use replies::*;

use std::collections::BTreeSet;

use redis::Script;

use super::keys::{Role, SaleKeys};
use crate::ids::SaleId;

/// A script with the roles of the keys it touches.
pub(super) struct Lua {
    source: String,
    pub(in crate::store) script: Script,
    roles: &'static [Role],
}

macro_rules! scripts {
    ($($name:ident: $file:literal [$($role:ident)*];)*) => {
        /// Every script, built once per process (the prelude in front).
        pub(super) struct Scripts { $(pub $name: Lua,)* }

        impl Scripts {
            pub fn load() -> Self {
                Self {$(
                    $name: Lua::new(
                        include_str!(concat!("../../../lua/", $file)),
                        &[$(Role::$role),*],
                    ),
                )*}
            }
        }

        impl Scripts {
            fn all(&self) -> Vec<&Lua> {
                vec![$(&self.$name,)*]
            }
        }

        /// Each script's file, in the order of [`Scripts::all`].
        const DECLARED_FILES: &[&str] = &[$($file,)*];

        /// Each script file, its source and its declared roles.
        #[cfg(test)]
        const DECLARED: &[(&str, &str, &[Role])] = &[$(
            ($file, include_str!(concat!("../../../lua/", $file)), &[$(Role::$role),*]),
        )*];
    };
}

scripts! {
    reserve: "reserve.lua" [Sale Holds Deadlines Free Taken Bought Holding Events Wait Admitted Admitdue Lobbylog Idem];
    confirm_begin: "confirm_begin.lua" [Sale Holds Deadlines];
    confirm_finish: "confirm_finish.lua" [Sale Holds Deadlines Ended Free Taken Bought Holding Events Wait Waitq Promoted];
    confirm_abort: "confirm_abort.lua" [Sale Holds Deadlines Ended Free Taken Bought Holding Events Wait Waitq Promoted];
    apply_order: "apply_order.lua" [Sale Holds Deadlines Ended Free Taken Bought Holding Events Wait Waitq Promoted Returned];
    reclaim_units: "reclaim_units.lua" [Sale Holds Deadlines Ended Taken Holding Events Wait];
    cancel: "cancel.lua" [Sale Holds Deadlines Ended Free Taken Bought Holding Events Wait Waitq Promoted];
    reap: "reap.lua" [Sale Holds Deadlines Ended Free Taken Bought Holding Events Wait Waitq Promoted];
    repair_hold: "repair_hold.lua" [Sale Holds Deadlines Ended Free Taken Bought Holding Events Wait Waitq Promoted];
    open_sale: "open_sale.lua" [Sale Events Wait];
    update_sale: "update_sale.lua" [Sale Events Wait];
    close_sale: "close_sale.lua" [Sale Events Wait];
    waitlist_join: "waitlist_join.lua" [Sale Holds Bought Holding Events Wait Waitq Promoted Admitted Admitdue Lobbylog];
    waitlist_leave: "waitlist_leave.lua" [Sale Holds Deadlines Free Taken Bought Holding Events Wait Waitq Promoted];
    read_sale: "read_sale.lua" [Sale Wait];
    waitlist_place: "waitlist_place.lua" [Sale Holds Wait Promoted];
    restore_sale: "restore_sale.lua" [Sale Holds Deadlines Ended Free Taken Bought Holding Events Wait Waitq Promoted Early Lobby Lobbyin Admitted Admitdue Restore Stagefree Stagebought Stagewait Stagewaitq Stageearly Stagelobby Stagelobbyin Stageadmitted Stageadmitdue Returned Stagereturned];
    rebuild_lock: "rebuild_lock.lua" [Restore];
    quota: "quota.lua" [Quota];
    lobby_join: "lobby_join.lua" [Sale Early Lobby Lobbyin Admitted];
    lobby_tick: "lobby_tick.lua" [Sale Early Lobby Lobbyin Admitted Admitdue Lobbylog];
    lobby_read: "lobby_read.lua" [Sale Early Lobby Lobbyin Admitted];
    lobby_draw: "lobby_draw.lua" [Sale Early Lobby Lobbyin Admitted];
    pay_begin: "pay_begin.lua" [Sale Holds Deadlines];
    pay_settle: "pay_settle.lua" [Sale Holds Deadlines Ended Free Taken Bought Holding Events Wait Waitq Promoted];
    return_order: "return_order.lua" [Sale Holds Deadlines Ended Free Taken Bought Holding Events Wait Waitq Promoted Returned Restore];
}

impl Lua {
    /// The script `body` behind its key table and the prelude helpers it
    /// uses.
    fn new(body: &str, roles: &'static [Role]) -> Self {
        let source = assemble(body, roles);
        Self {
            script: Script::new(&source),
            source,
            roles,
        }
    }

    /// An invocation with every declared key of the sale (an idempotency
    /// key names a buyer, so the caller adds it).
    pub(in crate::store) fn on(&self, keys: &SaleKeys) -> redis::ScriptInvocation<'_> {
        let mut call = self.script.prepare_invoke();
        for role in self.roles.iter().filter(|r| !r.is_named()) {
            call.key(keys.of(*role));
        }
        call
    }
}

/// The Lua that opens a script: `K`, its keys by role. The keys every call
/// passes come first, in the order of `roles` (see [`Lua::on`]), so `K` is
/// one table constructor, with no string matching per call; the keys a
/// caller adds after them (an idempotency key, a rebuild's staging keys)
/// are found by role in the prelude, from `FD_NAMED_FROM`.
fn key_table(roles: &[Role]) -> String {
    let fixed: Vec<String> = roles
        .iter()
        .filter(|r| !r.is_named())
        .enumerate()
        .map(|(i, role)| format!("{} = KEYS[{}]", role.name(), i + 1))
        .collect();
    format!(
        "local K = {{{}}}\nlocal FD_NAMED_FROM = {}\n",
        fixed.join(", "),
        fixed.len() + 1
    )
}

/// A script's whole source as Redis runs it: `body` behind its key table
/// (the keys of `roles` every call passes) and the prelude helpers it uses.
pub fn assemble(body: &str, roles: &[Role]) -> String {
    format!("{}{}\n{body}", key_table(roles), prelude_for(body))
}

const PRELUDE: &str = include_str!("../../../lua/prelude.lua");
const HELPER: &str = "\nlocal function ";

/// The prelude with only the helpers `body` uses, itself or through other
/// helpers, in the prelude's order. Each helper is a closure Redis makes
/// anew on every call, so a script pays for those it needs only (a status
/// read needs a fifth of them).
fn prelude_for(body: &str) -> String {
    let (head, helpers) = split_helpers(PRELUDE);
    let mut needed: BTreeSet<&str> = helper_names(head).chain(helper_names(body)).collect();
    // A helper only calls those defined before it: one pass from the end
    // closes the set.
    for (name, chunk) in helpers.iter().rev() {
        if needed.contains(name) {
            needed.extend(helper_names(chunk));
        }
    }
    let mut out = head.to_owned();
    for (name, chunk) in &helpers {
        if needed.contains(name) {
            out.push_str(HELPER);
            out.push_str(chunk);
        }
    }
    out
}

/// Lua source cut at each helper's definition: what comes before the
/// first, then each helper's name with its chunk (from its name to the
/// next helper).
fn split_helpers(source: &str) -> (&str, Vec<(&str, &str)>) {
    let mut chunks = source.split(HELPER);
    let head = chunks.next().unwrap_or_default();
    let helpers = chunks
        .map(|chunk| (helper_names(chunk).next().unwrap_or_default(), chunk))
        .collect();
    (head, helpers)
}

/// Every `fd_<name>` in Lua source, comments included (a helper kept for
/// a comment's sake costs a closure, one left out breaks the script).
fn helper_names(source: &str) -> impl Iterator<Item = &str> {
    words(source, "fd_").map(|(_, word)| word)
}

/// Each identifier in `source` that starts a word with `prefix` (which it
/// includes), with where it ends.
fn words<'a>(source: &'a str, prefix: &'a str) -> impl Iterator<Item = (usize, &'a str)> {
    let bytes = source.as_bytes();
    let in_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    source.match_indices(prefix).filter_map(move |(i, _)| {
        if i > 0 && in_word(bytes[i - 1]) {
            return None;
        }
        let tail = &bytes[i + prefix.len()..];
        let end = i + prefix.len() + tail.iter().take_while(|b| in_word(**b)).count();
        Some((end, &source[i..end]))
    })
}

/// Most requests one `reserve` or `confirm_begin` call serves: a call
/// stays short (see their bounds); more requests of a sale take several
/// calls.
pub const BATCH_CHUNK: usize = 25;

/// Holds one `reclaim_units` call takes units back from.
pub const RECLAIM_HOLDS: usize = 25;

/// Each script's SHA-1 (what `EVALSHA` and `SLOWLOG` name it by) and its
/// file, so a measurement of Redis can say which script took how long.
pub fn script_hashes() -> Vec<(String, &'static str)> {
    let scripts = Scripts::load();
    let lua: Vec<&Lua> = scripts.all();
    DECLARED_FILES
        .iter()
        .zip(lua)
        .map(|(file, lua)| (lua.script.get_hash().to_owned(), *file))
        .collect()
}

/// The reserve script's source, and the arguments of `EVALSHA` for a
/// batch of `batch` reserves of `sale` by `buyer` as `rid`, so
/// `scripts/bench` can drive the very script with redis-benchmark (which
/// fills each placeholder in `rid` and `buyer` with its own number).
pub fn reserve_benchmark(
    sale: &SaleId,
    rid: &str,
    buyer: &str,
    batch: usize,
) -> (String, Vec<String>) {
    let scripts = Scripts::load();
    let lua = &scripts.reserve;
    let keys = SaleKeys::new(sale);
    let declared: Vec<String> = lua
        .roles
        .iter()
        .filter(|r| !r.is_named())
        .map(|r| keys.of(*r))
        .collect();
    let mut argv = vec![
        "EVALSHA".to_owned(),
        lua.script.get_hash().to_owned(),
        declared.len().to_string(),
    ];
    argv.extend(declared);
    argv.extend([format!("PUBLISH {}", keys.channel()), "0".into()]);
    for _ in 0..batch {
        argv.extend([rid.to_owned(), buyer.to_owned(), "1".into(), "0".into()]);
    }
    (lua.source.clone(), argv)
}

#[cfg(test)]
mod declared_keys;

#[cfg(test)]
mod assembly {
    use super::*;

    /// Each script defines every prelude helper it reaches, and no other.
    #[test]
    fn each_script_carries_the_helpers_it_uses_and_only_those() {
        let defined = |source| -> BTreeSet<&str> {
            split_helpers(source)
                .1
                .into_iter()
                .map(|(name, _)| name)
                .collect()
        };
        let all = defined(PRELUDE);
        let scripts = Scripts::load();
        for (file, lua) in DECLARED_FILES.iter().zip(scripts.all()) {
            let defined = defined(&lua.source);
            let used: BTreeSet<&str> = helper_names(&lua.source)
                .filter(|name| all.contains(name))
                .collect();
            assert_eq!(used, defined, "{file}");
        }
        let read = &scripts.read_sale.source;
        assert!(read.contains("local function fd_status("));
        assert!(!read.contains("local function fd_promote("));
    }

    /// `K` is one constructor of the keys every call passes, in declared
    /// order; a caller's named keys come after.
    #[test]
    fn the_key_table_follows_the_declared_roles() {
        let table = key_table(&[Role::Sale, Role::Wait, Role::Idem]);
        assert_eq!(
            table,
            "local K = {sale = KEYS[1], wait = KEYS[2]}\nlocal FD_NAMED_FROM = 3\n"
        );
    }
}
