//! The expiry reaper: a background loop in every instance that returns the
//! units of due holds and settles confirms whose lease ran out. Several
//! instances may reap at once; `reap.lua` makes each hold's change atomic.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    state::AppState,
    store::{StoreError, mongo::SaleDoc},
};

/// Longest sleep between passes: a hold made by another instance is at
/// least 1 s from its deadline, so waking this often meets the 1 s target.
const MAX_SLEEP: Duration = Duration::from_millis(250);
/// How often the list of sales that may have holds is read from MongoDB.
const REFRESH_SALES: Duration = Duration::from_secs(2);

/// Which sales this instance's reaper covers. A hold on a sale it does not
/// cover yet wakes it at once, so a new sale's first holds meet the 1 s
/// target without waiting for the next refresh.
#[derive(Default)]
pub struct Coverage {
    sales: Mutex<HashSet<String>>,
    wake: Notify,
}

impl Coverage {
    pub fn hold_made(&self, sale_id: &str) {
        let mut sales = self.sales.lock().expect("coverage lock");
        if !sales.contains(sale_id) {
            sales.insert(sale_id.to_owned());
            self.wake.notify_one();
        }
    }
}

pub async fn run(state: AppState, shutdown: CancellationToken) {
    let coverage: Arc<Coverage> = state.reaper.clone();
    let mut sales: Vec<SaleDoc> = Vec::new();
    let mut refreshed_at: Option<tokio::time::Instant> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let pass = async {
            if refreshed_at.is_none_or(|t| t.elapsed() >= REFRESH_SALES) {
                sales = state.recent_sales().await?;
                refreshed_at = Some(tokio::time::Instant::now());
                let mut covered = coverage.sales.lock().expect("coverage lock");
                covered.clear();
                covered.extend(sales.iter().map(|s| s.id.clone()));
            }
            let mut sleep = MAX_SLEEP;
            for sale in &sales {
                let report = state.reap_sale(sale).await?;
                if report.expired > 0 {
                    metrics::counter!("flashdrop_holds_expired_total").increment(report.expired);
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
            _ = coverage.wake.notified() => refreshed_at = None,
            _ = tokio::time::sleep(sleep.max(Duration::from_millis(5))) => {}
        }
    }
}
