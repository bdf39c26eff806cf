//! One typed function per Lua script (`store/scripts` declares the
//! scripts and their replies): the arguments in, the reply decoded, on
//! `Redis`' connection and publish mode.

use std::time::Duration;

use serde::de::DeserializeOwned;

use super::Redis;
use crate::{
    ids::{ReservationId, SaleId},
    store::{StoreError, keys::SaleKeys, scripts::*},
};

impl Redis {
    /// How a script announces a change of the sale: see `lua/prelude.lua`.
    pub(super) fn announce(&self, keys: &SaleKeys) -> String {
        format!("{} {}", self.publish, keys.channel())
    }

    pub(super) async fn run<T: DeserializeOwned>(
        &self,
        call: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let raw: String = call.invoke_async(&mut self.conn()).await?;
        serde_json::from_str(&raw)
            .map_err(|e| StoreError::Other(anyhow::anyhow!("bad script reply {raw:?}: {e}")))
    }

    /// Reserves of one sale in one call, answered in order (see
    /// `lua/reserve.lua`): at most [`BATCH_CHUNK`], at most one with an
    /// idempotency key, which `idempotency_ttl` keeps.
    pub async fn reserve(
        &self,
        sale: &SaleId,
        items: &[&ReserveItem],
        idempotency_ttl: Duration,
    ) -> Result<ReserveBatchReply, StoreError> {
        debug_assert!(!items.is_empty() && items.len() <= BATCH_CHUNK);
        debug_assert!(items.iter().filter(|i| i.idempotency_key.is_some()).count() <= 1);
        let keys = SaleKeys::new(sale);
        let mut call = self.scripts.reserve.on(&keys);
        call.arg(self.announce(&keys))
            .arg(idempotency_ttl.as_secs());
        for item in items {
            debug_assert_eq!(item.rid.sale(), sale);
            if let Some(key) = &item.idempotency_key {
                call.key(keys.idempotency(&item.buyer, key));
            }
            call.arg(item.rid.as_str())
                .arg(&item.buyer)
                .arg(item.quantity)
                .arg(u8::from(item.idempotency_key.is_some()));
        }
        self.run(&call).await
    }

    /// Confirms of one sale's holds begun in one call, answered in order
    /// (see `lua/confirm_begin.lua`): at most [`BATCH_CHUNK`] of
    /// (reservation id, buyer).
    pub async fn confirm_begin(
        &self,
        sale: &SaleId,
        holds: &[(&ReservationId, &str)],
        lease: Duration,
    ) -> Result<BeginBatchReply, StoreError> {
        debug_assert!(!holds.is_empty() && holds.len() <= BATCH_CHUNK);
        let keys = SaleKeys::new(sale);
        let mut call = self.scripts.confirm_begin.on(&keys);
        call.arg(lease.as_millis() as u64);
        for (rid, buyer) in holds {
            debug_assert_eq!(rid.sale(), sale);
            call.arg(rid.as_str()).arg(*buyer);
        }
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
            .arg(&settings.commit)
            .arg(settings.payment_ms);
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
        call.key(crate::store::keys::quota_key(buyer))
            .arg(per_request.as_secs_f64() * 1000.0)
            .arg(burst);
        self.run(&call).await
    }
}
