//! Load mode: N watchers on one sale. Reports connect time, frames and the
//! change-to-client latency of stock frames (now - the frame's server `ts`;
//! run on the server's machine so both clocks agree), and the server's
//! resident memory when its pid is given.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use tokio_tungstenite::{connect_async, tungstenite::Message};

use crate::Target;

#[derive(clap::Args)]
pub struct LoadArgs {
    #[command(flatten)]
    target: Target,
    /// Watchers to open.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// New connections per second while ramping up.
    #[arg(long, default_value_t = 2000)]
    ramp: u64,
    /// How long to measure once everyone is connected.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// The server's pid, to read its resident memory from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Pids of the stores (Redis, the MongoDB server), whose CPU over the
    /// measurement is reported per frame too; repeatable.
    #[arg(long)]
    store_pid: Vec<u32>,
    /// Drive changes: reserve this many units per second during the
    /// measurement (needs --jwt-secret to mint buyer tokens).
    #[arg(long, default_value_t = 0)]
    drive: u64,
    /// FLASHDROP_JWT_SECRET of the server, for --drive.
    #[arg(long, env = "FLASHDROP_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Also print the figures as one JSON object on the last line.
    #[arg(long)]
    json: bool,
}

struct Stats {
    latency_us: Mutex<Histogram<u64>>,
    connect_us: Mutex<Histogram<u64>>,
    frames: AtomicU64,
    connected: AtomicU64,
    failed: AtomicU64,
}

#[derive(serde::Deserialize)]
struct Stamp<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    ts: Option<i64>,
}

fn resident_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    // Thousands of sockets need as many file descriptors.
    if let Ok((_, hard)) = rlimit::Resource::NOFILE.get() {
        let _ = rlimit::Resource::NOFILE.set(hard, hard);
    }
    let stats = Arc::new(Stats {
        latency_us: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        connect_us: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        frames: AtomicU64::new(0),
        connected: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let rss_before = args.server_pid.and_then(resident_kib);
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = args.target.live_url(None);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.connections);
    let pause = Duration::from_secs_f64(1.0 / args.ramp.max(1) as f64);
    for _ in 0..args.connections {
        let (url, stats, measuring) = (url.clone(), stats.clone(), measuring.clone());
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let Ok((mut socket, _)) = connect_async(&url).await else {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                return;
            };
            stats.connected.fetch_add(1, Ordering::Relaxed);
            let _ = stats
                .connect_us
                .lock()
                .unwrap()
                .record(t0.elapsed().as_micros() as u64);
            while let Some(Ok(msg)) = socket.next().await {
                let Message::Text(text) = msg else { continue };
                stats.frames.fetch_add(1, Ordering::Relaxed);
                if !measuring.load(Ordering::Relaxed) {
                    continue;
                }
                // Only the two fields needed: a full parse per frame would
                // cost the machine more than the server's fan-out does.
                if let Ok(frame) = serde_json::from_str::<Stamp>(&text)
                    && frame.kind == "stock"
                    && let Some(ts) = frame.ts
                {
                    let lag_us = ((now_ms() - ts).max(0) as u64) * 1000;
                    let _ = stats.latency_us.lock().unwrap().record(lag_us.max(1));
                }
            }
        }));
        tokio::time::sleep(pause).await;
    }
    // Wait for the ramp to settle.
    let deadline = Instant::now() + Duration::from_secs(60);
    while (stats.connected.load(Ordering::Relaxed) + stats.failed.load(Ordering::Relaxed))
        < args.connections as u64
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ramp = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = args.server_pid.and_then(resident_kib);

    measuring.store(true, Ordering::Relaxed);
    let driver = if args.drive > 0 {
        let secret = args
            .jwt_secret
            .clone()
            .ok_or_else(|| anyhow::anyhow!("--drive needs --jwt-secret or FLASHDROP_JWT_SECRET"))?;
        Some(tokio::spawn(drive(
            args.target.clone(),
            secret,
            args.drive,
            args.duration,
        )))
    } else {
        None
    };
    let frames_before = stats.frames.load(Ordering::Relaxed);
    let stores_cpu = || -> Option<f64> {
        args.store_pid
            .iter()
            .map(|&p| crate::cpu::of_process(p))
            .sum()
    };
    let cpu_before = (
        args.server_pid.and_then(crate::cpu::of_process),
        crate::cpu::of_process(std::process::id()),
        stores_cpu(),
    );
    tokio::time::sleep(args.duration).await;
    let cpu_after = (
        args.server_pid.and_then(crate::cpu::of_process),
        crate::cpu::of_process(std::process::id()),
        stores_cpu(),
    );
    measuring.store(false, Ordering::Relaxed);
    let driven = match driver {
        Some(d) => d.await??,
        None => 0,
    };
    let frames = stats.frames.load(Ordering::Relaxed) - frames_before;

    let connected = stats.connected.load(Ordering::Relaxed);
    println!(
        "watchers connected  {connected} of {} ({} failed) in {:.1}s",
        args.connections,
        stats.failed.load(Ordering::Relaxed),
        ramp.as_secs_f64()
    );
    {
        let c = stats.connect_us.lock().unwrap();
        println!(
            "connect time        p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
            c.value_at_quantile(0.5) as f64 / 1000.0,
            c.value_at_quantile(0.99) as f64 / 1000.0,
            c.max() as f64 / 1000.0
        );
    }
    println!(
        "frames received     {frames} in {:.0}s ({:.0}/s); changes driven {driven}",
        args.duration.as_secs_f64(),
        frames as f64 / args.duration.as_secs_f64()
    );
    {
        let l = stats.latency_us.lock().unwrap();
        if !l.is_empty() {
            println!(
                "change-to-client    p50 {:.0} ms  p95 {:.0} ms  p99 {:.0} ms  max {:.0} ms  (n={})",
                l.value_at_quantile(0.5) as f64 / 1000.0,
                l.value_at_quantile(0.95) as f64 / 1000.0,
                l.value_at_quantile(0.99) as f64 / 1000.0,
                l.max() as f64 / 1000.0,
                l.len()
            );
        } else {
            println!("change-to-client    no stock frames during the measurement");
        }
    }
    let busy = |before: Option<f64>, after: Option<f64>| {
        Some(100.0 * (after? - before?) / args.duration.as_secs_f64())
    };
    if let Some(server) = busy(cpu_before.0, cpu_after.0) {
        println!(
            "cpu while measuring server {server:.0}% of a core, this client {:.0}%",
            busy(cpu_before.1, cpu_after.1).unwrap_or(0.0)
        );
    }
    let kib_per_connection = match (rss_before, rss_idle) {
        (Some(before), Some(idle)) => {
            let per = idle.saturating_sub(before) as f64 / connected.max(1) as f64;
            println!(
                "server memory       {before} KiB before, {idle} KiB with {connected} idle watchers: {per:.1} KiB per connection"
            );
            Some(per)
        }
        _ => None,
    };
    if args.json {
        let l = stats.latency_us.lock().unwrap();
        let ms = |q: f64| (!l.is_empty()).then(|| l.value_at_quantile(q) as f64 / 1000.0);
        println!(
            "{}",
            serde_json::json!({
                "connected": connected, "failed": stats.failed.load(Ordering::Relaxed),
                "frames_per_second": frames as f64 / args.duration.as_secs_f64(),
                "p50_ms": ms(0.5), "p95_ms": ms(0.95), "p99_ms": ms(0.99),
                "kib_per_connection": kib_per_connection,
                // The server's CPU (user + system) over the measuring
                // window, per frame its watchers received.
                "server_cpu_us_per_frame": match (cpu_before.0, cpu_after.0) {
                    (Some(b), Some(a)) if frames > 0 => Some((a - b) * 1e6 / frames as f64),
                    _ => None,
                },
                // The same for the stores together (--store-pid).
                "stores_cpu_us_per_frame": match (cpu_before.2, cpu_after.2) {
                    (Some(b), Some(a)) if frames > 0 && !args.store_pid.is_empty() => Some((a - b) * 1e6 / frames as f64),
                    _ => None,
                },
            })
        );
    }
    for t in tasks {
        t.abort();
    }
    Ok(())
}

