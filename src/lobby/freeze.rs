//! The draw made once at the start: frozen from the joiners, stored in
//! MongoDB (the first stored wins) and loaded into Redis in chunks.

use std::time::Instant;

use bson::DateTime as BsonDateTime;
use futures_util::{StreamExt, stream};

use super::{Lobby, draw::Seed, frozen::FrozenDraw};
use crate::{
    ids::SaleId,
    store::{
        StoreError,
        keys::{drawn_member, late_member},
        mongo::{DrawChunkDoc, DrawDoc, LobbyDoc},
        scripts::{DrawStep, LobbyDrawReply, LobbyWaiter},
    },
};

/// Draw values per stored chunk document.
const DRAW_CHUNK: usize = 5_000;
/// Buyers one `lobby_draw` call places.
pub const LOAD_CHUNK: usize = 250;
/// `lobby_draw` calls in flight at once while a draw loads.
const LOADS_AT_ONCE: usize = 8;

impl Lobby {
    /// Makes the draw (or finds the one stored first) and loads it into
    /// Redis, while `token` holds the lease `lobby_tick` handed out. A
    /// lease lost to a rebuild or to a slower instance's expiry stops it
    /// without harm: loading is the same whoever does it.
    pub async fn freeze(&self, sale: &SaleId, token: &str) -> Result<(), StoreError> {
        let began = Instant::now();
        let (head, chunks) = match self.store.mongo.draw(sale).await? {
            Some(stored) => stored,
            None => self.make_draw(sale, token).await?,
        };
        let stored = began.elapsed();
        let redis = &self.store.redis;
        let places: Vec<LobbyWaiter> = chunks
            .iter()
            .flat_map(|c| c.buyers.iter().zip(&c.values).zip(&c.joined))
            .map(|((buyer, value), joined)| LobbyWaiter {
                buyer: buyer.clone(),
                member: drawn_member(value, buyer),
                joined_ms: *joined,
            })
            .collect();
        // Several calls in flight (each one short): the start's crowd
        // keeps Redis busy, and one call at a time would wait behind it.
        let parts: Vec<Vec<LobbyWaiter>> = places.chunks(LOAD_CHUNK).map(<[_]>::to_vec).collect();
        let replies: Vec<Result<LobbyDrawReply, StoreError>> = stream::iter(parts)
            .map(|part| async move { redis.lobby_draw(sale, token, DrawStep::Place(&part)).await })
            .buffer_unordered(LOADS_AT_ONCE)
            .collect()
            .await;
        for reply in replies {
            if let LobbyDrawReply::Lost | LobbyDrawReply::Missing = reply? {
                return Ok(());
            }
        }
        loop {
            match redis
                .lobby_draw(sale, token, DrawStep::Done { count: head.count })
                .await?
            {
                LobbyDrawReply::Done => break,
                LobbyDrawReply::Left { .. } => {
                    // Early buyers the draw does not hold (a rebuild raced
                    // the start): they queue behind it, by join time.
                    let mut left: Vec<LobbyWaiter> = redis
                        .early_joiners(sale)
                        .await?
                        .into_iter()
                        .map(|(buyer, joined_ms)| LobbyWaiter {
                            member: late_member(joined_ms, &buyer),
                            buyer,
                            joined_ms,
                        })
                        .collect();
                    left.sort_by(|a, b| a.member.cmp(&b.member));
                    tracing::warn!(sale_id = %sale, buyers = left.len(), "early buyers outside the stored draw queue behind it");
                    for part in left.chunks(LOAD_CHUNK) {
                        redis.lobby_draw(sale, token, DrawStep::Late(part)).await?;
                    }
                }
                LobbyDrawReply::Lost | LobbyDrawReply::Missing => return Ok(()),
                LobbyDrawReply::Loaded { .. } => {}
            }
        }
        tracing::info!(
            sale_id = %sale,
            buyers = head.count,
            made_and_stored_ms = stored.as_millis() as u64,
            loaded_ms = (began.elapsed() - stored).as_millis() as u64,
            "draw made and loaded"
        );
        // Served from memory from now on (a draw that cannot be encoded is
        // tried again, and its error answered, by the first read).
        if let Ok(frozen) = FrozenDraw::new(&head, &chunks) {
            let _ = self
                .draws
                .get_or_load(sale, || async { Ok::<_, StoreError>(frozen) })
                .await;
        }
        Ok(())
    }

