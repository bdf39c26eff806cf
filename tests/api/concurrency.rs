//! Invariants under real concurrent requests, checked in Redis and MongoDB.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use crate::helpers::{TestApp, json, keys, spawn_app};
use serde_json::json;

/// Reads available + held + sold in one atomic HMGET, over and over, until
/// stopped; returns how many samples it took. Panics on any sample that
/// breaks sold + held <= total or does not add up to total.
fn sample_counts(app: &TestApp, sale: &str, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    let mut conn = app.redis();
    let key = keys(sale).sale();
    tokio::spawn(async move {
        let mut samples = 0;
        while !stop.load(Ordering::Relaxed) {
            let (total, available, held, sold): (i64, i64, i64, i64) = redis::cmd("HMGET")
                .arg(&key)
                .arg(&["total", "available", "held", "sold"])
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!(sold + held <= total, "oversold: sold {sold} held {held}");
            assert_eq!(available + held + sold, total, "a unit is unaccounted for");
            samples += 1;
        }
        samples
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_racing_for_fewer_units_buys_exactly_total() {
    let app = Arc::new(spawn_app().await);
    let total = 100;
    let sale = app
        .create_sale(json!({"total": total, "per_user_limit": 2}))
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_counts(&app, &sale, stop.clone());

    let buyers = 400;
    let mut tasks = Vec::new();
    for i in 0..buyers {
        let (app, sale) = (app.clone(), sale.clone());
        tasks.push(tokio::spawn(async move {
            let buyer = format!("racer-{i}");
            let want = if i % 3 == 0 { 2 } else { 1 };
            let mut resp = app.reserve(&sale, &buyer, want).await;
            if resp.status() == 409 && want == 2 {
                resp = app.reserve(&sale, &buyer, 1).await;
            }
            match resp.status().as_u16() {
                201 => {
                    let rid = json(resp).await["reservation_id"]
                        .as_str()
                        .unwrap()
                        .to_owned();
                    let confirmed = app.confirm(&rid, &buyer).await;
                    assert_eq!(confirmed.status(), 201);
                    json(confirmed).await["quantity"].as_i64().unwrap()
                }
                409 => {
                    assert_eq!(json(resp).await["code"], "sold_out");
                    0
                }
                other => panic!("reserve answered {other}"),
            }
        }));
    }
    let mut bought = 0;
    for t in tasks {
        bought += t.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.unwrap();
    assert!(
        samples > 10,
        "the sampler ran during the race ({samples} samples)"
    );

    assert_eq!(bought, total);
    assert_eq!(app.check_invariants(&sale).await, (0, 0, total));
    let orders = app.orders(&sale).await;
    let units: HashSet<i64> = orders.iter().flat_map(|o| o.units.clone()).collect();
    assert_eq!(units.len() as i64, total, "no unit is in two orders");
    assert_eq!(app.get_sale(&sale).await["status"], "sold_out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_buyer_firing_in_parallel_never_passes_the_limit() {
    let app = Arc::new(spawn_app().await);
    let sale = app
        .create_sale(json!({"total": 50, "per_user_limit": 2}))
        .await;
    for round in 0..3 {
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (app, sale) = (app.clone(), sale.clone());
            tasks.push(tokio::spawn(async move {
                let resp = app.reserve(&sale, "greedy", 1).await;
                let status = resp.status().as_u16();
                (status, json(resp).await)
            }));
        }
        let mut rids = HashSet::new();
        let mut created = 0;
        for t in tasks {
            let (status, body) = t.await.unwrap();
            match status {
                201 | 200 => {
                    created += usize::from(status == 201);
                    rids.insert(body["reservation_id"].as_str().unwrap().to_owned());
                }
                409 => assert_eq!(body["code"], "limit_exceeded", "round {round}"),
                other => panic!("{other}: {body}"),
            }
        }
        if round < 2 {
            assert_eq!((created, rids.len()), (1, 1), "one live hold per buyer");
            let rid = rids.into_iter().next().unwrap();
            // Parallel confirms of the same hold write one order.
            let confirms: Vec<_> = (0..10)
                .map(|_| {
                    let (app, rid) = (app.clone(), rid.clone());
                    tokio::spawn(async move { app.confirm(&rid, "greedy").await.status().as_u16() })
                })
                .collect();
            let mut codes = Vec::new();
            for c in confirms {
                codes.push(c.await.unwrap());
            }
            assert!(codes.iter().all(|c| *c == 201 || *c == 200), "{codes:?}");
            assert!(codes.contains(&201), "{codes:?}");
        } else {
            assert_eq!(created, 0, "over the limit nothing is held");
        }
    }
    let orders = app.orders(&sale).await;
    assert_eq!(orders.len(), 2);
    assert_eq!(app.check_invariants(&sale).await, (48, 0, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_and_confirms_racing_keep_every_unit_accounted_for() {
    let app = Arc::new(spawn_app().await);
    let total = 60;
    let sale = app
        .create_sale(json!({"total": total, "per_user_limit": 3}))
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_counts(&app, &sale, stop.clone());
    let mut tasks = Vec::new();
    for i in 0..240 {
        let (app, sale) = (app.clone(), sale.clone());
        tasks.push(tokio::spawn(async move {
            let buyer = format!("churn-{}", i % 120);
            let resp = app.reserve(&sale, &buyer, 1 + (i % 3)).await;
            if resp.status() != 201 {
                return;
            }
            let rid = json(resp).await["reservation_id"]
                .as_str()
                .unwrap()
                .to_owned();
            if i % 2 == 0 {
                let _ = app.cancel(&rid, &buyer).await;
            } else {
                let _ = app.confirm(&rid, &buyer).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    let (available, held, sold) = app.check_invariants(&sale).await;
    assert_eq!(held, 0);
    assert_eq!(available + sold, total);
    assert!(sold > 0);
}
