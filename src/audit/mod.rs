//! An audit of one sale across both stores, for operators and for
//! `scripts/chaos`: one line per invariant of the design, each checked
//! against what Redis and MongoDB hold right now (`flashdrop audit`).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use serde::Deserialize;

mod lobby;

use self::lobby::{lobby_checks, unsealed_draw};
use crate::{
    ids::SaleId,
    recovery::{read_by, replay_line},
    store::{Store, StoreError, keys::HoldState, mongo::StockEventDoc, redis::SaleDump},
};

/// One invariant and whether it holds.
#[derive(Debug)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let word = if self.ok { "ok  " } else { "FAIL" };
        write!(f, "{word} {:<28} {}", self.name, self.detail)
    }
}

fn check(name: &'static str, problems: Vec<String>, fine: String) -> Check {
    Check {
        name,
        ok: problems.is_empty(),
        detail: if problems.is_empty() {
            fine
        } else {
            let more = problems.len().saturating_sub(3);
            let mut shown = problems.into_iter().take(3).collect::<Vec<_>>().join("; ");
            if more > 0 {
                shown.push_str(&format!("; and {more} more"));
            }
            shown
        },
    }
}

#[derive(Deserialize)]
struct Hold {
    user: String,
    qty: i64,
    units: String,
    state: HoldState,
    expires: i64,
    #[serde(default)]
    lease: Option<i64>,
}

/// Audits a sale. `confirmed` lists reservations some buyer heard 201 for:
/// each must be an order. `now_ms` is the Redis clock's idea of now.
pub async fn audit(
    store: &Store,
    sale: &SaleId,
    confirmed: &[String],
    now_ms: i64,
) -> Result<Vec<Check>, StoreError> {
    let redis = store.redis.dump_sale(sale).await?;
    audit_dump(store, sale, redis, confirmed, now_ms).await
}

