//! The stock event log, and the report figures computed from it and from
//! the orders.

use std::{borrow::Cow, collections::HashMap};

use bson::{Document, doc};
use futures_util::TryStreamExt;
use mongodb::Collection;
use serde::{Deserialize, Serialize};

use super::{Mongo, StockEventDoc, is_duplicate_key};
use crate::{ids::SaleId, store::StoreError};

/// A sale's figures from MongoDB alone.
#[derive(Debug, Default)]
pub struct SummaryFigures {
    pub units_sold: i64,
    pub orders: i64,
    pub revenue_cents: i64,
    /// Orders cancelled, and the units they gave back.
    pub orders_cancelled: i64,
    pub units_returned: i64,
    /// Changes by kind (`reserved`, `confirmed`, `promoted`, ...).
    pub events: HashMap<String, i64>,
    pub peak_holds_per_second: i64,
    /// When the change that sold the last unit happened.
    pub sold_out_at: Option<bson::DateTime>,
}

fn number(d: Option<&Document>, key: &str) -> i64 {
    d.and_then(|d| d.get(key))
        .and_then(|v| v.as_i64().or_else(|| v.as_i32().map(i64::from)))
        .unwrap_or(0)
}

async fn aggregate<T: Send + Sync>(
    collection: &Collection<T>,
    pipeline: Vec<Document>,
) -> Result<Vec<Document>, StoreError> {
    Ok(collection
        .clone_with_type::<Document>()
        .aggregate(pipeline)
        .await?
        .try_collect()
        .await?)
}

/// A batch of changes as the log keeps it: one document per batch the
/// persister copies (the bucket pattern), instead of one per change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StockBatchDoc {
    pub sale_id: String,
    /// The batch's place in the sale's log: 1, 2, 3, ... with no gap.
    /// `(sale_id, n)` is unique, so a writer records a batch only as the
    /// next after the last it read, and every writer's batches form one
    /// order in which each was checked against all before it.
    pub n: i64,
    /// The highest seq the sale's log holds with this batch.
    pub top: i64,
    /// The lowest and highest seq in this batch.
    pub first: i64,
    pub last: i64,
    /// The highest seq a copy in Redis handed out, in the log with this
    /// batch (`top` without fresh seqs; batches written before it existed
    /// have none, and `top` stands for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub made: Option<i64>,
    pub changes: Vec<StockEventDoc>,
    /// What the summary counts of `changes`, written with them, so the
    /// summary reads this instead of every change. Batches written before
    /// it existed have none, and their changes are counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tally: Option<BatchTally>,
}

/// A batch's changes as the summary counts them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BatchTally {
    /// Changes by kind.
    kinds: HashMap<String, i64>,
    /// Holds made (`reserved`, `promoted`) by the second, `[second, n]`.
    seconds: Vec<[i64; 2]>,
    /// The batch's first change at its highest `sold`. No change sells
    /// past the total, so when that reaches the total it is the batch's
    /// first change at the total.
    peak: Option<Peak>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Peak {
    seq: i64,
    sold: i64,
    at: bson::DateTime,
}

/// The fields of a change the summary counts: borrowed from a whole
/// change (a batch being written), or read as they are (the projected
/// changes of a batch written before tallies).
#[derive(Deserialize)]
struct Counted<'a> {
    seq: i64,
    kind: Cow<'a, str>,
    second: i64,
    sold: i64,
    at: bson::DateTime,
}

impl BatchTally {
    /// The tally of `changes`, in any order.
    fn of<'a>(changes: impl IntoIterator<Item = Counted<'a>>) -> Self {
        let mut tally = Self::default();
        let mut seconds: HashMap<i64, i64> = HashMap::new();
        for c in changes {
            if makes_hold(&c.kind) {
                *seconds.entry(c.second).or_default() += 1;
            }
            if tally
                .peak
                .is_none_or(|p| c.sold > p.sold || (c.sold == p.sold && c.seq < p.seq))
            {
                tally.peak = Some(Peak {
                    seq: c.seq,
                    sold: c.sold,
                    at: c.at,
                });
            }
            *tally.kinds.entry(c.kind.into_owned()).or_default() += 1;
        }
        tally.seconds = seconds.into_iter().map(|(s, n)| [s, n]).collect();
        tally.seconds.sort_unstable();
        tally
    }
}

impl StockEventDoc {
    fn counted(&self) -> Counted<'_> {
        Counted {
            seq: self.seq,
            kind: Cow::Borrowed(&self.kind),
            second: self.second,
            sold: self.sold,
            at: self.at,
        }
    }
}

