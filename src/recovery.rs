//! Recovery: when Redis has lost a running sale (a restart, a flush), or
//! has come back older than MongoDB knows it to be, the sale's live state is
//! rebuilt from MongoDB. Units in orders stay sold, every other unit is
//! free, buyers' bought counts come back, and the waiting list is replayed
//! from the stock event log in its order; holds Redis lost are gone (their
//! units are free again). One caller rebuilds under a lock while the others
//! wait for it, and the rebuild's last step is fenced: it changes nothing
//! unless it still owns the lock and the sale is as it found it.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    time::Duration,
};

use crate::{
    config::Settings,
    error::ApiError,
    ids::SaleId,
    store::{
        Store, StoreError, keys,
        mongo::{DrawChunkDoc, DrawDoc, LobbyEntryDoc, LogTail, SaleDoc, StockEventDoc},
        redis::{LobbyAdmission, LobbyStage, Staging, Waiter},
        scripts::{
            LiveSettings, LobbyCounts, LobbyWaiter, Replaces, RestoreReply, Restored, SaleReply,
        },
    },
};

/// How far past the log's last seq a rebuilt copy of a sale starts. The
/// copy Redis lost may have changes in flight to MongoDB, read by a
/// persister before the loss and written after the rebuild read the log:
/// at most one batch (500 changes) per instance, all above the log's last
/// seq. They keep their seqs, below every change of the new copy, so the
/// log's seq order stays the order in which each copy made its changes.
pub const SEQ_GAP: i64 = 1_000_000;

#[derive(Clone)]
pub struct Recovery {
    store: Store,
    lock_ttl: Duration,
    /// Test fault point: wait between reading MongoDB and writing Redis.
    pause: Option<Duration>,
}

/// What a rebuild replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// Redis has no sale at all.
    Everything,
    /// Redis has the sale, older than MongoDB knows it: its seq is below
    /// this one, the last MongoDB has recorded.
    StaleBelow(i64),
    /// Redis has a copy of the sale that came back older than it was:
    /// this one (its epoch), replaced only while it is still in Redis.
    StaleCopy(String),
}

impl Recovery {
    pub fn new(store: Store, settings: &Settings) -> Self {
        Self {
            store,
            lock_ttl: settings.rebuild_lock_ttl,
            pause: settings.fault_rebuild_pause,
        }
    }

    /// The sale as an admin scheduled it; 404 when there is none.
    pub async fn sale_doc(&self, sale: &SaleId) -> Result<SaleDoc, ApiError> {
        self.store
            .mongo
            .find_sale(sale)
            .await?
            .ok_or_else(|| ApiError::not_found("sale"))
    }

