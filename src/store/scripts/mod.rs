//! The typed boundary to the Lua scripts in `lua/`: one function per script
//! with typed arguments, and one reply enum per script, so every match on a
//! reply is exhaustive and a new reply is a compile error where it is not
//! handled. The table below declares the key roles each script touches; the
//! scripts find their keys by role (see `lua/prelude.lua`), and a test
//! checks each table row against what the script and the prelude helpers it
//! calls really touch.

use std::time::Duration;

mod args;
mod replies;

pub use args::*;
pub use replies::*;

use redis::Script;
use serde::de::DeserializeOwned;

use super::{
    StoreError,
    keys::{Role, STAGED, SaleKeys},
    redis::Redis,
};
use crate::ids::{ReservationId, SaleId};

/// A script with the roles of the keys it touches.
pub(super) struct Lua {
    source: &'static str,
    script: Script,
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
                        concat!(
                            include_str!("../../../lua/prelude.lua"),
                            "\n",
                            include_str!(concat!("../../../lua/", $file)),
                        ),
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
    apply_order: "apply_order.lua" [Sale Holds Deadlines Ended Free Taken Bought Holding Events Wait Waitq Promoted];
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
    restore_sale: "restore_sale.lua" [Sale Holds Deadlines Ended Free Taken Bought Holding Events Wait Waitq Promoted Early Lobby Lobbyin Admitted Admitdue Restore Stagefree Stagebought Stagewait Stagewaitq Stageearly Stagelobby Stagelobbyin Stageadmitted Stageadmitdue];
    rebuild_lock: "rebuild_lock.lua" [Restore];
    quota: "quota.lua" [Quota];
    lobby_join: "lobby_join.lua" [Sale Early Lobby Lobbyin Admitted];
    lobby_tick: "lobby_tick.lua" [Sale Early Lobby Lobbyin Admitted Admitdue Lobbylog];
    lobby_read: "lobby_read.lua" [Sale Early Lobby Lobbyin Admitted];
    lobby_draw: "lobby_draw.lua" [Sale Early Lobby Lobbyin Admitted];
}

impl Lua {
    fn new(source: &'static str, roles: &'static [Role]) -> Self {
        Self {
            source,
            script: Script::new(source),
            roles,
        }
    }

    /// An invocation with every declared key of the sale (an idempotency
    /// key names a buyer, so the caller adds it).
    fn on(&self, keys: &SaleKeys) -> redis::ScriptInvocation<'_> {
        let mut call = self.script.prepare_invoke();
        for role in self.roles.iter().filter(|r| !r.is_named()) {
            call.key(keys.of(*role));
        }
        call
    }
}

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

/// The reserve script's source, and the arguments of `EVALSHA` for one
/// reserve of `sale` by `buyer` as `rid`, so `scripts/bench` can drive the
/// very script with redis-benchmark (its placeholders in `rid` and `buyer`).
pub fn reserve_benchmark(sale: &SaleId, rid: &str, buyer: &str) -> (&'static str, Vec<String>) {
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
    argv.extend([
        format!("PUBLISH {}", keys.channel()),
        rid.to_owned(),
        buyer.to_owned(),
        "1".into(),
        "0".into(),
    ]);
    (lua.source, argv)
}

impl Redis {
    /// How a script announces a change of the sale: see `lua/prelude.lua`.
    fn announce(&self, keys: &SaleKeys) -> String {
        format!("{} {}", self.publish, keys.channel())
    }

    async fn run<T: DeserializeOwned>(
        &self,
        call: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let raw: String = call.invoke_async(&mut self.conn()).await?;
        serde_json::from_str(&raw)
            .map_err(|e| StoreError::Other(anyhow::anyhow!("bad script reply {raw:?}: {e}")))
    }

    pub async fn reserve(
        &self,
        rid: &ReservationId,
        buyer: &str,
        quantity: i64,
        idempotency: Option<(&str, Duration)>,
    ) -> Result<ReserveReply, StoreError> {
        let keys = SaleKeys::new(rid.sale());
        let mut call = self.scripts.reserve.on(&keys);
        if let Some((key, _)) = idempotency {
            call.key(keys.idempotency(buyer, key));
        }
        call.arg(self.announce(&keys))
            .arg(rid.as_str())
            .arg(buyer)
            .arg(quantity)
            .arg(idempotency.map_or(0, |(_, ttl)| ttl.as_secs()));
        self.run(&call).await
    }

    pub async fn confirm_begin(
        &self,
        rid: &ReservationId,
        buyer: &str,
        lease: Duration,
    ) -> Result<BeginReply, StoreError> {
        let keys = SaleKeys::new(rid.sale());
        let mut call = self.scripts.confirm_begin.on(&keys);
        call.arg(rid.as_str())
            .arg(buyer)
            .arg(lease.as_millis() as u64);
        self.run(&call).await
    }

