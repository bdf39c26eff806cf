//! Payment inside the hold: the intent, the provider's signed webhook, and
//! the one rule for money and the deadline, against the real servers.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{
    PAYMENT_SECRET, TestApp, admin_token, buyer_token, eventually, free_port, hold, join, json,
    python, readme_python, sale_body, serve_command, servers, spawn_app, unique_db, wait_for_port,
    waitlist_me,
};
use flashdrop::payments::signature::sign;

/// A sale that takes payment, with `overrides`.
pub async fn payment_sale(app: &TestApp, overrides: Value) -> String {
    let mut body = json!({"payment": "webhook", "payment_seconds": 300, "price_cents": 2_500});
    for (k, v) in overrides.as_object().unwrap() {
        body[k] = v.clone();
    }
    app.create_sale(body).await
}

/// `POST /reservations/{rid}/payment` as the buyer.
pub async fn pay(http: &reqwest::Client, base: &str, rid: &str, buyer: &str) -> reqwest::Response {
    http.post(format!("{base}/reservations/{rid}/payment"))
        .bearer_auth(buyer_token(buyer))
        .send()
        .await
        .unwrap()
}

/// The intent of a hold, made now: its body.
pub async fn intent(app: &TestApp, rid: &str, buyer: &str) -> Value {
    let resp = pay(&app.http, &app.api(""), rid, buyer).await;
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    json(resp).await
}