    /// Runs a script of the sale; when its reply says Redis has lost the
    /// sale, rebuilds it from MongoDB and runs the script once more.
    pub async fn with_sale<T, F, Fut>(&self, sale: &SaleId, run: F) -> Result<T, ApiError>
    where
        T: SaleReply,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let reply = run().await?;
        if !reply.sale_missing() {
            return Ok(reply);
        }
        // Rare, so boxed: inline, a rebuild's state (about 4 KB) would be
        // part of every in-flight reserve, confirm and status read.
        Box::pin(async {
            let doc = self.sale_doc(sale).await?;
            self.restore(&doc).await.map_err(ApiError::from)
        })
        .await?;
        Ok(run().await?)
    }

    /// Brings Redis up to a sale document it missed a change of (an admin
    /// change MongoDB recorded whose Redis step failed).
    pub async fn reconcile(&self, doc: &SaleDoc) -> Result<(), StoreError> {
        let sale = SaleId::parse(&doc.id)
            .map_err(|_| anyhow::anyhow!("sale document with a malformed id {:?}", doc.id))?;
        let redis = &self.store.redis;
        let Some(version) = redis.sale_version(&sale).await? else {
            return Ok(()); // not in Redis: the next read rebuilds it
        };
        if version >= doc.version {
            return Ok(());
        }
        tracing::warn!(sale_id = %sale, redis = version, mongodb = doc.version, "Redis missed a change of the sale; applying it");
        redis
            .update_sale(&sale, &LiveSettings::from(doc), false, false)
            .await?;
        if doc.closed_at.is_some() {
            redis
                .close_sale(&sale, doc.ends_at.timestamp_millis(), doc.version)
                .await?;
        }
        Ok(())
    }

    /// Rebuilds a sale Redis does not have.
    pub async fn restore(&self, doc: &SaleDoc) -> Result<(), StoreError> {
        self.rebuild(doc, Lost::Everything).await
    }

    /// Rebuilds a sale from MongoDB, under the sale's lock. When another
    /// caller holds the lock, waits for the sale to appear instead.
    pub async fn rebuild(&self, doc: &SaleDoc, lost: Lost) -> Result<(), StoreError> {
        let sale = SaleId::parse(&doc.id)
            .map_err(|_| anyhow::anyhow!("sale document with a malformed id {:?}", doc.id))?;
        let redis = &self.store.redis;
        let token = SaleId::new().to_string();
        if !redis.lock_rebuild(&sale, &token, self.lock_ttl).await? {
            // Another request or instance is rebuilding; wait for it.
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if lost == Lost::Everything && redis.sale_exists(&sale).await? {
                    return Ok(());
                }
                if redis.lock_rebuild(&sale, &token, self.lock_ttl).await? {
                    return self.rebuild_locked(&sale, doc, lost, &token).await;
                }
            }
            return Err(StoreError::Unavailable(
                "sale state is being rebuilt; retry".into(),
            ));
        }
        self.rebuild_locked(&sale, doc, lost, &token).await
    }

    async fn rebuild_locked(
        &self,
        sale: &SaleId,
        doc: &SaleDoc,
        lost: Lost,
        token: &str,
    ) -> Result<(), StoreError> {
        let result = self.stage_and_swap(sale, doc, lost, token).await;
        // Released only while still ours: a lapsed lock is someone else's.
        let _ = self.store.redis.rebuild_lock(sale, token, None).await;
        result
    }

    async fn stage_and_swap(
        &self,
        sale: &SaleId,
        doc: &SaleDoc,
        lost: Lost,
        token: &str,
    ) -> Result<(), StoreError> {
        let (redis, mongo) = (&self.store.redis, &self.store.mongo);
        if lost == Lost::Everything && redis.sale_exists(sale).await? {
            return Ok(());
        }
        // Read MongoDB first; an order that lands after this is counted
        // when it lands (see apply_order). The line is what the log held
        // when its tail was read: a change whose copy lands later (in
        // flight when Redis was lost) does not count for it, in this
        // rebuild or any replay of the log (see replay_line), and this
        // copy's seqs start past any it could have.
        let tail = mongo.log_tail(sale, LogTail::default()).await?;
        let sold = mongo.sold_units(sale).await?;
        let events = mongo.waitlist_events(sale, tail.n).await?;
        let seq = tail.top + SEQ_GAP;
        let (lobby, lobby_counts) = match &doc.lobby {
            Some(_) => stage_lobby(
                mongo.draw(sale).await?.as_ref(),
                &mongo.all_lobby_entries(sale).await?,
                doc.starts_at.timestamp_millis(),
                redis.now_ms().await?,
            ),
            None => Default::default(),
        };
        if let Some(pause) = self.pause {
            tokio::time::sleep(pause).await;
        }
        let line = replay_line(&events);
        let next = sold.serials.last().copied().unwrap_or(0) + 1;
        let units_sold = sold.serials.len() as i64;
        // Units below `next` that no order holds are free again.
        let mut sold_iter = sold.serials.iter().copied().peekable();
        let free = (1..next).filter(move |serial| {
            if sold_iter.peek() == Some(serial) {
                sold_iter.next();
                false
            } else {
                true
            }
        });
        let staged = redis
            .stage_rebuild(
                sale,
                token,
                free,
                Staging {
                    bought: sold.bought,
                    returned: &sold.returned,
                    line: &line.waiters,
                    lobby: &lobby,
                },
                self.lock_ttl,
            )
            .await?;
        if !staged {
            return Err(StoreError::Unavailable(
                "the rebuild lost its lock; another caller rebuilds".into(),
            ));
        }
        let settings = LiveSettings::from(doc);
        let restored = Restored {
            settings: &settings,
            closed: doc.closed_at.is_some(),
            sold: units_sold,
            next,
            seq,
            log_n: tail.n,
            last_ticket: line.last_ticket,
            line_closed: line.closed || doc.closed_at.is_some(),
            lobby: lobby_counts,
        };
        let replaces = match &lost {
            Lost::Everything => Replaces::Absent,
            Lost::StaleBelow(seq) => Replaces::Below(*seq),
            Lost::StaleCopy(epoch) => Replaces::Copy(epoch),
        };
        match redis.restore_sale(sale, token, replaces, &restored).await? {
            RestoreReply::Restored => {
                tracing::warn!(sale_id = %sale, sold = units_sold, waiting = line.waiters.len(), ?lost, "sale state rebuilt from MongoDB");
                Ok(())
            }
            RestoreReply::Exists | RestoreReply::Changed => Ok(()),
            RestoreReply::Lost => Err(StoreError::Unavailable(
                "the rebuild lost its lock; another caller rebuilds".into(),
            )),
        }
    }
}

