//! How the server talks to MongoDB, watched through the driver's command
//! monitoring on a real server.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use bson::{Document, doc};
use flashdrop::{
    holds::Coverage,
    ids::{ReservationId, SaleId},
    persister::Persister,
    recovery::Recovery,
    store::{
        Mongo, Store,
        mongo::{
            DeliveryDoc, DeliveryState, LogTail, MessageType, OrderDoc, OrderWrite, Recorded,
            RefundDoc, StockEventDoc,
        },
    },
};
use futures::TryStreamExt;
use mongodb::event::{EventHandler, command::CommandEvent};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::helpers::{
    TestApp, eventually, hold, one_unit_order, servers, spawn_app, test_settings, unique_db,
};

/// A client of the app's database that keeps every `find` it sends.
async fn watching_finds(app: &TestApp) -> (Mongo, Arc<Mutex<Vec<Document>>>) {
    watching(app, &["find"]).await
}

/// A client of the app's database that keeps every command it sends of
/// these names.
async fn watching(app: &TestApp, names: &[&str]) -> (Mongo, Arc<Mutex<Vec<Document>>>) {
    let names: Vec<String> = names.iter().map(ToString::to_string).collect();
    let finds: Arc<Mutex<Vec<Document>>> = Arc::default();
    let seen = finds.clone();
    let db = app.state.store.mongo.database_name();
    let mongo = Mongo::connect_with(&servers().mongo_uri, &db, |options| {
        options.command_event_handler = Some(EventHandler::callback(move |event| {
            if let CommandEvent::Started(started) = event
                && names.contains(&started.command_name)
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

/// Every few passes the persister reads the log's last batch again (other
/// instances record changes too). After its first read it asks only for
/// batches past the one it knows, so the read costs what was recorded
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
    assert_eq!(app.stock_events(&sale).await.len(), 21);
    let id = SaleId::parse(&sale).unwrap();
    let known = app.mongo.log_tail(&id, LogTail::default()).await.unwrap();
    assert_eq!(known.top, 21);
    assert!(known.n >= 1, "{known:?}");

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
        pause: None,
    };
    let stop = CancellationToken::new();
    let running = tokio::spawn(persister.run(stop.clone()));
    // The first read, then the one eight passes later.
    let reads = |collection: &'static str| {
        let finds = finds.clone();
        move || {
            let filters: Vec<Document> = finds
                .lock()
                .unwrap()
                .iter()
                .filter(|find| find.get_str("find") == Ok(collection))
                .filter_map(|find| find.get_document("filter").ok().cloned())
                .collect();
            filters
        }
    };
    let (batches, older) = (reads("stock_event_batches"), reads("stock_events"));
    let seen = eventually(Duration::from_secs(10), || async {
        (batches().len() >= 2 && older().len() >= 2).then_some(())
    })
    .await;
    stop.cancel();
    running.await.unwrap();
    seen.expect("the persister read the log's tail twice");
    let above = |filter: &Document, field: &str| {
        filter
            .get_document(field)
            .ok()
            .and_then(|v| v.get_i64("$gt").ok())
    };
    let (batches, older) = (batches(), older());
    assert_eq!(above(&batches[0], "n"), Some(0), "{}", batches[0]);
    assert_eq!(above(&batches[1], "n"), Some(known.n), "{}", batches[1]);
    // Nothing in the log of one document per change, in both reads.
    assert_eq!(above(&older[0], "seq"), Some(0), "{}", older[0]);
    assert_eq!(above(&older[1], "seq"), Some(0), "{}", older[1]);
}

/// A change as the persister copies it from a sale's stream.
fn change(seq: i64, writer: &str) -> StockEventDoc {
    StockEventDoc {
        sale_id: String::new(),
        seq,
        kind: "reserved".into(),
        quantity: Some(1),
        buyer: Some(format!("{writer}-{seq}")),
        reservation_id: Some(format!("r-{writer}-{seq}")),
        ticket: None,
        restamped_from: None,
        log_n: None,
        batch: 0,
        epoch: None,
        available: 1000 - seq,
        held: seq,
        sold: 0,
        at: bson::DateTime::from_millis(1_700_000_000_000 + seq),
        second: 1_700_000_000,
    }
}

/// Records changes as the next batch after `tail`: how many were left out
/// as copies and how many were kept under fresh seqs.
async fn record(
    app: &TestApp,
    sale: &SaleId,
    changes: &[StockEventDoc],
    tail: &mut LogTail,
) -> (usize, usize) {
    let Recorded {
        copies, restamped, ..
    } = app.mongo.record_changes(sale, changes, tail).await.unwrap();
    (copies, restamped)
}

/// Each change of the log, by its buyer: kept once, whatever its seq.
fn by_buyer(log: &[StockEventDoc]) -> HashMap<String, &StockEventDoc> {
    let mut seen = HashMap::new();
    for c in log {
        let buyer = c.buyer.clone().unwrap();
        assert!(seen.insert(buyer, c).is_none(), "{c:?} twice");
    }
    seen
}

/// Writers racing for the log's places, as instances copying one sale do:
/// one of them (`b`) with changes under seqs another recorded for other
/// changes, as from a Redis that came back older, and one (`copy`) with
/// the same changes as another, as from entries taken over from an
/// instance that stalled. Each seq names one change, and every change is
/// in the log once.
#[tokio::test]
async fn racing_writers_record_each_seq_once_and_lose_no_change() {
    let app = spawn_app().await;
    for _ in 0..4 {
        let sale = SaleId::new();
        let d: Vec<StockEventDoc> = (151..=200).map(|s| change(s, "d")).collect();
        let writers = [
            (1..=100).map(|s| change(s, "a")).collect::<Vec<_>>(),
            (51..=150).map(|s| change(s, "b")).collect(),
            d.clone(),
            d,
        ];
        let recorded = futures_util::future::join_all(writers.into_iter().map(|changes| {
            let (mongo, sale) = (app.mongo.clone(), sale.clone());
            tokio::spawn(async move {
                let mut tail = LogTail::default();
                let mut outcome = Recorded::default();
                for batch in changes.chunks(10) {
                    let r = mongo.record_changes(&sale, batch, &mut tail).await.unwrap();
                    outcome.copies += r.copies;
                    outcome.restamped += r.restamped;
                }
                outcome
            })
        }))
        .await;
        let recorded: Vec<Recorded> = recorded.into_iter().map(Result::unwrap).collect();
        let log = app.mongo.event_log(&sale).await.unwrap();
        let seqs: HashSet<i64> = log.iter().map(|c| c.seq).collect();
        assert_eq!(seqs.len(), log.len(), "a seq names two changes");
        let kept = by_buyer(&log);
        assert_eq!(kept.len(), 250, "a: 100, b: 100, d: 50");
        assert_eq!(recorded.iter().map(|r| r.copies).sum::<usize>(), 50);
        // At least one of a and b lost each of seqs 51 to 100.
        let restamped: Vec<&&StockEventDoc> = kept
            .values()
            .filter(|c| c.restamped_from.is_some())
            .collect();
        assert!(restamped.len() >= 50, "{}", restamped.len());
        assert_eq!(
            restamped.len(),
            recorded.iter().map(|r| r.restamped).sum::<usize>()
        );
        for c in restamped {
            let came_with = c.buyer.as_ref().unwrap().split('-').nth(1).unwrap();
            assert_eq!(c.restamped_from.unwrap().to_string(), came_with);
            assert!(c.seq > 100, "{c:?}");
        }
        let tail = app.mongo.log_tail(&sale, LogTail::default()).await.unwrap();
        assert_eq!(tail.top, *seqs.iter().max().unwrap());
        assert_eq!(app.mongo.last_event_seq(&sale).await.unwrap(), tail.top);
    }
}

/// A log that versions before batches wrote, one document per change, is
/// read with the batches recorded after it, and a change under one of its
/// seqs is checked against it as against a batch.
#[tokio::test]
async fn a_log_of_one_document_per_change_is_read_and_checked_with_the_batches() {
    let app = spawn_app().await;
    let sale = SaleId::new();
    let client = mongodb::Client::with_uri_str(&servers().mongo_uri)
        .await
        .unwrap();
    let older = client
        .database(&app.mongo.database_name())
        .collection::<Document>("stock_events");
    let mut written: Vec<StockEventDoc> = (1..=10).map(|s| change(s, "old")).collect();
    written[4].kind = "waitlist_joined".into();
    let docs: Vec<Document> = written
        .iter()
        .map(|c| {
            let mut d = bson::to_document(c).unwrap();
            d.insert("sale_id", sale.as_str());
            d
        })
        .collect();
    older.insert_many(docs).await.unwrap();

    let mut tail = app.mongo.log_tail(&sale, LogTail::default()).await.unwrap();
    assert_eq!((tail.n, tail.top, tail.legacy), (0, 10, 10));
    // 8 and 10 copied again; 9 another change under a recorded seq.
    let mut changes = vec![written[7].clone(), change(9, "new"), written[9].clone()];
    changes.extend((11..=14).map(|s| change(s, "new")));
    // (copies left out, changes restamped)
    assert_eq!(record(&app, &sale, &changes, &mut tail).await, (2, 1));
    assert_eq!((tail.n, tail.top), (1, 15));

    let log = app.mongo.event_log(&sale).await.unwrap();
    let seqs: Vec<i64> = log.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, (1..=15).collect::<Vec<_>>());
    assert!(log.iter().all(|c| c.sale_id == sale.as_str()));
    assert_eq!(log[8].buyer.as_deref(), Some("old-9"));
    assert_eq!(
        (log[14].buyer.as_deref(), log[14].restamped_from),
        (Some("new-9"), Some(9))
    );
    let line = app.mongo.waitlist_events(&sale, i64::MAX).await.unwrap();
    assert_eq!(line.len(), 1);
    assert_eq!(line[0].buyer.as_deref(), Some("old-5"));
    let figures = app.mongo.summary_figures(&sale, 100).await.unwrap();
    assert_eq!(figures.events.get("reserved"), Some(&14));
    assert_eq!(figures.events.get("waitlist_joined"), Some(&1));
    assert_eq!(figures.peak_holds_per_second, 14);
    assert_eq!(app.mongo.last_event_seq(&sale).await.unwrap(), 15);
}

/// One batch may hold two changes under one seq: after a rebuild, a Redis
/// that lost the sale hands out seqs again while changes it made before
/// still wait in its stream. The first keeps the seq, the other is kept
/// under a fresh one, and a second copy of either is left out.
#[tokio::test]
async fn a_batch_with_two_changes_under_one_seq_keeps_both() {
    let app = spawn_app().await;
    let sale = SaleId::new();
    let mut tail = LogTail::default();
    let changes = [
        change(1, "before"),
        change(2, "before"),
        change(2, "after"),
        change(2, "before"),
        change(3, "after"),
    ];
    assert_eq!(record(&app, &sale, &changes, &mut tail).await, (1, 1));
    let log = app.mongo.event_log(&sale).await.unwrap();
    let kept: Vec<(i64, &str, Option<i64>)> = log
        .iter()
        .map(|c| (c.seq, c.buyer.as_deref().unwrap(), c.restamped_from))
        .collect();
    assert_eq!(
        kept,
        [
            (1, "before-1", None),
            (2, "before-2", None),
            (3, "after-3", None),
            (4, "after-2", Some(2)),
        ]
    );
    assert_eq!((tail.n, tail.top), (1, 4));
}

/// The summary counts a sale's changes from the tally each batch carries,
/// written with the batch, and reads changes only of batches an older
/// version wrote without one. Reading every change cost the MongoDB-wire
/// server 0.3 to 0.6 s of CPU a summary for a log of 72,000 changes, and
/// the operator's page asks for the summary every 2 s.
#[tokio::test]
async fn the_summary_counts_each_batchs_tally_and_reads_changes_only_of_batches_without_one() {
    let app = spawn_app().await;
    let mongo = &app.state.store.mongo;
    let sale = SaleId::new();
    let at = |seq: i64, kind: &str, sold: i64, second: i64| StockEventDoc {
        kind: kind.into(),
        sold,
        second,
        at: bson::DateTime::from_millis(second * 1000 + seq),
        ..change(seq, "tally")
    };
    // Batch 1, as this version writes it: holds in two seconds, a confirm.
    let mut tail = LogTail::default();
    let first = [
        at(1, "reserved", 0, 100),
        at(2, "reserved", 0, 100),
        at(3, "promoted", 0, 101),
        at(4, "confirmed", 1, 101),
    ];
    mongo
        .record_changes(&sale, &first, &mut tail)
        .await
        .unwrap();
    // Batch 2, as an older version wrote it, without a tally.
    let older = [
        at(5, "confirmed", 2, 102),
        at(6, "reserved", 2, 100),
        at(7, "cancelled", 2, 103),
    ];
    let client = mongodb::Client::with_uri_str(&servers().mongo_uri)
        .await
        .unwrap();
    client
        .database(&mongo.database_name())
        .collection::<Document>("stock_event_batches")
        .insert_one(doc! {
            "sale_id": sale.as_str(), "n": 2, "top": 7, "first": 5, "last": 7,
            "changes": bson::to_bson(&older).unwrap(),
        })
        .await
        .unwrap();
    // Batch 3, this version again: the sale sells out at seq 8.
    let mut tail = LogTail {
        n: 2,
        top: 7,
        legacy: 0,
        made: 7,
    };
    let last = [at(8, "confirmed", 3, 104), at(9, "sale_closed", 3, 104)];
    mongo.record_changes(&sale, &last, &mut tail).await.unwrap();

    let (watched, commands) = watching(&app, &["find", "aggregate"]).await;
    let figures = watched.summary_figures(&sale, 3).await.unwrap();
    let kinds: HashMap<&str, i64> = figures
        .events
        .iter()
        .map(|(k, n)| (k.as_str(), *n))
        .collect();
    let expected = [
        ("reserved", 3),
        ("promoted", 1),
        ("confirmed", 3),
        ("cancelled", 1),
        ("sale_closed", 1),
    ];
    assert_eq!(kinds, HashMap::from(expected));
    // Second 100 has two holds in a tallied batch and one in the older one.
    assert_eq!(figures.peak_holds_per_second, 3);
    assert_eq!(
        figures.sold_out_at,
        Some(bson::DateTime::from_millis(104_008))
    );
    let on_batches: Vec<Document> = commands
        .lock()
        .unwrap()
        .iter()
        .filter(|c| {
            c.get_str("find") == Ok("stock_event_batches")
                || c.get_str("aggregate") == Ok("stock_event_batches")
        })
        .cloned()
        .collect();
    let projects = |c: &Document, wanted: &dyn Fn(&str) -> bool| {
        c.get_document("projection")
            .is_ok_and(|p| p.keys().all(|k| k == "_id" || wanted(k)))
    };
    let tallies = on_batches
        .iter()
        .filter(|c| projects(c, &|k| k == "tally"))
        .count();
    let changes: Vec<&Document> = on_batches
        .iter()
        .filter(|c| projects(c, &|k| k.starts_with("changes.")))
        .collect();
    assert_eq!(
        (tallies, changes.len(), on_batches.len()),
        (1, 1, 2),
        "{on_batches:?}"
    );
    assert!(
        changes[0]
            .get_document("filter")
            .unwrap()
            .contains_key("tally"),
        "changes are read only of batches without a tally: {:?}",
        changes[0]
    );
}

/// The orders' indexes, by name, with their keys and whether unique.
async fn order_indexes(db: &mongodb::Database) -> HashMap<String, (Document, bool)> {
    let mut indexes = db
        .collection::<Document>("orders")
        .list_indexes()
        .await
        .unwrap();
    let mut found = HashMap::new();
    while let Some(index) = indexes.try_next().await.unwrap() {
        let unique = index.options.as_ref().and_then(|o| o.unique) == Some(true);
        let name = index.options.and_then(|o| o.name).unwrap();
        found.insert(name, (index.keys, unique));
    }
    found
}

/// A buyer's purchase slots are unique per sale under `(user_id, sale_id,
/// slots)`, which also finds a buyer's orders: an index entry less per order
/// than a slots index led by the sale plus one for the buyer's orders. A
/// database an older version made has those two; start-up replaces them,
/// and MongoDB still refuses a buyer over the limit. It replaces the
/// refunds and deliveries indexes without `_id` too.
#[tokio::test]
async fn start_up_replaces_an_older_databases_order_indexes_and_still_refuses_a_buyer_over_the_limit()
 {
    let name = unique_db();
    let client = mongodb::Client::with_uri_str(&servers().mongo_uri)
        .await
        .unwrap();
    let db = client.database(&name);
    let orders = db.collection::<OrderDoc>("orders");
    let unique = |keys: Document, name: &str| {
        let options = mongodb::options::IndexOptions::builder()
            .unique(true)
            .name(name.to_owned())
            .build();
        mongodb::IndexModel::builder()
            .keys(keys)
            .options(options)
            .build()
    };
    let older = [
        unique(doc! {"sale_id": 1, "units": 1}, "order_units_unique"),
        unique(
            doc! {"sale_id": 1, "user_id": 1, "slots": 1},
            "order_slots_unique",
        ),
        mongodb::IndexModel::builder()
            .keys(doc! {"user_id": 1, "created_at": -1})
            .build(),
    ];
    orders.create_indexes(older).await.unwrap();
    // The refunds and deliveries pages' older indexes, without `_id`.
    let plain = |keys: Document| mongodb::IndexModel::builder().keys(keys).build();
    db.collection::<Document>("refunds")
        .create_index(plain(doc! {"sale_id": 1, "created_at": -1}))
        .await
        .unwrap();
    db.collection::<Document>("webhook_deliveries")
        .create_index(plain(doc! {"endpoint_id": 1, "updated_at": -1}))
        .await
        .unwrap();
    orders
        .insert_one(one_unit_order("old", "s1", "ann", 1, 1_000))
        .await
        .unwrap();

    let mongo = Mongo::connect(&servers().mongo_uri, &name).await.unwrap();
    mongo.ensure_indexes().await.unwrap();
    // A second start-up, or two at once in a rolling restart, finds nothing
    // left to replace.
    let (a, b) = tokio::join!(mongo.ensure_indexes(), mongo.ensure_indexes());
    a.unwrap();
    b.unwrap();

    let indexes = order_indexes(&db).await;
    let mut names: Vec<&str> = indexes.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["_id_", "order_buyer_slots_unique", "order_units_unique"]
    );
    assert_eq!(
        indexes["order_buyer_slots_unique"],
        (doc! {"user_id": 1, "sale_id": 1, "slots": 1}, true)
    );
    assert_eq!(
        indexes["order_units_unique"],
        (doc! {"sale_id": 1, "units": 1}, true)
    );
    for (collection, now) in [
        (
            "refunds",
            vec![
                "_id_",
                "created_at_-1__id_1",
                "sale_id_1_created_at_-1__id_1",
            ],
        ),
        (
            "webhook_deliveries",
            vec!["_id_", "endpoint_id_1_updated_at_-1__id_1"],
        ),
    ] {
        let mut names = db
            .collection::<Document>(collection)
            .list_index_names()
            .await
            .unwrap();
        names.sort_unstable();
        assert_eq!(names, now, "{collection}");
    }

    // The older order's slot is taken; the same slot of another sale, or
    // another buyer's, is not; nor is another unit.
    let writes = mongo
        .insert_orders(&[
            &one_unit_order("again", "s1", "ann", 2, 2_000),
            &one_unit_order("other-sale", "s2", "ann", 2, 3_000),
            &one_unit_order("other-buyer", "s1", "ben", 3, 4_000),
            &one_unit_order("unit-taken", "s1", "cat", 1, 5_000),
        ])
        .await;
    assert!(
        matches!(
            writes.as_slice(),
            [
                OrderWrite::Refused,
                OrderWrite::Inserted,
                OrderWrite::Inserted,
                OrderWrite::Refused
            ]
        ),
        "{writes:?}"
    );
    let anns: Vec<String> = mongo
        .orders_of_buyer("ann", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(anns, ["other-sale", "old"]);
    db.drop().await.unwrap();
}

/// An order of one unit is stored with its unit and slot as plain values,
/// which keep the unique indexes from turning multikey for it; an order of
/// more stores lists. Orders an earlier version stored with lists of one
/// are read as before (by id, by a rebuild and by the repair of a refused
/// order), and the indexes take a value and a list holding it
/// as the same key: neither form lets a unit be sold twice or a buyer's
/// slot be taken twice.
#[tokio::test]
async fn an_order_of_one_unit_stores_plain_values_and_both_forms_share_the_unique_keys() {
    let name = unique_db();
    let mongo = Mongo::connect(&servers().mongo_uri, &name).await.unwrap();
    mongo.ensure_indexes().await.unwrap();
    let sale = SaleId::new();
    let s = sale.as_str();
    let raw = mongodb::Client::with_uri_str(&servers().mongo_uri)
        .await
        .unwrap()
        .database(&name)
        .collection::<Document>("orders");
    // As an earlier version stored them: lists, also of one.
    raw.insert_many([
        doc! {"_id": "old-ann", "sale_id": s, "user_id": "ann", "quantity": 1_i64,
        "units": [1_i64], "slots": [1_i64], "unit_price_cents": 1_i64,
        "total_cents": 1_i64, "currency": "EUR", "created_at": bson::DateTime::from_millis(1_000)},
        doc! {"_id": "old-ben", "sale_id": s, "user_id": "ben", "quantity": 2_i64,
        "units": [2_i64, 3_i64], "slots": [1_i64, 2_i64], "unit_price_cents": 1_i64,
        "total_cents": 2_i64, "currency": "EUR", "created_at": bson::DateTime::from_millis(2_000)},
    ])
    .await
    .unwrap();

    let of_two = |id: &str, buyer: &str, units: [i64; 2], slots: [i64; 2]| {
        let mut order = one_unit_order(id, s, buyer, units[0], 5_000);
        order.quantity = 2;
        order.units = units.to_vec();
        order.slots = slots.to_vec();
        order
    };
    let two = of_two("dan-two", "dan", [5, 6], [2, 3]);
    let writes = mongo
        .insert_orders(&[
            &one_unit_order("unit-1-again", s, "cat", 1, 3_000),
            &one_unit_order("unit-3-again", s, "cat", 3, 3_000),
            &one_unit_order("ann-slot-1-again", s, "ann", 9, 3_000),
            &one_unit_order("dan-one", s, "dan", 4, 4_000),
            &two,
            &one_unit_order("unit-6-again", s, "eve", 6, 6_000),
            &one_unit_order("dan-slot-2-again", s, "dan", 7, 6_000),
            // A list holding dan-one's plain unit, or a plain slot.
            &of_two("unit-4-again", "fay", [8, 4], [1, 2]),
            &of_two("dan-slot-1-again", "dan", [9, 10], [1, 4]),
        ])
        .await;
    assert!(
        matches!(
            writes.as_slice(),
            [
                OrderWrite::Refused,
                OrderWrite::Refused,
                OrderWrite::Refused,
                OrderWrite::Inserted,
                OrderWrite::Inserted,
                OrderWrite::Refused,
                OrderWrite::Refused,
                OrderWrite::Refused,
                OrderWrite::Refused,
            ]
        ),
        "{writes:?}"
    );

    let stored = |id: &'static str| {
        let raw = raw.clone();
        async move { raw.find_one(doc! {"_id": id}).await.unwrap().unwrap() }
    };
    let one = stored("dan-one").await;
    assert_eq!(one.get("units"), Some(&bson::Bson::Int64(4)), "{one}");
    assert_eq!(one.get("slots"), Some(&bson::Bson::Int64(1)), "{one}");
    let many = stored("dan-two").await;
    assert_eq!(many.get_array("units").unwrap().len(), 2, "{many}");
    assert_eq!(many.get_array("slots").unwrap().len(), 2, "{many}");

    let units = |o: Option<OrderDoc>| {
        let o = o.unwrap();
        (o.units, o.slots)
    };
    assert_eq!(
        units(mongo.order("old-ann").await.unwrap()),
        (vec![1], vec![1])
    );
    assert_eq!(
        units(mongo.order("old-ben").await.unwrap()),
        (vec![2, 3], vec![1, 2])
    );
    assert_eq!(
        units(mongo.order("dan-one").await.unwrap()),
        (vec![4], vec![1])
    );
    assert_eq!(
        units(mongo.order("dan-two").await.unwrap()),
        (vec![5, 6], vec![2, 3])
    );
    // What a refused order's repair reads: which of its units are sold,
    // found in either form.
    let mut among = mongo.sold_among(&sale, &[1, 3, 4, 5, 7]).await.unwrap();
    among.sort_unstable();
    assert_eq!(among, [1, 3, 4, 5]);
    // What a rebuild reads: every unit sold, in either form.
    let sold = mongo.sold_units(&sale).await.unwrap();
    assert_eq!(sold.serials, [1, 2, 3, 4, 5, 6]);
    assert_eq!(sold.bought["dan"], 3);
    raw.client().database(&name).drop().await.unwrap();
}

/// How many documents the server examined to answer `find` (a command the
/// driver sent), by its own account: `explain` with execution statistics.
async fn docs_examined(db: &mongodb::Database, find: &Document) -> i64 {
    let mut command = doc! {};
    for key in ["find", "filter", "sort", "limit", "projection"] {
        if let Some(value) = find.get(key) {
            command.insert(key, value.clone());
        }
    }
    let explained = db
        .run_command(doc! {"explain": command, "verbosity": "executionStats"})
        .await
        .unwrap();
    let stats = explained.get_document("executionStats").unwrap();
    match stats.get("totalDocsExamined") {
        Some(bson::Bson::Int32(n)) => i64::from(*n),
        Some(bson::Bson::Int64(n)) => *n,
        other => panic!("no totalDocsExamined in {explained}: {other:?}"),
    }
}

/// The last `find` of `collection` among those watched.
fn last_find(finds: &Mutex<Vec<Document>>, collection: &str) -> Document {
    finds
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|f| f.get_str("find") == Ok(collection))
        .cloned()
        .unwrap_or_else(|| panic!("no find of {collection}"))
}

