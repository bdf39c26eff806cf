//! The expiry reaper: a background loop in every instance that returns the
//! units of due holds (to the waiting list first) and settles confirms
//! whose lease ran out. Several instances may reap at once; `reap.lua`
//! changes each due hold atomically, so each is handled once. It needs
//! Redis only: the list of sales comes from [`Coverage`], and a sale that
//! fails (its rebuild waits for MongoDB, say) holds up no other.

use std::{collections::HashSet, sync::Arc, time::Duration};

use futures_util::{StreamExt, stream};
use tokio_util::sync::CancellationToken;

use crate::{
    holds::{Coverage, Holds},
    ids::{ReservationId, SaleId},
    recovery::Recovery,
    sales::Sales,
    store::{
        Store, StoreError,
        mongo::{Message, SaleDoc},
        scripts::ReapReply,
    },
};

/// Longest sleep between passes: a hold made by another instance is at
/// least 1 s from its deadline, so waking this often meets the 1 s target.
const MAX_SLEEP: Duration = Duration::from_millis(250);
/// How often the list of sales that may have holds is read from MongoDB.
const REFRESH_SALES: Duration = Duration::from_secs(2);
/// Most holds one script call handles: a call stays short (see the bound
/// in `lua/reap.lua`); the reaper calls again while there is more.
pub const REAP_BATCH: usize = 10;
/// How long a cancel has to give its units back itself before the reaper
/// finishes it.
const RETURN_SETTLE: Duration = Duration::from_secs(5);
/// Sales reaped at once.
const SALES_AT_ONCE: usize = 16;

/// What the reaper works with.
pub struct Reaper {
    pub store: Store,
    pub sales: Sales,
    pub holds: Holds,
    pub recovery: Recovery,
    pub coverage: Arc<Coverage>,
    pub confirm_lease: Duration,
    pub ended_hold_retention: Duration,
}

impl Reaper {
    pub async fn run(self, shutdown: CancellationToken) {
        tokio::spawn(refresh_coverage(
            self.store.clone(),
            self.sales.clone(),
            self.holds.clone(),
            self.coverage.clone(),
            shutdown.clone(),
        ));
        let this = Arc::new(self);
        loop {
            let sleep = this.pass().await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = this.coverage.uncovered_hold() => {}
                _ = tokio::time::sleep(sleep.max(Duration::from_millis(5))) => {}
            }
        }
    }

    /// Reaps every covered sale; returns how long to sleep.
    async fn pass(self: &Arc<Self>) -> Duration {
        let sleeps: Vec<Duration> = stream::iter(self.coverage.sales())
            .map(|sale| async move {
                match self.reap_sale(&sale).await {
                    Ok(next) => next.unwrap_or(MAX_SLEEP),
                    Err(err) => {
                        tracing::warn!(sale_id = %sale, error = %err, "reaping a sale failed");
                        MAX_SLEEP
                    }
                }
            })
            .buffer_unordered(SALES_AT_ONCE)
            .collect()
            .await;
        sleeps.into_iter().fold(MAX_SLEEP, Duration::min)
    }

    /// Expires a sale's due holds and starts settling its stuck confirms;
    /// says when the sale's next hold falls due.
    async fn reap_sale(self: &Arc<Self>, sale: &SaleId) -> Result<Option<Duration>, StoreError> {
        loop {
            let reply = self
                .store
                .redis
                .reap(
                    sale,
                    REAP_BATCH,
                    self.confirm_lease,
                    self.ended_hold_retention,
                )
                .await?;
            let (expired, claimed, next, now, more) = match reply {
                ReapReply::Missing => {
                    let doc = self
                        .recovery
                        .sale_doc(sale)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    self.recovery.restore(&doc).await?;
                    continue;
                }
                ReapReply::Ok {
                    expired,
                    claimed,
                    next,
                    now,
                    more,
                } => (expired, claimed, next, now, more),
            };
            if expired > 0 {
                metrics::counter!("flashdrop_holds_expired_total").increment(expired);
                tracing::info!(sale_id = %sale, expired, "holds expired");
            }
            // Each settle may wait on MongoDB: none holds up this loop, and
            // a claimed hold is not claimed again before its new lease ends.
            for rid in claimed {
                let this = self.clone();
                tokio::spawn(async move {
                    let settled = match ReservationId::parse(&rid) {
                        Ok(rid) => this.holds.settle_confirming(&rid).await,
                        Err(_) => {
                            Err(anyhow::anyhow!("reap claimed a malformed id {rid:?}").into())
                        }
                    };
                    if let Err(err) = settled {
                        tracing::warn!(%rid, error = %err, "could not settle a confirm; will retry after the lease");
                    }
                });
            }
            if !more {
                return Ok((next >= 0).then(|| Duration::from_millis((next - now).max(0) as u64)));
            }
        }
    }
}

/// Keeps the coverage in line with MongoDB; when MongoDB cannot answer, the
/// last list stays (a new sale's holds add it anyway). Finishes the
/// returns of cancelled orders cut off before their units came back, and
/// posts `sale.ended` for each recent sale whose window is over.
async fn refresh_coverage(
    store: Store,
    sales: Sales,
    holds: Holds,
    coverage: Arc<Coverage>,
    shutdown: CancellationToken,
) {
    let mut ended_posted: HashSet<(String, i64)> = HashSet::new();
    loop {
        match sales.recent().await {
            Ok(docs) => {
                coverage.replace(docs.iter().filter_map(|d| SaleId::parse(&d.id).ok()));
                post_ended(&store, &docs, &mut ended_posted).await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot list recent sales; reaping the last known ones")
            }
        }
        if let Err(err) = holds.finish_returns(RETURN_SETTLE).await {
            tracing::warn!(error = %err, "cancelled orders' returns wait");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(REFRESH_SALES) => {}
        }
    }
}

/// Posts `sale.ended` once for each sale whose window is over, on the
/// Redis clock (the end itself is the cause: nothing to fence). `posted`
/// spares repeats.
async fn post_ended(store: &Store, docs: &[SaleDoc], posted: &mut HashSet<(String, i64)>) {
    let now = match store.redis.now_ms().await {
        Ok(now) => now,
        Err(err) => {
            tracing::warn!(error = %err, "sale.ended messages wait");
            return;
        }
    };
    let ended: Vec<Message> = docs
        .iter()
        .filter(|d| d.ends_at.timestamp_millis() <= now)
        .filter(|d| !posted.contains(&(d.id.clone(), d.ends_at.timestamp_millis())))
        .map(Message::ended)
        .collect();
    if ended.is_empty() {
        return;
    }
    match store.mongo.post_messages(&ended).await {
        Ok(()) => posted.extend(
            ended
                .iter()
                .map(|m| (m.sale_id.clone(), m.at.timestamp_millis())),
        ),
        Err(err) => tracing::warn!(error = %err, "sale.ended messages wait"),
    }
}
