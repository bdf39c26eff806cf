//! Crashes, lost Redis state and an unreachable MongoDB: nothing is oversold
//! and no unit is stranded.

use std::{sync::Arc, time::Duration};

use crate::{
    helpers::{
        RedisServer, TestApp, eventually, hold, json, keys, on_redis, servers, spawn_app_with,
    },
    proxy::TcpProxy,
};
use redis::AsyncCommands;
use serde_json::json;

#[tokio::test]
async fn a_confirm_cut_off_after_the_order_write_ends_confirmed() {
    let app = spawn_app_with(|s| {
        s.fault_after_order_write = true;
        s.confirm_lease = Duration::from_millis(500);
    })
    .await;
    let sale = app.create_sale(json!({"total": 4})).await;
    let rid = hold(&app, &sale, "henry", 2).await;
    let resp = app.confirm(&rid, "henry").await;
    assert_eq!(resp.status(), 503, "the fault point stops the confirm");
    assert!(app.mongo.order(&rid).await.unwrap().is_some());
    assert_eq!(
        app.redis_sale(&sale).await["sold"],
        "0",
        "Redis has not heard yet"
    );

    // The reaper finds the order by the reservation id when the lease ends.
    let settled = eventually(Duration::from_secs(5), || async {
        (app.redis_sale(&sale).await["sold"] == "2").then_some(())
    })
    .await;
    assert!(settled.is_some(), "the reaper settled the confirm");
    assert_eq!(app.reservation(&rid, "henry").await["status"], "confirmed");
    assert_eq!(app.check_invariants(&sale).await, (2, 0, 2));
    assert_eq!(app.orders(&sale).await.len(), 1, "sold exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_mid_sale_rebuilds_from_mongodb_without_overselling() {
    let redis = RedisServer::start();
    let url = redis.url.clone();
    let app = Arc::new(spawn_app_with(|s| on_redis(s, &url)).await);
    flush_mid_sale(app).await;
    drop(redis);
}

/// Sells part of a sale, flushes the app's Redis (every master of a
/// cluster), and lets a crowd arrive: the sale is rebuilt from MongoDB and
/// sells exactly what is left.
pub async fn flush_mid_sale(app: Arc<TestApp>) {
    let total = 30;
    let sale = app
        .create_sale(json!({"total": total, "per_user_limit": 2}))
        .await;
    for i in 0..8 {
        let buyer = format!("early-{i}");
        let rid = hold(&app, &sale, &buyer, 2).await;
        if i < 5 {
            assert_eq!(app.confirm(&rid, &buyer).await.status(), 201);
        }
    }
    // 10 sold, 6 held.
    assert_eq!(app.check_invariants(&sale).await, (14, 6, 10));

    let mut conn = app.redis();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();

    // A crowd arrives right after: the first requests rebuild, none fails.
    let mut tasks = Vec::new();
    for i in 0..60 {
        let (app, sale) = (app.clone(), sale.clone());
        tasks.push(tokio::spawn(async move {
            let buyer = format!("late-{i}");
            let resp = app.reserve(&sale, &buyer, 1).await;
            match resp.status().as_u16() {
                201 => {
                    let rid = json(resp).await["reservation_id"]
                        .as_str()
                        .unwrap()
                        .to_owned();
                    assert_eq!(app.confirm(&rid, &buyer).await.status(), 201);
                    1
                }
                409 => 0,
                other => panic!("reserve after flush answered {other}"),
            }
        }));
    }
    let mut bought = 0;
    for t in tasks {
        bought += t.await.unwrap();
    }
    // The lost holds' units were free again: 20 more can be sold.
    assert_eq!(bought, total - 10);
    assert_eq!(app.check_invariants(&sale).await, (0, 0, total));
    let early_hold_buyer_orders = app
        .orders(&sale)
        .await
        .iter()
        .filter(|o| o.user_id == "early-0")
        .count();
    assert_eq!(early_hold_buyer_orders, 1);
    let bought_before: i64 = conn.hget(keys(&sale).bought(), "early-0").await.unwrap();
    assert_eq!(bought_before, 2, "bought counts restored");
}

#[tokio::test]
async fn mongodb_unreachable_during_confirm_is_503_and_loses_nothing() {
    let target = servers().mongo_uri.clone();
    let host = target
        .trim_start_matches("mongodb://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let proxy = TcpProxy::start(host).await;
    let uri = format!(
        "mongodb://127.0.0.1:{}/?directConnection=true&serverSelectionTimeoutMS=1000",
        proxy.port
    );
    // The lease outlasts the failing confirm (1 s of server selection), as
    // the real one (10 s) outlasts FLASHDROP_MONGODB_TIMEOUT.
    let app = spawn_app_with(|s| {
        s.mongodb_uri = flashdrop::config::Secret::new(uri);
        s.confirm_lease = Duration::from_secs(3);
    })
    .await;
    let sale = app
        .create_sale(json!({"total": 3, "hold_seconds": 5}))
        .await;
    let rid = hold(&app, &sale, "ivy", 2).await;

    proxy.cut();
    let resp = app.confirm(&rid, "ivy").await;
    assert_eq!(resp.status(), 503);
    assert_eq!(json(resp).await["code"], "unavailable");
    // The hold is still the buyer's: its units stay held.
    let s = app.redis_sale(&sale).await;
    assert_eq!((s["held"].as_str(), s["sold"].as_str()), ("2", "0"));

    proxy.restore();
    // Until its deadline the buyer can still confirm.
    let confirmed = eventually(Duration::from_secs(2), || async {
        let resp = app.confirm(&rid, "ivy").await;
        (resp.status() == 201 || resp.status() == 200).then_some(())
    })
    .await;
    assert!(confirmed.is_some(), "confirm works once MongoDB is back");
    assert_eq!(app.check_invariants(&sale).await, (1, 0, 2));
}

#[tokio::test]
async fn a_hold_whose_confirm_failed_still_expires_when_mongodb_stays_down() {
    let target = servers().mongo_uri.clone();
    let host = target
        .trim_start_matches("mongodb://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let proxy = TcpProxy::start(host).await;
    let uri = format!(
        "mongodb://127.0.0.1:{}/?directConnection=true&serverSelectionTimeoutMS=500",
        proxy.port
    );
    let app = spawn_app_with(|s| {
        s.mongodb_uri = flashdrop::config::Secret::new(uri);
        s.confirm_lease = Duration::from_millis(500);
    })
    .await;
    let sale = app
        .create_sale(json!({"total": 2, "hold_seconds": 1}))
        .await;
    let rid = hold(&app, &sale, "jack", 2).await;
    proxy.cut();
    assert_eq!(app.confirm(&rid, "jack").await.status(), 503);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.restore();
    let back = eventually(Duration::from_secs(8), || async {
        (app.redis_sale(&sale).await["available"] == "2").then_some(())
    })
    .await;
    assert!(back.is_some(), "units came back after the deadline");
    assert_eq!(app.confirm(&rid, "jack").await.status(), 410);
    assert_eq!(app.check_invariants(&sale).await, (2, 0, 0));
}
