//! HTTP load modes: `buy` drives purchases (reserve, then confirm) with N
//! concurrent buyers, a fresh buyer per purchase, and `status` drives
//! `GET /sales/{id}`. The client is meant not to be the bottleneck on a
//! machine it shares with the server: tokens are minted before the clock
//! starts, each worker keeps one HTTP/1.1 connection (hyper, no pool), and
//! responses are read only as far as needed. Each mode prints one summary
//! line (or JSON with `--json`) with the rate and latency percentiles.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, header};
use hyper_util::rt::TokioIo;

use crate::Target;

#[derive(clap::Args)]
pub struct HttpLoadArgs {
    #[command(flatten)]
    target: Target,
    /// Requests (or purchases) in flight at once.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// How long to measure.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct BuyArgs {
    #[command(flatten)]
    load: HttpLoadArgs,
    /// Only reserve (no confirm): measures holds per second.
    #[arg(long)]
    reserve_only: bool,
    /// Buyer tokens minted up front; the run stops early if they run out.
    #[arg(long, default_value_t = 300_000)]
    buyers: usize,
    /// FLASHDROP_JWT_SECRET of the server, to mint buyer tokens.
    #[arg(long, env = "FLASHDROP_JWT_SECRET", hide_env_values = true)]
    jwt_secret: String,
}

/// Outcomes and latencies of one run.
struct Tally {
    latency_us: Histogram<u64>,
    /// Answers other than success, by what went wrong.
    failures: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Self {
        Self {
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
            failures: BTreeMap::new(),
        }
    }
}

pub(crate) fn mint(secret: &str, n: usize) -> anyhow::Result<Vec<String>> {
    Ok(mint_as(secret, "buy", "buyer", n)?
        .into_iter()
        .map(|(_, token)| token)
        .collect())
}

/// `n` (subject, token) pairs of `role`, subjects `<prefix>-<run>-<i>`.
pub(crate) fn mint_as(
    secret: &str,
    prefix: &str,
    role: &'static str,
    n: usize,
) -> anyhow::Result<Vec<(String, String)>> {
    #[derive(serde::Serialize)]
    struct Claims {
        sub: String,
        role: &'static str,
        exp: i64,
    }
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    let run = format!("{:x}", chrono::Utc::now().timestamp_millis());
    let exp = chrono::Utc::now().timestamp() + 3600;
    (0..n)
        .map(|i| {
            let claims = Claims {
                sub: format!("{prefix}-{run}-{i}"),
                role,
                exp,
            };
            let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key)?;
            Ok((claims.sub, token))
        })
        .collect()
}

/// One keep-alive HTTP/1.1 connection of a worker.
pub(crate) struct Conn {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
}

/// A response: its status, headers and body.
pub(crate) struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Conn {
    pub(crate) async fn open(server: &str) -> Result<Self, String> {
        let authority = server
            .trim_end_matches('/')
            .trim_start_matches("http://")
            .to_owned();
        let stream = tokio::net::TcpStream::connect(&authority)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        Ok(Self {
            send,
            host: authority,
        })
    }

    pub(crate) async fn call(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: &'static str,
    ) -> Result<Answer, String> {
        self.call_with(
            method,
            path,
            token,
            Bytes::from_static(body.as_bytes()),
            &[],
        )
        .await
    }

    /// A request with a body of any kind and extra headers.
    pub(crate) async fn call_with(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Bytes,
        headers: &[(&str, &str)],
    ) -> Result<Answer, String> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.host);
        if let Some(token) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if !body.is_empty() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        self.send
            .ready()
            .await
            .map_err(|e| format!("connection: {e}"))?;
        let resp = self
            .send
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

impl Answer {
    /// Why a request did not succeed, as a short label.
    pub(crate) fn failure(&self) -> String {
        match serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["code"].as_str().map(str::to_owned))
        {
            Some(code) => format!("{} {code}", self.status),
            None => self.status.to_string(),
        }
    }

    /// A string field of a JSON body, found without parsing the rest.
    pub(crate) fn field(&self, name: &str) -> Option<&str> {
        let body = std::str::from_utf8(&self.body).ok()?;
        let start = body.find(&format!("\"{name}\":\""))? + name.len() + 4;
        let len = body[start..].find('"')?;
        Some(&body[start..start + len])
    }
}

