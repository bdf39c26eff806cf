//! Access to the two stores: Redis (live state, changed only by the Lua
//! scripts in `lua/`) and MongoDB (sales and orders, the durable truth).

pub mod mongo;
pub mod redis;

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
        if err.is_io_error()
            || err.is_timeout()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_cluster_error()
        {
            metrics::counter!("flashdrop_store_errors_total", "store" => "redis").increment(1);
            StoreError::Unavailable(format!("redis: {err}"))
        } else {
            metrics::counter!("flashdrop_store_errors_total", "store" => "redis").increment(1);
            StoreError::Other(anyhow::Error::new(err).context("redis"))
        }
    }
}

impl From<mongodb::error::Error> for StoreError {
    fn from(err: mongodb::error::Error) -> Self {
        metrics::counter!("flashdrop_store_errors_total", "store" => "mongodb").increment(1);
        if mongo::is_unreachable(&err) {
            StoreError::Unavailable(format!("mongodb: {err}"))
        } else {
            StoreError::Other(anyhow::Error::new(err).context("mongodb"))
        }
    }
}