/// A lobby as MongoDB has it. Admissions come back as they were recorded
/// (a live unused one can still lapse and free its turn); everyone else
/// waits again where they stood: at their place in the stored draw, or
/// behind it by join time. Before the draw is stored, those who joined
/// before the start (on the Redis clock, `now_ms`) are early again and
/// the draw is made from them.
pub fn stage_lobby(
    draw: Option<&(DrawDoc, Vec<DrawChunkDoc>)>,
    entries: &[LobbyEntryDoc],
    starts_ms: i64,
    now_ms: i64,
) -> (LobbyStage, LobbyCounts) {
    let drawn: HashMap<&str, &str> = draw
        .map(|(_, chunks)| {
            chunks
                .iter()
                .flat_map(|c| c.buyers.iter().zip(&c.values))
                .map(|(b, v)| (b.as_str(), v.as_str()))
                .collect()
        })
        .unwrap_or_default();
    let mut stage = LobbyStage::default();
    let mut counts = LobbyCounts {
        joined: entries.len() as i64,
        drawn: draw.is_some(),
        draw_count: draw.map_or(0, |(head, _)| head.count),
        ..LobbyCounts::default()
    };
    for e in entries {
        let joined_ms = e.joined_at.timestamp_millis();
        if let (Some(at), Some(deadline)) = (e.admitted_at, e.admission_expires_at) {
            let state = match (e.lapsed, e.used) {
                (true, _) => 'l',
                (false, true) => 'u',
                (false, false) => 'd',
            };
            counts.admitted += 1;
            counts.used += i64::from(state == 'u');
            counts.lapsed += i64::from(state == 'l');
            let deadline = deadline.timestamp_millis();
            stage.admitted.push(LobbyAdmission {
                buyer: e.buyer.clone(),
                value: keys::admission_value(state, deadline, at.timestamp_millis(), joined_ms),
                due: (state == 'd').then_some(deadline),
            });
            continue;
        }
        let member = match (draw, drawn.get(e.buyer.as_str())) {
            (Some(_), Some(value)) => keys::drawn_member(value, &e.buyer),
            (None, _) if now_ms < starts_ms || joined_ms < starts_ms => {
                stage.early.push((e.buyer.clone(), joined_ms));
                continue;
            }
            _ => keys::late_member(joined_ms, &e.buyer),
        };
        stage.waiting.push(LobbyWaiter {
            buyer: e.buyer.clone(),
            member,
            joined_ms,
        });
    }
    (stage, counts)
}

