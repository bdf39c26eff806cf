//! The draw as served: made once at the start, stored in MongoDB, then
//! kept in each instance's memory as a finished document, JSON and gzip
//! encoded once, with an ETag, so a read costs neither MongoDB nor any
//! hashing, and a conditional read costs no body at all.

use std::{
    collections::{HashMap, VecDeque},
    io::Write,
    sync::Arc,
};

use bytes::Bytes;
use flate2::{Compression, write::GzEncoder};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::{
    ids::SaleId,
    store::mongo::{DrawChunkDoc, DrawDoc},
};

/// Draws kept per instance; a sale whose draw was dropped reads it again.
const KEPT: usize = 16;

/// A frozen draw, ready to send.
pub struct FrozenDraw {
    pub seed: String,
    pub seed_sha256: String,
    pub count: i64,
    tag: String,
    json: Bytes,
    gzip: Bytes,
}

impl std::fmt::Debug for FrozenDraw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrozenDraw")
            .field("count", &self.count)
            .field("tag", &self.tag)
            .finish()
    }
}

/// The body's shape: what `LobbyDraw` documents.
#[derive(serde::Serialize)]
struct Body<'a> {
    seed: &'a str,
    seed_sha256: &'a str,
    order: Vec<&'a str>,
}

impl FrozenDraw {
    pub fn new(head: &DrawDoc, chunks: &[DrawChunkDoc]) -> Self {
        let body = Body {
            seed: &head.seed,
            seed_sha256: &head.seed_sha256,
            order: chunks
                .iter()
                .flat_map(|c| c.values.iter().map(String::as_str))
                .collect(),
        };
        let json = serde_json::to_vec(&body).expect("a draw serializes");
        let mut gz = GzEncoder::new(Vec::with_capacity(json.len() / 2), Compression::default());
        gz.write_all(&json).expect("gzip into memory");
        let gzip = gz.finish().expect("gzip into memory");
        let tag = hex::encode(&Sha256::digest(&json)[..16]);
        Self {
            seed: head.seed.clone(),
            seed_sha256: head.seed_sha256.clone(),
            count: head.count,
            tag,
            json: json.into(),
            gzip: gzip.into(),
        }
    }

    /// The ETag of one encoding (each encoding is a representation of its
    /// own).
    pub fn etag(&self, gzip: bool) -> String {
        match gzip {
            true => format!("\"{}-gzip\"", self.tag),
            false => format!("\"{}\"", self.tag),
        }
    }

    pub fn body(&self, gzip: bool) -> Bytes {
        match gzip {
            true => self.gzip.clone(),
            false => self.json.clone(),
        }
    }

    /// Whether an `If-None-Match` names this draw (in either encoding).
    pub fn matches(&self, if_none_match: &str) -> bool {
        if_none_match.split(',').any(|tag| {
            let tag = tag.trim();
            let tag = tag.strip_prefix("W/").unwrap_or(tag);
            tag == "*" || tag == self.etag(false) || tag == self.etag(true)
        })
    }
}

/// Whether an `Accept-Encoding` allows gzip.
pub fn accepts_gzip(accept_encoding: &str) -> bool {
    accept_encoding.split(',').any(|part| {
        let mut it = part.split(';');
        let name = it.next().unwrap_or("").trim();
        let refused = it.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        });
        (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
    })
}

/// The draws this instance has read: one load per sale, however many ask
/// at once.
#[derive(Clone, Default)]
pub struct Draws(Arc<parking_lot::Mutex<Kept>>);

#[derive(Default)]
struct Kept {
    cells: HashMap<SaleId, Arc<OnceCell<Arc<FrozenDraw>>>>,
    order: VecDeque<SaleId>,
}

impl Draws {
    /// The draw if this instance holds it.
    pub fn get(&self, sale: &SaleId) -> Option<Arc<FrozenDraw>> {
        self.0.lock().cells.get(sale)?.get().cloned()
    }

    /// The draw, loaded by `load` once while every other caller for the
    /// same sale waits for it. A failed load is not kept.
    pub async fn get_or_load<E, F, Fut>(&self, sale: &SaleId, load: F) -> Result<Arc<FrozenDraw>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<FrozenDraw, E>>,
    {
        let cell = {
            let mut kept = self.0.lock();
            if let Some(cell) = kept.cells.get(sale) {
                cell.clone()
            } else {
                let cell = Arc::new(OnceCell::new());
                kept.cells.insert(sale.clone(), cell.clone());
                kept.order.push_back(sale.clone());
                while kept.order.len() > KEPT {
                    if let Some(old) = kept.order.pop_front() {
                        kept.cells.remove(&old);
                    }
                }
                cell
            }
        };
        cell.get_or_try_init(|| async { load().await.map(Arc::new) })
            .await
            .cloned()
    }

    /// Forgets a sale's draw (its Redis copy was rebuilt from another).
    pub fn forget(&self, sale: &SaleId) {
        let mut kept = self.0.lock();
        kept.cells.remove(sale);
        kept.order.retain(|s| s != sale);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draw() -> FrozenDraw {
        let head = DrawDoc {
            sale_id: "s".into(),
            seed: "seed".into(),
            seed_sha256: "sha".into(),
            count: 2,
            freeze: "f".into(),
            chunks: 1,
            made_at: bson::DateTime::from_millis(0),
        };
        let chunk = DrawChunkDoc {
            id: "s:f:0".into(),
            sale_id: "s".into(),
            freeze: "f".into(),
            index: 0,
            values: vec!["aa".into(), "bb".into()],
            buyers: vec!["x".into(), "y".into()],
            joined: vec![1, 2],
        };
        FrozenDraw::new(&head, &[chunk])
    }

    #[test]
    fn the_body_is_the_documented_draw_and_its_tags_match_conditional_reads() {
        let d = draw();
        let body: serde_json::Value = serde_json::from_slice(&d.body(false)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"seed": "seed", "seed_sha256": "sha", "order": ["aa", "bb"]})
        );
        let mut unzipped = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(&d.body(true)[..]),
            &mut unzipped,
        )
        .unwrap();
        assert_eq!(unzipped, d.body(false));
        assert_ne!(d.etag(true), d.etag(false));
        assert!(d.matches(&d.etag(false)));
        assert!(d.matches(&format!("\"x\", W/{}", d.etag(true))));
        assert!(d.matches("*"));
        assert!(!d.matches("\"other\""));
    }

    #[test]
    fn gzip_is_sent_only_where_accepted() {
        assert!(accepts_gzip("gzip, deflate, br"));
        assert!(accepts_gzip("br;q=1.0, gzip;q=0.8"));
        assert!(accepts_gzip("*"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("identity"));
        assert!(!accepts_gzip(""));
    }
}
