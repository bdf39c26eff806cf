//! Cancelling orders: the units go back in one step, to the head of the
//! waiting list first, and nothing is lost or returned twice.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{
    MongoServer, TestApp, admin_token, buyer_token, eventually, hold, join, json, keys, spawn_app,
    spawn_app_with, waitlist_me,
};
use flashdrop::{
    ids::ReservationId,
    store::mongo::{CancelRequest, OrderDoc},
};

/// A buyer's order, confirmed now: its id.
async fn bought(app: &TestApp, sale: &str, buyer: &str, quantity: i64) -> String {
    let rid = hold(app, sale, buyer, quantity).await;
    assert_eq!(app.confirm(&rid, buyer).await.status(), 201);
    rid
}

async fn admin_cancel(app: &TestApp, order: &str, reason: &str) -> reqwest::Response {
    app.http
        .post(app.api(&format!("/admin/orders/{order}/cancel")))
        .bearer_auth(admin_token())
        .json(&json!({"reason": reason}))
        .send()
        .await
        .unwrap()
}

async fn buyer_cancel(app: &TestApp, order: &str, buyer: &str) -> reqwest::Response {
    app.http
        .delete(app.api(&format!("/me/orders/{order}")))
        .bearer_auth(buyer_token(buyer))
        .send()
        .await
        .unwrap()
}

/// Every order of a sale, cancelled ones too, as the admin list has them.
async fn all_orders(app: &TestApp, sale: &str) -> Vec<Value> {
    let resp = app
        .http
        .get(app.api(&format!("/admin/sales/{sale}/orders?limit=500")))
        .bearer_auth(admin_token())
        .send()
        .await
        .unwrap();
    json(resp).await["orders"].as_array().unwrap().clone()
}

async fn summary(app: &TestApp, sale: &str) -> Value {
    let resp = app
        .http
        .get(app.api(&format!("/admin/sales/{sale}/summary")))
        .bearer_auth(admin_token())
        .send()
        .await
        .unwrap();
    json(resp).await
}

