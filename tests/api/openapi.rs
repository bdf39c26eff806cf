//! The checked-in OpenAPI document matches what the server generates, and
//! the server publishes it with Swagger UI.

use crate::helpers::spawn_app;

const CHECKED_IN: &str = include_str!("../../openapi/openapi.json");

#[test]
fn checked_in_spec_matches_the_generated_one() {
    let generated = flashdrop::api::spec_json();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(
            concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"),
            format!("{generated}\n"),
        )
        .unwrap();
        return;
    }
    let first_difference = CHECKED_IN
        .lines()
        .zip(generated.lines())
        .enumerate()
        .find(|(_, (old, new))| old != new)
        .map(|(i, (old, new))| format!("line {}: checked in {old:?}, generated {new:?}", i + 1));
    assert!(
        CHECKED_IN.trim_end() == generated.trim_end(),
        "openapi/openapi.json is stale ({}): run `UPDATE_OPENAPI=1 cargo test --test api openapi` and commit it",
        first_difference.unwrap_or_else(|| "lengths differ".into())
    );
}

#[tokio::test]
async fn the_spec_and_swagger_ui_are_served() {
    let app = spawn_app().await;
    let spec: serde_json::Value = app.get_json(app.url("/openapi.json")).await;
    assert_eq!(
        spec,
        serde_json::from_str::<serde_json::Value>(CHECKED_IN).unwrap()
    );
    let scheme = &spec["components"]["securitySchemes"]["bearerAuth"];
    assert_eq!(scheme["scheme"], "bearer");
    assert!(spec["paths"]["/sales/{id}/reservations"]["post"].is_object());

    let docs = app.http.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    let html = docs.text().await.unwrap();
    assert!(html.contains("swagger"));
    // The page shows the same document, closed request bodies included.
    assert!(html.contains(r#""additionalProperties": false"#));
}