    /// Marks holds of one sale confirmed; their orders are durable.
    pub async fn confirm_finish(
        &self,
        sale: &SaleId,
        rids: &[&ReservationId],
    ) -> Result<FinishReply, StoreError> {
        let keys = SaleKeys::new(sale);
        let mut call = self.scripts.confirm_finish.on(&keys);
        call.arg(self.announce(&keys));
        for rid in rids {
            debug_assert_eq!(rid.sale(), sale);
            call.arg(rid.as_str());
        }
        self.run(&call).await
    }

    pub async fn confirm_abort(
        &self,
        rid: &ReservationId,
        cause: AbortCause,
    ) -> Result<AbortReply, StoreError> {
        let keys = SaleKeys::new(rid.sale());
        let mut call = self.scripts.confirm_abort.on(&keys);
        call.arg(self.announce(&keys)).arg(rid.as_str());
        match cause {
            AbortCause::Unwritten { lease } => call.arg("unwritten").arg(lease),
            AbortCause::Fenced => call.arg("fenced").arg(0),
        };
        self.run(&call).await
    }

    /// Counts a durable order whose hold Redis does not hold live. Units
    /// another live hold has are found by scanning the sale's holds in
    /// chunks (never inside a script) and reclaimed a few holds a call;
    /// then the order is applied in one call. Units that moved meanwhile
    /// are looked for again.
    pub async fn apply_order(
        &self,
        rid: &ReservationId,
        buyer: &str,
        units: &[i64],
    ) -> Result<ApplyReply, StoreError> {
        for _ in 0..5 {
            let contested = match self.apply_order_once(rid, buyer, units).await? {
                ApplyReply::Contested { units } => units,
                done => return Ok(done),
            };
            let held_by = self.holders_of(rid.sale(), &contested).await?;
            for chunk in held_by.chunks(RECLAIM_HOLDS) {
                self.reclaim_units(rid.sale(), chunk).await?;
            }
        }
        Err(StoreError::Unavailable(format!(
            "the units of order {rid} keep moving between holds; try again"
        )))
    }

    /// One `apply_order.lua` call: `Contested` when other holds have units.
    pub async fn apply_order_once(
        &self,
        rid: &ReservationId,
        buyer: &str,
        units: &[i64],
    ) -> Result<ApplyReply, StoreError> {
        let keys = SaleKeys::new(rid.sale());
        let units: Vec<String> = units.iter().map(i64::to_string).collect();
        let mut call = self.scripts.apply_order.on(&keys);
        call.arg(self.announce(&keys))
            .arg(rid.as_str())
            .arg(buyer)
            .arg(units.join(","));
        self.run(&call).await
    }

    /// Takes units of a durable order back from the live holds named (at
    /// most [`RECLAIM_HOLDS`]).
    pub async fn reclaim_units(
        &self,
        sale: &SaleId,
        held_by: &[(i64, String)],
    ) -> Result<ReclaimReply, StoreError> {
        let keys = SaleKeys::new(sale);
        let mut call = self.scripts.reclaim_units.on(&keys);
        call.arg(self.announce(&keys));
        for (unit, holder) in held_by {
            call.arg(format!("{unit}={holder}"));
        }
        self.run(&call).await
    }

    pub async fn cancel(
        &self,
        rid: &ReservationId,
        buyer: &str,
    ) -> Result<CancelReply, StoreError> {
        let keys = SaleKeys::new(rid.sale());
        let mut call = self.scripts.cancel.on(&keys);
        call.arg(self.announce(&keys)).arg(rid.as_str()).arg(buyer);
        self.run(&call).await
    }

    /// `retention`: how long a hold that ended stays readable.
    pub async fn reap(
        &self,
        sale: &SaleId,
        batch: usize,
        lease: Duration,
        retention: Duration,
    ) -> Result<ReapReply, StoreError> {
        let keys = SaleKeys::new(sale);
        let mut call = self.scripts.reap.on(&keys);
        call.arg(self.announce(&keys))
            .arg(batch)
            .arg(lease.as_millis() as u64)
            .arg(retention.as_millis() as u64);
        self.run(&call).await
    }

    pub async fn repair_hold(
        &self,
        rid: &ReservationId,
        sold_elsewhere: &[i64],
        bought_in_mongodb: i64,
    ) -> Result<RepairReply, StoreError> {
        let keys = SaleKeys::new(rid.sale());
        let sold: Vec<String> = sold_elsewhere.iter().map(i64::to_string).collect();
        let mut call = self.scripts.repair_hold.on(&keys);
        call.arg(self.announce(&keys))
            .arg(rid.as_str())
            .arg(sold.join(","))
            .arg(bought_in_mongodb);
        self.run(&call).await
    }

