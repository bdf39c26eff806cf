//! The lobby: settings, joining, and the commitment to the draw's seed.

use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{
    helpers::{admin_token, eventually, json, spawn_app},
    lobbies::{at, draw, hmac_hex, join_lobby, lobby, me},
};

async fn lobby_resp(app: &crate::helpers::TestApp, sale: &str) -> reqwest::Response {
    app.http
        .get(app.api(&format!("/sales/{sale}/lobby")))
        .send()
        .await
        .unwrap()
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

/// Waits until the lobby view has `field` (the commitment at the opening,
/// the seed once the draw is made).
async fn until_shown(app: &crate::helpers::TestApp, sale: &str, field: &str) -> Value {
    eventually(Duration::from_secs(20), || async {
        let view = lobby(app, sale).await;
        view.get(field).is_some().then_some(view)
    })
    .await
    .unwrap_or_else(|| panic!("{field} shown"))
}

#[tokio::test]
async fn the_seed_is_committed_at_the_opening_and_revealed_at_the_start() {
    let app = spawn_app().await;
    let sale = app
        .create_sale(json!({
            "lobby_opens_at": at(2.0), "starts_at": at(4.0), "admit_per_second": 50,
        }))
        .await;

    // Before the opening: the settings, no commitment yet.
    let before = lobby(&app, &sale).await;
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

    let open = until_shown(&app, &sale, "seed_sha256").await;
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

    let started = until_shown(&app, &sale, "seed").await;
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
    assert_eq!(lobby_resp(&app, &plain).await.status(), 404);

    for (body, field) in [
        (
            json!({"lobby_opens_at": at(60.0), "starts_at": at(30.0)}),
            "lobby_opens_at",
        ),
        (
            json!({"lobby_opens_at": at(10.0), "starts_at": at(30.0), "admit_per_second": 0}),
            "admit_per_second",
        ),
        (
            json!({"lobby_opens_at": at(10.0), "starts_at": at(30.0), "admission_seconds": 7200}),
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

#[tokio::test]
async fn a_lobby_sale_needs_a_seed_key_on_the_server() {
    let app = crate::helpers::spawn_app_with(|s| s.seed_key = None).await;
    let resp = app
        .http
        .post(app.api("/admin/sales"))
        .bearer_auth(admin_token())
        .json(&crate::helpers::sale_body(
            json!({"lobby_opens_at": at(10.0), "starts_at": at(30.0)}),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    let err = json(resp).await;
    assert_eq!(err["code"], "not_configured");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("FLASHDROP_SEED_KEY"),
        "{err}"
    );
    // Sales without a lobby need no key.
    app.create_sale(json!({})).await;
}

#[tokio::test]
async fn buyers_join_once_from_the_opening_and_latecomers_queue() {
    let app = spawn_app().await;
    let sale = app
        .create_sale(
            json!({"lobby_opens_at": at(1.0), "starts_at": at(3.0), "admit_per_second": 1}),
        )
        .await;
    let early = join_lobby(&app, &sale, "too-early").await;
    assert_eq!(early.status(), 409);
    assert_eq!(json(early).await["code"], "sale_not_active");
    assert_eq!(me(&app, &sale, "too-early").await["status"], "not_listed");

    // The lobby opens (on the server's clock).
    eventually(Duration::from_secs(10), || async {
        (join_lobby(&app, &sale, "first").await.status() == 201).then_some(())
    })
    .await
    .expect("the lobby opens");
    // One buyer pressing join 20 times at once: one place.
    let answers =
        futures::future::join_all((0..20).map(|_| join_lobby(&app, &sale, "eager"))).await;
    let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
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
    let eager = me(&app, &sale, "eager").await;
    assert_eq!(eager["status"], "lobby");
    assert!(eager.get("position").is_none(), "no place before the draw");
    let again = json(join_lobby(&app, &sale, "eager").await).await;
    assert_eq!(again["joined_at"], eager["joined_at"]);
    assert_eq!(lobby(&app, &sale).await["joined"], 5);

    // The draw is made at the start: the five are in it, in some order.
    let (_, _, order) = draw(&app, &sale).await;
    assert_eq!(order.len(), 5);
    // A latecomer queues behind all five, whatever their turns.
    let before = lobby(&app, &sale).await["admitted"].as_i64().unwrap();
    let late = join_lobby(&app, &sale, "late").await;
    let after = lobby(&app, &sale).await["admitted"].as_i64().unwrap();
    assert_eq!(late.status(), 201);
    let late = json(late).await;
    assert_eq!(late["status"], "queued", "{late}");
    let position = late["position"].as_i64().unwrap();
    assert!(
        (5 - after + 1..=5 - before + 1).contains(&position),
        "{late}, {before}..{after} let in"
    );
    let eager = me(&app, &sale, "eager").await;
    assert!(
        eager["status"] == "queued" || eager["status"] == "admitted",
        "{eager}"
    );
    assert_eq!(lobby(&app, &sale).await["joined"], 6);
    let (_, _, again) = draw(&app, &sale).await;
    assert_eq!(again, order, "the draw never changes after the reveal");
}

#[tokio::test]
async fn anyone_can_check_the_draw_and_their_own_place() {
    let app = spawn_app().await;
    let sale = app
        .create_sale(
            json!({"lobby_opens_at": at(0.0), "starts_at": at(4.0), "admit_per_second": 1}),
        )
        .await;
    let commitment = crate::lobbies::commitment(&app, &sale).await;
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
    crate::lobbies::join_all(&app, &sale, &buyers, 32).await;
    assert_eq!(me(&app, &sale, "joiner-000").await.get("position"), None);

    let (seed, sha256, order) = draw(&app, &sale).await;
    assert_eq!(join_lobby(&app, &sale, "latecomer").await.status(), 201);
    let seed = seed.as_str();
    // The seed is the one committed to before anyone joined.
    assert_eq!(sha256, commitment);
    assert_eq!(hex::encode(Sha256::digest(seed.as_bytes())), commitment);
    // Complete (the latecomer is not in it) and sorted.
    assert_eq!(order.len(), buyers.len());
    assert!(order.windows(2).all(|w| w[0] < w[1]));
    // Each buyer finds their own value, and their place is where it
    // stands, less those let in since the draw (one a second).
    for buyer in ["joiner-000", "joiner-150", "joiner-299", "latecomer"] {
        let before = lobby(&app, &sale).await["admitted"].as_i64().unwrap();
        let place = me(&app, &sale, buyer).await;
        let after = lobby(&app, &sale).await["admitted"].as_i64().unwrap();
        let index = match buyer {
            "latecomer" => buyers.len() as i64,
            _ => order
                .iter()
                .position(|v| *v == hmac_hex(seed, buyer))
                .expect("in the draw") as i64,
        };
        if place["status"] == "admitted" {
            assert!(index < after, "{buyer} let in out of turn: {place}");
            continue;
        }
        assert_eq!(place["status"], "queued", "{buyer}: {place}");
        let position = place["position"].as_i64().unwrap();
        assert!(
            (index + 1 - after..=index + 1 - before).contains(&position),
            "{buyer} at {position}, drawn {index}, {before}..{after} let in"
        );
    }
}

/// The README's verification snippet, run as a buyer would run it against
/// a real draw: it prints the buyer's place, and refuses a seed that is not
/// the committed one with its own message.
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
    let sale = app
        .create_sale(
            json!({"lobby_opens_at": at(0.0), "starts_at": at(2.0), "admit_per_second": 1}),
        )
        .await;
    let commitment = crate::lobbies::commitment(&app, &sale).await;
    for i in 0..30 {
        assert_eq!(
            join_lobby(&app, &sale, &format!("py-{i}")).await.status(),
            201
        );
    }
    let (seed, _, _) = draw(&app, &sale).await;
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
    let seed = flashdrop::lobby::draw::Seed::from_text(seed);
    let buyers: Vec<String> = (0..30).map(|i| format!("py-{i}")).collect();
    let order = seed.order(buyers.iter().map(String::as_str));
    let place = order.iter().position(|(_, b)| *b == "py-7").unwrap() + 1;
    assert_eq!(out.trim(), format!("place {place} of 30"));
    // A forged commitment: refused for that reason, not any other.
    let forged = tokio::time::timeout(Duration::from_secs(30), run("0".repeat(64)))
        .await
        .expect("the snippet finishes")
        .unwrap();
    let err = String::from_utf8_lossy(&forged.stderr);
    assert!(!forged.status.success());
    assert!(
        err.contains("AssertionError: not the committed seed"),
        "refused for another reason: {err}"
    );
    let _ = std::fs::remove_file(script);
}
