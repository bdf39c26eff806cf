//! The stock event log, and the report figures computed from it and from
//! the orders.

use bson::{Document, doc};
use futures_util::TryStreamExt;
use mongodb::{Collection, error::ErrorKind};

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
    pub events: std::collections::HashMap<String, i64>,
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

impl Mongo {
    /// Writes changes copied from Redis; returns the indices of those the
    /// unique `(sale_id, seq)` index refused: a seq recorded before.
    pub async fn insert_events(&self, events: &[StockEventDoc]) -> Result<Vec<usize>, StoreError> {
        self.bounded(async {
            if events.is_empty() {
                return Ok(Vec::new());
            }
            match self.stock_events.insert_many(events).ordered(false).await {
                Ok(_) => Ok(Vec::new()),
                Err(e) if is_duplicate_key(&e) => match &*e.kind {
                    ErrorKind::InsertMany(failure) => Ok(failure
                        .write_errors
                        .iter()
                        .flatten()
                        .map(|w| w.index)
                        .collect()),
                    _ => Ok((0..events.len()).collect()),
                },
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    /// The recorded changes of a sale at these seqs.
    pub async fn events_at(
        &self,
        sale: &SaleId,
        seqs: &[i64],
    ) -> Result<Vec<StockEventDoc>, StoreError> {
        let (Some(&low), Some(&high)) = (seqs.iter().min(), seqs.iter().max()) else {
            return Ok(Vec::new());
        };
        // A range on the unique (sale_id, seq) index, which every server
        // walks as a range; `$in` is not planned as well everywhere.
        self.bounded(async {
            let found: Vec<StockEventDoc> = self
                .stock_events
                .find(doc! {"sale_id": sale.as_str(), "seq": {"$gte": low, "$lte": high}})
                .await?
                .try_collect()
                .await?;
            Ok(found
                .into_iter()
                .filter(|e| seqs.contains(&e.seq))
                .collect())
        })
        .await
    }

    /// The seq of the last change recorded for a sale (0 when none).
    pub async fn last_event_seq(&self, sale: &SaleId) -> Result<i64, StoreError> {
        self.last_event_seq_from(sale, 0).await
    }

    /// The seq of the last change recorded for a sale, known to be at
    /// least `known`. Only the changes above `known` are asked for: a
    /// server that reads every match before it sorts and stops (the
    /// MongoDB-wire server used in tests does) then reads what was
    /// recorded since, not the whole log.
    pub async fn last_event_seq_from(&self, sale: &SaleId, known: i64) -> Result<i64, StoreError> {
        self.bounded(async {
            Ok(self
                .stock_events
                .find_one(doc! {"sale_id": sale.as_str(), "seq": {"$gt": known}})
                .sort(doc! {"seq": -1})
                .await?
                .map_or(known, |e| e.seq))
        })
        .await
    }

    /// A sale's recorded changes, in seq order.
    pub async fn event_log(&self, sale: &SaleId) -> Result<Vec<StockEventDoc>, StoreError> {
        self.bounded(async {
            Ok(self
                .stock_events
                .find(doc! {"sale_id": sale.as_str()})
                .sort(doc! {"seq": 1})
                .await?
                .try_collect()
                .await?)
        })
        .await
    }

    /// What a sale's waiting list went through, in seq order: joins,
    /// leaves, promotions and how they ended, closure.
    pub async fn waitlist_events(&self, sale: &SaleId) -> Result<Vec<StockEventDoc>, StoreError> {
        self.bounded_long(async {
            let kinds = [
                "waitlist_joined",
                "waitlist_left",
                "promoted",
                "confirmed",
                "cancelled",
                "expired",
                "sale_closed",
            ];
            Ok(self
                .stock_events
                .find(doc! {"sale_id": sale.as_str(), "kind": {"$in": kinds.as_slice()}})
                .sort(doc! {"seq": 1})
                .await?
                .try_collect()
                .await?)
        })
        .await
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
            let by_kind = aggregate(
                &self.stock_events,
                vec![
                    doc! {"$match": {"sale_id": id}},
                    doc! {"$group": {"_id": "$kind", "n": {"$sum": 1}}},
                ],
            )
            .await?;
            let peak = aggregate(
                &self.stock_events,
                vec![
                    doc! {"$match": {"sale_id": id, "kind": {"$in": ["reserved", "promoted"]}}},
                    doc! {"$group": {"_id": "$second", "n": {"$sum": 1}}},
                    doc! {"$sort": {"n": -1}},
                    doc! {"$limit": 1},
                ],
            )
            .await?;
            let sold_out = self
                .stock_events
                .find_one(doc! {"sale_id": id, "sold": {"$gte": total}})
                .sort(doc! {"seq": 1})
                .await?;
            let (live, cancelled) = (live.first(), cancelled.first());
            Ok(SummaryFigures {
                units_sold: number(live, "units"),
                orders: number(live, "orders"),
                revenue_cents: number(live, "revenue"),
                orders_cancelled: number(cancelled, "orders"),
                units_returned: number(cancelled, "units"),
                events: by_kind
                    .iter()
                    .filter_map(|d| Some((d.get_str("_id").ok()?.to_owned(), number(Some(d), "n"))))
                    .collect(),
                peak_holds_per_second: number(peak.first(), "n"),
                sold_out_at: sold_out.map(|e| e.at),
            })
        })
        .await
    }
}