    /// Opens the seed, orders the early set by its values and stores the
    /// draw; returns the draw MongoDB holds (this one, or one stored first).
    async fn make_draw(
        &self,
        sale: &SaleId,
        token: &str,
    ) -> Result<(DrawDoc, Vec<DrawChunkDoc>), StoreError> {
        let doc =
            self.store.mongo.find_sale(sale).await?.ok_or_else(|| {
                StoreError::Other(anyhow::anyhow!("sale {sale} is not in MongoDB"))
            })?;
        let lobby = doc
            .lobby
            .as_ref()
            .ok_or_else(|| StoreError::Other(anyhow::anyhow!("sale {sale} has no lobby")))?;
        let seed = self.open_seed(sale, lobby)?;
        if seed.commitment() != lobby.seed_sha256 {
            return Err(StoreError::Other(anyhow::anyhow!(
                "the seed of sale {sale} does not match its commitment"
            )));
        }
        let began = Instant::now();
        let early = self.store.redis.early_joiners(sale).await?;
        let read = began.elapsed();
        let mut drawn: Vec<(String, String, i64)> = early
            .into_iter()
            .map(|(buyer, joined)| (seed.value_of(&buyer), buyer, joined))
            .collect();
        drawn.sort_unstable();
        let chunks: Vec<DrawChunkDoc> = drawn
            .chunks(DRAW_CHUNK)
            .enumerate()
            .map(|(i, part)| DrawChunkDoc {
                id: format!("{sale}:{token}:{i}"),
                sale_id: sale.to_string(),
                freeze: token.to_owned(),
                index: i as i64,
                values: part.iter().map(|(v, _, _)| v.clone()).collect(),
                buyers: part.iter().map(|(_, b, _)| b.clone()).collect(),
                joined: part.iter().map(|(_, _, j)| *j).collect(),
            })
            .collect();
        let head = DrawDoc {
            sale_id: sale.to_string(),
            seed: seed.text().to_owned(),
            seed_sha256: lobby.seed_sha256.clone(),
            count: drawn.len() as i64,
            freeze: token.to_owned(),
            chunks: chunks.len() as i64,
            made_at: BsonDateTime::from_millis(self.store.redis.now_ms().await?),
        };
        let ordered = began.elapsed();
        let stored = self.store.mongo.insert_draw(&head, &chunks).await?;
        tracing::info!(
            sale_id = %sale,
            buyers = head.count,
            read_ms = read.as_millis() as u64,
            ordered_ms = (ordered - read).as_millis() as u64,
            stored_ms = (began.elapsed() - ordered).as_millis() as u64,
            "draw made"
        );
        if stored.freeze == token {
            return Ok((head, chunks));
        }
        // Another instance stored its draw first: that one is the draw.
        self.store
            .mongo
            .draw(sale)
            .await?
            .ok_or_else(|| StoreError::Other(anyhow::anyhow!("the stored draw of {sale} is gone")))
    }

    fn open_seed(&self, sale: &SaleId, lobby: &LobbyDoc) -> Result<Seed, StoreError> {
        if let Some(sealed) = &lobby.seed_sealed {
            let key = self.seed_key.as_ref().ok_or_else(|| {
                StoreError::Other(anyhow::anyhow!(
                    "FLASHDROP_SEED_KEY is not set: the seed of sale {sale} cannot be opened for its draw"
                ))
            })?;
            return key
                .open(sale, sealed)
                .map_err(|e| StoreError::Other(anyhow::anyhow!("sale {sale}: {e}")));
        }
        lobby
            .seed
            .clone()
            .map(Seed::from_text)
            .ok_or_else(|| StoreError::Other(anyhow::anyhow!("sale {sale} has no seed")))
    }
}
