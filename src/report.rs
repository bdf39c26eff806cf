//! Reports for admins, computed from MongoDB (orders and the stock event
//! log), so they are right after any restart of Redis or of the servers.

use bson::{Document, doc};
use futures_util::TryStreamExt;
use poem_openapi::Object;

use crate::{
    engine::OrderView,
    error::ApiError,
    state::AppState,
    store::{StoreError, mongo::find_all},
};

#[derive(Debug, Object)]
pub struct OrdersPage {
    pub orders: Vec<OrderView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Object)]
pub struct SaleSummary {
    pub sale_id: String,
    pub total: i64,
    pub units_sold: i64,
    pub orders: i64,
    /// Sum of the orders, in minor units of `currency`.
    pub revenue_cents: i64,
    pub currency: String,
    /// Holds made by reserving or by promotion from the waiting list.
    pub holds_created: i64,
    pub holds_confirmed: i64,
    pub holds_cancelled: i64,
    pub holds_expired: i64,
    pub promotions: i64,
    pub waitlist_joins: i64,
    /// holds_confirmed / holds_created (0 when no hold was made).
    pub conversion: f64,
    /// Seconds from `starts_at` to the change that sold the last unit.
    pub sold_out_after_seconds: Option<f64>,
    /// Most holds made within one second.
    pub peak_reservations_per_second: i64,
}

impl AppState {
    pub async fn sale_orders(
        &self,
        sale_id: &str,
        limit: i64,
        cursor: Option<&str>,
    ) -> Result<OrdersPage, ApiError> {
        if !(1..=500).contains(&limit) {
            return Err(ApiError::invalid("limit must be 1..=500"));
        }
        self.find_sale(sale_id).await?;
        let mut filter = doc! {"sale_id": sale_id};
        if let Some(cursor) = cursor {
            filter.insert("_id", doc! {"$gt": cursor});
        }
        let orders = find_all(&self.mongo.orders, filter, doc! {"_id": 1}, limit).await?;
        let next_cursor = (orders.len() as i64 == limit)
            .then(|| orders.last().map(|o| o.id.clone()))
            .flatten();
        Ok(OrdersPage {
            orders: orders.into_iter().map(OrderView::from).collect(),
            next_cursor,
        })
    }

    pub async fn sale_summary(&self, sale_id: &str) -> Result<SaleSummary, ApiError> {
        let sale = self.find_sale(sale_id).await?;
        let totals = self
            .aggregate(
                self.mongo.orders.clone_with_type(),
                vec![
                    doc! {"$match": {"sale_id": sale_id}},
                    doc! {"$group": {
                        "_id": null,
                        "units": {"$sum": "$quantity"},
                        "revenue": {"$sum": "$total_cents"},
                        "orders": {"$sum": 1},
                    }},
                ],
            )
            .await?;
        let totals = totals.first();
        let number = |d: Option<&Document>, k: &str| {
            d.and_then(|d| d.get(k))
                .and_then(|v| v.as_i64().or_else(|| v.as_i32().map(i64::from)))
                .unwrap_or(0)
        };
        let by_kind = self
            .aggregate(
                self.mongo.stock_events.clone_with_type(),
                vec![
                    doc! {"$match": {"sale_id": sale_id}},
                    doc! {"$group": {"_id": "$kind", "n": {"$sum": 1}}},
                ],
            )
            .await?;
        let count = |kind: &str| {
            number(
                by_kind.iter().find(|d| d.get_str("_id").ok() == Some(kind)),
                "n",
            )
        };
        let peak = self
            .aggregate(
                self.mongo.stock_events.clone_with_type(),
                vec![
                    doc! {"$match": {"sale_id": sale_id, "kind": {"$in": ["reserved", "promoted"]}}},
                    doc! {"$group": {"_id": "$second", "n": {"$sum": 1}}},
                    doc! {"$sort": {"n": -1}},
                    doc! {"$limit": 1},
                ],
            )
            .await?;
        let sold_out = self
            .mongo
            .stock_events
            .find_one(doc! {"sale_id": sale_id, "sold": {"$gte": sale.total}})
            .sort(doc! {"seq": 1})
            .await
            .map_err(StoreError::from)?;
        let holds_created = count("reserved") + count("promoted");
        let holds_confirmed = count("confirmed");
        Ok(SaleSummary {
            sale_id: sale.id.clone(),
            total: sale.total,
            units_sold: number(totals, "units"),
            orders: number(totals, "orders"),
            revenue_cents: number(totals, "revenue"),
            currency: sale.currency.clone(),
            holds_created,
            holds_confirmed,
            holds_cancelled: count("cancelled"),
            holds_expired: count("expired"),
            promotions: count("promoted"),
            waitlist_joins: count("waitlist_joined"),
            conversion: if holds_created == 0 {
                0.0
            } else {
                holds_confirmed as f64 / holds_created as f64
            },
            sold_out_after_seconds: sold_out.map(|e| {
                (e.at.timestamp_millis() - sale.starts_at.timestamp_millis()) as f64 / 1000.0
            }),
            peak_reservations_per_second: number(peak.first(), "n"),
        })
    }

    async fn aggregate(
        &self,
        collection: mongodb::Collection<Document>,
        pipeline: Vec<Document>,
    ) -> Result<Vec<Document>, ApiError> {
        Ok(collection
            .aggregate(pipeline)
            .await
            .map_err(StoreError::from)?
            .try_collect()
            .await
            .map_err(StoreError::from)?)
    }
}
