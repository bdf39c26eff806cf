//! The stock event log: copies every change from each sale's Redis stream
//! into MongoDB `stock_events`. A consumer group lets several instances share
//! the work; an entry is acknowledged and deleted from Redis only once it is
//! durable, and entries a dead instance had claimed are taken over.

use std::{collections::HashSet, time::Duration};

use redis::{
    AsyncCommands, Value,
    streams::{StreamAutoClaimOptions, StreamId, StreamReadOptions, StreamReadReply},
};
use tokio_util::sync::CancellationToken;

use crate::{
    state::AppState,
    store::{
        StoreError,
        mongo::{StockEventDoc, is_duplicate_key},
        redis::SaleKeys,
    },
};

const GROUP: &str = "persist";
const BATCH: usize = 500;
/// An entry claimed this long ago by a consumer that never acknowledged it
/// belongs to a dead instance.
const CLAIM_IDLE_MS: u64 = 30_000;
const PASS_EVERY: Duration = Duration::from_millis(250);

pub async fn run(state: AppState, shutdown: CancellationToken) {
    let consumer = format!("{}-{}", std::process::id(), crate::sale::new_id());
    let mut groups: HashSet<String> = HashSet::new();
    let mut backoff = Duration::from_millis(100);
    loop {
        let pass = async {
            for sale in state.recent_sales().await? {
                persist_sale(&state, &sale.id, &consumer, &mut groups).await?;
            }
            Ok::<_, StoreError>(())
        };
        let wait = match pass.await {
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
pub async fn persist_sale(
    state: &AppState,
    sale_id: &str,
    consumer: &str,
    groups: &mut HashSet<String>,
) -> Result<usize, StoreError> {
    let keys = SaleKeys::new(sale_id);
    let stream = keys.events();
    let mut conn = state.redis.clone();
    if !groups.contains(sale_id) {
        let created: Result<(), redis::RedisError> =
            conn.xgroup_create_mkstream(&stream, GROUP, "0").await;
        match created {
            Ok(()) => {}
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(e.into()),
        }
        groups.insert(sale_id.to_owned());
    }
    let mut written = 0;
    // First what a dead instance left claimed, then what nobody has read.
    let claimed: redis::streams::StreamAutoClaimReply = conn
        .xautoclaim_options(
            &stream,
            GROUP,
            consumer,
            CLAIM_IDLE_MS,
            "0-0",
            StreamAutoClaimOptions::default().count(BATCH),
        )
        .await?;
    written += store(state, sale_id, &stream, claimed.claimed).await?;
    loop {
        let read: Option<StreamReadReply> = conn
            .xread_options(
                &[&stream],
                &[">"],
                &StreamReadOptions::default()
                    .group(GROUP, consumer)
                    .count(BATCH),
            )
            .await?;
        let entries: Vec<StreamId> = read
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .collect();
        let n = entries.len();
        written += store(state, sale_id, &stream, entries).await?;
        if n < BATCH {
            return Ok(written);
        }
    }
}

fn field_str(entry: &StreamId, name: &str) -> Option<String> {
    match entry.map.get(name)? {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn field_i64(entry: &StreamId, name: &str) -> Option<i64> {
    field_str(entry, name)?.parse().ok()
}

/// Writes entries to MongoDB, then acknowledges and deletes them in Redis.
async fn store(
    state: &AppState,
    sale_id: &str,
    stream: &str,
    entries: Vec<StreamId>,
) -> Result<usize, StoreError> {
    if entries.is_empty() {
        return Ok(0);
    }
    let docs: Vec<StockEventDoc> = entries
        .iter()
        .filter_map(|e| {
            let ts = field_i64(e, "ts")?;
            Some(StockEventDoc {
                sale_id: sale_id.to_owned(),
                seq: field_i64(e, "seq")?,
                kind: field_str(e, "kind")?,
                quantity: field_i64(e, "qty"),
                buyer: field_str(e, "user"),
                reservation_id: field_str(e, "rid"),
                available: field_i64(e, "available").unwrap_or(0),
                held: field_i64(e, "held").unwrap_or(0),
                sold: field_i64(e, "sold").unwrap_or(0),
                at: bson::DateTime::from_millis(ts),
                second: ts.div_euclid(1000),
            })
        })
        .collect();
    for doc in &docs {
        metrics::counter!("flashdrop_stock_events_total", "kind" => doc.kind.clone()).increment(1);
        if doc.kind == "promoted" {
            metrics::counter!("flashdrop_promotions_total").increment(1);
        }
    }
    match state
        .mongo
        .stock_events
        .insert_many(&docs)
        .ordered(false)
        .await
    {
        Ok(_) => {}
        // Written before (a crash between the write and the ack): fine.
        Err(e) if is_duplicate_key(&e) => {}
        Err(e) => return Err(e.into()),
    }
    let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
    let mut conn = state.redis.clone();
    redis::pipe()
        .xack(stream, GROUP, &ids)
        .ignore()
        .xdel(stream, &ids)
        .ignore()
        .query_async::<()>(&mut conn)
        .await?;
    Ok(entries.len())
}
