//! Checks the script table against the Lua: every script declares exactly
//! the key roles it touches, itself or through the prelude helpers it calls,
//! and no script builds a key name or reaches KEYS by position.
use std::collections::{BTreeMap, BTreeSet};

use super::{DECLARED, PRELUDE, replies::*, split_helpers, words};

/// Roles (`K.<role>`) and prelude helpers (`fd_<name>(`) named in Lua
/// source, comments stripped.
fn names(source: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let code = code_of(source);
    let roles = words(&code, "K.")
        .map(|(_, role)| role["K.".len()..].to_owned())
        .collect();
    let helpers = words(&code, "fd_")
        .filter(|(end, _)| code[*end..].starts_with('('))
        .map(|(_, name)| name.to_owned())
        .collect();
    (roles, helpers)
}

/// Each prelude helper with the roles it touches, itself or through the
/// helpers it calls.
fn prelude_roles() -> BTreeMap<String, BTreeSet<String>> {
    let mut direct: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    for (name, chunk) in split_helpers(PRELUDE).1 {
        direct.insert(name.to_owned(), names(&chunk[name.len()..]));
    }
    let mut closed = BTreeMap::new();
    for name in direct.keys() {
        let mut roles = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut todo = vec![name.clone()];
        while let Some(f) = todo.pop() {
            if !seen.insert(f.clone()) {
                continue;
            }
            let (r, calls) = &direct[&f];
            roles.extend(r.iter().cloned());
            todo.extend(calls.iter().filter(|c| direct.contains_key(*c)).cloned());
        }
        closed.insert(name.clone(), roles);
    }
    closed
}

#[test]
fn every_script_declares_exactly_the_keys_it_touches() {
    let helpers = prelude_roles();
    assert!(helpers.contains_key("fd_promote"), "{:?}", helpers.keys());
    for (file, source, declared) in DECLARED {
        let (mut used, calls) = names(source);
        for call in calls {
            let roles = helpers
                .get(&call)
                .unwrap_or_else(|| panic!("{file} calls unknown helper {call}"));
            used.extend(roles.iter().cloned());
        }
        let declared: BTreeSet<String> = declared.iter().map(|r| r.name().to_owned()).collect();
        assert_eq!(used, declared, "{file}: touched vs declared key roles");
    }
}

#[test]
fn no_script_builds_a_key_name() {
    for (file, source, _) in DECLARED
        .iter()
        .copied()
        .chain([("prelude.lua", PRELUDE, &[][..])])
    {
        for (n, line) in source.lines().enumerate() {
            let code = line.split("--").next().unwrap_or("");
            assert!(
                !code.contains("'fd:") && !code.contains("\"fd:"),
                "{file}:{}: builds a key name: {line}",
                n + 1
            );
            assert!(
                !code.contains("KEYS["),
                "{file}:{}: reaches KEYS by position: {line}",
                n + 1
            );
        }
    }
}

