//! The stock event log: copies every change from each sale's Redis stream
//! into MongoDB, one document per batch copied. A consumer group lets several
//! instances share the work; an entry is acknowledged and deleted from Redis
//! only once it is durable, and entries a dead instance had claimed are taken
//! over.
//!
//! Every few passes it also brings Redis up to admin changes MongoDB
//! recorded but Redis missed. And it is where a Redis that came back older
//! than it was is noticed:
//! its seq is behind what the log has recorded, and the changes it makes
//! reuse recorded seqs. Such a change is kept under a fresh seq (nothing is
//! lost), and the sale is rebuilt from MongoDB.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use crate::{
    holds::Coverage,
    ids::SaleId,
    recovery::{Lost, Recovery},
    store::{
        Store, StoreError,
        events::StreamEntries,
        mongo::{LogTail, Message, sells_out},
    },
};

const BATCH: usize = 500;
const PASS_EVERY: Duration = Duration::from_millis(250);
/// How many passes between two reads of the log's last seq and the sale's
/// settings from MongoDB (other instances record changes too).
const RECHECK_LOG_EVERY: u32 = 8;

pub struct Persister {
    pub store: Store,
    pub recovery: Recovery,
    /// The sales whose changes may still come (kept by the reaper).
    pub coverage: Arc<Coverage>,
    /// An entry claimed this long ago by a consumer that never acknowledged
    /// it belongs to a dead instance: another takes it over.
    pub claim_idle: Duration,
    /// Test fault point: wait between reading new changes and writing them.
    pub pause: Option<Duration>,
}

/// What this instance knows of one sale's log.
#[derive(Default)]
struct Log {
    /// The log's last batch and seq in MongoDB, as far as this instance
    /// knows.
    tail: LogTail,
    passes: u32,
}

impl Persister {
    pub async fn run(self, shutdown: CancellationToken) {
        let consumer = format!("{}-{}", std::process::id(), SaleId::new());
        let mut groups: HashSet<SaleId> = HashSet::new();
        let mut logs: HashMap<SaleId, Log> = HashMap::new();
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut failed = None;
            for sale in self.coverage.sales() {
                // One sale's trouble does not hold up the others.
                let log = logs.entry(sale.clone()).or_default();
                if let Err(err) = self.pass(&sale, &consumer, &mut groups, log).await {
                    tracing::warn!(sale_id = %sale, error = %err, "copying a sale's changes failed");
                    groups.remove(&sale);
                    failed = Some(err);
                }
            }
            let wait = match failed {
                None => {
                    backoff = Duration::from_millis(100);
                    PASS_EVERY
                }
                Some(_) => {
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

    /// Copies the sale's pending changes, then checks Redis is not behind.
    async fn pass(
        &self,
        sale: &SaleId,
        consumer: &str,
        groups: &mut HashSet<SaleId>,
        log: &mut Log,
    ) -> Result<(), StoreError> {
        if log.passes.is_multiple_of(RECHECK_LOG_EVERY) {
            log.tail = self.store.mongo.log_tail(sale, log.tail).await?;
        }
        log.passes += 1;
        let stale = self.persist_sale(sale, consumer, groups, log).await?;
        let (redis_seq, epoch) = self.store.redis.sale_seq_epoch(sale).await?;
        // Behind what a copy of the sale handed out, or the copy in Redis
        // now reused a recorded seq. A change of a copy that was replaced
        // since (copied late) says nothing of the one in Redis now.
        let behind = redis_seq.is_some_and(|seq| seq < log.tail.made);
        let reused = epoch.is_some() && stale.contains(&epoch);
        let lost = match epoch {
            Some(epoch) if behind || reused => Lost::StaleCopy(epoch),
            // A copy, or entries, that do not say which copy they are.
            None if behind => Lost::StaleBelow(log.tail.made),
            _ if stale.contains(&None) => Lost::StaleBelow(log.tail.made),
            _ => return Ok(()),
        };
        tracing::error!(sale_id = %sale, ?redis_seq, recorded = log.tail.made, "Redis is older than the event log; rebuilding the sale");
        if let Some(doc) = self.store.mongo.find_sale(sale).await? {
            self.recovery.rebuild(&doc, lost).await?;
        }
        Ok(())
    }

    /// Copies the sale's pending changes; returns the copies of the sale
    /// (their epochs) that handed out a seq the log had recorded for
    /// another change.
    async fn persist_sale(
        &self,
        sale: &SaleId,
        consumer: &str,
        groups: &mut HashSet<SaleId>,
        log: &mut Log,
    ) -> Result<Vec<Option<String>>, StoreError> {
        let redis = &self.store.redis;
        if !groups.contains(sale) {
            redis.ensure_event_group(sale).await?;
            groups.insert(sale.clone());
        }
        // First what a dead instance left claimed, then what nobody has read.
        let claimed = redis
            .claim_stale_events(sale, consumer, self.claim_idle.as_millis() as u64, BATCH)
            .await?;
        let mut stale = self.store_entries(sale, claimed, log).await?;
        loop {
            let entries = redis.read_new_events(sale, consumer, BATCH).await?;
            let n = entries.len();
            if let Some(pause) = self.pause.filter(|_| n > 0) {
                tokio::time::sleep(pause).await;
            }
            stale.extend(self.store_entries(sale, entries, log).await?);
            if n < BATCH {
                return Ok(stale);
            }
        }
    }

    /// Writes entries to MongoDB as one batch of the log, then acknowledges
    /// and deletes them in Redis; returns the copies of the sale that made
    /// those of them that reused a recorded seq.
    async fn store_entries(
        &self,
        sale: &SaleId,
        entries: StreamEntries,
        log: &mut Log,
    ) -> Result<Vec<Option<String>>, StoreError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let docs = &entries.events;
        // A sell-out's `sale.sold_out` message: staged before, ready after.
        let messages: Vec<Message> = docs
            .iter()
            .filter(|d| sells_out(d))
            .map(Message::sold_out)
            .collect();
        let messages = self.store.mongo.stage_messages(&messages).await?;
        let recorded = self
            .store
            .mongo
            .record_changes(sale, docs, &mut log.tail)
            .await?;
        if recorded.restamped > 0 {
            tracing::warn!(sale_id = %sale, changes = recorded.restamped, "kept changes Redis made under recorded seqs");
        }
        self.store.mongo.ready_messages(&messages).await?;
        // Counted per kind once a batch: a registry look-up per change
        // would cost more than the count.
        let mut kinds: HashMap<&str, u64> = HashMap::new();
        for doc in docs {
            *kinds.entry(doc.kind.as_str()).or_default() += 1;
        }
        for (kind, n) in kinds {
            metrics::counter!("flashdrop_stock_events_total", "kind" => kind.to_owned())
                .increment(n);
            if kind == "promoted" {
                metrics::counter!("flashdrop_promotions_total").increment(n);
            }
        }
        self.store.redis.ack_events(sale, &entries).await?;
        Ok(recorded.stale)
    }
}
