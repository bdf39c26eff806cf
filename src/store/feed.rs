//! The live feed's own Redis connection: it subscribes to the channel of
//! each sale this instance has sockets for, and nothing else, so a change
//! to a sale nobody here watches costs this instance nothing. Messages and
//! the loss of the connection arrive as [`FeedEvent`]s.

use redis::{AsyncConnectionConfig, PushInfo, PushKind, Value, aio::MultiplexedConnection};
use tokio::sync::mpsc;

use super::{Redis, StoreError, keys::SaleKeys};
use crate::ids::SaleId;

/// What the feed's connection hands over.
#[derive(Debug)]
pub enum FeedEvent {
    /// A change of a watched sale, as its script published it.
    Change(SaleId, Vec<u8>),
    /// The connection is gone: whatever was published meanwhile is lost.
    Lost,
}

/// One subscription connection.
pub struct LiveFeed {
    conn: MultiplexedConnection,
}

impl Redis {
    /// Opens a subscription connection (RESP3, messages pushed to the
    /// returned receiver).
    pub async fn live_feed(
        &self,
    ) -> Result<(LiveFeed, mpsc::UnboundedReceiver<FeedEvent>), StoreError> {
        let (pushes, mut pushed) = mpsc::unbounded_channel::<PushInfo>();
        let (events, received) = mpsc::unbounded_channel();
        let info = redis::IntoConnectionInfo::into_connection_info(&*self.url)?;
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(resp3))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(std::time::Duration::from_secs(2)))
            .set_push_sender(pushes);
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        tokio::spawn(async move {
            while let Some(push) = pushed.recv().await {
                let event = match push.kind {
                    PushKind::Disconnection => FeedEvent::Lost,
                    PushKind::Message | PushKind::SMessage => match message(push.data) {
                        Some((sale, payload)) => FeedEvent::Change(sale, payload),
                        None => continue,
                    },
                    _ => continue,
                };
                let lost = matches!(event, FeedEvent::Lost);
                if events.send(event).is_err() || lost {
                    return;
                }
            }
            // The connection was dropped without a word: that is a loss too.
            let _ = events.send(FeedEvent::Lost);
        });
        Ok((LiveFeed { conn }, received))
    }
}

/// The sale and payload of a pushed `message [channel, payload]`.
fn message(data: Vec<Value>) -> Option<(SaleId, Vec<u8>)> {
    let mut data = data.into_iter();
    let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
        (data.next(), data.next())
    else {
        return None;
    };
    let sale = super::keys::sale_of_channel(std::str::from_utf8(&channel).ok()?)?;
    Some((sale, payload))
}

impl LiveFeed {
    /// Starts receiving the sale's changes; they flow once this returns.
    pub async fn watch(&mut self, sale: &SaleId) -> Result<(), StoreError> {
        self.conn.subscribe(SaleKeys::new(sale).channel()).await?;
        Ok(())
    }

    pub async fn unwatch(&mut self, sale: &SaleId) -> Result<(), StoreError> {
        self.conn.unsubscribe(SaleKeys::new(sale).channel()).await?;
        Ok(())
    }
}