fn makes_hold(kind: &str) -> bool {
    matches!(kind, "reserved" | "promoted")
}

/// What a writer knows of a sale's log: its last batch, its highest seq
/// (of the batches and the older log alike), the highest seq in the
/// older log of one document per change, and the highest seq a copy of
/// the sale in Redis handed out (`top` without the fresh seqs changes
/// were kept under): a copy whose seq is below it came back older.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LogTail {
    pub n: i64,
    pub top: i64,
    pub legacy: i64,
    pub made: i64,
}

/// What recording a batch of changes came to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Changes the log had already (copied twice): left out.
    pub copies: usize,
    /// Changes that came under a seq the log holds for another change:
    /// recorded under fresh seqs above the log's highest, with
    /// `restamped_from` the seq they came with.
    pub restamped: usize,
    /// The copies of the sale (their epochs; none: an entry that did not
    /// say) that made those changes.
    pub stale: Vec<Option<String>>,
}

/// A batch's head, without its changes.
#[derive(Deserialize)]
struct BatchHead {
    n: i64,
    top: i64,
    made: Option<i64>,
}

/// A batch with only the fields the summary counts.
#[derive(Deserialize)]
struct TallyBatch {
    changes: Vec<Counted<'static>>,
}

#[derive(Deserialize)]
struct TalliedBatch {
    tally: BatchTally,
}

/// The summary's counts of a sale's changes.
#[derive(Default)]
struct Tally {
    by_kind: HashMap<String, i64>,
    /// Holds made (`reserved`, `promoted`) by the second.
    per_second: HashMap<i64, i64>,
    /// The first change at or past the sale's total sold: its seq and time.
    sold_out: Option<(i64, bson::DateTime)>,
}

impl Tally {
    fn add(&mut self, t: BatchTally, total: i64) {
        for (kind, n) in t.kinds {
            *self.by_kind.entry(kind).or_default() += n;
        }
        for [second, n] in t.seconds {
            *self.per_second.entry(second).or_default() += n;
        }
        if let Some(p) = t.peak
            && p.sold >= total
            && self.sold_out.is_none_or(|(seq, _)| p.seq < seq)
        {
            self.sold_out = Some((p.seq, p.at));
        }
    }
}

/// How many times a writer tries the next place in the log before it
/// gives up for this pass (each miss means another writer took it).
const RECORD_TRIES: usize = 20;

impl Mongo {
    /// Records changes copied from Redis as the next batch of the sale's
    /// log after `tail`, and moves `tail` on. A change whose seq the log
    /// holds already is left out when it is the same change and kept
    /// under a fresh seq when it is another: each seq names one change.
    ///
    /// The check and the write are one step: the batch takes place
    /// `tail.n + 1`, which a unique index gives to one writer only, so a
    /// writer that wins it was checked against every batch before it. One
    /// that loses reads the places taken since and checks again.
    pub async fn record_changes(
        &self,
        sale: &SaleId,
        changes: &[StockEventDoc],
        tail: &mut LogTail,
    ) -> Result<Recorded, StoreError> {
        if changes.is_empty() {
            return Ok(Recorded::default());
        }
        for _ in 0..RECORD_TRIES {
            let (batch, recorded) = self.next_batch(sale, changes, tail).await?;
            let Some(batch) = batch else {
                return Ok(recorded);
            };
            let written = self
                .bounded(async {
                    match self.stock_batches.insert_one(&batch).await {
                        Ok(_) => Ok(true),
                        Err(e) if is_duplicate_key(&e) => Ok(false),
                        Err(e) => Err(e.into()),
                    }
                })
                .await?;
            if written {
                tail.n = batch.n;
                tail.top = batch.top;
                tail.made = batch.made.unwrap_or(batch.top);
                return Ok(recorded);
            }
            // Another writer took the place (or this one did, and the
            // answer was lost): read what came since and check again.
            *tail = self.log_tail(sale, *tail).await?;
        }
        Err(StoreError::Other(anyhow::anyhow!(
            "could not find the next place in the log of sale {sale}"
        )))
    }

