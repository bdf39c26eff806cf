//! `launch`: the start of a lobby sale as a launch runs it. Buyers join
//! the lobby before the start; at the start a crowd of readers reads the
//! draw (the first read whole, the next ones conditional, as a page that
//! keeps it does) while clients ask for their buyers' turns, the way a
//! page would (again after about the `eta_seconds` they were told), and
//! reserve and confirm when let in. Reports joins per second, the draw
//! reads' latencies, the time from the start to sold out, the servers'
//! CPU time from /proc, and checks what a buyer can check: the draw hashes
//! to the commitment, is sorted and complete, and the buyers let in are
//! its head.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use hdrhistogram::Histogram;
use hmac::{Hmac, Mac};
use hyper::Method;
use sha2::{Digest, Sha256};

use crate::buy::{Answer, Conn, mint_as};

#[derive(clap::Args)]
pub struct LaunchArgs {
    /// The server, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    server: String,
    /// Buyers who join the lobby before the start.
    #[arg(long, default_value_t = 20_000)]
    buyers: usize,
    /// Units on sale (one per buyer).
    #[arg(long, default_value_t = 1_000)]
    units: i64,
    /// Buyers let in per second.
    #[arg(long, default_value_t = 300)]
    admit: i64,
    /// Clients reading the draw at the start.
    #[arg(long, default_value_t = 1_000)]
    readers: usize,
    /// Reads each reader makes: the first whole, the rest conditional.
    #[arg(long, default_value_t = 3)]
    reads: usize,
    /// Clients who read the whole draw once, besides the readers.
    #[arg(long, default_value_t = 100)]
    whole_readers: usize,
    /// Joins in flight at once.
    #[arg(long, default_value_t = 200)]
    join_concurrency: usize,
    /// Clients asking for their buyers' turns.
    #[arg(long, default_value_t = 200)]
    askers: usize,
    /// Gives up this long after the start.
    #[arg(long, default_value = "180s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Processes whose CPU time is counted (flashdrop, Redis, MongoDB).
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// FLASHDROP_JWT_SECRET of the server, to mint tokens.
    #[arg(long, env = "FLASHDROP_JWT_SECRET", hide_env_values = true)]
    jwt_secret: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

/// CPU seconds (user + system) of the processes, from /proc.
fn cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|&pid| crate::cpu::of_process(pid))
        .sum()
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