/// A page of an operator's listing (a sale's orders, refunds due, an
/// endpoint's deliveries) costs the server that page, however long the
/// listing grows with the sale's crowd: the server's own count of the
/// documents it examined stays at the page's size. Reading every match
/// to sort it in memory costs each page the whole listing.
#[tokio::test]
async fn a_page_of_an_operators_listing_reads_only_that_page_however_long_the_listing() {
    const EACH: i64 = 60;
    const PAGE: i64 = 10;
    let app = spawn_app().await;
    let mongo = &app.state.store.mongo;
    let db = mongodb::Client::with_uri_str(&servers().mongo_uri)
        .await
        .unwrap()
        .database(&mongo.database_name());
    let sales: Vec<SaleId> = (0..3).map(|_| SaleId::new()).collect();
    let at = |i: i64| bson::DateTime::from_millis(1_700_000_000_000 + i * 1_000);
    let mut refunds = Vec::new();
    let mut deliveries = Vec::new();
    for (s, sale) in sales.iter().enumerate() {
        let orders: Vec<OrderDoc> = (0..EACH)
            .map(|i| {
                let rid = ReservationId::new(sale);
                one_unit_order(rid.as_str(), sale.as_str(), &format!("b{i}"), i + 1, i)
            })
            .collect();
        let writes = mongo
            .insert_orders(&orders.iter().collect::<Vec<_>>())
            .await;
        assert!(writes.iter().all(|w| matches!(w, OrderWrite::Inserted)));
        for i in 0..EACH {
            refunds.push(RefundDoc {
                payment_id: format!("pay-{s}-{i}"),
                reservation_id: format!("{sale}-r{i}"),
                sale_id: sale.to_string(),
                buyer: format!("b{i}"),
                amount_cents: 100,
                currency: "EUR".into(),
                reason: "expired".into(),
                event_id: format!("ev-{s}-{i}"),
                created_at: at(i),
            });
            deliveries.push(DeliveryDoc {
                id: format!("d-{s}-{i}"),
                endpoint_id: format!("ep{s}"),
                message_id: format!("m-{s}-{i}"),
                sale_id: sale.to_string(),
                seq: i,
                kind: MessageType::OrderConfirmed,
                state: DeliveryState::Delivered,
                attempts: Vec::new(),
                next_attempt_at: None,
                updated_at: at(i),
            });
        }
    }
    db.collection::<RefundDoc>("refunds")
        .insert_many(&refunds)
        .await
        .unwrap();
    db.collection::<DeliveryDoc>("webhook_deliveries")
        .insert_many(&deliveries)
        .await
        .unwrap();

    let (watched, finds) = watching_finds(&app).await;
    let sale = &sales[1];
    let first = watched.orders_page(sale, PAGE, None).await.unwrap();
    let next = watched
        .orders_page(sale, PAGE, Some(&first.last().unwrap().id))
        .await
        .unwrap();
    let mut ids: Vec<String> = mongo
        .orders_of_sale(sale)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .collect();
    ids.sort();
    let paged: Vec<String> = first.iter().chain(&next).map(|o| o.id.clone()).collect();
    assert_eq!(paged, ids[..2 * PAGE as usize]);
    assert_eq!(docs_examined(&db, &last_find(&finds, "orders")).await, PAGE);

    let of_sale = watched.refunds(Some(sale), PAGE).await.unwrap();
    let expected: Vec<String> = (EACH - PAGE..EACH)
        .rev()
        .map(|i| format!("pay-1-{i}"))
        .collect();
    let got: Vec<String> = of_sale.into_iter().map(|r| r.payment_id).collect();
    assert_eq!(got, expected);
    assert_eq!(
        docs_examined(&db, &last_find(&finds, "refunds")).await,
        PAGE
    );
    let all = watched.refunds(None, PAGE).await.unwrap();
    let newest: Vec<String> = (0..EACH)
        .rev()
        .flat_map(|i| (0..3).map(move |s| format!("pay-{s}-{i}")))
        .take(PAGE as usize)
        .collect();
    let got: Vec<String> = all.into_iter().map(|r| r.payment_id).collect();
    assert_eq!(got, newest);
    assert_eq!(
        docs_examined(&db, &last_find(&finds, "refunds")).await,
        PAGE
    );

    let sent = watched.deliveries("ep1", PAGE).await.unwrap();
    let expected: Vec<String> = (EACH - PAGE..EACH)
        .rev()
        .map(|i| format!("d-1-{i}"))
        .collect();
    let got: Vec<String> = sent.into_iter().map(|d| d.id).collect();
    assert_eq!(got, expected);
    assert_eq!(
        docs_examined(&db, &last_find(&finds, "webhook_deliveries")).await,
        PAGE
    );
}