/// A waiting list replayed from the stock event log.
#[derive(Debug, Default, PartialEq)]
pub struct Line {
    pub waiters: Vec<Waiter>,
    pub last_ticket: i64,
    pub closed: bool,
}

/// Replays joins, leaves and promotions in seq order. A buyer promoted to
/// a hold that was still live when Redis lost it goes back to their place.
///
/// A `restored` change starts the line over from what its rebuild read
/// (the batches up to its `log_n`): a change whose copy landed after that
/// read (in flight when Redis was lost) was not in the rebuilt line and
/// does not count. Changes a stale copy of the sale made (kept under fresh
/// seqs, `restamped_from`) do not count either: the rebuild replaced that
/// copy. Join tickets count all the same, so new ones come after them.
pub fn replay_line<'a>(events: impl IntoIterator<Item = &'a StockEventDoc>) -> Line {
    let events: Vec<&StockEventDoc> = events.into_iter().collect();
    let Replayed {
        line,
        promoted,
        closed,
    } = replay(&events, &mut HashMap::new());
    let last_ticket = events
        .iter()
        .filter(|e| e.kind == "waitlist_joined")
        .map(|e| e.ticket.unwrap_or(e.seq))
        .max()
        .unwrap_or(0);
    let waiters: BTreeMap<i64, Waiter> = line
        .into_values()
        .chain(promoted.into_values())
        .map(|w| (w.ticket, w))
        .collect();
    Line {
        waiters: waiters.into_values().collect(),
        last_ticket,
        closed,
    }
}

/// Whether the rebuild that made `restored` read `change` (a rebuild of a
/// version that did not say what it read, read everything before it).
pub fn read_by(restored: &StockEventDoc, change: &StockEventDoc) -> bool {
    change.seq < restored.seq && change.batch <= restored.log_n.unwrap_or(i64::MAX)
}

/// The line as replayed: waiters by buyer, live promotions by hold.
#[derive(Default, Clone)]
struct Replayed {
    line: HashMap<String, Waiter>,
    promoted: HashMap<String, Waiter>,
    closed: bool,
}

