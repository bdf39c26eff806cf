//! Recovery: when Redis has lost a running sale (a restart, a flush), the
//! next request or the reaper rebuilds its live state from MongoDB. Units
//! in orders stay sold, every other unit is free, buyers' bought counts
//! come back; holds and the waiting list Redis lost are gone (their units
//! are free again, waiters read `not_listed` and may join again). One
//! caller rebuilds under a lock while the others wait for it.

use std::{future::Future, time::Duration};

use crate::{
    error::ApiError,
    ids::SaleId,
    store::{
        Store, StoreError,
        mongo::SaleDoc,
        scripts::{LiveSettings, Opening, SaleReply},
    },
};

/// How long one rebuild may hold the lock.
const LOCK_TTL: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Recovery {
    store: Store,
}

impl Recovery {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// The sale as an admin scheduled it; 404 when there is none.
    pub async fn sale_doc(&self, sale: &SaleId) -> Result<SaleDoc, ApiError> {
        self.store
            .mongo
            .find_sale(sale)
            .await?
            .ok_or_else(|| ApiError::not_found("sale"))
    }

    /// Runs a script of the sale; when its reply says Redis has lost the
    /// sale, rebuilds it from MongoDB and runs the script once more.
    pub async fn with_sale<T, F, Fut>(&self, sale: &SaleId, run: F) -> Result<T, ApiError>
    where
        T: SaleReply,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let reply = run().await?;
        if !reply.sale_missing() {
            return Ok(reply);
        }
        let doc = self.sale_doc(sale).await?;
        self.restore(&doc).await?;
        Ok(run().await?)
    }

    /// Rebuilds a sale's Redis state from MongoDB unless Redis has it.
    pub async fn restore(&self, doc: &SaleDoc) -> Result<(), StoreError> {
        let sale = SaleId::parse(&doc.id)
            .map_err(|_| anyhow::anyhow!("sale document with a malformed id {:?}", doc.id))?;
        let redis = &self.store.redis;
        let token = SaleId::new().to_string();
        if !redis.lock_rebuild(&sale, &token, LOCK_TTL).await? {
            // Another request or instance is rebuilding; wait for it.
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if redis.sale_exists(&sale).await? {
                    return Ok(());
                }
            }
            return Err(StoreError::Unavailable(
                "sale state is being rebuilt; retry".into(),
            ));
        }
        let result = self.rebuild(&sale, doc).await;
        redis.unlock_rebuild(&sale, &token).await?;
        result
    }

    async fn rebuild(&self, sale: &SaleId, doc: &SaleDoc) -> Result<(), StoreError> {
        let redis = &self.store.redis;
        if redis.sale_exists(sale).await? {
            return Ok(());
        }
        let sold = self.store.mongo.sold_units(sale).await?;
        let next = sold.serials.last().copied().unwrap_or(0) + 1;
        let units_sold = sold.serials.len() as i64;
        // Units below `next` that no order holds are free again.
        let mut sold_iter = sold.serials.iter().copied().peekable();
        let free = (1..next).filter(move |serial| {
            if sold_iter.peek() == Some(serial) {
                sold_iter.next();
                false
            } else {
                true
            }
        });
        redis.replace_live_state(sale, free, sold.bought).await?;
        // Carry on from the last change recorded in MongoDB, so seq keeps
        // rising for the live feed and the event log.
        let seq = self.store.mongo.last_event_seq(sale).await?;
        let opening = Opening::Restored {
            sold: units_sold,
            next,
            seq,
        };
        redis
            .open_sale(
                sale,
                &LiveSettings::from(doc),
                doc.closed_at.is_some(),
                opening,
            )
            .await?;
        tracing::warn!(sale_id = %sale, sold = units_sold, "sale state rebuilt from MongoDB");
        Ok(())
    }
}