/// One purchase (or one reserve): Ok(()) when it went through.
async fn purchase(
    conn: &mut Conn,
    sale: &str,
    token: &str,
    reserve_only: bool,
) -> Result<(), String> {
    let hold = conn
        .call(
            Method::POST,
            &format!("/api/v1/sales/{sale}/reservations"),
            Some(token),
            r#"{"quantity":1}"#,
        )
        .await?;
    if hold.status != 201 {
        return Err(format!("reserve {}", hold.failure()));
    }
    if reserve_only {
        return Ok(());
    }
    let rid = hold
        .field("reservation_id")
        .ok_or("reserve answered without a reservation_id")?;
    let order = conn
        .call(
            Method::POST,
            &format!("/api/v1/reservations/{rid}/confirm"),
            Some(token),
            "",
        )
        .await?;
    if order.status != 201 {
        return Err(format!("confirm {}", order.failure()));
    }
    Ok(())
}

/// What each worker does, over and over.
enum Op {
    Buy {
        tokens: Vec<String>,
        next: AtomicUsize,
        reserve_only: bool,
    },
    Status,
}

const OUT_OF_TOKENS: &str = "out of buyer tokens";

impl Op {
    async fn once(&self, conn: &mut Conn, sale: &str) -> Result<(), String> {
        match self {
            Op::Buy {
                tokens,
                next,
                reserve_only,
            } => {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let token = tokens.get(i).ok_or(OUT_OF_TOKENS)?;
                purchase(conn, sale, token, *reserve_only).await
            }
            Op::Status => {
                let sale = conn
                    .call(Method::GET, &format!("/api/v1/sales/{sale}"), None, "")
                    .await?;
                if sale.status != 200 {
                    return Err(sale.failure());
                }
                Ok(())
            }
        }
    }
}

pub async fn buy(args: BuyArgs) -> anyhow::Result<()> {
    let minted = Instant::now();
    let tokens = mint(&args.jwt_secret, args.buyers)?;
    eprintln!(
        "minted {} buyer tokens in {:.1}s",
        tokens.len(),
        minted.elapsed().as_secs_f64()
    );
    let label = if args.reserve_only {
        "reserves"
    } else {
        "purchases"
    };
    let op = Op::Buy {
        tokens,
        next: AtomicUsize::new(0),
        reserve_only: args.reserve_only,
    };
    run(&args.load, label, op).await
}

pub async fn status(args: HttpLoadArgs) -> anyhow::Result<()> {
    run(&args, "status reads", Op::Status).await
}

/// Runs `op` from `concurrency` workers until the duration is over, then
/// prints the rate of successes and their latency percentiles.
async fn run(args: &HttpLoadArgs, label: &str, op: Op) -> anyhow::Result<()> {
    let tally = Arc::new(Mutex::new(Tally::new()));
    let op = Arc::new(op);
    let started = Instant::now();
    let end = started + args.duration;
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (target, tally, op) = (args.target.clone(), tally.clone(), op.clone());
            tokio::spawn(async move {
                let mut local = Tally::new();
                let mut conn = None;
                while Instant::now() < end {
                    let t0 = Instant::now();
                    let c = match conn.as_mut() {
                        Some(c) => c,
                        None => match Conn::open(&target.server).await {
                            Ok(c) => conn.insert(c),
                            Err(why) => {
                                *local.failures.entry(why).or_default() += 1;
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                continue;
                            }
                        },
                    };
                    match op.once(c, &target.sale).await {
                        Ok(()) => {
                            let _ = local
                                .latency_us
                                .record((t0.elapsed().as_micros() as u64).max(1));
                        }
                        Err(why) if why == OUT_OF_TOKENS => break,
                        Err(why) => {
                            // A broken connection is opened anew.
                            if why.starts_with("connection") || why.starts_with("request") {
                                conn = None;
                            }
                            *local.failures.entry(why).or_default() += 1;
                        }
                    }
                }
                let mut all = tally.lock().expect("tally lock");
                all.latency_us.add(&local.latency_us).expect("same bounds");
                for (why, n) in local.failures {
                    *all.failures.entry(why).or_default() += n;
                }
            })
        })
        .collect();
    for w in workers {
        w.await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let tally = tally.lock().expect("tally lock");
    let h = &tally.latency_us;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let rate = h.len() as f64 / seconds;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "what": label, "concurrency": args.concurrency, "seconds": seconds,
                "ok": h.len(), "per_second": rate, "p50_ms": ms(0.5), "p95_ms": ms(0.95),
                "p99_ms": ms(0.99), "failures": tally.failures,
            })
        );
    } else {
        println!(
            "{label:<12} {rate:8.0}/s  p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  (n={}, {} concurrent, {seconds:.1}s)",
            ms(0.5),
            ms(0.95),
            ms(0.99),
            h.len(),
            args.concurrency
        );
        for (why, n) in &tally.failures {
            println!("  not ok: {why} x{n}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_minted_one_buyer_each() {
        let tokens = super::mint("0123456789abcdef0123456789abcdef", 3).unwrap();
        assert_eq!(tokens.len(), 3);
        assert_eq!(
            tokens
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len(),
            3
        );
    }
}