#[tokio::test]
async fn a_cancelled_order_gives_its_units_to_the_head_of_the_line() {
    let app = spawn_app().await;
    let sale = app
        .create_sale(json!({"total": 2, "per_user_limit": 1}))
        .await;
    let order = bought(&app, &sale, "first", 1).await;
    // A hold still out keeps the line open (units may come back).
    let kept = hold(&app, &sale, "holder", 1).await;
    assert_eq!(join(&app, &sale, "waiting", 1).await.status(), 201);

    let resp = admin_cancel(&app, &order, "payment charged back").await;
    assert_eq!(resp.status(), 200);
    let view = json(resp).await;
    assert_eq!(view["status"], "cancelled");
    assert_eq!(view["cancel_reason"], "payment charged back");
    assert_eq!(view["units"], json!([1]));
    // The head of the line has the unit, as a hold of its own.
    let me = waitlist_me(&app, &sale, "waiting").await;
    assert_eq!(me["status"], "promoted", "{me}");
    let promoted = me["reservation_id"].as_str().unwrap().to_owned();
    assert_eq!(app.confirm(&promoted, "waiting").await.status(), 201);
    // The same serial sold again: MongoDB freed it with the cancel.
    let orders = app.orders(&sale).await;
    let live: Vec<_> = orders.iter().filter(|o| o.cancelled.is_none()).collect();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].units, vec![1]);
    assert_eq!(app.cancel(&kept, "holder").await.status(), 204);

    // A repeat answers the same and returns nothing twice.
    let again = json(admin_cancel(&app, &order, "again").await).await;
    assert_eq!(again["status"], "cancelled");
    assert_eq!(again["cancel_reason"], "payment charged back");
    let (available, held, sold) = app.check_invariants(&sale).await;
    assert_eq!((available, held, sold), (1, 0, 1));

    // The buyer's list, the summary and the event log show it.
    let mine = app
        .http
        .get(app.api("/me/orders"))
        .bearer_auth(buyer_token("first"))
        .send()
        .await
        .unwrap();
    let mine = json(mine).await;
    assert_eq!(mine[0]["status"], "cancelled");
    let figures = summary(&app, &sale).await;
    assert_eq!(
        (figures["orders"].clone(), figures["units_sold"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(figures["orders_cancelled"], 1);
    assert_eq!(figures["units_returned"], 1);
    let log = app.stock_events(&sale).await;
    assert!(log.iter().any(
        |e| e.kind == "order_cancelled" && e.reservation_id.as_deref() == Some(order.as_str())
    ));
}

#[tokio::test]
async fn the_limit_counts_live_orders_and_stock_comes_back_without_a_line() {
    let app = spawn_app().await;
    let sale = app
        .create_sale(json!({"total": 5, "per_user_limit": 2}))
        .await;
    let order = bought(&app, &sale, "returner", 2).await;
    assert_eq!(app.reserve(&sale, "returner", 1).await.status(), 409);
    assert_eq!(admin_cancel(&app, &order, "wrong size").await.status(), 200);
    let view = app.get_sale(&sale).await;
    assert_eq!(
        (view["available"].clone(), view["sold"].clone()),
        (json!(5), json!(0))
    );
    // Two more for the same buyer: their limit counts live orders only.
    bought(&app, &sale, "returner", 2).await;
    let (available, _, sold) = app.check_invariants(&sale).await;
    assert_eq!((available, sold), (3, 2));
}

#[tokio::test]
async fn buyers_cancel_their_own_orders_within_the_window_only() {
    let app = spawn_app().await;
    let closed = app.create_sale(json!({"total": 3})).await;
    let order = bought(&app, &closed, "no-window", 1).await;
    let resp = buyer_cancel(&app, &order, "no-window").await;
    assert_eq!(resp.status(), 409);
    assert_eq!(json(resp).await["code"], "cancel_closed");

    let open = app
        .create_sale(json!({"total": 3, "cancel_seconds": 1}))
        .await;
    let mine = bought(&app, &open, "quick", 1).await;
    // Somebody else's order is not theirs to cancel.
    assert_eq!(buyer_cancel(&app, &mine, "stranger").await.status(), 404);
    let resp = buyer_cancel(&app, &mine, "quick").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(json(resp).await["status"], "cancelled");
    // Once cancelled, a repeat answers the same, window or not.
    assert_eq!(buyer_cancel(&app, &mine, "quick").await.status(), 200);

    let late = bought(&app, &open, "slow", 1).await;
    // The window is counted on the Redis clock from the order.
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let resp = buyer_cancel(&app, &late, "slow").await;
    assert_eq!(resp.status(), 409);
    assert_eq!(json(resp).await["code"], "cancel_closed");
    app.check_invariants(&open).await;
}

/// Buyers reserve, confirm, cancel their holds and let them expire while
/// an admin cancels orders as they appear: every invariant holds, and the
/// units of every cancelled order came back exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_racing_confirms_and_expiries_keep_every_invariant() {
    let app = spawn_app().await;
    let sale = app
        .create_sale(json!({"total": 12, "per_user_limit": 2, "hold_seconds": 1}))
        .await;
    let buyers: Vec<String> = (0..40).map(|i| format!("racer-{i:02}")).collect();
    let work = buyers.iter().enumerate().map(|(i, buyer)| {
        let (app, sale) = (&app, &sale);
        async move {
            let resp = app.reserve(sale, buyer, 1 + (i % 2) as i64).await;
            if resp.status() != 201 {
                if i % 3 == 0 {
                    let _ = join(app, sale, buyer, 1).await;
                }
                return;
            }
            let rid = crate::helpers::rid_of(resp).await;
            match i % 4 {
                // Confirm, and have the order cancelled at once.
                0 | 1 => {
                    let confirmed = app.confirm(&rid, buyer).await.status() == 201;
                    if confirmed {
                        let resp = admin_cancel(app, &rid, "racing").await;
                        assert_eq!(resp.status(), 200);
                    }
                }
                2 => {
                    let _ = app.confirm(&rid, buyer).await;
                }
                // Let it expire.
                _ => {}
            }
        }
    });
    join_all(work).await;
    // Whoever the line promoted lets the hold lapse: the next is promoted,
    // until nobody waits and nothing is held. The audit reads a settled
    // sale (it reads the stores one after the other).
    let settled = eventually(Duration::from_secs(60), || async {
        let view = app.get_sale(&sale).await;
        (view["held"] == 0 && view["waitlist_length"] == 0).then_some(())
    })
    .await;
    assert!(settled.is_some(), "every hold ended");
    let listed = all_orders(&app, &sale).await;
    let cancelled = listed.iter().filter(|o| o["status"] == "cancelled").count();
    let figures = summary(&app, &sale).await;
    assert_eq!(figures["orders_cancelled"], cancelled);
    assert!(cancelled > 0, "the race cancelled orders");
    let (available, _, sold) = app.check_invariants(&sale).await;
    let live: i64 = app.orders(&sale).await.iter().map(|o| o.quantity).sum();
    assert_eq!(
        listed.len() - cancelled,
        app.orders(&sale).await.len(),
        "the list has every order once"
    );
    assert_eq!(sold, live);
    assert_eq!(available + sold, 12);
}

/// A cancel cut off after MongoDB has it and before Redis gave the units
/// back (as a crash there leaves it) is finished by the reaper; and one
/// whose sale Redis lost in between is read cancelled by the rebuild and
/// returned nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_cut_off_midway_is_finished_once_even_across_a_rebuild() {
    let app = spawn_app().await;
    let sale = app
        .create_sale(json!({"total": 4, "per_user_limit": 2}))
        .await;
    let first = bought(&app, &sale, "cut-1", 2).await;
    let second = bought(&app, &sale, "cut-2", 2).await;
    let cut_off = |reason: &str| CancelRequest {
        at: bson::DateTime::now(),
        reason: reason.into(),
        by: "admin:test".into(),
    };
    // MongoDB only, as an instance killed right after it would leave it.
    app.mongo
        .cancel_order(&first, &cut_off("crash"))
        .await
        .unwrap()
        .unwrap();
    let returned = eventually(Duration::from_secs(15), || async {
        let view = app.get_sale(&sale).await;
        (view["available"] == 2).then_some(())
    })
    .await;
    assert!(returned.is_some(), "the reaper gave the units back");
    app.check_invariants(&sale).await;

    // The second: cut off the same way, then Redis loses the sale before
    // anyone returns the units; the rebuild reads the order cancelled.
    app.mongo
        .cancel_order(&second, &cut_off("crash and loss"))
        .await
        .unwrap()
        .unwrap();
    let mut redis = app.redis();
    let k = keys(&sale);
    let _: () = redis::cmd("DEL")
        .arg(k.of(flashdrop::store::keys::Role::Sale))
        .query_async(&mut redis)
        .await
        .unwrap();
    let view = app.get_sale(&sale).await;
    assert_eq!(view["available"], 4, "rebuilt with both orders cancelled");
    // The reaper's return of the second finds it returned already.
    let marked = eventually(Duration::from_secs(15), || async {
        let mut all = true;
        for id in [&first, &second] {
            let copy = app.mongo.cancelled_order(id).await.unwrap();
            all &= copy.and_then(|o| o.cancelled).is_some_and(|c| c.returned);
        }
        all.then_some(())
    })
    .await;
    assert!(marked.is_some(), "both returns recorded");
    let (available, held, sold) = app.check_invariants(&sale).await;
    assert_eq!((available, held, sold), (4, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_during_a_mongodb_pause_is_503_and_changes_nothing() {
    let mongo = MongoServer::start();
    let uri = mongo.uri.clone();
    let app = spawn_app_with(|s| {
        s.mongodb_uri = flashdrop::config::Secret::new(uri);
        s.mongodb_timeout = Duration::from_millis(800);
    })
    .await;
    let sale = app.create_sale(json!({"total": 3})).await;
    let order = bought(&app, &sale, "paused", 1).await;
    let before = app.get_sale(&sale).await;

    mongo.pause();
    let resp = admin_cancel(&app, &order, "during the pause").await;
    assert_eq!(resp.status(), 503);
    let during = app.get_sale(&sale).await;
    assert_eq!(
        (during["available"].clone(), during["sold"].clone()),
        (before["available"].clone(), before["sold"].clone()),
        "Redis unchanged"
    );
    mongo.resume();

    // Nothing was written: the order stands, and a cancel now goes through
    // once.
    let orders = app.orders(&sale).await;
    assert!(orders[0].cancelled.is_none(), "the order stands");
    assert_eq!(admin_cancel(&app, &order, "after").await.status(), 200);
    let (available, _, sold) = app.check_invariants(&sale).await;
    assert_eq!((available, sold), (3, 0));
}

/// A promotion's reservation id is made in Redis. A copy back from an
/// older AOF (or rebuilt after Redis lost the sale) counts its promotions
/// again from where it stands: its ids must still be new, or a promoted
/// buyer's order would land under the id of an earlier order (maybe one
/// cancelled since) and count with it. With the second alone in the id,
/// a promotion in the same second as the earlier one reused its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_on_an_older_copy_never_reuses_an_earlier_id() {
    let app = spawn_app().await;
    let second_of = |rid: &str| rid.split_once('-').unwrap().1[..8].to_owned();
    // Only promotions within one second can meet: a scene that crossed
    // one is played again on a new sale. Between the two promotions the
    // scene touches Redis alone, and it starts as a second begins.
    for _ in 0..10 {
        let sale = app
            .create_sale(json!({"total": 1, "per_user_limit": 1}))
            .await;
        let held = hold(&app, &sale, "holder", 1).await;
        assert_eq!(join(&app, &sale, "w1", 1).await.status(), 201);
        let saved = app.save_state(&sale).await;
        redis_second_begins(&app).await;

        assert_eq!(app.cancel(&held, "holder").await.status(), 204);
        let first = waitlist_me(&app, &sale, "w1").await;
        assert_eq!(first["status"], "promoted", "{first}");
        // Redis comes back older: the holder's hold, w1 still waiting.
        app.roll_back(&saved).await;
        if app.cancel(&held, "holder").await.status() != 204 {
            continue; // the persister replaced the older copy first
        }
        let second = waitlist_me(&app, &sale, "w1").await;
        assert_eq!(second["status"], "promoted", "{second}");
        let (first, second) = (
            first["reservation_id"].as_str().unwrap(),
            second["reservation_id"].as_str().unwrap(),
        );
        if second_of(first) != second_of(second) {
            continue;
        }
        assert_ne!(first, second, "a promotion reused a reservation id");
        return;
    }
    panic!("every scene crossed a second");
}

/// Waits (at most a second) until Redis's clock is early in a second.
async fn redis_second_begins(app: &TestApp) {
    let begun = eventually(Duration::from_secs(2), || async {
        let (_, micros): (u64, u64) = redis::cmd("TIME")
            .query_async(&mut app.redis())
            .await
            .unwrap();
        (micros < 100_000).then_some(())
    })
    .await;
    assert!(begun.is_some(), "Redis's clock moved");
}

/// A cancelled order's id never takes an order again, whatever Redis
/// says: a copy back from before the confirm (an older AOF) still has the
/// hold, and its buyer confirms it again; MongoDB refuses the order, and
/// the buyer hears the order was cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_orders_id_never_takes_an_order_again() {
    use redis::AsyncCommands;
    let app = spawn_app().await;
    // The persister may see the rollback and rebuild the sale before the
    // confirm reaches the stale copy: then the scene is played again.
    for _ in 0..10 {
        let sale = app
            .create_sale(json!({"total": 2, "per_user_limit": 1}))
            .await;
        let rid = hold(&app, &sale, "again", 1).await;
        app.stock_events(&sale).await;
        let saved = app.save_state(&sale).await;
        assert_eq!(app.confirm(&rid, "again").await.status(), 201);
        assert_eq!(admin_cancel(&app, &rid, "fraud").await.status(), 200);
        app.stock_events(&sale).await;

        app.roll_back(&saved).await;
        let k = keys(&sale);
        let epoch: String = app.redis().hget(k.sale(), "epoch").await.unwrap();
        let resp = app.confirm(&rid, "again").await;
        let status = resp.status();
        let body = json(resp).await;
        let stale: Option<String> = app.redis().hget(k.holds(), &rid).await.unwrap();
        if stale.is_none() {
            continue; // rebuilt first: the hold was gone
        }
        assert_eq!(status, 410, "{body}");
        assert_eq!(body["code"], "reservation_expired", "{body}");
        assert!(app.mongo.order(&rid).await.unwrap().is_none());
        assert!(app.mongo.cancelled_order(&rid).await.unwrap().is_some());
        // The stale copy is replaced; the sale adds up.
        let rebuilt = eventually(Duration::from_secs(10), || async {
            let now: Option<String> = app.redis().hget(k.sale(), "epoch").await.unwrap();
            (now.is_some_and(|e| e != epoch)).then_some(())
        })
        .await;
        assert!(rebuilt.is_some(), "the stale copy was rebuilt");
        let (available, held, sold) = app.check_invariants(&sale).await;
        assert_eq!((available, held, sold), (2, 0, 0));
        return;
    }
    panic!("the stale copy never took the confirm before the rebuild");
}

/// A one-unit sale whose only order is durable while Redis still has its
/// hold confirming (an app with `fault_after_order_write`), then cancelled
/// by an admin with w1 and w2 in line: w1 is promoted to the unit.
/// Returns the sale, the order's id and the order.
async fn cancelled_while_confirming(app: &TestApp) -> (String, String, OrderDoc) {
    let sale = app
        .create_sale(json!({"total": 1, "per_user_limit": 1}))
        .await;
    let rid = hold(app, &sale, "buyer", 1).await;
    // Durable in MongoDB; Redis not told (the fault point).
    assert_eq!(app.confirm(&rid, "buyer").await.status(), 503);
    let order = app.mongo.order(&rid).await.unwrap().expect("the order");
    for w in ["w1", "w2"] {
        assert_eq!(join(app, &sale, w, 1).await.status(), 201);
    }
    assert_eq!(admin_cancel(app, &rid, "fraud").await.status(), 200);
    assert_eq!(waitlist_me(app, &sale, "w1").await["status"], "promoted");
    (sale, rid, order)
}

/// An order cancelled while Redis still has its hold confirming (its
/// order was durable, and telling Redis failed): the cancel ends the hold
/// and its units come back once. They came back twice: once by the
/// cancel, and again when the confirm's lease ended and the reaper gave
/// the hold up, so two buyers held the same unit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_cancelled_while_its_hold_is_confirming_comes_back_once() {
    use redis::AsyncCommands;
    let app = spawn_app_with(|s| {
        s.fault_after_order_write = true;
        s.confirm_lease = Duration::from_secs(3);
    })
    .await;
    let (sale, rid, _) = cancelled_while_confirming(&app).await;

    // The confirm's lease ends and the reaper settles the hold.
    let k = keys(&sale);
    let settled = eventually(Duration::from_secs(10), || async {
        let h: Option<String> = app.redis().hget(k.holds(), &rid).await.unwrap();
        h.filter(|h| !h.contains("\"confirming\"")).map(|_| ())
    })
    .await;
    assert!(settled.is_some(), "the hold left confirming");
    let deadlines: Vec<String> = app.redis().zrange(k.deadlines(), 0, -1).await.unwrap();
    assert!(!deadlines.contains(&rid), "no lease left to settle");
    assert_eq!(
        waitlist_me(&app, &sale, "w2").await["position"],
        1,
        "one unit, back once: w2 still waits"
    );
    let (available, held, sold) = app.check_invariants(&sale).await;
    assert_eq!((available, held, sold), (0, 1, 0));
}

/// A finisher that found the order before it was cancelled (the reaper's
/// fence, or a retried confirm's look-up) counts it after the cancel
/// ended its hold in this copy. The order was returned: counting it then
/// sold its units to nobody and counted its buyer's purchase again
/// (Redis's sold and the buyer's bought above MongoDB's orders).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_counted_after_its_cancel_by_a_late_finisher_stays_returned() {
    let app = spawn_app_with(|s| s.fault_after_order_write = true).await;
    let (sale, rid, order) = cancelled_while_confirming(&app).await;

    // The late finisher counts the order it read before the cancel.
    let redis = app.state.store.redis.clone();
    let rid = ReservationId::parse(&rid).unwrap();
    redis
        .apply_order(&rid, &order.user_id, &order.units)
        .await
        .unwrap();
    let (available, held, sold) = app.check_invariants(&sale).await;
    assert_eq!((available, held, sold), (0, 1, 0));
    assert_eq!(waitlist_me(&app, &sale, "w1").await["status"], "promoted");
    assert_eq!(waitlist_me(&app, &sale, "w2").await["position"], 1);
}
