//! Faults an operator meets on launch day: a paused MongoDB, rebuilds that
//! race, a late order write, a Redis that comes back older than it was.
//! Each test drives real requests and then checks Redis and MongoDB.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{MongoServer, eventually, hold, join, json, spawn_app_with};

/// MongoDB frozen (SIGSTOP): everything that needs only Redis goes on,
/// and confirm answers 503 within the configured timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_mongodb_stops_only_what_needs_it() {
    let mongo = MongoServer::start();
    let uri = mongo.uri.clone();
    let app = spawn_app_with(|s| {
        s.mongodb_uri = flashdrop::config::Secret::new(uri);
        s.mongodb_timeout = Duration::from_millis(800);
    })
    .await;
    let sale = app
        .create_sale(json!({"total": 3, "per_user_limit": 1, "hold_seconds": 2}))
        .await;
    let due = hold(&app, &sale, "due", 1).await;
    let kept = hold(&app, &sale, "keeper", 1).await;

    mongo.pause();
    // The status read and reserve answer from Redis alone, quickly.
    let started = Instant::now();
    let view = app.get_sale(&sale).await;
    assert_eq!(view["held"], 2);
    assert_eq!(app.reserve(&sale, "late", 1).await.status(), 201);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // Confirm needs MongoDB: a clean 503 within the timeout.
    let started = Instant::now();
    let resp = app.confirm(&kept, "keeper").await;
    assert_eq!(resp.status(), 503);
    assert_eq!(json(resp).await["code"], "unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // Expiry goes on: the due hold's unit comes back, and with nobody in
    // line a waiter cannot join while it is free.
    let back = eventually(Duration::from_secs(6), || async {
        let s = app.redis_sale(&sale).await;
        (app.reservation(&due, "due").await["status"] == "expired"
            && s["available"].parse::<i64>().unwrap() >= 1)
            .then_some(())
    })
    .await;
    assert!(
        back.is_some(),
        "a due hold expired while MongoDB was paused"
    );
    let joined = join(&app, &sale, "waiter", 1).await;
    assert_eq!(joined.status(), 409, "stock is free again");

    mongo.resume();
    // Back to normal: the keeper can still buy (or their confirm settled),
    // and every unit is accounted for in both stores.
    let settled = eventually(Duration::from_secs(15), || async {
        let s = app.confirm(&kept, "keeper").await.status().as_u16();
        [200, 201, 410].contains(&s).then_some(s)
    })
    .await;
    assert!(settled.is_some(), "confirm works once MongoDB is back");
    let quiet = eventually(Duration::from_secs(15), || async {
        let s = app.redis_sale(&sale).await;
        let confirming = app
            .holds(&sale)
            .await
            .values()
            .any(|h| h["state"] == "confirming");
        (!confirming && s.contains_key("sold")).then_some(())
    })
    .await;
    assert!(quiet.is_some());
    app.check_invariants(&sale).await;
}
