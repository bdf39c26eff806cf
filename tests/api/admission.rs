//! The lobby at work: thousands join, the server's places are checked
//! against the published draw, buyers are let in at the rate, and nothing
//! is lost to a flushed Redis. Every test checks Redis and MongoDB, not
//! only answers, and waits for what the server reports, not for the clock.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use serde_json::{Value, json};

use crate::{
    helpers::{RedisServer, buyer_token, eventually, json, on_redis, spawn_app, spawn_app_with},
    live::{connect, next_frame},
    lobbies::{
        admitted_at_least, assert_in_draw_order, checked_draw, commitment, join_all, join_lobby,
        lobby, lobby_now, lobby_sale, me, recorded, sale_field, sale_id, start_in,
    },
};

/// Spearman's rank correlation (ties get their mean rank).
fn spearman(x: &[f64], y: &[f64]) -> f64 {
    fn ranks(v: &[f64]) -> Vec<f64> {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|a, b| v[*a].total_cmp(&v[*b]));
        let mut r = vec![0.0; v.len()];
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
                j += 1;
            }
            for k in i..=j {
                r[idx[k]] = (i + j) as f64 / 2.0 + 1.0;
            }
            i = j + 1;
        }
        r
    }
    let (rx, ry) = (ranks(x), ranks(y));
    let n = x.len() as f64;
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let cov: f64 = rx.iter().zip(&ry).map(|(a, b)| (a - mx) * (b - my)).sum();
    let sx: f64 = rx.iter().map(|a| (a - mx).powi(2)).sum::<f64>().sqrt();
    let sy: f64 = ry.iter().map(|b| (b - my).powi(2)).sum::<f64>().sqrt();
    cov / (sx * sy)
}

