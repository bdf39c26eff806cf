//! Protection and operations: rate limits, metrics, the stock event log,
//! admin orders and summary.

use std::time::Duration;

use flashdrop::{ids::SaleId, store::redis::SaleDump};
use redis::AsyncCommands;
use serde_json::{Value, json};

use crate::helpers::{
    admin_token, audit_dump, buyer_token, eventually, json, keys, servers, spawn_app,
    spawn_app_from, spawn_app_with, test_settings,
};

#[tokio::test]
async fn a_buyer_over_the_quota_gets_429_with_retry_after_and_others_do_not() {
    let app = spawn_app_with(|s| s.rate_limit_buyer = "1/s,burst=2".parse().unwrap()).await;
    let sale = app.create_sale(json!({"total": 10})).await;
    assert_eq!(app.reserve(&sale, "hammer", 1).await.status(), 201);
    assert_eq!(app.reserve(&sale, "hammer", 1).await.status(), 200);
    let limited = app.reserve(&sale, "hammer", 1).await;
    assert_eq!(limited.status(), 429);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert_eq!(json(limited).await["code"], "rate_limited");
    assert_eq!(
        app.reserve(&sale, "calm", 1).await.status(),
        201,
        "another buyer is unaffected"
    );
    // Reads are not buyer-limited.
    assert_eq!(
        app.http
            .get(app.api(&format!("/sales/{sale}")))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(
        app.reserve(&sale, "hammer", 1).await.status(),
        200,
        "allowed again after Retry-After"
    );
}

#[tokio::test]
async fn each_client_address_has_its_own_quota_on_every_route() {
    let app = spawn_app_with(|s| s.rate_limit_ip = "1/s,burst=3".parse().unwrap()).await;
    for _ in 0..3 {
        assert_eq!(
            app.http
                .get(app.url("/healthz"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let limited = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(json(limited).await["code"], "rate_limited");
    // Without trust, a forged X-Forwarded-For does not buy a new quota.
    let forged = app
        .http
        .get(app.url("/healthz"))
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 429);

    // Behind a trusted proxy, the address it appended is the client.
    let app = spawn_app_with(|s| {
        s.rate_limit_ip = "1/s,burst=3".parse().unwrap();
        s.trust_forwarded_for = true;
    })
    .await;
    let from = |ip: &'static str| {
        app.http
            .get(app.url("/healthz"))
            .header("x-forwarded-for", format!("198.51.100.1, {ip}"))
            .send()
    };
    for _ in 0..3 {
        assert_eq!(from("203.0.113.1").await.unwrap().status(), 200);
    }
    assert_eq!(from("203.0.113.1").await.unwrap().status(), 429);
    assert_eq!(
        from("203.0.113.2").await.unwrap().status(),
        200,
        "a second client is unaffected"
    );
}

async fn admin_get(app: &crate::helpers::TestApp, path: &str) -> Value {
    let resp = app
        .http
        .get(app.api(path))
        .bearer_auth(admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().await.unwrap()
}

#[tokio::test]
async fn the_summary_adds_up_a_scripted_sale() {
    let app = spawn_app().await;
    let price = 12_900;
    let sale = app
        .create_sale(json!({"total": 5, "per_user_limit": 2, "hold_seconds": 1}))
        .await;
    let rid = |v: Value| v["reservation_id"].as_str().unwrap().to_owned();
    let a = rid(json(app.reserve(&sale, "a", 2).await).await);
    assert_eq!(app.confirm(&a, "a").await.status(), 201);
    let b = rid(json(app.reserve(&sale, "b", 1).await).await);
    assert_eq!(app.cancel(&b, "b").await.status(), 204);
    app.reserve(&sale, "c", 1).await; // left to expire
    let d = rid(json(app.reserve(&sale, "d", 2).await).await);
    let joined = app
        .http
        .post(app.api(&format!("/sales/{sale}/waitlist")))
        .bearer_auth(buyer_token("w"))
        .json(&json!({"quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(joined.status(), 201);
    assert_eq!(app.confirm(&d, "d").await.status(), 201);
    // c's hold expires and its unit goes to w.
    let promoted = eventually(Duration::from_secs(5), || async {
        let me = app
            .http
            .get(app.api(&format!("/sales/{sale}/waitlist/me")))
            .bearer_auth(buyer_token("w"))
            .send()
            .await
            .ok()?
            .json::<Value>()
            .await
            .ok()?;
        me["reservation_id"].as_str().map(str::to_owned)
    })
    .await
    .expect("w was promoted");
    assert_eq!(app.confirm(&promoted, "w").await.status(), 201);
    app.stock_events(&sale).await; // the log has caught up

    let s = admin_get(&app, &format!("/admin/sales/{sale}/summary")).await;
    assert_eq!(s["units_sold"], 5);
    assert_eq!(s["orders"], 3);
    assert_eq!(s["revenue_cents"], 5 * price);
    assert_eq!(s["holds_created"], 5, "{s}");
    assert_eq!(s["holds_confirmed"], 3);
    assert_eq!(s["holds_cancelled"], 1);
    assert_eq!(s["holds_expired"], 1);
    assert_eq!(s["promotions"], 1);
    assert_eq!(s["waitlist_joins"], 1);
    assert_eq!(s["conversion"], 0.6);
    assert!(s["sold_out_after_seconds"].as_f64().unwrap() > 0.0);
    assert!(s["peak_reservations_per_second"].as_i64().unwrap() >= 1);

    // Orders, a page at a time.
    let first = admin_get(&app, &format!("/admin/sales/{sale}/orders?limit=2")).await;
    assert_eq!(first["orders"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = admin_get(
        &app,
        &format!("/admin/sales/{sale}/orders?limit=2&cursor={cursor}"),
    )
    .await;
    assert_eq!(second["orders"].as_array().unwrap().len(), 1);
    assert!(second["next_cursor"].is_null());
    let ids: std::collections::HashSet<&str> = first["orders"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["orders"].as_array().unwrap())
        .map(|o| o["order_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "no order twice across pages");
}

#[tokio::test]
async fn the_event_log_is_complete_and_in_order_across_a_server_restart() {
    let s = servers();
    let settings = test_settings(&s.redis_url, &s.mongo_uri);
    let mut first = spawn_app_from(settings.clone()).await;
    let sale = first
        .create_sale(json!({"total": 40, "per_user_limit": 1}))
        .await;
    for i in 0..10 {
        assert_eq!(
            first
                .reserve(&sale, &format!("early-{i}"), 1)
                .await
                .status(),
            201
        );
    }
    first.stop().await;

    let second = spawn_app_from(settings).await;
    for i in 0..10 {
        assert_eq!(
            second
                .reserve(&sale, &format!("late-{i}"), 1)
                .await
                .status(),
            201
        );
    }
    let log = second.stock_events(&sale).await;
    let seqs: Vec<i64> = log.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=21).collect::<Vec<_>>(),
        "every change once, in order"
    );
    assert_eq!(log[0].kind, "opened");
    assert!(log[1..].iter().all(|e| e.kind == "reserved"));
    assert_eq!(log[20].held, 20);
    let buyers: Vec<&str> = log[1..]
        .iter()
        .map(|e| e.buyer.as_deref().unwrap())
        .collect();
    assert!(buyers[..10].iter().all(|b| b.starts_with("early-")));
    assert!(buyers[10..].iter().all(|b| b.starts_with("late-")));
    // Durable entries are trimmed from Redis.
    let mut conn = second.redis();
    let left: usize = redis::cmd("XLEN")
        .arg(keys(&sale).events())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn metrics_are_served_in_prometheus_text() {
    let app = spawn_app().await;
    let sale = app.create_sale(json!({})).await;
    app.reserve(&sale, "m", 1).await;
    let resp = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    for name in [
        "flashdrop_http_requests_total",
        "flashdrop_http_request_duration_seconds_bucket",
        "flashdrop_reservations_total{outcome=\"created\"}",
        "flashdrop_script_batch_size{script=\"reserve\",quantile=\"0.5\"}",
        "flashdrop_live_sockets",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
    assert!(
        text.contains("route=\"/api/v1/sales/{id}/reservations\""),
        "ids are folded into {{id}}"
    );
}

/// Paths no route knows, however many, add no metric series: routes are
/// labelled by their template.
#[tokio::test]
async fn metrics_label_routes_by_template_not_by_path() {
    let app = spawn_app().await;
    for i in 0..5 {
        app.http
            .get(app.api(&format!("/sales/zz{i}")))
            .send()
            .await
            .unwrap();
        app.http
            .get(app.url(&format!("/no-such-page-{i}")))
            .send()
            .await
            .unwrap();
    }
    let text = app.metrics().await;
    assert!(!text.contains("zz"), "raw ids became labels");
    assert!(!text.contains("no-such-page"), "raw paths became labels");
    assert!(
        text.contains("route=\"/api/v1/sales/{id}\""),
        "templates are labels"
    );
}

/// The per-buyer quota is one budget in Redis: two instances together
/// grant a buyer no more than one would.
#[tokio::test]
async fn the_buyer_quota_is_shared_by_every_instance() {
    let s = servers();
    let mut settings = test_settings(&s.redis_url, &s.mongo_uri);
    settings.rate_limit_buyer = "1/s,burst=3".parse().unwrap();
    let a = spawn_app_from(settings.clone()).await;
    let b = spawn_app_from(settings).await;
    let sale = a
        .create_sale(json!({"total": 50, "per_user_limit": 10}))
        .await;
    let mut granted = 0;
    for i in 0..8 {
        let app = if i % 2 == 0 { &a } else { &b };
        let resp = app.reserve(&sale, "both-ways", 1).await;
        match resp.status().as_u16() {
            200 | 201 => granted += 1,
            429 => assert!(resp.headers().contains_key("retry-after")),
            other => panic!("{other}"),
        }
    }
    assert_eq!(granted, 3, "one budget of 3 across both instances");
    let other = b.reserve(&sale, "someone-else", 1).await;
    assert_eq!(
        other.status(),
        201,
        "another buyer has a budget of their own"
    );
}

/// The audit's line "every change recorded", from a dump of Redis.
async fn recorded_line(app: &crate::helpers::TestApp, sale: &str, dump: SaleDump) -> String {
    let checks = audit_dump(app, sale, dump).await;
    let line = checks.iter().find(|c| c.name == "every change recorded");
    line.unwrap().to_string()
}

/// The audit reads Redis first and MongoDB after. A sale still changing in
/// between (after a load, holds lapse and the line's next buyers are
/// promoted) is not a change lost: the log may have moved past the dump.
#[tokio::test]
async fn an_audit_of_a_sale_changing_while_it_reads_finds_every_change_recorded() {
    let app = spawn_app().await;
    let sale = app.create_sale(json!({"total": 10})).await;
    assert_eq!(app.reserve(&sale, "first", 1).await.status(), 201);
    app.stock_events(&sale).await;
    let dump = app
        .state
        .store
        .redis
        .dump_sale(&SaleId::parse(&sale).unwrap())
        .await;
    // Two changes after the dump, recorded before the audit reads the log.
    assert_eq!(app.reserve(&sale, "second", 1).await.status(), 201);
    assert_eq!(app.reserve(&sale, "third", 1).await.status(), 201);
    assert_eq!(app.stock_events(&sale).await.len(), 4);
    let line = recorded_line(&app, &sale, dump.unwrap()).await;
    assert!(line.starts_with("ok"), "{line}");
}

/// A Redis that came back older than the log, or a log that lost changes
/// Redis made, is still a failure of the same line.
#[tokio::test]
async fn an_audit_finds_a_redis_seq_the_log_does_not_match() {
    let mut app = spawn_app().await;
    let sale = app.create_sale(json!({"total": 10})).await;
    for buyer in ["first", "second", "third"] {
        assert_eq!(app.reserve(&sale, buyer, 1).await.status(), 201);
    }
    assert_eq!(app.stock_events(&sale).await.len(), 4);
    // Nothing in the background rebuilds the sale from here on.
    app.stop().await;
    let id = SaleId::parse(&sale).unwrap();
    for (seq, told) in [
        (2, "Redis is at seq 2, the log at 4"),
        (6, "Redis is at seq 6, the log at 4"),
    ] {
        let _: () = app
            .redis()
            .hset(keys(&sale).sale(), "seq", seq)
            .await
            .unwrap();
        let dump = app.state.store.redis.dump_sale(&id).await.unwrap();
        let line = recorded_line(&app, &sale, dump).await;
        assert!(line.starts_with("FAIL") && line.contains(told), "{line}");
    }
}
