//! The Lua boundary itself: a script finds its keys by role, and one that
//! reaches for a key its caller did not declare fails instead of touching
//! a key Redis Cluster would not route to it.

use crate::helpers::{keys, spawn_app};
use flashdrop::store::{keys::Role, scripts::assemble};
use serde_json::json;

#[tokio::test]
async fn a_script_reaching_for_an_undeclared_key_fails_loudly() {
    let app = spawn_app().await;
    let sale = app.create_sale(json!({"total": 3})).await;
    let keys = keys(&sale);
    let mut conn = app.redis();
    let script = |body: &str, roles: &[Role]| redis::Script::new(&assemble(body, roles));

    // Declared: found by role, the declared keys in their order and a
    // key the caller adds after them (as an idempotency key is) by its
    // name.
    let read = "return {redis.call('HGET', K.sale, 'total'), redis.call('ZCARD', K.wait)}";
    let (total, waiting): (String, i64) = script(read, &[Role::Sale])
        .key(keys.sale())
        .key(keys.wait())
        .invoke_async(&mut conn)
        .await
        .unwrap();
    assert_eq!((total.as_str(), waiting), ("3", 0));

    // Not declared: an error, and nothing read or written.
    let err = script("return redis.call('ZCARD', K.wait)", &[Role::Sale])
        .key(keys.sale())
        .invoke_async::<i64>(&mut conn)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("key role wait was not declared"),
        "{err}"
    );
}

/// The lobby's member and admission strings are built in Rust
/// (`store::keys`) and in Lua, and parsed in Lua: buyers whose ids hold
/// the separators (`:` and spaces) come out of the scripts as they went
/// in, a latecomer's member is the one Rust builds from the same join
/// time, and an admission Rust writes (as a rebuild does) reads back field
/// for field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lobby_member_and_admission_formats_round_trip_through_the_scripts() {
    use crate::lobbies::{draw, join_all, join_lobby, lobby_now, lobby_sale, start_in};
    use flashdrop::store::{
        keys::{Role, admission_value, late_member},
        scripts::{LobbyReadReply, LobbyState},
    };
    use redis::AsyncCommands;
    use std::time::Duration;

    let app = spawn_app().await;
    let sale = lobby_sale(&app, json!({"admit_per_second": 2})).await;
    let early: Vec<String> = [
        "plain",
        "with:colon",
        "two::colons:",
        "with space",
        "ünï:cödé",
        "0:beef:x",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    join_all(&app, &sale, &early, 4).await;
    start_in(&app, &sale, 0.2).await;
    draw(&app, &sale).await;
    // A latecomer, while the early ones still wait: Lua builds the member.
    let late = "late: one";
    assert_eq!(join_lobby(&app, &sale, late).await.status(), 201);
    let id = flashdrop::ids::SaleId::parse(&sale).unwrap();
    let redis = &app.state.store.redis;
    let LobbyReadReply::Place(place) = redis.lobby_read(&id, late).await.unwrap() else {
        panic!("the sale is in Redis")
    };
    assert!(place.late);
    let member = late_member(place.joined_at.unwrap(), late);
    let mut conn = app.redis();
    let score: Option<f64> = conn
        .zscore(keys(&sale).of(Role::Lobby), &member)
        .await
        .unwrap();
    assert!(score.is_some(), "{member} is the latecomer's member");

    // Everyone is let in: lobby_tick takes each buyer out of the member
    // Rust built (the early ones) or Lua built (the latecomer).
    let everyone: Vec<String> = early.iter().cloned().chain([late.to_owned()]).collect();
    let admitted = crate::helpers::eventually(Duration::from_secs(15), || async {
        let (admitted, _, _) = lobby_now(&app, &sale).await;
        (admitted.len() == everyone.len()).then_some(admitted)
    })
    .await
    .expect("everyone let in");
    for buyer in &everyone {
        assert!(
            admitted.contains_key(buyer),
            "{buyer} came out as {:?}",
            admitted.keys()
        );
    }

    // An admission written as Rust writes it reads back as it was meant.
    let buyer = "with:colon";
    let (deadline, at, joined) = (9_999_999_999_999, 1_700_000_000_123, 1_700_000_000_001);
    let _: () = conn
        .hset(
            keys(&sale).of(Role::Admitted),
            buyer,
            admission_value('u', deadline, at, joined),
        )
        .await
        .unwrap();
    let LobbyReadReply::Place(place) = redis.lobby_read(&id, buyer).await.unwrap() else {
        panic!("the sale is in Redis")
    };
    assert_eq!(place.state, LobbyState::Used);
    assert_eq!(
        (place.deadline, place.admitted_at, place.joined_at),
        (Some(deadline), Some(at), Some(joined))
    );
}

