//! The live feed: one Redis pub/sub subscription per process, fanned out to
//! this process's WebSockets. Stock is latest-value (a `watch` per sale), so
//! a slow socket skips to the newest state and never grows memory; personal
//! events go through a small `broadcast` per sale, filtered by buyer.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use poem::web::websocket::{Message, WebSocketConfig, WebSocketStream};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use poem_openapi::types::ToJSON;

use crate::{state::AppState, store::redis::SaleKeys};

/// A frame a client has not taken in this long means the client is gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Personal events buffered per sale before a slow socket lags (and then
/// re-reads its state).
const PERSONAL_BUFFER: usize = 64;

/// Small buffers: a watcher sends almost nothing, so an idle connection
/// costs a few KiB instead of tungstenite's 128 KiB defaults.
pub fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(4096))
        .max_frame_size(Some(4096))
}

/// A change as `fd_emit` in `lua/prelude.lua` publishes it.
#[derive(Debug, Clone, Deserialize)]
pub struct Change {
    pub seq: i64,
    pub kind: String,
    pub ts: i64,
    pub available: i64,
    pub held: i64,
    pub sold: i64,
    pub status: String,
    #[serde(default)]
    pub waitlist_length: i64,
    pub user: Option<String>,
    pub rid: Option<String>,
    pub qty: Option<i64>,
    pub expires: Option<i64>,
    pub ticket: Option<i64>,
    pub position: Option<i64>,
}

#[derive(Serialize)]
struct StockFrame<'a> {
    r#type: &'static str,
    seq: i64,
    available: i64,
    held: i64,
    sold: i64,
    status: &'a str,
    waitlist_length: i64,
    ts: i64,
}

/// What the subscriber hands to sockets: a change with its stock frame
/// serialized once for every socket, or the word that changes were lost
/// (the subscription was re-established) and a fresh snapshot is due.
#[derive(Debug)]
#[expect(clippy::large_enum_variant, reason = "always shared behind an Arc")]
pub enum Update {
    Change { change: Change, stock_frame: String },
    Resync,
}

struct SaleFeed {
    stock: watch::Sender<Option<Arc<Update>>>,
    personal: broadcast::Sender<Arc<Update>>,
}

/// Per-process fan-out from the Redis subscription to sockets.
/// A socket waits on its sale's stock watch and, with a token, on the
/// personal broadcast: nothing shared by every socket of the process, so a
/// change wakes only the sockets of its sale.
#[derive(Default)]
pub struct Hub {
    sales: Mutex<HashMap<String, Arc<SaleFeed>>>,
    sockets: std::sync::atomic::AtomicI64,
}

pub struct Subscription {
    pub stock: watch::Receiver<Option<Arc<Update>>>,
    pub personal: broadcast::Receiver<Arc<Update>>,
}

impl Hub {
    pub fn subscribe(&self, sale_id: &str) -> Subscription {
        let mut sales = self.sales.lock().expect("hub lock");
        let feed = sales
            .entry(sale_id.to_owned())
            .or_insert_with(|| {
                Arc::new(SaleFeed {
                    stock: watch::channel(None).0,
                    personal: broadcast::channel(PERSONAL_BUFFER).0,
                })
            })
            .clone();
        Subscription {
            stock: feed.stock.subscribe(),
            personal: feed.personal.subscribe(),
        }
    }

    /// Messages published while the subscription was down are lost: every
    /// socket sends a fresh snapshot.
    fn resync(&self) {
        let feeds: Vec<_> = self
            .sales
            .lock()
            .expect("hub lock")
            .values()
            .cloned()
            .collect();
        for feed in feeds {
            feed.stock.send_replace(Some(Arc::new(Update::Resync)));
        }
    }

    /// Forgets a sale's feed once its last socket is gone.
    fn release(&self, sale_id: &str) {
        let mut sales = self.sales.lock().expect("hub lock");
        if sales
            .get(sale_id)
            .is_some_and(|f| f.stock.receiver_count() == 0)
        {
            sales.remove(sale_id);
        }
    }

