//! Group commit for orders: concurrent confirms share one unordered
//! `insert_many` (majority + journal), so MongoDB pays its per-write cost,
//! above all the journal wait, once per batch instead of once per order.
//! A batch leaves as soon as the previous one is done, with whatever
//! queued while it was out (up to `MAX_BATCH`): no timer delays a quiet
//! system, and under load batches grow by themselves. One batch at a time
//! makes them large: at 200 buyers a batch carries dozens of orders, where
//! four at a time carried about eight, and every batch costs MongoDB a
//! journal write and Redis a call per sale. Each order
//! still gets its own outcome, and the Redis side of a batch is one script
//! call per sale, all sent together.

use std::{collections::HashMap, sync::Arc, time::Instant};

use futures_util::future::join_all;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::{
    config::Settings,
    ids::{ReservationId, SaleId},
    recovery::Recovery,
    store::{
        Store, StoreError,
        mongo::{Message, MessageType, OrderDoc, OrderWrite},
        scripts::{FinishReply, HoldFinish},
    },
};

/// Most orders in one `insert_many`.
const MAX_BATCH: usize = 512;
/// Most holds one `confirm_finish` call marks: a call stays short (see
/// its bound); a larger batch of one sale takes several calls.
pub const FINISH_CHUNK: usize = 25;
/// Batches written at once.
const WRITE_SLOTS: usize = 1;

/// What a batch did with one order.
#[derive(Debug)]
pub enum Committed {
    /// Durable in MongoDB; how marking its hold confirmed in Redis went.
    Inserted(Finished),
    /// A unique index refused it.
    Refused,
    /// It certainly was not written.
    NotSent(StoreError),
    /// It may or may not land.
    Unknown(StoreError),
}

/// Redis' side of a durable order.
#[derive(Debug)]
pub enum Finished {
    /// The hold was confirmed (now or before).
    Confirmed,
    /// Redis no longer held the hold live; the order was counted anyway.
    Applied,
    /// Redis had lost the sale; it was rebuilt from MongoDB, which counts
    /// the order.
    Rebuilt,
    /// Redis could not be told; the reaper settles the hold when its
    /// confirm lease ends.
    Failed(StoreError),
    /// Left undone on purpose (a test's fault point).
    Skipped,
}

struct Pending {
    rid: ReservationId,
    order: OrderDoc,
    done: oneshot::Sender<(OrderDoc, Committed)>,
}

#[derive(Clone)]
pub struct GroupCommit {
    queue: mpsc::Sender<Pending>,
}

impl GroupCommit {
    /// Starts the batcher. The settings' fault points (tests only) stop a
    /// batch after its write, or hold it back before.
    pub fn start(store: Store, recovery: Recovery, settings: &Settings) -> Self {
        let (queue, pending) = mpsc::channel(MAX_BATCH * WRITE_SLOTS * 2);
        let batcher = Batcher {
            store,
            recovery,
            finish_in_redis: !settings.fault_after_order_write,
            delay_first_write: Arc::new(parking_lot::Mutex::new(settings.fault_delay_order_write)),
        };
        tokio::spawn(batcher.run(pending));
        Self { queue }
    }

    /// Writes the order with the next batch; hands it back with what
    /// became of it. Dropping the future before it resolves withdraws the
    /// order if its batch has not left yet. `None`: the batch ended
    /// without an answer (its task panicked), so the order may or may not
    /// have landed, as when MongoDB does not answer in time.
    pub async fn commit(
        &self,
        rid: ReservationId,
        order: OrderDoc,
    ) -> Option<(OrderDoc, Committed)> {
        let (done, outcome) = oneshot::channel();
        if let Err(mpsc::error::SendError(p)) = self.queue.send(Pending { rid, order, done }).await
        {
            let stopped = StoreError::Unavailable("the order writer has stopped".into());
            return Some((p.order, Committed::NotSent(stopped)));
        }
        let answer = outcome.await.ok();
        if answer.is_none() {
            tracing::error!("an order's batch ended without an answer");
        }
        answer
    }
}

