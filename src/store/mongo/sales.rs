//! Sales as admins scheduled them.

use bson::{DateTime, Document, doc};
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

    /// Sales, latest start first (then by id).
    pub async fn list_sales(&self, limit: i64) -> Result<Vec<SaleDoc>, StoreError> {
        self.listing(doc! {}, limit).await
    }

    /// The sales that come after `last` in the listing's order: the next
    /// page after a page that ended there.
    pub async fn list_sales_after(
        &self,
        last: &SaleDoc,
        limit: i64,
    ) -> Result<Vec<SaleDoc>, StoreError> {
        let after = doc! {"$or": [
            {"starts_at": {"$lt": last.starts_at}},
            {"starts_at": last.starts_at, "_id": {"$lt": &last.id}},
        ]};
        self.listing(after, limit).await
    }

    /// The listing's order, on the `(starts_at, _id)` index.
    async fn listing(&self, filter: Document, limit: i64) -> Result<Vec<SaleDoc>, StoreError> {
        self.bounded(async {
            Ok(self
                .sales
                .find(filter)
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

    /// Replaces a sale if it is still at `version`; false when it changed
    /// meanwhile.
    pub async fn replace_sale_if(&self, sale: &SaleDoc, version: i64) -> Result<bool, StoreError> {
        self.bounded(async {
            let replaced = self
                .sales
                .replace_one(doc! {"_id": &sale.id, "version": at_version(version)}, sale)
                .await?;
            Ok(replaced.matched_count == 1)
        })
        .await
    }

    /// Records a sale closed if it is still at `version` (which rises by
    /// one); false when it changed meanwhile.
    pub async fn close_sale_if(
        &self,
        sale: &SaleId,
        version: i64,
        closed_at: DateTime,
        ends_at: DateTime,
    ) -> Result<bool, StoreError> {
        self.bounded(async {
            let updated = self
                .sales
                .update_one(
                    doc! {"_id": sale.as_str(), "version": at_version(version)},
                    doc! {"$set": {"closed_at": closed_at, "ends_at": ends_at, "version": version + 1}},
                )
                .await?;
            Ok(updated.matched_count == 1)
        })
        .await
    }
}

/// Matches a version; sales stored before versions existed count as 0.
fn at_version(version: i64) -> bson::Bson {
    match version {
        0 => doc! {"$in": [0_i64, bson::Bson::Null]}.into(),
        v => v.into(),
    }
}
