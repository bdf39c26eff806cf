//! Payment inside the hold. For a sale that takes payment, the buyer asks
//! for a payment intent (the hold becomes `paying`, its deadline extended
//! once), and the provider's signed webhook settles it:
//!
//! paying --succeeded--> confirming --order written--> confirmed
//! paying --failed or canceled--> cancelled (units to the line first)
//! paying --deadline--> expired (the reaper), and money after that is late
//!
//! One rule decides every race between money and the deadline:
//! `lua/pay_settle.lua` takes the hold to confirming or finds it ended, in
//! one atomic step. Money that finds the hold ended fences the hold's order
//! off in MongoDB (so no order can land after) and becomes a durable
//! refund due, never an order beyond the stock. Every effect is idempotent
//! and the event is recorded after it: a provider's retry of an event cut
//! off midway completes it, and a repeat of a recorded one changes nothing.

pub mod signature;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem_openapi::{Enum, Object};

use crate::{
    config::Settings,
    error::{ApiError, ErrorCode},
    holds::{Holds, NewOrder, Outcome},
    ids::ReservationId,
    store::{
        Store,
        mongo::{Fence, PaymentDoc, PaymentEventDoc, RefundDoc},
        redis::PaymentEnd,
        scripts::{PayBeginReply, PaySettleReply},
    },
    text::Text,
};

/// What the buyer pays, and until when.
#[derive(Debug, Clone, Object)]
pub struct PaymentIntent {
    /// What the provider's webhook names (`pay_<reservation id>`).
    pub payment_id: String,
    pub reservation_id: String,
    /// Quantity times the unit price, in minor units.
    pub amount_cents: i64,
    pub currency: String,
    /// The hold's deadline, extended once by the sale's `payment_seconds`:
    /// money that comes later is refunded, never turned into an order.
    pub expires_at: DateTime<Utc>,
}

/// How a payment ended, as the provider reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, strum::IntoStaticStr)]
#[oai(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum PaymentStatus {
    Succeeded,
    Failed,
    Canceled,
}

/// The provider's event: the body of `POST /payments/webhook`, signed.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
pub struct PaymentEvent {
    /// The provider's id of this event, 1..=200 characters: each counts
    /// once.
    #[oai(validator(min_length = 1, max_length = 200))]
    pub event_id: Text,
    #[oai(validator(min_length = 1, max_length = 200))]
    pub payment_id: Text,
    pub status: PaymentStatus,
    /// Must equal the intent's.
    pub amount_cents: i64,
    /// Must equal the intent's.
    pub currency: Text,
}

/// What an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, strum::IntoStaticStr, strum::EnumString)]
#[oai(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum EventOutcome {
    /// The hold is now an order (or was, by an earlier event).
    Confirmed,
    /// The money came after the hold ended: no order, a refund is due.
    RefundDue,
    /// The payment failed: the hold's units went back.
    Released,
    /// Nothing to do (a failure after a success, or for an ended hold).
    Ignored,
}

/// The webhook's answer.
#[derive(Debug, Clone, Object)]
pub struct EventAnswer {
    pub event_id: String,
    pub payment_id: String,
    pub outcome: EventOutcome,
    /// This event was recorded before: it changed nothing now.
    pub duplicate: bool,
}

/// A refund due, as the operator lists it.
#[derive(Debug, Clone, Object)]
pub struct RefundView {
    pub payment_id: String,
    pub reservation_id: String,
    pub sale_id: String,
    pub buyer: String,
    pub amount_cents: i64,
    pub currency: String,
    /// Why there is no order: `expired`, `cancelled` or `lost` (Redis had
    /// lost the hold, and its order was fenced off).
    pub reason: String,
    pub event_id: String,
    pub created_at: DateTime<Utc>,
}

impl From<RefundDoc> for RefundView {
    fn from(r: RefundDoc) -> Self {
        RefundView {
            payment_id: r.payment_id,
            reservation_id: r.reservation_id,
            sale_id: r.sale_id,
            buyer: r.buyer,
            amount_cents: r.amount_cents,
            currency: r.currency,
            reason: r.reason,
            event_id: r.event_id,
            created_at: r.created_at.to_chrono(),
        }
    }
}

/// The payment id of a hold: one per hold, so a repeat gives the same.
pub fn payment_id(rid: &ReservationId) -> String {
    format!("pay_{rid}")
}

#[derive(Clone)]
pub struct Payments {
    store: Store,
    holds: Holds,
    secret: Option<Arc<[u8]>>,
}

impl Payments {
    pub fn new(store: Store, holds: Holds, settings: &Settings) -> Self {
        Self {
            store,
            holds,
            secret: settings
                .payment_webhook_secret
                .as_ref()
                .map(|s| Arc::from(s.expose().as_bytes())),
        }
    }

