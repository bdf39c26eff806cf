//! The FIFO waiting list: positions, promotion when units come back, the
//! partial-fit rule, closure, and a randomized run audited from the events.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use crate::helpers::{eventually, hold, join, json, keys, leave, spawn_app, waitlist_me as me};
use rand::{Rng, SeedableRng, rngs::StdRng};
use redis::AsyncCommands;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_joins_get_distinct_positions_in_order() {
    let app = Arc::new(spawn_app().await);
    let sale = app
        .create_sale(json!({"total": 2, "per_user_limit": 2}))
        .await;
    let resp = join(&app, &sale, "early", 1).await;
    assert_eq!(resp.status(), 409);
    assert_eq!(json(resp).await["code"], "stock_available");
    hold(&app, &sale, "holder", 2).await;

    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let (app, sale) = (app.clone(), sale.clone());
            tokio::spawn(async move {
                let resp = join(&app, &sale, &format!("w{i}"), 1).await;
                assert_eq!(resp.status(), 201);
                json(resp).await["position"].as_i64().unwrap()
            })
        })
        .collect();
    let mut positions = Vec::new();
    for t in tasks {
        positions.push(t.await.unwrap());
    }
    positions.sort_unstable();
    assert_eq!(positions, (1..=60).collect::<Vec<_>>());

    // Positions follow join order, and joining twice keeps the place.
    let joined: Vec<String> = app
        .stock_events(&sale)
        .await
        .into_iter()
        .filter(|e| e.kind == "waitlist_joined")
        .filter_map(|e| e.buyer)
        .collect();
    for (i, buyer) in joined.iter().enumerate().step_by(7) {
        assert_eq!(me(&app, &sale, buyer).await["position"], i as i64 + 1);
    }
    let again = join(&app, &sale, &joined[3], 1).await;
    assert_eq!(again.status(), 200);
    assert_eq!(json(again).await["position"], 4);
    assert_eq!(app.get_sale(&sale).await["waitlist_length"], 60);
    assert_eq!(me(&app, &sale, "stranger").await["status"], "not_listed");
}

#[tokio::test]
async fn a_cancel_promotes_the_head_and_newcomers_cannot_cut_in() {
    let app = spawn_app().await;
    let sale = app
        .create_sale(json!({"total": 2, "per_user_limit": 2}))
        .await;
    let rid = hold(&app, &sale, "alice", 2).await;
    assert_eq!(join(&app, &sale, "bob", 1).await.status(), 201);
    assert_eq!(join(&app, &sale, "carol", 1).await.status(), 201);
    assert_eq!(join(&app, &sale, "dan", 1).await.status(), 201);

    assert_eq!(app.cancel(&rid, "alice").await.status(), 204);
    // Both returned units went to the first two in line, in the same step.
    let bob = me(&app, &sale, "bob").await;
    assert_eq!(bob["status"], "promoted");
    let bob_rid = bob["reservation_id"].as_str().unwrap().to_owned();
    assert_eq!(me(&app, &sale, "carol").await["status"], "promoted");
    assert_eq!(me(&app, &sale, "dan").await["position"], 1);
    let refused = app.reserve(&sale, "newcomer", 1).await;
    assert_eq!(refused.status(), 409);
    assert_eq!(json(refused).await["code"], "sold_out");

    // The promoted hold is an ordinary hold of the buyer's.
    assert_eq!(app.reservation(&bob_rid, "bob").await["status"], "held");
    let again = app.reserve(&sale, "bob", 1).await;
    assert_eq!(again.status(), 200, "reserving returns the promoted hold");
    assert_eq!(app.confirm(&bob_rid, "bob").await.status(), 201);
    assert_eq!(app.check_invariants(&sale).await, (0, 1, 1));
}

