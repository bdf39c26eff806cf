//! Outgoing webhooks through the outbox, against a real HTTP receiver
//! that checks every signature itself: every message arrives, in order per
//! sale, under one `webhook-id` however often it is sent, through failing,
//! slow, refusing and vanished receivers and a killed instance.

use std::{collections::HashMap, time::Duration};

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::{
    helpers::{
        TestApp, admin_token, buyer_token, eventually, free_port, hold, json, one_unit_order,
        python, readme_python, serve_command, spawn_app_with, unique_db, wait_for_port,
    },
    receiver::{Received, Receiver, accepted},
};
use flashdrop::store::mongo::{Message, MessageState, MessageType, OrderDoc};

async fn admin_request(app: &TestApp, method: reqwest::Method, path: &str) -> reqwest::Response {
    app.http
        .request(method, app.api(path))
        .bearer_auth(admin_token())
        .send()
        .await
        .unwrap()
}

async fn admin_get(app: &TestApp, path: &str) -> reqwest::Response {
    admin_request(app, reqwest::Method::GET, path).await
}

async fn admin_delete(app: &TestApp, path: &str) -> reqwest::Response {
    admin_request(app, reqwest::Method::DELETE, path).await
}

async fn admin_post(app: &TestApp, path: &str, body: Option<Value>) -> reqwest::Response {
    let request = app.http.post(app.api(path)).bearer_auth(admin_token());
    match body {
        Some(body) => request.json(&body),
        None => request,
    }
    .send()
    .await
    .unwrap()
}

async fn register(app: &TestApp, receiver: &Receiver, types: Option<Value>) -> (String, String) {
    let mut body = json!({"url": receiver.url(), "description": "fulfilment"});
    if let Some(types) = types {
        body["types"] = types;
    }
    let resp = admin_post(app, "/admin/webhooks", Some(body)).await;
    assert_eq!(resp.status(), 201);
    let created = json(resp).await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{created}");
    receiver.set_secret(&secret);
    (created["id"].as_str().unwrap().to_owned(), secret)
}

/// Quick retries, so a test sees several.
fn quick(s: &mut flashdrop::config::Settings) {
    s.webhooks.retry_first = Duration::from_millis(50);
    s.webhooks.timeout = Duration::from_secs(2);
}

/// `n` buyers each buy one unit at once; the orders' ids. A confirm that
/// answers 503 (a loaded machine) is repeated, as a client would.
async fn buy_all(app: &TestApp, sale: &str, n: usize) -> Vec<String> {
    buy_as(app, sale, "buyer", n).await
}

/// As [`buy_all`], with buyers named `<prefix>-<i>`.
async fn buy_as(app: &TestApp, sale: &str, prefix: &str, n: usize) -> Vec<String> {
    let buys = (0..n).map(|i| async move {
        let buyer = format!("{prefix}-{i}");
        let resp = app.reserve(sale, &buyer, 1).await;
        if resp.status() != 201 {
            return None;
        }
        let rid = json(resp).await["reservation_id"]
            .as_str()
            .unwrap()
            .to_owned();
        for _ in 0..5 {
            match app.confirm(&rid, &buyer).await.status().as_u16() {
                200 | 201 => return Some(rid),
                503 => continue,
                other => panic!("confirm answered {other}"),
            }
        }
        None
    });
    join_all(buys).await.into_iter().flatten().collect()
}

async fn admin_cancel(app: &TestApp, order: &str) {
    let resp = admin_post(
        app,
        &format!("/admin/orders/{order}/cancel"),
        Some(json!({"reason": "out of stock at the warehouse"})),
    )
    .await;
    assert_eq!(resp.status(), 200);
}

