//! The lobby at work: thousands join, the draw is checked as a buyer would
//! check it, buyers are let in at the rate, and nothing is lost to a
//! flushed Redis. Every test checks Redis and MongoDB, not only answers.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use flashdrop::store::keys::Role;
use futures::{StreamExt, stream};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{
    helpers::{
        RedisServer, TestApp, admin_token, buyer_token, eventually, json, keys, on_redis,
        spawn_app, spawn_app_with,
    },
    live::{connect, next_frame},
};

fn at(secs: f64) -> String {
    (chrono::Utc::now() + chrono::Duration::milliseconds((secs * 1000.0) as i64)).to_rfc3339()
}

/// A sale whose lobby is open now and which starts in a while: joiners get
/// in first, then `start_in` moves the start close.
pub async fn lobby_sale(app: &TestApp, overrides: Value) -> String {
    let mut body = json!({"lobby_opens_at": at(0.0), "starts_at": at(600.0)});
    for (k, v) in overrides.as_object().unwrap() {
        body[k] = v.clone();
    }
    app.create_sale(body).await
}

pub async fn start_in(app: &TestApp, sale: &str, secs: f64) {
    let resp = app
        .http
        .patch(app.api(&format!("/admin/sales/{sale}")))
        .bearer_auth(admin_token())
        .json(&json!({"starts_at": at(secs)}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
}

pub async fn join_lobby(app: &TestApp, sale: &str, buyer: &str) -> reqwest::Response {
    app.http
        .post(app.url(&format!("/api/v1/sales/{sale}/lobby")))
        .bearer_auth(buyer_token(buyer))
        .send()
        .await
        .unwrap()
}

/// Everyone joins, `parallel` at a time; returns how long it took.
async fn join_all(app: &TestApp, sale: &str, buyers: &[String], parallel: usize) -> Duration {
    let began = Instant::now();
    let statuses: Vec<u16> = stream::iter(buyers)
        .map(|b| async move { join_lobby(app, sale, b).await.status().as_u16() })
        .buffer_unordered(parallel)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    began.elapsed()
}

async fn me(app: &TestApp, sale: &str, buyer: &str) -> Value {
    json(
        app.http
            .get(app.url(&format!("/api/v1/sales/{sale}/lobby/me")))
            .bearer_auth(buyer_token(buyer))
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn get(app: &TestApp, path: &str) -> Value {
    json(app.http.get(app.api(path)).send().await.unwrap()).await
}

pub fn hmac_hex(seed: &str, buyer: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(seed.as_bytes()).unwrap();
    mac.update(buyer.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The draw as a buyer checks it: the seed hashes to the commitment, the
/// list is sorted and complete, and each buyer's own value is in it.
/// Returns the buyers in draw order (a buyer knows only their own id; the
/// test knows them all).
/// The draw as anyone reads it: the seed, its SHA-256 and the values in
/// order.
pub async fn draw(app: &TestApp, sale: &str) -> (String, String, Vec<String>) {
    let draw = get(app, &format!("/sales/{sale}/lobby/draw")).await;
    let text = |v: &Value| v.as_str().expect("a string").to_owned();
    let order = draw["order"].as_array().expect("an order");
    (
        text(&draw["seed"]),
        text(&draw["seed_sha256"]),
        order.iter().map(text).collect(),
    )
}

async fn checked_draw(
    app: &TestApp,
    sale: &str,
    commitment: &str,
    buyers: &[String],
) -> Vec<String> {
    let (seed, sha256, order) = draw(app, sale).await;
    let seed = seed.as_str();
    assert_eq!(sha256, commitment);
    assert_eq!(hex::encode(Sha256::digest(seed.as_bytes())), commitment);
    assert_eq!(order.len(), buyers.len(), "complete");
    assert!(order.windows(2).all(|w| w[0] < w[1]), "sorted");
    let by_value: HashMap<String, &String> =
        buyers.iter().map(|b| (hmac_hex(seed, b), b)).collect();
    order
        .iter()
        .map(|v| (*by_value.get(v).expect("every value is a joiner's")).clone())
        .collect()
}

/// Who Redis has let in, and who waits, in order.
async fn redis_lobby(app: &TestApp, sale: &str) -> (HashMap<String, String>, Vec<String>) {
    let (admitted, waiting, _) = lobby_now(app, sale).await;
    (admitted, waiting)
}

/// Who Redis has let in, who waits (in order) and the sale's count of
/// admissions, read in one step (one script), so the three agree while
/// the keeper goes on letting buyers in.
async fn lobby_now(app: &TestApp, sale: &str) -> (HashMap<String, String>, Vec<String>, i64) {
    let k = keys(sale);
    let (admitted, members, counted): (HashMap<String, String>, Vec<String>, Option<i64>) =
        redis::Script::new(
            "return {redis.call('HGETALL', KEYS[1]), redis.call('ZRANGE', KEYS[2], 0, -1), \
             redis.call('HGET', KEYS[3], 'lobby_admitted')}",
        )
        .key(k.of(Role::Admitted))
        .key(k.of(Role::Lobby))
        .key(k.sale())
        .invoke_async(&mut app.redis())
        .await
        .unwrap();
    let waiting = members
        .iter()
        .map(|m| m.splitn(3, ':').nth(2).unwrap().to_owned())
        .collect();
    (admitted, waiting, counted.unwrap_or(0))
}

async fn sale_field(app: &TestApp, sale: &str, field: &str) -> i64 {
    app.redis_sale(sale)
        .await
        .get(field)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Redis lets buyers in strictly in draw order: those let in are a prefix
/// of the order, those waiting its suffix, nobody twice.
fn assert_in_draw_order(order: &[String], admitted: &HashMap<String, String>, waiting: &[String]) {
    let prefix: HashSet<&String> = order[..admitted.len()].iter().collect();
    assert!(
        admitted.keys().all(|b| prefix.contains(b)),
        "let in out of draw order"
    );
    assert_eq!(
        waiting,
        &order[order.len() - waiting.len()..],
        "waiting in draw order"
    );
    assert!(admitted.len() + waiting.len() <= order.len());
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_join_and_the_draw_owes_nothing_to_when_they_came() {
    let app = spawn_app().await;
    let sale = lobby_sale(&app, json!({"admit_per_second": 200})).await;
    let commitment = get(&app, &format!("/sales/{sale}/lobby")).await["seed_sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let buyers: Vec<String> = (0..5000).map(|i| format!("crowd-{i:04}")).collect();
    let took = join_all(&app, &sale, &buyers, 64).await;
    println!("5000 joins in {took:?}");
    let lobby = get(&app, &format!("/sales/{sale}/lobby")).await;
    assert_eq!(lobby["joined"], 5000);
    assert_eq!(lobby["lobby_length"], 5000);
    assert!(lobby.get("seed").is_none(), "secret before the start");
    assert_eq!(me(&app, &sale, "crowd-0042").await["status"], "lobby");
    let entries = app.mongo.all_lobby_entries(&keys_id(&sale)).await.unwrap();
    assert_eq!(entries.len(), 5000, "every place is in MongoDB");

    start_in(&app, &sale, 0.5).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let order = checked_draw(&app, &sale, &commitment, &buyers).await;
    let (admitted, waiting) = redis_lobby(&app, &sale).await;
    assert_in_draw_order(&order, &admitted, &waiting);

    // Fairness: the draw position owes nothing to the time of joining.
    let joined: HashMap<&str, f64> = entries
        .iter()
        .map(|e| (e.buyer.as_str(), e.joined_at.timestamp_millis() as f64))
        .collect();
    let x: Vec<f64> = order.iter().map(|b| joined[b.as_str()]).collect();
    let y: Vec<f64> = (0..order.len()).map(|i| i as f64).collect();
    let rho = spearman(&x, &y);
    println!("Spearman rho(join time, draw position) at 5000 = {rho:.4}");
    assert!(rho.abs() < 0.05, "rho {rho}");
    // The order of the ids themselves is no better a predictor.
    let by_id: Vec<f64> = order
        .iter()
        .map(|b| b[6..].parse::<f64>().unwrap())
        .collect();
    assert!(spearman(&by_id, &y).abs() < 0.05);
}

fn keys_id(sale: &str) -> flashdrop::ids::SaleId {
    flashdrop::ids::SaleId::parse(sale).unwrap()
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
    let commitment = get(&app, &format!("/sales/{sale}/lobby")).await["seed_sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let buyers: Vec<String> = (0..1000).map(|i| format!("rate-{i:04}")).collect();
    join_all(&app, &sale, &buyers, 32).await;
    // Not let in yet: reserving or joining the line is refused, atomically
    // in the scripts.
    start_in(&app, &sale, 0.3).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let order = checked_draw(&app, &sale, &commitment, &buyers).await;
    let last = order.last().unwrap();
    let refused = app.reserve(&sale, last, 1).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(json(refused).await["code"], "not_admitted");
    let line = crate::helpers::join(&app, &sale, last, 1).await;
    assert_eq!(line.status(), 403);
    assert_eq!(me(&app, &sale, last).await["status"], "queued");

    // The rate, over 10 s, from Redis' own count.
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
    let sale_id = keys_id(&sale);
    let recorded = eventually(Duration::from_secs(3), || async {
        let entries = app.mongo.all_lobby_entries(&sale_id).await.unwrap();
        let n = entries.iter().filter(|e| e.admitted_at.is_some()).count();
        let used: Vec<_> = entries.iter().filter(|e| e.used).collect();
        (n >= admitted.len() && used.len() == 1 && used[0].buyer == *first).then_some(entries)
    })
    .await
    .expect("admissions and the use recorded in MongoDB");
    // The keeper goes on letting buyers in meanwhile: whoever MongoDB has
    // as admitted is among the first `now_counted` of the draw, counted
    // after MongoDB was read (Redis admits before MongoDB records).
    let now_counted = sale_field(&app, &sale, "lobby_admitted").await;
    for e in recorded.iter().filter(|e| e.admitted_at.is_some()) {
        let index = order.iter().position(|b| *b == e.buyer).unwrap();
        assert!(
            index < now_counted as usize,
            "{} recorded out of turn",
            e.buyer
        );
    }
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
    let started = Instant::now() + Duration::from_millis(200);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let admitted = sale_field(&app, &sale, "lobby_admitted").await;
    let lapsed = sale_field(&app, &sale, "lobby_lapsed").await;
    let elapsed = started.elapsed().as_secs_f64();
    println!("{elapsed:.1} s: {admitted} let in, {lapsed} lapsed");
    // Each second's admissions lapse a second later, and each lapse lets
    // the next buyer in: what is let in is the rate plus the lapses.
    assert!(lapsed >= 2 * rate, "{lapsed} lapsed");
    let expected = rate as f64 * elapsed + lapsed as f64;
    assert!(
        (admitted as f64 - expected).abs() <= rate as f64 + 1.0,
        "{admitted} let in, expected about {expected:.0}"
    );
    // A lapsed buyer is told so, and cannot buy.
    let (in_redis, _) = redis_lobby(&app, &sale).await;
    let gone = in_redis
        .iter()
        .find(|(_, v)| v.starts_with('l'))
        .map(|(b, _)| b.clone())
        .expect("a lapsed admission");
    assert_eq!(me(&app, &sale, &gone).await["status"], "expired");
    let refused = app.reserve(&sale, &gone, 1).await;
    assert_eq!(refused.status(), 403);
    let sale_id = keys_id(&sale);
    eventually(Duration::from_secs(3), || async {
        let entries = app.mongo.all_lobby_entries(&sale_id).await.unwrap();
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
        let (admitted, _) = redis_lobby(&app, &sale).await;
        (admitted.len() >= 2).then(|| admitted.into_keys().take(2).collect::<Vec<_>>())
    })
    .await
    .expect("two let in");
    let (_, waiting) = redis_lobby(&app, &sale).await;
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
    // Nobody more is let in.
    let count = sale_field(&app, &sale, "lobby_admitted").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
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
        if frame["type"] == "lobby" && frame["status"] != "queued" {
            break frame;
        }
    };
    assert_eq!(turn["status"], "admitted", "{turn}");
    // Redis agrees: the buyer holds an admission and has left the lobby.
    let (admitted, waiting) = redis_lobby(&app, &sale).await;
    assert!(admitted.contains_key("early-watcher") && waiting.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_sees_the_lobby_and_their_own_place_move_at_most_once_a_second() {
    let app = spawn_app().await;
    let sale = lobby_sale(&app, json!({"admit_per_second": 4})).await;
    let commitment = get(&app, &format!("/sales/{sale}/lobby")).await["seed_sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let buyers: Vec<String> = (0..40).map(|i| format!("watch-{i:02}")).collect();
    join_all(&app, &sale, &buyers, 16).await;
    start_in(&app, &sale, 0.2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
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
    let commitment = get(&app, &format!("/sales/{sale}/lobby")).await["seed_sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let buyers: Vec<String> = (0..200).map(|i| format!("flush-{i:03}")).collect();
    join_all(&app, &sale, &buyers, 16).await;
    start_in(&app, &sale, 0.2).await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let order = checked_draw(&app, &sale, &commitment, &buyers).await;
    let buyer = order[0].clone();
    let rid = crate::helpers::hold(&app, &sale, &buyer, 1).await;
    assert_eq!(app.confirm(&rid, &buyer).await.status(), 201);
    let (before, _) = redis_lobby(&app, &sale).await;
    assert!(before.len() >= 20, "{} let in", before.len());
    // What MongoDB has recorded by now must survive the flush.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let recorded: HashSet<String> = app
        .mongo
        .all_lobby_entries(&keys_id(&sale))
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.admitted_at.is_some())
        .map(|e| e.buyer)
        .collect();
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
    let (after, waiting) = redis_lobby(&app, &sale).await;
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
    drop(redis);
}