/// Audits a sale from `redis`, a dump of its Redis state read first; what
/// MongoDB holds is read after it. The sale may change in between (a hold
/// lapses and the next buyer in line is promoted): what MongoDB records of
/// such a change is not a fault.
pub async fn audit_dump(
    store: &Store,
    sale: &SaleId,
    redis: SaleDump,
    confirmed: &[String],
    now_ms: i64,
) -> Result<Vec<Check>, StoreError> {
    let orders = store.mongo.orders_of_sale(sale).await?;
    let log = store.mongo.event_log(sale).await?;
    let seq_after = store.redis.sale_seq(sale).await?;
    let doc = store.mongo.find_sale(sale).await?;
    let n = |k: &str| redis.number(k);
    let (total, limit) = (
        doc.as_ref().map_or(n("total"), |d| d.total),
        doc.as_ref().map_or(n("limit"), |d| d.per_user_limit),
    );
    let holds: Vec<(String, Hold)> = redis
        .holds
        .iter()
        .filter_map(|(rid, raw)| Some((rid.clone(), serde_json::from_str(raw).ok()?)))
        .collect();
    let live: Vec<&(String, Hold)> = holds.iter().filter(|(_, h)| h.state.is_live()).collect();
    // Cancelled orders are out of `orders` (in `cancelled_orders`).
    let sold: i64 = orders.iter().map(|o| o.quantity).sum();
    let held: i64 = live.iter().map(|(_, h)| h.qty).sum();
    let mut checks = Vec::new();

    // 1. Never oversell.
    let mut problems = Vec::new();
    if sold > total {
        problems.push(format!("MongoDB sold {sold} of {total}"));
    }
    if n("sold") + n("held") > total {
        problems.push(format!(
            "Redis sold {} + held {} > {total}",
            n("sold"),
            n("held")
        ));
    }
    checks.push(check(
        "not oversold",
        problems,
        format!("{sold} sold, {held} held of {total}"),
    ));

    // 2. Every unit is exactly one of free, held by one hold, sold.
    let mut owner: BTreeMap<i64, String> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut claim = |unit: i64, who: String, problems: &mut Vec<String>| {
        if !(1..=total).contains(&unit) {
            problems.push(format!("unit {unit} out of range ({who})"));
        } else if let Some(before) = owner.insert(unit, who.clone()) {
            problems.push(format!("unit {unit} is both {before} and {who}"));
        }
    };
    let taken: HashSet<i64> = redis.taken.iter().copied().collect();
    if !redis.sale.is_empty() {
        for u in &redis.free {
            claim(*u, "free".into(), &mut problems);
        }
        // Never issued, but those an order took anyway (claimed below).
        for u in (n("next")..=total).filter(|u| !taken.contains(u)) {
            claim(u, "free".into(), &mut problems);
        }
        for (rid, h) in &live {
            for u in h.units.split(',').filter_map(|u| u.parse().ok()) {
                claim(u, format!("held by {rid}"), &mut problems);
            }
        }
    }
    for o in &orders {
        for u in &o.units {
            claim(*u, format!("sold in {}", o.id), &mut problems);
        }
    }
    if !redis.sale.is_empty() && owner.len() as i64 != total {
        problems.push(format!("{} units are nowhere", total - owner.len() as i64));
    }
    checks.push(check(
        "every unit accounted for",
        problems,
        format!("{} units: free, held once or sold once", owner.len()),
    ));

    // Counters agree with what they count.
    let mut problems = Vec::new();
    if !redis.sale.is_empty() {
        if n("held") != held {
            problems.push(format!("held counter {} vs holds {held}", n("held")));
        }
        if n("sold") != sold {
            problems.push(format!("sold counter {} vs orders {sold}", n("sold")));
        }
        let ahead = taken.iter().filter(|u| **u >= n("next")).count() as i64;
        let free = redis.free.len() as i64 + (total - n("next") + 1) - ahead;
        if n("available") != free {
            problems.push(format!(
                "available counter {} vs free {free}",
                n("available")
            ));
        }
    }
    checks.push(check(
        "counters agree",
        problems,
        "available, held, sold".into(),
    ));

    // 2. Never exceed the per-buyer limit.
    let mut bought: HashMap<&str, i64> = HashMap::new();
    for o in &orders {
        *bought.entry(o.user_id.as_str()).or_default() += o.quantity;
    }
    let mut problems: Vec<String> = bought
        .iter()
        .filter(|(_, n)| **n > limit)
        .map(|(b, n)| format!("{b} bought {n} > {limit}"))
        .collect();
    if !redis.sale.is_empty() {
        for (buyer, n) in &bought {
            if redis.bought.get(*buyer).copied().unwrap_or(0) != *n {
                problems.push(format!(
                    "{buyer}: Redis says bought {:?}, MongoDB {n}",
                    redis.bought.get(*buyer)
                ));
            }
        }
    }
    checks.push(check(
        "no buyer over the limit",
        problems,
        format!("{} buyers, at most {limit} each", bought.len()),
    ));

    // One live hold per buyer and sale.
    let mut live_per_buyer: HashMap<&str, usize> = HashMap::new();
    for (_, h) in &live {
        *live_per_buyer.entry(h.user.as_str()).or_default() += 1;
    }
    let problems: Vec<String> = live_per_buyer
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(b, n)| format!("{b} has {n} live holds"))
        .collect();
    checks.push(check(
        "one live hold per buyer",
        problems,
        format!("{} buyers holding", live_per_buyer.len()),
    ));

    // 3. Every 201 is a durable order.
    // (An order cancelled since is still an order, in `cancelled_orders`.)
    let cancelled = store.mongo.cancelled_ids(sale).await?;
    let ordered: HashSet<&str> = orders.iter().map(|o| o.id.as_str()).collect();
    let problems: Vec<String> = confirmed
        .iter()
        .filter(|rid| !ordered.contains(rid.as_str()) && !cancelled.contains(rid.as_str()))
        .map(|rid| format!("{rid} was confirmed but has no order"))
        .collect();
    checks.push(check(
        "no confirmed order lost",
        problems,
        format!("{} confirmations, all in MongoDB", confirmed.len()),
    ));

    // Money is an order or a refund due, never both.
    let refunds = store.mongo.refunds(Some(sale), 10_000_000).await?;
    let mut problems: Vec<String> = refunds
        .iter()
        .filter(|r| ordered.contains(r.reservation_id.as_str()))
        .map(|r| format!("{} is both an order and a refund due", r.payment_id))
        .collect();
    let paid = doc.as_ref().is_some_and(|d| d.payment_seconds.is_some());
    problems.extend(
        orders
            .iter()
            .filter(|o| paid && o.payment_id.is_none())
            .map(|o| format!("order {} of a paid sale has no payment", o.id)),
    );
    checks.push(check(
        "money: order or refund",
        problems,
        format!("{} refunds due, none with an order", refunds.len()),
    ));

    // A cancelled order is out of the sale and its units are back.
    let mut problems: Vec<String> = orders
        .iter()
        .filter(|o| cancelled.contains(&o.id))
        .map(|o| format!("{} is cancelled but still in the sale", o.id))
        .collect();
    let pending = store
        .mongo
        .cancelled_page(sale, 10_000_000, None)
        .await?
        .into_iter()
        .filter(|o| o.cancelled.as_ref().is_some_and(|c| !c.returned));
    problems.extend(pending.map(|o| format!("{}: units not back yet", o.id)));
    checks.push(check(
        "cancelled orders returned",
        problems,
        format!("{} cancelled, units back", cancelled.len()),
    ));

    // 4. Nothing stranded.
    checks.push(stranded(&redis, &live, now_ms, limit, &bought));

    // Every change recorded once.
    let mut problems = Vec::new();
    let seqs: HashSet<i64> = log.iter().map(|e| e.seq).collect();
    if seqs.len() != log.len() {
        problems.push(format!("{} changes share seqs", log.len() - seqs.len()));
    }
    // The last seq a copy in Redis handed out: a change kept under a fresh
    // seq may have one above it.
    let last = log
        .iter()
        .filter(|e| e.restamped_from.is_none())
        .map(|e| e.seq)
        .max()
        .unwrap_or(0);
    if !redis.sale.is_empty() && redis.unpersisted == 0 {
        // The log was read after the dump: it has at least what Redis had
        // then, and at most what Redis has made since.
        let (then, now) = (n("seq"), seq_after.unwrap_or(n("seq")));
        let off = if last < then {
            Some(then)
        } else if last > now {
            Some(now)
        } else {
            None
        };
        if let Some(seq) = off {
            problems.push(format!("Redis is at seq {seq}, the log at {last}"));
        }
    }
    checks.push(check(
        "every change recorded",
        problems,
        format!("{} changes, last seq {last}", log.len()),
    ));

    // 6. The line is first come, first served.
    checks.push(line_order(&log));

    if let Some(doc) = doc.as_ref().filter(|d| d.lobby.is_some()) {
        let entries = store.mongo.all_lobby_entries(sale).await?;
        let draw = match store.mongo.draw(sale).await? {
            Some(draw) => Some(draw),
            None => unsealed_draw(doc, &entries),
        };
        checks.extend(lobby_checks(&redis, &entries, draw.as_ref(), &orders));
    }
    Ok(checks)
}

