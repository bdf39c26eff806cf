//! The live feed with real WebSocket clients.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async, tungstenite::Message};

use flashdrop::{
    ids::{ReservationId, SaleId},
    store::scripts::{ReserveBatchReply, ReserveItem, ReserveReply},
};

use crate::helpers::{
    RedisServer, TestApp, buyer_token, eventually, hold, join, on_redis, spawn_app, spawn_app_with,
    waitlist_me,
};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub fn ws_url(app: &TestApp, sale: &str, token: Option<&str>) -> String {
    let base = app.address.replace("http://", "ws://");
    match token {
        Some(t) => format!("{base}/api/v1/sales/{sale}/live?access_token={t}"),
        None => format!("{base}/api/v1/sales/{sale}/live"),
    }
}

pub async fn connect(app: &TestApp, sale: &str, token: Option<&str>) -> Socket {
    connect_async(ws_url(app, sale, token)).await.unwrap().0
}

/// The next JSON text frame, skipping pings.
pub async fn next_frame(socket: &mut Socket) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a frame within 5 s")
            .expect("socket open")
            .unwrap();
        if let Message::Text(text) = msg {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// Frames until one of `kind` arrives.
async fn next_of(socket: &mut Socket, kind: &str) -> Value {
    loop {
        let frame = next_frame(socket).await;
        if frame["type"] == kind {
            return frame;
        }
    }
}

#[tokio::test]
async fn snapshot_then_one_stock_frame_per_change_in_seq_order() {
    let app = spawn_app().await;
    let sale = app
        .create_sale(json!({"total": 5, "hold_seconds": 1}))
        .await;
    let mut socket = connect(&app, &sale, None).await;
    let snapshot = next_frame(&mut socket).await;
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["sale"]["available"], 5);
    let mut seq = snapshot["seq"].as_i64().unwrap();

    let mut expect = async |available: i64, held: i64, sold: i64| {
        let frame = next_frame(&mut socket).await;
        assert_eq!(frame["type"], "stock");
        seq += 1;
        assert_eq!(frame["seq"], seq, "seq rises by one per change");
        assert_eq!(
            (
                frame["available"].as_i64(),
                frame["held"].as_i64(),
                frame["sold"].as_i64()
            ),
            (Some(available), Some(held), Some(sold)),
            "{frame}"
        );
        assert!(frame["ts"].as_i64().unwrap() > 0);
        frame
    };
    let rid = hold(&app, &sale, "a", 2).await;
    expect(3, 2, 0).await;
    assert_eq!(app.confirm(&rid, "a").await.status(), 201);
    expect(3, 0, 2).await;
    let rid = hold(&app, &sale, "b", 1).await;
    expect(2, 1, 2).await;
    assert_eq!(app.cancel(&rid, "b").await.status(), 204);
    expect(3, 0, 2).await;
    app.reserve(&sale, "c", 2).await;
    expect(1, 2, 2).await;
    let expired = expect(3, 0, 2).await; // the reaper expires c's hold
    assert_eq!(expired["status"], "active");
}

