//! How the server talks to MongoDB, watched through the driver's command
//! monitoring on a real server.

use std::sync::{Arc, Mutex};

use bson::Document;
use flashdrop::{ids::ReservationId, store::Mongo};
use mongodb::event::{EventHandler, command::CommandEvent};
use serde_json::json;

use crate::helpers::{hold, servers, spawn_app};

/// "Is the order there?" decides whether units go back: it must not read
/// a write a primary step-down can still roll back.
#[tokio::test]
async fn order_lookups_read_with_majority_read_concern() {
    let app = spawn_app().await;
    let sale = app.create_sale(json!({"total": 4})).await;
    let rid = hold(&app, &sale, "reader", 1).await;
    assert_eq!(app.confirm(&rid, "reader").await.status(), 201);

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
