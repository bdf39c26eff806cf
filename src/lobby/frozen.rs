//! The draw as served: made once at the start, stored in MongoDB, then
//! kept in each instance's memory as finished documents, JSON and gzip
//! encoded once, each with an ETag, so a read costs neither MongoDB nor any
//! hashing, and a conditional read costs no body at all.
//!
//! The draw is served whole, and in pages: an index (the seed, its
//! commitment, and each page's first and last value and SHA-256) and pages
//! of [`PAGE`] values. A buyer checks their own place with the index and
//! one page, whatever the size of the crowd; the index's hashes bind every
//! page, and anyone can fetch them all.

use std::{
    collections::{HashMap, VecDeque},
    io::Write,
    sync::Arc,
};

use bytes::Bytes;
use flate2::{Compression, write::GzEncoder};
use poem_openapi::Object;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::{
    ids::SaleId,
    store::mongo::{DrawChunkDoc, DrawDoc},
};

/// Values in one page of the draw.
pub const PAGE: usize = 1_000;
/// Draws kept per instance; a sale whose draw was dropped reads it again.
const KEPT: usize = 16;

/// One finished document: its JSON, gzipped too, and its tag.
pub struct Frozen {
    tag: String,
    json: Bytes,
    gzip: Bytes,
}

impl Frozen {
    fn new(value: &impl serde::Serialize) -> anyhow::Result<Self> {
        let json = serde_json::to_vec(value)?;
        let mut gz = GzEncoder::new(Vec::with_capacity(json.len() / 2), Compression::default());
        gz.write_all(&json)?;
        let gzip = gz.finish()?;
        Ok(Self {
            tag: hex::encode(&Sha256::digest(&json)[..16]),
            json: json.into(),
            gzip: gzip.into(),
        })
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

    /// Whether an `If-None-Match` names this document (in either encoding).
    pub fn matches(&self, if_none_match: &str) -> bool {
        if_none_match.split(',').any(|tag| {
            let tag = tag.trim();
            let tag = tag.strip_prefix("W/").unwrap_or(tag);
            tag == "*" || tag == self.etag(false) || tag == self.etag(true)
        })
    }
}

/// The draw's index: what a buyer needs to find and check their own page.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct LobbyDrawIndex {
    /// The revealed seed.
    pub seed: String,
    /// Its SHA-256, public since the opening.
    pub seed_sha256: String,
    /// Values in the draw.
    pub count: i64,
    /// Values per page (the last may hold fewer).
    pub page_size: i64,
    pub pages: Vec<DrawPageSummary>,
}

/// One page as the index describes it.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct DrawPageSummary {
    /// 1-based page number: page `n` holds places `(n - 1) * page_size + 1`
    /// onwards.
    pub page: i64,
    pub first: String,
    pub last: String,
    /// SHA-256 (lowercase hex) of the page's values joined by `\n`.
    pub sha256: String,
}

/// One page of the draw.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct LobbyDrawPage {
    pub page: i64,
    /// The place of the page's first value.
    pub first_place: i64,
    /// The page's values (lowercase hex) in draw order.
    pub order: Vec<String>,
}

/// A frozen draw, ready to send whole or in pages.
pub struct FrozenDraw {
    pub seed: String,
    pub seed_sha256: String,
    pub count: i64,
    pub whole: Frozen,
    pub index: Frozen,
    pub pages: Vec<Frozen>,
}

impl std::fmt::Debug for FrozenDraw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrozenDraw")
            .field("count", &self.count)
            .field("pages", &self.pages.len())
            .finish()
    }
}

/// The whole draw's shape: what `LobbyDraw` documents.
#[derive(serde::Serialize)]
struct Whole<'a> {
    seed: &'a str,
    seed_sha256: &'a str,
    order: Vec<&'a str>,
}

/// The SHA-256 the index gives a page.
pub fn page_sha256(values: &[impl AsRef<str>]) -> String {
    let mut hash = Sha256::new();
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            hash.update(b"\n");
        }
        hash.update(v.as_ref().as_bytes());
    }
    hex::encode(hash.finalize())
}

