//! Streams in Redis copied into MongoDB through a consumer group, so
//! several instances share the copying: what nobody has read, what a dead
//! instance left unacknowledged, and trimming what is durable. Each sale's
//! change stream is one; a lobby's log (`lobby/recorder.rs`) another.

use redis::{
    AsyncCommands, Value,
    streams::{
        StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamReadOptions, StreamReadReply,
    },
};

use super::{StoreError, keys::SaleKeys, mongo::StockEventDoc, redis::Redis};
use crate::ids::SaleId;

const GROUP: &str = "persist";

/// Entries read from a sale's stream: their ids, to acknowledge, and the
/// changes they hold, in stream order (an entry that does not read as a
/// change has an id and no change).
pub struct StreamEntries {
    ids: Vec<String>,
    pub events: Vec<StockEventDoc>,
}

impl StreamEntries {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

impl Redis {
    /// Creates the sale's consumer group (and stream) unless it exists.
    pub async fn ensure_event_group(&self, sale: &SaleId) -> Result<(), StoreError> {
        self.ensure_group(&SaleKeys::new(sale).events(), GROUP)
            .await
    }

    /// Entries another consumer read but did not acknowledge within
    /// `idle_ms`, now this consumer's.
    pub async fn claim_stale_events(
        &self,
        sale: &SaleId,
        consumer: &str,
        idle_ms: u64,
        count: usize,
    ) -> Result<StreamEntries, StoreError> {
        let ids = self
            .claim_stale(
                &SaleKeys::new(sale).events(),
                GROUP,
                consumer,
                idle_ms,
                count,
            )
            .await?;
        Ok(entries(sale, ids))
    }

    /// Entries nobody has read yet, now this consumer's.
    pub async fn read_new_events(
        &self,
        sale: &SaleId,
        consumer: &str,
        count: usize,
    ) -> Result<StreamEntries, StoreError> {
        let ids = self
            .read_new(&SaleKeys::new(sale).events(), GROUP, consumer, count)
            .await?;
        Ok(entries(sale, ids))
    }

    /// Acknowledges entries that are durable in MongoDB and trims them.
    pub async fn ack_events(&self, sale: &SaleId, done: &StreamEntries) -> Result<(), StoreError> {
        let ids: Vec<&str> = done.ids.iter().map(String::as_str).collect();
        self.ack(&SaleKeys::new(sale).events(), GROUP, &ids).await
    }