/// No hold outlives its deadline, no confirm its lease, and no free unit
/// waits behind a head of the line that could take it.
fn stranded(
    redis: &SaleDump,
    live: &[&(String, Hold)],
    now_ms: i64,
    limit: i64,
    bought: &HashMap<&str, i64>,
) -> Check {
    const GRACE_MS: i64 = 3_000;
    let mut problems = Vec::new();
    for (rid, h) in live {
        let due = match h.state {
            HoldState::Confirming => h.lease.unwrap_or(h.expires),
            _ => h.expires,
        };
        if due + GRACE_MS < now_ms {
            problems.push(format!("{rid} ({}) {} ms past due", h.user, now_ms - due));
        }
    }
    let n = |k: &str| redis.number(k);
    if let Some((head, _)) = redis.wait.first()
        && n("wl_closed") != 1
    {
        let want = redis.waitq.get(head).copied().unwrap_or(1);
        let room = limit - bought.get(head.as_str()).copied().unwrap_or(0);
        let (available, held) = (n("available"), n("held"));
        if available >= want.min(room) && available > 0 {
            problems.push(format!("{available} free while {head} waits for {want}"));
        }
        if held == 0 && available > 0 {
            problems.push(format!("{available} free units stranded behind the line"));
        }
    }
    check(
        "nothing stranded",
        problems,
        format!("{} live holds, {} waiting", live.len(), redis.wait.len()),
    )
}

/// Replays the log: each promotion goes to the head of the line as the
/// log has it; a rebuild starts over from the line the log gives.
fn line_order(log: &[StockEventDoc]) -> Check {
    let mut line: VecDeque<String> = VecDeque::new();
    let mut problems = Vec::new();
    let mut promotions = 0;
    for (i, e) in log.iter().enumerate() {
        if e.restamped_from.is_some() {
            continue; // made on a stale Redis, replaced by the rebuild
        }
        let buyer = e.buyer.clone().unwrap_or_default();
        match e.kind.as_str() {
            "restored" => {
                line = replay_line(log[..i].iter().filter(|c| read_by(e, c)))
                    .waiters
                    .into_iter()
                    .map(|w| w.buyer)
                    .collect();
            }
            "waitlist_joined" => line.push_back(buyer),
            "waitlist_left" => line.retain(|b| *b != buyer),
            "promoted" => {
                promotions += 1;
                match line.front() {
                    Some(head) if *head == buyer => {
                        line.pop_front();
                    }
                    head => {
                        problems.push(format!(
                            "seq {}: {buyer} promoted while {head:?} was first",
                            e.seq
                        ));
                        line.retain(|b| *b != buyer);
                    }
                }
            }
            _ => {}
        }
    }
    check(
        "line in order",
        problems,
        format!("{promotions} promotions, each to the head"),
    )
}