impl FrozenDraw {
    pub fn new(head: &DrawDoc, chunks: &[DrawChunkDoc]) -> anyhow::Result<Self> {
        let order: Vec<&str> = chunks
            .iter()
            .flat_map(|c| c.values.iter().map(String::as_str))
            .collect();
        let whole = Frozen::new(&Whole {
            seed: &head.seed,
            seed_sha256: &head.seed_sha256,
            order: order.clone(),
        })?;
        let mut summaries = Vec::new();
        let mut pages = Vec::new();
        for (i, values) in order.chunks(PAGE).enumerate() {
            let page = i as i64 + 1;
            summaries.push(DrawPageSummary {
                page,
                first: values[0].to_owned(),
                last: values[values.len() - 1].to_owned(),
                sha256: page_sha256(values),
            });
            pages.push(Frozen::new(&LobbyDrawPage {
                page,
                first_place: (i * PAGE) as i64 + 1,
                order: values.iter().map(|v| (*v).to_owned()).collect(),
            })?);
        }
        let index = Frozen::new(&LobbyDrawIndex {
            seed: head.seed.clone(),
            seed_sha256: head.seed_sha256.clone(),
            count: head.count,
            page_size: PAGE as i64,
            pages: summaries,
        })?;
        Ok(Self {
            seed: head.seed.clone(),
            seed_sha256: head.seed_sha256.clone(),
            count: head.count,
            whole,
            index,
            pages,
        })
    }

    /// Page `n` (1-based), if the draw has it.
    pub fn page(&self, n: i64) -> Option<&Frozen> {
        usize::try_from(n)
            .ok()?
            .checked_sub(1)
            .and_then(|i| self.pages.get(i))
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draw(n: usize) -> FrozenDraw {
        let values: Vec<String> = (0..n).map(|i| format!("{i:064x}")).collect();
        let head = DrawDoc {
            sale_id: "s".into(),
            seed: "seed".into(),
            seed_sha256: "sha".into(),
            count: n as i64,
            freeze: "f".into(),
            chunks: 1,
            made_at: bson::DateTime::from_millis(0),
        };
        let chunk = DrawChunkDoc {
            id: "s:f:0".into(),
            sale_id: "s".into(),
            freeze: "f".into(),
            index: 0,
            buyers: values.iter().map(|_| "b".to_owned()).collect(),
            joined: values.iter().map(|_| 1).collect(),
            values,
        };
        FrozenDraw::new(&head, &[chunk]).unwrap()
    }

    fn read(frozen: &Frozen, gzip: bool) -> serde_json::Value {
        let body = frozen.body(gzip);
        match gzip {
            false => serde_json::from_slice(&body).unwrap(),
            true => serde_json::from_reader(flate2::read::GzDecoder::new(&body[..])).unwrap(),
        }
    }

    #[test]
    fn the_whole_draw_is_the_documented_one_in_either_encoding() {
        let d = draw(2);
        let body = read(&d.whole, false);
        assert_eq!(body["seed"], "seed");
        assert_eq!(body["order"].as_array().unwrap().len(), 2);
        assert_eq!(read(&d.whole, true), body);
        assert_ne!(d.whole.etag(true), d.whole.etag(false));
        assert!(d.whole.matches(&d.whole.etag(false)));
        assert!(d.whole.matches(&format!("\"x\", W/{}", d.whole.etag(true))));
        assert!(d.whole.matches("*"));
        assert!(!d.whole.matches("\"other\""));
    }

    #[test]
    fn pages_split_the_order_and_the_index_binds_each_by_its_hash() {
        let d = draw(2_500);
        let index = read(&d.index, false);
        let pages = index["pages"].as_array().unwrap();
        assert_eq!((index["count"].as_i64(), pages.len()), (Some(2_500), 3));
        let mut joined = Vec::new();
        for (i, summary) in pages.iter().enumerate() {
            let page = read(d.page(i as i64 + 1).unwrap(), true);
            let values: Vec<String> = page["order"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect();
            assert_eq!(page["first_place"], (i * PAGE) as i64 + 1);
            assert_eq!(summary["sha256"], page_sha256(&values).as_str());
            assert_eq!(summary["first"], values[0].as_str());
            assert_eq!(summary["last"], values[values.len() - 1].as_str());
            joined.extend(values);
        }
        let whole: Vec<String> = read(&d.whole, false)["order"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(joined, whole);
        assert!(d.page(0).is_none() && d.page(4).is_none() && d.page(-1).is_none());
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
