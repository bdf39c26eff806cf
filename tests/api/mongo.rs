//! How the server talks to MongoDB, watched through the driver's command
//! monitoring on a real server.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use bson::Document;
use flashdrop::{
    holds::Coverage,
    ids::{ReservationId, SaleId},
    persister::Persister,
    recovery::Recovery,
    store::{Mongo, Store},
};
use mongodb::event::{EventHandler, command::CommandEvent};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::helpers::{TestApp, eventually, hold, servers, spawn_app, test_settings};

/// A client of the app's database that keeps every `find` it sends.
async fn watching_finds(app: &TestApp) -> (Mongo, Arc<Mutex<Vec<Document>>>) {
    let finds: Arc<Mutex<Vec<Document>>> = Arc::default();
    let seen = finds.clone();
    let db = app.state.store.mongo.database_name();
    let mongo = Mongo::connect_with(&servers().mongo_uri, &db, |options| {
        options.command_event_handler = Some(EventHandler::callback(move |event| {
            if let CommandEvent::Started(started) = event
                && started.command_name == "find"
            {
                seen.lock().unwrap().push(started.command);
            }
        }));
    })
    .await
    .unwrap();
    (mongo, finds)
}

/// "Is the order there?" decides whether units go back: it must not read
/// a write a primary step-down can still roll back.
#[tokio::test]
async fn order_lookups_read_with_majority_read_concern() {
    let app = spawn_app().await;
    let sale = app.create_sale(json!({"total": 4})).await;
    let rid = hold(&app, &sale, "reader", 1).await;
    assert_eq!(app.confirm(&rid, "reader").await.status(), 201);

    let (mongo, finds) = watching_finds(&app).await;
    let rid = ReservationId::parse(&rid).unwrap();
    assert!(mongo.order(rid.as_str()).await.unwrap().is_some());
    mongo.order_of(&rid, "reader").await.unwrap();
    let finds = finds.lock().unwrap();
    assert_eq!(finds.len(), 2, "{finds:?}");
    for find in finds.iter() {
        let level = find
            .get_document("readConcern")
            .and_then(|c| c.get_str("level"))
            .unwrap_or("none");
        assert_eq!(level, "majority", "{find}");
    }
}

/// Every few passes the persister reads the log's last seq again (other
/// instances record changes too). After its first read it asks only for
/// changes above the seq it knows, so the read costs what was recorded
/// since, not the whole log: a server that reads every match before it
/// sorts and stops (the MongoDB-wire server here does) spent 150 ms of CPU
/// a second rereading a sale of 86,000 changes.
#[tokio::test]
async fn the_persister_rereads_the_log_only_above_the_seq_it_knows() {
    let app = spawn_app().await;
    let sale = app.create_sale(json!({"total": 40})).await;
    for i in 0..20 {
        hold(&app, &sale, &format!("early-{i}"), 1).await;
    }
    let known = app.stock_events(&sale).await.len() as i64;
    assert_eq!(known, 21);

    let (mongo, finds) = watching_finds(&app).await;
    let store = Store {
        redis: app.state.store.redis.clone(),
        mongo,
        clock: Default::default(),
    };
    let settings = test_settings(&servers().redis_url, &servers().mongo_uri);
    let coverage = Arc::new(Coverage::default());
    coverage.hold_made(&SaleId::parse(&sale).unwrap());
    let persister = Persister {
        recovery: Recovery::new(store.clone(), &settings),
        store,
        coverage,
        claim_idle: Duration::from_secs(30),
    };
    let stop = CancellationToken::new();
    let running = tokio::spawn(persister.run(stop.clone()));
    // The first read, then the one eight passes later.
    let reads = eventually(Duration::from_secs(10), || async {
        let filters: Vec<Document> = finds
            .lock()
            .unwrap()
            .iter()
            .filter(|find| find.get_str("find") == Ok("stock_events"))
            .filter_map(|find| find.get_document("filter").ok().cloned())
            .collect();
        (filters.len() >= 2).then_some(filters)
    })
    .await;
    stop.cancel();
    running.await.unwrap();
    let reads = reads.expect("the persister read the log's last seq twice");
    let above = |filter: &Document| {
        filter
            .get_document("seq")
            .ok()
            .and_then(|seq| seq.get_i64("$gt").ok())
    };
    assert_eq!(above(&reads[0]), Some(0), "{}", reads[0]);
    assert_eq!(above(&reads[1]), Some(known), "{}", reads[1]);
}
