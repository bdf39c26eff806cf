//! `insert-ceiling`: what MongoDB alone sustains for order documents,
//! written as bare unordered `insert_many` calls of a given batch size with
//! the same write concern (majority + journal) and the same indexes as the
//! server's `orders`. The server's orders per second are compared with it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use mongodb::{
    Client, IndexModel,
    bson::{DateTime, doc},
    options::{Acknowledgment, CollectionOptions, IndexOptions, WriteConcern},
};

#[derive(clap::Args)]
pub struct CeilingArgs {
    /// MongoDB to write to (a database of its own is created and dropped).
    #[arg(long, env = "FLASHDROP_MONGODB_URI")]
    uri: String,
    /// Orders per `insert_many`.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// `insert_many` calls in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: CeilingArgs) -> anyhow::Result<()> {
    let client = Client::with_uri_str(&args.uri).await?;
    let db = client.database(&format!("ceiling_{}", std::process::id()));
    let durable = CollectionOptions::builder()
        .write_concern(
            WriteConcern::builder()
                .w(Acknowledgment::Majority)
                .journal(true)
                .build(),
        )
        .build();
    let orders = db.collection_with_options::<mongodb::bson::Document>("orders", durable);
    let unique = IndexOptions::builder().unique(true).build();
    orders
        .create_indexes([
            IndexModel::builder()
                .keys(doc! {"sale_id": 1, "units": 1})
                .options(unique.clone())
                .build(),
            IndexModel::builder()
                .keys(doc! {"user_id": 1, "sale_id": 1, "slots": 1})
                .options(unique)
                .build(),
        ])
        .await?;
    let serial = Arc::new(AtomicU64::new(0));
    let written = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let end = started + args.duration;
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (orders, serial, written) = (orders.clone(), serial.clone(), written.clone());
            let batch = args.batch;
            tokio::spawn(async move {
                while Instant::now() < end {
                    let first = serial.fetch_add(batch as u64, Ordering::Relaxed) as i64;
                    let docs: Vec<_> = (first..first + batch as i64)
                        .map(|n| {
                            doc! {
                                "_id": format!("order-{n}"), "sale_id": "ceiling",
                                "user_id": format!("buyer-{n}"), "quantity": 1_i64,
                                // As the server stores an order of one unit.
                                "units": n + 1, "slots": 1_i64, "unit_price_cents": 1_i64,
                                "total_cents": 1_i64, "currency": "EUR",
                                "created_at": DateTime::now(),
                            }
                        })
                        .collect();
                    orders.insert_many(docs).ordered(false).await?;
                    written.fetch_add(batch as u64, Ordering::Relaxed);
                }
                Ok::<_, mongodb::error::Error>(())
            })
        })
        .collect();
    for w in workers {
        w.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let rate = written.load(Ordering::Relaxed) as f64 / seconds;
    db.drop().await?;
    // Ended here, not by the driver's task as the runtime stops (which can
    // panic).
    client.shutdown().await;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "what": "insert_many ceiling", "batch": args.batch,
                "concurrency": args.concurrency, "seconds": seconds, "per_second": rate,
            })
        );
    } else {
        println!(
            "insert_many  {rate:8.0} orders/s  (batch {}, {} in flight, {seconds:.1}s)",
            args.batch, args.concurrency
        );
    }
    Ok(())
}
