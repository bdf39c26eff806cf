//! Webhook endpoints, where each stands in each sale's sequence (its
//! cursor, claimed by one instance at a time), and its deliveries with
//! every attempt and answer.

use bson::{DateTime, doc};
use futures_util::TryStreamExt;
use mongodb::{IndexModel, options::ReturnDocument};
use serde::{Deserialize, Serialize};

use super::{Mongo, is_duplicate_key, messages::MessageType};
use crate::store::StoreError;

/// Attempts kept per delivery (the newest).
const ATTEMPTS_KEPT: i64 = 30;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndpointDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub url: String,
    pub types: Vec<MessageType>,
    /// `whsec_` and the base64 key; never shown after creation.
    pub secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub created_at: DateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<DisabledDoc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DisabledDoc {
    pub at: DateTime,
    pub reason: String,
}

/// Where an endpoint stands in one sale's sequence.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CursorDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub endpoint_id: String,
    pub sale_id: String,
    /// The last seq handled (delivered, refused for good, or skipped).
    pub done: i64,
    /// Failed attempts at the message after `done`.
    pub attempts: i64,
    /// When that message first failed.
    #[serde(default)]
    pub failing_since: Option<DateTime>,
    /// Not before this time.
    pub next_at: DateTime,
    /// The instance working on it, until `until`.
    #[serde(default)]
    pub owner: Option<String>,
    pub until: DateTime,
}