    fn publish(&self, sale_id: &str, change: Change) {
        let feed = match self.sales.lock().expect("hub lock").get(sale_id) {
            Some(feed) => feed.clone(),
            None => return,
        };
        let stock_frame = serde_json::to_string(&StockFrame {
            r#type: "stock",
            seq: change.seq,
            available: change.available,
            held: change.held,
            sold: change.sold,
            status: &change.status,
            waitlist_length: change.waitlist_length,
            ts: change.ts,
        })
        .expect("stock frame serializes");
        let personal = change.user.is_some() || change.kind == "sale_closed";
        let update = Arc::new(Update::Change {
            change,
            stock_frame,
        });
        if personal {
            let _ = feed.personal.send(update.clone());
        }
        feed.stock.send_replace(Some(update));
    }

    /// Open WebSockets in this process.
    pub fn sockets(&self) -> i64 {
        self.sockets.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(seq: i64) -> Change {
        serde_json::from_value(json!({
            "seq": seq, "kind": "reserved", "ts": 1, "available": 100 - seq,
            "held": seq, "sold": 0, "status": "active", "user": "u"
        }))
        .unwrap()
    }

    #[test]
    fn a_socket_that_does_not_read_keeps_only_the_newest_stock_and_bounded_events() {
        let hub = Hub::default();
        let mut sub = hub.subscribe("s1");
        for seq in 1..=1000 {
            hub.publish("s1", change(seq));
        }
        // Stock is latest-value: one update waits, the newest.
        assert!(sub.stock.has_changed().unwrap());
        let newest = sub.stock.borrow_and_update().clone();
        assert!(
            matches!(newest.as_deref(), Some(Update::Change { change, .. }) if change.seq == 1000)
        );
        // Personal events are bounded: the reader learns it lagged.
        assert!(matches!(
            sub.personal.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(n)) if n == 1000 - PERSONAL_BUFFER as u64
        ));
    }

    #[test]
    fn feeds_are_dropped_with_their_last_socket_and_others_are_untouched() {
        let hub = Hub::default();
        let a = hub.subscribe("a");
        let b = hub.subscribe("b");
        hub.publish("a", change(1));
        assert!(!b.stock.has_changed().unwrap());
        drop(a);
        hub.release("a");
        assert_eq!(hub.sales.lock().unwrap().len(), 1);
        assert_eq!(sale_of_channel("fd:{abc}:live"), Some("abc"));
    }

    #[test]
    fn promotions_ahead_move_a_waiter_forward() {
        let mut place = Place {
            ticket: Some(5),
            position: Some(3),
        };
        let mut ahead = change(2);
        ahead.kind = "promoted".into();
        ahead.user = Some("other".into());
        ahead.ticket = Some(2);
        let frames = personal_frames(&ahead, "me", &mut place);
        assert_eq!(place.position, Some(2));
        assert_eq!(frames[0]["position"], 2);
        let mut behind = ahead.clone();
        behind.ticket = Some(9);
        assert!(personal_frames(&behind, "me", &mut place).is_empty());
    }
}

fn sale_of_channel(channel: &str) -> Option<&str> {
    let start = channel.find('{')? + 1;
    let end = channel[start..].find('}')? + start;
    Some(&channel[start..end])
}

