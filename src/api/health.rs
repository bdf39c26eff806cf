//! `/healthz` (the process is up) and `/readyz` (Redis and MongoDB answer).

use std::time::Duration;

use poem::{IntoResponse, handler, http::StatusCode, web::Data, web::Json};
use serde_json::json;

use crate::{
    error::{ErrorCode, error_body, error_response},
    state::AppState,
};

#[handler]
pub fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Prometheus text exposition of every `flashdrop_*` metric.
#[handler]
pub fn metrics(state: Data<&AppState>) -> poem::Response {
    ::metrics::gauge!("flashdrop_live_sockets").set(state.live.sockets() as f64);
    poem::Response::builder()
        .content_type("text/plain; version=0.0.4")
        .body(crate::telemetry::metrics().render())
}

#[handler]
pub async fn readyz(state: Data<&AppState>) -> poem::Response {
    if state.live_context.stopping.is_unready() {
        return error_response(ErrorCode::Unavailable, "not ready: stopping");
    }
    let timeout = Duration::from_secs(2);
    let (redis, mongo) = tokio::join!(
        tokio::time::timeout(timeout, state.store.redis.ping()),
        tokio::time::timeout(timeout, state.store.mongo.ping()),
    );
    let redis_ok = matches!(redis, Ok(Ok(_)));
    let mongo_ok = matches!(mongo, Ok(Ok(_)));
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    let body = json!({"redis": word(redis_ok), "mongodb": word(mongo_ok)});
    if redis_ok && mongo_ok {
        Json(body).into_response()
    } else {
        let failing: Vec<&str> = [("redis", redis_ok), ("mongodb", mongo_ok)]
            .into_iter()
            .filter(|(_, ok)| !ok)
            .map(|(name, _)| name)
            .collect();
        use poem_openapi::types::ToJSON;
        let mut answer = error_body(
            ErrorCode::Unavailable,
            format!("not ready: {} unreachable", failing.join(" and ")),
        )
        .to_json()
        .unwrap_or_default();
        answer["checks"] = body;
        Json(answer)
            .with_status(StatusCode::SERVICE_UNAVAILABLE)
            .into_response()
    }
}