/// A batch is served in order, each request answered as if it had come
/// alone: a buyer's second reserve in the same call finds the first hold,
/// the limit and the stock count what the batch took before, an
/// idempotency key made in one call answers the repeat in the next, and
/// confirms begun together each get their own hold's answer. Checked in
/// the replies and in Redis.
#[tokio::test]
async fn a_batch_answers_each_request_as_if_it_came_alone() {
    use flashdrop::{
        ids::{ReservationId, SaleId},
        store::scripts::{
            BeginBatchReply, BeginReply, ReserveBatchReply, ReserveItem, ReserveReply,
        },
    };
    use redis::AsyncCommands;
    use std::{collections::HashMap, time::Duration};

    let app = spawn_app().await;
    let sale = app
        .create_sale(json!({"total": 5, "per_user_limit": 2}))
        .await;
    let id = &SaleId::parse(&sale).unwrap();
    let redis = &app.state.store.redis;
    let item = |buyer: &str, quantity: i64, key: Option<&str>| ReserveItem {
        rid: ReservationId::new(id),
        buyer: buyer.to_owned(),
        quantity,
        idempotency_key: key.map(str::to_owned),
    };
    let day = Duration::from_secs(86_400);
    let reserve = |items: Vec<ReserveItem>| async move {
        let refs: Vec<&ReserveItem> = items.iter().collect();
        match redis.reserve(id, &refs, day).await.unwrap() {
            ReserveBatchReply::Done { holds } => (items.clone(), holds),
            ReserveBatchReply::Missing => panic!("the sale is in Redis"),
        }
    };

    let (first, replies) = reserve(vec![
        item("ann", 2, None),
        item("ann", 1, None),
        item("bob", 3, None),
        item("cat", 1, Some("k1")),
        item("dan", 2, None),
        item("eve", 1, None),
    ])
    .await;
    assert!(
        matches!(replies[0], ReserveReply::Created { .. }),
        "{replies:?}"
    );
    assert!(
        matches!(&replies[1], ReserveReply::Existing { rid, repeat_key: false } if *rid == first[0].rid.to_string()),
        "{replies:?}"
    );
    assert!(
        matches!(
            replies[2],
            ReserveReply::LimitExceeded {
                bought: 0,
                limit: 2
            }
        ),
        "{replies:?}"
    );
    assert!(
        matches!(replies[3], ReserveReply::Created { .. }),
        "{replies:?}"
    );
    assert!(
        matches!(replies[4], ReserveReply::Created { .. }),
        "{replies:?}"
    );
    // ann 2, cat 1 and dan 2 took all five.
    assert!(
        matches!(
            replies[5],
            ReserveReply::SoldOut {
                available: 0,
                waiting: 0
            }
        ),
        "{replies:?}"
    );
    assert_eq!(app.counts(&sale).await, (0, 5, 0));

    // The key made above answers its repeat, in a call of its own.
    let (_, again) = reserve(vec![item("cat", 1, Some("k1"))]).await;
    assert!(
        matches!(&again[0], ReserveReply::Existing { rid, repeat_key: true } if *rid == first[3].rid.to_string()),
        "{again:?}"
    );

    // Confirms begun together: ann's hold, ann's hold asked for by bob,
    // a hold Redis never had, dan's hold.
    let unknown = ReservationId::new(id);
    let holds = [
        (&first[0].rid, "ann"),
        (&first[0].rid, "bob"),
        (&unknown, "cat"),
        (&first[4].rid, "dan"),
    ];
    let begun = match redis
        .confirm_begin(id, &holds, Duration::from_secs(10))
        .await
        .unwrap()
    {
        BeginBatchReply::Done { holds } => holds,
        BeginBatchReply::Missing => panic!("the sale is in Redis"),
    };
    assert!(
        matches!(
            begun[..],
            [
                BeginReply::Confirming { qty: 2, .. },
                BeginReply::NotFound,
                BeginReply::Missing,
                BeginReply::Confirming { qty: 2, .. },
            ]
        ),
        "{begun:?}"
    );
    let states: HashMap<String, String> = app.redis().hgetall(keys(&sale).holds()).await.unwrap();
    let state = |rid: &ReservationId| -> String {
        let hold: serde_json::Value = serde_json::from_str(&states[&rid.to_string()]).unwrap();
        hold["state"].as_str().unwrap().to_owned()
    };
    assert_eq!(state(&first[0].rid), "confirming");
    assert_eq!(state(&first[3].rid), "held");
    assert_eq!(state(&first[4].rid), "confirming");
    assert_eq!(states.len(), 3, "one hold each for ann, cat and dan");
    assert_eq!(app.check_invariants(&sale).await, (0, 5, 0));
}