/// The places the server gives 5,000 buyers owe nothing to when they
/// joined: the rank correlation between each buyer's join time (as the
/// server recorded it) and the position the server tells them is near
/// zero, and each position is the buyer's place in the published draw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_join_and_their_places_owe_nothing_to_when_they_came() {
    let app = spawn_app().await;
    let sale = lobby_sale(&app, json!({"admit_per_second": 1})).await;
    let commitment = commitment(&app, &sale).await;
    let buyers: Vec<String> = (0..5000).map(|i| format!("crowd-{i:04}")).collect();
    let began = Instant::now();
    join_all(&app, &sale, &buyers, 64).await;
    println!("5000 joins in {:?}", began.elapsed());
    let view = lobby(&app, &sale).await;
    assert_eq!(view["joined"], 5000);
    assert_eq!(view["lobby_length"], 5000);
    assert!(view.get("seed").is_none(), "secret before the start");
    assert_eq!(me(&app, &sale, "crowd-0042").await["status"], "lobby");
    let entries = app.mongo.all_lobby_entries(&sale_id(&sale)).await.unwrap();
    assert_eq!(entries.len(), 5000, "every place is in MongoDB");

    start_in(&app, &sale, 0.5).await;
    let order = checked_draw(&app, &sale, &commitment, &buyers).await;
    let index: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, b)| (b.as_str(), i))
        .collect();
    // Every buyer asks the server where they stand.
    let places: Vec<(String, Value, i64)> = stream::iter(&buyers)
        .map(|b| {
            let (app, sale) = (&app, &sale);
            async move {
                let place = me(app, sale, b).await;
                let admitted = sale_field(app, sale, "lobby_admitted").await;
                (b.clone(), place, admitted)
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let (mut joined, mut position) = (Vec::new(), Vec::new());
    for (buyer, place, admitted_after) in &places {
        let drawn = index[buyer.as_str()] as i64;
        if place["status"] == "admitted" {
            assert!(drawn < *admitted_after, "{buyer} let in out of turn");
            continue;
        }
        assert_eq!(place["status"], "queued", "{buyer}: {place}");
        let at = place["position"].as_i64().unwrap();
        // The server's place is the buyer's place in the published draw,
        // less those let in by then (one a second).
        assert!(
            at <= drawn + 1 && at >= drawn + 1 - admitted_after,
            "{buyer} told {at}, drawn {drawn}"
        );
        let joined_at = chrono::DateTime::parse_from_rfc3339(place["joined_at"].as_str().unwrap())
            .unwrap()
            .timestamp_millis();
        joined.push(joined_at as f64);
        position.push(at as f64);
    }
    assert!(position.len() > 4900, "{} queued", position.len());
    let rho = spearman(&joined, &position);
    println!("Spearman rho(join time, position told) at 5000 = {rho:.4}");
    assert!(rho.abs() < 0.05, "rho {rho}");
    // Nor do the ids, which here say the order of joining too.
    let ids: Vec<f64> = places
        .iter()
        .filter(|(_, p, _)| p["status"] == "queued")
        .map(|(b, _, _)| b[6..].parse::<f64>().unwrap())
        .collect();
    assert!(spearman(&ids, &position).abs() < 0.05);
    let (admitted, waiting, _) = lobby_now(&app, &sale).await;
    assert_in_draw_order(&order, &admitted, &waiting);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_keeps_its_rate_in_draw_order_and_is_needed_to_buy() {
    let app = spawn_app().await;
    let rate = 50;
    let sale = lobby_sale(
        &app,
        json!({"admit_per_second": rate, "total": 100, "per_user_limit": 1}),
    )
    .await;
    let commitment = commitment(&app, &sale).await;
    let buyers: Vec<String> = (0..1000).map(|i| format!("rate-{i:04}")).collect();
    join_all(&app, &sale, &buyers, 32).await;
    start_in(&app, &sale, 0.3).await;
    let order = checked_draw(&app, &sale, &commitment, &buyers).await;
    // Not let in yet: reserving or joining the line is refused, atomically
    // in the scripts.
    let last = order.last().unwrap();
    let refused = app.reserve(&sale, last, 1).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(json(refused).await["code"], "not_admitted");
    let line = crate::helpers::join(&app, &sale, last, 1).await;
    assert_eq!(line.status(), 403);
    assert_eq!(me(&app, &sale, last).await["status"], "queued");

    // The rate, over 10 s, from Redis' own count.
    admitted_at_least(&app, &sale, 1).await;
    let (a0, t0) = (
        sale_field(&app, &sale, "lobby_admitted").await,
        Instant::now(),
    );
    // Meanwhile the first buyer in the draw buys with their admission.
    let first = &order[0];
    let place = me(&app, &sale, first).await;
    assert_eq!(place["status"], "admitted", "{place}");
    assert!(place["admission_expires_at"].is_string());
    let rid = crate::helpers::hold(&app, &sale, first, 1).await;
    assert_eq!(app.confirm(&rid, first).await.status(), 201);
    // A measuring window, not a wait for a state.
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(t0.elapsed())).await;
    let a1 = sale_field(&app, &sale, "lobby_admitted").await;
    let measured = (a1 - a0) as f64 / t0.elapsed().as_secs_f64();
    let error = (measured - rate as f64) / rate as f64;
    println!(
        "admission rate {measured:.1}/s for {rate}/s: error {:+.1}%",
        error * 100.0
    );
    assert!(error.abs() < 0.10, "measured {measured}/s");

    // Nobody twice, nobody out of turn, the count right, MongoDB agrees.
    let (admitted, waiting, counted) = lobby_now(&app, &sale).await;
    assert_in_draw_order(&order, &admitted, &waiting);
    assert_eq!(
        counted as usize,
        admitted.len(),
        "each admission counted once"
    );
    assert_eq!(admitted.len() + waiting.len(), 1000, "nobody lost or twice");
    assert_eq!(sale_field(&app, &sale, "lobby_used").await, 1);
    // Closed, nobody more is let in: what Redis and MongoDB hold stays
    // still for the audit.
    let closed = app
        .http
        .post(app.api(&format!("/admin/sales/{sale}/close")))
        .bearer_auth(crate::helpers::admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), 200);
    recorded(&app, &sale).await;
    app.check_invariants(&sale).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_admission_lapses_and_its_turn_goes_to_the_next_buyer() {
    let app = spawn_app().await;
    let rate = 4;
    let sale = lobby_sale(
        &app,
        json!({"admit_per_second": rate, "admission_seconds": 1}),
    )
    .await;
    let buyers: Vec<String> = (0..80).map(|i| format!("lapse-{i:02}")).collect();
    join_all(&app, &sale, &buyers, 16).await;
    start_in(&app, &sale, 0.2).await;
    // The first admissions lapse a second after they are given.
    eventually(Duration::from_secs(15), || async {
        (sale_field(&app, &sale, "lobby_lapsed").await >= 2 * rate).then_some(())
    })
    .await
    .expect("admissions lapse");
    // Each second's admissions lapse a second later, and each lapse lets
    // the next buyer in: what is let in is the rate over the time since
    // the first admission, plus the lapses, within a second's worth.
    let (first_at, last_at, admitted, lapsed) = {
        let (let_in, _, counted) = lobby_now(&app, &sale).await;
        let lapsed = sale_field(&app, &sale, "lobby_lapsed").await;
        let times: Vec<i64> = let_in
            .values()
            .map(|v| v.split(' ').nth(2).unwrap().parse().unwrap())
            .collect();
        (
            *times.iter().min().unwrap(),
            *times.iter().max().unwrap(),
            counted,
            lapsed,
        )
    };
    let elapsed = (last_at - first_at) as f64 / 1000.0;
    let expected = rate as f64 * elapsed + lapsed as f64;
    println!("{elapsed:.1} s: {admitted} let in, {lapsed} lapsed");
    assert!(
        (admitted as f64 - expected).abs() <= rate as f64 + 1.0,
        "{admitted} let in, expected about {expected:.0}"
    );
    // A lapsed buyer is told so, and cannot buy.
    let (in_redis, _, _) = lobby_now(&app, &sale).await;
    let gone = in_redis
        .iter()
        .find(|(_, v)| v.starts_with('l'))
        .map(|(b, _)| b.clone())
        .expect("a lapsed admission");
    assert_eq!(me(&app, &sale, &gone).await["status"], "expired");
    let refused = app.reserve(&sale, &gone, 1).await;
    assert_eq!(refused.status(), 403);
    let id = sale_id(&sale);
    eventually(Duration::from_secs(5), || async {
        let entries = app.mongo.all_lobby_entries(&id).await.unwrap();
        entries
            .iter()
            .any(|e| e.buyer == gone && e.lapsed)
            .then_some(())
    })
    .await
    .expect("the lapse recorded in MongoDB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sold_out_sale_tells_everyone_in_the_lobby_at_once() {
    let app = spawn_app().await;
    let sale = lobby_sale(
        &app,
        json!({"admit_per_second": 2, "total": 2, "per_user_limit": 1}),
    )
    .await;
    let buyers: Vec<String> = (0..12).map(|i| format!("hope-{i:02}")).collect();
    join_all(&app, &sale, &buyers, 12).await;
    start_in(&app, &sale, 0.2).await;
    // The first two in, they buy everything.
    let first_two = eventually(Duration::from_secs(5), || async {
        let (admitted, _, _) = lobby_now(&app, &sale).await;
        (admitted.len() >= 2).then(|| admitted.into_keys().take(2).collect::<Vec<_>>())
    })
    .await
    .expect("two let in");
    let (_, waiting, _) = lobby_now(&app, &sale).await;
    let hopeful = waiting.last().unwrap().clone();
    let mut socket = connect(&app, &sale, Some(&buyer_token(&hopeful))).await;
    let mut frames = Vec::new();
    loop {
        let frame = next_frame(&mut socket).await;
        let done = frame["type"] == "lobby";
        frames.push(frame);
        if done {
            break;
        }
    }
    assert_eq!(frames.last().unwrap()["status"], "queued", "{frames:?}");
    for buyer in &first_two {
        let rid = crate::helpers::hold(&app, &sale, buyer, 1).await;
        assert_eq!(app.confirm(&rid, buyer).await.status(), 201);
    }
    let sold = Instant::now();
    let told = loop {
        let frame = next_frame(&mut socket).await;
        if frame["type"] == "lobby" && frame["status"] != "queued" {
            break frame;
        }
    };
    let delay = sold.elapsed();
    println!("the lobby heard of the sell-out {delay:?} after the last confirm");
    assert_eq!(told["status"], "sold_out", "{told}");
    assert!(delay < Duration::from_secs(1), "{delay:?}");
    for buyer in &waiting {
        assert_eq!(me(&app, &sale, buyer).await["status"], "sold_out");
    }
    // Nobody more is let in: ticks such as every keeper makes admit no one.
    let count = sale_field(&app, &sale, "lobby_admitted").await;
    for _ in 0..3 {
        let tick = app
            .state
            .store
            .redis
            .lobby_tick(&sale_id(&sale), 250, "test", Duration::from_secs(30))
            .await
            .unwrap();
        assert!(
            matches!(tick, flashdrop::store::scripts::LobbyTickReply::Ok { ref admitted, .. } if admitted.is_empty()),
            "{tick:?}"
        );
    }
    assert_eq!(sale_field(&app, &sale, "lobby_admitted").await, count);
}

/// A socket opened before its buyer joins (a page opened, then the join
/// button): the join and, later, the turn reach it without reconnecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_watching_before_joining_hears_of_the_join_and_the_turn() {
    let app = spawn_app().await;
    let sale = lobby_sale(&app, json!({"admit_per_second": 2})).await;
    let mut socket = connect(&app, &sale, Some(&buyer_token("early-watcher"))).await;
    let first = loop {
        let frame = next_frame(&mut socket).await;
        if frame["type"] == "lobby" {
            break frame;
        }
    };
    assert_eq!(first["status"], "not_listed", "{first}");
    assert_eq!(join_lobby(&app, &sale, "early-watcher").await.status(), 201);
    let joined = loop {
        let frame = next_frame(&mut socket).await;
        if frame["type"] == "lobby" {
            break frame;
        }
    };
    assert_eq!(joined["status"], "lobby", "{joined}");
    assert_eq!(me(&app, &sale, "early-watcher").await["status"], "lobby");

    start_in(&app, &sale, 0.2).await;
    let turn = loop {
        let frame = next_frame(&mut socket).await;
        if frame["type"] == "lobby" && frame["status"] != "queued" && frame["status"] != "lobby" {
            break frame;
        }
    };
    assert_eq!(turn["status"], "admitted", "{turn}");
    // Redis agrees: the buyer holds an admission and has left the lobby.
    let (admitted, waiting, _) = lobby_now(&app, &sale).await;
    assert!(admitted.contains_key("early-watcher") && waiting.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_sees_the_lobby_and_their_own_place_move_at_most_once_a_second() {
    let app = spawn_app().await;
    let sale = lobby_sale(&app, json!({"admit_per_second": 4})).await;
    let commitment = commitment(&app, &sale).await;
    let buyers: Vec<String> = (0..40).map(|i| format!("watch-{i:02}")).collect();
    join_all(&app, &sale, &buyers, 16).await;
    start_in(&app, &sale, 0.2).await;
    let order = checked_draw(&app, &sale, &commitment, &buyers).await;
    let buyer = order[9].clone();
    let mut socket = connect(&app, &sale, Some(&buyer_token(&buyer))).await;
    let mut anonymous = connect(&app, &sale, None).await;
    let mut positions = Vec::new();
    let admitted = loop {
        let frame = next_frame(&mut socket).await;
        if frame["type"] != "lobby" {
            continue;
        }
        match frame["status"].as_str().unwrap() {
            "queued" => positions.push((Instant::now(), frame["position"].as_i64().unwrap())),
            _ => break frame,
        }
    };
    assert_eq!(admitted["status"], "admitted", "{admitted}");
    assert!(admitted["admission_expires_at"].is_string());
    assert!(positions.len() >= 2, "{positions:?}");
    assert!(
        positions.windows(2).all(|w| w[1].1 < w[0].1),
        "{positions:?}"
    );
    assert!(positions[0].1 <= 10);
    for w in positions.windows(2) {
        assert!(
            w[1].0 - w[0].0 >= Duration::from_millis(800),
            "rate-limited"
        );
    }
    // Every watcher sees the lobby's figures.
    let figures = loop {
        let frame = next_frame(&mut anonymous).await;
        if frame["type"] == "lobby_figures" {
            break frame;
        }
    };
    assert!(figures["lobby_length"].as_i64().unwrap() <= 40);
    assert!(figures["admitted"].is_i64());
    assert_eq!(
        me(&app, &sale, &buyer).await["status"],
        "admitted",
        "the socket and lobby/me agree"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushall_mid_admission_loses_no_place() {
    let redis = RedisServer::start();
    let url = redis.url.clone();
    let app = Arc::new(spawn_app_with(|s| on_redis(s, &url)).await);
    let sale = lobby_sale(&app, json!({"admit_per_second": 20})).await;
    let commitment = commitment(&app, &sale).await;
    let buyers: Vec<String> = (0..200).map(|i| format!("flush-{i:03}")).collect();
    join_all(&app, &sale, &buyers, 16).await;
    start_in(&app, &sale, 0.2).await;
    let order = checked_draw(&app, &sale, &commitment, &buyers).await;
    admitted_at_least(&app, &sale, 20).await;
    let buyer = order[0].clone();
    let rid = crate::helpers::hold(&app, &sale, &buyer, 1).await;
    assert_eq!(app.confirm(&rid, &buyer).await.status(), 201);
    // What MongoDB has recorded by now must survive the flush.
    recorded(&app, &sale).await;
    let recorded: HashSet<String> = app
        .mongo
        .all_lobby_entries(&sale_id(&sale))
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.admitted_at.is_some())
        .map(|e| e.buyer)
        .collect();
    assert!(recorded.contains(&buyer), "the buyer's admission recorded");
    let mut conn = app.redis();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();

    // Every buyer asks where they stand; the first asks rebuild.
    let places: Vec<(String, Value)> = stream::iter(&buyers)
        .map(|b| {
            let (app, sale) = (app.clone(), sale.clone());
            async move { (b.clone(), me(&app, &sale, b).await) }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for (b, place) in &places {
        let status = place["status"].as_str().unwrap_or_default();
        assert!(
            ["queued", "admitted", "expired"].contains(&status),
            "{b}: {place}"
        );
        if recorded.contains(b) {
            assert_ne!(status, "queued", "{b} was let in before the flush");
        }
    }
    let (after, waiting, _) = lobby_now(&app, &sale).await;
    assert_in_draw_order(&order, &after, &waiting);
    // Nobody fell out: in Redis, let in or waiting at their place.
    let lost: Vec<&String> = buyers
        .iter()
        .filter(|b| !after.contains_key(*b) && !waiting.contains(b))
        .collect();
    assert!(lost.is_empty(), "{lost:?}");
    assert!(
        after[&buyer].starts_with('u'),
        "the admission used before stays used"
    );
    assert_eq!(sale_field(&app, &sale, "lobby_joined").await, 200);
    // The draw served after the rebuild is the one made at the start.
    let (_, _, again) = crate::lobbies::draw(&app, &sale).await;
    assert_eq!(again.len(), order.len());
    drop(redis);
}
