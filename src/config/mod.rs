//! Settings from the environment, validated once at start-up. A missing or bad
//! value stops start-up with an error that names the variable.

use std::{fmt, net::SocketAddr, num::NonZeroU32, time::Duration};

mod webhooks;

pub use webhooks::WebhookSettings;

/// A value that must never reach a log line.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A rate limit: `<n>/s` with an optional `,burst=<m>`, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    Off,
    PerSecond { rate: NonZeroU32, burst: NonZeroU32 },
}

impl std::str::FromStr for RateLimit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") {
            return Ok(RateLimit::Off);
        }
        let expected = "expected `<n>/s`, `<n>/s,burst=<m>` or `off`";
        let (rate, burst) = match s.split_once(',') {
            Some((rate, burst)) => (rate, Some(burst)),
            None => (s, None),
        };
        let rate: NonZeroU32 = rate
            .trim()
            .strip_suffix("/s")
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| format!("bad rate {rate:?}: {expected}"))?;
        let burst = match burst {
            None => rate,
            Some(b) => b
                .trim()
                .strip_prefix("burst=")
                .and_then(|n| n.trim().parse().ok())
                .ok_or_else(|| format!("bad burst {b:?}: {expected}"))?,
        };
        Ok(RateLimit::PerSecond { rate, burst })
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// One URL, or with `redis_cluster` comma-separated seed nodes.
    pub redis_url: String,
    pub redis_cluster: bool,
    pub mongodb_uri: Secret,
    pub mongodb_db: String,
    pub jwt_secret: Secret,
    /// Seals each lobby's seed until its draw (`FLASHDROP_SEED_KEY`); lobby
    /// sales need it.
    pub seed_key: Option<Secret>,
    /// Signs the payment provider's webhook
    /// (`FLASHDROP_PAYMENT_WEBHOOK_SECRET`); sales that take payment need it.
    pub payment_webhook_secret: Option<Secret>,
    pub log: String,
    pub log_format: LogFormat,
    pub rate_limit_buyer: RateLimit,
    pub rate_limit_ip: RateLimit,
    /// Take the client address from `X-Forwarded-For` (set only behind a
    /// proxy that writes it).
    pub trust_forwarded_for: bool,
    /// How long one MongoDB operation may take before the caller gives up
    /// (confirm answers 503).
    pub mongodb_timeout: Duration,
    /// Most live sockets this instance serves, and per client address.
    pub ws_max_connections: usize,
    /// Threads serving requests: `None` sizes the runtime to the CPUs the
    /// process may use (its affinity mask and cgroup quota).
    pub worker_threads: Option<usize>,
    pub ws_max_per_ip: Option<usize>,
    /// At most one stock frame per socket per this long; the changes in
    /// between reach it as the newest (`None`: every change is a frame).
    pub ws_stock_frame_gap: Option<Duration>,
    /// How long a confirm may take before the reaper checks MongoDB for the
    /// order and settles the hold.
    pub confirm_lease: Duration,
    /// How long a change a dead instance read from a sale's stream, and
    /// never stored, waits before another instance stores it.
    pub event_claim_idle: Duration,
    /// How often live sockets are pinged; three unanswered pings drop one.
    pub live_ping: Duration,
    /// How long a hold that ended (confirmed, cancelled, expired) stays
    /// readable in Redis; a confirmed one reads from its order afterwards.
    pub ended_hold_retention: Duration,
    /// Personal events buffered per sale before a slow socket falls
    /// behind (and catches up from Redis).
    #[doc(hidden)]
    pub live_personal_buffer: usize,
    /// A live frame a client has not taken in this long drops the socket.
    pub live_send_timeout: Duration,
    /// How long a stopping instance goes on serving, not ready, before it
    /// closes its sockets and stops taking connections
    /// (`FLASHDROP_DRAIN`): the time a load balancer takes to stop
    /// sending it work.
    pub drain: Duration,
    /// How webhooks are sent and retried.
    pub webhooks: WebhookSettings,
    /// Test-only fault point: stop a confirm right after the order is written,
    /// as a crash there would. Never set from the environment.
    #[doc(hidden)]
    pub fault_after_order_write: bool,
    /// How long a sale's rebuild may hold its lock (it is renewed while the
    /// rebuild stages its data).
    #[doc(hidden)]
    pub rebuild_lock_ttl: Duration,
    /// Test-only fault point: writing a sale's change to MongoDB fails, as
    /// an unreachable MongoDB would after the sale was read. Never set from
    /// the environment.
    #[doc(hidden)]
    pub fault_fail_sale_write: bool,
    /// Test-only fault point: a rebuild waits this long after reading
    /// MongoDB, before it writes Redis. Never set from the environment.
    #[doc(hidden)]
    pub fault_rebuild_pause: Option<Duration>,
    /// Test-only fault point: the persister waits this long between reading
    /// a sale's new changes from Redis and writing them to MongoDB, as a
    /// copy in flight when Redis is lost would. Never set from the
    /// environment.
    #[doc(hidden)]
    pub fault_copy_pause: Option<Duration>,
    /// Test-only fault point: hold the first order write this long before
    /// it is sent, as a stalled driver or network would. Never set from the
    /// environment.
    #[doc(hidden)]
    pub fault_delay_order_write: Option<Duration>,
    /// Test-only: this instance's own clock runs this many milliseconds
    /// ahead (behind when negative), to show that no decision is taken on
    /// it. Never set from the environment.
    #[doc(hidden)]
    pub fault_clock_skew_ms: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

