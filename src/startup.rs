//! Building and running the application: connect the stores, bind the
//! listener, mount the routes, start the background loops, and shut down
//! gracefully on SIGTERM or Ctrl-C.

use std::{future::Future, sync::Arc, time::Duration};

use poem::{
    EndpointExt, Route, Server,
    endpoint::make_sync,
    get,
    listener::{Acceptor, Listener, TcpAcceptor, TcpListener},
};
use tokio_util::sync::CancellationToken;

use crate::{
    api, auth::JwtKeys, config::Settings, error, limits, limits::RateLimits, live, persister,
    reaper, state::AppState, store::mongo::Mongo, store::redis::Scripts, telemetry,
};

/// Largest request body accepted; larger ones are answered 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub struct Application {
    acceptor: TcpAcceptor,
    port: u16,
    state: AppState,
    signals: StopSignals,
}

impl Application {
    /// Connects to Redis and MongoDB and binds the listener (port 0 picks a
    /// free port, as tests do).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // Before the port is bound, so a SIGTERM that follows readiness is
        // always a graceful stop.
        let signals = StopSignals::register()?;
        telemetry::metrics();
        let redis = crate::store::redis::connect(&settings.redis_url)
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach Redis at FLASHDROP_REDIS_URL: {e}"))?;
        let mongo = Mongo::connect(settings.mongodb_uri.expose(), &settings.mongodb_db).await?;
        mongo
            .ensure_indexes()
            .await
            .map_err(|e| anyhow::anyhow!("cannot prepare MongoDB at FLASHDROP_MONGODB_URI: {e}"))?;
        let acceptor = TcpListener::bind(settings.listen)
            .into_acceptor()
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot listen on FLASHDROP_LISTEN={}: {e}", settings.listen)
            })?;
        let port = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().map(|a| a.port()))
            .unwrap_or(settings.listen.port());
        let state = AppState {
            jwt: JwtKeys::new(&settings.jwt_secret),
            redis,
            mongo,
            scripts: Scripts::new(),
            reaper: Default::default(),
            live: Default::default(),
            limits: Arc::new(RateLimits::new(
                settings.rate_limit_buyer,
                settings.rate_limit_ip,
                settings.trust_forwarded_for,
            )),
            settings: Arc::new(settings),
        };
        Ok(Self {
            acceptor,
            port,
            state,
            signals,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until SIGTERM or Ctrl-C.
    pub async fn run_until_stopped(mut self) -> std::io::Result<()> {
        let signals = std::mem::take(&mut self.signals);
        self.run_until(signals.received()).await
    }

    /// Serves until `stop` completes, then drains requests and stops the
    /// background loops.
    pub async fn run_until(self, stop: impl Future<Output = ()> + Send) -> std::io::Result<()> {
        let shutdown = CancellationToken::new();
        let reaper = tokio::spawn(reaper::run(self.state.clone(), shutdown.clone()));
        let subscriber = tokio::spawn(live::run_subscriber(self.state.clone(), shutdown.clone()));
        let pruner = tokio::spawn(prune_limits(self.state.clone(), shutdown.clone()));
        let persister = tokio::spawn(persister::run(self.state.clone(), shutdown.clone()));
        tracing::info!(port = self.port, "flashdrop listening");
        let result = Server::new_with_acceptor(self.acceptor)
            .run_with_graceful_shutdown(routes(self.state), stop, Some(Duration::from_secs(10)))
            .await;
        shutdown.cancel();
        let _ = reaper.await;
        let _ = subscriber.await;
        let _ = pruner.await;
        let _ = persister.await;
        tracing::info!("flashdrop stopped");
        result
    }
}

pub fn routes(state: AppState) -> impl poem::Endpoint {
    let api = api::service();
    let docs = api.swagger_ui();
    let spec = api::spec_json();
    Route::new()
        .nest("/api/v1", api)
        .nest("/docs", docs)
        .at(
            "/openapi.json",
            get(make_sync(move |_| {
                poem::Response::builder()
                    .content_type("application/json")
                    .body(spec.clone())
            })),
        )
        .at("/healthz", get(api::health::healthz))
        .at("/readyz", get(api::health::readyz))
        .at("/metrics", get(api::health::metrics))
        .around(|ep, req| limits::cap_body(ep, req, MAX_BODY_BYTES))
        .around(limits::limit_ip)
        .catch_all_error(error::into_json_response)
        .around(telemetry::trace_request)
        .data(state)
}

async fn prune_limits(state: AppState, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(30)) => state.limits.prune(),
        }
    }
}

/// SIGTERM and SIGINT, registered eagerly.
#[derive(Default)]
struct StopSignals {
    streams: Vec<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn register() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            streams: vec![
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            ],
        })
    }

    async fn received(mut self) {
        if self.streams.is_empty() {
            return std::future::pending().await;
        }
        let waits = self.streams.iter_mut().map(|s| Box::pin(s.recv()));
        futures_util::future::select_all(waits).await;
        tracing::info!("shutdown signal received");
    }
}