    /// Opens a new sale.
    pub async fn open_sale(
        &self,
        sale: &SaleId,
        settings: &LiveSettings,
    ) -> Result<OpenReply, StoreError> {
        let keys = SaleKeys::new(sale);
        let mut call = self.scripts.open_sale.on(&keys);
        call.arg(self.announce(&keys))
            .arg(settings.total)
            .arg(settings.per_user_limit)
            .arg(settings.starts_ms)
            .arg(settings.ends_ms)
            .arg(settings.hold_ms)
            .arg(settings.price_cents)
            .arg(&settings.currency)
            .arg(i64::from(settings.waitlist))
            .arg(&settings.name)
            .arg(SaleId::new().as_str())
            .arg(settings.version)
            .arg(settings.admit_per_second)
            .arg(settings.admission_ms)
            .arg(settings.opens_ms)
            .arg(&settings.commit);
        self.run(&call).await
    }

    /// `needs_upcoming`: the change may only apply before the start;
    /// `touches_lobby`: only before the lobby opens (and the start).
    pub async fn update_sale(
        &self,
        sale: &SaleId,
        settings: &LiveSettings,
        needs_upcoming: bool,
        touches_lobby: bool,
    ) -> Result<UpdateReply, StoreError> {
        let keys = SaleKeys::new(sale);
        let mut call = self.scripts.update_sale.on(&keys);
        call.arg(self.announce(&keys))
            .arg(settings.starts_ms)
            .arg(settings.ends_ms)
            .arg(settings.hold_ms)
            .arg(settings.total)
            .arg(settings.per_user_limit)
            .arg(settings.price_cents)
            .arg(&settings.currency)
            .arg(i64::from(needs_upcoming))
            .arg(i64::from(settings.waitlist))
            .arg(&settings.name)
            .arg(settings.version)
            .arg(settings.admit_per_second)
            .arg(settings.admission_ms)
            .arg(settings.opens_ms)
            .arg(&settings.commit)
            .arg(i64::from(touches_lobby));
        self.run(&call).await
    }

    /// Closes a sale MongoDB has recorded closed at `version`, with `ends_ms`.
    pub async fn close_sale(
        &self,
        sale: &SaleId,
        ends_ms: i64,
        version: i64,
    ) -> Result<CloseReply, StoreError> {
        let keys = SaleKeys::new(sale);
        let mut call = self.scripts.close_sale.on(&keys);
        call.arg(self.announce(&keys)).arg(ends_ms).arg(version);
        self.run(&call).await
    }

    pub async fn waitlist_join(
        &self,
        sale: &SaleId,
        buyer: &str,
        quantity: i64,
    ) -> Result<JoinReply, StoreError> {
        let keys = SaleKeys::new(sale);
        let mut call = self.scripts.waitlist_join.on(&keys);
        call.arg(self.announce(&keys)).arg(buyer).arg(quantity);
        self.run(&call).await
    }

    pub async fn waitlist_leave(
        &self,
        sale: &SaleId,
        buyer: &str,
    ) -> Result<LeaveReply, StoreError> {
        let keys = SaleKeys::new(sale);
        let mut call = self.scripts.waitlist_leave.on(&keys);
        call.arg(self.announce(&keys)).arg(buyer);
        self.run(&call).await
    }

    pub async fn read_sale(&self, sale: &SaleId) -> Result<ReadSaleReply, StoreError> {
        self.run(&self.scripts.read_sale.on(&SaleKeys::new(sale)))
            .await
    }

    pub async fn waitlist_place(
        &self,
        sale: &SaleId,
        buyer: &str,
    ) -> Result<PlaceReply, StoreError> {
        let mut call = self.scripts.waitlist_place.on(&SaleKeys::new(sale));
        call.arg(buyer);
        self.run(&call).await
    }

    /// Spends one request of a buyer's write budget: `per_request` is the
    /// interval at the sustained rate, `burst` how many may come at once.
    pub async fn spend_quota(
        &self,
        buyer: &str,
        per_request: Duration,
        burst: u32,
    ) -> Result<QuotaReply, StoreError> {
        let mut call = self.scripts.quota.script.prepare_invoke();
        call.key(super::keys::quota_key(buyer))
            .arg(per_request.as_secs_f64() * 1000.0)
            .arg(burst);
        self.run(&call).await
    }

