//! Sends one message to one endpoint and says what came of it.

use std::time::{Duration, Instant};

use super::signature;
use crate::store::mongo::{AttemptDoc, EndpointDoc, OutboxDoc};

/// What an attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A 2xx answer.
    Delivered,
    /// No answer, a 5xx, a 3xx, 408 or 429: tried again later.
    Retry,
    /// Another 4xx: the endpoint refuses this message for good.
    Refused,
}

#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
}

impl Sender {
    pub fn new(timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            // A redirect is an answer, not an order to follow it.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("flashdrop-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client with rustls builds");
        Self { client }
    }

    /// Sends `message` signed for `endpoint`, now.
    pub async fn send(
        &self,
        endpoint: &EndpointDoc,
        message: &OutboxDoc,
        manual: bool,
    ) -> (Verdict, AttemptDoc) {
        let body = message.body();
        let timestamp = crate::clock::LocalClock::default().now().timestamp();
        let signature = signature::sign(&endpoint.secret, &message.id, timestamp, &body);
        let started = Instant::now();
        let at = crate::clock::LocalClock::default().now_bson();
        let answer = self
            .client
            .post(&endpoint.url)
            .header("content-type", "application/json")
            .header("webhook-id", &message.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let duration_ms = started.elapsed().as_millis() as i64;
        let (verdict, status, error) = match answer {
            Ok(r) => {
                let status = r.status();
                let verdict = if status.is_success() {
                    Verdict::Delivered
                } else if status.is_client_error() && status != 408 && status != 429 {
                    Verdict::Refused
                } else {
                    Verdict::Retry
                };
                (verdict, Some(i32::from(status.as_u16())), None)
            }
            Err(e) => {
                let what = if e.is_timeout() {
                    "timed out".to_owned()
                } else if e.is_connect() {
                    "could not connect".to_owned()
                } else {
                    format!("no answer: {e}")
                };
                (Verdict::Retry, None, Some(what))
            }
        };
        let outcome = match verdict {
            Verdict::Delivered => "delivered",
            Verdict::Retry => "retry",
            Verdict::Refused => "refused",
        };
        metrics::counter!("flashdrop_webhook_attempts_total", "outcome" => outcome).increment(1);
        let attempt = AttemptDoc {
            at,
            status,
            error,
            duration_ms,
            manual,
        };
        (verdict, attempt)
    }
}
