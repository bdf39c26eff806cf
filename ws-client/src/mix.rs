//! `mix`: buyers who behave like people, spread over several servers, for
//! `scripts/chaos`: they reserve, then confirm, cancel or walk away; when
//! stock is out they join the line, sometimes leave it, and take their
//! promotions. Errors (a server killed, a store paused) are counted, not
//! fatal. Every reservation answered 201 at confirm is written to a file,
//! so an audit can check each is a durable order. With `--pay` (a sale that
//! takes payment) a buyer pays instead of confirming: the intent, then the
//! provider's signed webhook says succeeded (a confirmed answer counts as
//! a 201) or failed, retried while no server answers. A buyer who
//! confirmed sometimes cancels the order (`DELETE /me/orders/{id}`).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};

#[derive(clap::Args)]
pub struct MixArgs {
    /// Server base URLs; each buyer request goes to one of them.
    #[arg(long = "server", required = true)]
    servers: Vec<String>,
    #[arg(long)]
    sale: String,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Where to write the reservation ids confirmed with 201 or 200.
    #[arg(long)]
    confirmed_out: std::path::PathBuf,
    /// FLASHDROP_JWT_SECRET of the servers, to mint buyer tokens.
    #[arg(long, env = "FLASHDROP_JWT_SECRET", hide_env_values = true)]
    jwt_secret: String,
    /// The sale takes payment: pay through the webhook instead of confirming.
    #[arg(long)]
    pay: bool,
    /// FLASHDROP_PAYMENT_WEBHOOK_SECRET of the servers, to sign the webhook.
    #[arg(long, env = "FLASHDROP_PAYMENT_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
}

#[derive(Default)]
struct Outcomes {
    counts: BTreeMap<String, u64>,
    confirmed: Vec<String>,
}

fn token(secret: &str, sub: &str) -> String {
    #[derive(serde::Serialize)]
    struct Claims<'a> {
        sub: &'a str,
        role: &'static str,
        exp: i64,
    }
    let claims = Claims {
        sub,
        role: "buyer",
        exp: chrono::Utc::now().timestamp() + 3600,
    };
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("token")
}

/// One request: its status (0 when the server could not be reached) and body.
pub async fn call(req: reqwest::RequestBuilder) -> (u16, Value) {
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            (status, resp.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

pub async fn run(args: MixArgs) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let end = Instant::now() + args.duration;
    let args = Arc::new(args);
    let workers: Vec<_> = (0..args.concurrency)
        .map(|w| {
            let (http, outcomes, args) = (http.clone(), outcomes.clone(), args.clone());
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(w as u64);
                while Instant::now() < end {
                    // Ten buyers per worker: the per-buyer limit comes into play.
                    let buyer = format!("mix-{w}-{}", rng.random_range(0..10));
                    let token = token(&args.jwt_secret, &buyer);
                    let server = &args.servers[rng.random_range(0..args.servers.len())];
                    let api = format!("{}/api/v1", server.trim_end_matches('/'));
                    let note = |what: String| {
                        *outcomes.lock().unwrap().counts.entry(what).or_default() += 1;
                    };
                    let quantity = rng.random_range(1..=2);
                    let (status, body) = call(
                        http.post(format!("{api}/sales/{}/reservations", args.sale))
                            .bearer_auth(&token)
                            .json(&json!({"quantity": quantity})),
                    )
                    .await;
                    note(format!("reserve {status}"));
                    let rid = match status {
                        200 | 201 => body["reservation_id"].as_str().map(str::to_owned),
                        409 if body["code"] == "sold_out" => {
                            let (joined, _) = call(
                                http.post(format!("{api}/sales/{}/waitlist", args.sale))
                                    .bearer_auth(&token)
                                    .json(&json!({"quantity": 1})),
                            )
                            .await;
                            note(format!("join {joined}"));
                            tokio::time::sleep(Duration::from_millis(rng.random_range(50..400)))
                                .await;
                            let (_, me) = call(
                                http.get(format!("{api}/sales/{}/waitlist/me", args.sale))
                                    .bearer_auth(&token),
                            )
                            .await;
                            if me["status"] == "promoted" {
                                me["reservation_id"].as_str().map(str::to_owned)
                            } else {
                                if rng.random_bool(0.2) {
                                    let (left, _) = call(
                                        http.delete(format!(
                                            "{api}/sales/{}/waitlist/me",
                                            args.sale
                                        ))
                                        .bearer_auth(&token),
                                    )
                                    .await;
                                    note(format!("leave {left}"));
                                }
                                None
                            }
                        }
                        _ => None,
                    };
                    let Some(rid) = rid else {
                        tokio::time::sleep(Duration::from_millis(rng.random_range(5..50))).await;
                        continue;
                    };
                    tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
                    let paying = args
                        .pay
                        .then(|| args.webhook_secret.clone().unwrap_or_default());
                    if let Some(secret) = paying {
                        let status = match rng.random_range(0..10) {
                            0..6 => "succeeded",
                            6..8 => "failed",
                            _ => {
                                note("walk away".into());
                                continue;
                            }
                        };
                        let mut apis: Vec<String> = args
                            .servers
                            .iter()
                            .map(|s| format!("{}/api/v1", s.trim_end_matches('/')))
                            .collect();
                        apis.rotate_left(rng.random_range(0..args.servers.len()));
                        let (code, outcome) =
                            crate::pay::pay(&http, &apis, &token, &rid, status, &secret, 20).await;
                        note(format!("pay {status} {code} {outcome}"));
                        if code == 200 && outcome == "confirmed" {
                            outcomes.lock().unwrap().confirmed.push(rid);
                        }
                        continue;
                    }
                    match rng.random_range(0..10) {
                        0..5 => {
                            let (status, _) = call(
                                http.post(format!("{api}/reservations/{rid}/confirm"))
                                    .bearer_auth(&token),
                            )
                            .await;
                            note(format!("confirm {status}"));
                            if status == 200 || status == 201 {
                                outcomes.lock().unwrap().confirmed.push(rid.clone());
                                // Some buyers change their mind (a sale
                                // with cancel_seconds lets them).
                                if rng.random_bool(0.2) {
                                    let (status, _) = call(
                                        http.delete(format!("{api}/me/orders/{rid}"))
                                            .bearer_auth(&token),
                                    )
                                    .await;
                                    note(format!("cancel order {status}"));
                                }
                            }
                        }
                        5..8 => {
                            let (status, _) = call(
                                http.delete(format!("{api}/reservations/{rid}"))
                                    .bearer_auth(&token),
                            )
                            .await;
                            note(format!("cancel {status}"));
                        }
                        _ => note("walk away".into()),
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await?;
    }
    let outcomes = outcomes.lock().unwrap();
    std::fs::write(&args.confirmed_out, outcomes.confirmed.join("\n") + "\n")?;
    let line: Vec<String> = outcomes
        .counts
        .iter()
        .map(|(what, n)| format!("{what}: {n}"))
        .collect();
    println!("{}", line.join(", "));
    Ok(())
}
