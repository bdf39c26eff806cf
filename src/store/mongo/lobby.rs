//! Lobby entries: one per buyer and sale.

use bson::{DateTime, doc};

use super::{LobbyEntryDoc, Mongo, is_duplicate_key};
use crate::{ids::SaleId, store::StoreError};

impl Mongo {
    /// Stores a buyer's entry; false when they had one (which stays).
    pub async fn join_lobby(&self, entry: &LobbyEntryDoc) -> Result<bool, StoreError> {
        self.bounded(async {
            match self.lobby_entries.insert_one(entry).await {
                Ok(_) => Ok(true),
                Err(e) if is_duplicate_key(&e) => Ok(false),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    pub async fn lobby_entry(
        &self,
        sale: &SaleId,
        buyer: &str,
    ) -> Result<Option<LobbyEntryDoc>, StoreError> {
        self.bounded(async {
            Ok(self
                .lobby_entries
                .find_one(doc! {"_id": format!("{sale}:{buyer}")})
                .await?)
        })
        .await
    }

    pub async fn lobby_joined(&self, sale: &SaleId) -> Result<u64, StoreError> {
        self.bounded(async {
            Ok(self
                .lobby_entries
                .count_documents(doc! {"sale_id": sale.as_str()})
                .await?)
        })
        .await
    }
}

impl Mongo {
    /// Records admissions the lobby gave, so a rebuild keeps them.
    pub async fn record_admissions(
        &self,
        sale: &SaleId,
        buyers: &[String],
        admitted_at: DateTime,
        expires_at: DateTime,
    ) -> Result<(), StoreError> {
        let ids: Vec<String> = buyers.iter().map(|b| format!("{sale}:{b}")).collect();
        self.bounded(async {
            self.lobby_entries
                .update_many(
                    doc! {"_id": {"$in": ids}},
                    doc! {"$set": {"admitted_at": admitted_at, "admission_expires_at": expires_at, "used": false, "lapsed": false}},
                )
                .await?;
            Ok(())
        })
        .await
    }

    /// Marks admissions that ran out unused.
    pub async fn record_lapses(&self, sale: &SaleId, buyers: &[String]) -> Result<(), StoreError> {
        let ids: Vec<String> = buyers.iter().map(|b| format!("{sale}:{b}")).collect();
        self.bounded(async {
            self.lobby_entries
                .update_many(doc! {"_id": {"$in": ids}}, doc! {"$set": {"lapsed": true}})
                .await?;
            Ok(())
        })
        .await
    }

    /// Marks a buyer's admission used (a hold or a place in line).
    pub async fn record_admission_used(
        &self,
        sale: &SaleId,
        buyer: &str,
    ) -> Result<(), StoreError> {
        self.bounded(async {
            self.lobby_entries
                .update_one(
                    doc! {"_id": format!("{sale}:{buyer}")},
                    doc! {"$set": {"used": true}},
                )
                .await?;
            Ok(())
        })
        .await
    }

    /// Every entry of a lobby (a rebuild, the summary).
    pub async fn all_lobby_entries(&self, sale: &SaleId) -> Result<Vec<LobbyEntryDoc>, StoreError> {
        use futures_util::TryStreamExt;
        self.bounded_long(async {
            Ok(self
                .lobby_entries
                .find(doc! {"sale_id": sale.as_str()})
                .await?
                .try_collect()
                .await?)
        })
        .await
    }

    /// A lobby's entries: those who joined before the start, or the
    /// latecomers in arrival order.
    pub async fn lobby_entries(
        &self,
        sale: &SaleId,
        late: bool,
    ) -> Result<Vec<LobbyEntryDoc>, StoreError> {
        use futures_util::TryStreamExt;
        self.bounded_long(async {
            Ok(self
                .lobby_entries
                .find(doc! {"sale_id": sale.as_str(), "late": late})
                .sort(doc! {"joined_at": 1, "_id": 1})
                .await?
                .try_collect()
                .await?)
        })
        .await
    }
}
