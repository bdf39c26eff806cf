//! The audit's lobby checks: the draw stored once and as the seed says,
//! admissions in draw order, and MongoDB's record of them.

use std::collections::{HashMap, HashSet};

use super::{Check, check};
use crate::store::{
    mongo::{DrawChunkDoc, DrawDoc, LobbyEntryDoc, OrderDoc},
    redis::SaleDump,
};

/// The draw of a sale made before draws were stored (its seed in the
/// clear in the sale's document): those who joined before the start,
/// ordered by their values.
pub(super) fn unsealed_draw(
    doc: &crate::store::mongo::SaleDoc,
    entries: &[LobbyEntryDoc],
) -> Option<(DrawDoc, Vec<DrawChunkDoc>)> {
    let lobby = doc.lobby.as_ref()?;
    let seed = crate::lobby::draw::Seed::from_text(lobby.seed.clone()?);
    let early: Vec<&str> = entries
        .iter()
        .filter(|e| e.joined_at < doc.starts_at)
        .map(|e| e.buyer.as_str())
        .collect();
    let order = seed.order(early);
    let head = DrawDoc {
        sale_id: doc.id.clone(),
        seed: seed.text().to_owned(),
        seed_sha256: lobby.seed_sha256.clone(),
        count: order.len() as i64,
        freeze: "unsealed".into(),
        chunks: 1,
        made_at: doc.starts_at,
    };
    let chunk = DrawChunkDoc {
        id: String::new(),
        sale_id: doc.id.clone(),
        freeze: "unsealed".into(),
        index: 0,
        values: order.iter().map(|(v, _)| v.clone()).collect(),
        buyers: order.iter().map(|(_, b)| (*b).to_owned()).collect(),
        joined: Vec::new(),
    };
    Some((head, vec![chunk]))
}

/// A lobby's invariants, in MongoDB's record: buyers were let in strictly
/// in draw order (then latecomers in arrival order), the record agrees
/// with Redis once the log is copied, and every order is an admitted
/// buyer's.
pub(super) fn lobby_checks(
    redis: &SaleDump,
    entries: &[LobbyEntryDoc],
    draw: Option<&(DrawDoc, Vec<DrawChunkDoc>)>,
    orders: &[OrderDoc],
) -> Vec<Check> {
    let mut checks = Vec::new();
    let drawn: Vec<&str> = draw
        .map(|(_, chunks)| {
            chunks
                .iter()
                .flat_map(|c| c.buyers.iter().map(String::as_str))
                .collect()
        })
        .unwrap_or_default();
    let in_draw: HashSet<&str> = drawn.iter().copied().collect();
    let admitted: HashSet<&str> = entries
        .iter()
        .filter(|e| e.admitted_at.is_some())
        .map(|e| e.buyer.as_str())
        .collect();
    let mut late: Vec<&LobbyEntryDoc> = entries
        .iter()
        .filter(|e| !in_draw.contains(e.buyer.as_str()))
        .collect();
    late.sort_by_key(|e| (e.joined_at.timestamp_millis(), e.buyer.as_str()));
    let order: Vec<&str> = drawn
        .iter()
        .copied()
        .chain(late.iter().map(|e| e.buyer.as_str()))
        .collect();
    let mut problems = Vec::new();
    let head = order.iter().take_while(|b| admitted.contains(*b)).count();
    if let Some(skipped) = order[head..].iter().find(|b| admitted.contains(*b)) {
        problems.push(format!(
            "{skipped} was let in while {} (place {}) was not",
            order[head],
            head + 1
        ));
    }
    if draw.is_none() && !admitted.is_empty() {
        problems.push(format!("{} let in with no draw stored", admitted.len()));
    }
    checks.push(check(
        "lobby let in in draw order",
        problems,
        format!(
            "{} let in: the head of {} drawn and {} latecomers",
            admitted.len(),
            drawn.len(),
            late.len()
        ),
    ));

    let mut problems = Vec::new();
    if !redis.sale.is_empty() {
        if redis.unrecorded > 0 {
            problems.push(format!(
                "{} admissions, lapses or uses not yet recorded",
                redis.unrecorded
            ));
        }
        let by_buyer: HashMap<&str, &LobbyEntryDoc> =
            entries.iter().map(|e| (e.buyer.as_str(), e)).collect();
        for (buyer, value) in &redis.admitted {
            let state = value.chars().next().unwrap_or('?');
            match by_buyer.get(buyer.as_str()) {
                Some(e) if e.admitted_at.is_none() => {
                    problems.push(format!("{buyer} let in, not recorded"))
                }
                Some(e) if (state == 'u') != e.used || (state == 'l') != e.lapsed => {
                    problems.push(format!(
                        "{buyer} is {state} in Redis, used {} lapsed {} in MongoDB",
                        e.used, e.lapsed
                    ))
                }
                Some(_) => {}
                None => problems.push(format!("{buyer} let in with no entry")),
            }
        }
    }
    checks.push(check(
        "lobby recorded",
        problems,
        format!("{} admissions in MongoDB as in Redis", admitted.len()),
    ));

    let used: HashSet<&str> = entries
        .iter()
        .filter(|e| e.admitted_at.is_some() && e.used)
        .map(|e| e.buyer.as_str())
        .collect();
    let problems: Vec<String> = orders
        .iter()
        .filter(|o| !used.contains(o.user_id.as_str()))
        .map(|o| format!("order {} of {} has no used admission", o.id, o.user_id))
        .collect();
    checks.push(check(
        "every order admitted",
        problems,
        format!("{} orders, each an admitted buyer's", orders.len()),
    ));
    checks
}
