//! Payments: the intents buyers were given, each provider event once by
//! its id, and the refunds due for money that came after its hold ended.
//! All three are written with the orders' durability (majority, journal).

use bson::{DateTime, doc};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::{Mongo, is_duplicate_key, messages::Message};
use crate::{ids::SaleId, store::StoreError};

/// A payment intent as the buyer was given it. `_id` is the payment id;
/// the amount and currency are what the provider must report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PaymentDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub reservation_id: String,
    pub sale_id: String,
    pub buyer: String,
    pub quantity: i64,
    pub amount_cents: i64,
    pub currency: String,
    pub created_at: DateTime,
    pub expires_at: DateTime,
}

/// A provider event, recorded once its outcome is settled: a repeat of
/// the same `_id` (the provider's event id) changes nothing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PaymentEventDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub payment_id: String,
    pub status: String,
    /// What it did: confirmed, refund_due, released or ignored.
    pub outcome: String,
    pub received_at: DateTime,
}

/// Money received for a hold that had ended: owed back to the buyer.
/// `_id` is the payment id, so a payment is owed back at most once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RefundDoc {
    #[serde(rename = "_id")]
    pub payment_id: String,
    pub reservation_id: String,
    pub sale_id: String,
    pub buyer: String,
    pub amount_cents: i64,
    pub currency: String,
    /// Why no order: the hold had expired, was cancelled, or its state was
    /// lost and its order fenced off.
    pub reason: String,
    /// The event that brought the money.
    pub event_id: String,
    pub created_at: DateTime,
}

impl Mongo {
    /// Records an intent; one recorded before under the same id stays.
    pub async fn insert_payment(&self, payment: &PaymentDoc) -> Result<(), StoreError> {
        self.bounded(async {
            match self.payments.insert_one(payment).await {
                Ok(_) => Ok(()),
                Err(e) if is_duplicate_key(&e) => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    pub async fn payment(&self, id: &str) -> Result<Option<PaymentDoc>, StoreError> {
        self.bounded(async { Ok(self.payments.find_one(doc! {"_id": id}).await?) })
            .await
    }

    pub async fn payment_event(&self, id: &str) -> Result<Option<PaymentEventDoc>, StoreError> {
        self.bounded(async { Ok(self.payment_events.find_one(doc! {"_id": id}).await?) })
            .await
    }

    /// Records a settled event; the first record of an id stays.
    pub async fn record_payment_event(&self, event: &PaymentEventDoc) -> Result<(), StoreError> {
        self.bounded(async {
            match self.payment_events.insert_one(event).await {
                Ok(_) => Ok(()),
                Err(e) if is_duplicate_key(&e) => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    /// Records a refund due; one recorded before for the payment stays.
    /// True when this call recorded it.
    /// Its `payment.refund_due` message is staged before and made ready
    /// after (see `outbox.rs`).
    pub async fn insert_refund(&self, refund: &RefundDoc) -> Result<bool, StoreError> {
        let message = [Message::refund_due(refund)];
        let message = self.stage_messages(&message).await?;
        let inserted = self
            .bounded(async {
                match self.refunds.insert_one(refund).await {
                    Ok(_) => Ok(true),
                    Err(e) if is_duplicate_key(&e) => Ok(false),
                    Err(e) => Err(e.into()),
                }
            })
            .await?;
        self.ready_messages(&message).await?;
        Ok(inserted)
    }

    pub async fn refund(&self, payment_id: &str) -> Result<Option<RefundDoc>, StoreError> {
        self.bounded(async { Ok(self.refunds.find_one(doc! {"_id": payment_id}).await?) })
            .await
    }

    /// Refunds due, newest first, of one sale or of all.
    pub async fn refunds(
        &self,
        sale: Option<&SaleId>,
        limit: i64,
    ) -> Result<Vec<RefundDoc>, StoreError> {
        let filter = match sale {
            Some(sale) => doc! {"sale_id": sale.as_str()},
            None => doc! {},
        };
        self.bounded(async {
            Ok(self
                .refunds
                .find(filter)
                .sort(doc! {"created_at": -1, "_id": 1})
                .limit(limit)
                .await?
                .try_collect()
                .await?)
        })
        .await
    }

    /// How many refunds a sale owes, and their sum.
    pub async fn refunds_due(&self, sale: &SaleId) -> Result<(i64, i64), StoreError> {
        self.bounded(async {
            let mut cursor = self
                .refunds
                .clone_with_type::<bson::Document>()
                .aggregate([
                    doc! {"$match": {"sale_id": sale.as_str()}},
                    doc! {"$group": {"_id": null, "n": {"$sum": 1}, "cents": {"$sum": "$amount_cents"}}},
                ])
                .await?;
            Ok(match cursor.try_next().await? {
                Some(d) => (number(&d, "n"), number(&d, "cents")),
                None => (0, 0),
            })
        })
        .await
    }
}

fn number(d: &bson::Document, key: &str) -> i64 {
    match d.get(key) {
        Some(bson::Bson::Int32(n)) => i64::from(*n),
        Some(bson::Bson::Int64(n)) => *n,
        Some(bson::Bson::Double(n)) => *n as i64,
        _ => 0,
    }
}