impl ConfigError {
    fn new(var: &'static str, reason: impl Into<String>) -> Self {
        Self {
            var,
            reason: reason.into(),
        }
    }
}

/// How long a confirm may hold its lease before the reaper settles it.
pub const CONFIRM_LEASE: Duration = Duration::from_secs(10);
/// How long changes an instance read and has not stored wait before
/// another instance (or a later pass of its own, after a failed write)
/// stores them. Short, because until then they live only in Redis, and a
/// Redis lost meanwhile loses them. Far above what a live instance takes
/// to store a batch (milliseconds); one slower than this (MongoDB
/// stalling) has its batch stored twice, which the log records once.
pub const EVENT_CLAIM_IDLE: Duration = Duration::from_secs(2);

pub const DEFAULT_RATE_LIMIT_BUYER: &str = "10/s,burst=20";
pub const DEFAULT_RATE_LIMIT_IP: &str = "100/s,burst=200";

impl Settings {
    /// The Redis seed nodes of a cluster (or the single node).
    pub fn redis_nodes(&self) -> Vec<String> {
        self.redis_url
            .split(',')
            .map(|url| url.trim().to_owned())
            .collect()
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads every setting through `lookup`, so tests can pass a map.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |var: &'static str, default: &str| -> String {
            lookup(var)
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| default.to_owned())
        };
        let parse_with = |var: &'static str, default: &str| -> Result<RateLimit, ConfigError> {
            get(var, default)
                .parse()
                .map_err(|e: String| ConfigError::new(var, e))
        };

        let listen = get("FLASHDROP_LISTEN", "127.0.0.1:8080");
        let listen = listen.parse().map_err(|_| {
            ConfigError::new(
                "FLASHDROP_LISTEN",
                format!("{listen:?} is not an address like 127.0.0.1:8080"),
            )
        })?;

        let redis_cluster = match get("FLASHDROP_REDIS_CLUSTER", "false").as_str() {
            "true" | "1" => true,
            "false" | "0" => false,
            other => {
                return Err(ConfigError::new(
                    "FLASHDROP_REDIS_CLUSTER",
                    format!("{other:?} is neither `true` nor `false`"),
                ));
            }
        };
        let redis_url = get("FLASHDROP_REDIS_URL", "redis://127.0.0.1:6379");
        let nodes: Vec<&str> = redis_url.split(',').map(str::trim).collect();
        if nodes.iter().any(|url| {
            !(url.starts_with("redis://")
                || url.starts_with("rediss://")
                || url.starts_with("unix://"))
        }) {
            return Err(ConfigError::new(
                "FLASHDROP_REDIS_URL",
                "must start with redis://, rediss:// or unix:// (a comma-separated list of seed nodes with FLASHDROP_REDIS_CLUSTER=true)",
            ));
        }
        if nodes.len() > 1 && !redis_cluster {
            return Err(ConfigError::new(
                "FLASHDROP_REDIS_URL",
                "lists several nodes: set FLASHDROP_REDIS_CLUSTER=true for a cluster",
            ));
        }

        let mongodb_uri = get("FLASHDROP_MONGODB_URI", "mongodb://127.0.0.1:27017");
        if !(mongodb_uri.starts_with("mongodb://") || mongodb_uri.starts_with("mongodb+srv://")) {
            return Err(ConfigError::new(
                "FLASHDROP_MONGODB_URI",
                "must start with mongodb:// or mongodb+srv://",
            ));
        }

        let mongodb_db = get("FLASHDROP_MONGODB_DB", "flashdrop");
        if mongodb_db.len() > 63 || mongodb_db.contains(['/', '\\', '.', ' ', '"', '$']) {
            return Err(ConfigError::new(
                "FLASHDROP_MONGODB_DB",
                "must be a MongoDB database name (at most 63 characters, no / \\ . space \" $)",
            ));
        }

        let jwt_secret = lookup("FLASHDROP_JWT_SECRET")
            .ok_or_else(|| ConfigError::new("FLASHDROP_JWT_SECRET", "is required"))?;
        if jwt_secret.len() < 32 {
            return Err(ConfigError::new(
                "FLASHDROP_JWT_SECRET",
                "must be at least 32 bytes",
            ));
        }

        let seed_key = lookup("FLASHDROP_SEED_KEY").filter(|v| !v.trim().is_empty());
        if let Some(key) = &seed_key {
            if key.len() < 32 {
                return Err(ConfigError::new(
                    "FLASHDROP_SEED_KEY",
                    "must be at least 32 bytes",
                ));
            }
            if *key == jwt_secret {
                return Err(ConfigError::new(
                    "FLASHDROP_SEED_KEY",
                    "must differ from FLASHDROP_JWT_SECRET: whoever can mint tokens must not be able to open a draw's seed",
                ));
            }
        }

        let payment_webhook_secret =
            lookup("FLASHDROP_PAYMENT_WEBHOOK_SECRET").filter(|v| !v.trim().is_empty());
        if payment_webhook_secret
            .as_ref()
            .is_some_and(|s| s.len() < 16)
        {
            return Err(ConfigError::new(
                "FLASHDROP_PAYMENT_WEBHOOK_SECRET",
                "must be at least 16 bytes",
            ));
        }

        let log = get("FLASHDROP_LOG", "info");
        if tracing_subscriber::EnvFilter::try_new(&log).is_err() {
            return Err(ConfigError::new(
                "FLASHDROP_LOG",
                format!("{log:?} is not a log filter such as `info` or `flashdrop=debug`"),
            ));
        }
        let log_format = match get("FLASHDROP_LOG_FORMAT", "text").as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::new(
                    "FLASHDROP_LOG_FORMAT",
                    format!("{other:?} is neither `text` nor `json`"),
                ));
            }
        };

        // A duration such as `2s` or `500ms` that `fits`, else an error
        // saying what was `expected`.
        let duration = |var: &'static str,
                        default: &str,
                        fits: fn(&Duration) -> bool,
                        expected: &str|
         -> Result<Duration, ConfigError> {
            let value = get(var, default);
            humantime::parse_duration(&value)
                .ok()
                .filter(fits)
                .ok_or_else(|| ConfigError::new(var, format!("{value:?} is not {expected}")))
        };
        let mongodb_timeout = duration(
            "FLASHDROP_MONGODB_TIMEOUT",
            "2s",
            |d| !d.is_zero(),
            "a duration such as `2s` or `500ms`",
        )?;
        // A confirm must be over before the reaper takes it over.
        if mongodb_timeout * 2 > CONFIRM_LEASE {
            return Err(ConfigError::new(
                "FLASHDROP_MONGODB_TIMEOUT",
                format!("must be at most half the confirm lease of {CONFIRM_LEASE:?}"),
            ));
        }
        let drain = duration(
            "FLASHDROP_DRAIN",
            "0s",
            |d| *d <= Duration::from_secs(300),
            "a duration of at most 5 minutes such as `10s`",
        )?;
        let count = |var: &'static str, default: &str| -> Result<Option<usize>, ConfigError> {
            let value = get(var, default);
            if value.eq_ignore_ascii_case("off") {
                return Ok(None);
            }
            value
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .map(Some)
                .ok_or_else(|| {
                    ConfigError::new(var, format!("{value:?} is not a positive number or `off`"))
                })
        };
        let ws_max_connections =
            count("FLASHDROP_WS_MAX_CONNECTIONS", "50000")?.unwrap_or(usize::MAX);
        let ws_max_per_ip = count("FLASHDROP_WS_MAX_PER_IP", "1000")?;
        let worker_threads = match get("FLASHDROP_WORKER_THREADS", "auto").as_str() {
            "auto" => None,
            value => Some(
                value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=1024).contains(n))
                    .ok_or_else(|| {
                        ConfigError::new(
                            "FLASHDROP_WORKER_THREADS",
                            format!("{value:?} is neither `auto` nor a number from 1 to 1024"),
                        )
                    })?,
            ),
        };
        let ws_stock_frame_gap = match count("FLASHDROP_WS_STOCK_FRAMES_PER_SECOND", "off")? {
            None => None,
            Some(n @ 1..=1000) => Some(Duration::from_secs(1) / n as u32),
            Some(n) => {
                return Err(ConfigError::new(
                    "FLASHDROP_WS_STOCK_FRAMES_PER_SECOND",
                    format!("{n} is more than 1000 frames a second"),
                ));
            }
        };

        Ok(Settings {
            listen,
            redis_url,
            redis_cluster,
            mongodb_uri: Secret::new(mongodb_uri),
            mongodb_db,
            jwt_secret: Secret::new(jwt_secret),
            seed_key: seed_key.map(Secret::new),
            payment_webhook_secret: payment_webhook_secret.map(Secret::new),
            log,
            log_format,
            rate_limit_buyer: parse_with("FLASHDROP_RATE_LIMIT_BUYER", DEFAULT_RATE_LIMIT_BUYER)?,
            rate_limit_ip: parse_with("FLASHDROP_RATE_LIMIT_IP", DEFAULT_RATE_LIMIT_IP)?,
            trust_forwarded_for: match get("FLASHDROP_TRUST_FORWARDED_FOR", "false").as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                other => {
                    return Err(ConfigError::new(
                        "FLASHDROP_TRUST_FORWARDED_FOR",
                        format!("{other:?} is neither `true` nor `false`"),
                    ));
                }
            },
            mongodb_timeout,
            ws_max_connections,
            worker_threads,
            ws_max_per_ip,
            ws_stock_frame_gap,
            confirm_lease: CONFIRM_LEASE,
            event_claim_idle: EVENT_CLAIM_IDLE,
            live_ping: Duration::from_secs(15),
            live_send_timeout: Duration::from_secs(10),
            drain,
            webhooks: WebhookSettings::from_lookup(&lookup)?,
            live_personal_buffer: 64,
            ended_hold_retention: Duration::from_secs(24 * 3600),
            fault_after_order_write: false,
            fault_delay_order_write: None,
            rebuild_lock_ttl: Duration::from_secs(30),
            fault_fail_sale_write: false,
            fault_rebuild_pause: None,
            fault_copy_pause: None,
            fault_clock_skew_ms: 0,
        })
    }
}

#[cfg(test)]
mod tests;
