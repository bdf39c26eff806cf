//! Cancelled orders. A cancel copies the order, marked cancelled, into
//! `cancelled_orders` first, then replaces it in `orders` with a fence (its
//! tombstone), which frees its units and slots in the unique indexes (the
//! database still refuses oversell and over-limit) and keeps its `_id`: no
//! other order can land under that reservation id, whatever a Redis copy
//! older than the cancel says of its hold. Then Redis gets the units back
//! and the copy is marked returned. An order in both collections (a cancel
//! cut off between the two writes) counts as cancelled: everything that
//! reads a sale's orders for its state leaves it out, and finishing the
//! cancel removes it from `orders`.

use std::collections::HashSet;

use bson::{DateTime, doc};
use futures_util::TryStreamExt;

use super::{
    CancelDoc, Mongo, OrderDoc, is_duplicate_key,
    messages::Message,
    orders::{CANCELLED, OrderLookup, VOID},
};
use crate::{ids::SaleId, store::StoreError};

/// Why and by whom an order is cancelled.
#[derive(Debug, Clone)]
pub struct CancelRequest {
    pub at: DateTime,
    pub reason: String,
    pub by: String,
}

impl Mongo {
    /// Cancels an order, once: returns the order as it is after the call
    /// (cancelled by this call or an earlier one), or None when there is
    /// no such order.
    pub async fn cancel_order(
        &self,
        id: &str,
        request: &CancelRequest,
    ) -> Result<Option<OrderDoc>, StoreError> {
        if let Some(done) = self.cancelled_order(id).await? {
            self.leave_sale(&done).await?;
            return Ok(Some(done));
        }
        let Some(mut order) = self.order(id).await? else {
            return Ok(None);
        };
        order.cancelled = Some(Box::new(CancelDoc {
            at: request.at,
            reason: request.reason.clone(),
            by: request.by.clone(),
            returned: false,
        }));
        // Its `order.cancelled` message: staged before, ready after.
        let message = [Message::order_cancelled(&order)];
        let message = self.stage_messages(&message).await?;
        let inserted = self
            .bounded(async {
                match self.cancelled_orders.insert_one(&order).await {
                    Ok(_) => Ok(true),
                    Err(e) if is_duplicate_key(&e) => Ok(false),
                    Err(e) => Err(e.into()),
                }
            })
            .await?;
        // A cancel that raced this one wrote first: that one stands.
        let order = match inserted {
            true => order,
            false => self
                .cancelled_order(id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("cancelled order {id} is gone"))?,
        };
        self.ready_messages(&message).await?;
        self.leave_sale(&order).await?;
        Ok(Some(order))
    }

    /// Takes a cancelled order out of `orders` (once its copy is in
    /// `cancelled_orders`) and leaves its tombstone under its `_id` (its own
    /// `sale_id`, so it meets no other order in the unique indexes); a
    /// repeat changes nothing. A delete, then an insert: an update would
    /// do it in one write, but not every server drops the old index keys
    /// of an updated document. An order of the same id that lands in
    /// between (a Redis copy older than the cancel confirmed its hold
    /// again) is taken out the same way.
    pub async fn leave_sale(&self, order: &OrderDoc) -> Result<(), StoreError> {
        let at = order.cancelled.as_ref().map_or(order.created_at, |c| c.at);
        let tombstone = doc! {
            "_id": &order.id, VOID: true, CANCELLED: true,
            "sale_id": format!("void:{}", order.id), "user_id": "", "voided_at": at,
        };
        for _ in 0..3 {
            let written = self
                .bounded(async {
                    self.orders
                        .delete_one(doc! {"_id": &order.id, "sale_id": &order.sale_id})
                        .await?;
                    match self.orders_raw.insert_one(&tombstone).await {
                        Ok(_) => Ok(true),
                        Err(e) if is_duplicate_key(&e) => Ok(false),
                        Err(e) => Err(e.into()),
                    }
                })
                .await?;
            if written {
                return Ok(());
            }
            match self.lookup(&order.id).await? {
                OrderLookup::Order(again) => {
                    tracing::warn!(order = %order.id, buyer = %again.user_id, "an order landed again under a cancelled order's id; taken out");
                }
                // The tombstone, or a fence: no order can land.
                OrderLookup::Cancelled | OrderLookup::Voided => return Ok(()),
                OrderLookup::Absent => {}
            }
        }
        Err(StoreError::Other(anyhow::anyhow!(
            "order {}: its tombstone could not be written",
            order.id
        )))
    }

    /// A cancelled order by id.
    pub async fn cancelled_order(&self, id: &str) -> Result<Option<OrderDoc>, StoreError> {
        self.bounded(async { Ok(self.cancelled_orders.find_one(doc! {"_id": id}).await?) })
            .await
    }

    /// The ids of a sale's cancelled orders.
    pub async fn cancelled_ids(&self, sale: &SaleId) -> Result<HashSet<String>, StoreError> {
        self.bounded_long(async {
            let mut cursor = self
                .cancelled_orders
                .clone_with_type::<bson::Document>()
                .find(doc! {"sale_id": sale.as_str()})
                .projection(doc! {"_id": 1})
                .await?;
            let mut ids = HashSet::new();
            while let Some(d) = cursor.try_next().await? {
                ids.insert(d.get_str("_id").map_err(anyhow::Error::from)?.to_owned());
            }
            Ok(ids)
        })
        .await
    }

    /// A sale's cancelled orders after `cursor`, by id, at most `limit`.
    pub async fn cancelled_page(
        &self,
        sale: &SaleId,
        limit: i64,
        cursor: Option<&str>,
    ) -> Result<Vec<OrderDoc>, StoreError> {
        self.page_of_sale(&self.cancelled_orders, sale, limit, cursor)
            .await
    }

    /// A buyer's cancelled orders, newest first.
    pub async fn cancelled_of_buyer(
        &self,
        buyer: &str,
        limit: i64,
    ) -> Result<Vec<OrderDoc>, StoreError> {
        self.newest_of_buyer(&self.cancelled_orders, buyer, limit)
            .await
    }

    /// Records that Redis has a cancelled order's units back.
    pub async fn mark_returned(&self, id: &str) -> Result<(), StoreError> {
        self.bounded(async {
            self.cancelled_orders
                .update_one(
                    doc! {"_id": id},
                    doc! {"$set": {"cancelled.returned": true}},
                )
                .await?;
            Ok(())
        })
        .await
    }

    /// Cancelled orders whose units Redis may not have back yet (cancelled
    /// before `before`), at most `limit`, by the index on
    /// `cancelled.returned`.
    pub async fn pending_returns(
        &self,
        before: DateTime,
        limit: i64,
    ) -> Result<Vec<OrderDoc>, StoreError> {
        self.bounded(async {
            Ok(self
                .cancelled_orders
                .find(doc! {
                    "cancelled.returned": false,
                    "cancelled.at": {"$lt": before},
                })
                .limit(limit)
                .await?
                .try_collect()
                .await?)
        })
        .await
    }
}