/// The process's one subscription: reconnects with backoff after Redis
/// goes away, then makes every socket resync.
pub async fn run_subscriber(state: AppState, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    let mut connected_before = false;
    loop {
        let session = async {
            let client = redis::Client::open(state.settings.redis_url.as_str())?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.psubscribe("fd:{*}:live").await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = session => r,
        };
        match pubsub {
            Ok(mut pubsub) => {
                backoff = Duration::from_millis(100);
                if connected_before {
                    tracing::info!("live feed resubscribed; sockets resync");
                    state.live.resync();
                }
                connected_before = true;
                let mut messages = pubsub.on_message();
                loop {
                    let msg = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        msg = messages.next() => msg,
                    };
                    let Some(msg) = msg else { break };
                    let channel = msg.get_channel_name().to_owned();
                    let Some(sale_id) = sale_of_channel(&channel) else {
                        continue;
                    };
                    let payload: String = match msg.get_payload() {
                        Ok(p) => p,
                        Err(_) => continue,
                    };
                    match serde_json::from_str::<Change>(&payload) {
                        Ok(change) => state.live.publish(sale_id, change),
                        Err(e) => tracing::warn!(error = %e, "unreadable live message"),
                    }
                }
                tracing::warn!("live feed subscription lost; reconnecting");
            }
            Err(err) => {
                tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "live feed cannot subscribe");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// A buyer's place in line as a socket tracks it from events.
#[derive(Default)]
struct Place {
    ticket: Option<i64>,
    position: Option<i64>,
}

/// Serves one socket until the client leaves, stops answering, or the
/// server shuts down. Everything it started ends with it.
pub async fn serve_socket(
    state: AppState,
    sale_id: String,
    buyer: Option<String>,
    socket: WebSocketStream,
) {
    let hub = state.live.clone();
    hub.sockets
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let result = socket_loop(&state, &sale_id, buyer.as_deref(), socket).await;
    if let Err(reason) = result {
        tracing::debug!(%sale_id, reason, "live socket closed");
    }
    hub.sockets
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    hub.release(&sale_id);
}

async fn socket_loop(
    state: &AppState,
    sale_id: &str,
    buyer: Option<&str>,
    socket: WebSocketStream,
) -> Result<(), &'static str> {
    let (mut sink, mut stream) = socket.split();
    // Subscribe before reading the snapshot, so no change falls between.
    let mut sub = state.live.subscribe(sale_id);
    sub.stock.borrow_and_update();
    let mut last_seq = send_snapshot(state, sale_id, &mut sink).await?;
    let mut place = Place::default();
    if let Some(buyer) = buyer {
        place = read_place(state, sale_id, buyer).await;
        if let Some(position) = place.position {
            send(
                &mut sink,
                json!({"type": "waitlist", "status": "waiting", "position": position}),
            )
            .await?;
        }
    }
    // A socket silent for three ping intervals is dead.
    let mut ping = tokio::time::interval(state.settings.live_ping);
    ping.tick().await;
    let mut silent_pings = 0u32;
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(()),
                Some(Ok(_)) => silent_pings = 0,
            },
            changed = sub.stock.changed() => {
                changed.map_err(|_| "feed closed")?;
                let update = sub.stock.borrow_and_update().clone();
                match update.as_deref() {
                    Some(Update::Change { change, stock_frame }) if change.seq > last_seq => {
                        last_seq = change.seq;
                        send_text(&mut sink, stock_frame.clone()).await?;
                    }
                    Some(Update::Resync) => {
                        last_seq = send_snapshot(state, sale_id, &mut sink).await?;
                    }
                    _ => {}
                }
            }
            personal = sub.personal.recv(), if buyer.is_some() => match personal {
                Ok(update) => {
                    if let Update::Change { change, .. } = update.as_ref() {
                        for frame in personal_frames(change, buyer.unwrap_or_default(), &mut place) {
                            send(&mut sink, frame).await?;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Missed personal events: re-read the buyer's place.
                    place = read_place(state, sale_id, buyer.unwrap_or_default()).await;
                }
                Err(broadcast::error::RecvError::Closed) => return Err("feed closed"),
            },
            _ = ping.tick() => {
                silent_pings += 1;
                if silent_pings > 3 {
                    return Err("client stopped answering pings");
                }
                tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Ping(Vec::new())))
                    .await
                    .map_err(|_| "send timed out")?
                    .map_err(|_| "send failed")?;
            }
        }
    }
}

