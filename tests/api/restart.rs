//! A rolling restart drops no buyer: two `flashdrop serve` processes behind
//! a balancer that follows `/readyz` (as Kubernetes' endpoints do), buyers,
//! watchers and a waiting line on them, and each process stopped with
//! SIGTERM and started again, one after the other. No request fails but
//! with a retryable 503, every confirm that answered 201 is an order, every
//! socket that closes closes with 1012 and its watcher ends on the true
//! counts, and every invariant holds.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, protocol::frame::coding::CloseCode};

use crate::helpers::{
    admin_token, buyer_token, eventually, free_port, sale_body, serve_command, servers, unique_db,
    wait_for_port,
};

/// How long a stopping process goes on serving, not ready.
const DRAIN: &str = "1500ms";

/// One `flashdrop serve` process on a fixed port.
struct Serve {
    port: u16,
    db: String,
    child: Option<tokio::process::Child>,
}

impl Serve {
    fn start(port: u16, db: &str) -> Self {
        let child = serve_command(port, db)
            .env("FLASHDROP_DRAIN", DRAIN)
            .env("FLASHDROP_LOG", "error")
            .env("FLASHDROP_WS_MAX_PER_IP", "off")
            .spawn()
            .expect("flashdrop serve starts");
        wait_for_port(port, "flashdrop");
        Self {
            port,
            db: db.to_owned(),
            child: Some(child),
        }
    }

    fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGTERM, then the exit; how long the stop took.
    async fn terminate(&mut self) -> Duration {
        let mut child = self.child.take().expect("running");
        let began = Instant::now();
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(child.id().expect("a pid") as i32, libc::SIGTERM) };
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .expect("it stops within 30 s")
            .unwrap();
        assert!(status.success(), "a clean exit: {status}");
        began.elapsed()
    }

    fn restart(&mut self) {
        *self = Self::start(self.port, &self.db.clone());
    }
}

/// The balancer: sends work only to instances whose `/readyz` says 200,
/// as it found them at its last look (every 100 ms).
#[derive(Clone)]
struct Balancer {
    instances: Arc<Vec<(String, AtomicBool)>>,
    turn: Arc<AtomicUsize>,
}

impl Balancer {
    fn new(addresses: Vec<String>, stop: Arc<AtomicBool>) -> Self {
        let b = Self {
            instances: Arc::new(
                addresses
                    .into_iter()
                    .map(|a| (a, AtomicBool::new(true)))
                    .collect(),
            ),
            turn: Arc::default(),
        };
        let watch = b.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_millis(500))
                .build()
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                for (address, ready) in watch.instances.iter() {
                    let ok = http
                        .get(format!("{address}/readyz"))
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200);
                    ready.store(ok, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        b
    }

