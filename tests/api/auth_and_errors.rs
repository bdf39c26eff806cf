//! Authentication, roles, and the one error shape for every failure.

use crate::helpers::{JWT_SECRET, admin_token, buyer_token, sale_body, spawn_app};
use serde_json::{Value, json};

async fn assert_error(resp: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(resp.status(), status);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("application/json"), "content-type {ct}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert!(!body["message"].as_str().unwrap().is_empty());
    body
}

#[tokio::test]
async fn admin_routes_need_a_valid_admin_token() {
    let app = spawn_app().await;
    let url = app.api("/admin/sales");

    let none = app
        .http
        .post(&url)
        .json(&sale_body(json!({})))
        .send()
        .await
        .unwrap();
    assert_error(none, 401, "unauthorized").await;

    let garbage = app
        .http
        .post(&url)
        .bearer_auth("not.a.jwt")
        .json(&sale_body(json!({})));
    assert_error(garbage.send().await.unwrap(), 401, "unauthorized").await;

    let other_secret = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "admin", "role": "admin", "exp": chrono::Utc::now().timestamp() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(b"some-other-secret-some-other-secret"),
    )
    .unwrap();
    let forged = app
        .http
        .post(&url)
        .bearer_auth(other_secret)
        .json(&sale_body(json!({})));
    assert_error(forged.send().await.unwrap(), 401, "unauthorized").await;

    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "admin", "role": "admin", "exp": chrono::Utc::now().timestamp() - 600}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let old = app
        .http
        .post(&url)
        .bearer_auth(expired)
        .json(&sale_body(json!({})));
    let body = assert_error(old.send().await.unwrap(), 401, "unauthorized").await;
    assert!(body["message"].as_str().unwrap().contains("expired"));

    let buyer = app
        .http
        .post(&url)
        .bearer_auth(buyer_token("bob"))
        .json(&sale_body(json!({})));
    assert_error(buyer.send().await.unwrap(), 403, "forbidden").await;

    let admin = app
        .http
        .post(&url)
        .bearer_auth(admin_token())
        .json(&sale_body(json!({})));
    assert_eq!(admin.send().await.unwrap().status(), 201);
}

