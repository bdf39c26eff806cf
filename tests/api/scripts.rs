//! The Lua boundary itself: a script finds its keys by role, and one that
//! reaches for a key its caller did not declare fails instead of touching
//! a key Redis Cluster would not route to it.

use crate::helpers::{keys, spawn_app};
use serde_json::json;

const PRELUDE: &str = include_str!("../../lua/prelude.lua");

#[tokio::test]
async fn a_script_reaching_for_an_undeclared_key_fails_loudly() {
    let app = spawn_app().await;
    let sale = app.create_sale(json!({"total": 3})).await;
    let keys = keys(&sale);
    let mut conn = app.redis();
    let script = |body: &str| redis::Script::new(&format!("{PRELUDE}\n{body}"));

    // Declared: found by role, whatever the order.
    let total: String = script("return redis.call('HGET', K.sale, 'total')")
        .key(keys.wait())
        .key(keys.sale())
        .invoke_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(total, "3");

    // Not declared: an error, and nothing read or written.
    let err = script("return redis.call('ZCARD', K.wait)")
        .key(keys.sale())
        .invoke_async::<i64>(&mut conn)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("key role wait was not declared"),
        "{err}"
    );
}
