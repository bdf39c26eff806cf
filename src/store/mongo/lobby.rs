//! Lobbies: their documents (a sale's lobby settings, one entry per buyer
//! and sale, the frozen draws) and the admissions, lapses and uses the
//! recorder copies from Redis.

use bson::{DateTime, doc};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::{Mongo, is_duplicate_key};
use crate::{ids::SaleId, store::StoreError};

/// A buyer's place in a sale's lobby. `_id` is `<sale>:<buyer>`, so a buyer
/// has at most one. Whether they joined in time for the draw is not kept
/// here: the frozen draw ([`DrawDoc`]) lists who it placed, and everyone
/// else queues behind it in the order of `joined_at`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LobbyEntryDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub sale_id: String,
    pub buyer: String,
    /// When they joined, on the Redis clock.
    pub joined_at: DateTime,
    /// When the buyer was let in, and until when the admission lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admitted_at: Option<DateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission_expires_at: Option<DateTime>,
    /// The admission made a hold or a place in the waiting list.
    #[serde(default)]
    pub used: bool,
    /// The admission ran out unused, and its turn went to the next buyer.
    #[serde(default)]
    pub lapsed: bool,
}

/// A sale's lobby settings and its draw's seed: sealed until the draw is
/// made at the start, its SHA-256 public from the lobby's opening.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LobbyDoc {
    pub opens_at: DateTime,
    pub admit_per_second: i64,
    pub admission_seconds: i64,
    /// The seed sealed with `FLASHDROP_SEED_KEY` (see `lobby/seal.rs`):
    /// reading the database does not reveal it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed_sealed: Option<String>,
    /// A seed in the clear, as sales made before seeds were sealed keep it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<String>,
    pub seed_sha256: String,
}

/// A lobby's draw, frozen once at the start. The head is written after
/// its chunks, so a draw exists once its head does; `_id` is the sale.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DrawDoc {
    #[serde(rename = "_id")]
    pub sale_id: String,
    /// The seed, revealed with the draw.
    pub seed: String,
    pub seed_sha256: String,
    /// Buyers in the draw.
    pub count: i64,
    /// The freeze that made it: names its chunks.
    pub freeze: String,
    pub chunks: i64,
    pub made_at: DateTime,
}

/// A run of the draw in order: `values[i]` is `buyers[i]`'s, who joined at
/// `joined[i]` (ms, Redis clock).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DrawChunkDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub sale_id: String,
    pub freeze: String,
    pub index: i64,
    pub values: Vec<String>,
    pub buyers: Vec<String>,
    pub joined: Vec<i64>,
}

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