#[tokio::test]
async fn expiry_and_a_lapsed_promotion_promote_the_next_in_line() {
    let app = spawn_app().await;
    let sale = app
        .create_sale(json!({"total": 1, "per_user_limit": 1, "hold_seconds": 1}))
        .await;
    hold(&app, &sale, "first", 1).await;
    join(&app, &sale, "second", 1).await;
    join(&app, &sale, "third", 1).await;

    let promoted = eventually(Duration::from_secs(3), || async {
        (me(&app, &sale, "second").await["status"] == "promoted").then_some(())
    })
    .await;
    assert!(promoted.is_some(), "expiry promoted the head");
    assert_eq!(me(&app, &sale, "third").await["position"], 1);

    // "second" lets the promoted hold lapse: "third" is next.
    let next = eventually(Duration::from_secs(3), || async {
        (me(&app, &sale, "third").await["status"] == "promoted").then_some(())
    })
    .await;
    assert!(next.is_some(), "a lapsed promotion promoted the next buyer");
    let third = me(&app, &sale, "third").await;
    let rid = third["reservation_id"].as_str().unwrap();
    assert_eq!(app.confirm(rid, "third").await.status(), 201);
    assert_eq!(app.check_invariants(&sale).await, (0, 0, 1));
    let stored = app.redis_sale(&sale).await;
    assert_eq!(stored["promotions"], "2");
}

#[tokio::test]
async fn partial_fits_wait_for_more_units_then_take_what_is_left() {
    let app = spawn_app().await;
    let sale = app
        .create_sale(json!({"total": 3, "per_user_limit": 2}))
        .await;
    let a = hold(&app, &sale, "a", 1).await;
    let b = hold(&app, &sale, "b", 2).await;
    assert_eq!(join(&app, &sale, "head", 2).await.status(), 201);
    assert_eq!(join(&app, &sale, "second", 1).await.status(), 201);

    // One unit back, the head wants two, and b's hold may return more: the
    // unit is set aside for the line.
    assert_eq!(app.cancel(&a, "a").await.status(), 204);
    assert_eq!(me(&app, &sale, "head").await["position"], 1);
    let view = app.get_sale(&sale).await;
    assert_eq!(
        (view["available"].as_i64(), view["waitlist_length"].as_i64()),
        (Some(1), Some(2))
    );
    let refused = app.reserve(&sale, "newcomer", 1).await;
    assert_eq!(refused.status(), 409);
    app.check_invariants(&sale).await;

    // b confirms: nothing is held any more, so nothing more can come back.
    // The head takes the one unit rather than leave it stranded.
    assert_eq!(app.confirm(&b, "b").await.status(), 201);
    let head = me(&app, &sale, "head").await;
    assert_eq!(head["status"], "promoted");
    let rid = head["reservation_id"].as_str().unwrap();
    assert_eq!(app.reservation(rid, "head").await["quantity"], 1);
    assert_eq!(app.check_invariants(&sale).await, (0, 1, 2));
}

#[tokio::test]
async fn the_line_closes_when_every_unit_is_sold() {
    let app = spawn_app().await;
    let sale = app.create_sale(json!({"total": 2})).await;
    let rid = hold(&app, &sale, "buyer", 2).await;
    join(&app, &sale, "hopeful", 1).await;
    assert_eq!(app.confirm(&rid, "buyer").await.status(), 201);

    assert_eq!(me(&app, &sale, "hopeful").await["status"], "closed");
    assert_eq!(app.get_sale(&sale).await["waitlist_length"], 0);
    let late = join(&app, &sale, "late", 1).await;
    assert_eq!(late.status(), 409);
    assert_eq!(json(late).await["code"], "sold_out");
    let kinds: Vec<String> = app
        .stock_events(&sale)
        .await
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds.last().map(String::as_str), Some("sale_closed"));
}

