//! The lobby recorder: copies each lobby's log (every admission, lapse and
//! use, appended by the scripts that make them) from Redis into MongoDB's
//! lobby entries. Like the persister it reads through a consumer group, so
//! instances share the work; an entry is acknowledged and trimmed only once
//! MongoDB has it, a failed write is retried with backoff (a stalled
//! MongoDB delays the record, never loses it), and entries an instance
//! that died had read are taken over. Records are idempotent and
//! commutative (see `Mongo::record_lobby`), so a repeat or two instances
//! racing end the same.

use std::time::Duration;

use redis::streams::StreamId;
use tokio_util::sync::CancellationToken;

use crate::{
    ids::SaleId,
    keeper::Lobbies,
    store::{
        Store, StoreError,
        events::{field_i64, field_str},
        keys::{Role, SaleKeys},
        mongo::LobbyRecord,
    },
};

const GROUP: &str = "record";
const BATCH: usize = 1_000;
const PASS_EVERY: Duration = Duration::from_millis(200);

pub struct Recorder {
    pub store: Store,
    pub lobbies: Lobbies,
    /// An entry read this long ago and never acknowledged belongs to a
    /// dead instance: another takes it over.
    pub claim_idle: Duration,
}

impl Recorder {
    pub async fn run(self, shutdown: CancellationToken) {
        let consumer = format!("{}-{}", std::process::id(), SaleId::new());
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut failed = false;
            for sale in self.lobbies.recording() {
                if let Err(err) = self.pass(&sale, &consumer).await {
                    tracing::warn!(sale_id = %sale, error = %err, "recording a lobby's admissions failed; retrying");
                    failed = true;
                }
            }
            let wait = match failed {
                false => {
                    backoff = Duration::from_millis(100);
                    PASS_EVERY
                }
                true => {
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

    /// Records what a dead instance left, then what nobody has read.
    async fn pass(&self, sale: &SaleId, consumer: &str) -> Result<(), StoreError> {
        let redis = &self.store.redis;
        let log = SaleKeys::new(sale).of(Role::Lobbylog);
        redis.ensure_group(&log, GROUP).await?;
        let stale = redis
            .claim_stale(
                &log,
                GROUP,
                consumer,
                self.claim_idle.as_millis() as u64,
                BATCH,
            )
            .await?;
        self.record(sale, &log, stale).await?;
        loop {
            let entries = redis.read_new(&log, GROUP, consumer, BATCH).await?;
            let n = entries.len();
            self.record(sale, &log, entries).await?;
            if n < BATCH {
                return Ok(());
            }
        }
    }

    async fn record(
        &self,
        sale: &SaleId,
        log: &str,
        entries: Vec<StreamId>,
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let records: Vec<LobbyRecord> = entries.iter().filter_map(record_of).collect();
        self.store.mongo.record_lobby(sale, &records).await?;
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        self.store.redis.ack(log, GROUP, &ids).await
    }
}

/// A log entry as `fd_lobby_log` in `lua/prelude.lua` wrote it.
fn record_of(entry: &StreamId) -> Option<LobbyRecord> {
    let buyer = field_str(entry, "b")?;
    Some(match field_str(entry, "k")?.as_str() {
        "a" => LobbyRecord::Admitted {
            buyer,
            at: field_i64(entry, "t")?,
            until: field_i64(entry, "d")?,
        },
        "l" => LobbyRecord::Lapsed { buyer },
        "u" => LobbyRecord::Used { buyer },
        _ => return None,
    })
}
