//! The layering of `src/`, checked: no module imports one above it, so
//! no import circle can form; the script layer is a leaf of the store.

use std::{collections::BTreeSet, path::Path};

/// Each top-level module's layer, lowest first. A module may use its own
/// layer and the ones below it, never one above.
const LAYERS: &[&[&str]] = &[
    &["ids", "config", "clock", "stopping", "text"],
    &["store"],
    &["error"],
    &[
        "sales", "holds", "waitlist", "lobby", "recovery", "reports", "audit", "limits",
        "payments", "webhooks",
    ],
    &["reaper", "persister", "keeper", "recorder", "live"],
    &["state", "auth", "telemetry", "api"],
    &["front_door"],
    &["startup", "main", "lib"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The `src/` files, as (top-level module, path inside `src/`, code before
/// its tests).
fn sources() -> Vec<(String, String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let inside = path
                    .strip_prefix(&src)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                let top = inside
                    .split('/')
                    .next()
                    .unwrap()
                    .trim_end_matches(".rs")
                    .to_owned();
                let text = std::fs::read_to_string(&path).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap().to_owned();
                out.push((top, inside, code));
            }
        }
    }
    out
}

/// The top-level modules a file names through `crate::` (paths and
/// `use crate::{...}` groups alike).
fn crate_uses(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The first name of each entry at the group's first level.
            let (mut depth, mut entry_start, mut word) = (0, true, String::new());
            for c in group.chars() {
                if depth == 0 && entry_start && (c.is_ascii_alphanumeric() || c == '_') {
                    word.push(c);
                    continue;
                }
                if !word.is_empty() {
                    found.insert(std::mem::take(&mut word));
                    entry_start = false;
                }
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => entry_start = true,
                    _ => {}
                }
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found
}

#[test]
fn no_module_imports_one_above_its_layer() {
    let mut upward = Vec::new();
    let mut unplaced = BTreeSet::new();
    for (top, file, code) in sources() {
        let Some(mine) = layer_of(&top) else {
            unplaced.insert(top);
            continue;
        };
        for used in crate_uses(&code) {
            match layer_of(&used) {
                Some(theirs) if theirs > mine => upward.push(format!("{file} uses crate::{used}")),
                Some(_) => {}
                // Items re-exported at the crate root, or a new module.
                None if used.chars().next().is_some_and(char::is_uppercase) => {}
                None => {
                    unplaced.insert(used);
                }
            }
        }
    }
    assert!(
        unplaced.is_empty(),
        "modules with no layer in LAYERS: {unplaced:?}"
    );
    assert!(upward.is_empty(), "imports up the layers: {upward:#?}");
}

/// `store/scripts` declares the scripts and their replies; `store/redis`
/// holds it and runs them. The scripts never reach back for the handle.
#[test]
fn the_script_layer_is_a_leaf_of_the_store() {
    for (_, file, code) in sources() {
        if !file.starts_with("store/scripts/") {
            continue;
        }
        for bad in [
            "redis::Redis",
            "super::redis",
            "store::redis",
            "store::mongo",
            "crate::lobby",
            "crate::holds",
        ] {
            assert!(!code.contains(bad), "{file} names {bad}");
        }
    }
}