    /// The batch that records `changes` after `tail`, none when the log
    /// has all of them.
    async fn next_batch(
        &self,
        sale: &SaleId,
        changes: &[StockEventDoc],
        tail: &LogTail,
    ) -> Result<(Option<StockBatchDoc>, Recorded), StoreError> {
        let low = changes.iter().map(|c| c.seq).min().unwrap_or(0);
        let high = changes.iter().map(|c| c.seq).max().unwrap_or(0);
        // Seqs above everything recorded need no look: the usual case.
        let recorded = if low > tail.top && tail.legacy == 0 {
            HashMap::new()
        } else {
            self.recorded_between(sale, low, high, tail).await?
        };
        let mut outcome = Recorded::default();
        let mut batch = Vec::with_capacity(changes.len());
        let mut again = Vec::new();
        // Each seq once: the first change under it, in the log or in this
        // batch (a Redis that came back older hands out seqs again while
        // those it handed out before may still be waiting in its stream).
        let mut taken: HashMap<i64, &StockEventDoc> = HashMap::new();
        for change in changes {
            match recorded
                .get(&change.seq)
                .or(taken.get(&change.seq).copied())
            {
                None => {
                    taken.insert(change.seq, change);
                    batch.push(change.clone());
                }
                Some(r) if same_change(r, change) => outcome.copies += 1,
                Some(_) => again.push(change.clone()),
            }
        }
        // A change under another's seq may have been kept under a fresh
        // one already, by a copy of it (rare: only after Redis came back
        // older, so the look may read the whole log).
        if !again.is_empty() {
            let kept = self.restamped_between(sale, low, high).await?;
            again.retain(|change| {
                let copy = kept
                    .iter()
                    .any(|k| k.restamped_from == Some(change.seq) && same_change(k, change));
                outcome.copies += usize::from(copy);
                !copy
            });
        }
        let kept_top = batch.iter().map(|c| c.seq).max().unwrap_or(0);
        let fresh = tail.top.max(kept_top) + 1..;
        outcome.restamped = again.len();
        for change in &again {
            if !outcome.stale.contains(&change.epoch) {
                outcome.stale.push(change.epoch.clone());
            }
        }
        for (seq, mut change) in fresh.zip(again) {
            change.restamped_from.get_or_insert(change.seq);
            change.seq = seq;
            batch.push(change);
        }
        if batch.is_empty() {
            return Ok((None, outcome));
        }
        batch.sort_by_key(|c| c.seq);
        let (first, last) = (batch[0].seq, batch[batch.len() - 1].seq);
        let doc = StockBatchDoc {
            sale_id: sale.to_string(),
            n: tail.n + 1,
            top: tail.top.max(last),
            made: Some(tail.made.max(kept_top)),
            first,
            last,
            tally: Some(BatchTally::of(batch.iter().map(StockEventDoc::counted))),
            changes: batch,
        };
        Ok((Some(doc), outcome))
    }

    /// The changes the log holds at seqs `low..=high`, in the batches (at
    /// least those up to `tail.n`) and in the older log.
    async fn recorded_between(
        &self,
        sale: &SaleId,
        low: i64,
        high: i64,
        tail: &LogTail,
    ) -> Result<HashMap<i64, StockEventDoc>, StoreError> {
        let id = sale.as_str();
        self.bounded(async {
            let batches: Vec<StockBatchDoc> = self
                .stock_batches
                .find(doc! {"sale_id": id, "last": {"$gte": low}, "first": {"$lte": high}})
                .await?
                .try_collect()
                .await?;
            let mut found: HashMap<i64, StockEventDoc> = batches
                .into_iter()
                .flat_map(|b| b.changes)
                .filter(|c| (low..=high).contains(&c.seq))
                .map(|c| (c.seq, c))
                .collect();
            if tail.legacy > 0 {
                let mut older = self
                    .stock_events
                    .find(doc! {"sale_id": id, "seq": {"$gte": low, "$lte": high}})
                    .await?;
                while let Some(c) = older.try_next().await? {
                    found.entry(c.seq).or_insert(c);
                }
            }
            Ok(found)
        })
        .await
    }

    /// The changes the log keeps under a fresh seq that came with a seq in
    /// `low..=high`.
    async fn restamped_between(
        &self,
        sale: &SaleId,
        low: i64,
        high: i64,
    ) -> Result<Vec<StockEventDoc>, StoreError> {
        let came_with = doc! {"$gte": low, "$lte": high};
        self.changes_where(sale, doc! {"restamped_from": came_with}, |c| {
            c.restamped_from.is_some_and(|s| (low..=high).contains(&s))
        })
        .await
    }

