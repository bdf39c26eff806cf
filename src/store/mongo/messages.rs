//! The outbox's messages: what each tells, its id (the same for every
//! attempt), and the body a receiver gets.

use bson::DateTime;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{OrderDoc, RefundDoc, SaleDoc, StockEventDoc};

/// What a message tells; the event types an endpoint takes.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    poem_openapi::Enum,
    strum::IntoStaticStr,
    strum::EnumIter,
)]
pub enum MessageType {
    #[serde(rename = "order.confirmed")]
    #[strum(serialize = "order.confirmed")]
    #[oai(rename = "order.confirmed")]
    OrderConfirmed,
    #[serde(rename = "order.cancelled")]
    #[strum(serialize = "order.cancelled")]
    #[oai(rename = "order.cancelled")]
    OrderCancelled,
    #[serde(rename = "sale.sold_out")]
    #[strum(serialize = "sale.sold_out")]
    #[oai(rename = "sale.sold_out")]
    SaleSoldOut,
    #[serde(rename = "sale.ended")]
    #[strum(serialize = "sale.ended")]
    #[oai(rename = "sale.ended")]
    SaleEnded,
    #[serde(rename = "payment.refund_due")]
    #[strum(serialize = "payment.refund_due")]
    #[oai(rename = "payment.refund_due")]
    PaymentRefundDue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageState {
    /// Written before its cause; not sent until settled.
    Staged,
    /// Its cause is durable: it is sent.
    Ready,
    /// Its cause never came: it is skipped.
    Void,
}

/// One message as the outbox keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxDoc {
    /// The message id (`webhook-id`), the same on every attempt.
    #[serde(rename = "_id")]
    pub id: String,
    pub sale_id: String,
    /// Its place in the sale's sequence: sent in this order.
    pub seq: i64,
    /// None for a tombstone closing a place nobody used (never sent).
    #[serde(rename = "type")]
    pub kind: Option<MessageType>,
    pub state: MessageState,
    /// What the cause is found by: an order id, a payment id, a time.
    pub cause: String,
    /// The `data` object, as JSON text (its `sequence` is added when sent).
    pub data: String,
    /// When the event happened.
    pub at: DateTime,
    pub created_at: DateTime,
}

impl OutboxDoc {
    /// The exact body sent for this message, the same on every attempt:
    /// `{type, timestamp, data}` with the sale and sequence in `data`.
    pub fn body(&self) -> String {
        let mut data: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&self.data).unwrap_or_default();
        data.insert("sale_id".into(), self.sale_id.clone().into());
        data.insert("sequence".into(), self.seq.into());
        let kind: &'static str = self.kind.map_or("gap", Into::into);
        serde_json::json!({
            "type": kind,
            "timestamp": self.at.to_chrono().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "data": data,
        })
        .to_string()
    }
}

/// A message to write with its cause.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: String,
    pub sale_id: String,
    pub kind: MessageType,
    pub cause: String,
    pub at: DateTime,
    pub data: serde_json::Value,
}

fn message_id(kind: MessageType, cause: &str) -> String {
    let kind: &'static str = kind.into();
    let digest = Sha256::digest(format!("{kind}:{cause}"));
    format!("msg_{}", &hex::encode(digest)[..32])
}

fn rfc3339(at: DateTime) -> String {
    at.to_chrono()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn order_data(order: &OrderDoc) -> serde_json::Value {
    let mut data = serde_json::json!({
        "order_id": order.id,
        "buyer": order.user_id,
        "quantity": order.quantity,
        "units": order.units,
        "unit_price_cents": order.unit_price_cents,
        "total_cents": order.total_cents,
        "currency": order.currency,
        "created_at": rfc3339(order.created_at),
    });
    if let Some(payment) = &order.payment_id {
        data["payment_id"] = payment.clone().into();
    }
    if let Some(c) = &order.cancelled {
        data["cancelled_at"] = rfc3339(c.at).into();
        data["reason"] = c.reason.clone().into();
        data["cancelled_by"] = c.by.clone().into();
    }
    data
}

impl Message {
    fn new(
        kind: MessageType,
        sale_id: &str,
        cause: String,
        at: DateTime,
        data: serde_json::Value,
    ) -> Self {
        Self {
            id: message_id(kind, &cause),
            sale_id: sale_id.to_owned(),
            kind,
            cause,
            at,
            data,
        }
    }

    pub fn order_confirmed(order: &OrderDoc) -> Self {
        let kind = MessageType::OrderConfirmed;
        Self::new(
            kind,
            &order.sale_id,
            order.id.clone(),
            order.created_at,
            order_data(order),
        )
    }

    /// `order` carries its cancel.
    pub fn order_cancelled(order: &OrderDoc) -> Self {
        let at = order.cancelled.as_ref().map_or(order.created_at, |c| c.at);
        let kind = MessageType::OrderCancelled;
        Self::new(
            kind,
            &order.sale_id,
            order.id.clone(),
            at,
            order_data(order),
        )
    }

    pub fn refund_due(refund: &RefundDoc) -> Self {
        let data = serde_json::json!({
            "payment_id": refund.payment_id,
            "reservation_id": refund.reservation_id,
            "buyer": refund.buyer,
            "amount_cents": refund.amount_cents,
            "currency": refund.currency,
            "reason": refund.reason,
        });
        let kind = MessageType::PaymentRefundDue;
        Self::new(
            kind,
            &refund.sale_id,
            refund.payment_id.clone(),
            refund.created_at,
            data,
        )
    }

    /// The change that sold the sale out (a `sale_closed` with nothing
    /// left and nothing held). Told once per sale and count sold: closing
    /// a sold-out sale, or selling it out again after cancels, is not a
    /// new sell-out.
    pub fn sold_out(event: &StockEventDoc) -> Self {
        let data = serde_json::json!({"sold": event.sold});
        let cause = event.sold.to_string();
        Self::new(
            MessageType::SaleSoldOut,
            &event.sale_id,
            cause,
            event.at,
            data,
        )
    }

    /// The sale's window is over; its cause is the end time itself.
    pub fn ended(sale: &SaleDoc) -> Self {
        let data = serde_json::json!({"ends_at": rfc3339(sale.ends_at), "total": sale.total});
        let cause = sale.ends_at.timestamp_millis().to_string();
        Self::new(MessageType::SaleEnded, &sale.id, cause, sale.ends_at, data)
    }

    pub(super) fn doc(&self, seq: i64, state: MessageState, now: DateTime) -> OutboxDoc {
        OutboxDoc {
            id: self.id.clone(),
            sale_id: self.sale_id.clone(),
            seq,
            kind: Some(self.kind),
            state,
            cause: self.cause.clone(),
            data: self.data.to_string(),
            at: self.at,
            created_at: now,
        }
    }
}

/// True when the stock event sold the sale out for good.
pub fn sells_out(event: &StockEventDoc) -> bool {
    event.kind == "sale_closed" && event.available == 0 && event.held == 0 && event.sold > 0
}