#[tokio::test]
async fn the_line_respects_the_limit_the_switch_and_leaving() {
    let app = spawn_app().await;
    let sale = app
        .create_sale(json!({"total": 3, "per_user_limit": 2}))
        .await;
    let mine = hold(&app, &sale, "repeat", 1).await;
    assert_eq!(app.confirm(&mine, "repeat").await.status(), 201);
    let other = hold(&app, &sale, "other", 2).await;

    let over = join(&app, &sale, "repeat", 2).await;
    assert_eq!(over.status(), 409);
    assert_eq!(json(over).await["code"], "limit_exceeded");
    let holding = join(&app, &sale, "other", 1).await;
    assert_eq!(holding.status(), 409);
    assert_eq!(json(holding).await["code"], "reservation_exists");
    assert_eq!(join(&app, &sale, "repeat", 1).await.status(), 201);
    assert_eq!(join(&app, &sale, "quitter", 1).await.status(), 201);
    assert_eq!(leave(&app, &sale, "quitter").await.status(), 204);
    assert_eq!(me(&app, &sale, "quitter").await["status"], "not_listed");

    assert_eq!(app.cancel(&other, "other").await.status(), 204);
    let promoted = me(&app, &sale, "repeat").await;
    assert_eq!(promoted["status"], "promoted");
    let rid = promoted["reservation_id"].as_str().unwrap();
    assert_eq!(app.confirm(rid, "repeat").await.status(), 201);
    app.check_invariants(&sale).await;
    let orders = app.orders(&sale).await;
    let repeat_bought: i64 = orders
        .iter()
        .filter(|o| o.user_id == "repeat")
        .map(|o| o.quantity)
        .sum();
    assert_eq!(repeat_bought, 2, "promoted buyers stay within the limit");

    let closed = app
        .create_sale(json!({"total": 1, "per_user_limit": 1, "waitlist_enabled": false}))
        .await;
    hold(&app, &closed, "x", 1).await;
    let resp = join(&app, &closed, "y", 1).await;
    assert_eq!(resp.status(), 409);
    assert_eq!(json(resp).await["code"], "waitlist_disabled");
}

