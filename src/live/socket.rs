//! One WebSocket of the live feed: a snapshot, then a stock frame per
//! change, and for a buyer with a token their own events. One task per
//! socket selects over the client, the hub and a ping timer, so a closed
//! client ends everything it started.

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use poem::web::websocket::{Message, WebSocketConfig, WebSocketStream};
use poem_openapi::types::ToJSON;
use serde_json::json;
use tokio::sync::broadcast;

use super::{
    admission::Permit,
    hub::{Change, Hub, Update},
    lobby::{LobbyTrack, Update as LobbyUpdate},
    outlet::{Out, Outlet, Sending},
};
use crate::{ids::SaleId, lobby::Lobby, sales::Sales, store::redis::LinePlace, waitlist::Waitlist};

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

/// What a socket reads from and how it paces itself.
#[derive(Clone)]
pub struct LiveContext {
    pub sales: Sales,
    pub lobby: Lobby,
    pub waitlist: Waitlist,
    pub hub: Arc<Hub>,
    /// How often sockets are pinged; three unanswered pings drop one.
    pub ping: Duration,
    /// A frame a client has not taken in this long means the client is gone.
    pub send_timeout: Duration,
    /// The instance's stop: sockets close with 1012 when it drains.
    pub stopping: crate::stopping::Stopping,
}

/// How long a new sale's first socket waits for the Redis subscription.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The buyer behind a socket opened with a token.
pub struct Watcher {
    pub buyer: String,
    /// When the token expires (Unix seconds): the socket ends then.
    pub token_expires: u64,
}

/// Serves one socket until the client leaves, stops answering, its token
/// expires, or the server shuts down. The permit holds its place.
pub async fn serve(
    ctx: LiveContext,
    sale: SaleId,
    watcher: Option<Watcher>,
    permit: Permit,
    socket: WebSocketStream,
) {
    if let Err(reason) = socket_loop(&ctx, &sale, watcher.as_ref(), socket).await {
        tracing::debug!(sale_id = %sale, reason, "live socket closed");
    }
    drop(permit);
    ctx.hub.release(&sale);
}

