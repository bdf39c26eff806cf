//! The lobby: settings, and the commitment to the draw's seed.

use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{admin_token, json, spawn_app};

async fn lobby(app: &crate::helpers::TestApp, sale: &str) -> reqwest::Response {
    app.http
        .get(app.api(&format!("/sales/{sale}/lobby")))
        .send()
        .await
        .unwrap()
}

/// A sale whose lobby opens now and which starts in `secs`, one buyer let
/// in a second; with the seed's SHA-256 as published at the opening.
async fn open_lobby(app: &crate::helpers::TestApp, secs: i64) -> (String, String) {
    let now = chrono::Utc::now();
    let at = |secs: i64| (now + chrono::Duration::seconds(secs)).to_rfc3339();
    let sale = app
        .create_sale(json!({"lobby_opens_at": at(0), "starts_at": at(secs), "admit_per_second": 1}))
        .await;
    let commitment = json(lobby(app, &sale).await).await["seed_sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    (sale, commitment)
}

async fn patch(app: &crate::helpers::TestApp, sale: &str, body: Value) -> reqwest::Response {
    app.http
        .patch(app.api(&format!("/admin/sales/{sale}")))
        .bearer_auth(admin_token())
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_seed_is_committed_at_the_opening_and_revealed_at_the_start() {
    let app = spawn_app().await;
    let now = chrono::Utc::now();
    let at = |secs: i64| (now + chrono::Duration::seconds(secs)).to_rfc3339();
    let sale = app
        .create_sale(json!({
            "lobby_opens_at": at(2), "starts_at": at(4), "admit_per_second": 50,
        }))
        .await;

    // Before the opening: the settings, no commitment yet.
    let before = json(lobby(&app, &sale).await).await;
    assert_eq!(before["admit_per_second"], 50);
    assert_eq!(before["admission_seconds"], 120);
    assert!(before.get("seed_sha256").is_none() && before.get("seed").is_none());
    // A patch before the opening keeps the seed the sale was created with.
    assert_eq!(
        patch(&app, &sale, json!({"admit_per_second": 60}))
            .await
            .status(),
        200
    );

    tokio::time::sleep(Duration::from_millis(2200)).await;
    let open = json(lobby(&app, &sale).await).await;
    let commitment = open["seed_sha256"].as_str().unwrap().to_owned();
    assert_eq!(commitment.len(), 64);
    assert!(
        open.get("seed").is_none(),
        "the seed is secret until the start"
    );
    assert_eq!(open["admit_per_second"], 60);
    // Once open, the lobby's settings are fixed.
    let late = patch(&app, &sale, json!({"admit_per_second": 70})).await;
    assert_eq!(late.status(), 409);
    assert_eq!(json(late).await["code"], "invalid_change");

    tokio::time::sleep(Duration::from_millis(2200)).await;
    let started = json(lobby(&app, &sale).await).await;
    let seed = started["seed"].as_str().unwrap();
    assert_eq!(started["seed_sha256"], commitment.as_str());
    // What a buyer checks: the revealed seed hashes to the commitment.
    assert_eq!(hex::encode(Sha256::digest(seed.as_bytes())), commitment);
    assert!(seed.len() >= 32, "at least 128 bits");
}

#[tokio::test]
async fn lobby_settings_are_checked_and_a_sale_without_one_has_none() {
    let app = spawn_app().await;
    let plain = app.create_sale(json!({})).await;
    assert_eq!(lobby(&app, &plain).await.status(), 404);

    let now = chrono::Utc::now();
    let at = |secs: i64| (now + chrono::Duration::seconds(secs)).to_rfc3339();
    for (body, field) in [
        (
            json!({"lobby_opens_at": at(60), "starts_at": at(30)}),
            "lobby_opens_at",
        ),
        (
            json!({"lobby_opens_at": at(10), "starts_at": at(30), "admit_per_second": 0}),
            "admit_per_second",
        ),
        (
            json!({"lobby_opens_at": at(10), "starts_at": at(30), "admission_seconds": 7200}),
            "admission_seconds",
        ),
    ] {
        let resp = app
            .http
            .post(app.api("/admin/sales"))
            .bearer_auth(admin_token())
            .json(&crate::helpers::sale_body(body.clone()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let err = json(resp).await;
        assert!(err["message"].as_str().unwrap().contains(field), "{err}");
    }
}

async fn join_lobby(app: &crate::helpers::TestApp, sale: &str, buyer: &str) -> reqwest::Response {
    app.http
        .post(app.api(&format!("/sales/{sale}/lobby")))
        .bearer_auth(crate::helpers::buyer_token(buyer))
        .send()
        .await
        .unwrap()
}

async fn my_place(app: &crate::helpers::TestApp, sale: &str, buyer: &str) -> Value {
    json(
        app.http
            .get(app.api(&format!("/sales/{sale}/lobby/me")))
            .bearer_auth(crate::helpers::buyer_token(buyer))
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn buyers_join_once_from_the_opening_and_latecomers_queue() {
    let app = spawn_app().await;
    let now = chrono::Utc::now();
    let at = |secs: i64| (now + chrono::Duration::seconds(secs)).to_rfc3339();
    let sale = app
        .create_sale(json!({"lobby_opens_at": at(1), "starts_at": at(3), "admit_per_second": 1}))
        .await;
    let early = join_lobby(&app, &sale, "too-early").await;
    assert_eq!(early.status(), 409);
    assert_eq!(json(early).await["code"], "sale_not_active");
    assert_eq!(
        my_place(&app, &sale, "too-early").await["status"],
        "not_listed"
    );

    tokio::time::sleep(Duration::from_millis(1200)).await;
    // One buyer pressing join 20 times at once: one place.
    let answers =
        futures::future::join_all((0..20).map(|_| join_lobby(&app, &sale, "eager"))).await;
    let mut statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    statuses.sort_unstable();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 201),
        "{statuses:?}"
    );
    for buyer in ["a", "b", "c"] {
        assert_eq!(join_lobby(&app, &sale, buyer).await.status(), 201);
    }
    let me = my_place(&app, &sale, "eager").await;
    assert_eq!(me["status"], "lobby");
    let again = json(join_lobby(&app, &sale, "eager").await).await;
    assert_eq!(again["joined_at"], me["joined_at"]);
    assert_eq!(json(lobby(&app, &sale).await).await["joined"], 4);

    tokio::time::sleep(Duration::from_millis(2000)).await;
    // One a second: the four drawn are ahead, so the latecomer waits.
    let late = join_lobby(&app, &sale, "late").await;
    assert_eq!(late.status(), 201);
    let late = json(late).await;
    assert_eq!(late["status"], "queued", "{late}");
    assert!(late["position"].as_i64().unwrap() >= 4, "{late}");
    let eager = my_place(&app, &sale, "eager").await;
    assert!(
        eager["status"] == "queued" || eager["status"] == "admitted",
        "{eager}"
    );
    assert_eq!(json(lobby(&app, &sale).await).await["joined"], 5);
}

#[tokio::test]
async fn anyone_can_check_the_draw_and_their_own_place() {
    let app = spawn_app().await;
    let (sale, commitment) = open_lobby(&app, 4).await;
    let early = json(
        app.http
            .get(app.api(&format!("/sales/{sale}/lobby/draw")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(early["code"], "sale_not_active", "no draw before the start");

    let buyers: Vec<String> = (0..300).map(|i| format!("joiner-{i:03}")).collect();
    let joins = futures::future::join_all(buyers.iter().map(|b| join_lobby(&app, &sale, b))).await;
    assert!(joins.iter().all(|r| r.status() == 201));
    assert_eq!(
        my_place(&app, &sale, "joiner-000").await.get("position"),
        None
    );
    tokio::time::sleep(Duration::from_millis(4200)).await;
    assert_eq!(join_lobby(&app, &sale, "latecomer").await.status(), 201);

    let (seed, sha256, order) = crate::admission::draw(&app, &sale).await;
    let seed = seed.as_str();
    // The seed is the one committed to before anyone joined.
    assert_eq!(sha256, commitment);
    assert_eq!(hex::encode(Sha256::digest(seed.as_bytes())), commitment);
    // Complete (the latecomer is not in it) and sorted.
    assert_eq!(order.len(), buyers.len());
    assert!(order.windows(2).all(|w| w[0] < w[1]));
    // Each buyer finds their own value, and their place is where it
    // stands, less those let in since the start (one a second).
    let mut places = Vec::new();
    for buyer in ["joiner-000", "joiner-150", "joiner-299", "latecomer"] {
        let mine = crate::admission::hmac_hex(seed, buyer);
        let index = match buyer {
            "latecomer" => buyers.len(),
            _ => order.iter().position(|v| *v == mine).expect("in the draw"),
        };
        places.push((buyer, index as i64, my_place(&app, &sale, buyer).await));
    }
    let admitted = json(lobby(&app, &sale).await).await["admitted"]
        .as_i64()
        .unwrap();
    for (buyer, index, place) in places {
        if place["status"] == "admitted" {
            assert!(index < admitted, "{buyer} let in out of turn: {place}");
            continue;
        }
        assert_eq!(place["status"], "queued", "{buyer}: {place}");
        let position = place["position"].as_i64().unwrap();
        assert!(
            position <= index + 1 && position >= index + 1 - admitted,
            "{buyer} at {position}, drawn {index}, {admitted} let in"
        );
    }
}

/// The README's verification snippet, run as a buyer would run it against
/// a real draw: it prints the buyer's place, and refuses a seed that is not
/// the committed one.
#[tokio::test]
async fn the_readme_snippet_verifies_a_real_draw() {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("A buyer checks the draw like this")
        .expect("the snippet's section");
    let code = readme[start..]
        .split("```python\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a python block");
    assert!(code.lines().count() <= 10, "ten lines at most");
    let script = std::env::temp_dir().join(format!("verify-{}.py", std::process::id()));
    std::fs::write(&script, code).unwrap();

    let app = spawn_app().await;
    let (sale, commitment) = open_lobby(&app, 2).await;
    for i in 0..30 {
        assert_eq!(
            join_lobby(&app, &sale, &format!("py-{i}")).await.status(),
            201
        );
    }
    tokio::time::sleep(Duration::from_millis(2200)).await;
    // Not a blocking call: the server answering the script runs on this
    // test's runtime.
    let run = |commitment: String| {
        tokio::process::Command::new("python3")
            .arg(&script)
            .args([app.api(""), sale.clone(), "py-7".into(), commitment])
            .kill_on_drop(true)
            .output()
    };
    let ok = tokio::time::timeout(Duration::from_secs(30), run(commitment.clone()))
        .await
        .expect("the snippet finishes")
        .unwrap();
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{out} {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // The place it prints is the one the draw gives.
    let seed = json(lobby(&app, &sale).await).await["seed"]
        .as_str()
        .unwrap()
        .to_owned();
    let seed = flashdrop::lobby::draw::Seed::from_text(seed);
    let buyers: Vec<String> = (0..30).map(|i| format!("py-{i}")).collect();
    let order = seed.order(buyers.iter().map(String::as_str));
    let place = order.iter().position(|(_, b)| *b == "py-7").unwrap() + 1;
    assert_eq!(out.trim(), format!("place {place} of 30"));
    let forged = tokio::time::timeout(Duration::from_secs(30), run("0".repeat(64)))
        .await
        .expect("the snippet finishes")
        .unwrap();
    assert!(
        !forged.status.success(),
        "a seed that is not the committed one"
    );
    let _ = std::fs::remove_file(script);
}
