//! The live feed's own Redis connection: it subscribes to the channel of
//! each sale this instance has sockets for, and nothing else, so a change
//! to a sale nobody here watches costs this instance nothing. On a single
//! node that is a plain channel; on a cluster, the sale's shard channel on
//! the master that serves the sale's slot. Messages, (re)subscriptions and
//! the loss of the connection arrive as [`FeedEvent`]s.

use std::time::Duration;

use redis::{
    AsyncConnectionConfig, ProtocolVersion, PushInfo, PushKind, Value, aio::MultiplexedConnection,
    cluster_async::ClusterConnection,
};
use tokio::sync::mpsc;

use super::{Redis, StoreError, keys::SaleKeys};
use crate::ids::SaleId;

/// What the feed's connection hands over.
#[derive(Debug)]
pub enum FeedEvent {
    /// A change of a watched sale, as its script published it.
    Change(SaleId, Vec<u8>),
    /// Redis confirmed a subscription to the sale's channel: one asked for,
    /// or one the cluster client made again after a failover or a slot
    /// moving (changes published in between are lost).
    Subscribed(SaleId),
    /// Redis ended a subscription (asked for, or the slot moved away).
    Unsubscribed(SaleId),
    /// The connection is gone: whatever was published meanwhile is lost.
    Lost,
}

/// One subscription connection.
pub enum LiveFeed {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Redis {
    /// Opens a subscription connection (RESP3, messages pushed to the
    /// returned receiver).
    pub async fn live_feed(
        &self,
    ) -> Result<(LiveFeed, mpsc::UnboundedReceiver<FeedEvent>), StoreError> {
        let (pushes, pushed) = mpsc::unbounded_channel::<PushInfo>();
        let feed = if self.is_cluster() {
            let client = super::redis::cluster_client(&self.nodes)
                .use_protocol(ProtocolVersion::RESP3)
                .push_sender(pushes)
                .build()?;
            LiveFeed::Cluster(client.get_async_connection().await?)
        } else {
            let info = redis::IntoConnectionInfo::into_connection_info(self.nodes[0].as_str())?;
            let resp3 = info
                .redis_settings()
                .clone()
                .set_protocol(ProtocolVersion::RESP3);
            let client = redis::Client::open(info.set_redis_settings(resp3))?;
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_push_sender(pushes);
            LiveFeed::Single(
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?,
            )
        };
        Ok((feed, translate(pushed)))
    }
}

/// Turns the driver's pushes into feed events, until the connection ends.
fn translate(mut pushed: mpsc::UnboundedReceiver<PushInfo>) -> mpsc::UnboundedReceiver<FeedEvent> {
    let (events, received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(push) = pushed.recv().await {
            let channel_sale = |data: &[Value]| match data.first() {
                Some(Value::BulkString(channel)) => {
                    super::keys::sale_of_channel(std::str::from_utf8(channel).ok()?)
                }
                _ => None,
            };
            let event = match push.kind {
                PushKind::Disconnection => FeedEvent::Lost,
                PushKind::Message | PushKind::SMessage => match message(push.data) {
                    Some((sale, payload)) => FeedEvent::Change(sale, payload),
                    None => continue,
                },
                PushKind::Subscribe | PushKind::SSubscribe => match channel_sale(&push.data) {
                    Some(sale) => FeedEvent::Subscribed(sale),
                    None => continue,
                },
                PushKind::Unsubscribe | PushKind::SUnsubscribe => match channel_sale(&push.data) {
                    Some(sale) => FeedEvent::Unsubscribed(sale),
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
    received
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
        let channel = SaleKeys::new(sale).channel();
        match self {
            LiveFeed::Single(c) => c.subscribe(channel).await?,
            LiveFeed::Cluster(c) => c.ssubscribe(channel).await?,
        }
        Ok(())
    }

    pub async fn unwatch(&mut self, sale: &SaleId) -> Result<(), StoreError> {
        let channel = SaleKeys::new(sale).channel();
        match self {
            LiveFeed::Single(c) => c.unsubscribe(channel).await?,
            LiveFeed::Cluster(c) => c.sunsubscribe(channel).await?,
        }
        Ok(())
    }
}
