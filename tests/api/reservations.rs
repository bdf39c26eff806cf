//! The hold life cycle through the API, checked against Redis and MongoDB.

use std::time::{Duration, Instant};

use crate::helpers::{buyer_token, eventually, hold, json, spawn_app, spawn_app_with};
use serde_json::{Value, json};

#[tokio::test]
async fn reserve_confirm_and_read_back_the_order() {
    let app = spawn_app().await;
    let sale = app
        .create_sale(json!({"total": 5, "per_user_limit": 2}))
        .await;

    let resp = app.reserve(&sale, "alice", 2).await;
    assert_eq!(resp.status(), 201);
    let hold = json(resp).await;
    let rid = hold["reservation_id"].as_str().unwrap().to_owned();
    assert_eq!(hold["status"], "held");
    assert_eq!(hold["quantity"], 2);

    // The same buyer asking again gets the same live hold.
    let again = app.reserve(&sale, "alice", 1).await;
    assert_eq!(again.status(), 200);
    assert_eq!(json(again).await["reservation_id"], rid.as_str());
    let view = app.get_sale(&sale).await;
    assert_eq!(
        (view["available"].as_i64(), view["held"].as_i64()),
        (Some(3), Some(2))
    );

    // Someone else's hold does not exist for them.
    let other = app
        .http
        .get(app.api(&format!("/reservations/{rid}")))
        .bearer_auth(buyer_token("mallory"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    assert_eq!(app.confirm(&rid, "mallory").await.status(), 404);
    assert_eq!(app.cancel(&rid, "mallory").await.status(), 404);

    let resp = app.confirm(&rid, "alice").await;
    assert_eq!(resp.status(), 201);
    let order = json(resp).await;
    assert_eq!(order["order_id"], rid.as_str());
    assert_eq!(order["total_cents"], 2 * 12_900);
    assert_eq!(order["units"].as_array().unwrap().len(), 2);

    let stored = app.mongo.order(&rid).await.unwrap().unwrap();
    assert_eq!(stored.user_id, "alice");
    assert_eq!(stored.slots, vec![1, 2]);

    let repeat = app.confirm(&rid, "alice").await;
    assert_eq!(repeat.status(), 200);
    assert_eq!(json(repeat).await["units"], order["units"]);
    assert_eq!(app.reservation(&rid, "alice").await["status"], "confirmed");
    let cancel = app.cancel(&rid, "alice").await;
    assert_eq!(cancel.status(), 409);
    assert_eq!(json(cancel).await["code"], "reservation_confirmed");

    let mine: Vec<Value> = app
        .http
        .get(app.api("/me/orders"))
        .bearer_auth(buyer_token("alice"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(mine.iter().any(|o| o["order_id"] == rid.as_str()));

    // Alice is at her limit now.
    let over = app.reserve(&sale, "alice", 1).await;
    assert_eq!(over.status(), 409);
    assert_eq!(json(over).await["code"], "limit_exceeded");
    assert_eq!(app.check_invariants(&sale).await, (3, 0, 2));
}

#[tokio::test]
async fn cancel_returns_the_units() {
    let app = spawn_app().await;
    let sale = app.create_sale(json!({"total": 2})).await;
    let rid = hold(&app, &sale, "carol", 2).await;
    let sold_out = app.reserve(&sale, "dave", 1).await;
    assert_eq!(sold_out.status(), 409);
    assert_eq!(json(sold_out).await["code"], "sold_out");

    assert_eq!(app.cancel(&rid, "carol").await.status(), 204);
    assert_eq!(
        app.cancel(&rid, "carol").await.status(),
        204,
        "cancel is idempotent"
    );
    assert_eq!(app.reservation(&rid, "carol").await["status"], "cancelled");
    assert_eq!(app.check_invariants(&sale).await, (2, 0, 0));
    assert_eq!(app.reserve(&sale, "dave", 1).await.status(), 201);
    let gone = app.confirm(&rid, "carol").await;
    assert_eq!(gone.status(), 410);
}

#[tokio::test]
async fn a_due_hold_is_back_within_a_second_and_cannot_be_confirmed() {
    let app = spawn_app().await;
    let sale = app
        .create_sale(json!({"total": 3, "hold_seconds": 1}))
        .await;
    let hold = json(app.reserve(&sale, "erin", 2).await).await;
    let rid = hold["reservation_id"].as_str().unwrap().to_owned();
    let expires_at: chrono::DateTime<chrono::Utc> =
        hold["expires_at"].as_str().unwrap().parse().unwrap();

    let returned = eventually(Duration::from_secs(5), || async {
        let s = app.redis_sale(&sale).await;
        (s["available"] == "3").then(Instant::now)
    })
    .await
    .expect("units came back");
    let late_ms = chrono::Utc::now().timestamp_millis()
        - expires_at.timestamp_millis()
        - returned.elapsed().as_millis() as i64;
    assert!(late_ms < 1000, "returned {late_ms} ms after the deadline");

    assert_eq!(app.reservation(&rid, "erin").await["status"], "expired");
    let resp = app.confirm(&rid, "erin").await;
    assert_eq!(resp.status(), 410);
    assert_eq!(json(resp).await["code"], "reservation_expired");
    assert_eq!(app.check_invariants(&sale).await, (3, 0, 0));
    assert_eq!(app.redis_sale(&sale).await["holds_expired"], "1");
}

#[tokio::test]
async fn idempotency_key_returns_the_first_answer() {
    let app = spawn_app().await;
    let sale = app
        .create_sale(json!({"total": 10, "per_user_limit": 4}))
        .await;
    let reserve = |key: &'static str| {
        app.http
            .post(app.api(&format!("/sales/{sale}/reservations")))
            .bearer_auth(buyer_token("frank"))
            .header("Idempotency-Key", key)
            .json(&json!({"quantity": 1}))
            .send()
    };
    let first = reserve("k-1").await.unwrap();
    assert_eq!(first.status(), 201);
    let rid = json(first).await["reservation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let confirm = |key: &'static str| {
        app.http
            .post(app.api(&format!("/reservations/{rid}/confirm")))
            .bearer_auth(buyer_token("frank"))
            .header("Idempotency-Key", key)
            .send()
    };
    assert_eq!(confirm("c-1").await.unwrap().status(), 201);
    assert_eq!(
        confirm("c-1").await.unwrap().status(),
        201,
        "repeat gets the first answer"
    );
    assert_eq!(app.confirm(&rid, "frank").await.status(), 200);

    // The hold is confirmed, yet a retried reserve with the same key does not
    // make a second hold.
    let repeat = reserve("k-1").await.unwrap();
    assert_eq!(repeat.status(), 201);
    assert_eq!(json(repeat).await["reservation_id"], rid.as_str());
    assert_eq!(app.check_invariants(&sale).await, (9, 0, 1));
    // A new key is a new request.
    assert_eq!(reserve("k-2").await.unwrap().status(), 201);

    let bad = app
        .http
        .post(app.api(&format!("/sales/{sale}/reservations")))
        .bearer_auth(buyer_token("frank"))
        .header("Idempotency-Key", "has spaces")
        .json(&json!({"quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn quantity_out_of_range_is_400_and_touches_nothing() {
    let app = spawn_app().await;
    let sale = app.create_sale(json!({})).await;
    for q in [0, 1001] {
        let resp = app.reserve(&sale, "gina", q).await;
        assert_eq!(resp.status(), 400);
        assert_eq!(json(resp).await["code"], "invalid_request");
    }
    assert_eq!(
        app.redis_sale(&sale).await["seq"],
        "1",
        "no change was recorded"
    );
}

#[tokio::test]
async fn ended_holds_are_pruned_from_redis_after_their_retention() {
    let app = spawn_app_with(|s| s.ended_hold_retention = Duration::from_millis(300)).await;
    let sale = app.create_sale(json!({"total": 4})).await;
    let cancelled = hold(&app, &sale, "kim", 1).await;
    assert_eq!(app.cancel(&cancelled, "kim").await.status(), 204);
    let confirmed = hold(&app, &sale, "lee", 1).await;
    assert_eq!(app.confirm(&confirmed, "lee").await.status(), 201);
    assert_eq!(app.holds(&sale).await.len(), 2);

    let pruned = eventually(Duration::from_secs(5), || async {
        app.holds(&sale).await.is_empty().then_some(())
    })
    .await;
    assert!(pruned.is_some(), "ended holds left Redis");
    // A confirmed hold still reads as confirmed, from its order.
    assert_eq!(
        app.reservation(&confirmed, "lee").await["status"],
        "confirmed"
    );
    let gone = app
        .http
        .get(app.api(&format!("/reservations/{cancelled}")))
        .bearer_auth(buyer_token("kim"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    assert_eq!(app.check_invariants(&sale).await, (3, 0, 1));
}

#[tokio::test]
async fn large_prices_are_confirmed_to_the_cent() {
    let app = spawn_app().await;
    for price in [100_000_000_000_000_i64, 999_999_999_999_999] {
        let sale = app
            .create_sale(json!({"total": 5, "per_user_limit": 2, "price_cents": price}))
            .await;
        let rid = hold(&app, &sale, "rich", 2).await;
        let resp = app.confirm(&rid, "rich").await;
        assert_eq!(resp.status(), 201);
        let order = json(resp).await;
        assert_eq!(order["unit_price_cents"], price);
        assert_eq!(order["total_cents"], 2 * price);
    }
}