#[derive(Clone)]
struct Batcher {
    store: Store,
    recovery: Recovery,
    finish_in_redis: bool,
    /// Test fault point: the first batch waits this long before its write.
    delay_first_write: Arc<parking_lot::Mutex<Option<std::time::Duration>>>,
}

impl Batcher {
    async fn run(self, mut pending: mpsc::Receiver<Pending>) {
        let slots = Arc::new(Semaphore::new(WRITE_SLOTS));
        while let Some(first) = pending.recv().await {
            // While every slot is busy, more confirms queue up behind this one.
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            // A confirm that gave up waiting (its buyer heard 503) is not
            // written: its hold stays confirming and the reaper settles it.
            let mut batch: Vec<Pending> = Some(first)
                .into_iter()
                .filter(|p| !p.done.is_closed())
                .collect();
            while batch.len() < MAX_BATCH {
                match pending.try_recv() {
                    Ok(p) if p.done.is_closed() => {}
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                continue;
            }
            let batcher = self.clone();
            tokio::spawn(async move {
                batcher.commit(batch).await;
                drop(slot);
            });
        }
    }

    async fn commit(&self, batch: Vec<Pending>) {
        let delay = self.delay_first_write.lock().take();
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let orders: Vec<&OrderDoc> = batch.iter().map(|p| &p.order).collect();
        let started = Instant::now();
        let writes = self.write(&orders).await;
        metrics::histogram!("flashdrop_confirm_write_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("flashdrop_order_batch_size").record(batch.len() as f64);

        let mut by_sale: HashMap<&SaleId, Vec<usize>> = HashMap::new();
        for (i, write) in writes.iter().enumerate() {
            if matches!(write, OrderWrite::Inserted) {
                by_sale.entry(batch[i].rid.sale()).or_default().push(i);
            }
        }
        let mut finished: HashMap<usize, Finished> = HashMap::new();
        if self.finish_in_redis {
            let batch = &batch;
            let calls = by_sale.iter().map(|(sale, members)| async move {
                let items: Vec<&Pending> = members.iter().map(|&i| &batch[i]).collect();
                (members, self.finish(sale, &items).await)
            });
            for (members, outcomes) in join_all(calls).await {
                finished.extend(members.iter().copied().zip(outcomes));
            }
        }
        drop(by_sale);
        for (i, (pending, write)) in batch.into_iter().zip(writes).enumerate() {
            let committed = match write {
                OrderWrite::Inserted => {
                    Committed::Inserted(finished.remove(&i).unwrap_or(Finished::Skipped))
                }
                OrderWrite::Refused => Committed::Refused,
                OrderWrite::NotSent(e) => Committed::NotSent(e),
                OrderWrite::Unknown(e) => Committed::Unknown(e),
            };
            let _ = pending.done.send((pending.order, committed));
        }
    }

    /// Writes the orders with their `order.confirmed` messages: staged
    /// before, ready after for the orders that landed, void for those
    /// certainly not written; one whose fate is unknown stays staged for
    /// the deliverer to settle (fencing the order off if it never landed).
    async fn write(&self, orders: &[&OrderDoc]) -> Vec<OrderWrite> {
        let mongo = &self.store.mongo;
        // Nobody listening for `order.confirmed` is the common case: the
        // messages are then not even built (their JSON, their times).
        let messages: Vec<Message> = if mongo.wants_message(MessageType::OrderConfirmed) {
            orders.iter().map(|o| Message::order_confirmed(o)).collect()
        } else {
            Vec::new()
        };
        let mut staged: HashMap<String, Message> = match mongo.stage_messages(&messages).await {
            Ok(staged) => staged.into_iter().map(|m| (m.cause.clone(), m)).collect(),
            Err(e) => {
                let message = e.to_string();
                return orders
                    .iter()
                    .map(|_| OrderWrite::NotSent(StoreError::Unavailable(message.clone())))
                    .collect();
            }
        };
        let writes = mongo.insert_orders(orders).await;
        let (mut ready, mut void, mut refused) = (Vec::new(), Vec::new(), Vec::new());
        for (write, order) in writes.iter().zip(orders) {
            // Only what was staged is settled (nobody wanted the rest).
            let Some(message) = staged.remove(&order.id) else {
                continue;
            };
            match write {
                OrderWrite::Inserted => ready.push(message),
                OrderWrite::NotSent(_) => void.push(message),
                OrderWrite::Refused => refused.push(message),
                OrderWrite::Unknown(_) => {}
            }
        }
        if ready.is_empty() && void.is_empty() && refused.is_empty() {
            return writes;
        }
        // Off the buyer's path: the orders are durable already, and a
        // message left staged (this fails, the process stops) is settled
        // by the deliverer from its order.
        let mongo = mongo.clone();
        tokio::spawn(async move {
            for message in refused {
                // The id may be this order, written before.
                match mongo.order(&message.cause).await {
                    Ok(Some(_)) => ready.push(message),
                    Ok(None) => void.push(message),
                    Err(_) => {}
                }
            }
            let settled = futures_util::future::try_join(
                mongo.ready_messages(&ready),
                mongo.void_messages(&void),
            )
            .await;
            if let Err(e) = settled {
                tracing::warn!(error = %e, "order messages left staged; the deliverer settles them");
            }
        });
        writes
    }

    /// Marks the holds of one sale confirmed, one outcome per hold, a
    /// chunk a call.
    async fn finish(&self, sale: &SaleId, items: &[&Pending]) -> Vec<Finished> {
        let mut finished = Vec::with_capacity(items.len());
        for chunk in items.chunks(FINISH_CHUNK) {
            finished.extend(self.finish_chunk(sale, chunk).await);
        }
        finished
    }

    async fn finish_chunk(&self, sale: &SaleId, items: &[&Pending]) -> Vec<Finished> {
        let rids: Vec<&ReservationId> = items.iter().map(|p| &p.rid).collect();
        let rids = rids.as_slice();
        let each = |f: &dyn Fn() -> Finished| rids.iter().map(|_| f()).collect();
        match self.store.redis.confirm_finish(sale, rids).await {
            Ok(FinishReply::Done { holds }) if holds.len() == rids.len() => {
                let mut finished = Vec::with_capacity(holds.len());
                for (outcome, item) in holds.into_iter().zip(items) {
                    finished.push(match outcome {
                        HoldFinish::Confirmed | HoldFinish::Already => Finished::Confirmed,
                        // Redis lost the hold (a rebuild read MongoDB before
                        // this order landed): the durable order wins.
                        HoldFinish::Missing | HoldFinish::Stale => {
                            match self
                                .store
                                .redis
                                .apply_order(&item.rid, &item.order.user_id, &item.order.units)
                                .await
                            {
                                Ok(reply) => {
                                    super::confirm::log_applied(&item.rid, &reply);
                                    Finished::Applied
                                }
                                Err(e) => Finished::Failed(e),
                            }
                        }
                    });
                }
                finished
            }
            Ok(FinishReply::Done { holds }) => each(&|| {
                Finished::Failed(StoreError::Other(anyhow::anyhow!(
                    "confirm_finish answered {} outcomes for {} holds",
                    holds.len(),
                    rids.len()
                )))
            }),
            // Redis lost the sale: a rebuild counts these orders from MongoDB.
            Ok(FinishReply::Missing) => match self.rebuild(sale).await {
                Ok(()) => each(&|| Finished::Rebuilt),
                Err(e) => {
                    let message = e.to_string();
                    each(&|| Finished::Failed(StoreError::Unavailable(message.clone())))
                }
            },
            Err(e) => {
                let message = e.to_string();
                each(&|| Finished::Failed(StoreError::Unavailable(message.clone())))
            }
        }
    }

    async fn rebuild(&self, sale: &SaleId) -> Result<(), StoreError> {
        match self.store.mongo.find_sale(sale).await? {
            Some(doc) => self.recovery.restore(&doc).await,
            None => Ok(()),
        }
    }
}
