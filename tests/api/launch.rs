//! The start of a lobby sale at launch scale: the draw made once and served
//! from memory, one clock for every instance, nothing that reveals the
//! order before the start, joins answered from Redis and under the quota,
//! and every admission recorded in MongoDB even while it stalls.

use std::{
    collections::{HashMap, HashSet},
    io::Read,
    time::Duration,
};

use flashdrop::{
    config::{RateLimit, Secret},
    lobby::seal::SeedKey,
    store::keys::Role,
};
use futures::{StreamExt, stream};
use redis::AsyncCommands;
use serde_json::{Value, json};

use crate::{
    helpers::{
        MongoServer, SEED_KEY, TestApp, admin_token, buyer_token, eventually, free_port, json,
        keys, serve_command, servers, spawn_app_with, spawn_each, spawn_instances, test_settings,
        unique_db, wait_for_port,
    },
    lobbies::{
        admitted_at_least, at, commitment, draw, hmac_hex, join_all, join_lobby, lobby, lobby_now,
        lobby_sale, me, recorded, sale_field, sale_id, start_in,
    },
};

async fn get_draw(
    app: &TestApp,
    base: &str,
    sale: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = app
        .http
        .get(format!("{base}/api/v1/sales/{sale}/lobby/draw"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

/// The settings of a test that pauses its own MongoDB.
fn with_mongo(mongo: &MongoServer) -> flashdrop::config::Settings {
    let s = servers();
    test_settings(&s.redis_url, &mongo.uri)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_draw_is_made_once_and_served_from_memory_as_an_immutable_document() {
    let mongo = MongoServer::start();
    let app = spawn_instances(with_mongo(&mongo), 2).await;
    let sale = lobby_sale(&app, json!({"admit_per_second": 5})).await;
    let buyers: Vec<String> = (0..1200).map(|i| format!("frozen-{i:04}")).collect();
    join_all(&app, &sale, &buyers, 32).await;
    start_in(&app, &sale, 0.3).await;
    let (seed, _, order) = draw(&app, &sale).await;
    assert_eq!(order.len(), 1200);

    // Both instances serve the same document, with its validators.
    let (a, b) = (&app.instances[0].address, &app.instances[1].address);
    let mut tags = Vec::new();
    for base in [a, b] {
        // Each instance loads the stored draw once; until it has, it says
        // 503 with Retry-After.
        let resp = eventually(Duration::from_secs(10), || async {
            let resp = get_draw(&app, base, &sale, &[]).await;
            (resp.status() != 503).then_some(resp)
        })
        .await
        .expect("every instance serves the draw");
        assert_eq!(resp.status(), 200);
        let h = resp.headers();
        assert_eq!(h["cache-control"], "public, max-age=31536000, immutable");
        assert_eq!(h["vary"], "Accept-Encoding");
        assert!(h.get("content-encoding").is_none());
        tags.push(h["etag"].to_str().unwrap().to_owned());
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["seed"], seed.as_str());
        assert_eq!(body["order"].as_array().unwrap().len(), 1200);
    }
    assert_eq!(tags[0], tags[1], "one draw, the same everywhere");
    // Gzip where accepted: the same JSON, a representation of its own.
    let raw = reqwest::Client::builder().no_gzip().build().unwrap();
    let zipped = raw
        .get(format!("{a}/api/v1/sales/{sale}/lobby/draw"))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(zipped.headers()["content-encoding"], "gzip");
    let zipped_tag = zipped.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(zipped_tag, tags[0]);
    let bytes = zipped.bytes().await.unwrap();
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut unzipped)
        .unwrap();
    let identity = get_draw(&app, a, &sale, &[]).await.text().await.unwrap();
    assert_eq!(unzipped, identity);
    assert!(bytes.len() < identity.len() * 3 / 4, "compressed");
    // A conditional read of the draw one has costs no body.
    for tag in [&tags[0], &zipped_tag] {
        let again = get_draw(&app, b, &sale, &[("If-None-Match", tag)]).await;
        assert_eq!(again.status(), 304);
        assert!(again.bytes().await.unwrap().is_empty());
    }
    assert_eq!(
        get_draw(&app, a, &sale, &[("If-None-Match", "\"another\"")])
            .await
            .status(),
        200
    );
    // Made once: MongoDB holds one draw, whose chunks are all of one freeze.
    let (head, chunks) = app.mongo.draw(&sale_id(&sale)).await.unwrap().unwrap();
    assert_eq!(head.count, 1200);
    let client = mongodb::Client::with_uri_str(&mongo.uri).await.unwrap();
    let db = client.database(&app.mongo.database_name());
    let stored = db
        .collection::<bson::Document>("lobby_draw_chunks")
        .count_documents(bson::doc! {"sale_id": &sale})
        .await
        .unwrap();
    assert_eq!(stored, chunks.len() as u64, "no chunks of a second freeze");

    // In pages: the index binds each page by its hash, and the pages are
    // the whole draw in order.
    let paged = |path: String| {
        let (app, sale) = (&app, &sale);
        async move {
            app.http
                .get(format!(
                    "{a}/api/v1/sales/{sale}/lobby/draw{path}",
                    a = app.instances[0].address
                ))
                .send()
                .await
                .unwrap()
        }
    };
    let index = paged("/index".into()).await;
    assert_eq!(
        index.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let index: Value = index.json().await.unwrap();
    assert_eq!(
        (index["seed"].as_str(), index["count"].as_i64()),
        (Some(seed.as_str()), Some(1200))
    );
    let pages = index["pages"].as_array().unwrap();
    assert_eq!((pages.len(), index["page_size"].as_i64()), (2, Some(1000)));
    let mut joined: Vec<String> = Vec::new();
    for summary in pages {
        let n = summary["page"].as_i64().unwrap();
        let resp = paged(format!("/pages/{n}")).await;
        let tag = resp.headers()["etag"].to_str().unwrap().to_owned();
        let page: Value = resp.json().await.unwrap();
        let values: Vec<String> = page["order"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(page["first_place"].as_i64(), Some(joined.len() as i64 + 1));
        assert_eq!(
            summary["first"].as_str(),
            values.first().map(String::as_str)
        );
        assert_eq!(summary["last"].as_str(), values.last().map(String::as_str));
        let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(values.join("\n")));
        assert_eq!(summary["sha256"].as_str(), Some(hash.as_str()));
        joined.extend(values);
        let again = app
            .http
            .get(format!("{b}/api/v1/sales/{sale}/lobby/draw/pages/{n}"))
            .header("If-None-Match", &tag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304);
    }
    assert_eq!(joined, order);
    assert_eq!(paged("/pages/3".into()).await.status(), 404);
    assert_eq!(paged("/pages/0".into()).await.status(), 400);

    // A latecomer never enters it.
    assert_eq!(
        join_lobby(&app, &sale, "after-the-draw").await.status(),
        201
    );
    let later = get_draw(&app, a, &sale, &[]).await;
    assert_eq!(later.headers()["etag"].to_str().unwrap(), tags[0]);

    // From memory: with MongoDB stopped, the draw, the lobby and a place
    // are still answered, by both instances.
    mongo.pause();
    for base in [a, b] {
        // Each instance loads the stored draw once; until it has, it says
        // 503 with Retry-After.
        let resp = eventually(Duration::from_secs(10), || async {
            let resp = get_draw(&app, base, &sale, &[]).await;
            (resp.status() != 503).then_some(resp)
        })
        .await
        .expect("every instance serves the draw");
        assert_eq!(resp.status(), 200);
        let view: Value = app
            .get_json(format!("{base}/api/v1/sales/{sale}/lobby"))
            .await;
        assert_eq!(view["seed"], seed.as_str());
        for path in ["index", "pages/2"] {
            let resp = app
                .http
                .get(format!("{base}/api/v1/sales/{sale}/lobby/draw/{path}"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{path}");
        }
        let place = app
            .http
            .get(format!("{base}/api/v1/sales/{sale}/lobby/me"))
            .bearer_auth(buyer_token(&buyers[7]))
            .send()
            .await
            .unwrap();
        assert_eq!(place.status(), 200);
    }
    mongo.resume();
    let mine = hmac_hex(&seed, &buyers[7]);
    assert!(order.contains(&mine));
}

/// Two instances whose clocks are 80 seconds apart agree on every question
/// of the sale's window and its lobby: the Redis clock decides them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_with_skewed_clocks_agree_on_the_window_and_the_lobby() {
    let s = servers();
    let mut ahead = test_settings(&s.redis_url, &s.mongo_uri);
    ahead.fault_clock_skew_ms = 40_000;
    let mut behind = ahead.clone();
    behind.fault_clock_skew_ms = -40_000;
    let app = spawn_each(vec![ahead, behind]).await;
    let (a, b) = (
        app.instances[0].address.clone(),
        app.instances[1].address.clone(),
    );
    let on = |base: &str, path: &str| format!("{base}/api/v1{path}");
    let create = app
        .http
        .post(on(&a, "/admin/sales"))
        .bearer_auth(admin_token())
        .json(&crate::helpers::sale_body(json!({
            "lobby_opens_at": at(8.0), "starts_at": at(14.0), "admit_per_second": 2,
            "total": 20, "per_user_limit": 1,
        })))
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), 201);
    let sale = json(create).await["id"].as_str().unwrap().to_owned();
    let join_via = |base: String, buyer: &'static str| {
        let (app, sale) = (&app, sale.clone());
        async move {
            app.http
                .post(format!("{base}/api/v1/sales/{sale}/lobby"))
                .bearer_auth(buyer_token(buyer))
                .send()
                .await
                .unwrap()
        }
    };
    let view_via = |base: String| {
        let (app, sale) = (&app, sale.clone());
        async move {
            let resp = app
                .http
                .get(format!("{base}/api/v1/sales/{sale}/lobby"))
                .send()
                .await
                .unwrap();
            json(resp).await
        }
    };

    // Before the opening, on both: no commitment, no joins. (The one
    // ahead would think the lobby open, on its own clock.)
    for base in [&a, &b] {
        assert!(view_via(base.clone()).await.get("seed_sha256").is_none());
        let early = join_via(base.clone(), "too-early").await;
        assert_eq!(early.status(), 409, "via {base}");
    }
    eventually(Duration::from_secs(20), || async {
        view_via(b.clone())
            .await
            .get("seed_sha256")
            .is_some()
            .then_some(())
    })
    .await
    .expect("the lobby opens");
    assert!(view_via(a.clone()).await.get("seed_sha256").is_some());
    for (base, buyer) in [(&a, "a1"), (&a, "a2"), (&b, "b1"), (&b, "b2")] {
        let joined = join_via(base.clone(), buyer).await;
        assert_eq!(joined.status(), 201);
        assert_eq!(json(joined).await["status"], "lobby");
    }
    // Before the start, on both: no hold, upcoming, no draw; and the lobby
    // that opened cannot change (the one behind would think it closed).
    for base in [&a, &b] {
        let hold = app
            .http
            .post(on(base, &format!("/sales/{sale}/reservations")))
            .bearer_auth(buyer_token("a1"))
            .json(&json!({"quantity": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(hold.status(), 409);
        assert_eq!(json(hold).await["code"], "sale_not_active");
        let view = json(
            app.http
                .get(on(base, &format!("/sales/{sale}")))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(view["status"], "upcoming");
        let early = get_draw(&app, base, &sale, &[]).await;
        assert_eq!(early.status(), 409);
    }
    let patch = app
        .http
        .patch(on(&b, &format!("/admin/sales/{sale}")))
        .bearer_auth(admin_token())
        .json(&json!({"admit_per_second": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 409);

    // The start: one draw, the four early joiners in it, on both.
    let drawn = eventually(Duration::from_secs(30), || async {
        let resp = get_draw(&app, &b, &sale, &[]).await;
        match resp.status().as_u16() {
            200 => Some(json(resp).await),
            _ => None,
        }
    })
    .await
    .expect("the draw is made");
    assert_eq!(drawn["order"].as_array().unwrap().len(), 4);
    let from_a = json(get_draw(&app, &a, &sale, &[]).await).await;
    assert_eq!(from_a, drawn);
    // A join now is late, even through the instance that is behind.
    let late = json(join_via(b.clone(), "late-b").await).await;
    assert_eq!(late["status"], "queued", "{late}");
    assert!(late["position"].as_i64().unwrap() >= 1);
    let seed = drawn["seed"].as_str().unwrap();
    assert!(
        !drawn["order"]
            .as_array()
            .unwrap()
            .contains(&json!(hmac_hex(seed, "late-b")))
    );
    // The keepers of both let buyers in, on the Redis clock.
    admitted_at_least(&app, &sale, 2).await;
    // MongoDB recorded the joins at the Redis clock's time, not at either
    // instance's.
    let real_now = app.state.store.redis.now_ms().await.unwrap();
    for entry in app.mongo.all_lobby_entries(&sale_id(&sale)).await.unwrap() {
        let off = (entry.joined_at.timestamp_millis() - real_now).abs();
        assert!(off < 30_000, "{} joined {off} ms off", entry.buyer);
    }
}

/// Before the start nothing shows the seed or a buyer's draw value: no
/// route (buyer's or admin's), no log line, no metric, no Redis key and no
/// MongoDB document. After it, the same search finds the seed in the draw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_the_start_no_route_log_metric_or_store_reveals_the_seed_or_the_order() {
    let s = servers();
    let port = free_port();
    let db = unique_db();
    let log_path = std::env::temp_dir().join(format!("flashdrop-secret-{port}.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut server = serve_command(port, &db)
        .env("FLASHDROP_LOG", "debug")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    wait_for_port(port, "flashdrop");
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{base}/admin/sales"))
        .bearer_auth(admin_token())
        .json(&crate::helpers::sale_body(
            json!({"lobby_opens_at": at(0.0), "starts_at": at(600.0)}),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let sale = json(created).await["id"].as_str().unwrap().to_owned();
    let buyers: Vec<String> = (0..50).map(|i| format!("secret-{i:02}")).collect();
    for b in &buyers {
        let joined = http
            .post(format!("{base}/sales/{sale}/lobby"))
            .bearer_auth(buyer_token(b))
            .send()
            .await
            .unwrap();
        assert_eq!(joined.status(), 201);
    }

    // What must not show: the seed, and every buyer's value.
    let mongo = flashdrop::store::Mongo::connect(&s.mongo_uri, &db)
        .await
        .unwrap();
    let client = mongodb::Client::with_uri_str(&s.mongo_uri).await.unwrap();
    let database = client.database(&db);
    let sale_doc = database
        .collection::<bson::Document>("sales")
        .find_one(bson::doc! {"_id": &sale})
        .await
        .unwrap()
        .unwrap();
    let sealed = sale_doc
        .get_document("lobby")
        .unwrap()
        .get_str("seed_sealed")
        .unwrap();
    let seed = SeedKey::new(&Secret::new(SEED_KEY))
        .open(&sale_id(&sale), sealed)
        .unwrap();
    let secrets: Vec<String> = std::iter::once(seed.text().to_owned())
        .chain(buyers.iter().map(|b| hmac_hex(seed.text(), b)))
        .collect();
    let reveals = |what: &str, text: &str| {
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{what} reveals {}…",
                &secret[..12]
            );
        }
    };

    // Every route a buyer, a watcher or an admin can read.
    let admin = admin_token();
    let mut reads = vec![
        (format!("{base}/sales"), None),
        (format!("{base}/sales/{sale}"), None),
        (format!("{base}/sales/{sale}/lobby"), None),
        (format!("{base}/sales/{sale}/lobby/draw"), None),
        (format!("{base}/admin/sales"), Some(admin.clone())),
        (
            format!("{base}/admin/sales/{sale}/summary"),
            Some(admin.clone()),
        ),
        (
            format!("{base}/admin/sales/{sale}/orders"),
            Some(admin.clone()),
        ),
        (format!("http://127.0.0.1:{port}/metrics"), None),
        (format!("http://127.0.0.1:{port}/openapi.json"), None),
    ];
    for b in &buyers {
        reads.push((
            format!("{base}/sales/{sale}/lobby/me"),
            Some(buyer_token(b)),
        ));
    }
    for (url, token) in &reads {
        let mut req = http.get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        assert!(resp.status().as_u16() < 500, "{url}");
        reveals(url, &resp.text().await.unwrap());
    }
    // The live feed's first frames.
    let ws = format!(
        "ws://127.0.0.1:{port}/api/v1/sales/{sale}/live?access_token={}",
        buyer_token(&buyers[0])
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(ws).await.unwrap();
    for _ in 0..3 {
        let frame = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        reveals("a live frame", &frame.to_string());
    }
    // Every Redis key of the sale, whatever its type.
    let k = keys(&sale);
    let mut conn = flashdrop::store::Conn::open(
        &s.redis_url
            .split(',')
            .map(str::to_owned)
            .collect::<Vec<_>>(),
        s.redis_url.contains(','),
    )
    .await
    .unwrap();
    let mut roles: Vec<String> = k.live_state();
    roles.extend([k.events(), k.of(Role::Lobbylog), k.restore()]);
    let mut dumped = 0;
    for key in roles {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let text = match kind.as_str() {
            "hash" => format!(
                "{:?}",
                conn.hgetall::<_, HashMap<String, String>>(&key)
                    .await
                    .unwrap()
            ),
            "zset" => format!(
                "{:?}",
                conn.zrange_withscores::<_, Vec<(String, f64)>>(&key, 0, -1)
                    .await
                    .unwrap()
            ),
            "set" => format!("{:?}", conn.smembers::<_, Vec<String>>(&key).await.unwrap()),
            "string" => format!("{:?}", conn.get::<_, Option<String>>(&key).await.unwrap()),
            "stream" => format!(
                "{:?}",
                redis::cmd("XRANGE")
                    .arg(&key)
                    .arg("-")
                    .arg("+")
                    .query_async::<redis::Value>(&mut conn)
                    .await
                    .unwrap()
            ),
            "none" => continue,
            other => panic!("{key} is a {other}"),
        };
        dumped += 1;
        reveals(&key, &text);
    }
    assert!(dumped >= 2, "the sale and its joiners are in Redis");
    // Every MongoDB document of the database.
    for name in database.list_collection_names().await.unwrap() {
        let docs: Vec<bson::Document> = database
            .collection::<bson::Document>(&name)
            .find(bson::doc! {})
            .await
            .unwrap()
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        reveals(&name, &format!("{docs:?}"));
    }
    assert!(
        mongo.draw(&sale_id(&sale)).await.unwrap().is_none(),
        "no draw yet"
    );
    // Every line the server logged, at debug level.
    let logged = std::fs::read_to_string(&log_path).unwrap();
    assert!(logged.contains("sale created"), "the log was captured");
    reveals("the log", &logged);

    // The same search finds the seed once the draw is made.
    let moved = http
        .patch(format!("{base}/admin/sales/{sale}"))
        .bearer_auth(&admin)
        .json(&json!({"starts_at": at(0.3)}))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 200);
    let body = eventually(Duration::from_secs(20), || async {
        let resp = http
            .get(format!("{base}/sales/{sale}/lobby/draw"))
            .send()
            .await
            .unwrap();
        (resp.status() == 200).then_some(())?;
        Some(resp.text().await.unwrap())
    })
    .await
    .expect("the draw is made at the start");
    assert!(body.contains(seed.text()) && body.contains(&secrets[1]));
    server.kill().await.unwrap();
    let _ = std::fs::remove_file(log_path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_join_is_answered_from_redis_alone() {
    let mongo = MongoServer::start();
    let app = spawn_app_with(|s| {
        s.mongodb_uri = Secret::new(mongo.uri.clone());
    })
    .await;
    let sale = lobby_sale(&app, json!({})).await;
    let first = join_lobby(&app, &sale, "steady").await;
    assert_eq!(first.status(), 201);
    let first = json(first).await;
    mongo.pause();
    // MongoDB stopped: a repeat and the place still answer, from Redis.
    let again = tokio::time::timeout(Duration::from_secs(1), join_lobby(&app, &sale, "steady"))
        .await
        .expect("a repeat join needs no MongoDB");
    assert_eq!(again.status(), 200);
    assert_eq!(json(again).await["joined_at"], first["joined_at"]);
    assert_eq!(me(&app, &sale, "steady").await["status"], "lobby");
    assert_eq!(lobby(&app, &sale).await["joined"], 1);
    // A first join must reach MongoDB first: 503, and no place in Redis.
    let new = join_lobby(&app, &sale, "newcomer").await;
    assert_eq!(new.status(), 503);
    assert_eq!(me(&app, &sale, "newcomer").await["status"], "not_listed");
    mongo.resume();
    assert_eq!(join_lobby(&app, &sale, "newcomer").await.status(), 201);
}

#[tokio::test]
async fn joins_spend_the_buyers_write_quota() {
    let app = spawn_app_with(|s| {
        s.rate_limit_buyer = "1/s,burst=2".parse::<RateLimit>().unwrap();
    })
    .await;
    let sale = lobby_sale(&app, json!({})).await;
    let answers: Vec<u16> = stream::iter(0..3)
        .then(|_| async { join_lobby(&app, &sale, "hasty").await.status().as_u16() })
        .collect()
        .await;
    assert_eq!(answers, [201, 200, 429]);
    let limited = join_lobby(&app, &sale, "hasty").await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    // The budget is the buyer's: another joins at once.
    assert_eq!(join_lobby(&app, &sale, "patient").await.status(), 201);
}

/// Admissions, lapses and uses made while MongoDB does not answer are
/// recorded once it does: MongoDB's admitted are exactly the head of the
/// draw, each as Redis has it, and every order is an admitted buyer's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admission_is_recorded_though_mongodb_stalls_during_admission() {
    let mongo = MongoServer::start();
    let app = spawn_app_with(|s| {
        s.mongodb_uri = Secret::new(mongo.uri.clone());
    })
    .await;
    let sale = lobby_sale(
        &app,
        json!({"admit_per_second": 100, "admission_seconds": 1, "total": 500, "per_user_limit": 1}),
    )
    .await;
    let buyers: Vec<String> = (0..600).map(|i| format!("stall-{i:03}")).collect();
    join_all(&app, &sale, &buyers, 32).await;
    let commitment = commitment(&app, &sale).await;
    start_in(&app, &sale, 0.2).await;
    let order = crate::lobbies::checked_draw(&app, &sale, &commitment, &buyers).await;
    let index: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, b)| (b.as_str(), i))
        .collect();

    // Buyers at an even place in the draw take a hold when let in; the
    // others let their turn lapse. MongoDB stalls in the middle of it.
    let holds = std::sync::Mutex::new(HashMap::<String, String>::new());
    let buy_when_let_in = || async {
        let (admitted, _, _) = lobby_now(&app, &sale).await;
        let fresh: Vec<String> = admitted
            .iter()
            .filter(|(b, v)| v.starts_with('d') && index[b.as_str()].is_multiple_of(2))
            .map(|(b, _)| b.clone())
            .filter(|b| !holds.lock().unwrap().contains_key(b))
            .collect();
        stream::iter(fresh)
            .for_each_concurrent(16, |b| async {
                let resp = app.reserve(&sale, &b, 1).await;
                if resp.status() == 201 {
                    let rid = crate::helpers::rid_of(resp).await;
                    holds.lock().unwrap().insert(b, rid);
                }
            })
            .await;
    };
    admitted_at_least(&app, &sale, 50).await;
    buy_when_let_in().await;
    mongo.pause();
    let paused_at = sale_field(&app, &sale, "lobby_admitted").await;
    eventually(Duration::from_secs(20), || async {
        buy_when_let_in().await;
        let (admitted, lapsed) = (
            sale_field(&app, &sale, "lobby_admitted").await,
            sale_field(&app, &sale, "lobby_lapsed").await,
        );
        (admitted >= paused_at + 200 && lapsed >= 50).then_some(())
    })
    .await
    .expect("admissions and lapses go on without MongoDB");
    mongo.resume();
    // Let the rest in and lapse, then confirm every hold.
    admitted_at_least(&app, &sale, 600).await;
    buy_when_let_in().await;
    let holds = holds.into_inner().unwrap();
    assert!(holds.len() > 200, "{} holds", holds.len());
    stream::iter(&holds)
        .for_each_concurrent(16, |(b, rid)| async {
            assert_eq!(app.confirm(rid, b).await.status(), 201);
        })
        .await;
    eventually(Duration::from_secs(15), || async {
        (sale_field(&app, &sale, "lobby_lapsed").await + holds.len() as i64 >= 600).then_some(())
    })
    .await
    .expect("every unused admission lapsed");
    recorded(&app, &sale).await;

    // MongoDB has what Redis has, the head of the draw, every order's
    // buyer admitted: the audit's lobby lines, and the same by hand.
    for check in crate::helpers::audit(&app, &sale).await {
        assert!(check.ok, "{check}");
    }
    let entries = app.mongo.all_lobby_entries(&sale_id(&sale)).await.unwrap();
    let admitted: HashSet<&str> = entries
        .iter()
        .filter(|e| e.admitted_at.is_some())
        .map(|e| e.buyer.as_str())
        .collect();
    assert_eq!(admitted.len(), 600, "every admission recorded");
    let used: HashSet<&str> = entries
        .iter()
        .filter(|e| e.used)
        .map(|e| e.buyer.as_str())
        .collect();
    let bought: HashSet<&str> = holds.keys().map(String::as_str).collect();
    assert_eq!(used, bought, "every use recorded, and only uses");
    let lapsed = entries.iter().filter(|e| e.lapsed).count();
    assert_eq!(lapsed, 600 - holds.len(), "every lapse recorded");
    for order in app.orders(&sale).await {
        assert!(used.contains(order.user_id.as_str()));
    }
    app.check_invariants(&sale).await;
}
