//! Reports for admins, computed from MongoDB (orders and the stock event
//! log), so they are right after any restart of Redis or of the servers.

use poem_openapi::Object;

use crate::{
    error::ApiError,
    holds::OrderView,
    ids::SaleId,
    recovery::Recovery,
    store::mongo::OrderDoc,
    store::{Store, mongo::LobbyEntryDoc},
};

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
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
    /// Seconds from `starts_at` to the change that sold the last unit;
    /// absent while units are left.
    #[oai(skip_serializing_if_is_none)]
    pub sold_out_after_seconds: Option<f64>,
    /// Most holds made within one second.
    pub peak_reservations_per_second: i64,
    /// The lobby, for a sale with one.
    #[oai(skip_serializing_if_is_none)]
    pub lobby: Option<LobbySummary>,
    /// Payments that came after their hold ended (`GET /admin/refunds`):
    /// how many, and their sum in minor units.
    pub refunds_due: i64,
    pub refunds_due_cents: i64,
    /// Orders cancelled, and the units they gave back (not in
    /// `units_sold`, `orders` or `revenue_cents`).
    pub orders_cancelled: i64,
    pub units_returned: i64,
}

/// A lobby's figures, from its entries in MongoDB.
#[derive(Debug, Object)]
pub struct LobbySummary {
    pub joined: i64,
    pub admitted: i64,
    /// Admissions that made a hold or a place in the waiting list.
    pub admissions_used: i64,
    /// Admissions that ran out unused (their turns went to the next buyers).
    pub admissions_lapsed: i64,
    /// Seconds from joining (or the start, for those who joined before it)
    /// to admission: the median and the 95th percentile of those admitted.
    pub wait_p50_seconds: f64,
    pub wait_p95_seconds: f64,
}

impl LobbySummary {
    pub fn of(entries: &[LobbyEntryDoc], starts_ms: i64) -> Self {
        let mut waits: Vec<i64> = entries
            .iter()
            .filter_map(|e| {
                let admitted = e.admitted_at?.timestamp_millis();
                Some(admitted - e.joined_at.timestamp_millis().max(starts_ms))
            })
            .collect();
        waits.sort_unstable();
        let quantile = |q: f64| match waits.len() {
            0 => 0.0,
            n => waits[((n - 1) as f64 * q).round() as usize].max(0) as f64 / 1000.0,
        };
        Self {
            joined: entries.len() as i64,
            admitted: waits.len() as i64,
            admissions_used: entries.iter().filter(|e| e.used).count() as i64,
            admissions_lapsed: entries.iter().filter(|e| e.lapsed).count() as i64,
            wait_p50_seconds: quantile(0.5),
            wait_p95_seconds: quantile(0.95),
        }
    }
}

#[derive(Clone)]
pub struct Reports {
    store: Store,
    recovery: Recovery,
}

impl Reports {
    pub fn new(store: Store, recovery: Recovery) -> Self {
        Self { store, recovery }
    }

    pub async fn orders(
        &self,
        sale: &SaleId,
        limit: i64,
        cursor: Option<&str>,
    ) -> Result<OrdersPage, ApiError> {
        self.recovery.sale_doc(sale).await?;
        let mongo = &self.store.mongo;
        // Live and cancelled orders, merged by id: a page of each holds
        // the page of both (an order in both, a cancel cut off midway, is
        // the cancelled one).
        let mut by_id: std::collections::BTreeMap<String, OrderDoc> = mongo
            .orders_page(sale, limit, cursor)
            .await?
            .into_iter()
            .map(|o| (o.id.clone(), o))
            .collect();
        for o in mongo.cancelled_page(sale, limit, cursor).await? {
            by_id.insert(o.id.clone(), o);
        }
        let orders: Vec<OrderDoc> = by_id.into_values().take(limit.max(0) as usize).collect();
        let next_cursor = (orders.len() as i64 == limit)
            .then(|| orders.last().map(|o| o.id.clone()))
            .flatten();
        Ok(OrdersPage {
            orders: orders.into_iter().map(OrderView::from).collect(),
            next_cursor,
        })
    }

    pub async fn summary(&self, sale: &SaleId) -> Result<SaleSummary, ApiError> {
        let doc = self.recovery.sale_doc(sale).await?;
        let f = self.store.mongo.summary_figures(sale, doc.total).await?;
        let lobby = match doc.lobby {
            Some(_) => Some(LobbySummary::of(
                &self.store.mongo.all_lobby_entries(sale).await?,
                doc.starts_at.timestamp_millis(),
            )),
            None => None,
        };
        let (refunds_due, refunds_due_cents) = self.store.mongo.refunds_due(sale).await?;
        let count = |kind: &str| f.events.get(kind).copied().unwrap_or(0);
        let holds_created = count("reserved") + count("promoted");
        let holds_confirmed = count("confirmed");
        Ok(SaleSummary {
            sale_id: doc.id.clone(),
            total: doc.total,
            units_sold: f.units_sold,
            orders: f.orders,
            revenue_cents: f.revenue_cents,
            currency: doc.currency.clone(),
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
            sold_out_after_seconds: f.sold_out_at.map(|at| {
                (at.timestamp_millis() - doc.starts_at.timestamp_millis()) as f64 / 1000.0
            }),
            peak_reservations_per_second: f.peak_holds_per_second,
            lobby,
            refunds_due,
            refunds_due_cents,
            orders_cancelled: f.orders_cancelled,
            units_returned: f.units_returned,
        })
    }
}
