//! Logging and metrics: one tracing subscriber for the process (text or
//! JSON), the Prometheus recorder behind `/metrics`, and what the front
//! door (`front_door`) records per request: a span, a count and a latency
//! (path only: the query string may carry an access token).

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, OnceLock},
};

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use parking_lot::RwLock;

use poem::{PathPattern, Request, Response};
use tracing_subscriber::{EnvFilter, fmt};

use crate::config::LogFormat;

/// Installs the global subscriber. Later calls (several apps in one test
/// process) are no-ops.
pub fn init(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The process's Prometheus recorder, installed on first use.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let seconds = [
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ];
        PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
            .expect("bucket list is not empty")
            .install_recorder()
            .expect("one Prometheus recorder per process")
    })
}

/// The route a response answered, for metric labels: the template the
/// router matched, never the raw path, so labels stay few however many
/// sales, holds and made-up paths there are. Every path parameter of the
/// API is an id (the router names them `:param0`, ...): `{id}`.
fn route_of(pattern: Option<&PathPattern>) -> String {
    match pattern {
        Some(PathPattern(template)) => template
            .split('/')
            .map(|seg| if seg.starts_with(':') { "{id}" } else { seg })
            .collect::<Vec<_>>()
            .join("/"),
        None => "unmatched".to_owned(),
    }
}

/// A route's count and latency series at one status.
struct Series {
    requests: Counter,
    seconds: Histogram,
}

/// The series of each (route template, status) seen, registered once: a
/// request then records into them without building labels or looking them
/// up in the recorder. Few entries: the routes' templates times the
/// statuses they answer.
type SeriesKey = (Option<Arc<str>>, u16);
static SERIES: LazyLock<RwLock<HashMap<SeriesKey, Series>>> = LazyLock::new(Default::default);

/// Counts a request answered on `pattern` with `status`, and its latency.
pub(crate) fn record_request(pattern: Option<&PathPattern>, status: u16, seconds: f64) {
    let key = (pattern.map(|p| p.0.clone()), status);
    let record = |series: &Series| {
        series.requests.increment(1);
        series.seconds.record(seconds);
    };
    if let Some(series) = SERIES.read().get(&key) {
        return record(series);
    }
    // The recorder is in place before a handle is taken from it.
    metrics();
    let labels = [("route", route_of(pattern)), ("status", status.to_string())];
    let series = Series {
        requests: metrics::counter!("flashdrop_http_requests_total", &labels),
        seconds: metrics::histogram!("flashdrop_http_request_duration_seconds", &labels),
    };
    record(SERIES.write().entry(key).or_insert(series));
}

/// Keeps the Prometheus recorder's memory bounded when nobody scrapes
/// `/metrics`: histogram samples are folded in on a timer, not only when
/// rendered.
pub async fn metrics_upkeep(shutdown: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => metrics().run_upkeep(),
        }
    }
}

/// The request's id: the caller's `X-Request-Id` when it is short visible
/// ASCII, else a new one. It is in every log line of the request and in
/// the answer's `X-Request-Id`.
pub(crate) fn request_id(req: &Request) -> String {
    req.header("X-Request-Id")
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| hex::encode(rand::random::<[u8; 8]>()), str::to_owned)
}

pub(crate) fn with_request_id(mut resp: Response, id: &str) -> Response {
    if let Ok(value) = poem::http::HeaderValue::from_str(id) {
        resp.headers_mut().insert("x-request-id", value);
    }
    resp
}

/// A handler that panics answers 500 with the one error body, and the
/// panic is logged in the request's span (with its id); the next request
/// is served as ever.
pub fn panic_answer(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned());
    tracing::error!(panic = %what, "a handler panicked");
    crate::error::error_response(crate::error::ErrorCode::Internal, "internal error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_become_labels_and_the_rest_is_one_label() {
        let pattern = PathPattern("/api/v1/sales/:param0/reservations".into());
        assert_eq!(route_of(Some(&pattern)), "/api/v1/sales/{id}/reservations");
        assert_eq!(route_of(None), "unmatched");
    }

    #[test]
    fn a_routes_series_are_registered_once_and_count_every_request() {
        let pattern = PathPattern("/test/series/:param0".into());
        for status in [200, 200, 200, 503] {
            record_request(Some(&pattern), status, 0.002);
        }
        let key = |status| (Some(pattern.0.clone()), status);
        assert!(SERIES.read().contains_key(&key(200)));
        assert!(SERIES.read().contains_key(&key(503)));
        let text = metrics().render();
        let count = |status: &str| {
            let series = format!(
                "flashdrop_http_requests_total{{route=\"/test/series/{{id}}\",status=\"{status}\"}} "
            );
            text.lines()
                .find_map(|l| l.strip_prefix(series.as_str()))
                .unwrap_or_else(|| panic!("{series} missing in {text}"))
                .to_owned()
        };
        assert_eq!(count("200"), "3");
        assert_eq!(count("503"), "1");
        let latency = "flashdrop_http_request_duration_seconds_bucket{route=\"/test/series/{id}\",status=\"200\",le=\"0.0025\"} 3";
        assert!(text.contains(latency), "{text}");
    }
}