/// A call keeps its changes to the sale's fields (the counts, the seq,
/// the counters) in its copy of the sale and writes them once at its end:
/// after a batch the sale reads as if each request had written its own,
/// every change has its own seq, and a call that fails midway still
/// writes what it changed before, as its other writes stay.
#[tokio::test]
async fn a_call_writes_the_sales_fields_once_and_a_failing_call_keeps_its_changes() {
    use flashdrop::{
        ids::{ReservationId, SaleId},
        store::scripts::{FinishReply, ReserveBatchReply, ReserveItem},
    };
    use redis::AsyncCommands;
    use std::time::Duration;

    let app = spawn_app().await;
    let sale = app.create_sale(json!({"total": 10})).await;
    let id = &SaleId::parse(&sale).unwrap();
    let redis = &app.state.store.redis;
    let items: Vec<ReserveItem> = ["ann", "bob", "cat"]
        .iter()
        .map(|buyer| ReserveItem {
            rid: ReservationId::new(id),
            buyer: (*buyer).to_owned(),
            quantity: 1,
            idempotency_key: None,
        })
        .collect();
    let refs: Vec<&ReserveItem> = items.iter().collect();
    let day = Duration::from_secs(86_400);
    assert!(matches!(
        redis.reserve(id, &refs, day).await.unwrap(),
        ReserveBatchReply::Done { .. }
    ));
    let rids = [&items[0].rid, &items[1].rid];
    assert!(matches!(
        redis.confirm_finish(id, &rids).await.unwrap(),
        FinishReply::Done { .. }
    ));
    // The sale opened (seq 1), three holds (2 to 4), two confirmed (5, 6).
    let stored = app.redis_sale(&sale).await;
    let field = |name: &str| stored.get(name).cloned().unwrap_or_default();
    assert_eq!(
        [
            "seq",
            "available",
            "held",
            "sold",
            "holds_created",
            "holds_confirmed"
        ]
        .map(field),
        ["6", "7", "1", "2", "3", "2"].map(str::to_owned),
        "{stored:?}"
    );
    let seqs: Vec<i64> = app
        .stock_events(&sale)
        .await
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, (1..=6).collect::<Vec<_>>());

    // A call that changes the sale, announces it, then fails.
    let keys = keys(&sale);
    let failing = "return fd_with_sale(function(s, now)
        fd_update(s, {taken_n = s.taken_n + 5})
        fd_emit(s, 'checked', now)
        error('stopped on purpose')
      end)";
    let err = redis::Script::new(&assemble(failing, &[Role::Sale, Role::Events, Role::Wait]))
        .key(keys.sale())
        .key(keys.events())
        .key(keys.wait())
        .arg(format!("PUBLISH {}", keys.channel()))
        .invoke_async::<String>(&mut app.redis())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("stopped on purpose"), "{err}");
    let stored = app.redis_sale(&sale).await;
    assert_eq!(
        (stored["seq"].as_str(), stored["taken_n"].as_str()),
        ("7", "5"),
        "the failed call's changes were written: {stored:?}"
    );
    let last: Vec<(String, Vec<(String, String)>)> = app
        .redis()
        .xrevrange_count(keys.events(), "+", "-", 1)
        .await
        .unwrap();
    let change: serde_json::Value = serde_json::from_str(&last[0].1[0].1).unwrap();
    assert_eq!(
        (change["seq"].as_i64(), change["kind"].as_str()),
        (Some(7), Some("checked"))
    );
}

/// The line's length is counted once a call, and counted again after the
/// line changed: each change a call announces carries the length after
/// it (a cancel that promotes two buyers announces 2, 1 and 0).
#[tokio::test]
async fn the_lines_length_is_counted_again_after_the_line_changes() {
    let app = spawn_app().await;
    let sale = app.create_sale(json!({"total": 10})).await;
    let keys = keys(&sale);
    let body = "return fd_with_sale(function(s, now)
        local seen = {fd_waiting(s)}
        fd_line_add(7, 'ann')
        seen[#seen + 1] = fd_waiting(s)
        fd_line_add(8, 'bob')
        seen[#seen + 1] = fd_waiting(s)
        fd_line_remove('ann')
        seen[#seen + 1] = fd_waiting(s)
        seen[#seen + 1] = fd_waiting(s)
        return {r = 'seen', lengths = seen}
      end)";
    let reply: String = redis::Script::new(&assemble(body, &[Role::Sale, Role::Wait]))
        .key(keys.sale())
        .key(keys.wait())
        .invoke_async(&mut app.redis())
        .await
        .unwrap();
    let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(reply["lengths"], json!([0, 1, 2, 1, 1]), "{reply}");
    let line: Vec<String> = redis::AsyncCommands::zrange(&mut app.redis(), keys.wait(), 0, -1)
        .await
        .unwrap();
    assert_eq!(line, ["bob"]);
}