async fn deliveries(app: &TestApp, endpoint: &str) -> Vec<Value> {
    let resp = admin_get(
        app,
        &format!("/admin/webhooks/{endpoint}/deliveries?limit=200"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    json(resp).await.as_array().unwrap().clone()
}

/// Waits until the endpoint has `n` deliveries, none still pending.
async fn settled_deliveries(app: &TestApp, endpoint: &str, n: usize) -> Vec<Value> {
    eventually(Duration::from_secs(20), || async {
        let shown = deliveries(app, endpoint).await;
        (shown.len() == n && shown.iter().all(|d| d["state"] != "pending")).then_some(shown)
    })
    .await
    .unwrap_or_else(|| panic!("{n} settled deliveries never shown"))
}

/// Waits until the receiver accepted `n` messages; returns them.
/// The orders the messages name, sorted.
fn told_orders(got: &[Received]) -> Vec<&str> {
    let mut told: Vec<&str> = got
        .iter()
        .map(|r| r.json["data"]["order_id"].as_str().unwrap())
        .collect();
    told.sort();
    told
}

fn sorted(ids: &[String]) -> Vec<&str> {
    let mut ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    ids.sort();
    ids
}

async fn until_accepted(receiver: &Receiver, n: usize, within: Duration) -> Vec<Received> {
    eventually(within, || async {
        let got = accepted(&receiver.received());
        (got.len() >= n).then_some(got)
    })
    .await
    .unwrap_or_else(|| {
        let got = accepted(&receiver.received());
        panic!(
            "{} of {n} messages accepted: {:?}",
            got.len(),
            got.iter().map(|r| r.kind().to_owned()).collect::<Vec<_>>()
        )
    })
}

/// Every request verified; every attempt at one id carried the same body;
/// each sale's messages were first accepted in ascending sequence.
fn check_signed_same_and_ordered(received: &[Received]) {
    assert!(received.iter().all(|r| r.verified), "a signature failed");
    let mut bodies: HashMap<&str, &str> = HashMap::new();
    for r in received {
        let first = bodies.entry(&r.id).or_insert(&r.body);
        assert_eq!(*first, r.body, "{} was sent with two bodies", r.id);
    }
    let mut last: HashMap<String, i64> = HashMap::new();
    for r in accepted(received) {
        let before = last.insert(r.sale().to_owned(), r.sequence()).unwrap_or(0);
        assert!(
            r.sequence() > before,
            "sale {} went from {before} to {}",
            r.sale(),
            r.sequence()
        );
    }
}

#[tokio::test]
async fn every_message_arrives_signed_once_per_id_in_order_through_failures_and_slowness() {
    let app = spawn_app_with(quick).await;
    let receiver = Receiver::start().await;
    // The first two attempts at every message fail; every fifth is slow.
    receiver.behave(|_, attempt| match attempt {
        1 | 2 => (500, Duration::ZERO),
        n if n % 5 == 0 => (200, Duration::from_millis(300)),
        _ => (200, Duration::ZERO),
    });
    let (endpoint, _) = register(&app, &receiver, None).await;
    let a = app
        .create_sale(json!({"total": 8, "per_user_limit": 1, "waitlist_enabled": false}))
        .await;
    let b = app
        .create_sale(json!({"total": 6, "per_user_limit": 1, "waitlist_enabled": false}))
        .await;
    let (orders_a, orders_b) = tokio::join!(buy_all(&app, &a, 10), buy_all(&app, &b, 6));
    assert_eq!((orders_a.len(), orders_b.len()), (8, 6));
    for order in &orders_a[..3] {
        admin_cancel(&app, order).await;
    }
    let close = admin_post(&app, &format!("/admin/sales/{b}/close"), None).await;
    assert_eq!(close.status(), 200);

    // a: 8 confirmed, sold out, 3 cancelled; b: 6 confirmed, sold out, ended.
    let got = until_accepted(&receiver, 12 + 8, Duration::from_secs(60)).await;
    let received = receiver.received();
    check_signed_same_and_ordered(&received);
    let kinds = |sale: &str| {
        let mut k: Vec<String> = got
            .iter()
            .filter(|r| r.sale() == sale)
            .map(|r| r.kind().to_owned())
            .collect();
        k.sort();
        k
    };
    let expect = |pairs: &[(&str, usize)]| {
        let mut k: Vec<String> = pairs
            .iter()
            .flat_map(|(t, n)| std::iter::repeat_n(t.to_string(), *n))
            .collect();
        k.sort();
        k
    };
    assert_eq!(
        kinds(&a),
        expect(&[
            ("order.confirmed", 8),
            ("sale.sold_out", 1),
            ("order.cancelled", 3)
        ])
    );
    assert_eq!(
        kinds(&b),
        expect(&[
            ("order.confirmed", 6),
            ("sale.sold_out", 1),
            ("sale.ended", 1)
        ])
    );
    // Each confirmed message is an order MongoDB has, and names it.
    let confirmed: Vec<&str> = got
        .iter()
        .filter(|r| r.kind() == "order.confirmed")
        .map(|r| r.json["data"]["order_id"].as_str().unwrap())
        .collect();
    for order in orders_a.iter().chain(&orders_b) {
        assert!(confirmed.contains(&order.as_str()), "{order} not told");
    }
    // An order's cancel comes after its confirmation.
    for cancel in got.iter().filter(|r| r.kind() == "order.cancelled") {
        let order = &cancel.json["data"]["order_id"];
        let confirmed = got
            .iter()
            .find(|r| r.kind() == "order.confirmed" && r.json["data"]["order_id"] == *order)
            .unwrap();
        assert!(confirmed.sequence() < cancel.sequence());
        assert_eq!(
            cancel.json["data"]["reason"],
            "out of stock at the warehouse"
        );
    }
    // Every message was tried three times at least (two failures, then
    // accepted), under one id; the deliveries say so too.
    let mut tries: HashMap<&str, usize> = HashMap::new();
    for r in &received {
        *tries.entry(&r.id).or_default() += 1;
    }
    assert!(tries.values().all(|n| *n >= 3), "{tries:?}");
    // The figures of the run: from a message's first attempt to its
    // acceptance.
    let longest = got
        .iter()
        .map(|g| {
            let first = received.iter().find(|r| r.id == g.id).unwrap().at;
            let ok = received
                .iter()
                .find(|r| r.id == g.id && (200..300).contains(&r.answered))
                .unwrap()
                .at;
            ok - first
        })
        .max()
        .unwrap();
    eprintln!(
        "webhook figures: {} messages, {} attempts, {} accepted, longest first-try-to-accepted {longest:?}",
        tries.len(),
        received.len(),
        got.len()
    );
    // The deliverer records an attempt after the answer it got.
    let shown = settled_deliveries(&app, &endpoint, 20).await;
    for d in &shown {
        assert_eq!(d["state"], "delivered", "{d}");
        let statuses: Vec<i64> = d["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["status"].as_i64().unwrap())
            .collect();
        assert_eq!(&statuses[..3], &[500, 500, 200], "{d}");
    }
    // Nothing left staged, nothing waiting.
    let db = app.mongo.database_name();
    let client = mongodb::Client::with_uri_str(crate::helpers::servers().mongo_uri.as_str())
        .await
        .unwrap();
    let outbox = client.database(&db).collection::<bson::Document>("outbox");
    let staged = outbox
        .count_documents(bson::doc! {"state": "staged"})
        .await
        .unwrap();
    assert_eq!(staged, 0);
}

/// The sale's messages of one type in the app's outbox.
async fn outbox_count(app: &TestApp, sale: &str, kind: &str) -> u64 {
    let client = mongodb::Client::with_uri_str(crate::helpers::servers().mongo_uri.as_str())
        .await
        .unwrap();
    client
        .database(&app.mongo.database_name())
        .collection::<bson::Document>("outbox")
        .count_documents(bson::doc! {"sale_id": sale, "type": kind})
        .await
        .unwrap()
}

#[tokio::test]
async fn a_message_no_endpoint_wants_is_not_written_and_an_added_endpoint_hears_every_later_one() {
    let app = spawn_app_with(quick).await;
    let ended_only = Receiver::start().await;
    register(&app, &ended_only, Some(json!(["sale.ended"]))).await;
    let sale = app
        .create_sale(json!({"total": 20, "per_user_limit": 1, "waitlist_enabled": false}))
        .await;
    let unheard = buy_as(&app, &sale, "early", 6).await;
    assert_eq!(unheard.len(), 6);
    // The orders are durable; their messages were never written.
    assert_eq!(app.orders(&sale).await.len(), 6);
    assert_eq!(outbox_count(&app, &sale, "order.confirmed").await, 0);

    // Once the endpoint's creation is answered, every later order reaches it.
    let receiver = Receiver::start().await;
    register(&app, &receiver, Some(json!(["order.confirmed"]))).await;
    let heard = buy_as(&app, &sale, "late", 8).await;
    assert_eq!(heard.len(), 8);
    let got = until_accepted(&receiver, 8, Duration::from_secs(30)).await;
    check_signed_same_and_ordered(&receiver.received());
    assert_eq!(told_orders(&got), sorted(&heard));
    assert_eq!(outbox_count(&app, &sale, "order.confirmed").await, 8);
}

#[tokio::test]
async fn a_receiver_that_goes_away_gets_everything_in_order_when_it_comes_back() {
    let app = spawn_app_with(quick).await;
    let mut receiver = Receiver::start().await;
    let (endpoint, _) = register(&app, &receiver, Some(json!(["order.confirmed"]))).await;
    receiver.go_away().await;
    let sale = app
        .create_sale(json!({"total": 5, "per_user_limit": 1, "waitlist_enabled": false}))
        .await;
    let orders = buy_all(&app, &sale, 5).await;
    assert_eq!(orders.len(), 5);
    // The first message is tried and fails without an answer.
    let failing = eventually(Duration::from_secs(20), || async {
        let shown = deliveries(&app, &endpoint).await;
        let first = shown.first()?.clone();
        (first["attempts"].as_array()?.len() >= 2).then_some(first)
    })
    .await
    .expect("attempts while the receiver is away");
    assert_eq!(failing["state"], "pending");
    assert_eq!(failing["attempts"][0]["error"], "could not connect");
    assert!(failing["next_attempt_at"].is_string());

    receiver.come_back().await;
    // The retry schedule grows fourfold from 50 ms: the next try comes
    // within seconds.
    let got = until_accepted(&receiver, 5, Duration::from_secs(60)).await;
    check_signed_same_and_ordered(&receiver.received());
    assert!(got.iter().all(|r| r.kind() == "order.confirmed"));
    assert_eq!(told_orders(&got), sorted(&orders));
}

#[tokio::test]
async fn a_4xx_is_not_retried_but_408_and_429_are() {
    let app = spawn_app_with(quick).await;
    let receiver = Receiver::start().await;
    // By the order's first unit: refuse the first, rate-limit the second,
    // time out the third once.
    receiver.behave(|m, attempt| {
        let unit = m["data"]["units"][0].as_i64().unwrap_or(0);
        match (unit, attempt) {
            (1, _) => (422, Duration::ZERO),
            (2, 1) => (429, Duration::ZERO),
            (3, 1) => (408, Duration::ZERO),
            _ => (204, Duration::ZERO),
        }
    });
    let (endpoint, _) = register(&app, &receiver, Some(json!(["order.confirmed"]))).await;
    let sale = app
        .create_sale(json!({"total": 4, "per_user_limit": 4, "waitlist_enabled": false}))
        .await;
    for _ in 0..4 {
        let rid = hold(&app, &sale, "collector", 1).await;
        assert_eq!(app.confirm(&rid, "collector").await.status(), 201);
    }
    // The refused one is not retried; the others are accepted.
    until_accepted(&receiver, 3, Duration::from_secs(30)).await;
    let shown = settled_deliveries(&app, &endpoint, 4).await;
    let by_unit = |unit: i64| {
        let d = shown
            .iter()
            .find(|d| {
                receiver.received().iter().any(|r| {
                    r.id == d["message_id"].as_str().unwrap() && r.json["data"]["units"][0] == unit
                })
            })
            .unwrap_or_else(|| panic!("no delivery of unit {unit}"));
        (
            d["state"].as_str().unwrap().to_owned(),
            d["attempts"].as_array().unwrap().len(),
        )
    };
    assert_eq!(by_unit(1), ("failed".into(), 1));
    assert_eq!(by_unit(2), ("delivered".into(), 2));
    assert_eq!(by_unit(3), ("delivered".into(), 2));
    assert_eq!(by_unit(4), ("delivered".into(), 1));
    check_signed_same_and_ordered(&receiver.received());

    // An admin's retry sends it again now, under the same id.
    let refused = shown
        .iter()
        .find(|d| d["state"] == "failed")
        .unwrap()
        .clone();
    let message = refused["message_id"].as_str().unwrap();
    receiver.behave(|_, _| (200, Duration::ZERO));
    let resp = admin_post(
        &app,
        &format!("/admin/webhooks/{endpoint}/deliveries/{message}/retry"),
        None,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let retried = json(resp).await;
    assert_eq!(retried["state"], "delivered");
    assert_eq!(retried["attempts"][1]["manual"], true);
    assert_eq!(retried["attempts"][1]["status"], 200);
    let last = receiver.received().last().unwrap().clone();
    assert_eq!(last.id, message);
    assert!(last.verified);
}

#[tokio::test]
async fn an_endpoint_failing_for_the_retry_period_is_disabled_and_enabling_it_sends_the_rest() {
    let app = spawn_app_with(|s| {
        quick(s);
        s.webhooks.retry_for = Duration::from_secs(1);
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.behave(|_, _| (503, Duration::ZERO));
    let (endpoint, _) = register(&app, &receiver, Some(json!(["order.confirmed"]))).await;
    let sale = app
        .create_sale(json!({"total": 3, "per_user_limit": 1, "waitlist_enabled": false}))
        .await;
    assert_eq!(buy_all(&app, &sale, 3).await.len(), 3);
    let listed = eventually(Duration::from_secs(30), || async {
        let resp = admin_get(&app, "/admin/webhooks").await;
        let list = json(resp).await;
        (list[0]["enabled"] == false).then_some(list)
    })
    .await
    .expect("the failing endpoint is disabled");
    let reason = listed[0]["disabled_reason"].as_str().unwrap();
    assert!(reason.contains("HTTP 503"), "{reason}");
    assert!(listed[0].get("secret").is_none());
    // Nothing was accepted, and nothing moves while it is disabled.
    assert!(accepted(&receiver.received()).is_empty());
    let metrics = app.metrics().await;
    assert!(metrics.contains("flashdrop_webhook_endpoints_disabled_total"));

    receiver.behave(|_, _| (200, Duration::ZERO));
    let resp = admin_post(&app, &format!("/admin/webhooks/{endpoint}/enable"), None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(json(resp).await["enabled"], true);
    let got = until_accepted(&receiver, 3, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 3);
    check_signed_same_and_ordered(&receiver.received());
}

#[tokio::test]
async fn an_instance_killed_mid_delivery_loses_nothing() {
    let db = unique_db();
    let receiver = Receiver::start().await;
    let first = free_port();
    let mut a = serve_command(first, &db)
        .env("FLASHDROP_WEBHOOK_TIMEOUT", "1s")
        .env("FLASHDROP_WEBHOOK_RETRY_FIRST", "100ms")
        .spawn()
        .unwrap();
    wait_for_port(first, "the first instance");
    let base = format!("http://127.0.0.1:{first}/api/v1");
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{base}/admin/webhooks"))
        .bearer_auth(admin_token())
        .json(&json!({"url": receiver.url(), "types": ["order.confirmed"]}))
        .send()
        .await
        .unwrap();
    let created = json(created).await;
    receiver.set_secret(created["secret"].as_str().unwrap());
    // Every first attempt hangs long enough for the kill to land.
    receiver.behave(|_, attempt| match attempt {
        1 => (200, Duration::from_millis(700)),
        _ => (200, Duration::ZERO),
    });
    let sale = http
        .post(format!("{base}/admin/sales"))
        .bearer_auth(admin_token())
        .json(&crate::helpers::sale_body(
            json!({"total": 6, "per_user_limit": 1, "waitlist_enabled": false}),
        ))
        .send()
        .await
        .unwrap();
    let sale = json(sale).await["id"].as_str().unwrap().to_owned();
    let arrived = receiver.shared.arrived.notified();
    for i in 0..6 {
        let buyer = format!("b{i}");
        let held = http
            .post(format!("{base}/sales/{sale}/reservations"))
            .bearer_auth(buyer_token(&buyer))
            .json(&json!({"quantity": 1}))
            .send()
            .await
            .unwrap();
        let rid = json(held).await["reservation_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let confirmed = http
            .post(format!("{base}/reservations/{rid}/confirm"))
            .bearer_auth(buyer_token(&buyer))
            .send()
            .await
            .unwrap();
        assert_eq!(confirmed.status(), 201);
    }
    // Killed while its first request is out.
    arrived.await;
    a.start_kill().unwrap();
    a.wait().await.unwrap();
    let second = free_port();
    let _b = serve_command(second, &db)
        .env("FLASHDROP_WEBHOOK_TIMEOUT", "1s")
        .env("FLASHDROP_WEBHOOK_RETRY_FIRST", "100ms")
        .spawn()
        .unwrap();
    wait_for_port(second, "the second instance");
    // The second takes the sequence over once the dead one's lease (3 s)
    // runs out, and sends everything, the interrupted message again.
    let got = until_accepted(&receiver, 6, Duration::from_secs(60)).await;
    assert_eq!(got.len(), 6);
    let received = receiver.received();
    check_signed_same_and_ordered(&received);
    let first_id = &received[0].id;
    assert!(
        received.iter().filter(|r| &r.id == first_id).count() >= 2,
        "the interrupted message was sent again under its id"
    );
}

#[tokio::test]
async fn endpoints_are_checked_and_their_secret_shown_once() {
    let app = spawn_app_with(quick).await;
    let post = |body: Value, token: String| {
        let app = &app;
        async move {
            app.http
                .post(app.api("/admin/webhooks"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    for bad in [
        json!({"url": "ftp://example.com/x"}),
        json!({"url": "/relative"}),
        json!({"url": "http://example.com", "types": []}),
        json!({"url": "http://example.com", "types": ["order.shipped"]}),
        json!({"url": "http://example.com", "colour": "red"}),
    ] {
        let resp = post(bad.clone(), admin_token()).await;
        assert_eq!(resp.status(), 400, "{bad}");
        assert_eq!(json(resp).await["code"], "invalid_request");
    }
    let resp = post(json!({"url": "http://example.com"}), buyer_token("b")).await;
    assert_eq!(resp.status(), 403);
    let resp = post(json!({"url": "http://example.com/hook"}), admin_token()).await;
    assert_eq!(resp.status(), 201);
    let created = json(resp).await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["types"].as_array().unwrap().len(), 5);
    let listed = admin_get(&app, "/admin/webhooks").await;
    let listed = json(listed).await;
    assert_eq!(listed[0]["id"], id);
    assert!(listed[0].get("secret").is_none());
    let retry = admin_post(
        &app,
        &format!("/admin/webhooks/{id}/deliveries/msg_none/retry"),
        None,
    )
    .await;
    assert_eq!(retry.status(), 404);
    let path = format!("/admin/webhooks/{id}");
    assert_eq!(admin_delete(&app, &path).await.status(), 204);
    assert_eq!(admin_delete(&app, &path).await.status(), 404);
    let gone = admin_get(&app, &format!("/admin/webhooks/{id}/deliveries")).await;
    assert_eq!(gone.status(), 404);
    // At most 20 endpoints.
    for i in 0..20 {
        let url = format!("http://example.com/hook/{i}");
        assert_eq!(post(json!({"url": url}), admin_token()).await.status(), 201);
    }
    let resp = post(json!({"url": "http://example.com/21"}), admin_token()).await;
    assert_eq!(resp.status(), 409);
    assert_eq!(json(resp).await["code"], "limit_exceeded");
}

fn order(rid: &str, sale: &str, unit: i64) -> OrderDoc {
    one_unit_order(
        rid,
        sale,
        "buyer",
        unit,
        bson::DateTime::now().timestamp_millis(),
    )
}

/// A writer that stopped between staging and its cause: the message is
/// settled from the cause. An order that landed makes it ready; one that
/// did not is fenced off (it can never land) and its message void; a
/// cancel whose message was voided while it was in flight brings it back
/// under a fresh place.
#[tokio::test]
async fn a_message_left_staged_is_settled_from_its_cause() {
    let app = spawn_app_with(quick).await;
    let mongo = &app.mongo;
    let sale = app.create_sale(json!({"total": 5})).await;
    let landed = order(&format!("{sale}-{}", "a".repeat(24)), &sale, 1);
    let lost = order(&format!("{sale}-{}", "b".repeat(24)), &sale, 2);
    let messages = [
        Message::order_confirmed(&landed),
        Message::order_confirmed(&lost),
    ];
    mongo.stage_messages(&messages).await.unwrap();
    mongo.insert_orders(&[&landed]).await;
    for m in &messages {
        let doc = mongo.message(&m.id).await.unwrap().unwrap();
        assert_eq!(doc.state, MessageState::Staged);
        mongo.settle_staged(&doc).await.unwrap();
    }
    let state = |id: String| async move { mongo.message(&id).await.unwrap().unwrap().state };
    assert_eq!(state(messages[0].id.clone()).await, MessageState::Ready);
    assert_eq!(state(messages[1].id.clone()).await, MessageState::Void);
    // The lost order is fenced: it cannot land now.
    let late = mongo.insert_orders(&[&lost]).await;
    assert!(matches!(
        late[0],
        flashdrop::store::mongo::OrderWrite::Refused
    ));

    // A staging repeated for a written message keeps its place.
    let before = mongo.message(&messages[0].id).await.unwrap().unwrap().seq;
    mongo.stage_messages(&messages[..1]).await.unwrap();
    assert_eq!(
        mongo.message(&messages[0].id).await.unwrap().unwrap().seq,
        before
    );
    // A void message whose cause lands after all comes back, later in line.
    let mut cancelled = landed.clone();
    cancelled.cancelled = Some(Box::new(flashdrop::store::mongo::CancelDoc {
        at: bson::DateTime::now(),
        reason: "r".into(),
        by: "admin:a".into(),
        returned: false,
    }));
    let cancel = [Message::order_cancelled(&cancelled)];
    mongo.stage_messages(&cancel).await.unwrap();
    mongo.void_messages(&cancel).await.unwrap();
    let voided = mongo.message(&cancel[0].id).await.unwrap().unwrap();
    mongo.ready_messages(&cancel).await.unwrap();
    let back = mongo.message(&cancel[0].id).await.unwrap().unwrap();
    assert_eq!(back.state, MessageState::Ready);
    assert!(back.seq > voided.seq);
}

/// Whether a message is written is decided once, when it is staged: an
/// endpoint deleted between staging and the cause's write does not leave
/// the message staged (where it would hold up the sale's later messages
/// until the deliverer settles it).
#[tokio::test]
async fn a_message_staged_while_wanted_is_made_ready_though_its_endpoint_went_away() {
    let app = spawn_app_with(quick).await;
    let receiver = Receiver::start().await;
    let (endpoint, _) = register(&app, &receiver, Some(json!(["order.confirmed"]))).await;
    let mongo = &app.mongo;
    mongo.refresh_outbox_interest().await.unwrap();
    let sale = app.create_sale(json!({"total": 5})).await;
    let landed = order(&format!("{sale}-{}", "c".repeat(24)), &sale, 1);
    let lost = order(&format!("{sale}-{}", "d".repeat(24)), &sale, 2);
    let (confirmed, never) = (
        [Message::order_confirmed(&landed)],
        [Message::order_confirmed(&lost)],
    );
    let staged = mongo.stage_messages(&confirmed).await.unwrap();
    let staged_never = mongo.stage_messages(&never).await.unwrap();
    for m in confirmed.iter().chain(&never) {
        let doc = mongo.message(&m.id).await.unwrap().unwrap();
        assert_eq!(doc.state, MessageState::Staged);
    }
    let gone = admin_delete(&app, &format!("/admin/webhooks/{endpoint}")).await;
    assert_eq!(gone.status(), 204);
    // This instance now knows nobody wants `order.confirmed`.
    mongo.refresh_outbox_interest().await.unwrap();
    mongo.insert_orders(&[&landed]).await;
    mongo.ready_messages(&staged).await.unwrap();
    mongo.void_messages(&staged_never).await.unwrap();
    let state = |id: String| async move { mongo.message(&id).await.unwrap().unwrap().state };
    assert_eq!(state(confirmed[0].id.clone()).await, MessageState::Ready);
    assert_eq!(state(never[0].id.clone()).await, MessageState::Void);
    // And a message staged now, which nobody wants, is not written at all.
    let later = order(&format!("{sale}-{}", "e".repeat(24)), &sale, 3);
    let unwanted = [Message::order_confirmed(&later)];
    assert!(mongo.stage_messages(&unwanted).await.unwrap().is_empty());
    assert!(mongo.message(&unwanted[0].id).await.unwrap().is_none());
}

/// An order nobody listens for costs the outbox nothing: with an endpoint
/// that wants only `order.cancelled`, confirms through the API answer 201
/// and write no message; once an endpoint wants `order.confirmed`, the next
/// confirm's message is in the outbox, and made ready.
#[tokio::test]
async fn a_confirm_nobody_listens_for_writes_no_message() {
    let app = spawn_app_with(quick).await;
    let receiver = Receiver::start().await;
    // The server's own knowledge of what is wanted, read afresh before
    // each confirm (stale knowledge counts as wanting everything).
    let server = &app.state.store.mongo;
    register(&app, &receiver, Some(json!(["order.cancelled"]))).await;
    let sale = app.create_sale(json!({"total": 5})).await;
    let mut rids = Vec::new();
    for buyer in ["u1", "u2", "u3"] {
        let rid = hold(&app, &sale, buyer, 1).await;
        server.refresh_outbox_interest().await.unwrap();
        assert!(!server.wants_message(MessageType::OrderConfirmed));
        assert_eq!(app.confirm(&rid, buyer).await.status(), 201);
        rids.push(rid);
    }
    for rid in &rids {
        let id = Message::order_confirmed(&order(rid, &sale, 1)).id;
        assert!(app.mongo.message(&id).await.unwrap().is_none(), "{rid}");
    }
    register(&app, &receiver, Some(json!(["order.confirmed"]))).await;
    let rid = hold(&app, &sale, "u4", 1).await;
    server.refresh_outbox_interest().await.unwrap();
    assert_eq!(app.confirm(&rid, "u4").await.status(), 201);
    // Made ready off the buyer's path, once the order is durable.
    let id = Message::order_confirmed(&order(&rid, &sale, 1)).id;
    let ready = eventually(Duration::from_secs(20), || async {
        let state = app.mongo.message(&id).await.unwrap().map(|m| m.state);
        (state == Some(MessageState::Ready)).then_some(())
    })
    .await;
    assert!(ready.is_some(), "{id} was not made ready");
}

/// Any full read of the endpoints (the deliverer makes one five times a
/// second) teaches the outbox's interest what they want, so the interest
/// reads them itself only when nobody else did lately. The test's own
/// handle runs no interest loop: only its read can teach it.
#[tokio::test]
async fn a_read_of_the_endpoints_teaches_the_outbox_interest() {
    let app = spawn_app_with(quick).await;
    let receiver = Receiver::start().await;
    register(&app, &receiver, Some(json!(["order.cancelled"]))).await;
    let mongo = &app.mongo;
    assert!(
        mongo.wants_message(MessageType::OrderConfirmed),
        "nothing read yet: every message is wanted"
    );
    let endpoints = mongo.endpoints().await.unwrap();
    assert_eq!(endpoints.len(), 1);
    assert!(!mongo.wants_message(MessageType::OrderConfirmed));
    assert!(mongo.wants_message(MessageType::OrderCancelled));
}

/// The README's receiver snippet accepts a message as the server sent it
/// and refuses it changed.
#[tokio::test]
async fn the_readme_receiver_snippet_verifies_a_real_delivery() {
    let snippet = readme_python("## Webhooks out", 1)[0];
    let app = spawn_app_with(quick).await;
    let receiver = Receiver::start().await;
    let (_, secret) = register(&app, &receiver, None).await;
    let sale = app.create_sale(json!({"total": 3})).await;
    let rid = hold(&app, &sale, "reader", 1).await;
    assert_eq!(app.confirm(&rid, "reader").await.status(), 201);
    let got = until_accepted(&receiver, 1, Duration::from_secs(20)).await;
    let m = &got[0];
    let run = |body: String| {
        let code = format!(
            "{snippet}\nprint(verify({secret:?}, {{'webhook-id': {:?}, 'webhook-timestamp': {:?}, 'webhook-signature': {:?}}}, {body:?}.encode()))",
            m.id, m.timestamp, m.signature
        );
        async move { python(&code).await.trim().to_owned() }
    };
    assert_eq!(run(m.body.clone()).await, "True");
    assert_eq!(run(m.body.replace("reader", "robber")).await, "False");
}

/// The first messages of a sale, staged by many writers at once, each get
/// a place: the sale's sequence is created by whichever comes first.
#[tokio::test]
async fn writers_racing_for_a_new_sales_first_places_all_get_one() {
    let app = spawn_app_with(quick).await;
    let mongo = &app.mongo;
    // Three fresh sales, each raced for by sixteen writers.
    for _ in 0..3 {
        let sale = app.create_sale(json!({"total": 50})).await;
        let orders: Vec<OrderDoc> = (0..16)
            .map(|i| order(&format!("{sale}-{i:024x}"), &sale, i + 1))
            .collect();
        let staged =
            futures_util::future::join_all(orders.iter().map(|o| async move {
                mongo.stage_messages(&[Message::order_confirmed(o)]).await
            }))
            .await;
        for result in &staged {
            assert!(result.is_ok(), "{result:?}");
        }
        let mut seqs = Vec::new();
        for o in &orders {
            let id = Message::order_confirmed(o).id;
            seqs.push(mongo.message(&id).await.unwrap().unwrap().seq);
        }
        seqs.sort();
        assert_eq!(
            seqs,
            (1..=16).collect::<Vec<i64>>(),
            "no place taken twice or lost"
        );
    }
}