#[test]
fn replies_decode_into_their_enums() {
    let r: ReserveReply =
        serde_json::from_str(r#"{"r":"sold_out","available":1,"waiting":3}"#).unwrap();
    assert!(matches!(r, ReserveReply::SoldOut { waiting: 3, .. }));
    let b: BeginReply = serde_json::from_str(
        r#"{"r":"confirming","qty":2,"units":"4,9","slots":"1,2","price":"100000000000000","currency":"EUR","expires":1,"lease":2}"#,
    )
    .unwrap();
    assert!(
        matches!(b, BeginReply::Confirming { ref units, price: 100_000_000_000_000, .. } if units == &[4, 9])
    );
    let reap: ReapReply =
        serde_json::from_str(r#"{"r":"ok","expired":0,"next":-1,"now":5,"more":false}"#).unwrap();
    assert!(matches!(reap, ReapReply::Ok { ref claimed, .. } if claimed.is_empty()));
    assert!(serde_json::from_str::<CancelReply>(r#"{"r":"surprise"}"#).is_err());
}

/// Lua source without its comments.
fn code_of(source: &str) -> String {
    source
        .lines()
        .map(|l| l.split("--").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The argument text of every call of `callee` in `code`, split at its
/// top-level commas.
fn call_args(code: &str, callee: &str) -> Vec<Vec<String>> {
    let opener = format!("{callee}(");
    let mut found = Vec::new();
    for (at, _) in code.match_indices(&opener) {
        let (mut depth, mut args, mut arg) = (1, Vec::new(), String::new());
        for c in code[at + opener.len()..].chars() {
            match c {
                '(' | '{' | '[' => depth += 1,
                ')' | '}' | ']' => depth -= 1,
                ',' if depth == 1 => {
                    args.push(arg.trim().to_owned());
                    arg.clear();
                    continue;
                }
                _ => {}
            }
            if depth == 0 {
                break;
            }
            arg.push(c);
        }
        args.push(arg.trim().to_owned());
        found.push(args);
    }
    found
}

/// A call keeps its changes to the sale's fields in `s` and writes them
/// once at its end (`fd_update`, `fd_flush` in the prelude), so a field
/// that passes through `fd_update` anywhere must not be written to the
/// sale's hash any other way: the end of the call would write it back
/// over. The two scripts that write a whole sale anew do so before they
/// read it.
#[test]
fn the_sales_kept_fields_are_written_only_through_fd_update() {
    let sources: Vec<(&str, String)> = DECLARED
        .iter()
        .map(|(file, source, _)| (*file, code_of(source)))
        .chain([("prelude.lua", code_of(PRELUDE))])
        .collect();
    let mut kept = BTreeSet::new();
    for (_, code) in &sources {
        for args in call_args(code, "fd_update") {
            let Some(table) = args.get(1).and_then(|t| t.strip_prefix('{')) else {
                continue; // the helper's own definition
            };
            for entry in call_args(&format!("table({table})"), "table").concat() {
                if let Some((field, _)) = entry.split_once('=') {
                    kept.insert(field.trim().to_owned());
                }
            }
        }
    }
    for field in [
        "seq",
        "available",
        "held",
        "sold",
        "holds_created",
        "holds_confirmed",
    ] {
        assert!(kept.contains(field), "{field} is kept: {kept:?}");
    }
    // Written whole before it is read; a counter of ended holds by state
    // (cancelled, expired: fd_release's callers), never a kept one.
    let anew = ["open_sale.lua", "restore_sale.lua"];
    let allowed = ["unpack(args)", "'holds_' .. state"];
    for (file, code) in &sources {
        for args in call_args(code, "redis.call") {
            let [command, key, rest @ ..] = &args[..] else {
                continue;
            };
            if key != "K.sale" || anew.contains(file) {
                continue;
            }
            let fields: Vec<&String> = match command.trim_matches('\'') {
                "HSET" | "HSETNX" => rest.iter().step_by(2).collect(),
                "HINCRBY" | "HINCRBYFLOAT" => rest.iter().take(1).collect(),
                "HDEL" => rest.iter().collect(),
                _ => continue,
            };
            for field in fields {
                if allowed.contains(&field.as_str()) {
                    continue;
                }
                let name = field.trim_matches('\'');
                assert!(
                    name.len() + 2 == field.len(),
                    "{file}: {command} of the sale's field {field}, not a literal: say why it is never a kept field"
                );
                assert!(
                    !kept.contains(name),
                    "{file}: {command} writes the kept field {name}; change it through fd_update"
                );
            }
        }
    }
}

/// The line's length is counted once a call and forgotten by the two
/// helpers that change the line: a script that changed it any other way
/// would announce a stale length. Only `restore_sale` writes the line
/// otherwise, putting it back whole before it reads it.
#[test]
fn the_line_changes_only_through_its_two_helpers() {
    const WRITES: [&str; 12] = [
        "ZADD",
        "ZREM",
        "ZINCRBY",
        "ZPOPMIN",
        "ZPOPMAX",
        "ZREMRANGEBYRANK",
        "ZREMRANGEBYSCORE",
        "ZREMRANGEBYLEX",
        "DEL",
        "UNLINK",
        "RENAME",
        "ZUNIONSTORE",
    ];
    let line_writes = |code: &str| {
        call_args(code, "redis.call")
            .into_iter()
            .filter(|args| {
                args.first()
                    .is_some_and(|c| WRITES.contains(&c.trim_matches('\'')))
                    && args[1..].iter().any(|a| a == "K.wait")
            })
            .count()
    };
    for (file, source, _) in DECLARED {
        if *file != "restore_sale.lua" {
            assert_eq!(line_writes(&code_of(source)), 0, "{file} writes the line");
        }
    }
    for (name, chunk) in split_helpers(PRELUDE).1 {
        let expected = usize::from(matches!(name, "fd_line_add" | "fd_line_remove"));
        assert_eq!(line_writes(&code_of(chunk)), expected, "{name}");
    }
}