    /// The summary's counts of the older log (one document per change),
    /// counted by the server.
    async fn older_tally(&self, sale: &SaleId, total: i64) -> Result<Tally, StoreError> {
        let id = sale.as_str();
        let by_kind = aggregate(
            &self.stock_events,
            vec![
                doc! {"$match": {"sale_id": id}},
                doc! {"$group": {"_id": "$kind", "n": {"$sum": 1}}},
            ],
        )
        .await?;
        let per_second = aggregate(
            &self.stock_events,
            vec![
                doc! {"$match": {"sale_id": id, "kind": {"$in": ["reserved", "promoted"]}}},
                doc! {"$group": {"_id": "$second", "n": {"$sum": 1}}},
            ],
        )
        .await?;
        let sold_out = self
            .stock_events
            .find_one(doc! {"sale_id": id, "sold": {"$gte": total}})
            .sort(doc! {"seq": 1})
            .await?;
        Ok(Tally {
            by_kind: by_kind
                .iter()
                .filter_map(|d| Some((d.get_str("_id").ok()?.to_owned(), number(Some(d), "n"))))
                .collect(),
            per_second: per_second
                .iter()
                .filter_map(|d| {
                    let second = d.get("_id")?;
                    let second = second.as_i64().or(second.as_i32().map(i64::from))?;
                    Some((second, number(Some(d), "n")))
                })
                .collect(),
            sold_out: sold_out.map(|e| (e.seq, e.at)),
        })
    }

    /// The sale's log as far as it goes past `known`: its last batch and
    /// highest seq. Only batches past `known.n` and older changes above
    /// `known.legacy` are asked for: a server that reads every match
    /// before it sorts and stops (the MongoDB-wire server used in tests
    /// does) then reads what was recorded since, not the whole log.
    pub async fn log_tail(&self, sale: &SaleId, known: LogTail) -> Result<LogTail, StoreError> {
        let id = sale.as_str();
        self.bounded(async {
            let head = self
                .stock_batches
                .clone_with_type::<BatchHead>()
                .find_one(doc! {"sale_id": id, "n": {"$gt": known.n}})
                .projection(doc! {"_id": 0, "n": 1, "top": 1, "made": 1})
                .sort(doc! {"n": -1})
                .await?;
            let legacy = self
                .stock_events
                .find_one(doc! {"sale_id": id, "seq": {"$gt": known.legacy}})
                .sort(doc! {"seq": -1})
                .await?
                .map_or(known.legacy, |e| e.seq);
            let (n, top, made) = head.map_or((known.n, known.top, known.made), |h| {
                (h.n, h.top, h.made.unwrap_or(h.top))
            });
            Ok(LogTail {
                n,
                top: top.max(known.top).max(legacy),
                legacy,
                made: made.max(known.made).max(legacy),
            })
        })
        .await
    }

    /// The seq of the last change recorded for a sale (0 when none).
    pub async fn last_event_seq(&self, sale: &SaleId) -> Result<i64, StoreError> {
        Ok(self.log_tail(sale, LogTail::default()).await?.top)
    }

    /// A sale's recorded changes, in seq order.
    pub async fn event_log(&self, sale: &SaleId) -> Result<Vec<StockEventDoc>, StoreError> {
        self.changes_where(sale, doc! {}, |_| true).await
    }

    /// What a sale's waiting list went through, in seq order: joins,
    /// leaves, promotions and how they ended, closure, and the rebuilds
    /// (`restored`) that reset it. Of the batches up to `upto` only (the
    /// log as a rebuild read its tail), the older log whole.
    pub async fn waitlist_events(
        &self,
        sale: &SaleId,
        upto: i64,
    ) -> Result<Vec<StockEventDoc>, StoreError> {
        let kinds = [
            "waitlist_joined",
            "waitlist_left",
            "promoted",
            "confirmed",
            "cancelled",
            "expired",
            "sale_closed",
            "line_reopened",
            "restored",
        ];
        let mut changes = self
            .changes_where(sale, doc! {"kind": {"$in": kinds.as_slice()}}, |c| {
                kinds.contains(&c.kind.as_str())
            })
            .await?;
        changes.retain(|c| c.batch <= upto);
        Ok(changes)
    }

    /// Whether the log holds a change whose fields match `filter`.
    pub async fn has_change(&self, sale: &SaleId, filter: Document) -> Result<bool, StoreError> {
        let id = sale.as_str();
        self.bounded(async {
            let mut older = filter.clone();
            older.insert("sale_id", id);
            Ok(self.stock_events.find_one(older).await?.is_some()
                || self
                    .stock_batches
                    .clone_with_type::<BatchHead>()
                    .find_one(doc! {"sale_id": id, "changes": {"$elemMatch": filter}})
                    .projection(doc! {"_id": 0, "n": 1, "top": 1})
                    .await?
                    .is_some())
        })
        .await
    }

