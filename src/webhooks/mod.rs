//! Outgoing webhooks: endpoints registered by admins get the outbox's
//! messages (see `store/mongo/outbox.rs`), signed as Standard Webhooks, in
//! order per sale, at least once ([`deliverer`]).

pub mod deliverer;
mod sender;
pub mod signature;

use chrono::{DateTime, Utc};
use poem_openapi::Object;
use strum::IntoEnumIterator;

use crate::{
    config::WebhookSettings,
    error::{ApiError, ErrorCode},
    store::{
        Store,
        mongo::{AttemptDoc, DeliveryDoc, DeliveryState, EndpointDoc, MessageType},
    },
    text::Text,
};
use sender::{Sender, Verdict};

/// Most endpoints registered at once.
pub const MAX_ENDPOINTS: usize = 20;

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct CreateEndpoint {
    /// Where messages are POSTed: an absolute `http://` or `https://` URL
    /// with a host.
    #[oai(validator(
        min_length = 1,
        max_length = 2048,
        pattern = "^[Hh][Tt][Tt][Pp][Ss]?://"
    ))]
    pub url: Text,
    /// The events sent to it; all of them when left out.
    #[oai(validator(min_items = 1, max_items = 5, unique_items = true))]
    pub types: Option<Vec<MessageType>>,
    /// A note for operators, at most 200 characters.
    #[oai(validator(max_length = 200))]
    pub description: Option<Text>,
}

#[derive(Debug, Object)]
pub struct EndpointView {
    pub id: String,
    pub url: String,
    pub types: Vec<MessageType>,
    #[oai(skip_serializing_if_is_none)]
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    /// False once the endpoint kept failing; `disabled_reason` says why.
    pub enabled: bool,
    #[oai(skip_serializing_if_is_none)]
    pub disabled_at: Option<DateTime<Utc>>,
    #[oai(skip_serializing_if_is_none)]
    pub disabled_reason: Option<String>,
}

impl From<EndpointDoc> for EndpointView {
    fn from(d: EndpointDoc) -> Self {
        Self {
            types: d.types,
            enabled: d.disabled.is_none(),
            disabled_at: d.disabled.as_ref().map(|x| x.at.to_chrono()),
            disabled_reason: d.disabled.map(|x| x.reason),
            id: d.id,
            url: d.url,
            description: d.description,
            created_at: d.created_at.to_chrono(),
        }
    }
}

/// A new endpoint, with its secret: shown this once.
#[derive(Debug, Object)]
pub struct CreatedEndpoint {
    #[oai(flatten)]
    pub endpoint: EndpointView,
    /// `whsec_` and a base64 key: the receiver verifies signatures with it.
    pub secret: String,
}

#[derive(Debug, Object)]
pub struct AttemptView {
    pub at: DateTime<Utc>,
    /// The HTTP status of the answer, when there was one.
    #[oai(skip_serializing_if_is_none)]
    pub status: Option<i32>,
    /// Why there was no answer (could not connect, timed out, ...).
    #[oai(skip_serializing_if_is_none)]
    pub error: Option<String>,
    pub duration_ms: i64,
    /// Sent by an admin's retry.
    pub manual: bool,
}

impl From<AttemptDoc> for AttemptView {
    fn from(a: AttemptDoc) -> Self {
        Self {
            at: a.at.to_chrono(),
            status: a.status,
            error: a.error,
            duration_ms: a.duration_ms,
            manual: a.manual,
        }
    }
}

#[derive(Debug, Object)]
pub struct DeliveryView {
    /// The message id: the `webhook-id` header, the same on every attempt.
    pub message_id: String,
    pub sale_id: String,
    /// The message's place in its sale's sequence (`data.sequence`).
    pub sequence: i64,
    #[oai(rename = "type")]
    pub kind: MessageType,
    /// `pending` (to be tried again), `delivered`, or `failed` (refused).
    pub state: DeliveryState,
    #[oai(skip_serializing_if_is_none)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The attempts, oldest first (the last 30).
    pub attempts: Vec<AttemptView>,
}

