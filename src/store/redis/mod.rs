//! The Redis handle: one multiplexed connection for every command, the
//! scripts, and the few plain reads and writes that are not a sale's state
//! transition (a hold record, idempotency keys, the rebuild lock, the live
//! feed's subscription).

mod calls;
mod lobby_calls;
mod pay_calls;
mod rebuild;

pub use pay_calls::PaymentEnd;

pub use super::keys::HoldState;

pub use rebuild::{LobbyAdmission, LobbyStage, Staging, Waiter};

use std::{collections::HashMap, sync::Arc, time::Duration};

use redis::{AsyncCommands, aio::ConnectionManager};
use serde::Deserialize;

use super::{
    StoreError,
    conn::Conn,
    keys::{Role, SaleKeys},
    scripts::Scripts,
};
use crate::ids::{ReservationId, SaleId};

#[derive(Clone)]
pub struct Redis {
    conn: Conn,
    pub(super) scripts: Arc<Scripts>,
    /// The single node's URL, or the cluster's seed nodes.
    pub(super) nodes: Arc<[String]>,
    /// PUBLISH on a single node, SPUBLISH (shard channels) on a cluster.
    pub(super) publish: &'static str,
}

/// A hold as `lua/prelude.lua` keeps it in the sale's `holds` hash.
#[derive(Debug, Clone, Deserialize)]
pub struct Hold {
    pub user: String,
    pub qty: i64,
    pub state: HoldState,
    pub expires: i64,
}

/// A buyer's place in line as the live feed tracks it.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinePlace {
    pub ticket: Option<i64>,
    pub position: Option<i64>,
}

/// The cluster client's settings: a request the cluster answers with
/// TRYAGAIN (its sale's slot is moving), CLUSTERDOWN or MASTERDOWN (a
/// failover) is tried again 8 times, after a random wait of 40 ms up to
/// 80, 160 ... 1000 ms (about 2 s in all, never less than 0.3 s), before
/// the caller hears of it and answers 503. The driver's default waits at
/// least 1.3 s before each of 16 tries.
pub(super) fn cluster_client(seeds: &[String]) -> redis::cluster::ClusterClientBuilder {
    redis::cluster::ClusterClientBuilder::new(seeds.to_vec())
        .connection_timeout(Duration::from_secs(2))
        .retries(8)
        .min_retry_wait(40)
        .max_retry_wait(1000)
        .retry_wait_formula(40, 2)
}

impl Redis {
    /// Connects as the settings say: a single node, or a cluster.
    pub async fn for_settings(settings: &crate::config::Settings) -> Result<Self, StoreError> {
        match settings.redis_cluster {
            true => Self::connect_cluster(&settings.redis_nodes()).await,
            false => Self::connect(&settings.redis_url).await,
        }
    }

