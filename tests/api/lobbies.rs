//! What the lobby suites share: lobby sales, joins, places, the draw as a
//! buyer reads and checks it, and Redis' own view of the lobby. Every wait
//! here waits for a condition the server reports, never for the clock.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use flashdrop::store::keys::Role;
use futures::{StreamExt, stream};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{TestApp, admin_token, buyer_token, eventually, json, keys};

pub fn at(secs: f64) -> String {
    (chrono::Utc::now() + chrono::Duration::milliseconds((secs * 1000.0) as i64)).to_rfc3339()
}

/// A sale whose lobby is open now and which starts in ten minutes:
/// joiners get in first, then [`start_in`] moves the start close.
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
        .post(app.api(&format!("/sales/{sale}/lobby")))
        .bearer_auth(buyer_token(buyer))
        .send()
        .await
        .unwrap()
}

/// Everyone joins, `parallel` at a time; each gets 201.
pub async fn join_all(app: &TestApp, sale: &str, buyers: &[String], parallel: usize) {
    let statuses: Vec<u16> = stream::iter(buyers)
        .map(|b| async move { join_lobby(app, sale, b).await.status().as_u16() })
        .buffer_unordered(parallel)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
}

/// The buyer's `GET .../lobby/me`, as the buyer page asks it: a 503 (an
/// instance still loading the stored draw) is asked again after its
/// Retry-After.
pub async fn me(app: &TestApp, sale: &str, buyer: &str) -> Value {
    eventually(Duration::from_secs(10), || async {
        let resp = app
            .http
            .get(app.api(&format!("/sales/{sale}/lobby/me")))
            .bearer_auth(buyer_token(buyer))
            .send()
            .await
            .unwrap();
        match resp.status().as_u16() {
            503 => None,
            _ => Some(json(resp).await),
        }
    })
    .await
    .expect("an answer other than 503 within 10 s")
}

/// `GET .../lobby`, as anyone reads it.
pub async fn lobby(app: &TestApp, sale: &str) -> Value {
    let resp = app
        .http
        .get(app.api(&format!("/sales/{sale}/lobby")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    json(resp).await
}

/// The seed's SHA-256 as published from the opening.
pub async fn commitment(app: &TestApp, sale: &str) -> String {
    lobby(app, sale).await["seed_sha256"]
        .as_str()
        .expect("a commitment once the lobby is open")
        .to_owned()
}

pub fn hmac_hex(seed: &str, buyer: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(seed.as_bytes()).unwrap();
    mac.update(buyer.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The draw as anyone reads it (the seed, its SHA-256, the values in
/// order), once it is made: until then the server answers 409 before the
/// start and 503 while it makes it. Made means every instance serves it:
/// an instance that found it not yet made answers 503 for a moment after.
pub async fn draw(app: &TestApp, sale: &str) -> (String, String, Vec<String>) {
    let body = eventually(Duration::from_secs(20), || async {
        let mut body = None;
        for _ in 0..app.instances.len() {
            let resp = app
                .http
                .get(app.api(&format!("/sales/{sale}/lobby/draw")))
                .send()
                .await
                .unwrap();
            match resp.status().as_u16() {
                200 => body = Some(json(resp).await),
                409 | 503 => return None,
                other => panic!("draw answered {other}: {}", resp.text().await.unwrap()),
            }
        }
        body
    })
    .await
    .expect("the draw is made after the start");
    let text = |v: &Value| v.as_str().expect("a string").to_owned();
    (
        text(&body["seed"]),
        text(&body["seed_sha256"]),
        body["order"]
            .as_array()
            .expect("an order")
            .iter()
            .map(text)
            .collect(),
    )
}

/// The draw as a buyer checks it: the seed hashes to the commitment, the
/// list is sorted and complete, and each buyer's own value is in it.
/// Returns the buyers in draw order (a buyer knows only their own id; the
/// test knows them all).
pub async fn checked_draw(
    app: &TestApp,
    sale: &str,
    commitment: &str,
    buyers: &[String],
) -> Vec<String> {
    let (seed, sha256, order) = draw(app, sale).await;
    assert_eq!(sha256, commitment);
    assert_eq!(hex::encode(Sha256::digest(seed.as_bytes())), commitment);
    assert_eq!(order.len(), buyers.len(), "complete");
    assert!(order.windows(2).all(|w| w[0] < w[1]), "sorted");
    let by_value: HashMap<String, &String> =
        buyers.iter().map(|b| (hmac_hex(&seed, b), b)).collect();
    order
        .iter()
        .map(|v| (*by_value.get(v).expect("every value is a joiner's")).clone())
        .collect()
}

/// Who Redis has let in, who waits (in order) and the sale's count of
/// admissions, read in one step (one script), so the three agree while
/// the keeper goes on letting buyers in.
pub async fn lobby_now(app: &TestApp, sale: &str) -> (HashMap<String, String>, Vec<String>, i64) {
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

pub async fn sale_field(app: &TestApp, sale: &str, field: &str) -> i64 {
    app.redis_sale(sale)
        .await
        .get(field)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Redis lets buyers in strictly in draw order: those let in are a prefix
/// of the order, those waiting its suffix, nobody twice.
pub fn assert_in_draw_order(
    order: &[String],
    admitted: &HashMap<String, String>,
    waiting: &[String],
) {
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

/// Waits until Redis has let in at least `n` buyers.
pub async fn admitted_at_least(app: &TestApp, sale: &str, n: i64) {
    eventually(Duration::from_secs(30), || async {
        (sale_field(app, sale, "lobby_admitted").await >= n).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("{n} let in"));
}

pub fn sale_id(sale: &str) -> flashdrop::ids::SaleId {
    flashdrop::ids::SaleId::parse(sale).unwrap()
}

/// Waits until every admission, lapse and use is recorded in MongoDB.
pub async fn recorded(app: &TestApp, sale: &str) {
    let log = keys(sale).of(Role::Lobbylog);
    eventually(Duration::from_secs(30), || async {
        let left: usize = redis::cmd("XLEN")
            .arg(&log)
            .query_async(&mut app.redis())
            .await
            .unwrap();
        (left == 0).then_some(())
    })
    .await
    .expect("the lobby's log recorded in MongoDB");
}
