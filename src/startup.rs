//! Building and running the application: connect the stores, bind the
//! listener, mount the routes, start the background loops, and shut down
//! gracefully on SIGTERM or Ctrl-C.

use std::{future::Future, sync::Arc, time::Duration};

use poem::{
    Route, Server,
    endpoint::make_sync,
    get,
    listener::{Acceptor, Listener, TcpAcceptor, TcpListener},
};
use tokio_util::sync::CancellationToken;

use crate::{
    api,
    auth::JwtKeys,
    clock::LocalClock,
    config::Settings,
    front_door::FrontDoor,
    holds::{Coverage, Holds},
    keeper::{Keeper, Lobbies},
    limits::RateLimits,
    live::{self, socket::LiveContext},
    lobby::{Lobby, seal::SeedKey},
    payments::Payments,
    persister::Persister,
    reaper::Reaper,
    recorder::Recorder,
    recovery::Recovery,
    reports::Reports,
    sales::Sales,
    state::{AppState, Services},
    stopping::Stopping,
    store::{Mongo, Redis, Store},
    telemetry,
    waitlist::Waitlist,
    webhooks::Webhooks,
};

/// Largest request body accepted; larger ones are answered 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub struct Application {
    acceptor: TcpAcceptor,
    port: u16,
    state: AppState,
    jwt: Arc<JwtKeys>,
    limits: Arc<RateLimits>,
    background: Background,
    signals: StopSignals,
}

/// What the background loops need besides the state.
struct Background {
    /// The hub's requests for subscriptions.
    interest: tokio::sync::mpsc::UnboundedReceiver<live::hub::Interest>,
    coverage: Arc<Coverage>,
    confirm_lease: Duration,
    ended_hold_retention: Duration,
    event_claim_idle: Duration,
    copy_pause: Option<Duration>,
    drain: Duration,
}