/// The provider's event for an intent.
pub fn event(event_id: &str, intent: &Value, status: &str) -> Value {
    json!({
        "event_id": event_id,
        "payment_id": intent["payment_id"],
        "status": status,
        "amount_cents": intent["amount_cents"],
        "currency": intent["currency"],
    })
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The webhook request the provider sends for `body`, signed at `t`.
fn signed_request(
    http: &reqwest::Client,
    base: &str,
    body: &Value,
    t: i64,
) -> reqwest::RequestBuilder {
    let raw = serde_json::to_vec(body).unwrap();
    http.post(format!("{base}/payments/webhook"))
        .header(
            "Flashdrop-Signature",
            sign(PAYMENT_SECRET.as_bytes(), t, &raw),
        )
        .header("content-type", "application/json")
        .body(raw)
}

/// Sends `body` to the webhook as the provider does, signed at `t`.
pub async fn deliver_at(
    http: &reqwest::Client,
    base: &str,
    body: &Value,
    t: i64,
) -> reqwest::Response {
    signed_request(http, base, body, t).send().await.unwrap()
}

pub async fn deliver(app: &TestApp, body: &Value) -> reqwest::Response {
    deliver_at(&app.http, &app.api(""), body, now_secs()).await
}

async fn refunds(app: &TestApp, sale: &str) -> Vec<Value> {
    let resp = app
        .http
        .get(app.api(&format!("/admin/refunds?sale_id={sale}&limit=500")))
        .bearer_auth(admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    json(resp).await.as_array().unwrap().clone()
}

async fn hold_state(app: &TestApp, sale: &str, rid: &str) -> String {
    app.holds(sale).await[rid]["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_paid_hold_becomes_one_order_however_often_the_provider_delivers() {
    let app = spawn_app().await;
    let sale = payment_sale(&app, json!({"total": 5, "hold_seconds": 60})).await;
    assert_eq!(app.get_sale(&sale).await["payment"], "webhook");
    let rid = hold(&app, &sale, "payer", 2).await;

    // Plain confirm is refused: the payment confirms.
    let confirm = app.confirm(&rid, "payer").await;
    assert_eq!(confirm.status(), 409);
    assert_eq!(json(confirm).await["code"], "payment_required");

    let before = app.reservation(&rid, "payer").await["expires_at"].clone();
    let first = intent(&app, &rid, "payer").await;
    assert_eq!(first["amount_cents"], 5_000);
    assert_eq!(first["currency"], "EUR");
    assert_eq!(app.reservation(&rid, "payer").await["status"], "paying");
    let deadline = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    let extended = deadline(&first["expires_at"]);
    assert!(extended > deadline(&before), "the deadline moved out");
    let from_now = extended.timestamp() - now_secs();
    assert!((295..=301).contains(&from_now), "{from_now} s");
    // A repeat gives the same intent, and does not extend again.
    let again = pay(&app.http, &app.api(""), &rid, "payer").await;
    assert_eq!(again.status(), 200);
    let again = json(again).await;
    assert_eq!(again["payment_id"], first["payment_id"]);
    assert_eq!(again["expires_at"], first["expires_at"]);
    // Another buyer cannot pay for it.
    assert_eq!(
        pay(&app.http, &app.api(""), &rid, "thief").await.status(),
        404
    );

    // The provider delivers the same success three times at once, and
    // once more under another event id.
    let success = event("evt-ok-1", &first, "succeeded");
    let answers = join_all((0..3).map(|_| deliver(&app, &success))).await;
    let mut duplicates = 0;
    for resp in answers {
        assert_eq!(resp.status(), 200);
        let body = json(resp).await;
        assert_eq!(body["outcome"], "confirmed", "{body}");
        duplicates += i32::from(body["duplicate"] == true);
    }
    assert!(duplicates <= 2);
    let other = deliver(&app, &event("evt-ok-2", &first, "succeeded")).await;
    assert_eq!(json(other).await["outcome"], "confirmed");
    let replay = json(deliver(&app, &success).await).await;
    assert_eq!(replay["duplicate"], true);
    // A failure after the success changes nothing.
    let failed = json(deliver(&app, &event("evt-fail", &first, "failed")).await).await;
    assert_eq!(failed["outcome"], "ignored");

    let orders = app.orders(&sale).await;
    assert_eq!(orders.len(), 1, "one order");
    assert_eq!(orders[0].id, rid);
    assert_eq!(
        orders[0].payment_id.as_deref(),
        first["payment_id"].as_str()
    );
    assert_eq!(orders[0].quantity, 2);
    assert_eq!(hold_state(&app, &sale, &rid).await, "confirmed");
    assert!(refunds(&app, &sale).await.is_empty());
    let (available, held, sold) = app.check_invariants(&sale).await;
    assert_eq!((available, held, sold), (3, 0, 2));
    // The buyer's confirm now returns the order.
    assert_eq!(app.confirm(&rid, "payer").await.status(), 200);
}

#[tokio::test]
async fn webhooks_that_are_not_the_providers_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let sale = payment_sale(&app, json!({"total": 3})).await;
    let rid = hold(&app, &sale, "careful", 1).await;
    let intent = intent(&app, &rid, "careful").await;
    let good = event("evt-1", &intent, "succeeded");
    let base = app.api("");
    let raw = serde_json::to_vec(&good).unwrap();
    let send = |signature: Option<String>, body: Vec<u8>| {
        let mut req = app
            .http
            .post(format!("{base}/payments/webhook"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(s) = signature {
            req = req.header("Flashdrop-Signature", s);
        }
        req.send()
    };
    let secret = PAYMENT_SECRET.as_bytes();
    let mut wrong_amount = good.clone();
    wrong_amount["amount_cents"] = json!(1);
    let mut wrong_currency = good.clone();
    wrong_currency["currency"] = json!("USD");
    let mut unknown = good.clone();
    unknown["payment_id"] = json!("pay_nothing-here");
    // A number is not the event's id: poem-openapi's `String` took it as
    // "7" and the payment counted under an id the provider never sent.
    let mut numbered = good.clone();
    numbered["event_id"] = json!(7);
    let signed = |v: &Value| {
        let raw = serde_json::to_vec(v).unwrap();
        (Some(sign(secret, now_secs(), &raw)), raw)
    };
    let mut tampered = raw.clone();
    tampered[raw.len() - 3] ^= 1;
    // The signatures' time: a second may turn before the server checks,
    // so the times outside the tolerance are a minute outside it (its
    // exact edges are the unit tests' in `payments::signature`).
    let t0 = now_secs();
    let outside = flashdrop::payments::signature::TOLERANCE_SECS + 60;
    // What is sent: why, the signature header, the body; and the answer.
    type Case<'a> = (&'a str, Option<String>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("no signature", None, raw.clone(), 401, "bad_signature"),
        (
            "another secret",
            Some(sign(b"not-the-secret", now_secs(), &raw)),
            raw.clone(),
            401,
            "bad_signature",
        ),
        (
            "a changed body",
            Some(sign(secret, now_secs(), &raw)),
            tampered,
            401,
            "bad_signature",
        ),
        (
            "an old timestamp",
            Some(sign(secret, t0 - outside, &raw)),
            raw.clone(),
            401,
            "bad_signature",
        ),
        (
            "a future timestamp",
            Some(sign(secret, t0 + outside, &raw)),
            raw.clone(),
            401,
            "bad_signature",
        ),
        (
            "garbage",
            Some("t=1,v1=zz".into()),
            raw.clone(),
            401,
            "bad_signature",
        ),
        (
            "a wrong amount",
            signed(&wrong_amount).0,
            signed(&wrong_amount).1,
            409,
            "payment_mismatch",
        ),
        (
            "a wrong currency",
            signed(&wrong_currency).0,
            signed(&wrong_currency).1,
            409,
            "payment_mismatch",
        ),
        (
            "an unknown payment",
            signed(&unknown).0,
            signed(&unknown).1,
            404,
            "not_found",
        ),
        (
            "a number for the event's id",
            signed(&numbered).0,
            signed(&numbered).1,
            400,
            "invalid_request",
        ),
        (
            "an unknown field",
            signed(&json!({"extra": 1})).0,
            signed(&json!({"extra": 1})).1,
            400,
            "invalid_request",
        ),
        (
            "not JSON",
            Some(sign(secret, now_secs(), b"{")),
            b"{".to_vec(),
            400,
            "invalid_request",
        ),
    ];
    // Let the second turn, as it may on a slow run (CI saw a timestamp
    // signed 301 s ahead accepted): the times outside must stay outside.
    while now_secs() == t0 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    for (what, signature, body, status, code) in cases {
        let resp = send(signature, body).await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{what}");
        assert_eq!(json(resp).await["code"], code, "{what}");
    }
    // Nothing changed: still paying, no order, no refund, the event unseen.
    assert_eq!(hold_state(&app, &sale, &rid).await, "paying");
    assert!(app.orders(&sale).await.is_empty());
    assert!(refunds(&app, &sale).await.is_empty());
    // The genuine event, afterwards, is the first with its id.
    let ok = json(deliver(&app, &good).await).await;
    assert_eq!(
        (ok["outcome"].clone(), ok["duplicate"].clone()),
        (json!("confirmed"), json!(false))
    );
    app.check_invariants(&sale).await;
}

#[tokio::test]
async fn payment_settings_are_checked_and_a_sale_without_payment_refuses_intents() {
    let app = spawn_app().await;
    for seconds in [29, 1801] {
        let resp = app
            .http
            .post(app.api("/admin/sales"))
            .bearer_auth(admin_token())
            .json(&sale_body(
                json!({"payment": "webhook", "payment_seconds": seconds}),
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "payment_seconds {seconds}");
    }
    let plain = app.create_sale(json!({})).await;
    let view = app.get_sale(&plain).await;
    assert_eq!(
        (view["payment"].clone(), view["payment_seconds"].clone()),
        (json!("none"), Value::Null)
    );
    let rid = hold(&app, &plain, "cash", 1).await;
    let resp = pay(&app.http, &app.api(""), &rid, "cash").await;
    assert_eq!(resp.status(), 409);
    assert_eq!(json(resp).await["code"], "payment_not_taken");
    assert_eq!(app.confirm(&rid, "cash").await.status(), 201);

    // Without the webhook's secret no payment sale can be made.
    let bare = crate::helpers::spawn_app_with(|s| s.payment_webhook_secret = None).await;
    let resp = bare
        .http
        .post(bare.api("/admin/sales"))
        .bearer_auth(admin_token())
        .json(&sale_body(json!({"payment": "webhook"})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    let body = json(resp).await;
    assert_eq!(body["code"], "not_configured");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("FLASHDROP_PAYMENT_WEBHOOK_SECRET")
    );
}

#[tokio::test]
async fn a_failed_payment_gives_the_units_to_the_head_of_the_line() {
    let app = spawn_app().await;
    let sale = payment_sale(&app, json!({"total": 1, "per_user_limit": 1})).await;
    let rid = hold(&app, &sale, "declined", 1).await;
    let intent = intent(&app, &rid, "declined").await;
    assert_eq!(join(&app, &sale, "next-in-line", 1).await.status(), 201);

    let answer = json(deliver(&app, &event("evt-declined", &intent, "failed")).await).await;
    assert_eq!(answer["outcome"], "released");
    assert_eq!(hold_state(&app, &sale, &rid).await, "cancelled");
    let me = waitlist_me(&app, &sale, "next-in-line").await;
    assert_eq!(me["status"], "promoted", "{me}");
    // The money comes after all: late, so a refund, never a second unit.
    let late = json(deliver(&app, &event("evt-late", &intent, "succeeded")).await).await;
    assert_eq!(late["outcome"], "refund_due");
    let due = refunds(&app, &sale).await;
    assert_eq!(due.len(), 1);
    assert_eq!(due[0]["reason"], "cancelled");
    assert!(app.orders(&sale).await.is_empty());
    let (available, held, sold) = app.check_invariants(&sale).await;
    assert_eq!((available, held, sold), (0, 1, 0));
}

#[tokio::test]
async fn money_after_the_buyer_cancelled_is_a_refund_due_counted_everywhere() {
    let app = spawn_app().await;
    let sale = payment_sale(&app, json!({"total": 2})).await;
    let rid = hold(&app, &sale, "changed-mind", 2).await;
    let intent = intent(&app, &rid, "changed-mind").await;
    assert_eq!(app.cancel(&rid, "changed-mind").await.status(), 204);
    let late = event("evt-after-cancel", &intent, "succeeded");
    let answers = join_all((0..3).map(|_| deliver(&app, &late))).await;
    for resp in answers {
        assert_eq!(resp.status(), 200);
        assert_eq!(json(resp).await["outcome"], "refund_due");
    }
    let due = refunds(&app, &sale).await;
    assert_eq!(
        due.len(),
        1,
        "one refund however often the money is reported"
    );
    assert_eq!(due[0]["amount_cents"], 5_000);
    assert_eq!(due[0]["buyer"], "changed-mind");
    assert!(app.orders(&sale).await.is_empty());
    let summary = app
        .http
        .get(app.api(&format!("/admin/sales/{sale}/summary")))
        .bearer_auth(admin_token())
        .send()
        .await
        .unwrap();
    let summary = json(summary).await;
    assert_eq!(summary["refunds_due"], 1, "{summary}");
    assert_eq!(summary["refunds_due_cents"], 5_000);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("flashdrop_refunds_due_total"),
        "the metric is exported"
    );
    app.check_invariants(&sale).await;
}

/// Successes sent around the deadline, a few hundred times: each ends as
/// exactly one of an order and a refund due, never both, never neither,
/// and the stock adds up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_at_the_deadline_is_an_order_or_a_refund_never_both_never_neither() {
    const BUYERS: usize = 240;
    let app = spawn_app().await;
    let sale = payment_sale(
        &app,
        json!({"total": BUYERS, "per_user_limit": 1, "payment_seconds": 30, "hold_seconds": 10}),
    )
    .await;
    let buyers: Vec<String> = (0..BUYERS).map(|i| format!("racer-{i:03}")).collect();
    let mut intents = Vec::new();
    for chunk in buyers.chunks(40) {
        let made = join_all(chunk.iter().map(|b| async {
            let rid = hold(&app, &sale, b, 1).await;
            (b.clone(), rid.clone(), intent(&app, &rid, b).await)
        }))
        .await;
        intents.extend(made);
    }
    // Each success lands between 300 ms before and 300 ms after its
    // hold's deadline, while the reaper expires the holds as they fall due.
    let deliveries = intents.iter().enumerate().map(|(i, (_, _, intent))| {
        let app = &app;
        async move {
            let deadline =
                chrono::DateTime::parse_from_rfc3339(intent["expires_at"].as_str().unwrap())
                    .unwrap();
            let offset_ms = (i as i64 * 600 / BUYERS as i64) - 300;
            let at = deadline + chrono::Duration::milliseconds(offset_ms);
            let wait = (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
                .to_std()
                .unwrap_or_default();
            tokio::time::sleep(wait).await;
            let body = event(&format!("evt-race-{i}"), intent, "succeeded");
            loop {
                let resp = deliver(app, &body).await;
                match resp.status().as_u16() {
                    200 => return json(resp).await["outcome"].as_str().unwrap().to_owned(),
                    // A 503 is retried, as a provider does.
                    503 => tokio::time::sleep(Duration::from_millis(50)).await,
                    other => panic!("{other}: {}", resp.text().await.unwrap()),
                }
            }
        }
    });
    let outcomes = join_all(deliveries).await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for o in &outcomes {
        *counts.entry(o.clone()).or_default() += 1;
    }
    eprintln!("deadline race outcomes: {counts:?}");
    let orders: HashSet<String> = app.orders(&sale).await.into_iter().map(|o| o.id).collect();
    let refunded: HashSet<String> = refunds(&app, &sale)
        .await
        .into_iter()
        .map(|r| r["reservation_id"].as_str().unwrap().to_owned())
        .collect();
    for ((buyer, rid, _), outcome) in intents.iter().zip(&outcomes) {
        let (ordered, refund) = (orders.contains(rid), refunded.contains(rid));
        assert!(
            ordered != refund,
            "{buyer}: order {ordered}, refund {refund}"
        );
        assert_eq!(
            outcome == "confirmed",
            ordered,
            "{buyer} was told {outcome}"
        );
    }
    assert_eq!(orders.len() + refunded.len(), BUYERS);
    // Both sides of the rule were exercised.
    assert!(!orders.is_empty() && !refunded.is_empty(), "{counts:?}");
    eventually(Duration::from_secs(10), || async {
        (app.check_invariants(&sale).await.1 == 0).then_some(())
    })
    .await
    .expect("every hold settled");
    let (available, _, sold) = app.check_invariants(&sale).await;
    assert_eq!(sold as usize, orders.len());
    assert_eq!(available as usize, refunded.len());
}

/// A flashdrop killed with SIGKILL while a webhook is on its way leaves
/// nothing half done: the provider's retry (to a fresh process) completes
/// it, and there is one order per payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_cut_off_by_kill_9_is_completed_by_the_providers_retry() {
    const ROUNDS: u64 = 16;
    let s = servers();
    let port = free_port();
    let db = unique_db();
    let start = || {
        let child = serve_command(port, &db)
            .env("FLASHDROP_LOG", "error")
            .spawn()
            .expect("flashdrop serve starts");
        wait_for_port(port, "flashdrop");
        child
    };
    let mut server = start();
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{base}/admin/sales"))
        .bearer_auth(admin_token())
        .json(&sale_body(
            json!({"payment": "webhook", "total": ROUNDS, "per_user_limit": 1}),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let sale = json(created).await["id"].as_str().unwrap().to_owned();
    let mongo = flashdrop::store::Mongo::connect(&s.mongo_uri, &db)
        .await
        .unwrap();
    let (mut cut_off, mut written_before_kill) = (0, 0);
    for round in 0..ROUNDS {
        let buyer = format!("killed-{round}");
        let reserved = http
            .post(format!("{base}/sales/{sale}/reservations"))
            .bearer_auth(buyer_token(&buyer))
            .json(&json!({"quantity": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(reserved.status(), 201);
        let rid = json(reserved).await["reservation_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let paid = pay(&http, &base, &rid, &buyer).await;
        assert_eq!(paid.status(), 201);
        let intent = json(paid).await;
        let body = event(&format!("evt-kill-{round}"), &intent, "succeeded");
        // The kill lands a little later each round: before, during and
        // after the webhook's work.
        let sent = tokio::spawn({
            let (http, base, body) = (http.clone(), base.clone(), body.clone());
            async move { signed_request(&http, &base, &body, now_secs()).send().await }
        });
        tokio::time::sleep(Duration::from_micros(round * 500)).await;
        server.start_kill().unwrap();
        server.wait().await.unwrap();
        if sent.await.unwrap().is_err() {
            cut_off += 1;
            let written = mongo.orders_of_buyer(&buyer, 10).await.unwrap();
            written_before_kill += written.len();
        }
        server = start();
        let retried = eventually(Duration::from_secs(20), || async {
            let resp = deliver_at(&http, &base, &body, now_secs()).await;
            (resp.status() == 200).then_some(())
        });
        retried.await.expect("the retry is answered 200");
        let orders = mongo.orders_of_buyer(&buyer, 10).await.unwrap();
        assert_eq!(orders.len(), 1, "round {round}: one order");
        assert_eq!(
            orders[0].payment_id.as_deref(),
            intent["payment_id"].as_str()
        );
    }
    eprintln!(
        "{cut_off} of {ROUNDS} webhooks were cut off before their answer, \
         {written_before_kill} of them after their order was written"
    );
    let _ = server.start_kill();
}

/// `scripts/pay` signs and sends the webhook over HTTP as a provider
/// does: the hold is confirmed, and a repeat of its event changes nothing.
#[tokio::test]
async fn scripts_pay_plays_the_provider() {
    let app = spawn_app().await;
    let sale = payment_sale(&app, json!({"total": 2})).await;
    let rid = hold(&app, &sale, "demo-buyer", 1).await;
    let intent = intent(&app, &rid, "demo-buyer").await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pay");
    let run = || {
        tokio::process::Command::new(script)
            .args([
                intent["payment_id"].as_str().unwrap(),
                "succeeded",
                &intent["amount_cents"].to_string(),
                intent["currency"].as_str().unwrap(),
            ])
            .env("FLASHDROP_URL", app.url(""))
            .env("FLASHDROP_PAYMENT_WEBHOOK_SECRET", PAYMENT_SECRET)
            .env("FLASHDROP_EVENT_ID", "evt-from-the-script")
            .output()
    };
    let out = run().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["outcome"], "confirmed");
    assert_eq!(answer["duplicate"], false);
    let again: Value = serde_json::from_slice(&run().await.unwrap().stdout).unwrap();
    assert_eq!(again["duplicate"], true);
    assert_eq!(app.orders(&sale).await.len(), 1);
}

/// The README's two snippets: what the provider's signing gives verifies
/// on the server, and the receiver's check accepts the server's scheme and
/// refuses a changed body or an old time.
#[tokio::test]
async fn the_readme_signing_and_verifying_snippets_agree_with_the_server() {
    let blocks = readme_python("## Payments", 2);
    // Signing: the header it makes is one the server accepts for the body.
    let signed = python(&format!(
        "secret = {PAYMENT_SECRET:?}\n{}\nprint(headers['Flashdrop-Signature']); print(body.decode())",
        blocks[0]
    ))
    .await;
    let (header, body) = signed.trim().split_once('\n').unwrap();
    let now = now_secs();
    assert_eq!(
        flashdrop::payments::signature::verify(
            PAYMENT_SECRET.as_bytes(),
            Some(header),
            body.as_bytes(),
            now
        ),
        Ok(())
    );
    // Verifying: the server's signature passes; a changed body and an old
    // time do not.
    let body = br#"{"event_id":"e"}"#;
    let header = sign(PAYMENT_SECRET.as_bytes(), now, body);
    let check = |body: &str, now: i64| {
        format!(
            "import hashlib, hmac\n{}\nprint(verify({PAYMENT_SECRET:?}, {header:?}, {body:?}.encode(), {now}))",
            blocks[1]
        )
    };
    let text = std::str::from_utf8(body).unwrap();
    assert_eq!(python(&check(text, now)).await.trim(), "True");
    assert_eq!(
        python(&check(r#"{"event_id":"f"}"#, now)).await.trim(),
        "False"
    );
    assert_eq!(python(&check(text, now + 301)).await.trim(), "False");
}

/// A hold that outlives its sale's end may still be paid for, but its
/// deadline moves to the end plus `payment_seconds`, not to now plus it.
#[tokio::test]
async fn the_payment_deadline_never_passes_the_end_plus_the_payment_time() {
    let app = spawn_app().await;
    let ends = chrono::Utc::now() + chrono::Duration::seconds(2);
    let sale = payment_sale(
        &app,
        json!({"total": 2, "hold_seconds": 6, "payment_seconds": 30, "ends_at": ends.to_rfc3339()}),
    )
    .await;
    let rid = hold(&app, &sale, "after-hours", 1).await;
    let ended = eventually(Duration::from_secs(5), || async {
        (app.get_sale(&sale).await["status"] == "ended").then_some(())
    })
    .await;
    assert!(ended.is_some(), "the sale ended");
    let intent = intent(&app, &rid, "after-hours").await;
    let at = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    let ends_ms = at(&app.get_sale(&sale).await["ends_at"]);
    assert_eq!(at(&intent["expires_at"]), ends_ms + 30_000);
}