/// `rebuilt` keeps the line each `restored` change (by seq) started over
/// from: what its rebuild read is the same in every replay that reaches
/// it, so each is replayed once however many rebuilds follow.
fn replay(events: &[&StockEventDoc], rebuilt: &mut HashMap<i64, Replayed>) -> Replayed {
    let mut state = Replayed::default();
    for (i, e) in events.iter().enumerate() {
        if e.restamped_from.is_some() {
            continue;
        }
        let buyer = e.buyer.clone().unwrap_or_default();
        match e.kind.as_str() {
            "restored" if e.log_n.is_some() => {
                state = match rebuilt.get(&e.seq) {
                    Some(known) => known.clone(),
                    None => {
                        let read: Vec<&StockEventDoc> = events[..i]
                            .iter()
                            .copied()
                            .filter(|c| read_by(e, c))
                            .collect();
                        let mut read = replay(&read, rebuilt);
                        // The rebuild put buyers whose promotion was live
                        // back in line.
                        let promoted = std::mem::take(&mut read.promoted);
                        for w in promoted.into_values() {
                            read.line.insert(w.buyer.clone(), w);
                        }
                        rebuilt.insert(e.seq, read.clone());
                        read
                    }
                };
            }
            "waitlist_joined" => {
                state.line.insert(
                    buyer.clone(),
                    Waiter {
                        buyer,
                        ticket: e.ticket.unwrap_or(e.seq),
                        quantity: e.quantity.unwrap_or(1),
                    },
                );
            }
            "waitlist_left" => {
                state.line.remove(&buyer);
            }
            "promoted" => {
                if let (Some(waiter), Some(rid)) =
                    (state.line.remove(&buyer), e.reservation_id.clone())
                {
                    state.promoted.insert(rid, waiter);
                }
            }
            "confirmed" | "cancelled" | "expired" => {
                if let Some(rid) = &e.reservation_id {
                    state.promoted.remove(rid);
                }
            }
            "sale_closed" => state.closed = true,
            // A cancelled order gave units back to a sale still on.
            "line_reopened" => state.closed = false,
            _ => {}
        }
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: i64, kind: &str, buyer: &str, rid: Option<&str>) -> StockEventDoc {
        StockEventDoc {
            sale_id: "s".into(),
            seq,
            kind: kind.into(),
            quantity: Some(1),
            buyer: Some(buyer.into()),
            reservation_id: rid.map(str::to_owned),
            ticket: (kind == "waitlist_joined").then_some(seq * 10),
            restamped_from: None,
            log_n: None,
            batch: 0,
            epoch: None,
            available: 0,
            held: 0,
            sold: 0,
            at: bson::DateTime::from_millis(0),
            second: 0,
        }
    }

    #[test]
    fn the_line_comes_back_in_order_with_live_promotions_at_their_place() {
        let events = [
            event(1, "waitlist_joined", "a", None),
            event(2, "waitlist_joined", "b", None),
            event(3, "waitlist_joined", "c", None),
            event(4, "promoted", "a", Some("r-a")),
            event(5, "waitlist_left", "c", None),
            event(6, "waitlist_joined", "d", None),
            event(7, "promoted", "b", Some("r-b")),
            event(8, "confirmed", "b", Some("r-b")),
        ];
        let line = replay_line(&events);
        let order: Vec<&str> = line.waiters.iter().map(|w| w.buyer.as_str()).collect();
        // a's promotion was live when Redis was lost: back at the head.
        assert_eq!(order, ["a", "d"]);
        assert_eq!(line.last_ticket, 60);
        assert!(!line.closed);
    }

    #[test]
    fn a_rebuild_starts_the_line_over_from_what_it_read() {
        let in_batch = |batch: i64, mut e: StockEventDoc| {
            e.batch = batch;
            e
        };
        let mut restored = event(SEQ_GAP + 3, "restored", "", None);
        restored.log_n = Some(2);
        let mut stale = event(SEQ_GAP + 5, "waitlist_joined", "e", None);
        stale.restamped_from = Some(2);
        let events = [
            in_batch(1, event(1, "waitlist_joined", "a", None)),
            in_batch(2, event(2, "promoted", "a", Some("r-a"))),
            // Copied after the rebuild read batches 1 and 2.
            in_batch(3, event(3, "waitlist_joined", "c", None)),
            in_batch(4, restored),
            in_batch(4, event(SEQ_GAP + 4, "waitlist_joined", "d", None)),
            in_batch(4, stale),
        ];
        let line = replay_line(&events);
        let order: Vec<&str> = line.waiters.iter().map(|w| w.buyer.as_str()).collect();
        // a's promotion was live when Redis was lost: back in line; c's
        // join was not read; e's was made on a stale copy.
        assert_eq!(order, ["a", "d"]);
        assert_eq!(line.last_ticket, (SEQ_GAP + 5) * 10);
        // Without the rebuild's record of what it read, c counts.
        let mut unread = events.clone();
        unread[3].log_n = None;
        let order: Vec<String> = replay_line(&unread)
            .waiters
            .into_iter()
            .map(|w| w.buyer)
            .collect();
        assert_eq!(order, ["a", "c", "d"]);

        // A second rebuild read batches up to 4; f's join landed after it.
        let mut again = event(2 * SEQ_GAP, "restored", "", None);
        again.log_n = Some(4);
        let mut events = events.to_vec();
        events.extend([
            in_batch(5, event(SEQ_GAP + 6, "waitlist_joined", "f", None)),
            in_batch(6, again),
            in_batch(6, event(2 * SEQ_GAP + 1, "waitlist_joined", "g", None)),
        ]);
        let order: Vec<String> = replay_line(&events)
            .waiters
            .into_iter()
            .map(|w| w.buyer)
            .collect();
        assert_eq!(order, ["a", "d", "g"]);
    }
}
