//! The payment provider's side, for `mix --pay`: ask for a hold's payment
//! intent as its buyer, then send the signed webhook as a provider does,
//! retrying while no server answers (a provider retries an unanswered
//! webhook).

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

/// `Flashdrop-Signature` for `body` at unix time `t`.
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Pays for a hold: the intent, then one event (`succeeded` or `failed`),
/// delivered until a server answers it, up to `tries` times. Returns the
/// webhook's last status (0: no server answered) and outcome.
pub async fn pay(
    http: &reqwest::Client,
    apis: &[String],
    token: &str,
    rid: &str,
    status: &str,
    secret: &str,
    tries: usize,
) -> (u16, String) {
    let (code, intent) = super::mix::call(
        http.post(format!("{}/reservations/{rid}/payment", apis[0]))
            .bearer_auth(token),
    )
    .await;
    if code != 200 && code != 201 {
        return (code, format!("intent {code}"));
    }
    let event = json!({
        "event_id": format!("evt-{rid}"),
        "payment_id": intent["payment_id"],
        "status": status,
        "amount_cents": intent["amount_cents"],
        "currency": intent["currency"],
    });
    let body = serde_json::to_vec(&event).expect("json");
    let mut last = (0, String::new());
    for attempt in 0..tries {
        let t = chrono::Utc::now().timestamp();
        let (code, answer) = super::mix::call(
            http.post(format!("{}/payments/webhook", apis[attempt % apis.len()]))
                .header("content-type", "application/json")
                .header("Flashdrop-Signature", signature(secret, t, &body))
                .body(body.clone()),
        )
        .await;
        last = (
            code,
            answer["outcome"].as_str().unwrap_or_default().to_owned(),
        );
        if code != 0 && code != 503 {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    last
}