    /// The changes of a sale's log that `keep` keeps, in seq order: of the
    /// batches that hold a change matching `filter` (fields of a change),
    /// and of the older log's changes matching it. A batch is read whole,
    /// so `keep` says again which of its changes are wanted.
    async fn changes_where(
        &self,
        sale: &SaleId,
        filter: Document,
        keep: impl Fn(&StockEventDoc) -> bool,
    ) -> Result<Vec<StockEventDoc>, StoreError> {
        let id = sale.as_str();
        let mut batches = doc! {"sale_id": id};
        if !filter.is_empty() {
            batches.insert("changes", doc! {"$elemMatch": filter.clone()});
        }
        let mut older = filter;
        older.insert("sale_id", id);
        let (batches, mut log): (Vec<StockBatchDoc>, Vec<StockEventDoc>) = self
            .bounded_long(async {
                let batches = self.stock_batches.find(batches).await?.try_collect();
                let older = self.stock_events.find(older).await?.try_collect();
                Ok((batches.await?, older.await?))
            })
            .await?;
        log.extend(
            batches
                .into_iter()
                .flat_map(|b| {
                    let n = b.n;
                    b.changes.into_iter().map(move |c| (n, c))
                })
                .filter(|(_, c)| keep(c))
                .map(|(n, mut c)| {
                    c.sale_id = id.to_owned();
                    c.batch = n;
                    c
                }),
        );
        log.sort_by_key(|c| c.seq);
        Ok(log)
    }

    pub async fn summary_figures(
        &self,
        sale: &SaleId,
        total: i64,
    ) -> Result<SummaryFigures, StoreError> {
        self.bounded(async {
            let id = sale.as_str();
            let totals = |orders| {
                aggregate(
                    orders,
                    vec![
                        doc! {"$match": {"sale_id": id}},
                        doc! {"$group": {
                            "_id": null,
                            "units": {"$sum": "$quantity"},
                            "revenue": {"$sum": "$total_cents"},
                            "orders": {"$sum": 1},
                        }},
                    ],
                )
            };
            let live = totals(&self.orders).await?;
            let cancelled = totals(&self.cancelled_orders).await?;
            // The older log counted by the server; the batches here: each
            // one's tally, and the changes (only the fields counted) of
            // batches written before tallies.
            let mut tally = self.older_tally(sale, total).await?;
            let mut tallied = self
                .stock_batches
                .clone_with_type::<TalliedBatch>()
                .find(doc! {"sale_id": id, "tally": {"$exists": true}})
                .projection(doc! {"_id": 0, "tally": 1})
                .await?;
            while let Some(batch) = tallied.try_next().await? {
                tally.add(batch.tally, total);
            }
            let mut untallied = self
                .stock_batches
                .clone_with_type::<TallyBatch>()
                .find(doc! {"sale_id": id, "tally": {"$exists": false}})
                .projection(doc! {"_id": 0, "changes.seq": 1, "changes.kind": 1,
                "changes.second": 1, "changes.sold": 1, "changes.at": 1})
                .await?;
            while let Some(batch) = untallied.try_next().await? {
                tally.add(BatchTally::of(batch.changes), total);
            }
            let Tally {
                by_kind,
                per_second,
                sold_out,
            } = tally;
            let (live, cancelled) = (live.first(), cancelled.first());
            Ok(SummaryFigures {
                units_sold: number(live, "units"),
                orders: number(live, "orders"),
                revenue_cents: number(live, "revenue"),
                orders_cancelled: number(cancelled, "orders"),
                units_returned: number(cancelled, "units"),
                events: by_kind,
                peak_holds_per_second: per_second.into_values().max().unwrap_or(0),
                sold_out_at: sold_out.map(|(_, at)| at),
            })
        })
        .await
    }
}

/// Whether two records describe the same change (a copy made twice).
fn same_change(a: &StockEventDoc, b: &StockEventDoc) -> bool {
    (
        a.kind.as_str(),
        &a.reservation_id,
        &a.buyer,
        a.at,
        a.available,
        a.held,
        a.sold,
    ) == (
        b.kind.as_str(),
        &b.reservation_id,
        &b.buyer,
        b.at,
        b.available,
        b.held,
        b.sold,
    )
}