#[tokio::test]
async fn a_buyer_sees_their_own_events_and_a_waiter_is_promoted() {
    let app = spawn_app().await;
    let sale = app
        .create_sale(json!({"total": 1, "per_user_limit": 1}))
        .await;
    let mut holder = connect(&app, &sale, Some(&buyer_token("holder"))).await;
    let mut waiter = connect(&app, &sale, Some(&buyer_token("waiter"))).await;
    next_of(&mut holder, "snapshot").await;
    next_of(&mut waiter, "snapshot").await;

    let rid = hold(&app, &sale, "holder", 1).await;
    let mine = next_of(&mut holder, "reservation").await;
    assert_eq!(
        (mine["status"].as_str(), mine["reservation_id"].as_str()),
        (Some("held"), Some(rid.as_str()))
    );

    let joined = app
        .http
        .post(app.api(&format!("/sales/{sale}/waitlist")))
        .bearer_auth(buyer_token("waiter"))
        .json(&json!({"quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(joined.status(), 201);
    let place = next_of(&mut waiter, "waitlist").await;
    assert_eq!(place["position"], 1);

    assert_eq!(app.cancel(&rid, "holder").await.status(), 204);
    assert_eq!(
        next_of(&mut holder, "reservation").await["status"],
        "cancelled"
    );
    let promoted = next_of(&mut waiter, "promoted").await;
    let promoted_rid = promoted["reservation_id"].as_str().unwrap();
    assert!(promoted["expires_at"].as_str().is_some());
    assert_eq!(
        app.reservation(promoted_rid, "waiter").await["status"],
        "held"
    );

    assert_eq!(app.confirm(promoted_rid, "waiter").await.status(), 201);
    assert_eq!(
        next_of(&mut waiter, "reservation").await["status"],
        "confirmed"
    );
    next_of(&mut waiter, "sale_closed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_sockets_all_see_a_change() {
    let app = Arc::new(spawn_app().await);
    let sale = app.create_sale(json!({"total": 10})).await;
    let sockets: Vec<_> = (0..500)
        .map(|_| {
            let (app, sale) = (app.clone(), sale.clone());
            tokio::spawn(async move {
                let mut s = connect(&app, &sale, None).await;
                let seq = next_of(&mut s, "snapshot").await["seq"].as_i64().unwrap();
                (s, seq)
            })
        })
        .collect();
    let mut connected = Vec::new();
    for s in sockets {
        connected.push(s.await.unwrap());
    }
    assert_eq!(app.state.live.sockets(), 500);
    app.reserve(&sale, "one", 1).await;
    let readers: Vec<_> = connected
        .into_iter()
        .map(|(mut s, seq)| {
            tokio::spawn(async move {
                let frame = next_of(&mut s, "stock").await;
                assert_eq!(frame["seq"].as_i64().unwrap(), seq + 1);
                frame["available"].as_i64().unwrap()
            })
        })
        .collect();
    for r in readers {
        assert_eq!(r.await.unwrap(), 9);
    }
}

/// With `FLASHDROP_WS_STOCK_FRAMES_PER_SECOND` a socket gets at most one
/// stock frame per gap, however fast the sale changes, and the last one
/// it gets is the newest state.
#[tokio::test]
async fn a_frame_rate_sends_at_most_one_stock_frame_per_gap_ending_at_the_newest() {
    let gap = Duration::from_millis(400);
    let app = spawn_app_with(|s| s.ws_stock_frame_gap = Some(gap)).await;
    let changes: i64 = 50;
    let sale = app
        .create_sale(json!({"total": changes, "per_user_limit": 1}))
        .await;
    let mut socket = connect(&app, &sale, None).await;
    let first_seq = next_of(&mut socket, "snapshot").await["seq"]
        .as_i64()
        .unwrap();

    // One change after another, straight through the store.
    let started = std::time::Instant::now();
    let redis = app.state.store.redis.clone();
    let id = SaleId::parse(&sale).unwrap();
    for i in 0..changes {
        let item = ReserveItem {
            rid: ReservationId::new(&id),
            buyer: format!("b{i}"),
            quantity: 1,
            idempotency_key: None,
        };
        let reply = redis.reserve(&id, &[&item], Duration::ZERO).await;
        assert!(
            matches!(&reply, Ok(ReserveBatchReply::Done { holds })
                if matches!(holds[..], [ReserveReply::Created { .. }])),
            "{reply:?}"
        );
    }

    let (mut frames, mut previous) = (0, first_seq);
    loop {
        let frame = next_of(&mut socket, "stock").await;
        let seq = frame["seq"].as_i64().unwrap();
        assert!(seq > previous, "seq only rises: {seq} after {previous}");
        previous = seq;
        frames += 1;
        if seq == first_seq + changes {
            assert_eq!(
                (frame["available"].as_i64(), frame["held"].as_i64()),
                (Some(0), Some(changes)),
                "{frame}"
            );
            break;
        }
    }
    // The n-th frame went at least (n - 1) gaps after the first.
    let elapsed = started.elapsed();
    let most = (elapsed.as_secs_f64() / gap.as_secs_f64()).floor() as usize + 1;
    assert!(
        frames <= most,
        "{frames} stock frames for {changes} changes in {elapsed:?}, at most {most} with a gap of {gap:?}"
    );
}

/// A client that stops reading fills its TCP buffers; from then on the
/// server skips it to the newest state instead of queueing every frame,
/// while a reading client keeps up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_skips_to_the_newest_state_and_delays_no_one() {
    // Long enough that the server does not drop the blocked socket first.
    let app = spawn_app_with(|s| s.live_send_timeout = Duration::from_secs(120)).await;
    // Each stock frame is ~130 bytes, and on loopback the kernel buffers a
    // few hundred KiB of them before the sender blocks (about 2,000 frames
    // here): ten thousand changes are well past that.
    let changes: i64 = 10_000;
    let sale = app
        .create_sale(json!({"total": changes, "per_user_limit": 1}))
        .await;

    let addr = app.address.trim_start_matches("http://").parse().unwrap();
    let raw = tokio::net::TcpSocket::new_v4().unwrap();
    raw.set_recv_buffer_size(2048).unwrap();
    let stream = raw.connect(addr).await.unwrap();
    let (mut slow, _) =
        tokio_tungstenite::client_async(ws_url(&app, &sale, None), MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
    let mut fast = connect(&app, &sale, None).await;
    let first_seq = next_of(&mut fast, "snapshot").await["seq"]
        .as_i64()
        .unwrap();
    let last_seq = first_seq + changes;

    // Changes as fast as Redis takes them, straight through the store.
    let redis = app.state.store.redis.clone();
    let id = SaleId::parse(&sale).unwrap();
    let driver = tokio::spawn(async move {
        futures::stream::iter(0..changes)
            .map(|i| {
                let (redis, id) = (redis.clone(), id.clone());
                let item = ReserveItem {
                    rid: ReservationId::new(&id),
                    buyer: format!("b{i}"),
                    quantity: 1,
                    idempotency_key: None,
                };
                async move { redis.reserve(&id, &[&item], Duration::ZERO).await }
            })
            .buffer_unordered(64)
            .for_each(|reply| async move {
                assert!(
                    matches!(&reply, Ok(ReserveBatchReply::Done { holds })
                        if matches!(holds[..], [ReserveReply::Created { .. }])),
                    "{reply:?}"
                );
            })
            .await;
    });

    // The reading client keeps up to the newest state while the other
    // reads nothing (next_of fails after 5 s without a frame).
    let mut previous = first_seq;
    while previous < last_seq {
        let seq = next_of(&mut fast, "stock").await["seq"].as_i64().unwrap();
        assert!(seq > previous, "seq only rises: {seq} after {previous}");
        previous = seq;
    }
    driver.await.unwrap();

    // Now the slow client reads: what its buffers held, then a jump to
    // the newest state.
    let (mut frames, mut previous) = (0, first_seq);
    let newest = loop {
        let frame = next_of(&mut slow, "stock").await;
        let seq = frame["seq"].as_i64().unwrap();
        assert!(seq > previous, "seq only rises: {seq} after {previous}");
        previous = seq;
        frames += 1;
        if seq == last_seq {
            break frame;
        }
    };
    assert_eq!(newest["available"], 0);
    assert!(
        frames < changes,
        "the blocked client was skipped ahead ({frames} frames for {changes} changes)"
    );
}

#[tokio::test]
async fn a_client_that_stops_answering_pings_is_dropped() {
    let app = spawn_app_with(|s| s.live_ping = Duration::from_millis(100)).await;
    let sale = app.create_sale(json!({})).await;
    let mut silent = connect(&app, &sale, None).await;
    next_of(&mut silent, "snapshot").await;
    assert_eq!(app.state.live.sockets(), 1);
    // Not reading means never answering pings.
    let dropped = eventually(Duration::from_secs(5), || async {
        (app.state.live.sockets() == 0).then_some(())
    })
    .await;
    assert!(dropped.is_some(), "the silent socket was dropped");
    drop(silent);

    // A reading client answers pings (tungstenite pongs while reading) and stays.
    let mut alive = connect(&app, &sale, None).await;
    next_of(&mut alive, "snapshot").await;
    let reader = tokio::spawn(async move { while alive.next().await.is_some() {} });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(app.state.live.sockets(), 1);
    reader.abort();
}

#[tokio::test]
async fn unknown_sales_and_bad_tokens_are_refused_before_the_upgrade() {
    let app = spawn_app().await;
    let err = connect_async(ws_url(&app, "0123456789abcdef01234567", None))
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 404),
        other => panic!("{other}"),
    }
    let sale = app.create_sale(json!({})).await;
    let err = connect_async(ws_url(&app, &sale, Some("bad.token.here")))
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 401),
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn after_redis_restarts_the_feed_resumes_with_a_fresh_snapshot() {
    let mut redis = RedisServer::start();
    let url = redis.url.clone();
    let app = spawn_app_with(|s| on_redis(s, &url)).await;
    let sale = app.create_sale(json!({"total": 8})).await;
    app.reserve(&sale, "before", 2).await;
    let mut socket = connect(&app, &sale, None).await;
    assert_eq!(next_of(&mut socket, "snapshot").await["sale"]["held"], 2);

    redis.stop();
    let _restarted = RedisServer::start_on(redis.port);
    // Redis came back empty: the fresh snapshot is the sale rebuilt from
    // MongoDB (the lost hold's units are free again).
    let snapshot = next_of(&mut socket, "snapshot").await;
    assert_eq!(snapshot["sale"]["available"], 8);
    let resumed = eventually(Duration::from_secs(10), || async {
        (app.reserve(&sale, "after", 1).await.status() == 201).then_some(())
    })
    .await;
    assert!(resumed.is_some());
    let frame = next_of(&mut socket, "stock").await;
    assert_eq!(frame["held"], 1);
}

#[tokio::test]
async fn sockets_past_the_caps_are_refused_before_the_upgrade() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let app = spawn_app_with(|s| {
        s.ws_max_connections = 3;
        s.ws_max_per_ip = Some(2);
        s.trust_forwarded_for = true;
    })
    .await;
    let sale = app.create_sale(json!({})).await;
    let from = |ip: &str| {
        let mut req = ws_url(&app, &sale, None).into_client_request().unwrap();
        req.headers_mut()
            .insert("x-forwarded-for", ip.parse().unwrap());
        connect_async(req)
    };
    let refusal = |err: tokio_tungstenite::tungstenite::Error| match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            let body: Value =
                serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).unwrap();
            (
                resp.status().as_u16(),
                body["code"].as_str().unwrap().to_owned(),
            )
        }
        other => panic!("{other}"),
    };
    let mut open = vec![
        from("203.0.113.1").await.unwrap().0,
        from("203.0.113.1").await.unwrap().0,
    ];
    // A third socket from the same address is over the per-address cap.
    let err = from("203.0.113.1").await.unwrap_err();
    assert_eq!(refusal(err), (429, "rate_limited".to_owned()));
    // From another address it passes, and then the total is full.
    open.push(from("203.0.113.2").await.unwrap().0);
    let err = from("203.0.113.3").await.unwrap_err();
    assert_eq!(refusal(err), (503, "unavailable".to_owned()));
    // A socket that closes frees its place.
    drop(open.pop());
    let back = eventually(Duration::from_secs(5), || async {
        from("203.0.113.4").await.ok()
    })
    .await;
    assert!(back.is_some());
}

