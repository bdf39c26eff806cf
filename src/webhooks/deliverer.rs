//! The deliverer: a loop in every instance that walks each endpoint
//! through each sale's sequence of messages, in order, one instance per
//! (endpoint, sale) at a time. The claim is a lease on the cursor: one
//! held by an instance that died runs out and another takes over, sending
//! again whatever was not recorded as delivered (the same `webhook-id`, so
//! at least once). A message is tried until it is delivered or refused for
//! good; a sequence waits behind its failing message (order comes first),
//! and an endpoint failing for `FLASHDROP_WEBHOOK_RETRY_FOR` is disabled,
//! its messages kept for when it is enabled again.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use bson::DateTime;
use futures_util::{StreamExt, stream};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::sender::{Sender, Verdict};
use crate::{
    config::WebhookSettings,
    ids::SaleId,
    store::{
        Store, StoreError,
        mongo::{
            AttemptDoc, CursorDoc, DeliveryDoc, DeliveryState, EndpointDoc, MessageState,
            MessageType, OutboxDoc,
        },
    },
};

const PASS_EVERY: Duration = Duration::from_millis(200);
/// A message staged this long ago whose writer never made it ready is
/// settled from its cause (far beyond a write's timeout).
const SETTLE_AFTER: Duration = Duration::from_secs(10);
/// A place in a sequence empty this long belongs to a writer that stopped.
const GAP_WAIT: Duration = Duration::from_secs(5);
/// Messages read at once.
const BATCH: i64 = 50;
/// Sequences worked on at once by one instance.
const AT_ONCE: usize = 16;

pub struct Deliverer {
    store: Store,
    sender: Sender,
    settings: WebhookSettings,
    owner: String,
    /// Empty places seen, and since when.
    gaps: Mutex<HashMap<(String, i64), Instant>>,
}

/// How a sequence was left.
enum Left {
    /// Nothing more to send now.
    Done,
    /// Waiting behind a message sent since this time.
    Waiting(DateTime),
}

