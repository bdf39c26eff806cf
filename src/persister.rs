//! The stock event log: copies every change from each sale's Redis stream
//! into MongoDB `stock_events`. A consumer group lets several instances share
//! the work; an entry is acknowledged and deleted from Redis only once it is
//! durable, and entries a dead instance had claimed are taken over.

use std::{collections::HashSet, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{
    holds::Coverage,
    ids::SaleId,
    store::{Store, StoreError, events::StreamEntry},
};

const BATCH: usize = 500;
/// An entry claimed this long ago by a consumer that never acknowledged it
/// belongs to a dead instance.
const CLAIM_IDLE_MS: u64 = 30_000;
const PASS_EVERY: Duration = Duration::from_millis(250);

pub struct Persister {
    pub store: Store,
    /// The sales whose changes may still come (kept by the reaper).
    pub coverage: std::sync::Arc<Coverage>,
}

impl Persister {
    pub async fn run(self, shutdown: CancellationToken) {
        let consumer = format!("{}-{}", std::process::id(), SaleId::new());
        let mut groups: HashSet<SaleId> = HashSet::new();
        let mut backoff = Duration::from_millis(100);
        loop {
            let pass = async {
                let mut failed = None;
                for sale in self.coverage.sales() {
                    // One sale's trouble does not hold up the others.
                    if let Err(err) = self.persist_sale(&sale, &consumer, &mut groups).await {
                        tracing::warn!(sale_id = %sale, error = %err, "copying a sale's changes failed");
                        failed = Some(err);
                    }
                }
                failed.map_or(Ok(()), Err)
            };
            let wait = match pass.await as Result<(), StoreError> {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    PASS_EVERY
                }
                Err(err) => {
                    tracing::warn!(error = %err, "event persister pass failed");
                    groups.clear();
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    backoff
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Copies the sale's pending changes; returns how many it wrote.
    async fn persist_sale(
        &self,
        sale: &SaleId,
        consumer: &str,
        groups: &mut HashSet<SaleId>,
    ) -> Result<usize, StoreError> {
        let redis = &self.store.redis;
        if !groups.contains(sale) {
            redis.ensure_event_group(sale).await?;
            groups.insert(sale.clone());
        }
        // First what a dead instance left claimed, then what nobody has read.
        let claimed = redis
            .claim_stale_events(sale, consumer, CLAIM_IDLE_MS, BATCH)
            .await?;
        let mut written = self.store_entries(sale, claimed).await?;
        loop {
            let entries = redis.read_new_events(sale, consumer, BATCH).await?;
            let n = entries.len();
            written += self.store_entries(sale, entries).await?;
            if n < BATCH {
                return Ok(written);
            }
        }
    }

    /// Writes entries to MongoDB, then acknowledges and deletes them in Redis.
    async fn store_entries(
        &self,
        sale: &SaleId,
        entries: Vec<StreamEntry>,
    ) -> Result<usize, StoreError> {
        if entries.is_empty() {
            return Ok(0);
        }
        let docs: Vec<_> = entries.iter().filter_map(|e| e.event.clone()).collect();
        for doc in &docs {
            metrics::counter!("flashdrop_stock_events_total", "kind" => doc.kind.clone())
                .increment(1);
            if doc.kind == "promoted" {
                metrics::counter!("flashdrop_promotions_total").increment(1);
            }
        }
        self.store.mongo.insert_events(&docs).await?;
        self.store.redis.ack_events(sale, &entries).await?;
        Ok(entries.len())
    }
}
