//! Orders: written once per confirmed hold, read by buyers, admins and the
//! rebuild of a sale's live state.

use std::collections::HashMap;

use bson::doc;
use futures_util::TryStreamExt;

use mongodb::{Collection, error::ErrorKind};
use serde::Deserialize;

use super::{DUPLICATE_KEY, Mongo, OrderDoc, never_sent};

/// The field that marks a fence document in `orders`.
pub(super) const VOID: &str = "void";
/// The field that marks a fence left by a cancelled order (its tombstone).
pub(super) const CANCELLED: &str = "cancelled";
use crate::{
    ids::{ReservationId, SaleId},
    store::StoreError,
};

/// How an order insert ended.
#[derive(Debug)]
pub enum OrderWrite {
    /// Durable (majority + journal).
    Inserted,
    /// A unique index refused it: the reservation was confirmed before, or
    /// MongoDB already counts one of its units or purchase slots as sold.
    Refused,
    /// It certainly never reached a server: no order was written.
    NotSent(StoreError),
    /// It may or may not have landed.
    Unknown(StoreError),
}

/// What `orders` holds under a reservation id.
#[derive(Debug)]
// Returned once per lookup and matched at once: boxing the order would
// only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum OrderLookup {
    Order(OrderDoc),
    /// A fence: the reservation's confirm was given up, and no order can
    /// be written for it any more.
    Voided,
    /// A fence left by its order's cancel: the order is in
    /// `cancelled_orders`, and no other can be written under its id.
    Cancelled,
    Absent,
}

/// How fencing a reservation's order went.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Fence {
    /// No order can land for it from now on.
    Voided,
    /// The order had landed: the confirm went through.
    Ordered(OrderDoc),
}

/// What MongoDB has sold of a sale: every sold serial (ascending) and each
/// buyer's bought count.
#[derive(Debug, Default)]
pub struct SoldUnits {
    pub serials: Vec<i64>,
    pub bought: HashMap<String, i64>,
    /// Cancelled orders: their units are free, and a late return of them
    /// must give nothing back twice.
    pub returned: Vec<String>,
}

/// What a rebuild reads of an order.
#[derive(Deserialize)]
struct SoldOrder {
    #[serde(rename = "_id")]
    id: String,
    user_id: String,
    quantity: i64,
    #[serde(with = "super::one_or_many")]
    units: Vec<i64>,
}

