//! Lobbies: one entry per buyer and sale, the frozen draws, and the
//! admissions, lapses and uses the recorder copies from Redis.

use bson::{DateTime, doc};
use futures_util::TryStreamExt;

use super::{DrawChunkDoc, DrawDoc, LobbyEntryDoc, Mongo, is_duplicate_key};
use crate::{ids::SaleId, store::StoreError};

/// What a lobby's log says happened to buyers, as the recorder hands it
/// over (in log order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LobbyRecord {
    /// Let in at `at`, until `until` (ms, Redis clock).
    Admitted { buyer: String, at: i64, until: i64 },
    /// The admission ran out unused.
    Lapsed { buyer: String },
    /// The admission made a hold or a place in the waiting list.
    Used { buyer: String },
}

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

    /// Applies records of a lobby's log. Each sets fields no other kind
    /// sets, so records applied twice, or out of order by instances that
    /// share the log, end the same.
    pub async fn record_lobby(
        &self,
        sale: &SaleId,
        records: &[LobbyRecord],
    ) -> Result<(), StoreError> {
        let id = |buyer: &str| format!("{sale}:{buyer}");
        // Runs of one kind (and, for admissions, one tick) become one update.
        let mut i = 0;
        while i < records.len() {
            let same = |r: &LobbyRecord| match (&records[i], r) {
                (
                    LobbyRecord::Admitted { at, until, .. },
                    LobbyRecord::Admitted {
                        at: a, until: u, ..
                    },
                ) => a == at && u == until,
                (LobbyRecord::Lapsed { .. }, LobbyRecord::Lapsed { .. })
                | (LobbyRecord::Used { .. }, LobbyRecord::Used { .. }) => true,
                _ => false,
            };
            let run: Vec<&LobbyRecord> = records[i..].iter().take_while(|r| same(r)).collect();
            i += run.len();
            let ids: Vec<String> = run
                .iter()
                .map(|r| match r {
                    LobbyRecord::Admitted { buyer, .. }
                    | LobbyRecord::Lapsed { buyer }
                    | LobbyRecord::Used { buyer } => id(buyer),
                })
                .collect();
            let set = match run[0] {
                LobbyRecord::Admitted { at, until, .. } => doc! {
                    "admitted_at": DateTime::from_millis(*at),
                    "admission_expires_at": DateTime::from_millis(*until),
                },
                LobbyRecord::Lapsed { .. } => doc! {"lapsed": true},
                LobbyRecord::Used { .. } => doc! {"used": true},
            };
            self.bounded(async {
                self.lobby_entries
                    .update_many(doc! {"_id": {"$in": ids}}, doc! {"$set": set})
                    .await?;
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    /// Every entry of a lobby (a rebuild, the summary, the audit).
    pub async fn all_lobby_entries(&self, sale: &SaleId) -> Result<Vec<LobbyEntryDoc>, StoreError> {
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

    /// Stores a frozen draw: its chunks, then its head. Only the first
    /// head of a sale is ever stored; a freeze that finds one already
    /// drops its own chunks and returns the head that was first.
    pub async fn insert_draw(
        &self,
        head: &DrawDoc,
        chunks: &[DrawChunkDoc],
    ) -> Result<DrawDoc, StoreError> {
        self.bounded_long(async {
            if !chunks.is_empty() {
                match self.lobby_draw_chunks.insert_many(chunks).await {
                    Ok(_) => {}
                    Err(e) if is_duplicate_key(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            match self.lobby_draws.insert_one(head).await {
                Ok(_) => Ok(head.clone()),
                Err(e) if is_duplicate_key(&e) => {
                    self.lobby_draw_chunks
                        .delete_many(doc! {"sale_id": &head.sale_id, "freeze": &head.freeze})
                        .await?;
                    self.lobby_draws
                        .find_one(doc! {"_id": &head.sale_id})
                        .await?
                        .ok_or_else(|| {
                            anyhow::anyhow!("a draw refused as a duplicate is gone").into()
                        })
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    /// A sale's frozen draw, head and chunks in order, if it was made.
    pub async fn draw(
        &self,
        sale: &SaleId,
    ) -> Result<Option<(DrawDoc, Vec<DrawChunkDoc>)>, StoreError> {
        self.bounded_long(async {
            let Some(head) = self
                .lobby_draws
                .find_one(doc! {"_id": sale.as_str()})
                .await?
            else {
                return Ok(None);
            };
            let chunks: Vec<DrawChunkDoc> = self
                .lobby_draw_chunks
                .find(doc! {"sale_id": sale.as_str(), "freeze": &head.freeze})
                .sort(doc! {"index": 1})
                .await?
                .try_collect()
                .await?;
            if chunks.len() as i64 != head.chunks {
                return Err(anyhow::anyhow!(
                    "the draw of sale {sale} has {} of its {} chunks",
                    chunks.len(),
                    head.chunks
                )
                .into());
            }
            Ok(Some((head, chunks)))
        })
        .await
    }
}