impl Deliverer {
    pub(super) fn new(store: Store, sender: Sender, settings: WebhookSettings) -> Self {
        Self {
            sender,
            store,
            settings,
            owner: format!("{}-{}", std::process::id(), SaleId::new()),
            gaps: Mutex::default(),
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        loop {
            if let Err(err) = this.pass(&shutdown).await {
                tracing::warn!(error = %err, "a webhook delivery pass failed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(PASS_EVERY) => {}
            }
        }
    }

    async fn pass(self: &Arc<Self>, shutdown: &CancellationToken) -> Result<(), StoreError> {
        let mongo = &self.store.mongo;
        self.gaps
            .lock()
            .retain(|_, seen| seen.elapsed() < Duration::from_secs(600));
        let endpoints = mongo.endpoints().await?;
        if endpoints.is_empty() {
            metrics::gauge!("flashdrop_webhook_oldest_undelivered_seconds").set(0.0);
            return Ok(());
        }
        let endpoints: Vec<EndpointDoc> = endpoints
            .into_iter()
            .filter(|e| e.disabled.is_none())
            .collect();
        let heads = mongo.outbox_heads().await?;
        let cursors: HashMap<String, CursorDoc> = mongo
            .cursors()
            .await?
            .into_iter()
            .map(|c| (c.id.clone(), c))
            .collect();
        // Leases and waits are decided on the Redis clock, which every
        // instance shares.
        let now = self.now().await?;
        let mut due = Vec::new();
        for endpoint in &endpoints {
            for (sale, head) in &heads {
                let id = crate::store::mongo::cursor_id(&endpoint.id, sale);
                let ready = match cursors.get(&id) {
                    None => *head > 0,
                    Some(c) => c.done < *head && c.next_at <= now && c.until <= now,
                };
                if ready {
                    due.push((endpoint.clone(), sale.clone(), *head));
                }
            }
        }
        let waits: Vec<Option<DateTime>> = stream::iter(due)
            .map(|(endpoint, sale, head)| async move {
                match self.work(&endpoint, &sale, head, shutdown).await {
                    Ok(Left::Waiting(since)) => Some(since),
                    Ok(Left::Done) => None,
                    Err(err) => {
                        tracing::warn!(endpoint = %endpoint.id, sale_id = %sale, error = %err, "webhook delivery waits");
                        None
                    }
                }
            })
            .buffer_unordered(AT_ONCE)
            .collect()
            .await;
        // Sequences waiting for their next retry, or for their endpoint to
        // be enabled, count from when their message began to fail.
        let failing = cursors.values().filter_map(|c| c.failing_since);
        let oldest = waits
            .into_iter()
            .flatten()
            .chain(failing)
            .map(|at| (now.timestamp_millis() - at.timestamp_millis()).max(0) as f64 / 1000.0)
            .fold(0.0, f64::max);
        metrics::gauge!("flashdrop_webhook_oldest_undelivered_seconds").set(oldest);
        Ok(())
    }

    /// Claims the endpoint's cursor in the sale, sends what is due in
    /// order, and lets the cursor go.
    async fn work(
        &self,
        endpoint: &EndpointDoc,
        sale: &str,
        head: i64,
        shutdown: &CancellationToken,
    ) -> Result<Left, StoreError> {
        let mongo = &self.store.mongo;
        let lease = self.settings.lease();
        let Some(mut cursor) = mongo
            .claim_cursor(&endpoint.id, sale, &self.owner, lease, self.now().await?)
            .await?
        else {
            return Ok(Left::Done);
        };
        let left = self.advance(endpoint, &mut cursor, head, shutdown).await;
        mongo
            .save_cursor(&cursor, &self.owner, Duration::ZERO, self.now().await?)
            .await?;
        left
    }

    async fn advance(
        &self,
        endpoint: &EndpointDoc,
        cursor: &mut CursorDoc,
        head: i64,
        shutdown: &CancellationToken,
    ) -> Result<Left, StoreError> {
        let mongo = &self.store.mongo;
        'read: loop {
            let docs = mongo
                .messages_after(&cursor.sale_id, cursor.done, BATCH)
                .await?;
            if docs.is_empty() {
                if head > cursor.done && self.gap_closed(&cursor.sale_id, cursor.done + 1).await? {
                    continue 'read;
                }
                return Ok(Left::Done);
            }
            for doc in docs {
                let expected = cursor.done + 1;
                if doc.seq != expected {
                    if self.gap_closed(&cursor.sale_id, expected).await? {
                        continue 'read;
                    }
                    return Ok(Left::Waiting(doc.created_at));
                }
                match doc.state {
                    MessageState::Staged => {
                        let age = self.now().await?.timestamp_millis()
                            - doc.created_at.timestamp_millis();
                        if age > SETTLE_AFTER.as_millis() as i64 {
                            mongo.settle_staged(&doc).await?;
                            continue 'read;
                        }
                        return Ok(Left::Waiting(doc.created_at));
                    }
                    MessageState::Void => cursor.done = doc.seq,
                    MessageState::Ready => {
                        // Not one it takes, or from before it was added.
                        let Some(kind) = doc.kind.filter(|k| {
                            endpoint.types.contains(k) && doc.created_at >= endpoint.created_at
                        }) else {
                            cursor.done = doc.seq;
                            continue;
                        };
                        if shutdown.is_cancelled() {
                            return Ok(Left::Waiting(doc.created_at));
                        }
                        if !self.deliver(endpoint, cursor, &doc, kind).await? {
                            return Ok(Left::Waiting(doc.created_at));
                        }
                        // Progress is recorded before the next send: a
                        // takeover sends again at most this one.
                        if !mongo
                            .save_cursor(
                                cursor,
                                &self.owner,
                                self.settings.lease(),
                                self.now().await?,
                            )
                            .await?
                        {
                            return Err(StoreError::Other(anyhow::anyhow!(
                                "lost the claim on {}",
                                cursor.id
                            )));
                        }
                    }
                }
            }
        }
    }

    /// Sends one message; true when the sequence moves past it.
    async fn deliver(
        &self,
        endpoint: &EndpointDoc,
        cursor: &mut CursorDoc,
        doc: &OutboxDoc,
        kind: MessageType,
    ) -> Result<bool, StoreError> {
        let (verdict, attempt) = self.sender.send(endpoint, doc, false).await;
        let now = self.now().await?;
        let mut delivery = DeliveryDoc {
            id: delivery_id(&endpoint.id, &doc.id),
            endpoint_id: endpoint.id.clone(),
            message_id: doc.id.clone(),
            sale_id: doc.sale_id.clone(),
            seq: doc.seq,
            kind,
            state: DeliveryState::Delivered,
            attempts: vec![],
            next_attempt_at: None,
            updated_at: now,
        };
        let moves_on = match verdict {
            Verdict::Delivered => {
                metrics::counter!("flashdrop_webhook_delivered_total").increment(1);
                true
            }
            Verdict::Refused => {
                metrics::counter!("flashdrop_webhook_failed_total").increment(1);
                delivery.state = DeliveryState::Failed;
                tracing::warn!(endpoint = %endpoint.id, message = %doc.id, status = ?attempt.status, "an endpoint refused a message for good");
                true
            }
            Verdict::Retry => {
                cursor.attempts += 1;
                let since = *cursor.failing_since.get_or_insert(now);
                let wait = jittered(self.settings.backoff(cursor.attempts as u32));
                let next = now.timestamp_millis() + wait.as_millis() as i64;
                delivery.state = DeliveryState::Pending;
                delivery.next_attempt_at = Some(DateTime::from_millis(next));
                cursor.next_at = DateTime::from_millis(next);
                if next - since.timestamp_millis() > self.settings.retry_for.as_millis() as i64 {
                    self.give_up(endpoint, cursor, &attempt).await?;
                    delivery.next_attempt_at = None;
                }
                false
            }
        };
        if moves_on {
            cursor.done = doc.seq;
            cursor.attempts = 0;
            cursor.failing_since = None;
        }
        self.store.mongo.record_attempt(&delivery, &attempt).await?;
        Ok(moves_on)
    }

    /// The endpoint failed for the whole retry period: it is disabled, and
    /// its messages wait for it to be enabled again.
    async fn give_up(
        &self,
        endpoint: &EndpointDoc,
        cursor: &CursorDoc,
        last: &AttemptDoc,
    ) -> Result<(), StoreError> {
        let answer = match (&last.status, &last.error) {
            (Some(status), _) => format!("HTTP {status}"),
            (None, Some(error)) => error.clone(),
            (None, None) => "no answer".into(),
        };
        let reason = format!(
            "{} attempts failed over {} (last: {answer}); its messages wait: POST /api/v1/admin/webhooks/{}/enable sends them",
            cursor.attempts,
            humantime::format_duration(Duration::from_secs(
                self.settings.retry_for.as_secs().max(1)
            )),
            endpoint.id
        );
        if self
            .store
            .mongo
            .disable_endpoint(&endpoint.id, &reason)
            .await?
        {
            metrics::counter!("flashdrop_webhook_endpoints_disabled_total").increment(1);
            tracing::error!(endpoint = %endpoint.id, url = %endpoint.url, %reason, "webhook endpoint disabled");
        }
        Ok(())
    }

    async fn now(&self) -> Result<DateTime, StoreError> {
        Ok(DateTime::from_millis(self.store.redis.now_ms().await?))
    }

    /// Whether the empty place `seq` is closed now: one empty for
    /// `GAP_WAIT` gets a tombstone (or was filled meanwhile).
    async fn gap_closed(&self, sale: &str, seq: i64) -> Result<bool, StoreError> {
        let key = (sale.to_owned(), seq);
        let since = *self
            .gaps
            .lock()
            .entry(key.clone())
            .or_insert_with(Instant::now);
        if since.elapsed() < GAP_WAIT {
            return Ok(false);
        }
        if self.store.mongo.close_gap(sale, seq).await? {
            tracing::warn!(
                sale_id = sale,
                seq,
                "closed an outbox place its writer never used"
            );
        }
        self.gaps.lock().remove(&key);
        Ok(true)
    }
}

pub fn delivery_id(endpoint: &str, message: &str) -> String {
    format!("{endpoint}/{message}")
}

/// ±25 %, so endpoints that failed together are not all tried at once.
fn jittered(wait: Duration) -> Duration {
    wait.mul_f64(rand::random_range(0.75..1.25))
}