#[tokio::test]
async fn a_socket_ends_when_its_token_expires() {
    let app = spawn_app().await;
    let sale = app.create_sale(json!({})).await;
    let short =
        flashdrop::auth::JwtKeys::new(&flashdrop::config::Secret::new(crate::helpers::JWT_SECRET))
            .mint(
                "brief",
                flashdrop::auth::Role::Buyer,
                Duration::from_secs(1),
            )
            .unwrap();
    let mut socket = connect(&app, &sale, Some(&short)).await;
    next_of(&mut socket, "snapshot").await;
    let closed = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the socket outlived its token");
}

/// A buyer whose socket fell behind (its personal events overflowed) still
/// hears of their promotion.
#[tokio::test]
async fn a_lagging_socket_still_hears_of_its_promotion() {
    // Room for one personal event: the burst below overflows it.
    let app = spawn_app_with(|s| s.live_personal_buffer = 1).await;
    let sale = app
        .create_sale(json!({"total": 5, "per_user_limit": 5}))
        .await;
    let rid = hold(&app, &sale, "holder", 5).await;
    for buyer in ["waiter", "o1", "o2", "o3", "o4"] {
        assert_eq!(
            crate::helpers::join(&app, &sale, buyer, 1).await.status(),
            201
        );
    }
    let mut waiter = connect(&app, &sale, Some(&buyer_token("waiter"))).await;
    next_of(&mut waiter, "snapshot").await;
    // One cancel promotes all five in one step: five personal events at
    // once, the waiter's first.
    assert_eq!(app.cancel(&rid, "holder").await.status(), 204);
    let promoted = next_of(&mut waiter, "promoted").await;
    assert!(promoted["reservation_id"].as_str().is_some());
}

#[tokio::test]
async fn a_buyer_who_connects_after_the_promotion_still_hears_of_it() {
    // A phone that lost its connection while its owner was promoted: the
    // promotion must be the first thing it hears when it comes back.
    let app = spawn_app().await;
    let sale = app
        .create_sale(json!({"total": 1, "per_user_limit": 1}))
        .await;
    let rid = hold(&app, &sale, "holder", 1).await;
    assert_eq!(join(&app, &sale, "away", 1).await.status(), 201);
    assert_eq!(app.cancel(&rid, "holder").await.status(), 204);
    let me = waitlist_me(&app, &sale, "away").await;
    assert_eq!(me["status"], "promoted");

    let mut socket = connect(&app, &sale, Some(&buyer_token("away"))).await;
    next_of(&mut socket, "snapshot").await;
    let promoted = next_of(&mut socket, "promoted").await;
    assert_eq!(promoted["reservation_id"], me["reservation_id"]);
    assert_eq!(
        app.reservation(promoted["reservation_id"].as_str().unwrap(), "away")
            .await["status"],
        "held"
    );
}
