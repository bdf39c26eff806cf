//! The expiry reaper: a background loop in every instance that returns the
//! units of due holds (to the waiting list first) and settles confirms
//! whose lease ran out. Several instances may reap at once; `reap.lua`
//! changes each due hold atomically, so each is handled once.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{
    holds::{Coverage, Holds},
    ids::{ReservationId, SaleId},
    recovery::Recovery,
    sales::Sales,
    store::{Store, StoreError, mongo::SaleDoc, scripts::ReapReply},
};

/// Longest sleep between passes: a hold made by another instance is at
/// least 1 s from its deadline, so waking this often meets the 1 s target.
const MAX_SLEEP: Duration = Duration::from_millis(250);
/// How often the list of sales that may have holds is read from MongoDB.
const REFRESH_SALES: Duration = Duration::from_secs(2);
/// Most holds one script call handles.
const REAP_BATCH: usize = 500;

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

#[derive(Debug, Default)]
struct ReapReport {
    expired: u64,
    /// Milliseconds until the sale's next deadline, if it has one.
    next_due_in_ms: Option<i64>,
}

impl Reaper {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut sales: Vec<SaleDoc> = Vec::new();
        let mut refreshed_at: Option<tokio::time::Instant> = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            let pass = async {
                if refreshed_at.is_none_or(|t| t.elapsed() >= REFRESH_SALES) {
                    sales = self.sales.recent().await?;
                    refreshed_at = Some(tokio::time::Instant::now());
                    self.coverage
                        .replace(sales.iter().filter_map(|s| SaleId::parse(&s.id).ok()));
                }
                let mut sleep = MAX_SLEEP;
                for sale in &sales {
                    let report = self.reap_sale(sale).await?;
                    if report.expired > 0 {
                        metrics::counter!("flashdrop_holds_expired_total")
                            .increment(report.expired);
                        tracing::info!(sale_id = %sale.id, expired = report.expired, "holds expired");
                    }
                    if let Some(ms) = report.next_due_in_ms {
                        sleep = sleep.min(Duration::from_millis(ms as u64));
                    }
                }
                Ok::<_, StoreError>(sleep)
            };
            let sleep = match pass.await {
                Ok(sleep) => {
                    backoff = Duration::from_millis(100);
                    sleep
                }
                Err(err) => {
                    tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "reaper pass failed");
                    let wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    wait
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.coverage.uncovered_hold() => refreshed_at = None,
                _ = tokio::time::sleep(sleep.max(Duration::from_millis(5))) => {}
            }
        }
    }

    /// Expires a sale's due holds and settles its stuck confirms; says when
    /// the sale's next hold falls due.
    async fn reap_sale(&self, doc: &SaleDoc) -> Result<ReapReport, StoreError> {
        let sale = SaleId::parse(&doc.id)
            .map_err(|_| anyhow::anyhow!("sale document with a malformed id {:?}", doc.id))?;
        let mut report = ReapReport::default();
        loop {
            let reply = self
                .store
                .redis
                .reap(
                    &sale,
                    REAP_BATCH,
                    self.confirm_lease,
                    self.ended_hold_retention,
                )
                .await?;
            let (expired, claimed, next, now, more) = match reply {
                ReapReply::Missing => {
                    self.recovery.restore(doc).await?;
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
            report.expired += expired;
            for rid in claimed {
                let settled = match ReservationId::parse(&rid) {
                    Ok(rid) => self.holds.settle_confirming(&rid).await,
                    Err(_) => Err(anyhow::anyhow!("reap claimed a malformed id {rid:?}").into()),
                };
                if let Err(err) = settled {
                    tracing::warn!(%rid, error = %err, "could not settle a confirm; will retry after the lease");
                }
            }
            report.next_due_in_ms = (next >= 0).then(|| (next - now).max(0));
            if !more {
                return Ok(report);
            }
        }
    }
}
