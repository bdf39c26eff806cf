//! Invariants under real concurrent requests, checked in Redis and MongoDB.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use crate::helpers::{TestApp, hold, json, keys, one_unit_order, spawn_app};
use flashdrop::store::mongo::OrderWrite;
use redis::AsyncCommands;
use serde_json::json;

/// Reads available + held + sold in one atomic HMGET, over and over, until
/// stopped; returns how many samples it took. Panics on any sample that
/// breaks sold + held <= total or does not add up to total. It loops on a
/// thread of its own, so the crowd's hundreds of tasks do not starve it.
fn sample_counts(app: &TestApp, sale: &str, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    let mut conn = app.redis();
    let key = keys(sale).sale();
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        runtime.block_on(async move {
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

/// One unordered insert_many with a document a unique index refuses: that
/// document alone is refused, the others are written.
#[tokio::test]
async fn a_refused_order_in_a_batch_fails_alone() {
    let app = spawn_app().await;
    let order = |id: &str, user: &str, unit: i64| one_unit_order(id, "batch-sale", user, unit, 0);
    let first = order("o1", "ann", 1);
    let unit_taken = order("o2", "ben", 1);
    let third = order("o3", "cat", 3);
    let writes = app
        .mongo
        .insert_orders(&[&first, &unit_taken, &third])
        .await;
    assert!(
        matches!(
            writes.as_slice(),
            [
                OrderWrite::Inserted,
                OrderWrite::Refused,
                OrderWrite::Inserted
            ]
        ),
        "{writes:?}"
    );
    assert!(app.mongo.order("o3").await.unwrap().is_some());
    assert!(app.mongo.order("o2").await.unwrap().is_none());
}

/// Concurrent confirms share batches; one of them collides with a purchase
/// MongoDB has and Redis forgot. Only that buyer is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_refused_by_mongodb_answers_only_its_buyer() {
    let app = Arc::new(spawn_app().await);
    let sale = app
        .create_sale(json!({"total": 200, "per_user_limit": 1}))
        .await;
    let first = hold(&app, &sale, "forgotten", 1).await;
    assert_eq!(app.confirm(&first, "forgotten").await.status(), 201);
    // Redis loses the buyer's purchase: it lets them hold again, with the
    // same purchase slot MongoDB already has.
    let _: () = app
        .redis()
        .hdel(keys(&sale).bought(), "forgotten")
        .await
        .unwrap();
    let again = hold(&app, &sale, "forgotten", 1).await;
    let refused = confirm_among_sixty(&app, &sale, "forgotten", again).await;
    assert_eq!(
        (refused.0, refused.1["code"].as_str()),
        (409, Some("limit_exceeded"))
    );
    assert_eq!(app.check_invariants(&sale).await, (139, 0, 61));
}

/// Confirms `buyer`'s hold `rid` together with the holds of 60 other
/// buyers, all at once, so they share batches. Every other buyer's
/// confirm must answer 201; `buyer`'s answer is returned.
async fn confirm_among_sixty(
    app: &Arc<TestApp>,
    sale: &str,
    buyer: &str,
    rid: String,
) -> (u16, serde_json::Value) {
    let mut rids = vec![(buyer.to_owned(), rid)];
    for i in 0..60 {
        let other = format!("batch-{i}");
        rids.push((other.clone(), hold(app, sale, &other, 1).await));
    }
    let confirms: Vec<_> = rids
        .into_iter()
        .map(|(buyer, rid)| {
            let app = app.clone();
            tokio::spawn(async move {
                let resp = app.confirm(&rid, &buyer).await;
                let status = resp.status().as_u16();
                (buyer, status, json(resp).await)
            })
        })
        .collect();
    let mut answer = None;
    for c in confirms {
        let (who, status, body) = c.await.unwrap();
        if who == buyer {
            answer = Some((status, body));
        } else {
            assert_eq!(status, 201, "{who}: {body}");
        }
    }
    answer.unwrap()
}

/// Concurrent confirms share batches; one of them holds a unit MongoDB has
/// sold and Redis forgot (a Redis back older than it was, a failover to a
/// lagging replica). MongoDB's unique index refuses only that order: its
/// buyer hears 409 `sold_out`, and Redis counts the unit sold again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_of_a_unit_mongodb_has_sold_is_refused_and_counted_sold() {
    let app = Arc::new(spawn_app().await);
    let sale = app
        .create_sale(json!({"total": 200, "per_user_limit": 1}))
        .await;
    let first = hold(&app, &sale, "first", 1).await;
    let units_of =
        |rid: &str, holds: &std::collections::HashMap<String, serde_json::Value>| match &holds[rid]
            ["units"]
        {
            serde_json::Value::String(units) => units.clone(),
            other => other.to_string(),
        };
    let unit = units_of(&first, &app.holds(&sale).await);
    assert_eq!(app.confirm(&first, "first").await.status(), 201);
    // Redis loses the sale of that unit: it is free again and not counted.
    let mut redis = app.redis();
    let _: () = redis.sadd(keys(&sale).free(), &unit).await.unwrap();
    let _: () = redis
        .hincr(keys(&sale).sale(), "available", 1)
        .await
        .unwrap();
    let _: () = redis.hincr(keys(&sale).sale(), "sold", -1).await.unwrap();
    let again = hold(&app, &sale, "second", 1).await;
    assert_eq!(units_of(&again, &app.holds(&sale).await), unit);

    let refused = confirm_among_sixty(&app, &sale, "second", again).await;
    assert_eq!(
        (refused.0, refused.1["code"].as_str()),
        (409, Some("sold_out"))
    );
    // 61 orders in MongoDB, each unit once; Redis counts the same.
    assert_eq!(app.orders(&sale).await.len(), 61);
    assert_eq!(app.check_invariants(&sale).await, (139, 0, 61));
}

/// Status reads of a sale that arrive while one of its reads is out share
/// the sale's next Redis read, which starts after they arrived: none is
/// older than its request. While 40 readers read the sale in a loop, a
/// buyer who got their reserve's 201 and then reads the sale finds that
/// hold counted, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reads_share_redis_reads_and_each_sees_the_changes_before_it() {
    let app = Arc::new(spawn_app().await);
    let total = 1000;
    let sale = app
        .create_sale(json!({"total": total, "per_user_limit": 1}))
        .await;
    let before = read_sale_calls(&app).await;
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..40)
        .map(|_| {
            let (app, sale, stop) = (app.clone(), sale.clone(), stop.clone());
            tokio::spawn(async move {
                let mut reads = 0_u64;
                while !stop.load(Ordering::Relaxed) {
                    let view = app.get_sale(&sale).await;
                    assert!(view["available"].as_i64().unwrap() <= total);
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for i in 1..=60 {
        hold(&app, &sale, &format!("reader-{i}"), 1).await;
        let view = app.get_sale(&sale).await;
        assert_eq!(
            view["available"].as_i64(),
            Some(total - i),
            "the read after hold {i} missed it: {view}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let mut reads = 60;
    for r in readers {
        reads += r.await.unwrap();
    }
    let (calls, served) = read_sale_calls(&app).await;
    let (calls, served) = (calls - before.0, served - before.1);
    assert!(served >= reads, "{served} reads served, {reads} made");
    assert!(
        calls < served,
        "{reads} reads of one sale took {calls} Redis reads"
    );
}

/// `read_sale` calls made and the reads they served, from `/metrics`:
/// counted over the whole process, so other tests' reads add to both.
async fn read_sale_calls(app: &TestApp) -> (u64, u64) {
    let text = app.metrics().await;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
    };
    (
        value("flashdrop_script_batch_size_count{script=\"read_sale\"}"),
        value("flashdrop_script_batch_size_sum{script=\"read_sale\"}"),
    )
}