    /// The hold's payment intent: made on the first call (the hold becomes
    /// paying, its deadline extended), the same one after. Durable in
    /// MongoDB before the buyer hears of it, so the webhook can check it.
    pub async fn intent(
        &self,
        rid: &ReservationId,
        buyer: &str,
    ) -> Result<(PaymentIntent, Outcome), ApiError> {
        let payment = payment_id(rid);
        let reply = self.store.redis.pay_begin(rid, buyer, &payment).await?;
        let ended = |what: &str| {
            ApiError::new(
                ErrorCode::ReservationExpired,
                format!("the reservation {what}"),
            )
        };
        let (qty, price, currency, expires, first) = match reply {
            PayBeginReply::Intent {
                qty,
                price,
                currency,
                expires,
                first,
                ..
            } => (qty, price, currency, expires, first),
            PayBeginReply::NoPayment => {
                return Err(ApiError::new(
                    ErrorCode::PaymentNotTaken,
                    "this sale takes no payment: confirm the hold",
                ));
            }
            PayBeginReply::Missing | PayBeginReply::NotFound => {
                return Err(ApiError::not_found("reservation"));
            }
            PayBeginReply::Expired => return Err(ended("has expired")),
            PayBeginReply::Cancelled => return Err(ended("was cancelled")),
            PayBeginReply::Confirming => {
                return Err(ApiError::new(
                    ErrorCode::ReservationConfirming,
                    "the reservation is being confirmed",
                ));
            }
            PayBeginReply::Confirmed => {
                return Err(ApiError::new(
                    ErrorCode::ReservationConfirmed,
                    "the reservation is paid and confirmed",
                ));
            }
        };
        let expires_at = bson::DateTime::from_millis(expires);
        let doc = PaymentDoc {
            id: payment.clone(),
            reservation_id: rid.to_string(),
            sale_id: rid.sale().to_string(),
            buyer: buyer.to_owned(),
            quantity: qty,
            amount_cents: price * qty,
            currency: currency.clone(),
            created_at: self.store.clock.now_bson(),
            expires_at,
        };
        self.store.mongo.insert_payment(&doc).await?;
        if first {
            metrics::counter!("flashdrop_payment_intents_total").increment(1);
        }
        let intent = PaymentIntent {
            payment_id: payment,
            reservation_id: rid.to_string(),
            amount_cents: doc.amount_cents,
            currency,
            expires_at: expires_at.to_chrono(),
        };
        Ok((
            intent,
            match first {
                true => Outcome::Created,
                false => Outcome::Existing,
            },
        ))
    }

    /// A provider's event, as received: `raw` is the body the signature
    /// covers.
    pub async fn webhook(
        &self,
        signature_header: Option<&str>,
        raw: &[u8],
        parse: impl FnOnce(&[u8]) -> Result<PaymentEvent, ApiError>,
    ) -> Result<EventAnswer, ApiError> {
        let Some(secret) = &self.secret else {
            return Err(ApiError::new(
                ErrorCode::NotConfigured,
                "this server has no FLASHDROP_PAYMENT_WEBHOOK_SECRET",
            ));
        };
        let now = self.store.clock.now_ms() / 1000;
        signature::verify(secret, signature_header, raw, now)
            .map_err(|e| ApiError::new(ErrorCode::BadSignature, e.to_string()))?;
        let event = parse(raw)?;
        let answer = |outcome, duplicate| EventAnswer {
            event_id: event.event_id.to_string(),
            payment_id: event.payment_id.to_string(),
            outcome,
            duplicate,
        };
        let mongo = &self.store.mongo;
        if let Some(done) = mongo.payment_event(&event.event_id).await? {
            let outcome = done.outcome.parse().unwrap_or(EventOutcome::Ignored);
            return Ok(answer(outcome, true));
        }
        let Some(intent) = mongo.payment(&event.payment_id).await? else {
            return Err(ApiError::not_found("payment"));
        };
        if intent.amount_cents != event.amount_cents || event.currency != intent.currency {
            return Err(ApiError::new(
                ErrorCode::PaymentMismatch,
                format!(
                    "the payment is for {} {}, not {} {}",
                    intent.amount_cents, intent.currency, event.amount_cents, event.currency
                ),
            ));
        }
        let rid = ReservationId::parse(&intent.reservation_id)
            .map_err(|_| anyhow::anyhow!("payment {} names a bad reservation", intent.id))?;
        let outcome = match event.status {
            PaymentStatus::Succeeded => self.succeeded(&rid, &intent, &event.event_id).await?,
            PaymentStatus::Failed | PaymentStatus::Canceled => self.failed(&rid, &intent).await?,
        };
        mongo
            .record_payment_event(&PaymentEventDoc {
                id: event.event_id.to_string(),
                payment_id: intent.id.clone(),
                status: <&str>::from(event.status).to_owned(),
                outcome: <&str>::from(outcome).to_owned(),
                received_at: self.store.clock.now_bson(),
            })
            .await?;
        let label: &'static str = outcome.into();
        metrics::counter!("flashdrop_payment_events_total", "outcome" => label).increment(1);
        tracing::info!(%rid, payment_id = %intent.id, outcome = label, "payment event settled");
        Ok(answer(outcome, false))
    }