/// Many buyers reserve, confirm, cancel, abandon, join and leave at random and
/// at once; afterwards every unit is free, held or sold exactly once, and the
/// event stream shows every promotion went to the head of the line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_traffic_keeps_units_whole_and_promotions_in_line_order() {
    let app = Arc::new(spawn_app().await);
    let total = 12;
    let sale = app
        .create_sale(json!({"total": total, "per_user_limit": 2, "hold_seconds": 1}))
        .await;
    let seed: u64 = std::env::var("WAITLIST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("WAITLIST_SEED={seed}");
    // Whatever the seed, the line is exercised: seed buyers hold every unit
    // and let the holds expire while three buyers wait.
    for i in 0..6 {
        hold(&app, &sale, &format!("seed-{i}"), 2).await;
    }
    for i in 0..3 {
        assert_eq!(
            join(&app, &sale, &format!("line-{i}"), 1).await.status(),
            201
        );
    }

    let tasks: Vec<_> = (0..48u64)
        .map(|i| {
            let (app, sale) = (app.clone(), sale.clone());
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed ^ i);
                let buyer = format!("r{i}");
                for _ in 0..6 {
                    tokio::time::sleep(Duration::from_millis(rng.random_range(0..400))).await;
                    let quantity = rng.random_range(1..=2);
                    let resp = app.reserve(&sale, &buyer, quantity).await;
                    let status = resp.status().as_u16();
                    let body = json(resp).await;
                    let rid = match status {
                        200 | 201 => body["reservation_id"].as_str().unwrap().to_owned(),
                        409 if body["code"] == "sold_out" => {
                            let joined = join(&app, &sale, &buyer, quantity).await.status();
                            assert!([200, 201, 409].contains(&joined.as_u16()), "{joined}");
                            if rng.random_bool(0.2) {
                                assert_eq!(leave(&app, &sale, &buyer).await.status(), 204);
                            }
                            continue;
                        }
                        409 => continue,
                        other => panic!("reserve answered {other}: {body}"),
                    };
                    match rng.random_range(0..20) {
                        0..5 => {
                            let s = app.confirm(&rid, &buyer).await.status().as_u16();
                            assert!([200, 201, 410].contains(&s), "confirm {s}");
                        }
                        5..13 => {
                            let s = app.cancel(&rid, &buyer).await.status().as_u16();
                            assert!([204, 409, 410].contains(&s), "cancel {s}");
                        }
                        _ => {} // abandon: the hold expires
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    // Whoever still waits leaves (which may promote the next), then every
    // abandoned or promoted hold runs out.
    let mut conn = app.redis();
    let still: Vec<String> = conn.zrange(keys(&sale).wait(), 0, -1).await.unwrap();
    let leaves: Vec<_> = still
        .into_iter()
        .map(|buyer| {
            let (app, sale) = (app.clone(), sale.clone());
            tokio::spawn(async move { leave(&app, &sale, &buyer).await.status() })
        })
        .collect();
    for l in leaves {
        assert_eq!(l.await.unwrap(), 204);
    }
    let settled = eventually(Duration::from_secs(15), || async {
        (app.redis_sale(&sale).await["held"] == "0").then_some(())
    })
    .await;
    if settled.is_none() {
        let deadlines: Vec<(String, i64)> = conn
            .zrange_withscores(keys(&sale).deadlines(), 0, -1)
            .await
            .unwrap();
        panic!(
            "holds did not settle: {:?} {deadlines:?}",
            app.redis_sale(&sale).await
        );
    }
    let (available, held, sold) = app.check_invariants(&sale).await;
    assert_eq!(available + held + sold, total);

    // Replay the line from the events: each promotion is of the head.
    let mut line: VecDeque<String> = VecDeque::new();
    let mut promotions = 0;
    for e in app.stock_events(&sale).await {
        let buyer = e.buyer.clone().unwrap_or_default();
        match e.kind.as_str() {
            "waitlist_joined" => line.push_back(buyer),
            "waitlist_left" => line.retain(|u| *u != buyer),
            "promoted" => {
                assert_eq!(line.pop_front(), Some(buyer), "seed {seed}");
                promotions += 1;
            }
            _ => {}
        }
    }
    eprintln!("promotions: {promotions}, sold: {sold}, seed {seed}");
    assert!(promotions > 0, "the run exercised the line (seed {seed})");
}

/// One unit free, nobody waiting, a buyer who wants two: reserve says
/// sold_out, so the line must take them (it said stock_available).
#[tokio::test]
async fn a_buyer_who_wants_more_than_is_free_can_wait() {
    let app = spawn_app().await;
    let sale = app
        .create_sale(json!({"total": 3, "per_user_limit": 2}))
        .await;
    let rid = hold(&app, &sale, "first", 2).await;
    let refused = app.reserve(&sale, "big", 2).await;
    assert_eq!(refused.status(), 409);
    assert_eq!(json(refused).await["code"], "sold_out");
    assert_eq!(join(&app, &sale, "big", 2).await.status(), 201);
    // Someone who wants what is free still reserves it... but the line
    // comes first now.
    assert_eq!(app.reserve(&sale, "small", 1).await.status(), 409);
    assert_eq!(app.cancel(&rid, "first").await.status(), 204);
    let me = me(&app, &sale, "big").await;
    assert_eq!(me["status"], "promoted");
    let promoted = me["reservation_id"].as_str().unwrap();
    assert_eq!(app.reservation(promoted, "big").await["quantity"], 2);
    app.check_invariants(&sale).await;
}

/// Once a promoted hold has ended, the buyer is no longer shown promoted.
#[tokio::test]
async fn a_promotion_that_ended_is_not_reported() {
    let app = spawn_app().await;
    let sale = app
        .create_sale(json!({"total": 2, "per_user_limit": 1}))
        .await;
    let rid = hold(&app, &sale, "holder", 1).await;
    hold(&app, &sale, "other", 1).await;
    assert_eq!(join(&app, &sale, "waiter", 1).await.status(), 201);
    assert_eq!(app.cancel(&rid, "holder").await.status(), 204);
    let promoted = me(&app, &sale, "waiter").await;
    assert_eq!(promoted["status"], "promoted");
    let promoted = promoted["reservation_id"].as_str().unwrap().to_owned();
    assert_eq!(app.cancel(&promoted, "waiter").await.status(), 204);
    assert_eq!(me(&app, &sale, "waiter").await["status"], "not_listed");
}
