//! The typed calls of the rebuild and lobby scripts (see `calls.rs`).

use std::time::Duration;

use super::Redis;
use crate::{
    ids::SaleId,
    store::{
        StoreError,
        keys::{STAGED, SaleKeys},
        scripts::*,
    },
};

impl Redis {
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
        replaces: Replaces<'_>,
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
            .arg(match replaces {
                Replaces::Absent => "absent".to_owned(),
                Replaces::Below(seq) => seq.to_string(),
                Replaces::Copy(epoch) => format!("copy:{epoch}"),
            })
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
            .arg(restored.lobby.draw_count)
            .arg(settings.payment_ms)
            .arg(restored.log_n);
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