    /// Creates a stream's consumer group (and the stream) unless it exists.
    pub async fn ensure_group(&self, stream: &str, group: &str) -> Result<(), StoreError> {
        let created: Result<(), redis::RedisError> =
            self.conn().xgroup_create_mkstream(stream, group, "0").await;
        match created {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Entries of a stream another consumer of `group` read but did not
    /// acknowledge within `idle_ms`, now `consumer`'s.
    pub async fn claim_stale(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        idle_ms: u64,
        count: usize,
    ) -> Result<Vec<StreamId>, StoreError> {
        let claimed: StreamAutoClaimReply = self
            .conn()
            .xautoclaim_options(
                stream,
                group,
                consumer,
                idle_ms,
                "0-0",
                StreamAutoClaimOptions::default().count(count),
            )
            .await?;
        Ok(claimed.claimed)
    }

    /// Entries of a stream nobody in `group` has read yet, now `consumer`'s.
    pub async fn read_new(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<StreamId>, StoreError> {
        let read: Option<StreamReadReply> = self
            .conn()
            .xread_options(
                &[stream],
                &[">"],
                &StreamReadOptions::default()
                    .group(group, consumer)
                    .count(count),
            )
            .await?;
        Ok(read
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .collect())
    }

    /// Acknowledges entries that are durable elsewhere and trims them.
    pub async fn ack(&self, stream: &str, group: &str, ids: &[&str]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        redis::pipe()
            .xack(stream, group, ids)
            .ignore()
            .xdel(stream, ids)
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await?;
        Ok(())
    }
}

fn entries(sale: &SaleId, read: Vec<StreamId>) -> StreamEntries {
    let mut out = StreamEntries {
        ids: Vec::with_capacity(read.len()),
        events: Vec::with_capacity(read.len()),
    };
    for e in read {
        out.events.extend(event_of(sale, &e));
        out.ids.push(e.id);
    }
    out
}

pub fn field_str(entry: &StreamId, name: &str) -> Option<String> {
    match entry.map.get(name)? {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

pub fn field_i64(entry: &StreamId, name: &str) -> Option<i64> {
    field_str(entry, name)?.parse().ok()
}

/// A change as `fd_emit` in `lua/prelude.lua` encodes it, the fields the
/// log keeps.
#[derive(serde::Deserialize)]
struct Emitted {
    seq: i64,
    kind: String,
    ts: i64,
    #[serde(default)]
    available: i64,
    #[serde(default)]
    held: i64,
    #[serde(default)]
    sold: i64,
    qty: Option<i64>,
    user: Option<String>,
    rid: Option<String>,
    ticket: Option<i64>,
    #[serde(default)]
    log_n: Option<i64>,
    #[serde(default)]
    epoch: Option<String>,
}

/// The stream entry `fd_emit` in `lua/prelude.lua` wrote, as a document:
/// one JSON field `e`, or (entries an older version wrote before an
/// upgrade) one stream field per change field.
fn event_of(sale: &SaleId, e: &StreamId) -> Option<StockEventDoc> {
    let emitted = match e.map.get("e") {
        Some(Value::BulkString(json)) => serde_json::from_slice(json).ok()?,
        _ => Emitted {
            seq: field_i64(e, "seq")?,
            kind: field_str(e, "kind")?,
            ts: field_i64(e, "ts")?,
            available: field_i64(e, "available").unwrap_or(0),
            held: field_i64(e, "held").unwrap_or(0),
            sold: field_i64(e, "sold").unwrap_or(0),
            qty: field_i64(e, "qty"),
            user: field_str(e, "user"),
            rid: field_str(e, "rid"),
            ticket: field_i64(e, "ticket"),
            log_n: None,
            epoch: None,
        },
    };
    let Emitted { seq, kind, ts, .. } = emitted;
    Some(StockEventDoc {
        sale_id: sale.to_string(),
        seq,
        kind,
        quantity: emitted.qty,
        buyer: emitted.user,
        reservation_id: emitted.rid,
        ticket: emitted.ticket,
        restamped_from: None,
        log_n: emitted.log_n,
        batch: 0,
        epoch: emitted.epoch.filter(|e| !e.is_empty()),
        available: emitted.available,
        held: emitted.held,
        sold: emitted.sold,
        at: bson::DateTime::from_millis(ts),
        second: ts.div_euclid(1000),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fields: &[(&str, &str)]) -> StreamId {
        StreamId {
            id: "1-0".into(),
            map: fields
                .iter()
                .map(|(k, v)| (k.to_string(), Value::BulkString(v.as_bytes().to_vec())))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_change_reads_the_same_from_one_json_field_and_from_an_older_versions_fields() {
        let sale = SaleId::new();
        let json = entry(&[(
            "e",
            r#"{"seq":7,"kind":"reserved","ts":1700000000123,"available":93,"held":7,"sold":0,"total":100,"status":"active","waitlist_length":0,"epoch":"x","rid":"r1","user":"ann","qty":2}"#,
        )]);
        let fields = entry(&[
            ("seq", "7"),
            ("kind", "reserved"),
            ("ts", "1700000000123"),
            ("available", "93"),
            ("held", "7"),
            ("sold", "0"),
            ("waitlist_length", "0"),
            ("rid", "r1"),
            ("user", "ann"),
            ("qty", "2"),
        ]);
        let (a, b) = (
            event_of(&sale, &json).unwrap(),
            event_of(&sale, &fields).unwrap(),
        );
        assert_eq!(
            bson::to_document(&a).unwrap(),
            bson::to_document(&b).unwrap()
        );
        assert_eq!((a.seq, a.quantity, a.second), (7, Some(2), 1_700_000_000));
        // The copy that made it, known from the JSON field only, and not
        // stored.
        assert_eq!((a.epoch.as_deref(), b.epoch), (Some("x"), None));
        assert!(!bson::to_document(&a).unwrap().contains_key("epoch"));
        assert!(event_of(&sale, &entry(&[("e", "not json")])).is_none());
    }
}