impl From<DeliveryDoc> for DeliveryView {
    fn from(d: DeliveryDoc) -> Self {
        Self {
            message_id: d.message_id,
            sale_id: d.sale_id,
            sequence: d.seq,
            kind: d.kind,
            state: d.state,
            next_attempt_at: d.next_attempt_at.map(|t| t.to_chrono()),
            attempts: d.attempts.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Clone)]
pub struct Webhooks {
    store: Store,
    sender: Sender,
    settings: WebhookSettings,
}

impl Webhooks {
    pub fn new(store: Store, settings: &WebhookSettings) -> Self {
        Self {
            store,
            sender: Sender::new(settings.timeout),
            settings: settings.clone(),
        }
    }

    /// The background loop that sends the outbox, with the same client.
    pub fn deliverer(&self) -> deliverer::Deliverer {
        deliverer::Deliverer::new(
            self.store.clone(),
            self.sender.clone(),
            self.settings.clone(),
        )
    }

    pub async fn create(&self, spec: CreateEndpoint) -> Result<CreatedEndpoint, ApiError> {
        let url = reqwest::Url::parse(&spec.url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| ApiError::invalid("url must be an absolute http:// or https:// URL"))?;
        if self.store.mongo.endpoints().await?.len() >= MAX_ENDPOINTS {
            return Err(ApiError::new(
                ErrorCode::LimitExceeded,
                format!("at most {MAX_ENDPOINTS} webhook endpoints: delete one first"),
            ));
        }
        // At least one, says the document's validator.
        let types = spec.types.unwrap_or_else(|| MessageType::iter().collect());
        let doc = EndpointDoc {
            id: format!("ep_{}", bson::oid::ObjectId::new().to_hex()),
            url: url.to_string(),
            types,
            secret: signature::new_secret(),
            description: spec.description.map(String::from),
            created_at: crate::clock::LocalClock::default().now_bson(),
            disabled: None,
        };
        self.store.mongo.insert_endpoint(&doc).await?;
        // Answered once every instance writes the endpoint's types: each
        // message whose cause comes after this answer reaches it.
        tokio::time::sleep(crate::store::mongo::INTEREST_SETTLE).await;
        tracing::info!(endpoint = %doc.id, url = %doc.url, "webhook endpoint registered");
        let secret = doc.secret.clone();
        Ok(CreatedEndpoint {
            endpoint: doc.into(),
            secret,
        })
    }

    pub async fn list(&self) -> Result<Vec<EndpointView>, ApiError> {
        Ok(self
            .store
            .mongo
            .endpoints()
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    async fn endpoint(&self, id: &str) -> Result<EndpointDoc, ApiError> {
        self.store
            .mongo
            .endpoint(id)
            .await?
            .ok_or_else(|| ApiError::not_found("webhook endpoint"))
    }

    pub async fn delete(&self, id: &str) -> Result<(), ApiError> {
        if !self.store.mongo.delete_endpoint(id).await? {
            return Err(ApiError::not_found("webhook endpoint"));
        }
        tracing::info!(endpoint = id, "webhook endpoint deleted");
        Ok(())
    }

    pub async fn enable(&self, id: &str) -> Result<EndpointView, ApiError> {
        let doc = self
            .store
            .mongo
            .enable_endpoint(id)
            .await?
            .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
        Ok(doc.into())
    }

    pub async fn deliveries(&self, id: &str, limit: i64) -> Result<Vec<DeliveryView>, ApiError> {
        self.endpoint(id).await?;
        Ok(self
            .store
            .mongo
            .deliveries(id, limit)
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Sends a delivery's message once more, now, outside its sequence
    /// (the receiver sees the same `webhook-id`).
    pub async fn retry(&self, id: &str, message_id: &str) -> Result<DeliveryView, ApiError> {
        let endpoint = self.endpoint(id).await?;
        let mongo = &self.store.mongo;
        let delivery_id = deliverer::delivery_id(id, message_id);
        let mut delivery = mongo
            .delivery(&delivery_id)
            .await?
            .ok_or_else(|| ApiError::not_found("delivery"))?;
        let message = mongo
            .message(message_id)
            .await?
            .ok_or_else(|| ApiError::not_found("delivery"))?;
        let (verdict, attempt) = self.sender.send(&endpoint, &message, true).await;
        if verdict == Verdict::Delivered {
            delivery.state = DeliveryState::Delivered;
            delivery.next_attempt_at = None;
        }
        delivery.updated_at = crate::clock::LocalClock::default().now_bson();
        mongo.record_attempt(&delivery, &attempt).await?;
        Ok(mongo
            .delivery(&delivery_id)
            .await?
            .unwrap_or(delivery)
            .into())
    }
}