impl Mongo {
    /// Writes orders in one unordered `insert_many` (majority + journal)
    /// and says how each one ended, in the order given: a unique index
    /// refusing one order answers only that order.
    pub async fn insert_orders(&self, orders: &[&OrderDoc]) -> Vec<OrderWrite> {
        let write = self
            .orders
            .insert_many(orders.iter().copied())
            .ordered(false);
        let err = match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(_)) => return orders.iter().map(|_| OrderWrite::Inserted).collect(),
            Ok(Err(err)) => err,
            // Sent, maybe: the write may still land.
            Err(_) => {
                let late = || {
                    OrderWrite::Unknown(StoreError::Unavailable(format!(
                        "mongodb did not answer within {:?}",
                        self.timeout
                    )))
                };
                return orders.iter().map(|_| late()).collect();
            }
        };
        let ErrorKind::InsertMany(failure) = &*err.kind else {
            let unsent = never_sent(&err);
            return orders
                .iter()
                .map(|_| match unsent {
                    true => OrderWrite::NotSent(StoreError::from(&err)),
                    false => OrderWrite::Unknown(StoreError::from(&err)),
                })
                .collect();
        };
        let refused: HashMap<usize, i32> = failure
            .write_errors
            .iter()
            .flatten()
            .map(|e| (e.index, e.code))
            .collect();
        (0..orders.len())
            .map(|i| match refused.get(&i) {
                Some(&DUPLICATE_KEY) => OrderWrite::Refused,
                // Refused for another reason: this order was not written.
                Some(code) => OrderWrite::NotSent(StoreError::Other(anyhow::anyhow!(
                    "mongodb refused an order: code {code}"
                ))),
                // Written, but a majority may not have it yet.
                None if failure.write_concern_error.is_some() => {
                    OrderWrite::Unknown(StoreError::from(&err))
                }
                None => OrderWrite::Inserted,
            })
            .collect()
    }

    /// A buyer's order of a reservation (another buyer's reads as absent).
    pub async fn order_of(
        &self,
        rid: &ReservationId,
        buyer: &str,
    ) -> Result<OrderLookup, StoreError> {
        Ok(match self.lookup(rid.as_str()).await? {
            OrderLookup::Order(o) if o.user_id != buyer => OrderLookup::Absent,
            found => found,
        })
    }

    /// The order of a reservation, whoever made it.
    pub async fn order(&self, rid: &str) -> Result<Option<OrderDoc>, StoreError> {
        Ok(match self.lookup(rid).await? {
            OrderLookup::Order(o) => Some(o),
            OrderLookup::Voided | OrderLookup::Cancelled | OrderLookup::Absent => None,
        })
    }

    /// What `orders` holds under `_id`, read with majority read concern so
    /// what it saw cannot roll back.
    pub(super) async fn lookup(&self, id: &str) -> Result<OrderLookup, StoreError> {
        self.bounded(async {
            let found = self.orders_read.find_one(doc! {"_id": id}).await?;
            Ok(match found {
                None => OrderLookup::Absent,
                Some(d) if d.get_bool(CANCELLED).unwrap_or(false) => OrderLookup::Cancelled,
                Some(d) if d.get_bool(VOID).unwrap_or(false) => OrderLookup::Voided,
                Some(d) => OrderLookup::Order(
                    bson::from_document(d).map_err(|e| anyhow::anyhow!("bad order: {e}"))?,
                ),
            })
        })
        .await
    }

    /// Makes sure no order can land for a reservation from now on, unless
    /// one already has: claims its `_id` with a fence document (its own
    /// `sale_id`, so it meets no other order in the unique indexes).
    pub async fn fence_order(
        &self,
        rid: &ReservationId,
        at: bson::DateTime,
    ) -> Result<Fence, StoreError> {
        let fence = doc! {
            "_id": rid.as_str(), VOID: true, "sale_id": format!("void:{rid}"),
            "user_id": "", "voided_at": at,
        };
        let inserted = self
            .bounded(async {
                match self.orders_raw.insert_one(fence).await {
                    Ok(_) => Ok(true),
                    Err(e) if super::is_duplicate_key(&e) => Ok(false),
                    Err(e) => Err(e.into()),
                }
            })
            .await?;
        if inserted {
            return Ok(Fence::Voided);
        }
        match self.lookup(rid.as_str()).await? {
            OrderLookup::Order(order) => Ok(Fence::Ordered(order)),
            OrderLookup::Voided | OrderLookup::Cancelled => Ok(Fence::Voided),
            OrderLookup::Absent => Err(StoreError::Other(anyhow::anyhow!(
                "{rid}: refused as a duplicate, then not found"
            ))),
        }
    }

    /// A buyer's orders, newest first.
    pub async fn orders_of_buyer(
        &self,
        buyer: &str,
        limit: i64,
    ) -> Result<Vec<OrderDoc>, StoreError> {
        self.newest_of_buyer(&self.orders, buyer, limit).await
    }

    /// A page of a sale's orders by id, after `cursor`.
    pub async fn orders_page(
        &self,
        sale: &SaleId,
        limit: i64,
        cursor: Option<&str>,
    ) -> Result<Vec<OrderDoc>, StoreError> {
        self.page_of_sale(&self.orders, sale, limit, cursor).await
    }

    /// `orders` or `cancelled_orders`: a buyer's, newest first.
    pub(super) async fn newest_of_buyer(
        &self,
        orders: &Collection<OrderDoc>,
        buyer: &str,
        limit: i64,
    ) -> Result<Vec<OrderDoc>, StoreError> {
        self.bounded(async {
            Ok(orders
                .find(doc! {"user_id": buyer})
                .sort(doc! {"created_at": -1})
                .limit(limit)
                .await?
                .try_collect()
                .await?)
        })
        .await
    }

    /// `orders` or `cancelled_orders`: a sale's by id, after `cursor`. An
    /// order's id is its reservation's, `<sale id>-...`, so the sale's
    /// orders are one range of the `_id` index: the server reads the page
    /// from it in order, not every order of the sale to sort them.
    pub(super) async fn page_of_sale(
        &self,
        orders: &Collection<OrderDoc>,
        sale: &SaleId,
        limit: i64,
        cursor: Option<&str>,
    ) -> Result<Vec<OrderDoc>, StoreError> {
        let (first, past) = (format!("{sale}-"), format!("{sale}."));
        let after = cursor.map_or(first.as_str(), |c| c.max(first.as_str()));
        let filter = doc! {"sale_id": sale.as_str(), "_id": {"$gt": after, "$lt": past}};
        self.bounded(async {
            Ok(orders
                .find(filter)
                .sort(doc! {"_id": 1})
                .limit(limit)
                .await?
                .try_collect()
                .await?)
        })
        .await
    }

    /// Every order of a sale.
    pub async fn orders_of_sale(&self, sale: &SaleId) -> Result<Vec<OrderDoc>, StoreError> {
        self.bounded(async {
            Ok(self
                .orders
                .find(doc! {"sale_id": sale.as_str()})
                .await?
                .try_collect()
                .await?)
        })
        .await
    }

    /// Which of `units` MongoDB has sold in other orders.
    pub async fn sold_among(&self, sale: &SaleId, units: &[i64]) -> Result<Vec<i64>, StoreError> {
        self.bounded(async {
            let taken: Vec<OrderDoc> = self
                .orders
                .find(doc! {"sale_id": sale.as_str(), "units": {"$in": units}})
                .await?
                .try_collect()
                .await?;
            Ok(taken
                .iter()
                .flat_map(|o| o.units.iter())
                .filter(|u| units.contains(u))
                .copied()
                .collect())
        })
        .await
    }

    /// Units a buyer has bought of a sale.
    pub async fn bought_by(&self, sale: &SaleId, buyer: &str) -> Result<i64, StoreError> {
        self.bounded(async {
            let orders: Vec<OrderDoc> = self
                .orders
                .find(doc! {"sale_id": sale.as_str(), "user_id": buyer})
                .await?
                .try_collect()
                .await?;
            Ok(orders.iter().map(|o| o.quantity).sum())
        })
        .await
    }

    /// Everything a sale has sold, for a rebuild of its live state.
    pub async fn sold_units(&self, sale: &SaleId) -> Result<SoldUnits, StoreError> {
        // A cancel copies the order into `cancelled_orders`, then takes it
        // out of `orders`. Cancelled ids are read before and after the
        // orders (which stream): one cancelled in between may have been
        // counted (then its units were, and its return is still to come)
        // or not (then it is returned already, as far as this rebuild goes).
        let before = self.cancelled_ids(sale).await?;
        let mut sold = self
            .bounded_long(async {
                let mut sold = SoldUnits::default();
                let mut orders = self
                    .orders
                    .clone_with_type::<SoldOrder>()
                    .find(doc! {"sale_id": sale.as_str()})
                    .projection(doc! {"units": 1, "user_id": 1, "quantity": 1})
                    .await?;
                while let Some(order) = orders.try_next().await? {
                    // Cancelled, and not yet out of `orders`.
                    if before.contains(&order.id) {
                        continue;
                    }
                    sold.serials.extend(order.units);
                    *sold.bought.entry(order.user_id).or_default() += order.quantity;
                }
                sold.serials.sort_unstable();
                Ok(sold)
            })
            .await?;
        let after = self.cancelled_ids(sale).await?;
        for id in after.difference(&before) {
            let Some(order) = self.cancelled_order(id).await? else {
                continue;
            };
            let counted = order
                .units
                .first()
                .is_some_and(|u| sold.serials.binary_search(u).is_ok());
            if !counted {
                sold.returned.push(id.clone());
            }
        }
        sold.returned.extend(before);
        Ok(sold)
    }
}
