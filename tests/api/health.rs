use crate::helpers::{RedisServer, on_redis, servers, spawn_app, spawn_app_with};
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