    /// Connects to a single Redis.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Other(anyhow::anyhow!("FLASHDROP_REDIS_URL: {e}")))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2);
        Ok(Self {
            conn: Conn::Single(ConnectionManager::new_with_config(client, config).await?),
            scripts: Arc::new(Scripts::load()),
            nodes: vec![url.to_owned()].into(),
            publish: "PUBLISH",
        })
    }

    /// Connects to a Redis Cluster through its seed nodes. Changes go out on
    /// each sale's shard channel.
    pub async fn connect_cluster(seeds: &[String]) -> Result<Self, StoreError> {
        let client = cluster_client(seeds)
            .response_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| StoreError::Other(anyhow::anyhow!("FLASHDROP_REDIS_URL: {e}")))?;
        Ok(Self {
            conn: Conn::Cluster(client.get_async_connection().await?),
            scripts: Arc::new(Scripts::load()),
            nodes: seeds.into(),
            publish: "SPUBLISH",
        })
    }

    /// Whether this is a cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
    }

    pub(super) fn conn(&self) -> Conn {
        self.conn.clone()
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        redis::cmd("PING")
            .query_async::<String>(&mut self.conn())
            .await?;
        Ok(())
    }

    /// A hold's record, while Redis has it.
    pub async fn hold(&self, rid: &ReservationId) -> Result<Option<Hold>, StoreError> {
        let raw: Option<String> = self
            .conn()
            .hget(SaleKeys::new(rid.sale()).holds(), rid.as_str())
            .await?;
        raw.map(|raw| {
            serde_json::from_str(&raw)
                .map_err(|e| StoreError::Other(anyhow::anyhow!("bad hold record {raw:?}: {e}")))
        })
        .transpose()
    }

    /// Remembers for `ttl` that a buyer's `key` confirmed `rid`, unless the
    /// key was used before: then returns the reservation it was used for.
    pub async fn remember_confirm_key(
        &self,
        rid: &ReservationId,
        buyer: &str,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<String>, StoreError> {
        let key = SaleKeys::new(rid.sale()).idempotency(buyer, &format!("confirm:{key}"));
        Ok(redis::cmd("SET")
            .arg(key)
            .arg(rid.as_str())
            .arg("NX")
            .arg("GET")
            .arg("EX")
            .arg(ttl.as_secs())
            .query_async(&mut self.conn())
            .await?)
    }

    /// A buyer's join ticket and 1-based position in a sale's line.
    pub async fn line_place(&self, sale: &SaleId, buyer: &str) -> Result<LinePlace, StoreError> {
        let wait = SaleKeys::new(sale).wait();
        let (ticket, rank): (Option<f64>, Option<i64>) = redis::pipe()
            .zscore(&wait, buyer)
            .zrank(&wait, buyer)
            .query_async(&mut self.conn())
            .await?;
        Ok(LinePlace {
            ticket: ticket.map(|t| t as i64),
            position: rank.map(|r| r + 1),
        })
    }

    /// Everything Redis keeps of a sale, in one atomic read.
    pub async fn dump_sale(&self, sale: &SaleId) -> Result<SaleDump, StoreError> {
        type Raw = (
            HashMap<String, String>,
            Vec<i64>,
            Vec<i64>,
            HashMap<String, String>,
            HashMap<String, i64>,
            Vec<(String, f64)>,
            HashMap<String, i64>,
            usize,
            HashMap<String, String>,
            usize,
        );
        let keys = SaleKeys::new(sale);
        let (sale, free, taken, holds, bought, wait, waitq, unpersisted, admitted, unrecorded): Raw =
            redis::pipe()
            .atomic()
            .hgetall(keys.sale())
            .smembers(keys.free())
            .smembers(keys.of(Role::Taken))
            .hgetall(keys.holds())
            .hgetall(keys.bought())
            .zrange_withscores(keys.wait(), 0, -1)
            .hgetall(keys.waitq())
            .xlen(keys.events())
            .hgetall(keys.of(Role::Admitted))
            .xlen(keys.of(Role::Lobbylog))
            .query_async(&mut self.conn())
            .await?;
        Ok(SaleDump {
            sale,
            free,
            taken,
            holds,
            bought,
            wait: wait.into_iter().map(|(b, t)| (b, t as i64)).collect(),
            waitq,
            unpersisted,
            admitted,
            unrecorded,
        })
    }

    /// The seq of the sale's last change in Redis, if Redis has the sale.
    pub async fn sale_seq(&self, sale: &SaleId) -> Result<Option<i64>, StoreError> {
        Ok(self.conn().hget(SaleKeys::new(sale).sale(), "seq").await?)
    }

    /// The sale's seq and the epoch of its copy in Redis, read together
    /// (no epoch: a copy that does not say).
    pub async fn sale_seq_epoch(
        &self,
        sale: &SaleId,
    ) -> Result<(Option<i64>, Option<String>), StoreError> {
        let (seq, epoch): (Option<i64>, Option<String>) = self
            .conn()
            .hmget(SaleKeys::new(sale).sale(), &["seq", "epoch"])
            .await?;
        Ok((seq, epoch.filter(|e| !e.is_empty())))
    }

    /// The version of the sale's settings Redis has, if it has the sale.
    pub async fn sale_version(&self, sale: &SaleId) -> Result<Option<i64>, StoreError> {
        let (exists, version): (bool, Option<i64>) = redis::pipe()
            .exists(SaleKeys::new(sale).sale())
            .hget(SaleKeys::new(sale).sale(), "version")
            .query_async(&mut self.conn())
            .await?;
        Ok(exists.then_some(version.unwrap_or(0)))
    }

    pub async fn sale_exists(&self, sale: &SaleId) -> Result<bool, StoreError> {
        Ok(self.conn().exists(SaleKeys::new(sale).sale()).await?)
    }

    /// The Redis clock, in milliseconds: every decision about a sale's
    /// window and its lobby is taken on it, never on an instance's own.
    pub async fn now_ms(&self) -> Result<i64, StoreError> {
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut self.conn()).await?;
        Ok(secs * 1000 + micros / 1000)
    }

    /// Buyers who joined a lobby before the start, with when they joined,
    /// read in chunks (the draw is made from them).
    pub async fn early_joiners(&self, sale: &SaleId) -> Result<Vec<(String, i64)>, StoreError> {
        self.scan_hash(&SaleKeys::new(sale).of(Role::Early), |buyer, joined| {
            Some((buyer, joined.parse().ok()?))
        })
        .await
    }

    /// Which live holds of a sale have these units, read in chunks: the
    /// holders `apply_order` needs named.
    pub async fn holders_of(
        &self,
        sale: &SaleId,
        units: &[i64],
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let wanted: std::collections::HashSet<String> = units.iter().map(i64::to_string).collect();
        let found = self
            .scan_hash(&SaleKeys::new(sale).holds(), |rid, raw| {
                let hold: HoldUnits = serde_json::from_str(&raw).ok()?;
                let live = hold.state.is_live();
                let mine: Vec<i64> = hold
                    .units
                    .split(',')
                    .filter(|u| live && wanted.contains(*u))
                    .filter_map(|u| u.parse().ok())
                    .collect();
                (!mine.is_empty()).then_some((rid, mine))
            })
            .await?;
        Ok(found
            .into_iter()
            .flat_map(|(rid, mine)| mine.into_iter().map(move |u| (u, rid.clone())))
            .collect())
    }

    /// Every field of a hash through HSCAN (a chunk a call, so no call
    /// blocks Redis however large the hash), kept where `keep` says.
    async fn scan_hash<T>(
        &self,
        key: &str,
        keep: impl Fn(String, String) -> Option<T>,
    ) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, fields): (u64, Vec<(String, String)>) = redis::cmd("HSCAN")
                .arg(key)
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut self.conn())
                .await?;
            out.extend(fields.into_iter().filter_map(|(k, v)| keep(k, v)));
            if next == 0 {
                return Ok(out);
            }
            cursor = next;
        }
    }
}

/// A hold's units, for finding who holds a unit.
#[derive(Deserialize)]
struct HoldUnits {
    state: HoldState,
    #[serde(default)]
    units: String,
}

/// Everything Redis keeps of a sale, read at once, for an audit.
#[derive(Debug, Default)]
pub struct SaleDump {
    pub sale: HashMap<String, String>,
    pub free: Vec<i64>,
    /// Never-issued serials an order took anyway (issuing skips them).
    pub taken: Vec<i64>,
    /// Reservation id -> the hold's JSON record.
    pub holds: HashMap<String, String>,
    pub bought: HashMap<String, i64>,
    /// Waiting buyers, head first, with their join tickets.
    pub wait: Vec<(String, i64)>,
    pub waitq: HashMap<String, i64>,
    /// Changes not yet copied to MongoDB.
    pub unpersisted: usize,
    /// A lobby's admissions: buyer -> `<state> <deadline> <at> <joined>`.
    pub admitted: HashMap<String, String>,
    /// Admissions, lapses and uses not yet recorded in MongoDB.
    pub unrecorded: usize,
}

impl SaleDump {
    /// A number of the sale hash; 0 when absent.
    pub fn number(&self, field: &str) -> i64 {
        self.sale
            .get(field)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
    }
}
