//! Creating, reading, changing and closing sales.

use crate::helpers::{admin_token, spawn_app};
use flashdrop::ids::SaleId;
use serde_json::{Value, json};

fn sale_id(sale: &str) -> SaleId {
    SaleId::parse(sale).unwrap()
}

#[tokio::test]
async fn a_created_sale_is_stored_opened_and_readable_with_live_counts() {
    let app = spawn_app().await;
    let sale = app
        .create_sale(json!({"total": 25, "per_user_limit": 3}))
        .await;

    let view = app.get_sale(&sale).await;
    assert_eq!(view["status"], "active");
    assert_eq!(view["total"], 25);
    assert_eq!(view["available"], 25);
    assert_eq!(view["held"], 0);
    assert_eq!(view["sold"], 0);
    assert_eq!(view["per_user_limit"], 3);
    assert_eq!(view["waitlist_length"], 0);
    assert!(view["server_time"].as_str().is_some());

    let stored = app.mongo.find_sale(&sale_id(&sale)).await.unwrap().unwrap();
    assert_eq!(stored.total, 25);
    assert_eq!(stored.price_cents, 12_900);
    let redis = app.redis_sale(&sale).await;
    assert_eq!(redis["available"], "25");
    assert_eq!(redis["next"], "1");

    let list: Vec<Value> = app.get_json(app.api("/sales")).await;
    assert!(list.iter().any(|s| s["id"] == sale.as_str()));
    let admin_list = app
        .http
        .get(app.api("/admin/sales?limit=5"))
        .bearer_auth(admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(admin_list.status(), 200);
}

#[tokio::test]
async fn status_follows_the_window() {
    let app = spawn_app().await;
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let upcoming = app
        .create_sale(json!({"starts_at": later.to_rfc3339(), "ends_at": (later + chrono::Duration::hours(1)).to_rfc3339()}))
        .await;
    assert_eq!(app.get_sale(&upcoming).await["status"], "upcoming");
    let resp = app.reserve(&upcoming, "early", 1).await;
    assert_eq!(resp.status(), 409);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["code"],
        "sale_not_active"
    );
}

