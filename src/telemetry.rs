//! Logging and metrics: one tracing subscriber for the process (text or
//! JSON), the Prometheus recorder behind `/metrics`, and the request
//! middleware that records a span, a count and a latency per request (path
//! only: the query string may carry an access token).

use std::{sync::OnceLock, time::Instant};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use poem::{Endpoint, IntoResponse, Request, Response, Result};
use tracing::Instrument;
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

/// The route of a path for metric labels: ids become `{id}`, so labels stay
/// few however many sales and holds there are.
fn route_of(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            let id_like =
                seg.len() >= 16 && seg.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
            if id_like { "{id}" } else { seg }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Wraps every request in a span and logs its outcome.
pub async fn trace_request<E: Endpoint>(next: E, req: Request) -> Result<Response> {
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        status = tracing::field::Empty,
        latency_ms = tracing::field::Empty,
    );
    let started = Instant::now();
    let path = req.uri().path().to_owned();
    async move {
        let resp = next.call(req).await.map(IntoResponse::into_response);
        let status = match &resp {
            Ok(resp) => resp.status(),
            Err(err) => err.status(),
        };
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let span = tracing::Span::current();
        span.record("status", status.as_u16());
        span.record("latency_ms", latency_ms);
        let labels = [
            ("route", route_of(&path)),
            ("status", status.as_u16().to_string()),
        ];
        metrics::counter!("flashdrop_http_requests_total", &labels).increment(1);
        metrics::histogram!("flashdrop_http_request_duration_seconds", &labels)
            .record(latency_ms / 1000.0);
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), latency_ms, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), latency_ms, "request done");
        }
        resp
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_in_paths_become_one_label() {
        assert_eq!(
            super::route_of("/api/v1/sales/6b01f6ecff622e6df2c3d14e/reservations"),
            "/api/v1/sales/{id}/reservations"
        );
        assert_eq!(
            super::route_of(
                "/api/v1/reservations/6b01f6ecff622e6df2c3d14e-6b01f6fbff622e6df2c3d150/confirm"
            ),
            "/api/v1/reservations/{id}/confirm"
        );
        assert_eq!(super::route_of("/healthz"), "/healthz");
    }
}