impl Application {
    /// Connects to Redis and MongoDB and binds the listener (port 0 picks a
    /// free port, as tests do).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // Before the port is bound, so a SIGTERM that follows readiness is
        // always a graceful stop.
        let signals = StopSignals::register()?;
        telemetry::metrics();
        let redis = Redis::for_settings(&settings)
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach Redis at FLASHDROP_REDIS_URL: {e}"))?;
        let mongo = Mongo::connect(settings.mongodb_uri.expose(), &settings.mongodb_db)
            .await?
            .with_timeout(settings.mongodb_timeout);
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
        let store = Store {
            redis,
            mongo,
            clock: LocalClock::skewed(settings.fault_clock_skew_ms),
        };
        let recovery = Recovery::new(store.clone(), &settings);
        let coverage = Arc::new(Coverage::default());
        let seed_key = settings.seed_key.as_ref().map(SeedKey::new);
        let sales = Sales::new(store.clone(), recovery.clone(), seed_key.clone(), &settings);
        let lobby = Lobby::new(store.clone(), recovery.clone(), seed_key);
        let waitlist = Waitlist::new(store.clone(), recovery.clone());
        let admission =
            live::admission::Admission::new(settings.ws_max_connections, settings.ws_max_per_ip);
        let (hub, interest) = live::Hub::new(
            settings.live_personal_buffer,
            settings.ws_stock_frame_gap,
            admission,
        );
        let hub = Arc::new(hub);
        let holds = Holds::new(store.clone(), recovery.clone(), coverage.clone(), &settings);
        let state = AppState::new(Services {
            payments: Payments::new(store.clone(), holds.clone(), &settings),
            holds,
            reports: Reports::new(store.clone(), recovery.clone()),
            webhooks: Webhooks::new(store.clone(), &settings.webhooks),
            live_context: LiveContext {
                sales: sales.clone(),
                lobby: lobby.clone(),
                waitlist: waitlist.clone(),
                hub: hub.clone(),
                ping: settings.live_ping,
                send_timeout: settings.live_send_timeout,
                stopping: Stopping::default(),
            },
            sales,
            lobby,
            waitlist,
            recovery,
            live: hub,
            store,
        });
        let limits = Arc::new(RateLimits::new(
            settings.rate_limit_buyer,
            settings.rate_limit_ip,
            settings.trust_forwarded_for,
            state.store.redis.clone(),
        ));
        Ok(Self {
            acceptor,
            port,
            state,
            jwt: Arc::new(JwtKeys::new(&settings.jwt_secret)),
            limits,
            background: Background {
                interest,
                coverage,
                confirm_lease: settings.confirm_lease,
                ended_hold_retention: settings.ended_hold_retention,
                event_claim_idle: settings.event_claim_idle,
                copy_pause: settings.fault_copy_pause,
                drain: settings.drain,
            },
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

    /// Serves until `stop` completes, then stops as `stopping.rs` says: not
    /// ready at once, serving for the drain, sockets closed with 1012,
    /// requests in flight finished, background loops stopped.
    pub async fn run_until(self, stop: impl Future<Output = ()> + Send) -> std::io::Result<()> {
        let shutdown = CancellationToken::new();
        let state = &self.state;
        let reaper = Reaper {
            store: state.store.clone(),
            sales: state.sales.clone(),
            holds: state.holds.clone(),
            recovery: state.recovery.clone(),
            coverage: self.background.coverage,
            confirm_lease: self.background.confirm_lease,
            ended_hold_retention: self.background.ended_hold_retention,
        };
        let persister = Persister {
            store: state.store.clone(),
            recovery: state.recovery.clone(),
            coverage: reaper.coverage.clone(),
            claim_idle: self.background.event_claim_idle,
            pause: self.background.copy_pause,
        };
        let lobbies = Lobbies::default();
        let keeper = Keeper {
            store: state.store.clone(),
            sales: state.sales.clone(),
            lobby: state.lobby.clone(),
            recovery: state.recovery.clone(),
            lobbies: lobbies.clone(),
        };
        let recorder = Recorder {
            store: state.store.clone(),
            lobbies,
            claim_idle: self.background.event_claim_idle,
        };
        let reaper = tokio::spawn(reaper.run(shutdown.clone()));
        let keeper = tokio::spawn(keeper.run(shutdown.clone()));
        let recorder = tokio::spawn(recorder.run(shutdown.clone()));
        let subscriber = tokio::spawn(live::subscriber::run(
            state.store.redis.clone(),
            state.live.clone(),
            self.background.interest,
            shutdown.clone(),
        ));
        let pruner = tokio::spawn(prune_limits(self.limits.clone(), shutdown.clone()));
        let upkeep = tokio::spawn(telemetry::metrics_upkeep(shutdown.clone()));
        let persister = tokio::spawn(persister.run(shutdown.clone()));
        let interest = tokio::spawn(
            state
                .store
                .mongo
                .clone()
                .keep_outbox_interest(shutdown.clone()),
        );
        let deliverer = state.webhooks.deliverer();
        let deliverer = tokio::spawn(deliverer.run(shutdown.clone()));
        let workers = tokio::runtime::Handle::current().metrics().num_workers();
        tracing::info!(port = self.port, workers, "flashdrop listening");
        let (stopping, drain) = (state.live_context.stopping.clone(), self.background.drain);
        let stop = async move {
            stop.await;
            stopping.begin();
            tracing::info!(?drain, "stopping: not ready, serving until the drain ends");
            tokio::time::sleep(drain).await;
            stopping.close_sockets();
            tracing::info!("stopping: sockets closed, finishing requests in flight");
        };
        let routes = routes(self.state, self.jwt, self.limits);
        let result = Server::new_with_acceptor(self.acceptor)
            .run_with_graceful_shutdown(routes, stop, Some(Duration::from_secs(10)))
            .await;
        shutdown.cancel();
        let _ = reaper.await;
        let _ = keeper.await;
        let _ = recorder.await;
        let _ = subscriber.await;
        let _ = pruner.await;
        let _ = upkeep.await;
        let _ = persister.await;
        let _ = deliverer.await;
        let _ = interest.await;
        tracing::info!("flashdrop stopped");
        result
    }
}

pub fn routes(state: AppState, jwt: Arc<JwtKeys>, limits: Arc<RateLimits>) -> impl poem::Endpoint {
    let api = api::service();
    let spec = api::document(&api);
    let docs = api::swagger_ui_html(&api, &spec);
    let routes = api::mount(Route::new())
        .at(
            "/docs",
            get(make_sync(move |_| poem::web::Html(docs.clone()))),
        )
        .at(
            "/openapi.json",
            get(make_sync(move |_| {
                poem::Response::builder()
                    .content_type("application/json")
                    .body(spec.clone())
            })),
        )
        .nest("/", api::pages::routes())
        .at("/healthz", get(api::health::healthz))
        .at("/readyz", get(api::health::readyz))
        .at("/metrics", get(api::health::metrics));
    FrontDoor::new(routes, MAX_BODY_BYTES).serving(state, jwt, limits)
}

async fn prune_limits(limits: Arc<RateLimits>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(30)) => limits.prune(),
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