#[tokio::test]
async fn buyer_routes_need_a_token() {
    let app = spawn_app().await;
    let sale = app.create_sale(json!({})).await;
    let resp = app
        .http
        .post(app.api(&format!("/sales/{sale}/reservations")))
        .json(&json!({"quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "unauthorized").await;
}

#[tokio::test]
async fn malformed_input_is_400_invalid_request_in_json() {
    let app = spawn_app().await;
    let url = app.api("/admin/sales");
    let send = |body: String| {
        app.http
            .post(&url)
            .bearer_auth(admin_token())
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert_error(
        send("{not json".into()).await.unwrap(),
        400,
        "invalid_request",
    )
    .await;
    let wrong_type = sale_body(json!({"total": "many"})).to_string();
    assert_error(send(wrong_type).await.unwrap(), 400, "invalid_request").await;
    let missing = json!({"name": "x"}).to_string();
    assert_error(send(missing).await.unwrap(), 400, "invalid_request").await;

    let sale = app.create_sale(json!({})).await;
    let seq_before = app.redis_sale(&sale).await["seq"].clone();
    let negative = app
        .http
        .post(app.api(&format!("/sales/{sale}/reservations")))
        .bearer_auth(buyer_token("neg"))
        .json(&json!({"quantity": -1}))
        .send()
        .await
        .unwrap();
    assert_error(negative, 400, "invalid_request").await;
    // Nothing reached Redis: no change was recorded.
    assert_eq!(app.redis_sale(&sale).await["seq"], seq_before);
}

#[tokio::test]
async fn sale_rules_answer_400_with_the_field_named() {
    let app = spawn_app().await;
    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let cases = [
        (json!({"total": 0}), "total"),
        (json!({"total": 10_000_001}), "total"),
        (json!({"per_user_limit": 11}), "per_user_limit"),
        (json!({"hold_seconds": 86_401}), "hold_seconds"),
        (json!({"currency": "euro"}), "currency"),
        (json!({"price_cents": -5}), "price_cents"),
        (json!({"name": ""}), "name"),
        (json!({"ends_at": past}), "ends_at"),
        // Found by the schema fuzzer: a window ending in the year 8667 was a
        // 500, and the sale it left in MongoDB made every list a 500.
        (json!({"ends_at": "8667-12-09T13:54:37+17:01"}), "ends_at"),
    ];
    for (overrides, field) in cases {
        let resp = app
            .http
            .post(app.api("/admin/sales"))
            .bearer_auth(admin_token())
            .json(&sale_body(overrides.clone()))
            .send()
            .await
            .unwrap();
        let body = assert_error(resp, 400, "invalid_request").await;
        assert!(
            body["message"].as_str().unwrap().contains(field),
            "{overrides}: {body}"
        );
    }
    // Nothing refused was kept: the lists still answer.
    let listed = app.http.get(app.api("/sales")).send().await.unwrap();
    assert_eq!(listed.status(), 200);
}

#[tokio::test]
async fn unknown_routes_and_ids_are_404_in_json() {
    let app = spawn_app().await;
    let resp = app.http.get(app.api("/nothing-here")).send().await.unwrap();
    assert_error(resp, 404, "not_found").await;
    let resp = app.http.get(app.api("/sales/{bad}")).send().await.unwrap();
    assert_error(resp, 404, "not_found").await;
    let resp = app
        .http
        .get(app.api("/sales/0123456789abcdef01234567"))
        .send()
        .await
        .unwrap();
    assert_error(resp, 404, "not_found").await;
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let app = spawn_app().await;
    let huge = sale_body(json!({"name": "x".repeat(100_000)})).to_string();
    let resp = app
        .http
        .post(app.api("/admin/sales"))
        .bearer_auth(admin_token())
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_error(resp, 413, "payload_too_large").await;
}

/// Posts `body` as one chunk of a chunked body (no length declared) over a
/// raw connection; the answer's status and body.
async fn post_chunked(address: &str, path: &str, token: &str, body: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = address.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(host).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len()).as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    // The server may answer 413 and close before reading the whole body.
    let _ = conn.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer[9..12].parse().unwrap();
    let (head, rest) = answer.split_once("\r\n\r\n").unwrap();
    let json = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        rest.split_once("\r\n")
            .unwrap()
            .1
            .rsplit_once("\r\n0\r\n")
            .unwrap()
            .0
    } else {
        rest
    };
    (status, serde_json::from_str(json.trim()).unwrap())
}

#[tokio::test]
async fn chunked_bodies_are_read_within_the_cap() {
    let app = spawn_app().await;
    let path = "/api/v1/admin/sales";
    let small = sale_body(json!({"name": "chunked"})).to_string();
    let (status, sale) = post_chunked(&app.address, path, &admin_token(), &small).await;
    assert_eq!(status, 201, "{sale}");
    assert_eq!(sale["name"], "chunked");
    let id = flashdrop::ids::SaleId::parse(sale["id"].as_str().unwrap()).unwrap();
    let stored = app.mongo.find_sale(&id).await.unwrap();
    assert_eq!(stored.map(|s| s.name), Some("chunked".to_owned()));

    let huge = sale_body(json!({"name": "x".repeat(100_000)})).to_string();
    let (status, error) = post_chunked(&app.address, path, &admin_token(), &huge).await;
    assert_eq!(status, 413, "{error}");
    assert_eq!(error["code"], "payload_too_large", "{error}");
}

#[tokio::test]
async fn parse_errors_name_the_field_and_the_rule_in_plain_words() {
    let app = spawn_app().await;
    let sale = app.create_sale(json!({})).await;
    let reserve = |body: &'static str| {
        app.http
            .post(app.api(&format!("/sales/{sale}/reservations")))
            .bearer_auth(buyer_token("words"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let cases = [
        (
            r#"{"quantity": "x"}"#,
            "field `quantity` must be an integer",
        ),
        (r#"{"quantity": 0}"#, "field `quantity` must be at least 1"),
        (
            r#"{"quantity": 1001}"#,
            "field `quantity` must be at most 1000",
        ),
        (r#"{"qty": 1}"#, "field `quantity` is required"),
        (r#"{"quantity": 1"#, "the body is not valid JSON"),
        (r#"[1]"#, "the body must be a JSON object"),
    ];
    for (body, expected) in cases {
        let err = assert_error(reserve(body).await.unwrap(), 400, "invalid_request").await;
        let message = err["message"].as_str().unwrap();
        assert!(message.starts_with(expected), "{body}: {message}");
        // No names of the implementation's types reach the buyer.
        for internal in ["integer_int64", "ReserveRequest", "occurred while"] {
            assert!(!message.contains(internal), "{body}: {message}");
        }
    }
    let resp = app
        .http
        .get(app.api("/sales?limit=x"))
        .send()
        .await
        .unwrap();
    let err = assert_error(resp, 400, "invalid_request").await;
    assert_eq!(err["message"], "parameter `limit` must be a whole number");
    let resp = app
        .http
        .get(app.api("/sales?limit=201"))
        .send()
        .await
        .unwrap();
    let err = assert_error(resp, 400, "invalid_request").await;
    assert_eq!(err["message"], "parameter `limit` must be at most 200");
    let resp = app
        .http
        .post(app.api("/admin/sales"))
        .bearer_auth(admin_token())
        .json(&sale_body(json!({"starts_at": "tomorrow"})))
        .send()
        .await
        .unwrap();
    let err = assert_error(resp, 400, "invalid_request").await;
    let message = err["message"].as_str().unwrap();
    assert!(
        message.starts_with("field `starts_at` must be a date-time"),
        "{message}"
    );
    let resp = app
        .http
        .post(app.api(&format!("/sales/{sale}/reservations")))
        .bearer_auth(buyer_token("words"))
        .header("Idempotency-Key", "has space")
        .json(&json!({"quantity": 1}))
        .send()
        .await
        .unwrap();
    let err = assert_error(resp, 400, "invalid_request").await;
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .starts_with("parameter `Idempotency-Key`")
    );
    // Nothing was held by any of these.
    assert_eq!(app.redis_sale(&sale).await["held"], "0");
}

#[tokio::test]
async fn method_not_allowed_is_405_with_allow() {
    let app = spawn_app().await;
    let cases = [
        (
            "/api/v1/sales/0123456789abcdef01234567/reservations",
            "PUT",
            vec!["POST"],
        ),
        (
            "/api/v1/reservations/abc",
            "POST",
            vec!["DELETE", "GET", "HEAD"],
        ),
        ("/api/v1/sales", "TRACE", vec!["GET", "HEAD"]),
    ];
    for (path, method, allowed) in cases {
        let resp = app
            .http
            .request(method.parse().unwrap(), app.url(path))
            .send()
            .await
            .unwrap();
        let allow = resp
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned());
        let allow = allow.unwrap_or_else(|| panic!("{method} {path}: no Allow"));
        let mut methods: Vec<&str> = allow.split(", ").collect();
        methods.sort_unstable();
        assert_eq!(methods, allowed, "{method} {path}");
        assert_error(resp, 405, "method_not_allowed").await;
    }
}

/// HEAD on an API route is its GET without the body, and query
/// parameters reach the operation: what the OpenAPI service did for the
/// routes it held, now that they are mounted one by one.
#[tokio::test]
async fn head_on_an_api_route_is_its_get_without_a_body_and_queries_reach_it() {
    let app = spawn_app().await;
    let sale = app.create_sale(json!({})).await;
    let get = app
        .http
        .get(app.api(&format!("/sales/{sale}")))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    let get_type = get.headers()["content-type"].clone();
    assert!(!get.bytes().await.unwrap().is_empty());
    let head = app
        .http
        .head(app.api(&format!("/sales/{sale}")))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-type"], get_type);
    assert!(head.bytes().await.unwrap().is_empty());

    app.create_sale(json!({})).await;
    let page: Value = app.get_json(app.api("/sales?limit=1")).await;
    assert_eq!(page.as_array().map(Vec::len), Some(1), "{page}");
    let resp = app
        .http
        .get(app.api("/sales?limit=0"))
        .send()
        .await
        .unwrap();
    assert_error(resp, 400, "invalid_request").await;
}

/// A handler that panics answers 500 with the one error body and its
/// request id, and the server goes on serving: the answers' stack
/// (`FrontDoor`, the one the app uses) around a route that panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_answers_500_and_the_next_request_is_served() {
    use poem::{Route, get, handler, listener::TcpListener};
    #[handler]
    fn boom() -> &'static str {
        panic!("a bug in a handler")
    }
    #[handler]
    fn fine() -> &'static str {
        "fine"
    }
    let port = crate::helpers::free_port();
    let app = flashdrop::front_door::FrontDoor::new(
        Route::new().at("/boom", get(boom)).at("/fine", get(fine)),
        flashdrop::startup::MAX_BODY_BYTES,
    );
    tokio::spawn(poem::Server::new(TcpListener::bind(format!("127.0.0.1:{port}"))).run(app));
    crate::helpers::wait_for_port(port, "the test server");
    let http = reqwest::Client::new();
    let resp = http
        .get(format!("http://127.0.0.1:{port}/boom"))
        .header("X-Request-Id", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(resp.headers()["x-request-id"], "req-42");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "internal");
    // The same connection pool, the same server: served as ever.
    for _ in 0..3 {
        let resp = http
            .get(format!("http://127.0.0.1:{port}/fine"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().contains_key("x-request-id"));
        assert_eq!(resp.text().await.unwrap(), "fine");
    }
}