/// Reserves one unit per request at `rate` per second for `duration`, each
/// as a new buyer, so every request is one change on the feed.
async fn drive(
    target: Target,
    secret: String,
    rate: u64,
    duration: Duration,
) -> anyhow::Result<u64> {
    #[derive(serde::Serialize)]
    struct Claims<'a> {
        sub: String,
        role: &'a str,
        exp: i64,
    }
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    let http = reqwest::Client::new();
    let url = format!(
        "{}/api/v1/sales/{}/reservations",
        target.server.trim_end_matches('/'),
        target.sale
    );
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    let end = Instant::now() + duration;
    let mut sent = 0u64;
    let run = std::process::id();
    while Instant::now() < end {
        tick.tick().await;
        let claims = Claims {
            sub: format!("load-{run}-{sent}"),
            role: "buyer",
            exp: chrono::Utc::now().timestamp() + 3600,
        };
        let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key)?;
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move {
            let _ = http
                .post(url)
                .bearer_auth(token)
                .json(&serde_json::json!({"quantity": 1}))
                .send()
                .await;
        });
        sent += 1;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_type_and_ts_are_read_from_a_frame() {
        let frame =
            r#"{"type":"stock","seq":7,"available":1,"ts":1700000000123,"status":"active"}"#;
        let stamp: super::Stamp = serde_json::from_str(frame).unwrap();
        assert_eq!((stamp.kind, stamp.ts), ("stock", Some(1_700_000_000_123)));
        let snapshot: super::Stamp =
            serde_json::from_str(r#"{"type":"snapshot","seq":1,"sale":{}}"#).unwrap();
        assert_eq!((snapshot.kind, snapshot.ts), ("snapshot", None));
    }
}