pub fn cursor_id(endpoint: &str, sale: &str) -> String {
    format!("{endpoint}/{sale}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, poem_openapi::Enum)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Tried, and to be tried again.
    Pending,
    Delivered,
    /// Refused for good (a 4xx other than 408 and 429).
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub endpoint_id: String,
    pub message_id: String,
    pub sale_id: String,
    pub seq: i64,
    #[serde(rename = "type")]
    pub kind: MessageType,
    pub state: DeliveryState,
    pub attempts: Vec<AttemptDoc>,
    #[serde(default)]
    pub next_attempt_at: Option<DateTime>,
    pub updated_at: DateTime,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptDoc {
    pub at: DateTime,
    /// The HTTP status, when there was an answer.
    #[serde(default)]
    pub status: Option<i32>,
    /// What went wrong without an answer (refused, timed out, ...).
    #[serde(default)]
    pub error: Option<String>,
    pub duration_ms: i64,
    /// Sent by an admin's retry, outside the sequence.
    #[serde(default)]
    pub manual: bool,
}

/// A deliveries index without `_id`, whose pages the server sorted in
/// memory.
const REPLACED_DELIVERY_INDEXES: [&str; 1] = ["endpoint_id_1_updated_at_-1"];

impl Mongo {
    pub(super) async fn ensure_webhook_indexes(&self) -> Result<(), StoreError> {
        // An endpoint's deliveries page, the most recently tried first and
        // by id within a millisecond: read in index order, a page at a time.
        self.webhook_deliveries
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"endpoint_id": 1, "updated_at": -1, "_id": 1})
                    .build(),
            )
            .await?;
        self.drop_replaced_indexes(&self.webhook_deliveries, &REPLACED_DELIVERY_INDEXES)
            .await?;
        self.webhook_cursors
            .create_index(IndexModel::builder().keys(doc! {"endpoint_id": 1}).build())
            .await?;
        Ok(())
    }

    pub async fn insert_endpoint(&self, endpoint: &EndpointDoc) -> Result<(), StoreError> {
        self.bounded(async {
            self.webhook_endpoints.insert_one(endpoint).await?;
            Ok(())
        })
        .await
    }

    /// Every endpoint, oldest first. What they want is also what the
    /// outbox's interest learns, as of when the read began.
    pub async fn endpoints(&self) -> Result<Vec<EndpointDoc>, StoreError> {
        let read_at = std::time::Instant::now();
        let endpoints: Vec<EndpointDoc> = self
            .bounded(async {
                Ok(self
                    .webhook_endpoints
                    .find(doc! {})
                    .sort(doc! {"created_at": 1})
                    .await?
                    .try_collect()
                    .await?)
            })
            .await?;
        let types = endpoints
            .iter()
            .flat_map(|e| e.types.iter().copied())
            .collect();
        self.interest.learn(read_at, types);
        Ok(endpoints)
    }

    pub async fn endpoint(&self, id: &str) -> Result<Option<EndpointDoc>, StoreError> {
        self.bounded(async { Ok(self.webhook_endpoints.find_one(doc! {"_id": id}).await?) })
            .await
    }

    /// Removes an endpoint and where it stood; true when it existed. Its
    /// deliveries stay readable until they age out.
    pub async fn delete_endpoint(&self, id: &str) -> Result<bool, StoreError> {
        self.bounded(async {
            let r = self.webhook_endpoints.delete_one(doc! {"_id": id}).await?;
            self.webhook_cursors
                .delete_many(doc! {"endpoint_id": id})
                .await?;
            Ok(r.deleted_count > 0)
        })
        .await
    }

    /// Disables an endpoint (once), saying why.
    pub async fn disable_endpoint(&self, id: &str, reason: &str) -> Result<bool, StoreError> {
        self.bounded(async {
            let r = self
                .webhook_endpoints
                .update_one(
                    doc! {"_id": id, "disabled": null},
                    doc! {"$set": {"disabled": {"at": crate::clock::LocalClock::default().now_bson(), "reason": reason}}},
                )
                .await?;
            Ok(r.modified_count > 0)
        })
        .await
    }

    /// Enables an endpoint again: its sequences go on from where they
    /// stopped, at once.
    pub async fn enable_endpoint(&self, id: &str) -> Result<Option<EndpointDoc>, StoreError> {
        self.bounded(async {
            let found = self
                .webhook_endpoints
                .find_one_and_update(doc! {"_id": id}, doc! {"$unset": {"disabled": ""}})
                .return_document(ReturnDocument::After)
                .await?;
            if found.is_some() {
                self.webhook_cursors
                    .update_many(
                        doc! {"endpoint_id": id},
                        doc! {"$set": {"attempts": 0_i64, "failing_since": null,
                        "next_at": crate::clock::LocalClock::default().now_bson()}},
                    )
                    .await?;
            }
            Ok(found)
        })
        .await
    }

    pub async fn cursors(&self) -> Result<Vec<CursorDoc>, StoreError> {
        self.bounded(async {
            Ok(self
                .webhook_cursors
                .find(doc! {})
                .await?
                .try_collect()
                .await?)
        })
        .await
    }

    /// Claims an endpoint's cursor in a sale for `lease`, unless another
    /// instance holds it or it is not due. One not there yet is made at
    /// the start of the sequence by a plain insert (no upsert: one whose
    /// answer was lost would hold the cursor for a lease unseen).
    pub async fn claim_cursor(
        &self,
        endpoint: &str,
        sale: &str,
        owner: &str,
        lease: std::time::Duration,
        now: DateTime,
    ) -> Result<Option<CursorDoc>, StoreError> {
        let id = cursor_id(endpoint, sale);
        let until = DateTime::from_millis(now.timestamp_millis() + lease.as_millis() as i64);
        self.bounded(async {
            for _ in 0..2 {
                let claimed = self
                    .webhook_cursors
                    .find_one_and_update(
                        doc! {"_id": &id, "until": {"$lte": now}, "next_at": {"$lte": now}},
                        doc! {"$set": {"owner": owner, "until": until}},
                    )
                    .return_document(ReturnDocument::After)
                    .await?;
                if claimed.is_some() {
                    return Ok(claimed);
                }
                let start = CursorDoc {
                    id: id.clone(),
                    endpoint_id: endpoint.to_owned(),
                    sale_id: sale.to_owned(),
                    done: 0,
                    attempts: 0,
                    failing_since: None,
                    next_at: now,
                    owner: None,
                    until: now,
                };
                match self.webhook_cursors.insert_one(&start).await {
                    Ok(_) => {}
                    // It exists, and is held or not due.
                    Err(e) if is_duplicate_key(&e) => return Ok(None),
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(None)
        })
        .await
    }

    /// Saves a claimed cursor's progress and holds it for `lease` more (or
    /// lets it go with a zero lease); false when the claim was lost to
    /// another instance.
    pub async fn save_cursor(
        &self,
        cursor: &CursorDoc,
        owner: &str,
        lease: std::time::Duration,
        now: DateTime,
    ) -> Result<bool, StoreError> {
        let until = DateTime::from_millis(now.timestamp_millis() + lease.as_millis() as i64);
        self.bounded(async {
            let r = self
                .webhook_cursors
                .update_one(
                    doc! {"_id": &cursor.id, "owner": owner},
                    doc! {"$set": {"done": cursor.done, "attempts": cursor.attempts,
                    "failing_since": cursor.failing_since, "next_at": cursor.next_at,
                    "until": until}},
                )
                .await?;
            Ok(r.matched_count > 0)
        })
        .await
    }

    /// Records one attempt at a delivery (creating it on the first).
    pub async fn record_attempt(
        &self,
        delivery: &DeliveryDoc,
        attempt: &AttemptDoc,
    ) -> Result<(), StoreError> {
        let attempt = bson::to_bson(attempt).map_err(|e| anyhow::anyhow!("{e}"))?;
        let state = bson::to_bson(&delivery.state).map_err(|e| anyhow::anyhow!("{e}"))?;
        let kind = bson::to_bson(&delivery.kind).map_err(|e| anyhow::anyhow!("{e}"))?;
        self.bounded(async {
            self.webhook_deliveries
                .update_one(
                    doc! {"_id": &delivery.id},
                    doc! {
                        "$set": {"state": state, "updated_at": delivery.updated_at,
                            "next_attempt_at": delivery.next_attempt_at},
                        "$setOnInsert": {"endpoint_id": &delivery.endpoint_id,
                            "message_id": &delivery.message_id, "sale_id": &delivery.sale_id,
                            "seq": delivery.seq, "type": kind},
                        "$push": {"attempts": {"$each": [attempt], "$slice": -ATTEMPTS_KEPT}},
                    },
                )
                .upsert(true)
                .await?;
            Ok(())
        })
        .await
    }

    /// An endpoint's deliveries, the most recently tried first.
    pub async fn deliveries(
        &self,
        endpoint: &str,
        limit: i64,
    ) -> Result<Vec<DeliveryDoc>, StoreError> {
        self.bounded(async {
            Ok(self
                .webhook_deliveries
                .find(doc! {"endpoint_id": endpoint})
                .sort(doc! {"updated_at": -1, "_id": 1})
                .limit(limit)
                .await?
                .try_collect()
                .await?)
        })
        .await
    }

    pub async fn delivery(&self, id: &str) -> Result<Option<DeliveryDoc>, StoreError> {
        self.bounded(async { Ok(self.webhook_deliveries.find_one(doc! {"_id": id}).await?) })
            .await
    }
}