fn personal_frames(change: &Change, buyer: &str, place: &mut Place) -> Vec<serde_json::Value> {
    let mine = change.user.as_deref() == Some(buyer);
    let mut frames = Vec::new();
    match change.kind.as_str() {
        "promoted" if mine => {
            place.ticket = None;
            place.position = None;
            frames.push(json!({
                "type": "promoted",
                "seq": change.seq,
                "reservation_id": change.rid,
                "quantity": change.qty,
                "expires_at": change.expires.map(|ms| bson::DateTime::from_millis(ms).to_chrono()),
            }));
        }
        "reserved" | "confirmed" | "cancelled" | "expired" if mine => {
            let status = if change.kind == "reserved" {
                "held"
            } else {
                change.kind.as_str()
            };
            frames.push(json!({
                "type": "reservation",
                "seq": change.seq,
                "reservation_id": change.rid,
                "quantity": change.qty,
                "status": status,
            }));
        }
        "waitlist_joined" if mine => {
            place.ticket = change.ticket;
            place.position = change.position;
            frames.push(
                json!({"type": "waitlist", "status": "waiting", "position": change.position}),
            );
        }
        "waitlist_left" if mine => {
            *place = Place::default();
            frames.push(json!({"type": "waitlist", "status": "not_listed"}));
        }
        "sale_closed" => {
            frames.push(json!({"type": "sale_closed", "seq": change.seq}));
            if place.position.take().is_some() {
                frames.push(json!({"type": "waitlist", "status": "closed"}));
            }
        }
        _ => {}
    }
    // Someone ahead of this buyer left the line: one place forward.
    if !mine
        && matches!(change.kind.as_str(), "promoted" | "waitlist_left")
        && let (Some(theirs), Some(ours), Some(position)) =
            (change.ticket, place.ticket, place.position.as_mut())
        && theirs < ours
    {
        *position -= 1;
        frames.push(json!({"type": "waitlist", "status": "waiting", "position": *position}));
    }
    frames
}

async fn read_place(state: &AppState, sale_id: &str, buyer: &str) -> Place {
    let keys = SaleKeys::new(sale_id);
    let mut conn = state.redis.clone();
    let read: Result<(Option<f64>, Option<i64>), _> = redis::pipe()
        .zscore(keys.wait(), buyer)
        .zrank(keys.wait(), buyer)
        .query_async(&mut conn)
        .await;
    match read {
        Ok((ticket, rank)) => Place {
            ticket: ticket.map(|t| t as i64),
            position: rank.map(|r| r + 1),
        },
        Err(_) => Place::default(),
    }
}

type Sink = futures_util::stream::SplitSink<WebSocketStream, Message>;

async fn send_snapshot(
    state: &AppState,
    sale_id: &str,
    sink: &mut Sink,
) -> Result<i64, &'static str> {
    // Right after Redis comes back the command connection may still be
    // reconnecting: retry for a few seconds before giving up on the socket.
    let mut snapshot = Err("sale unreadable");
    for attempt in 0..8u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
        }
        snapshot = async {
            let doc = state
                .find_sale(sale_id)
                .await
                .map_err(|_| "sale unreadable")?;
            state
                .sale_snapshot(&doc)
                .await
                .map_err(|_| "sale unreadable")
        }
        .await;
        if snapshot.is_ok() {
            break;
        }
    }
    let (view, seq) = match snapshot {
        Ok(s) => s,
        Err(reason) => {
            let _ = sink
                .send(Message::Close(Some((
                    poem::web::websocket::CloseCode::Again,
                    "stores unavailable; reconnect".into(),
                ))))
                .await;
            return Err(reason);
        }
    };
    send(
        sink,
        json!({"type": "snapshot", "seq": seq, "sale": view.to_json()}),
    )
    .await?;
    Ok(seq)
}

async fn send(sink: &mut Sink, frame: serde_json::Value) -> Result<(), &'static str> {
    send_text(sink, frame.to_string()).await
}

async fn send_text(sink: &mut Sink, text: String) -> Result<(), &'static str> {
    tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Text(text)))
        .await
        .map_err(|_| "send timed out")?
        .map_err(|_| "send failed")
}