async fn open(server: &str) -> Conn {
    loop {
        match Conn::open(server).await {
            Ok(c) => return c,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn call(
    conn: &mut Option<Conn>,
    server: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Bytes,
    headers: &[(&str, &str)],
) -> Result<Answer, String> {
    if conn.is_none() {
        *conn = Some(open(server).await);
    }
    let c = conn.as_mut().expect("opened");
    let answer = c.call_with(method, path, token, body, headers).await;
    if answer.is_err() {
        *conn = None;
    }
    answer
}

fn json(answer: &Answer) -> serde_json::Value {
    serde_json::from_slice(&answer.body).unwrap_or_default()
}

/// What the draw reads saw.
#[derive(Default)]
struct Reads {
    /// A check's reads (the index and a page, or the whole draw on a
    /// server without pages): the first whole, the others conditional.
    first: Option<Histogram<u64>>,
    again: Option<Histogram<u64>>,
    /// Reads of the whole draw by those who only time it.
    whole: Option<Histogram<u64>>,
    not_yet: u64,
    failures: u64,
    first_served: Option<Instant>,
    /// The whole draw, as first read.
    body: Option<Bytes>,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Check,
    Whole,
}

/// One reader's connection and what it records.
struct Reader {
    conn: Option<Conn>,
    server: String,
    reads: Arc<Mutex<Reads>>,
    deadline: Instant,
}

impl Reader {
    /// A GET of a frozen document (gzip, conditional when `tag` is known),
    /// timed; on 503 or 409 it waits as told and answers None.
    async fn get(
        &mut self,
        path: &str,
        tag: Option<&str>,
        kind: Kind,
    ) -> Option<(Answer, Option<String>)> {
        let mut headers = vec![("Accept-Encoding", "gzip")];
        if let Some(tag) = tag {
            headers.push(("If-None-Match", tag));
        }
        let t0 = Instant::now();
        let answer = call(
            &mut self.conn,
            &self.server,
            Method::GET,
            path,
            None,
            Bytes::new(),
            &headers,
        )
        .await;
        let took = t0.elapsed().as_micros().max(1) as u64;
        // A page honours Retry-After (with a little jitter, so a crowd does
        // not come back in one instant).
        let wait = match answer {
            Ok(a) if a.status == 200 || a.status == 304 => {
                let mut r = self.reads.lock().expect("reads");
                let h = match (kind, tag) {
                    (Kind::Whole, _) => r.whole.as_mut(),
                    (Kind::Check, None) => r.first.as_mut(),
                    (Kind::Check, Some(_)) => r.again.as_mut(),
                };
                let _ = h.expect("histogram").record(took);
                r.first_served.get_or_insert_with(Instant::now);
                if a.status == 200 && r.body.is_none() && path.ends_with("/draw") {
                    r.body = Some(a.body.clone());
                }
                let tag = a
                    .headers
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                return Some((a, tag));
            }
            Ok(a) if a.status == 503 || a.status == 409 => {
                self.reads.lock().expect("reads").not_yet += 1;
                let secs = a
                    .headers
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse::<f64>().ok())
                    .unwrap_or(1.0);
                Duration::from_secs_f64(secs + rand::random::<f64>() * 0.5)
            }
            _ => {
                self.reads.lock().expect("reads").failures += 1;
                Duration::from_millis(100)
            }
        };
        if Instant::now() + wait < self.deadline {
            tokio::time::sleep(wait).await;
        }
        None
    }
}

/// Whether the server serves the draw's index (it answers 409 before the
/// start; a server without it, 404).
async fn probe_paged(server: &str, sale: &str) -> bool {
    let mut conn = None;
    let path = format!("/api/v1/sales/{sale}/lobby/draw/index");
    matches!(call(&mut conn, server, Method::GET, &path, None, Bytes::new(), &[]).await, Ok(a) if a.status != 404)
}

/// A JSON body, gzipped or not.
fn body_json(answer: &Answer) -> Option<serde_json::Value> {
    let body = &answer.body;
    if body.starts_with(&[0x1f, 0x8b]) {
        serde_json::from_reader(flate2::read::GzDecoder::new(&body[..])).ok()
    } else {
        serde_json::from_slice(body).ok()
    }
}

/// The HMAC-SHA256 value of `buyer` under `seed`, as the draw lists it.
fn value_of(seed: &str, buyer: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(seed.as_bytes()).expect("any key");
    mac.update(buyer.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The page of the index that `buyer`'s value falls in.
fn page_for(index: &Answer, buyer: &str) -> Option<i64> {
    let index = body_json(index)?;
    let value = value_of(index["seed"].as_str()?, buyer);
    index["pages"]
        .as_array()?
        .iter()
        .find(|p| {
            p["last"]
                .as_str()
                .is_some_and(|last| value.as_str() <= last)
        })
        .and_then(|p| p["page"].as_i64())
}

/// What the buyers saw.
struct Buying {
    bought: AtomicUsize,
    refused_admitted: AtomicUsize,
    asks: AtomicUsize,
    failures: AtomicUsize,
    sold_out: AtomicBool,
    sold_out_at: Mutex<Option<Instant>>,
    admitted: Mutex<HashSet<usize>>,
}

pub async fn run(args: LaunchArgs) -> anyhow::Result<()> {
    let server = args.server.trim_end_matches('/').to_owned();
    let admin = mint_as(&args.jwt_secret, "launch-admin", "admin", 1)?
        .remove(0)
        .1;
    let minted = mint_as(&args.jwt_secret, "launch", "buyer", args.buyers)?;
    let subjects: Vec<String> = minted.iter().map(|(sub, _)| sub.clone()).collect();
    let tokens: Arc<Vec<String>> = Arc::new(minted.into_iter().map(|(_, t)| t).collect());
    let mut conn = Some(open(&server).await);
    let now = chrono::Utc::now();
    let body = serde_json::json!({
        "name": "launch", "price_cents": 4999, "currency": "EUR", "total": args.units,
        "per_user_limit": 1, "hold_seconds": 120, "waitlist_enabled": false,
        "lobby_opens_at": now.to_rfc3339(),
        "starts_at": (now + chrono::Duration::seconds(3600)).to_rfc3339(),
        "ends_at": (now + chrono::Duration::seconds(7200)).to_rfc3339(),
        "admit_per_second": args.admit, "admission_seconds": 120,
    });
    let created = call(
        &mut conn,
        &server,
        Method::POST,
        "/api/v1/admin/sales",
        Some(&admin),
        Bytes::from(body.to_string()),
        &[],
    )
    .await
    .map_err(anyhow::Error::msg)?;
    anyhow::ensure!(created.status == 201, "create: {}", created.failure());
    let sale = json(&created)["id"].as_str().unwrap_or_default().to_owned();
    let lobby = call(
        &mut conn,
        &server,
        Method::GET,
        &format!("/api/v1/sales/{sale}/lobby"),
        None,
        Bytes::new(),
        &[],
    )
    .await
    .map_err(anyhow::Error::msg)?;
    let commitment = json(&lobby)["seed_sha256"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    eprintln!("sale {sale}: {} buyers join", args.buyers);

    // Joins.
    let cpu_joins = cpu_seconds(&args.server_pids);
    let joined = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let join_times = Arc::new(Mutex::new(histogram()));
    let join_failures = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..args.join_concurrency)
        .map(|_| {
            let (server, sale, tokens, next, times, failures) = (
                server.clone(),
                sale.clone(),
                tokens.clone(),
                next.clone(),
                join_times.clone(),
                join_failures.clone(),
            );
            tokio::spawn(async move {
                let mut conn = None;
                let mut local = histogram();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(token) = tokens.get(i) else { break };
                    let t0 = Instant::now();
                    match call(
                        &mut conn,
                        &server,
                        Method::POST,
                        &format!("/api/v1/sales/{sale}/lobby"),
                        Some(token),
                        Bytes::new(),
                        &[],
                    )
                    .await
                    {
                        Ok(a) if a.status == 201 => {
                            let _ = local.record(t0.elapsed().as_micros().max(1) as u64);
                        }
                        _ => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                times
                    .lock()
                    .expect("join times")
                    .add(&local)
                    .expect("same bounds");
            })
        })
        .collect();
    for w in workers {
        w.await?;
    }
    let join_seconds = joined.elapsed().as_secs_f64();
    let cpu_joins = cpu_seconds(&args.server_pids) - cpu_joins;

    // The start, two seconds from now on the server's clock.
    let starts = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let patch = call(
        &mut conn,
        &server,
        Method::PATCH,
        &format!("/api/v1/admin/sales/{sale}"),
        Some(&admin),
        Bytes::from(serde_json::json!({"starts_at": starts}).to_string()),
        &[],
    )
    .await
    .map_err(anyhow::Error::msg)?;
    anyhow::ensure!(patch.status == 200, "move the start: {}", patch.failure());
    let view = json(&patch);
    let server_starts =
        chrono::DateTime::parse_from_rfc3339(view["starts_at"].as_str().unwrap_or_default())?;
    let server_now =
        chrono::DateTime::parse_from_rfc3339(view["server_time"].as_str().unwrap_or_default())?;
    let until = (server_starts - server_now).to_std().unwrap_or_default();
    tokio::time::sleep(until).await;
    let start = Instant::now();
    let cpu_start = cpu_seconds(&args.server_pids);
    let deadline = start + args.timeout;

    // The readers: each checks one buyer's place as the buyer page does
    // (the index, then the page the buyer's value falls in; whole on the
    // first read, conditional after), and a smaller group reads the whole
    // draw once. A server without the index serves the whole draw to all.
    let paged = probe_paged(&server, &sale).await;
    let reads = Arc::new(Mutex::new(Reads {
        first: Some(histogram()),
        again: Some(histogram()),
        whole: Some(histogram()),
        ..Reads::default()
    }));
    let subjects = Arc::new(subjects);
    let mut readers = Vec::new();
    for k in 0..args.readers + args.whole_readers {
        let (server, sale, reads, subjects) = (
            server.clone(),
            sale.clone(),
            reads.clone(),
            subjects.clone(),
        );
        let checker = k < args.readers;
        let n = if checker { args.reads } else { 1 };
        readers.push(tokio::spawn(async move {
            let mut reader = Reader {
                conn: None,
                server,
                reads,
                deadline,
            };
            let buyer = subjects[k % subjects.len()].clone();
            let (mut index_tag, mut page_tag) = (None, None);
            let mut page_of: Option<i64> = None;
            let mut done = 0;
            while done < n && Instant::now() < deadline {
                if !(checker && paged) {
                    // The whole draw: a checker on a server without pages
                    // reads it as a page would; the others once, to time it.
                    let path = format!("/api/v1/sales/{sale}/lobby/draw");
                    let kind = if checker { Kind::Check } else { Kind::Whole };
                    if let Some((_, tag)) = reader.get(&path, index_tag.as_deref(), kind).await {
                        index_tag = tag;
                        done += 1;
                    }
                    continue;
                }
                let path = format!("/api/v1/sales/{sale}/lobby/draw/index");
                let Some((index, tag)) = reader.get(&path, index_tag.as_deref(), Kind::Check).await
                else {
                    continue;
                };
                index_tag = tag;
                if page_of.is_none() {
                    page_of = Some(page_for(&index, &buyer).unwrap_or(1));
                }
                let path = format!(
                    "/api/v1/sales/{sale}/lobby/draw/pages/{}",
                    page_of.unwrap_or(1)
                );
                if let Some((_, tag)) = reader.get(&path, page_tag.as_deref(), Kind::Check).await {
                    page_tag = tag;
                    done += 1;
                }
            }
        }));
    }

    // The askers: each asks for its own buyers' turns.
    let buying = Arc::new(Buying {
        bought: AtomicUsize::new(0),
        refused_admitted: AtomicUsize::new(0),
        asks: AtomicUsize::new(0),
        failures: AtomicUsize::new(0),
        sold_out: AtomicBool::new(false),
        sold_out_at: Mutex::new(None),
        admitted: Mutex::new(HashSet::new()),
    });
    let askers: Vec<_> = (0..args.askers)
        .map(|k| {
            let (server, sale, tokens, buying, units) = (
                server.clone(),
                sale.clone(),
                tokens.clone(),
                buying.clone(),
                args.units as usize,
            );
            let step = args.askers;
            tokio::spawn(async move {
                let mut due: BinaryHeap<Reverse<(Instant, usize)>> = (k..tokens.len())
                    .step_by(step)
                    .map(|i| Reverse((start, i)))
                    .collect();
                let mut conn = None;
                while let Some(Reverse((at, i))) = due.pop() {
                    if buying.sold_out.load(Ordering::Relaxed) || Instant::now() > deadline {
                        return;
                    }
                    tokio::time::sleep_until(at.into()).await;
                    buying.asks.fetch_add(1, Ordering::Relaxed);
                    let token = &tokens[i];
                    let me = match call(
                        &mut conn,
                        &server,
                        Method::GET,
                        &format!("/api/v1/sales/{sale}/lobby/me"),
                        Some(token),
                        Bytes::new(),
                        &[],
                    )
                    .await
                    {
                        Ok(a) if a.status == 200 => json(&a),
                        _ => {
                            buying.failures.fetch_add(1, Ordering::Relaxed);
                            due.push(Reverse((Instant::now() + Duration::from_millis(500), i)));
                            continue;
                        }
                    };
                    let again =
                        |secs: f64| Instant::now() + Duration::from_secs_f64(secs.clamp(0.25, 5.0));
                    match me["status"].as_str().unwrap_or_default() {
                        "admitted" => {
                            buying.admitted.lock().expect("admitted").insert(i);
                            let hold = call(
                                &mut conn,
                                &server,
                                Method::POST,
                                &format!("/api/v1/sales/{sale}/reservations"),
                                Some(token),
                                Bytes::from_static(br#"{"quantity":1}"#),
                                &[],
                            )
                            .await;
                            match hold {
                                Ok(a) if a.status == 201 || a.status == 200 => {
                                    let rid =
                                        a.field("reservation_id").unwrap_or_default().to_owned();
                                    let order = call(
                                        &mut conn,
                                        &server,
                                        Method::POST,
                                        &format!("/api/v1/reservations/{rid}/confirm"),
                                        Some(token),
                                        Bytes::new(),
                                        &[],
                                    )
                                    .await;
                                    match order {
                                        Ok(o) if o.status == 201 || o.status == 200 => {
                                            let n =
                                                buying.bought.fetch_add(1, Ordering::Relaxed) + 1;
                                            if n >= units {
                                                buying.sold_out.store(true, Ordering::Relaxed);
                                                buying
                                                    .sold_out_at
                                                    .lock()
                                                    .expect("sold out")
                                                    .get_or_insert_with(Instant::now);
                                            }
                                        }
                                        _ => {
                                            buying.failures.fetch_add(1, Ordering::Relaxed);
                                        }
                                    }
                                }
                                Ok(a) if a.status == 409 => {} // sold out as it came
                                Ok(a) if a.status == 403 => {
                                    buying.refused_admitted.fetch_add(1, Ordering::Relaxed);
                                }
                                _ => {
                                    buying.failures.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        "queued" => {
                            let eta = me["eta_seconds"].as_f64().unwrap_or(1.0);
                            due.push(Reverse((again(eta * 0.8), i)));
                        }
                        // The draw is being made: ask again in a second.
                        "lobby" => due.push(Reverse((again(1.0), i))),
                        "sold_out" | "expired" => {}
                        _ => {
                            buying.failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for a in askers {
        a.await?;
    }
    let sold_out_at = *buying.sold_out_at.lock().expect("sold out");
    let cpu_sale = cpu_seconds(&args.server_pids) - cpu_start;
    for r in readers {
        r.await?;
    }

    // The same draw read again once the sale has settled: as many readers
    // at once, each checking one place (or reading the whole draw, on a
    // server without pages), without the start's crowd on the cores.
    let settled = Arc::new(Mutex::new(Reads {
        first: Some(histogram()),
        again: Some(histogram()),
        whole: Some(histogram()),
        ..Reads::default()
    }));
    let gate = Arc::new(tokio::sync::Barrier::new(args.readers));
    let wave: Vec<_> = (0..args.readers)
        .map(|k| {
            let (server, sale, reads, subjects, gate) = (
                server.clone(),
                sale.clone(),
                settled.clone(),
                subjects.clone(),
                gate.clone(),
            );
            tokio::spawn(async move {
                let mut reader = Reader {
                    conn: Some(open(&server).await),
                    server,
                    reads,
                    deadline: Instant::now() + Duration::from_secs(60),
                };
                gate.wait().await;
                if !paged {
                    let _ = reader
                        .get(
                            &format!("/api/v1/sales/{sale}/lobby/draw"),
                            None,
                            Kind::Check,
                        )
                        .await;
                    return;
                }
                let path = format!("/api/v1/sales/{sale}/lobby/draw/index");
                if let Some((index, _)) = reader.get(&path, None, Kind::Check).await {
                    let page = page_for(&index, &subjects[k % subjects.len()]).unwrap_or(1);
                    let path = format!("/api/v1/sales/{sale}/lobby/draw/pages/{page}");
                    let _ = reader.get(&path, None, Kind::Check).await;
                }
            })
        })
        .collect();
    for r in wave {
        r.await?;
    }
    let settled = std::mem::take(&mut *settled.lock().expect("reads"));
    let settled = settled.first.expect("histogram");

    // What a buyer can check, and whether those let in were the draw's head.
    let reads = std::mem::take(&mut *reads.lock().expect("reads"));
    let (mut draw_ok, mut in_order) = (false, false);
    if let Some(body) = &reads.body {
        let draw = body_json(&Answer {
            status: 200,
            headers: Default::default(),
            body: body.clone(),
        })
        .unwrap_or_default();
        let seed = draw["seed"].as_str().unwrap_or_default();
        let order: Vec<&str> = draw["order"]
            .as_array()
            .map(|o| o.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        draw_ok = hex::encode(Sha256::digest(seed.as_bytes())) == commitment
            && order.windows(2).all(|w| w[0] < w[1])
            && order.len() == args.buyers;
        let place = |buyer: &str| order.binary_search(&value_of(seed, buyer).as_str()).ok();
        // Every buyer seen let in stands among the first the server says
        // it let in (it lets latecomers in only after the whole draw).
        let lobby = call(
            &mut conn,
            &server,
            Method::GET,
            &format!("/api/v1/sales/{sale}/lobby"),
            None,
            Bytes::new(),
            &[],
        )
        .await
        .map_err(anyhow::Error::msg)?;
        let let_in = json(&lobby)["admitted"].as_u64().unwrap_or(0) as usize;
        let admitted = std::mem::take(&mut *buying.admitted.lock().expect("admitted"));
        in_order = !admitted.is_empty()
            && admitted
                .iter()
                .all(|i| place(&subjects[*i]).is_some_and(|p| p < let_in));
    }
    let first = reads.first.as_ref().expect("histogram");
    let again = reads.again.as_ref().expect("histogram");
    let whole = reads.whole.as_ref().expect("histogram");
    let join_times = join_times.lock().expect("join times");
    let sold_out_s = sold_out_at.map(|t| (t - start).as_secs_f64());
    let out = serde_json::json!({
        "sale": sale,
        "buyers": args.buyers, "units": args.units, "admit": args.admit,
        "joins_per_second": args.buyers as f64 / join_seconds,
        "join_p50_ms": ms(&join_times, 0.5), "join_p99_ms": ms(&join_times, 0.99),
        "join_failures": join_failures.load(Ordering::Relaxed),
        "draw_reads": first.len() + again.len() + whole.len(),
        "draw_first_p50_ms": ms(first, 0.5), "draw_first_p99_ms": ms(first, 0.99),
        "draw_again_p50_ms": ms(again, 0.5), "draw_again_p99_ms": ms(again, 0.99),
        "draw_paged": paged, "draw_whole_reads": whole.len(),
        "draw_settled_p50_ms": ms(&settled, 0.5), "draw_settled_p99_ms": ms(&settled, 0.99),
        "draw_whole_p50_ms": ms(whole, 0.5), "draw_whole_p99_ms": ms(whole, 0.99),
        "draw_not_yet": reads.not_yet, "draw_failures": reads.failures,
        "draw_first_served_s": reads.first_served.map(|t| (t - start).as_secs_f64()),
        "sold_out_s": sold_out_s,
        "bought": buying.bought.load(Ordering::Relaxed),
        "admitted_refused": buying.refused_admitted.load(Ordering::Relaxed),
        "asks": buying.asks.load(Ordering::Relaxed),
        "failures": buying.failures.load(Ordering::Relaxed),
        "cpu_joins_s": cpu_joins, "cpu_start_to_sold_out_s": cpu_sale,
        "draw_checks": draw_ok, "admitted_head_of_draw": in_order,
    });
    if args.json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}
