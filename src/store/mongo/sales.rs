//! Sales as admins scheduled them.

use bson::{DateTime, doc};
use futures_util::TryStreamExt;

use super::{Mongo, SaleDoc};
use crate::{ids::SaleId, store::StoreError};

impl Mongo {
    pub async fn find_sale(&self, sale: &SaleId) -> Result<Option<SaleDoc>, StoreError> {
        self.bounded(async { Ok(self.sales.find_one(doc! {"_id": sale.as_str()}).await?) })
            .await
    }

    /// Sales whose window ends after `horizon`.
    pub async fn sales_ending_after(&self, horizon: DateTime) -> Result<Vec<SaleDoc>, StoreError> {
        self.bounded(async {
            Ok(self
                .sales
                .find(doc! {"ends_at": {"$gt": horizon}})
                .await?
                .try_collect()
                .await?)
        })
        .await
    }

    /// Sales, latest start first.
    pub async fn list_sales(&self, limit: i64) -> Result<Vec<SaleDoc>, StoreError> {
        self.bounded(async {
            Ok(self
                .sales
                .find(doc! {})
                .sort(doc! {"starts_at": -1, "_id": -1})
                .limit(limit)
                .await?
                .try_collect()
                .await?)
        })
        .await
    }

    pub async fn insert_sale(&self, sale: &SaleDoc) -> Result<(), StoreError> {
        self.bounded(async {
            self.sales.insert_one(sale).await?;
            Ok(())
        })
        .await
    }

    pub async fn replace_sale(&self, sale: &SaleDoc) -> Result<(), StoreError> {
        self.bounded(async {
            self.sales.replace_one(doc! {"_id": &sale.id}, sale).await?;
            Ok(())
        })
        .await
    }

    pub async fn close_sale(
        &self,
        sale: &SaleId,
        closed_at: DateTime,
        ends_at: DateTime,
    ) -> Result<(), StoreError> {
        self.bounded(async {
            self.sales
                .update_one(
                    doc! {"_id": sale.as_str()},
                    doc! {"$set": {"closed_at": closed_at, "ends_at": ends_at}},
                )
                .await?;
            Ok(())
        })
        .await
    }
}
