//! Access to the two stores, and the only code that knows how they are laid
//! out: Redis holds each running sale's live state, changed only by the Lua
//! scripts in `lua/` through the typed calls in [`scripts`]; MongoDB holds
//! sales, orders and the stock event log, the durable truth.

pub mod conn;
pub mod events;
pub mod feed;
pub mod keys;
pub mod mongo;
pub mod redis;
pub mod scripts;

pub use self::{conn::Conn, mongo::Mongo, redis::Redis};

/// Both stores, as every service holds them, and the instance's own clock
/// for recording times (decisions use the Redis clock).
#[derive(Clone)]
pub struct Store {
    pub redis: Redis,
    pub mongo: Mongo,
    pub clock: crate::clock::LocalClock,
}

/// A storage failure, split by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached now; the caller answers 503.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<::redis::RedisError> for StoreError {
    fn from(err: ::redis::RedisError) -> Self {
        metrics::counter!("flashdrop_store_errors_total", "store" => "redis").increment(1);
        // Redis loading its data after a restart, a failover in progress,
        // a replica that is read-only for now, a cluster node the client
        // has no connection to (it reconnects from its seeds on a later
        // call): retry later, not a bug.
        let transient = matches!(
            err.kind(),
            ::redis::ErrorKind::Server(
                ::redis::ServerErrorKind::BusyLoading
                    | ::redis::ServerErrorKind::TryAgain
                    | ::redis::ServerErrorKind::ClusterDown
                    | ::redis::ServerErrorKind::MasterDown
                    | ::redis::ServerErrorKind::ReadOnly
            ) | ::redis::ErrorKind::ClusterConnectionNotFound
        );
        if transient
            || err.is_io_error()
            || err.is_timeout()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_cluster_error()
        {
            StoreError::Unavailable(format!("redis: {err}"))
        } else {
            StoreError::Other(anyhow::Error::new(err).context("redis"))
        }
    }
}

impl From<&mongodb::error::Error> for StoreError {
    fn from(err: &mongodb::error::Error) -> Self {
        metrics::counter!("flashdrop_store_errors_total", "store" => "mongodb").increment(1);
        if mongo::is_unreachable(err) {
            StoreError::Unavailable(format!("mongodb: {err}"))
        } else {
            StoreError::Other(anyhow::anyhow!("mongodb: {err}"))
        }
    }
}

impl From<mongodb::error::Error> for StoreError {
    fn from(err: mongodb::error::Error) -> Self {
        StoreError::from(&err)
    }
}

#[cfg(test)]
mod tests {
    use redis::{ErrorKind, RedisError, ServerErrorKind};

    use super::StoreError;

    #[test]
    fn a_redis_that_is_loading_or_failing_over_is_unavailable_not_broken() {
        for kind in [
            ServerErrorKind::BusyLoading,
            ServerErrorKind::TryAgain,
            ServerErrorKind::ClusterDown,
            ServerErrorKind::MasterDown,
            ServerErrorKind::ReadOnly,
        ] {
            let err = RedisError::from((ErrorKind::Server(kind), "transient"));
            assert!(
                matches!(StoreError::from(err), StoreError::Unavailable(_)),
                "{kind:?}"
            );
        }
        // The cluster client has no connection to the slot's node: a master
        // just killed, before the replica took over.
        let lost = RedisError::from((
            ErrorKind::ClusterConnectionNotFound,
            "Requested connection not found",
        ));
        assert!(matches!(StoreError::from(lost), StoreError::Unavailable(_)));
        let bug = RedisError::from((ErrorKind::Server(ServerErrorKind::ResponseError), "bug"));
        assert!(matches!(StoreError::from(bug), StoreError::Other(_)));
    }
}
