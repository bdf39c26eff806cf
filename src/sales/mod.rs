//! Sales: scheduling, changing and closing them (MongoDB and Redis), and
//! their live view, read from Redis in one atomic step.

pub mod rules;

use bson::DateTime as BsonDateTime;
use chrono::Utc;

use self::rules::{CreateSale, MAX_HOLD_SECONDS, PatchSale, SaleView, validate};
use crate::{
    error::{ApiError, ErrorCode},
    ids::SaleId,
    recovery::Recovery,
    store::{
        Store, StoreError,
        mongo::SaleDoc,
        scripts::{CloseReply, LiveSettings, ReadSaleReply, UpdateReply},
    },
};

#[derive(Clone)]
pub struct Sales {
    store: Store,
    recovery: Recovery,
}

impl Sales {
    pub fn new(store: Store, recovery: Recovery) -> Self {
        Self { store, recovery }
    }

    /// Sales that may still change: their window has not ended longer ago
    /// than the longest hold. The reaper and the event persister walk these.
    pub async fn recent(&self) -> Result<Vec<SaleDoc>, StoreError> {
        let horizon = BsonDateTime::from_millis(
            BsonDateTime::now().timestamp_millis() - (MAX_HOLD_SECONDS + 60) * 1000,
        );
        self.store.mongo.sales_ending_after(horizon).await
    }

    pub async fn create(&self, spec: CreateSale) -> Result<SaleView, ApiError> {
        let now = Utc::now();
        validate(&spec, now)?;
        let id = SaleId::new();
        let doc = spec.into_doc(&id, now);
        self.store.mongo.insert_sale(&doc).await?;
        // A failure here is repaired by the first read, which opens the sale
        // from MongoDB.
        self.store
            .redis
            .open_sale(&id, &LiveSettings::from(&doc))
            .await?;
        tracing::info!(sale_id = %id, total = doc.total, "sale created");
        self.view(&id).await
    }

    pub async fn list(&self, limit: i64) -> Result<Vec<SaleView>, ApiError> {
        let docs = self.store.mongo.list_sales(limit).await?;
        let mut views = Vec::with_capacity(docs.len());
        for doc in &docs {
            let id = SaleId::parse(&doc.id)?;
            views.push(self.view(&id).await?);
        }
        Ok(views)
    }

    pub async fn view(&self, sale: &SaleId) -> Result<SaleView, ApiError> {
        Ok(self.snapshot(sale).await?.0)
    }

    /// The sale's view with the `seq` of the last change it includes and
    /// the epoch of the Redis copy it was read from, read in one step so a
    /// live client can apply later changes on top.
    pub async fn snapshot(&self, sale: &SaleId) -> Result<(SaleView, i64, String), ApiError> {
        let read = self
            .recovery
            .with_sale(sale, || self.store.redis.read_sale(sale))
            .await?;
        match read {
            ReadSaleReply::Sale(live) => {
                let (seq, epoch) = (live.seq, live.epoch.clone());
                Ok((SaleView::from_live(sale, live), seq, epoch))
            }
            ReadSaleReply::Missing => Err(ApiError::unavailable("sale state is being rebuilt")),
        }
    }

    pub async fn patch(&self, sale: &SaleId, patch: PatchSale) -> Result<SaleView, ApiError> {
        let before = self.recovery.sale_doc(sale).await?;
        let now = Utc::now();
        if before.closed_at.is_some() || before.ends_at.to_chrono() <= now {
            return Err(ApiError::new(ErrorCode::SaleEnded, "the sale has ended"));
        }
        let needs_upcoming = patch.needs_upcoming(&before);
        if needs_upcoming && before.starts_at.to_chrono() <= now {
            return Err(ApiError::new(
                ErrorCode::SaleStarted,
                "once a sale has started only name, ends_at and hold_seconds may change",
            ));
        }
        let after = patch.apply(&before);
        validate(&after, now)?;
        if after.total < before.total {
            return Err(ApiError::new(
                ErrorCode::InvalidChange,
                "stock can only be raised",
            ));
        }
        let after = after.into_doc(sale, before.created_at.to_chrono());
        // Redis first: its script is the atomic gate against the sale
        // starting between our check and the write.
        let reply = self
            .store
            .redis
            .update_sale(sale, &LiveSettings::from(&after), needs_upcoming)
            .await?;
        match reply {
            // Not in Redis: MongoDB alone is the truth; the next read opens
            // the sale from the updated document.
            UpdateReply::Ok | UpdateReply::Missing => {}
            UpdateReply::Started => {
                return Err(ApiError::new(
                    ErrorCode::SaleStarted,
                    "the sale has started",
                ));
            }
            UpdateReply::Ended => {
                return Err(ApiError::new(ErrorCode::SaleEnded, "the sale has ended"));
            }
            UpdateReply::TotalLowered => {
                return Err(ApiError::new(
                    ErrorCode::InvalidChange,
                    "stock can only be raised",
                ));
            }
        }
        self.store.mongo.replace_sale(&after).await?;
        self.view(sale).await
    }

    pub async fn close(&self, sale: &SaleId) -> Result<SaleView, ApiError> {
        let doc = self.recovery.sale_doc(sale).await?;
        let reply = self
            .recovery
            .with_sale(sale, || self.store.redis.close_sale(sale))
            .await?;
        let ends = match reply {
            CloseReply::Ok { ends } | CloseReply::Ended { ends } => BsonDateTime::from_millis(ends),
            CloseReply::Missing => {
                return Err(ApiError::unavailable("sale state is being rebuilt"));
            }
        };
        let closed_at = doc.closed_at.unwrap_or_else(BsonDateTime::now);
        self.store.mongo.close_sale(sale, closed_at, ends).await?;
        self.view(sale).await
    }
}
