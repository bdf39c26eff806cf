//! The process's Redis subscriptions: one connection, subscribed to the
//! channel of each sale some socket here watches. It follows the hub's
//! interest (first socket in, last socket out), reconnects with backoff
//! after Redis goes away, subscribes again to everything watched, and then
//! makes every socket resync, because what was published meanwhile is lost.
//! On a cluster, a subscription the client makes again on its own (after a
//! failover) resyncs that sale's sockets; a subscription the server ends
//! on its own (the sale's slot moved to another master) is made again on
//! the new master, and the sale's sockets resync too.

use std::{collections::HashSet, sync::Arc, time::Duration};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::hub::{Hub, Interest, Published};
use crate::{
    ids::SaleId,
    store::{
        Redis, StoreError,
        feed::{FeedEvent, LiveFeed},
    },
};

pub async fn run(
    redis: Redis,
    hub: Arc<Hub>,
    mut interest: mpsc::UnboundedReceiver<Interest>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    let mut connected_before = false;
    loop {
        let opened = tokio::select! {
            _ = shutdown.cancelled() => return,
            opened = open(&redis, &hub) => opened,
        };
        match opened {
            Ok((mut feed, mut events, mut asked)) => {
                let mut leaving = HashSet::new();
                backoff = Duration::from_millis(100);
                if connected_before {
                    tracing::info!("live feed resubscribed; sockets resync");
                    hub.resync();
                }
                connected_before = true;
                let lost = loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        wanted = interest.recv() => {
                            let Some(wanted) = wanted else { return };
                            if let Err(e) = follow(&mut feed, &hub, wanted, &mut asked, &mut leaving).await {
                                break e.to_string();
                            }
                        }
                        event = events.recv() => match event {
                            Some(FeedEvent::Change(sale, payload)) => {
                                match serde_json::from_slice::<Published>(&payload) {
                                    Ok(Published::Change(change)) => hub.publish(&sale, change),
                                    Ok(Published::Lobby(figures)) => hub.publish_lobby(&sale, figures),
                                    Ok(Published::Joined(joined)) => hub.publish_joined(&sale, joined),
                                    Err(e) => tracing::warn!(error = %e, "unreadable live message"),
                                }
                            }
                            // Made again without being asked: what was
                            // published in between is lost.
                            Some(FeedEvent::Subscribed(sale)) => {
                                if !asked.remove(&sale) && hub.is_watched(&sale) {
                                    tracing::info!(sale_id = %sale, "live feed resubscribed a sale; its sockets resync");
                                    hub.resync_sale(&sale);
                                }
                            }
                            // Ended by the server: the slot moved.
                            Some(FeedEvent::Unsubscribed(sale)) => {
                                if !leaving.remove(&sale) && hub.is_watched(&sale) {
                                    tracing::info!(sale_id = %sale, "live feed lost a sale's subscription (slot moved?); subscribing again");
                                    asked.insert(sale.clone());
                                    if let Err(e) = feed.watch(&sale).await {
                                        break e.to_string();
                                    }
                                    hub.resync_sale(&sale);
                                }
                            }
                            Some(FeedEvent::Lost) | None => break "connection lost".to_owned(),
                        },
                    }
                };
                for sale in hub.watched() {
                    hub.mark_subscribed(&sale, false);
                }
                tracing::warn!(reason = lost, "live feed subscription lost; reconnecting");
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

/// A new connection, subscribed to every sale sockets watch now, with the
/// subscriptions asked for and not yet confirmed.
async fn open(
    redis: &Redis,
    hub: &Hub,
) -> Result<
    (
        LiveFeed,
        mpsc::UnboundedReceiver<FeedEvent>,
        HashSet<SaleId>,
    ),
    StoreError,
> {
    let (mut feed, events) = redis.live_feed().await?;
    let mut asked = HashSet::new();
    for sale in hub.watched() {
        asked.insert(sale.clone());
        feed.watch(&sale).await?;
        hub.mark_subscribed(&sale, true);
    }
    Ok((feed, events, asked))
}

/// Brings one sale's subscription in line with the hub: the hub's present
/// state decides, so a leave overtaken by a new watcher leaves nothing.
async fn follow(
    feed: &mut LiveFeed,
    hub: &Hub,
    wanted: Interest,
    asked: &mut HashSet<SaleId>,
    leaving: &mut HashSet<SaleId>,
) -> Result<(), StoreError> {
    match wanted {
        Interest::Watch(sale) if hub.is_watched(&sale) => {
            asked.insert(sale.clone());
            feed.watch(&sale).await?;
            hub.mark_subscribed(&sale, true);
        }
        Interest::Leave(sale) if !hub.is_watched(&sale) => {
            leaving.insert(sale.clone());
            feed.unwatch(&sale).await?
        }
        Interest::Watch(_) | Interest::Leave(_) => {}
    }
    Ok(())
}