    /// Renews (for `Some(lifetime)`) or releases the rebuild lock, while
    /// `token` owns it.
    pub async fn rebuild_lock(
        &self,
        sale: &SaleId,
        token: &str,
        renew: Option<Duration>,
    ) -> Result<LockReply, StoreError> {
        let mut call = self.scripts.rebuild_lock.on(&SaleKeys::new(sale));
        call.arg(token);
        match renew {
            Some(lifetime) => call.arg("renew").arg(lifetime.as_millis() as u64),
            None => call.arg("release").arg(0),
        };
        self.run(&call).await
    }

    /// Swaps in what a rebuild staged, if `token` still owns the lock and
    /// the sale is as expected: absent, or (`stale_below`) with a seq below
    /// what MongoDB has recorded.
    pub async fn restore_sale(
        &self,
        sale: &SaleId,
        token: &str,
        stale_below: Option<i64>,
        restored: &Restored<'_>,
    ) -> Result<RestoreReply, StoreError> {
        let keys = SaleKeys::new(sale);
        let mut call = self.scripts.restore_sale.on(&keys);
        for (_, staged) in STAGED {
            call.key(keys.staging(staged, token));
        }
        let settings = restored.settings;
        call.arg(self.announce(&keys))
            .arg(token)
            .arg(stale_below.map_or("absent".to_owned(), |s| s.to_string()))
            .arg(settings.total)
            .arg(settings.per_user_limit)
            .arg(settings.starts_ms)
            .arg(settings.ends_ms)
            .arg(settings.hold_ms)
            .arg(i64::from(restored.closed))
            .arg(restored.sold)
            .arg(restored.next)
            .arg(settings.price_cents)
            .arg(&settings.currency)
            .arg(i64::from(settings.waitlist))
            .arg(restored.seq)
            .arg(&settings.name)
            .arg(restored.last_ticket)
            .arg(i64::from(restored.line_closed))
            .arg(SaleId::new().as_str())
            .arg(settings.version)
            .arg(settings.admit_per_second)
            .arg(settings.admission_ms)
            .arg(restored.lobby.joined)
            .arg(restored.lobby.admitted)
            .arg(restored.lobby.used)
            .arg(restored.lobby.lapsed)
            .arg(settings.opens_ms)
            .arg(&settings.commit)
            .arg(i64::from(restored.lobby.drawn))
            .arg(restored.lobby.draw_count);
        self.run(&call).await
    }

    /// Puts a buyer MongoDB has recorded (joined at `joined_ms`, Redis
    /// clock) into a sale's lobby; the script decides, on the Redis clock,
    /// whether they are early (for the draw) or late. A repeat changes
    /// nothing.
    pub async fn lobby_join(
        &self,
        sale: &SaleId,
        buyer: &str,
        joined_ms: i64,
    ) -> Result<LobbyJoinReply, StoreError> {
        let keys = SaleKeys::new(sale);
        let mut call = self.scripts.lobby_join.on(&keys);
        call.arg(buyer).arg(joined_ms).arg(self.announce(&keys));
        self.run(&call).await
    }

    /// Lapses unused admissions and admits buyers at the sale's rate
    /// (`most` bounds both per call); from the start, until the draw is
    /// loaded, hands the draw's lease (`token`, for `lease`) to one caller.
    pub async fn lobby_tick(
        &self,
        sale: &SaleId,
        most: usize,
        token: &str,
        lease: Duration,
    ) -> Result<LobbyTickReply, StoreError> {
        let keys = SaleKeys::new(sale);
        let mut call = self.scripts.lobby_tick.on(&keys);
        call.arg(self.announce(&keys))
            .arg(most)
            .arg(token)
            .arg(lease.as_millis() as u64);
        self.run(&call).await
    }

    /// One step of loading a frozen draw while `token` holds its lease.
    pub async fn lobby_draw(
        &self,
        sale: &SaleId,
        token: &str,
        step: DrawStep<'_>,
    ) -> Result<LobbyDrawReply, StoreError> {
        let keys = SaleKeys::new(sale);
        let mut call = self.scripts.lobby_draw.on(&keys);
        call.arg(self.announce(&keys)).arg(token);
        match step {
            DrawStep::Place(places) | DrawStep::Late(places) => {
                call.arg(match step {
                    DrawStep::Place(_) => "place",
                    _ => "late",
                });
                for p in places {
                    call.arg(&p.buyer).arg(&p.member).arg(p.joined_ms);
                }
            }
            DrawStep::Done { count } => {
                call.arg("done").arg(count);
            }
        }
        self.run(&call).await
    }

    pub async fn lobby_read(
        &self,
        sale: &SaleId,
        buyer: &str,
    ) -> Result<LobbyReadReply, StoreError> {
        let mut call = self.scripts.lobby_read.on(&SaleKeys::new(sale));
        call.arg(buyer);
        self.run(&call).await
    }
}

#[cfg(test)]
mod declared_keys;