    /// The money is in: an order if the hold still waits for it, else a
    /// refund due (decided in one script, see the module's notes).
    async fn succeeded(
        &self,
        rid: &ReservationId,
        intent: &PaymentDoc,
        event_id: &str,
    ) -> Result<EventOutcome, ApiError> {
        match self.settle(rid, intent, PaymentEnd::Succeeded).await? {
            PaySettleReply::Confirming {
                user,
                qty,
                units,
                slots,
                price,
                currency,
                lease,
            } => {
                let order = self.holds.new_order(
                    rid,
                    NewOrder {
                        buyer: user,
                        qty,
                        units,
                        slots,
                        price,
                        currency,
                        payment_id: Some(intent.id.clone()),
                    },
                );
                self.holds.write_order(rid, order, lease).await?;
                Ok(EventOutcome::Confirmed)
            }
            PaySettleReply::Confirmed => Ok(EventOutcome::Confirmed),
            PaySettleReply::Late { state } => self.late(rid, intent, event_id, state.into()).await,
            PaySettleReply::Missing => self.late(rid, intent, event_id, "lost").await,
            other @ (PaySettleReply::Released | PaySettleReply::Unchanged { .. }) => {
                Err(ApiError::Internal(anyhow::anyhow!(
                    "pay_settle answered a success with {other:?}"
                )))
            }
        }
    }

    /// Money for a hold that ended (or that Redis lost): the hold's order
    /// is fenced off first, so none can land later; if one had landed the
    /// payment confirmed it, otherwise a refund is due.
    async fn late(
        &self,
        rid: &ReservationId,
        intent: &PaymentDoc,
        event_id: &str,
        reason: &str,
    ) -> Result<EventOutcome, ApiError> {
        let now = self.store.clock.now_bson();
        match self.store.mongo.fence_order(rid, now).await? {
            Fence::Ordered(order) => {
                self.holds.finish_confirm(rid, &order).await?;
                Ok(EventOutcome::Confirmed)
            }
            Fence::Voided => {
                let refund = RefundDoc {
                    payment_id: intent.id.clone(),
                    reservation_id: intent.reservation_id.clone(),
                    sale_id: intent.sale_id.clone(),
                    buyer: intent.buyer.clone(),
                    amount_cents: intent.amount_cents,
                    currency: intent.currency.clone(),
                    reason: reason.to_owned(),
                    event_id: event_id.to_owned(),
                    created_at: now,
                };
                if self.store.mongo.insert_refund(&refund).await? {
                    metrics::counter!("flashdrop_refunds_due_total").increment(1);
                    tracing::warn!(%rid, payment_id = %intent.id, reason, "money after the hold ended: refund due");
                }
                Ok(EventOutcome::RefundDue)
            }
        }
    }

    /// The payment failed or was canceled: a hold still waiting gives its
    /// units back at once; anything else stays as it is.
    async fn failed(
        &self,
        rid: &ReservationId,
        intent: &PaymentDoc,
    ) -> Result<EventOutcome, ApiError> {
        Ok(match self.settle(rid, intent, PaymentEnd::Failed).await? {
            PaySettleReply::Released => EventOutcome::Released,
            _ => EventOutcome::Ignored,
        })
    }

    /// `lua/pay_settle.lua` for the hold of `intent`: the one place a
    /// payment's end meets the hold's deadline.
    async fn settle(
        &self,
        rid: &ReservationId,
        intent: &PaymentDoc,
        end: PaymentEnd,
    ) -> Result<PaySettleReply, ApiError> {
        Ok(self
            .store
            .redis
            .pay_settle(rid, &intent.id, end, self.holds.confirm_lease())
            .await?)
    }

    /// Refunds due, newest first, of one sale or of all.
    pub async fn refunds(
        &self,
        sale: Option<&crate::ids::SaleId>,
        limit: i64,
    ) -> Result<Vec<RefundView>, ApiError> {
        let refunds = self.store.mongo.refunds(sale, limit).await?;
        Ok(refunds.into_iter().map(RefundView::from).collect())
    }
}