    /// A ready instance, waiting for one if none is.
    async fn pick(&self) -> String {
        loop {
            let n = self.instances.len();
            for _ in 0..n {
                let i = self.turn.fetch_add(1, Ordering::Relaxed) % n;
                let (address, ready) = &self.instances[i];
                if ready.load(Ordering::Relaxed) {
                    return address.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// What the load saw.
#[derive(Default)]
struct Seen {
    /// Answers by what they were.
    answers: BTreeMap<String, usize>,
    /// Anything but an expected answer or a 503.
    failures: Vec<String>,
    /// Sales and reservations whose confirm answered 201.
    confirmed: Vec<(String, String)>,
    /// Socket closes by code (1006: without a close frame).
    closes: BTreeMap<u16, usize>,
}

impl Seen {
    fn answer(&mut self, what: &str, status: u16, expected: &[u16]) -> bool {
        *self.answers.entry(format!("{what} {status}")).or_default() += 1;
        if status != 503 && !expected.contains(&status) {
            self.failures.push(format!("{what} answered {status}"));
        }
        expected.contains(&status)
    }
}

/// What a buyer does with the k-th hold on its sale: `plan[k % plan.len()]`.
/// Counted per hold, not per round of a buyer's loop: the buyers start
/// together and loop at the same pace, so their rounds stay in step, and
/// a line's promotions, which come when holds lapse, all fell on the same
/// round of five ("walk away"); the line sale then sold nothing.
type Plan = &'static [Action];

/// What a buyer does with a hold: confirm it, give it back, or leave it to
/// lapse.
#[derive(Clone, Copy)]
enum Action {
    Cancel,
    WalkAway,
    Confirm,
}

use Action::{Cancel, Confirm, WalkAway};

/// The open sale: most buyers confirm.
const SELLING: Plan = &[Cancel, WalkAway, Confirm, Confirm, Confirm];
/// The line sale: few confirm, so its 15 units last and its line moves
/// (by cancels and lapsed holds) all through the restarts.
const LINE: Plan = &[Cancel, WalkAway, Confirm, Cancel, WalkAway];

async fn buyer(
    balancer: Balancer,
    sale: String,
    (plan, holds): (Plan, Arc<AtomicUsize>),
    n: usize,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
) {
    let http = reqwest::Client::new();
    let (mut round, mut token) = (0u64, String::new());
    let mut in_line = false;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        // A new buyer each round, so the per-buyer limit never stops them;
        // one in line stays until a promotion gives them a hold, which
        // their next reserve finds.
        if !in_line {
            token = buyer_token(&format!("rolling-{n}-{round}"));
        }
        let base = balancer.pick().await;
        let send = |req: reqwest::RequestBuilder| async { req.bearer_auth(&token).send().await };
        let hold = match send(
            http.post(format!("{base}/api/v1/sales/{sale}/reservations"))
                .json(&json!({"quantity": 1})),
        )
        .await
        {
            Ok(r) => r,
            Err(e) => {
                seen.lock().unwrap().failures.push(format!("reserve: {e}"));
                continue;
            }
        };
        let status = hold.status().as_u16();
        let body: Value = hold.json().await.unwrap_or_default();
        let what = match body["code"].as_str() {
            Some(code) => format!("reserve {code}"),
            None => "reserve".to_owned(),
        };
        if !seen
            .lock()
            .unwrap()
            .answer(&what, status, &[200, 201, 403, 409])
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        if status == 409 {
            // Sold out for now: take a place in line.
            let base = balancer.pick().await;
            match send(
                http.post(format!("{base}/api/v1/sales/{sale}/waitlist"))
                    .json(&json!({"quantity": 1})),
            )
            .await
            {
                Ok(r) => {
                    let status = r.status().as_u16();
                    seen.lock()
                        .unwrap()
                        .answer("join", status, &[200, 201, 409]);
                    in_line = status == 200 || status == 201;
                }
                Err(e) => seen.lock().unwrap().failures.push(format!("join: {e}")),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        in_line = false;
        let rid = body["reservation_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let base = balancer.pick().await;
        // Confirm, give the units back or walk away, as the plan says.
        let (what, req, expected): (&str, _, &[u16]) =
            match plan[holds.fetch_add(1, Ordering::Relaxed) % plan.len()] {
                Cancel => (
                    "cancel",
                    http.delete(format!("{base}/api/v1/reservations/{rid}")),
                    &[204, 410, 409],
                ),
                WalkAway => (
                    "walk away",
                    http.get(format!("{base}/api/v1/reservations/{rid}")),
                    &[200],
                ),
                Confirm => (
                    "confirm",
                    http.post(format!("{base}/api/v1/reservations/{rid}/confirm")),
                    &[200, 201, 410, 409],
                ),
            };
        match send(req).await {
            Ok(r) => {
                let status = r.status().as_u16();
                let mut seen = seen.lock().unwrap();
                seen.answer(what, status, expected);
                if what == "confirm" && status == 201 {
                    seen.confirmed.push((sale.clone(), rid));
                }
            }
            Err(e) => seen.lock().unwrap().failures.push(format!("{what}: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A watcher: follows the feed through restarts; its last counts.
async fn watcher(
    balancer: Balancer,
    sale: String,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    last: Arc<Mutex<Value>>,
) {
    while !stop.load(Ordering::Relaxed) {
        let base = balancer.pick().await.replace("http://", "ws://");
        let Ok((mut socket, _)) =
            tokio_tungstenite::connect_async(format!("{base}/api/v1/sales/{sale}/live")).await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        loop {
            let msg = tokio::select! {
                msg = socket.next() => msg,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if stop.load(Ordering::Relaxed) {
                        let _ = socket.close(None).await;
                        return;
                    }
                    continue;
                }
            };
            match msg {
                Some(Ok(Message::Text(text))) => {
                    let frame: Value = serde_json::from_str(&text).unwrap_or_default();
                    let counts = match frame["type"].as_str() {
                        Some("snapshot") => frame["sale"].clone(),
                        Some("stock") => frame.clone(),
                        _ => continue,
                    };
                    // A snapshot starts afresh; a stock frame counts if newer.
                    let mut last = last.lock().unwrap();
                    if frame["type"] == "snapshot" || frame["seq"].as_i64() > last["seq"].as_i64() {
                        *last = json!({
                            "seq": frame["seq"], "available": counts["available"],
                            "held": counts["held"], "sold": counts["sold"],
                        });
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map_or(1005, |f| u16::from(f.code));
                    *seen.lock().unwrap().closes.entry(code).or_default() += 1;
                    break;
                }
                Some(Ok(Message::Ping(p))) => {
                    let _ = socket.send(Message::Pong(p)).await;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    *seen
                        .lock()
                        .unwrap()
                        .closes
                        .entry(u16::from(CloseCode::Abnormal))
                        .or_default() += 1;
                    break;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_drops_no_buyer() {
    let db = unique_db();
    let (pa, pb) = (free_port(), free_port());
    let mut a = Serve::start(pa, &db);
    let mut b = Serve::start(pb, &db);
    let http = reqwest::Client::new();
    // One sale that sells all along, one that sells out at once and then
    // lives on its waiting line (cancels and lapsed holds promote waiters).
    let mut sales = Vec::new();
    for (total, hold) in [(5000, 2), (15, 1)] {
        let created = http
            .post(format!("{}/api/v1/admin/sales", a.address()))
            .bearer_auth(admin_token())
            .json(&sale_body(
                json!({"total": total, "per_user_limit": 1, "hold_seconds": hold}),
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        sales.push(
            created.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }

    let (stop_buyers, stop_watchers, stop) = (
        Arc::default(),
        Arc::default(),
        Arc::new(AtomicBool::new(false)),
    );
    let balancer = Balancer::new(vec![a.address(), b.address()], stop.clone());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let plans = [(SELLING, Arc::default()), (LINE, Arc::default())];
    let buyers: Vec<_> = (0..40)
        .map(|n| {
            let sale = sales[n % 2].clone();
            let (plan, holds) = &plans[n % 2];
            tokio::spawn(buyer(
                balancer.clone(),
                sale,
                (*plan, Arc::clone(holds)),
                n,
                seen.clone(),
                Arc::clone(&stop_buyers),
            ))
        })
        .collect();
    let lasts: Vec<(usize, Arc<Mutex<Value>>)> = (0..20)
        .map(|n| (n % 2, Arc::new(Mutex::new(json!({"seq": -1})))))
        .collect();
    let watchers: Vec<_> = lasts
        .iter()
        .map(|(s, last)| {
            let sale = sales[*s].clone();
            tokio::spawn(watcher(
                balancer.clone(),
                sale,
                seen.clone(),
                Arc::clone(&stop_watchers),
                last.clone(),
            ))
        })
        .collect();
    let confirmed = || seen.lock().unwrap().confirmed.len();
    let more_confirmed = |than: usize| async move {
        eventually(Duration::from_secs(20), || async {
            (confirmed() > than + 20).then_some(())
        })
        .await
        .expect("buyers go on buying");
    };
    // One after the other: stop (buyers buying all along), start again,
    // and wait until buyers buy through it again.
    more_confirmed(0).await;
    let mut stops = Vec::new();
    for which in [&mut a, &mut b] {
        let before = confirmed();
        stops.push(which.terminate().await);
        assert!(
            confirmed() > before,
            "buyers bought while an instance was stopping"
        );
        which.restart();
        more_confirmed(confirmed()).await;
    }
    stop_buyers.store(true, Ordering::Relaxed);
    for task in buyers {
        task.await.unwrap();
    }
    // Every hold ends (confirmed, or expired into the line or stock); then
    // every watcher must come to its sale's counts.
    let mut truths = Vec::new();
    for sale in &sales {
        let url = format!("{}/api/v1/sales/{sale}", a.address());
        let truth = eventually(Duration::from_secs(90), || async {
            let view: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
            (view["held"] == 0).then_some(view)
        })
        .await
        .expect("every hold ends");
        truths.push(truth);
    }
    for (s, last) in &lasts {
        let truth = &truths[*s];
        let told = eventually(Duration::from_secs(10), || async {
            let last = last.lock().unwrap().clone();
            ["available", "held", "sold"]
                .iter()
                .all(|f| last[*f] == truth[*f])
                .then_some(())
        })
        .await;
        assert!(
            told.is_some(),
            "a watcher ended on {}, the sale is {truth}",
            last.lock().unwrap()
        );
    }
    stop_watchers.store(true, Ordering::Relaxed);
    for task in watchers {
        task.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    println!(
        "stops took {stops:?}; {} confirmed; answers {:?}; closes {:?}; sales {truths:?}",
        seen.confirmed.len(),
        seen.answers,
        seen.closes
    );

    // No request failed but with a retryable 503.
    assert!(
        seen.failures.is_empty(),
        "{:?}",
        &seen.failures[..seen.failures.len().min(10)]
    );
    // Every socket that closed was told why: a restart.
    let unexplained: usize = seen
        .closes
        .iter()
        .filter(|(code, _)| **code != 1012)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(unexplained, 0, "{:?}", seen.closes);
    assert!(
        seen.closes.get(&1012).copied().unwrap_or(0) >= 20,
        "every watcher was moved at least once"
    );
    // The line sale formed a line, and waiters found their promotions.
    assert!(
        seen.answers.get("join 201").copied().unwrap_or(0) > 0,
        "a line formed"
    );
    assert!(
        seen.answers.get("reserve 200").copied().unwrap_or(0) > 0,
        "waiters promoted"
    );
    assert!(truths[1]["sold"].as_i64() > Some(0), "{}", truths[1]);
    // Every confirm that said 201 is an order, and every invariant holds,
    // in both stores.
    let store = flashdrop::store::Store {
        redis: match servers().redis_url.contains(',') {
            true => {
                let seeds: Vec<String> =
                    servers().redis_url.split(',').map(str::to_owned).collect();
                flashdrop::store::Redis::connect_cluster(&seeds)
                    .await
                    .unwrap()
            }
            false => flashdrop::store::Redis::connect(&servers().redis_url)
                .await
                .unwrap(),
        },
        mongo: flashdrop::store::Mongo::connect(&servers().mongo_uri, &db)
            .await
            .unwrap(),
        clock: Default::default(),
    };
    let now = store.redis.now_ms().await.unwrap();
    for sale in &sales {
        let sale_id = flashdrop::ids::SaleId::parse(sale).unwrap();
        let confirmed: Vec<String> = seen
            .confirmed
            .iter()
            .filter(|(s, _)| s == sale)
            .map(|(_, rid)| rid.clone())
            .collect();
        let checks = flashdrop::audit::audit(&store, &sale_id, &confirmed, now)
            .await
            .unwrap();
        let failed: Vec<String> = checks
            .iter()
            .filter(|c| !c.ok)
            .map(ToString::to_string)
            .collect();
        assert!(failed.is_empty(), "{failed:?}");
    }
    drop((a, b));
}
