//! Shared harness: real `redis-server` and `secantusd-rs` started once per
//! test binary on free ports (or taken from FLASHDROP_TEST_REDIS_URL and
//! FLASHDROP_TEST_MONGODB_URI), an app per test on port 0 with its own
//! database, and helpers to read Redis and MongoDB state directly.
//!
//! With FLASHDROP_TEST_REDIS_CLUSTER=1 the shared Redis is a three-master
//! Redis Cluster (FLASHDROP_TEST_REDIS_URL, if set, lists its seeds), and
//! each app is two flashdrop instances: requests take turns between them.

use std::{
    collections::HashMap,
    net::TcpStream,
    process::{Child, Command, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use flashdrop::{
    auth::{JwtKeys, Role},
    config::{Secret, Settings},
    ids::SaleId,
    startup::Application,
    state::AppState,
    store::{
        Conn, Mongo,
        keys::SaleKeys,
        mongo::{OrderDoc, StockEventDoc},
        redis::SaleDump,
    },
};
use redis::AsyncCommands;

pub use super::redis_cluster::RedisCluster;
use serde_json::{Value, json};

pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret!";
pub const SEED_KEY: &str = "test-seed-key-test-seed-key-test-seed!";
/// The payment webhook's shared secret, as the provider in the tests has it.
pub const PAYMENT_SECRET: &str = "test-payment-webhook-secret";

pub struct Servers {
    /// One URL, or a cluster's comma-separated seeds.
    pub redis_url: String,
    pub mongo_uri: String,
}

/// Whether this run's shared Redis is a cluster.
pub fn cluster_run() -> bool {
    std::env::var("FLASHDROP_TEST_REDIS_CLUSTER").is_ok_and(|v| v == "1" || v == "true")
}

fn from_env(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.is_empty())
}

/// The shared servers of this test binary.
pub fn servers() -> &'static Servers {
    static SERVERS: OnceLock<Servers> = OnceLock::new();
    SERVERS.get_or_init(|| {
        let (redis_url, mongo_uri) = (
            from_env("FLASHDROP_TEST_REDIS_URL"),
            from_env("FLASHDROP_TEST_MONGODB_URI"),
        );
        let redis_url = match cluster_run() {
            true => shared_cluster().seeds(),
            false => redis_url.unwrap_or_else(|| lasting(RedisServer::start).url.clone()),
        };
        let mongo_uri = mongo_uri.unwrap_or_else(|| lasting(MongoServer::start).uri.clone());
        Servers {
            redis_url,
            mongo_uri,
        }
    })
}

/// The Redis Cluster tests share: this run's Redis when it is a cluster,
/// else one started for the cluster tests.
pub fn shared_cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<&'static RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(
        || match (cluster_run(), from_env("FLASHDROP_TEST_REDIS_URL")) {
            (true, Some(seeds)) => Box::leak(Box::new(RedisCluster::attach(&seeds))),
            _ => lasting(|| RedisCluster::start(3)),
        },
    )
}

/// Starts servers that last as long as the test binary: they are children
/// of a thread that never ends, so PR_SET_PDEATHSIG ends them with the
/// process and not before.
pub fn lasting<T: Send + Sync + 'static>(start: impl FnOnce() -> T + Send + 'static) -> &'static T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        tx.send(Box::leak(Box::new(start())) as &'static T).unwrap();
        loop {
            std::thread::park();
        }
    });
    rx.recv().expect("test servers started")
}