async fn patch(app: &crate::helpers::TestApp, sale: &str, body: Value) -> reqwest::Response {
    app.http
        .patch(app.api(&format!("/admin/sales/{sale}")))
        .bearer_auth(admin_token())
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn before_the_start_the_window_moves_and_stock_rises() {
    let app = spawn_app().await;
    let start = chrono::Utc::now() + chrono::Duration::hours(1);
    let sale = app
        .create_sale(json!({"starts_at": start.to_rfc3339(), "ends_at": (start + chrono::Duration::hours(1)).to_rfc3339()}))
        .await;
    let new_end = start + chrono::Duration::hours(3);
    let resp = patch(
        &app,
        &sale,
        json!({"total": 40, "ends_at": new_end.to_rfc3339(), "price_cents": 100}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let view: Value = resp.json().await.unwrap();
    assert_eq!(view["total"], 40);
    assert_eq!(view["available"], 40);
    assert_eq!(view["price_cents"], 100);
    assert_eq!(app.redis_sale(&sale).await["total"], "40");
    let stored = app.mongo.find_sale(&sale_id(&sale)).await.unwrap().unwrap();
    assert_eq!(stored.total, 40);
    assert_eq!(
        stored.ends_at.timestamp_millis(),
        new_end.timestamp_millis()
    );

    let lower = patch(&app, &sale, json!({"total": 5})).await;
    assert_eq!(lower.status(), 409);
    assert_eq!(
        lower.json::<Value>().await.unwrap()["code"],
        "invalid_change"
    );
    let before_start = start - chrono::Duration::minutes(1);
    let bad = patch(&app, &sale, json!({"ends_at": before_start.to_rfc3339()})).await;
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn after_the_start_only_safe_changes_are_accepted() {
    let app = spawn_app().await;
    let sale = app.create_sale(json!({})).await;
    assert_eq!(app.reserve(&sale, "b1", 1).await.status(), 201);

    for change in [
        json!({"price_cents": 1}),
        json!({"total": 100}),
        json!({"per_user_limit": 1}),
    ] {
        let resp = patch(&app, &sale, change.clone()).await;
        assert_eq!(resp.status(), 409, "{change}");
        assert_eq!(resp.json::<Value>().await.unwrap()["code"], "sale_started");
    }
    let later = chrono::Utc::now() + chrono::Duration::hours(5);
    let resp = patch(
        &app,
        &sale,
        json!({"ends_at": later.to_rfc3339(), "name": "Renamed"}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let view: Value = resp.json().await.unwrap();
    assert_eq!(view["name"], "Renamed");
    assert_eq!(view["held"], 1);
    app.check_invariants(&sale).await;
}

async fn close(app: &crate::helpers::TestApp, sale: &str) -> reqwest::Response {
    app.http
        .post(app.api(&format!("/admin/sales/{sale}/close")))
        .bearer_auth(admin_token())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn closing_a_sale_ends_it_for_new_holds() {
    let app = spawn_app().await;
    let sale = app.create_sale(json!({})).await;
    let resp = close(&app, &sale).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["status"], "ended");
    assert_eq!(app.get_sale(&sale).await["status"], "ended");
    let stored = app.mongo.find_sale(&sale_id(&sale)).await.unwrap().unwrap();
    assert!(stored.closed_at.is_some());
    let resp = app.reserve(&sale, "late", 1).await;
    assert_eq!(resp.status(), 409);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["code"],
        "sale_not_active"
    );
    let again = patch(&app, &sale, json!({"name": "x"})).await;
    assert_eq!(again.status(), 409);
}

/// Concurrent changes of one sale leave both stores agreeing: MongoDB
/// takes one change at a time (a version check), and Redis follows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_patches_leave_both_stores_agreeing() {
    let app = std::sync::Arc::new(spawn_app().await);
    let start = chrono::Utc::now() + chrono::Duration::hours(1);
    let sale = app
        .create_sale(json!({"starts_at": start.to_rfc3339(), "ends_at": (start + chrono::Duration::hours(1)).to_rfc3339()}))
        .await;
    let patches: Vec<_> = (0..20)
        .map(|i| {
            let (app, sale) = (app.clone(), sale.clone());
            tokio::spawn(async move {
                let total = 20 + i;
                let resp =
                    patch(&app, &sale, json!({"total": total, "price_cents": 100 + i})).await;
                resp.status().as_u16()
            })
        })
        .collect();
    for p in patches {
        let status = p.await.unwrap();
        assert!([200, 409].contains(&status), "{status}");
    }
    let stored = app.mongo.find_sale(&sale_id(&sale)).await.unwrap().unwrap();
    let redis = app.redis_sale(&sale).await;
    assert_eq!(redis["total"], stored.total.to_string());
    assert_eq!(redis["price"], stored.price_cents.to_string());
    assert_eq!(app.get_sale(&sale).await["total"], stored.total);
}

/// A change MongoDB did not take is not in Redis either.
#[tokio::test]
async fn a_patch_or_close_that_mongodb_refuses_changes_nothing() {
    let app = crate::helpers::spawn_app_with(|s| s.fault_fail_sale_write = true).await;
    let start = chrono::Utc::now() + chrono::Duration::hours(1);
    let sale = app
        .create_sale(json!({"total": 10, "starts_at": start.to_rfc3339(), "ends_at": (start + chrono::Duration::hours(1)).to_rfc3339()}))
        .await;
    let resp = patch(&app, &sale, json!({"total": 30})).await;
    assert_eq!(resp.status(), 503);
    let resp = close(&app, &sale).await;
    assert_eq!(resp.status(), 503);
    let redis = app.redis_sale(&sale).await;
    assert_eq!(
        (redis["total"].as_str(), redis["closed"].as_str()),
        ("10", "0")
    );
    let stored = app.mongo.find_sale(&sale_id(&sale)).await.unwrap().unwrap();
    assert_eq!((stored.total, stored.closed_at.is_none()), (10, true));
    assert_eq!(app.get_sale(&sale).await["status"], "upcoming");
}

/// A misspelt optional field must not silently make another sale (a sale
/// without its lobby): every request body refuses fields it does not know,
/// naming them, and says so in the document.
#[tokio::test]
async fn a_field_the_api_does_not_know_is_refused_by_name_and_nothing_changes() {
    let app = spawn_app().await;
    let sale = app.create_sale(json!({"total": 10})).await;
    let mut body = crate::helpers::sale_body(json!({}));
    body["lobby_open_at"] = json!("2030-01-01T00:00:00Z");
    let sales = app.mongo.list_sales(1000).await.unwrap().len();
    let cases = [
        (
            "POST",
            "/api/v1/admin/sales".to_owned(),
            body,
            admin_token(),
        ),
        (
            "PATCH",
            format!("/api/v1/admin/sales/{sale}"),
            json!({"total": 20, "totl": 30}),
            admin_token(),
        ),
        (
            "POST",
            format!("/api/v1/sales/{sale}/reservations"),
            json!({"quantity": 1, "qty": 2}),
            crate::helpers::buyer_token("strict"),
        ),
        (
            "POST",
            format!("/api/v1/sales/{sale}/waitlist"),
            json!({"quantity": 1, "priority": true}),
            crate::helpers::buyer_token("strict"),
        ),
    ];
    for (method, path, body, token) in cases {
        let resp = app
            .http
            .request(method.parse().unwrap(), app.url(&path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{method} {path}");
        let error: Value = resp.json().await.unwrap();
        assert_eq!(error["code"], "invalid_request");
        let unknown = ["lobby_open_at", "totl", "qty", "priority"];
        assert!(
            unknown
                .iter()
                .any(|f| error["message"] == format!("field `{f}` is not known here")),
            "{error}"
        );
    }
    // Nothing changed: no new sale, the stock as it was, nobody holding.
    assert_eq!(app.mongo.list_sales(1000).await.unwrap().len(), sales);
    let view = app.get_sale(&sale).await;
    assert_eq!(
        (view["total"].as_i64(), view["held"].as_i64()),
        (Some(10), Some(0))
    );
    // The document says so: every request body is closed.
    let spec: Value = app.get_json(app.url("/openapi.json")).await;
    for name in ["CreateSale", "PatchSale", "ReserveRequest", "JoinRequest"] {
        assert_eq!(
            spec["components"]["schemas"][name]["additionalProperties"], false,
            "{name}"
        );
    }
}

/// poem-openapi's `String` takes a JSON number or boolean and makes text of
/// it; the schema fuzzer had `{"description": 6.27e16}` make a webhook
/// endpoint. Every text field of every request body takes JSON strings
/// only, names the field when it gets something else, and nothing changes.
#[tokio::test]
async fn a_number_or_a_boolean_where_the_document_says_string_is_refused_and_nothing_changes() {
    let app = spawn_app().await;
    let sale = app.create_sale(json!({"total": 10, "name": "Kept"})).await;
    let rid = crate::helpers::hold(&app, &sale, "texty", 1).await;
    assert_eq!(app.confirm(&rid, "texty").await.status(), 201);
    let sales = app.mongo.list_sales(1000).await.unwrap().len();
    let cases = [
        (
            "POST",
            "/api/v1/admin/sales".to_owned(),
            crate::helpers::sale_body(json!({"name": 123})),
            "name",
        ),
        (
            "POST",
            "/api/v1/admin/sales".to_owned(),
            crate::helpers::sale_body(json!({"name": true})),
            "name",
        ),
        (
            "PATCH",
            format!("/api/v1/admin/sales/{sale}"),
            json!({"name": 7}),
            "name",
        ),
        (
            "POST",
            "/api/v1/admin/webhooks".to_owned(),
            json!({"description": 6.274019507408948e16, "url": "HTTP://P"}),
            "description",
        ),
        (
            "POST",
            "/api/v1/admin/webhooks".to_owned(),
            json!({"description": false, "url": "http://example.com/hook"}),
            "description",
        ),
        (
            "POST",
            format!("/api/v1/admin/orders/{rid}/cancel"),
            json!({"reason": 12}),
            "reason",
        ),
    ];
    for (method, path, body, field) in cases {
        let resp = app
            .http
            .request(method.parse().unwrap(), app.url(&path))
            .bearer_auth(admin_token())
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{method} {path} {body}");
        let error: Value = resp.json().await.unwrap();
        assert_eq!(error["code"], "invalid_request", "{error}");
        let message = error["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("field `{field}` must be a string")),
            "{body}: {message}"
        );
    }
    // Nothing changed: no new sale, the name as it was, no endpoint, the
    // order still standing.
    assert_eq!(app.mongo.list_sales(1000).await.unwrap().len(), sales);
    assert_eq!(app.get_sale(&sale).await["name"], "Kept");
    let endpoints = app
        .http
        .get(app.api("/admin/webhooks"))
        .bearer_auth(admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(crate::helpers::json(endpoints).await, json!([]));
    let orders = app.orders(&sale).await;
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0].id, rid);
}

/// An optional field sent as `null` is as if it were left out (poem-openapi
/// reads it so), and the document says so: every optional property of a
/// request body is `nullable`; a required one sent as `null` is refused.
#[tokio::test]
async fn null_for_an_optional_field_is_leaving_it_out_as_the_document_says() {
    let app = spawn_app().await;
    let sale = app.create_sale(json!({"total": 10, "name": "Kept"})).await;
    let resp = app
        .http
        .patch(app.api(&format!("/admin/sales/{sale}")))
        .bearer_auth(admin_token())
        .json(&json!({"name": null, "hold_seconds": 120}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let view = app.get_sale(&sale).await;
    assert_eq!(
        (view["name"].as_str(), view["hold_seconds"].as_i64()),
        (Some("Kept"), Some(120))
    );
    let resp = app
        .http
        .post(app.api("/admin/webhooks"))
        .bearer_auth(admin_token())
        .json(&json!({"url": "http://example.com/hook", "description": null, "types": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let created: Value = resp.json().await.unwrap();
    assert!(created.get("description").is_none(), "{created}");
    assert_eq!(created["types"].as_array().unwrap().len(), 5);
    let resp = app
        .http
        .post(app.api("/admin/sales"))
        .bearer_auth(admin_token())
        .json(&crate::helpers::sale_body(json!({"name": null})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let error: Value = resp.json().await.unwrap();
    assert_eq!(error["message"], "field `name` is required");

    // The document served (`openapi::the_spec_and_swagger_ui_are_served`).
    let spec: Value = serde_json::from_str(&flashdrop::api::spec_json()).unwrap();
    let schemas = &spec["components"]["schemas"];
    let mut optional = 0;
    for name in [
        "CreateSale",
        "PatchSale",
        "ReserveRequest",
        "JoinRequest",
        "CancelOrder",
        "CreateEndpoint",
        "PaymentEvent",
    ] {
        let required = schemas[name]["required"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for (field, property) in schemas[name]["properties"].as_object().unwrap() {
            let is_required = required.iter().any(|r| r == field);
            assert_eq!(
                property["nullable"] == json!(true),
                !is_required,
                "{name}.{field}: {property}"
            );
            optional += usize::from(!is_required);
        }
    }
    assert!(optional >= 20, "{optional}");
}

/// GET /sales (or /admin/sales) a page at a time from the start, each
/// page after the last sale of the one before, until a page comes back
/// empty.
async fn every_page(app: &crate::helpers::TestApp, path: &str, limit: usize) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = format!("{path}?limit={limit}");
        if let Some(after) = &after {
            url.push_str(&format!("&after={after}"));
        }
        let resp = app
            .http
            .get(app.api(&url))
            .bearer_auth(admin_token())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{url}");
        let page: Vec<Value> = resp.json().await.unwrap();
        assert!(page.len() <= limit);
        let Some(last) = page.last() else {
            return pages;
        };
        after = Some(last["id"].as_str().unwrap().to_owned());
        pages.push(page);
        assert!(pages.len() <= 1_000, "{path}: the pages never end");
    }
}

#[tokio::test]
async fn the_sales_list_pages_through_every_sale_once_past_the_newest_two_hundred() {
    use futures::{StreamExt, stream};
    let app = spawn_app().await;
    // 205 sales, their starts on seven minutes: many share a start.
    let now = chrono::Utc::now();
    let created: Vec<String> = stream::iter(0..205)
        .map(|i| {
            let starts = now - chrono::Duration::minutes(i % 7);
            let body = json!({"starts_at": starts.to_rfc3339(), "ends_at": (now + chrono::Duration::hours(1)).to_rfc3339()});
            let app = &app;
            async move { app.create_sale(body).await }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut created_sorted = created.clone();
    created_sorted.sort();

    // Pages of 50 (within the newest 200 each instance keeps, then past
    // them), and of 200 (the second page past them): every sale once, in
    // the listing's order, newest start first, then id.
    for (path, limit, pages) in [
        ("/sales", 50, 5),
        ("/admin/sales", 200, 2),
        ("/sales", 7, 30),
    ] {
        let got = every_page(&app, path, limit).await;
        assert_eq!(got.len(), pages, "{path} in pages of {limit}");
        let listed: Vec<&Value> = got.iter().flatten().collect();
        let key = |s: &Value| {
            (
                chrono::DateTime::parse_from_rfc3339(s["starts_at"].as_str().unwrap()).unwrap(),
                s["id"].as_str().unwrap().to_owned(),
            )
        };
        assert!(
            listed.windows(2).all(|w| key(w[0]) > key(w[1])),
            "{path} in pages of {limit}: not newest start first, then id"
        );
        let mut ids: Vec<String> = listed
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        assert_eq!(ids, created_sorted, "{path} in pages of {limit}");
    }

    // After a sale there is none of, or no id at all: 404, as for an id
    // in a path, said plainly.
    for after in [
        SaleId::new().to_string(),
        "not-a-sale".to_owned(),
        String::new(),
    ] {
        let resp = app
            .http
            .get(app.api(&format!("/sales?after={after}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "after={after}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "not_found");
        assert!(
            body["message"].as_str().unwrap().contains("after"),
            "{body}"
        );
    }
}
