//! The process's one Redis subscription to every sale's live channel. It
//! reconnects with backoff after Redis goes away, then makes every socket
//! resync, because what was published meanwhile is lost.

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::hub::{Change, Hub};
use crate::store::Redis;

pub async fn run(redis: Redis, hub: Arc<Hub>, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    let mut connected_before = false;
    loop {
        let messages = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = redis.live_messages() => r,
        };
        match messages {
            Ok(messages) => {
                backoff = Duration::from_millis(100);
                if connected_before {
                    tracing::info!("live feed resubscribed; sockets resync");
                    hub.resync();
                }
                connected_before = true;
                let mut messages = std::pin::pin!(messages);
                loop {
                    let msg = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        msg = messages.next() => msg,
                    };
                    let Some((sale, payload)) = msg else { break };
                    match serde_json::from_str::<Change>(&payload) {
                        Ok(change) => hub.publish(&sale, change),
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