/// A free port never handed out before in this test run: two tests that
/// start servers at once must not both be given the port the OS has just
/// released (one server would fail to bind, and its test would talk to
/// the other's).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if GIVEN.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// Waits until `child` listens on `port`: false when it exited first (the
/// port was taken by something else meanwhile), so the caller can start
/// it on another.
fn child_listens(child: &mut Child, port: u16, what: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait().ok().flatten().is_some() {
            return false;
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            // A server that failed to bind exits at once: make sure the
            // listener is ours.
            std::thread::sleep(Duration::from_millis(50));
            return child.try_wait().ok().flatten().is_none();
        }
        assert!(Instant::now() < deadline, "{what} did not start on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    }
}

pub fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `redis-server` of our own; stopped when dropped.
pub struct RedisServer {
    pub url: String,
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> Self {
        for _ in 0..5 {
            if let Some(server) = Self::try_start_on(free_port()) {
                return server;
            }
        }
        panic!("redis-server could not bind a free port in five tries");
    }

    /// On this port (a restart on the port it had).
    pub fn start_on(port: u16) -> Self {
        Self::try_start_on(port)
            .unwrap_or_else(|| panic!("redis-server exited instead of listening on {port}"))
    }

    fn try_start_on(port: u16) -> Option<Self> {
        let mut child = die_with_parent(
            Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .spawn()
        .expect("redis-server is installed (scripts/test installs it)");
        child_listens(&mut child, port, "redis-server").then(|| Self {
            url: format!("redis://127.0.0.1:{port}"),
            port,
            child: Some(child),
        })
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A MongoDB-wire server of our own; stopped when dropped. A test that
/// pauses MongoDB starts one.
pub struct MongoServer {
    pub uri: String,
    child: Child,
    dir: std::path::PathBuf,
}

impl MongoServer {
    pub fn start() -> Self {
        for _ in 0..5 {
            if let Some(server) = Self::try_start() {
                return server;
            }
        }
        panic!("secantusd-rs could not bind a free port in five tries");
    }

    fn try_start() -> Option<Self> {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "flashdrop-test-mongo-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let bin = std::env::var("SECANTUSD").unwrap_or_else(|_| "secantusd-rs".into());
        let mut child = die_with_parent(
            Command::new(&bin)
                .args(["--port", &port.to_string(), "--host", "127.0.0.1"])
                .arg("--storage-path")
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .spawn()
        .expect("secantusd-rs is installed (scripts/test installs it)");
        if !child_listens(&mut child, port, "secantusd-rs") {
            let _ = std::fs::remove_dir_all(&dir);
            return None;
        }
        Some(Self {
            uri: format!("mongodb://127.0.0.1:{port}/?directConnection=true"),
            child,
            dir,
        })
    }

    fn signal(&self, signal: i32) {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        self.resume();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `flashdrop serve` on `port` against the shared test servers, with the
/// database `db`, the test secrets and the per-buyer and per-address
/// limits off; the caller adds what else it needs, then spawns it.
pub fn serve_command(port: u16, db: &str) -> tokio::process::Command {
    let s = servers();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_flashdrop"));
    command
        .arg("serve")
        .env("FLASHDROP_LISTEN", format!("127.0.0.1:{port}"))
        .env("FLASHDROP_REDIS_URL", &s.redis_url)
        .env(
            "FLASHDROP_REDIS_CLUSTER",
            s.redis_url.contains(',').to_string(),
        )
        .env("FLASHDROP_MONGODB_URI", &s.mongo_uri)
        .env("FLASHDROP_MONGODB_DB", db)
        .env("FLASHDROP_JWT_SECRET", JWT_SECRET)
        .env("FLASHDROP_SEED_KEY", SEED_KEY)
        .env("FLASHDROP_PAYMENT_WEBHOOK_SECRET", PAYMENT_SECRET)
        .env("FLASHDROP_RATE_LIMIT_BUYER", "off")
        .env("FLASHDROP_RATE_LIMIT_IP", "off")
        .kill_on_drop(true);
    command
}

/// A database name of its own, so tests never share data.
pub fn unique_db() -> String {
    format!("fdtest_{}", SaleId::new())
}

/// The Redis keys of a sale, as the server lays them out.
pub fn keys(sale: &str) -> SaleKeys {
    SaleKeys::new(&SaleId::parse(sale).expect("a sale id"))
}

pub fn test_settings(redis_url: &str, mongo_uri: &str) -> Settings {
    let db = unique_db();
    let vars: HashMap<&str, String> = HashMap::from([
        ("FLASHDROP_LISTEN", "127.0.0.1:0".to_owned()),
        ("FLASHDROP_REDIS_URL", redis_url.to_owned()),
        (
            "FLASHDROP_REDIS_CLUSTER",
            redis_url.contains(',').to_string(),
        ),
        ("FLASHDROP_MONGODB_URI", mongo_uri.to_owned()),
        ("FLASHDROP_MONGODB_DB", db),
        ("FLASHDROP_JWT_SECRET", JWT_SECRET.to_owned()),
        ("FLASHDROP_SEED_KEY", SEED_KEY.to_owned()),
        (
            "FLASHDROP_PAYMENT_WEBHOOK_SECRET",
            PAYMENT_SECRET.to_owned(),
        ),
        ("FLASHDROP_RATE_LIMIT_BUYER", "off".to_owned()),
        ("FLASHDROP_RATE_LIMIT_IP", "off".to_owned()),
    ]);
    Settings::from_lookup(|k| vars.get(k).cloned()).unwrap()
}

/// Points the settings at a single Redis of the test's own.
pub fn on_redis(settings: &mut Settings, url: &str) {
    settings.redis_url = url.to_owned();
    settings.redis_cluster = false;
}

/// One flashdrop of a [`TestApp`].
pub struct Instance {
    pub address: String,
    pub state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// The app under test: one flashdrop, or on a cluster two sharing the
/// stores, with requests taking turns between them.
pub struct TestApp {
    /// The first instance's address (sockets connect here).
    pub address: String,
    pub http: reqwest::Client,
    /// The first instance's state.
    pub state: AppState,
    /// The app's MongoDB database, for reading what it stored.
    pub mongo: Mongo,
    pub instances: Vec<Instance>,
    turn: AtomicUsize,
    redis: Conn,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let s = servers();
    let mut settings = test_settings(&s.redis_url, &s.mongo_uri);
    configure(&mut settings);
    spawn_app_from(settings).await
}

/// Two instances on a cluster, one on a single Redis.
pub async fn spawn_app_from(settings: Settings) -> TestApp {
    let instances = if settings.redis_cluster { 2 } else { 1 };
    spawn_instances(settings, instances).await
}

pub async fn spawn_instances(settings: Settings, n: usize) -> TestApp {
    spawn_each(vec![settings; n]).await
}

/// Instances sharing the stores, each with settings of its own (a clock
/// skew, say); the first one's stores are the app's.
pub async fn spawn_each(each: Vec<Settings>) -> TestApp {
    let settings = each[0].clone();
    if std::env::var_os("TEST_LOG").is_some() {
        flashdrop::telemetry::init("info,flashdrop=debug", settings.log_format);
    }
    let mongo = Mongo::connect(settings.mongodb_uri.expose(), &settings.mongodb_db)
        .await
        .unwrap();
    let redis = Conn::open(&settings.redis_nodes(), settings.redis_cluster)
        .await
        .unwrap();
    let mut instances = Vec::new();
    for settings in each {
        instances.push(start_instance(settings).await);
    }
    TestApp {
        address: instances[0].address.clone(),
        state: instances[0].state.clone(),
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .unwrap(),
        mongo,
        instances,
        turn: AtomicUsize::new(0),
        redis,
    }
}

async fn start_instance(settings: Settings) -> Instance {
    let app = Application::build(settings).await.expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    Instance {
        address,
        state,
        stop: Some(stop),
        server: Some(server),
    }
}

pub fn token(sub: &str, role: Role) -> String {
    JwtKeys::new(&Secret::new(JWT_SECRET))
        .mint(sub, role, Duration::from_secs(3600))
        .unwrap()
}

pub fn buyer_token(sub: &str) -> String {
    token(sub, Role::Buyer)
}

pub fn admin_token() -> String {
    token("admin", Role::Admin)
}

/// A sale body that passes validation and is active now; `overrides` replace
/// fields.
pub fn sale_body(overrides: Value) -> Value {
    let now = chrono::Utc::now();
    let mut body = json!({
        "name": "Limited sneakers",
        "price_cents": 12_900,
        "currency": "EUR",
        "total": 10,
        "per_user_limit": 2,
        "starts_at": (now - chrono::Duration::seconds(1)).to_rfc3339(),
        "ends_at": (now + chrono::Duration::hours(1)).to_rfc3339(),
        "hold_seconds": 60,
        "waitlist_enabled": true,
    });
    for (k, v) in overrides.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// What `TestApp::save_state` read: each key and its DUMP (none: absent).
pub struct SavedState(Vec<(String, Option<Vec<u8>>)>);

impl TestApp {
    /// Starts one more instance on the app's stores.
    pub async fn add_instance(&mut self, settings: Settings) {
        self.instances.push(start_instance(settings).await);
    }

    /// The instance whose turn it is to take a request.
    fn next_address(&self) -> &str {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        &self.instances[turn % self.instances.len()].address
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.next_address())
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.next_address())
    }

    /// Stops every instance and waits until they have shut down.
    /// Tells every instance to stop (as SIGTERM does), without waiting.
    pub fn begin_stop(&mut self) {
        for instance in &mut self.instances {
            if let Some(stop) = instance.stop.take() {
                let _ = stop.send(());
            }
        }
    }

    pub async fn stop(&mut self) {
        for instance in &mut self.instances {
            if let Some(stop) = instance.stop.take() {
                let _ = stop.send(());
            }
            if let Some(server) = instance.server.take() {
                server.await.unwrap().unwrap();
            }
        }
    }

    pub async fn create_sale(&self, overrides: Value) -> String {
        let resp = self
            .http
            .post(self.api("/admin/sales"))
            .bearer_auth(admin_token())
            .json(&sale_body(overrides))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
        resp.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// GETs `url` without a token and reads its body as JSON.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, url: impl reqwest::IntoUrl) -> T {
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn get_sale(&self, id: &str) -> Value {
        let resp = self
            .http
            .get(self.api(&format!("/sales/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    pub async fn reserve(&self, sale: &str, buyer: &str, quantity: i64) -> reqwest::Response {
        self.http
            .post(self.api(&format!("/sales/{sale}/reservations")))
            .bearer_auth(buyer_token(buyer))
            .json(&json!({"quantity": quantity}))
            .send()
            .await
            .unwrap()
    }

    pub async fn confirm(&self, rid: &str, buyer: &str) -> reqwest::Response {
        self.http
            .post(self.api(&format!("/reservations/{rid}/confirm")))
            .bearer_auth(buyer_token(buyer))
            .send()
            .await
            .unwrap()
    }

    pub async fn cancel(&self, rid: &str, buyer: &str) -> reqwest::Response {
        self.http
            .delete(self.api(&format!("/reservations/{rid}")))
            .bearer_auth(buyer_token(buyer))
            .send()
            .await
            .unwrap()
    }

    pub async fn reservation(&self, rid: &str, buyer: &str) -> Value {
        let resp = self
            .http
            .get(self.api(&format!("/reservations/{rid}")))
            .bearer_auth(buyer_token(buyer))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    /// A connection of the test's own to the app's Redis.
    pub fn redis(&self) -> Conn {
        self.redis.clone()
    }

    /// `/metrics`, as Prometheus text.
    pub async fn metrics(&self) -> String {
        let resp = self.http.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.text().await.unwrap()
    }

    pub async fn orders(&self, sale: &str) -> Vec<OrderDoc> {
        self.mongo
            .orders_of_sale(&SaleId::parse(sale).unwrap())
            .await
            .unwrap()
    }

    /// The sale's event log in MongoDB, oldest first, once the persister has
    /// caught up with every change Redis has counted.
    pub async fn stock_events(&self, sale: &str) -> Vec<StockEventDoc> {
        let seq: i64 = self.redis_sale(sale).await["seq"].parse().unwrap();
        let id = SaleId::parse(sale).unwrap();
        let events = keys(sale).events();
        // The last change is in the log (seqs may jump: see
        // `recovery::SEQ_GAP`), and so is every change the stream still
        // holds (an entry stays until acknowledged, maybe for as long as a
        // dead consumer's claim takes, after a failover).
        let log = eventually(Duration::from_secs(10), || async {
            let log = self.mongo.event_log(&id).await.unwrap();
            if !log.iter().any(|e| e.seq >= seq) {
                return None;
            }
            let recorded: std::collections::HashSet<(i64, &str, Option<&str>)> = log
                .iter()
                .flat_map(|e| {
                    let kept = (e.kind.as_str(), e.reservation_id.as_deref());
                    [Some(e.seq), e.restamped_from]
                        .into_iter()
                        .flatten()
                        .map(move |seq| (seq, kept.0, kept.1))
                })
                .collect();
            let held: redis::streams::StreamRangeReply =
                self.redis().xrange_all(&events).await.unwrap();
            let uncopied = held.ids.iter().any(|entry| {
                let change: Value = entry
                    .get::<String>("e")
                    .and_then(|e| serde_json::from_str(&e).ok())
                    .unwrap_or_default();
                let key = (
                    change["seq"].as_i64().unwrap_or(-1),
                    change["kind"].as_str().unwrap_or_default(),
                    change["rid"].as_str(),
                );
                !recorded.contains(&key)
            });
            (!uncopied).then_some(log)
        })
        .await;
        log.unwrap_or_else(|| panic!("the event log reached seq {seq}"))
    }

    /// Redis loses everything (the app's own Redis: tests that flush
    /// start one).
    pub async fn flush_redis(&self) {
        let _: () = redis::cmd("FLUSHALL")
            .query_async(&mut self.redis())
            .await
            .unwrap();
    }

    /// Waits (up to 10 s) until the persister has read one of the sale's
    /// changes and not yet acknowledged it: a copy in flight.
    pub async fn copy_in_flight(&self, sale: &str) -> bool {
        let events = keys(sale).events();
        eventually(Duration::from_secs(10), || async {
            // No group yet: the persister has not looked at the sale.
            let pending: redis::Value = redis::cmd("XPENDING")
                .arg(&events)
                .arg("persist")
                .query_async(&mut self.redis())
                .await
                .ok()?;
            let redis::Value::Array(summary) = pending else {
                return None;
            };
            matches!(summary.first(), Some(redis::Value::Int(n)) if *n > 0).then_some(())
        })
        .await
        .is_some()
    }

    /// The sale's live state and stream as Redis has them now, to put back
    /// with `roll_back`: Redis coming back older than it was.
    pub async fn save_state(&self, sale: &str) -> SavedState {
        let keys = keys(sale);
        let mut conn = self.redis();
        let mut saved = Vec::new();
        for key in keys.live_state().into_iter().chain([keys.events()]) {
            let dump: Option<Vec<u8>> = redis::cmd("DUMP")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            saved.push((key, dump));
        }
        SavedState(saved)
    }

    pub async fn roll_back(&self, saved: &SavedState) {
        let mut conn = self.redis();
        for (key, dump) in &saved.0 {
            match dump {
                Some(bytes) => {
                    let _: () = redis::cmd("RESTORE")
                        .arg(key)
                        .arg(0)
                        .arg(bytes.as_slice())
                        .arg("REPLACE")
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                }
                None => {
                    let _: () = conn.del(key).await.unwrap();
                }
            }
        }
    }

    pub async fn redis_sale(&self, sale: &str) -> HashMap<String, String> {
        self.redis().hgetall(keys(sale).sale()).await.unwrap()
    }

    /// Every hold Redis keeps of a sale, by reservation id.
    pub async fn holds(&self, sale: &str) -> HashMap<String, Value> {
        let raw: HashMap<String, String> = self.redis().hgetall(keys(sale).holds()).await.unwrap();
        raw.into_iter()
            .map(|(rid, h)| (rid, serde_json::from_str(&h).unwrap()))
            .collect()
    }

    /// Checks every unit invariant against Redis and MongoDB together:
    /// each unit 1..=total is exactly one of free, held by one live hold, or
    /// sold in exactly one order; the counters agree; no buyer is over the
    /// limit in either store. Returns (available, held, sold).
    pub async fn check_invariants(&self, sale: &str) -> (i64, i64, i64) {
        // The one invariant checker is `flashdrop::audit` (also `flashdrop
        // audit`); every check must pass.
        let failed: Vec<String> = audit(self, sale)
            .await
            .iter()
            .filter(|c| !c.ok)
            .map(ToString::to_string)
            .collect();
        assert!(failed.is_empty(), "{failed:#?}");
        self.counts(sale).await
    }

    /// The sale's (available, held, sold) in Redis.
    pub async fn counts(&self, sale: &str) -> (i64, i64, i64) {
        let s = self.redis_sale(sale).await;
        let n = |k: &str| s.get(k).map(|v| v.parse::<i64>().unwrap()).unwrap_or(0);
        (n("available"), n("held"), n("sold"))
    }
}

/// The audit of a sale (`flashdrop audit`), with the app's stores.
pub async fn audit(app: &TestApp, sale: &str) -> Vec<flashdrop::audit::Check> {
    let store = &app.state.store;
    let now = store.redis.now_ms().await.unwrap();
    flashdrop::audit::audit(store, &SaleId::parse(sale).unwrap(), &[], now)
        .await
        .unwrap()
}

/// The audit of a sale from a dump of its Redis state read before.
pub async fn audit_dump(app: &TestApp, sale: &str, dump: SaleDump) -> Vec<flashdrop::audit::Check> {
    let store = &app.state.store;
    let now = store.redis.now_ms().await.unwrap();
    flashdrop::audit::audit_dump(store, &SaleId::parse(sale).unwrap(), dump, &[], now)
        .await
        .unwrap()
}

/// Polls `f` until it returns Some or `within` passes.
pub async fn eventually<T, F, Fut>(within: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An order of one unit and one purchase slot, as a confirm writes it.
pub fn one_unit_order(id: &str, sale: &str, buyer: &str, unit: i64, at_ms: i64) -> OrderDoc {
    OrderDoc {
        id: id.to_owned(),
        sale_id: sale.to_owned(),
        user_id: buyer.to_owned(),
        quantity: 1,
        units: vec![unit],
        slots: vec![1],
        unit_price_cents: 1,
        total_cents: 1,
        currency: "EUR".into(),
        created_at: bson::DateTime::from_millis(at_ms),
        payment_id: None,
        cancelled: None,
    }
}

pub async fn json(resp: reqwest::Response) -> Value {
    resp.json().await.unwrap()
}

/// Reserves and expects a new hold; returns its reservation id.
pub async fn hold(app: &TestApp, sale: &str, buyer: &str, quantity: i64) -> String {
    let resp = app.reserve(sale, buyer, quantity).await;
    assert_eq!(resp.status(), 201);
    rid_of(resp).await
}

/// The `reservation_id` of a response body.
pub async fn rid_of(resp: reqwest::Response) -> String {
    json(resp).await["reservation_id"]
        .as_str()
        .expect("a reservation_id")
        .to_owned()
}

pub async fn join(app: &TestApp, sale: &str, buyer: &str, quantity: i64) -> reqwest::Response {
    app.http
        .post(app.api(&format!("/sales/{sale}/waitlist")))
        .bearer_auth(buyer_token(buyer))
        .json(&json!({"quantity": quantity}))
        .send()
        .await
        .unwrap()
}

/// The buyer's `GET /sales/{id}/waitlist/me`.
pub async fn waitlist_me(app: &TestApp, sale: &str, buyer: &str) -> Value {
    let resp = app
        .http
        .get(app.api(&format!("/sales/{sale}/waitlist/me")))
        .bearer_auth(buyer_token(buyer))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    json(resp).await
}

pub async fn leave(app: &TestApp, sale: &str, buyer: &str) -> reqwest::Response {
    app.http
        .delete(app.api(&format!("/sales/{sale}/waitlist/me")))
        .bearer_auth(buyer_token(buyer))
        .send()
        .await
        .unwrap()
}

/// The first `n` Python blocks of a README section (from its heading on).
pub fn readme_python(heading: &str, n: usize) -> Vec<&'static str> {
    let readme = include_str!("../../README.md");
    let section = &readme[readme.find(heading).expect("the section")..];
    section
        .split("```python\n")
        .skip(1)
        .take(n)
        .map(|b| b.split("```").next().unwrap())
        .collect()
}

/// Runs Python code; expects it to succeed and returns what it printed.
pub async fn python(code: &str) -> String {
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(code)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
