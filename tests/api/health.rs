use std::time::Duration;

use crate::helpers::{
    RedisServer, TestApp, eventually, on_redis, servers, spawn_app, spawn_app_with,
};
use serde_json::Value;

#[tokio::test]
async fn healthz_answers_while_the_process_runs() {
    let app = spawn_app().await;
    let resp = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn readyz_is_ok_when_both_stores_answer() {
    let app = spawn_app().await;
    let resp = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["redis"], "ok");
    assert_eq!(body["mongodb"], "ok");
}

#[tokio::test]
async fn readyz_turns_503_naming_redis_when_redis_stops() {
    let mut redis = RedisServer::start();
    let url = redis.url.clone();
    let app = spawn_app_with(|s| on_redis(s, &url)).await;
    assert_eq!(
        app.http
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    redis.stop();
    let resp = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "unavailable");
    assert!(
        body["message"].as_str().unwrap().contains("redis"),
        "{body}"
    );
    assert_eq!(body["checks"]["mongodb"], "ok");

    // Back again on the same port: ready again without a restart.
    let _redis = RedisServer::start_on(redis.port);
    let ready = crate::helpers::eventually(std::time::Duration::from_secs(10), || async {
        let status = app.http.get(app.url("/readyz")).send().await.ok()?.status();
        (status == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "readyz did not recover");
    let _ = servers();
}

#[tokio::test]
async fn a_stopped_app_stops_serving() {
    let mut app = spawn_app().await;
    assert_eq!(
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    app.stop().await;
    let fresh = reqwest::Client::new();
    assert!(fresh.get(app.url("/healthz")).send().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_app_is_unready_at_once_serves_its_drain_and_closes_sockets_with_1012() {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut app = spawn_app_with(|s| s.drain = Duration::from_secs(2)).await;
    let sale = app.create_sale(serde_json::json!({})).await;
    let live = |app: &TestApp| {
        format!(
            "{}/api/v1/sales/{sale}/live",
            app.address.replace("http://", "ws://")
        )
    };
    let (mut socket, _) = tokio_tungstenite::connect_async(live(&app)).await.unwrap();
    let snapshot = socket.next().await.unwrap().unwrap();
    assert!(snapshot.to_text().unwrap().contains("snapshot"));

    app.begin_stop();
    // Not ready at once: the first look after the signal says 503.
    let ready = eventually(Duration::from_secs(1), || async {
        let r = app.http.get(app.url("/readyz")).send().await.unwrap();
        (r.status() != 200).then_some(r)
    })
    .await
    .expect("readyz turns at once");
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.headers()["retry-after"], "1");
    // But it serves everything else through the drain, and refuses new
    // sockets so they open elsewhere.
    let resp = app
        .http
        .get(app.url(&format!("/api/v1/sales/{sale}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    match tokio_tungstenite::connect_async(live(&app)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("a new socket while stopping: {other:?}"),
    }
    // After the drain, the open socket is told the service restarts.
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => continue,
            other => panic!("the socket ended without a close frame: {other:?}"),
        }
    };
    assert_eq!(u16::from(close.expect("a close frame").code), 1012);
    app.stop().await;
}