async fn socket_loop(
    ctx: &LiveContext,
    sale: &SaleId,
    watcher: Option<&Watcher>,
    socket: WebSocketStream,
) -> Result<(), &'static str> {
    let buyer = watcher.map(|w| w.buyer.as_str());
    let token_left = watcher.map(|w| {
        // A token's expiry is the instance's to judge, as the JWT check is.
        let now = crate::clock::LocalClock::default().now().timestamp().max(0) as u64;
        Duration::from_secs(w.token_expires.saturating_sub(now))
    });
    let token_expiry = tokio::time::sleep(token_left.unwrap_or(Duration::MAX / 4));
    tokio::pin!(token_expiry);
    // The reads a socket makes now and then (a snapshot, its buyer's place,
    // the lobby) are boxed: an idle socket's task then holds only what it
    // waits on, not room for the largest of them.
    let (sink, mut stream) = socket.split();
    let outlet = Outlet::new(Out {
        sink,
        timeout: ctx.send_timeout,
    });
    // Subscribe before reading the snapshot, so no change falls between.
    let mut sub = ctx.hub.subscribe(sale);
    let subscribed = tokio::time::timeout(SUBSCRIBE_TIMEOUT, sub.subscribed()).await;
    if !matches!(subscribed, Ok(true)) {
        outlet.sending.lock().await.out.close_unavailable().await;
        return Err("no subscription to the sale's changes");
    }
    sub.stock.borrow_and_update();
    // The sale's writers send its stock frames once the snapshot is out; a
    // change they cannot hand over wakes this task.
    sub.join_writers(&outlet);
    Box::pin(send_snapshot(ctx, sale, &mut *outlet.sending.lock().await)).await?;
    let mut place = LinePlace::default();
    if let Some(buyer) = buyer {
        // A buyer promoted while away hears of it first thing, as one whose
        // personal events overflowed does.
        place = Box::pin(ctx.waitlist.line_place(sale, buyer)).await;
        let frames = Box::pin(catch_up(ctx, sale, buyer, &place)).await;
        send_frames(&outlet, frames).await?;
    }
    // A lobby sale: its figures for everyone, the buyer's own place.
    let mut lobby = LobbyTrack::default();
    let frames = Box::pin(lobby.read(&ctx.lobby, sale, buyer)).await;
    send_frames(&outlet, frames).await?;
    // A buyer who joins the lobby after connecting hears of it here.
    let mut join = buyer.filter(|_| lobby.active).map(|b| sub.watch_join(b));
    // A socket silent for three ping intervals is dead.
    let mut ping = tokio::time::interval(ctx.ping);
    ping.tick().await;
    let mut silent_pings = 0u32;
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(()),
                Some(Ok(_)) => silent_pings = 0,
            },
            // What the sale's writer could not hand over: a frame the
            // socket could not take at once, a rebuilt sale, a resync.
            () = outlet.wake.notified() => {
                let fresh = sub.stock.has_changed().map_err(|_| "feed closed")?;
                let update = sub.stock.borrow_and_update().clone();
                let sending = &mut *outlet.sending.lock().await;
                sending.out.flush().await?;
                match update.as_deref() {
                    // The sale was rebuilt: what this socket has is void.
                    Some(Update::Change { change, .. }) if change.epoch != sending.epoch => {
                        sending.out.json(json!({"type": "restored", "seq": change.seq})).await?;
                        start_over(ctx, sale, buyer, &mut lobby, sending).await?;
                    }
                    Some(Update::Change { change, stock_frame }) if change.seq > sending.last_seq => {
                        sending.last_seq = change.seq;
                        sending.out.text(stock_frame.clone()).await?;
                    }
                    Some(Update::Resync) if fresh => {
                        start_over(ctx, sale, buyer, &mut lobby, sending).await?;
                    }
                    _ => {}
                }
            }
            changed = sub.lobby.changed(), if lobby.active => {
                changed.map_err(|_| "feed closed")?;
                let update = sub.lobby.borrow_and_update().clone();
                let sending = &mut *outlet.sending.lock().await;
                // Figures of an older copy of the sale: its rebuild resyncs.
                if let Some(update) = update.filter(|u| u.figures.epoch == sending.epoch) {
                    sending.out.text(update.frame.clone()).await?;
                    if let Some(buyer) = buyer {
                        let frame = match lobby.figures(&update.figures) {
                            LobbyUpdate::Frame(frame) => Some(frame),
                            LobbyUpdate::Reread => Box::pin(lobby.reread(&ctx.lobby, sale, buyer)).await,
                            LobbyUpdate::None => None,
                        };
                        if let Some(frame) = frame {
                            sending.out.json(frame).await?;
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(lobby.held_until().unwrap_or_else(tokio::time::Instant::now)), if lobby.held_until().is_some() => {
                let frames = lobby.release().into_iter().collect();
                send_frames(&outlet, frames).await?;
            }
            Some(Ok(())) = async { Some(join.as_mut()?.joined.changed().await) }, if join.is_some() => {
                let frames = Box::pin(lobby.reread(&ctx.lobby, sale, buyer.unwrap_or_default())).await.into_iter().collect();
                send_frames(&outlet, frames).await?;
            }
            personal = sub.personal.recv(), if buyer.is_some() => match personal {
                Ok(update) => {
                    if let Update::Change { change, .. } = update.as_ref() {
                        let frames = personal_frames(change, buyer.unwrap_or_default(), &mut place);
                        send_frames(&outlet, frames).await?;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Missed personal events: catch up from Redis.
                    let buyer = buyer.unwrap_or_default();
                    place = Box::pin(ctx.waitlist.line_place(sale, buyer)).await;
                    let mut frames = Box::pin(catch_up(ctx, sale, buyer, &place)).await;
                    if lobby.active {
                        frames.extend(Box::pin(lobby.reread(&ctx.lobby, sale, buyer)).await);
                    }
                    send_frames(&outlet, frames).await?;
                }
                Err(broadcast::error::RecvError::Closed) => return Err("feed closed"),
            },
            // The instance is stopping: the client reconnects elsewhere and
            // resyncs from a snapshot there.
            _ = ctx.stopping.closing() => {
                let _ = outlet.sending.lock().await.out
                    .send(Message::Close(Some((
                        poem::web::websocket::CloseCode::Restart,
                        "service restart".into(),
                    ))))
                    .await;
                return Ok(());
            }
            _ = &mut token_expiry, if token_left.is_some() => {
                let _ = outlet.sending.lock().await.out
                    .send(Message::Close(Some((
                        poem::web::websocket::CloseCode::Policy,
                        "token expired".into(),
                    ))))
                    .await;
                return Ok(());
            }
            _ = ping.tick() => {
                silent_pings += 1;
                if silent_pings > 3 {
                    return Err("client stopped answering pings");
                }
                outlet.sending.lock().await.out.send(Message::Ping(Vec::new())).await?;
            }
        }
    }
}

/// Sends frames in order, holding the socket's sending half once.
async fn send_frames(outlet: &Outlet, frames: Vec<serde_json::Value>) -> Result<(), &'static str> {
    if frames.is_empty() {
        return Ok(());
    }
    let mut sending = outlet.sending.lock().await;
    for frame in frames {
        sending.out.json(frame).await?;
    }
    Ok(())
}

/// What a buyer who connects, or whose personal events overflowed, must not
/// miss: a live promotion, and their place in line.
async fn catch_up(
    ctx: &LiveContext,
    sale: &SaleId,
    buyer: &str,
    place: &LinePlace,
) -> Vec<serde_json::Value> {
    let mut frames = Vec::new();
    if let Ok(Some(promotion)) = ctx.waitlist.live_promotion(sale, buyer).await {
        frames.push(json!({
            "type": "promoted",
            "reservation_id": promotion.reservation_id,
            "quantity": promotion.quantity,
            "expires_at": promotion.expires_at,
        }));
    }
    if let Some(position) = place.position {
        frames.push(json!({"type": "waitlist", "status": "waiting", "position": position}));
    }
    frames
}

/// The frames a buyer's own change (or a change ahead of them in line)
/// means for them.
fn personal_frames(change: &Change, buyer: &str, place: &mut LinePlace) -> Vec<serde_json::Value> {
    let mine = change.user.as_deref() == Some(buyer);
    let mut frames = Vec::new();
    match change.kind.as_str() {
        "promoted" if mine => {
            *place = LinePlace::default();
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
            *place = LinePlace::default();
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

/// Starts the socket over: a fresh snapshot and, on a lobby sale, the
/// lobby's figures with the buyer's place.
async fn start_over(
    ctx: &LiveContext,
    sale: &SaleId,
    buyer: Option<&str>,
    lobby: &mut LobbyTrack,
    sending: &mut Sending,
) -> Result<(), &'static str> {
    Box::pin(send_snapshot(ctx, sale, sending)).await?;
    if lobby.active {
        for frame in Box::pin(lobby.read(&ctx.lobby, sale, buyer)).await {
            sending.out.json(frame).await?;
        }
    }
    Ok(())
}

/// Sends a fresh snapshot; the socket's stock is then the snapshot's.
async fn send_snapshot(
    ctx: &LiveContext,
    sale: &SaleId,
    sending: &mut Sending,
) -> Result<(), &'static str> {
    // Right after Redis comes back the command connection may still be
    // reconnecting: retry for a few seconds before giving up on the socket.
    let mut snapshot = ctx.sales.snapshot(sale).await;
    for attempt in 1..8u32 {
        if snapshot.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
        snapshot = ctx.sales.snapshot(sale).await;
    }
    let Ok((view, seq, epoch)) = snapshot else {
        sending.out.close_unavailable().await;
        return Err("sale unreadable");
    };
    sending
        .out
        .json(json!({"type": "snapshot", "seq": seq, "sale": view.to_json()}))
        .await?;
    (sending.last_seq, sending.epoch, sending.ready) = (seq, epoch, true);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::hub::tests::change;

    #[test]
    fn promotions_ahead_move_a_waiter_forward() {
        let mut place = LinePlace {
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
