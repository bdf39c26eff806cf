//! Script batches: the requests of one sale that arrive while the sale's
//! last call of a script is out go together in its next call, up to
//! [`BATCH_CHUNK`] in one run, each answered as if it had come alone
//! (`lua/reserve.lua` and `lua/confirm_begin.lua` take batches; the status
//! reads that wait together share one `lua/read_sale.lua`). Redis
//! then pays a script's fixed cost (starting it, reading and parsing the
//! sale's fields, encoding the reply) once per call instead of once per
//! request, and the instance makes one round trip. A call leaves as soon
//! as the sale's previous one is answered, with whatever queued meanwhile:
//! no timer delays a quiet sale, and a busy one batches by itself. Sales
//! do not wait for each other: each has its own queue and at most one call
//! of the script out, made by a task that lives while the queue has work.

use std::{
    collections::{HashMap, VecDeque},
    future::Future,
    sync::Arc,
    time::Duration,
};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::MAX_QUANTITY;
use crate::{
    ids::{ReservationId, SaleId},
    store::{
        Store, StoreError,
        scripts::{
            BATCH_CHUNK, BeginBatchReply, BeginReply, ReadSaleReply, ReserveBatchReply,
            ReserveItem, ReserveReply,
        },
    },
};

/// A script that serves several requests of one sale in one call.
pub trait Batched: Send + Sync + 'static {
    type Item: Send + Sync + 'static;
    type Reply: Send + 'static;
    /// The script's name, for the batch size histogram and the log.
    const NAME: &'static str;
    /// The most items one call carries.
    const CHUNK: usize = BATCH_CHUNK;

    fn sale(item: &Self::Item) -> &SaleId;

    /// Whether the item needs a key of its own that a call passes once
    /// (an idempotency key): a call carries at most one such item.
    fn keyed(_item: &Self::Item) -> bool {
        false
    }

    /// The units the item takes: a call carries items of at most
    /// `MAX_QUANTITY` units together (a larger one goes alone), so it does
    /// no more work than one reserve of the most units may.
    fn units(_item: &Self::Item) -> i64 {
        1
    }

    /// One call for `items` (1..=`BATCH_CHUNK`, at most one keyed, at most
    /// `MAX_QUANTITY` units but for a lone item): a reply per item, in
    /// order.
    fn call(
        &self,
        sale: &SaleId,
        items: &[&Self::Item],
    ) -> impl Future<Output = Result<Vec<Self::Reply>, StoreError>> + Send;
}

type Answer<B> = Result<<B as Batched>::Reply, StoreError>;

struct Pending<B: Batched> {
    item: B::Item,
    done: oneshot::Sender<Answer<B>>,
}

struct Shared<B: Batched> {
    script: B,
    /// A sale is here while a task serves its requests: those that wait
    /// for its next call.
    queues: Mutex<HashMap<SaleId, VecDeque<Pending<B>>>>,
}

pub struct ScriptBatches<B: Batched> {
    shared: Arc<Shared<B>>,
}

impl<B: Batched> Clone for ScriptBatches<B> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<B: Batched> ScriptBatches<B> {
    pub fn new(script: B) -> Self {
        Self {
            shared: Arc::new(Shared {
                script,
                queues: Mutex::default(),
            }),
        }
    }

    /// Runs the item with its sale's next call. Dropping the future before
    /// the call leaves withdraws the item; after, the script may run it.
    pub async fn run(&self, item: B::Item) -> Answer<B> {
        let (done, answer) = oneshot::channel();
        let pending = Pending { item, done };
        // The sale's id is copied only by the request that starts its task.
        let lead = {
            let mut queues = self.shared.queues.lock();
            if let Some(queue) = queues.get_mut(B::sale(&pending.item)) {
                queue.push_back(pending);
                None
            } else {
                let sale = B::sale(&pending.item).clone();
                queues.insert(sale.clone(), VecDeque::from([pending]));
                Some(sale)
            }
        };
        if let Some(sale) = lead {
            let server = Server {
                shared: self.shared.clone(),
                sale,
                done: false,
            };
            tokio::spawn(server.run());
        }
        answer.await.unwrap_or_else(|_| {
            tracing::error!(
                script = B::NAME,
                "a request's batch ended without an answer"
            );
            Err(StoreError::Unavailable(
                "the request was interrupted; retry".into(),
            ))
        })
    }
}

/// Serves one sale's queue, a call at a time, until it is empty.
struct Server<B: Batched> {
    shared: Arc<Shared<B>>,
    sale: SaleId,
    /// Set once the queue is empty and gone.
    done: bool,
}

impl<B: Batched> Server<B> {
    async fn run(mut self) {
        while let Some(batch) = self.next_batch() {
            self.serve(batch).await;
        }
        self.done = true;
    }

    /// The next call's requests, in arrival order (see [`Batched::call`]
    /// for what one call may carry), none whose caller has gone. `None`,
    /// and the sale leaves the map, when nothing waits.
    fn next_batch(&self) -> Option<Vec<Pending<B>>> {
        let mut queues = self.shared.queues.lock();
        let queue = queues.get_mut(&self.sale)?;
        let mut batch: Vec<Pending<B>> = Vec::new();
        let (mut keyed, mut units) = (false, 0);
        while batch.len() < B::CHUNK {
            let Some(next) = queue.front() else { break };
            if next.done.is_closed() {
                queue.pop_front();
                continue;
            }
            let key = B::keyed(&next.item);
            units += B::units(&next.item);
            if !batch.is_empty() && ((key && keyed) || units > MAX_QUANTITY) {
                break;
            }
            keyed |= key;
            batch.extend(queue.pop_front());
        }
        if batch.is_empty() {
            queues.remove(&self.sale);
            return None;
        }
        Some(batch)
    }

    async fn serve(&self, batch: Vec<Pending<B>>) {
        metrics::histogram!("flashdrop_script_batch_size", "script" => B::NAME)
            .record(batch.len() as f64);
        let items: Vec<&B::Item> = batch.iter().map(|p| &p.item).collect();
        let answers: Vec<Answer<B>> = match self.shared.script.call(&self.sale, &items).await {
            Ok(replies) if replies.len() == batch.len() => replies.into_iter().map(Ok).collect(),
            Ok(replies) => {
                let wrong = StoreError::Other(anyhow::anyhow!(
                    "{} answered {} of {} requests",
                    B::NAME,
                    replies.len(),
                    batch.len()
                ));
                batch.iter().map(|_| Err(copied(&wrong))).collect()
            }
            Err(e) => batch.iter().map(|_| Err(copied(&e))).collect(),
        };
        for (pending, answer) in batch.into_iter().zip(answers) {
            let _ = pending.done.send(answer);
        }
    }
}

impl<B: Batched> Drop for Server<B> {
    /// A task that ends early (it panicked) takes its sale's queue with
    /// it: those callers hear an interruption, and the sale's next request
    /// starts a new task.
    fn drop(&mut self) {
        if !self.done {
            self.shared.queues.lock().remove(&self.sale);
        }
    }
}

/// One call's error, for each request it carried.
fn copied(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(message) => StoreError::Unavailable(message.clone()),
        StoreError::Other(e) => StoreError::Other(anyhow::anyhow!("{e:#}")),
    }
}

/// `reserve.lua`: one buyer's reserve per item.
pub struct Reserve {
    pub store: Store,
    pub idempotency_ttl: Duration,
}

impl Batched for Reserve {
    type Item = ReserveItem;
    type Reply = ReserveReply;
    const NAME: &'static str = "reserve";

    fn sale(item: &ReserveItem) -> &SaleId {
        item.rid.sale()
    }

    fn keyed(item: &ReserveItem) -> bool {
        item.idempotency_key.is_some()
    }

    fn units(item: &ReserveItem) -> i64 {
        item.quantity
    }

    async fn call(
        &self,
        sale: &SaleId,
        items: &[&ReserveItem],
    ) -> Result<Vec<ReserveReply>, StoreError> {
        let reply = self
            .store
            .redis
            .reserve(sale, items, self.idempotency_ttl)
            .await?;
        Ok(match reply {
            ReserveBatchReply::Done { holds } => holds,
            ReserveBatchReply::Missing => items.iter().map(|_| ReserveReply::Missing).collect(),
        })
    }
}

/// `confirm_begin.lua`: one hold (its id and its buyer) per item.
pub struct Begin {
    pub store: Store,
    pub lease: Duration,
}

impl Batched for Begin {
    type Item = (ReservationId, String);
    type Reply = BeginReply;
    const NAME: &'static str = "confirm_begin";

    fn sale(item: &Self::Item) -> &SaleId {
        item.0.sale()
    }

    async fn call(
        &self,
        sale: &SaleId,
        items: &[&Self::Item],
    ) -> Result<Vec<BeginReply>, StoreError> {
        let holds: Vec<(&ReservationId, &str)> = items
            .iter()
            .map(|(rid, buyer)| (rid, buyer.as_str()))
            .collect();
        let reply = self
            .store
            .redis
            .confirm_begin(sale, &holds, self.lease)
            .await?;
        Ok(match reply {
            BeginBatchReply::Done { holds } => holds,
            BeginBatchReply::Missing => items.iter().map(|_| BeginReply::Missing).collect(),
        })
    }
}

/// `read_sale.lua`: a status read of the sale per item. The reads that
/// queued while the sale's last read was out share its next one, which
/// starts after each of them arrived: every read sees each change made
/// before it was asked.
pub struct ReadSale {
    pub store: Store,
}

impl Batched for ReadSale {
    type Item = SaleId;
    type Reply = ReadSaleReply;
    const NAME: &'static str = "read_sale";
    /// One read answers any number of readers.
    const CHUNK: usize = usize::MAX;

    fn sale(item: &SaleId) -> &SaleId {
        item
    }

    fn units(_item: &SaleId) -> i64 {
        0
    }

    async fn call(
        &self,
        sale: &SaleId,
        items: &[&SaleId],
    ) -> Result<Vec<ReadSaleReply>, StoreError> {
        let reply = self.store.redis.read_sale(sale).await?;
        Ok(vec![reply; items.len()])
    }
}

#[cfg(test)]
mod tests {
    //! The batching itself, with a script that records its calls: what a
    //! call carries and in which order. What the real scripts do with a
    //! batch is tested against Redis (`tests/api/scripts.rs`).

    use std::time::Duration;

    use tokio::sync::watch;

    use super::*;

    /// An item: its sale, a number it is answered with, whether it is
    /// keyed, its units. A call panics on number 666.
    type Item = (SaleId, u32, bool, i64);

    struct Recorder {
        calls: Mutex<Vec<(SaleId, Vec<u32>)>>,
        /// Calls of this sale wait until it is open.
        gated: SaleId,
        open: watch::Receiver<bool>,
    }

    impl Batched for Recorder {
        type Item = Item;
        type Reply = u32;
        const NAME: &'static str = "recorder";

        fn sale(item: &Item) -> &SaleId {
            &item.0
        }

        fn keyed(item: &Item) -> bool {
            item.2
        }

        fn units(item: &Item) -> i64 {
            item.3
        }

        async fn call(&self, sale: &SaleId, items: &[&Item]) -> Result<Vec<u32>, StoreError> {
            let numbers: Vec<u32> = items.iter().map(|i| i.1).collect();
            self.calls.lock().push((sale.clone(), numbers.clone()));
            if *sale == self.gated {
                let mut open = self.open.clone();
                open.wait_for(|open| *open).await.unwrap();
            }
            assert!(!numbers.contains(&666), "the script failed");
            Ok(numbers)
        }
    }

    struct Setup {
        batches: ScriptBatches<Recorder>,
        gated: SaleId,
        open: watch::Sender<bool>,
    }

    fn setup() -> Setup {
        let gated = SaleId::new();
        let (open, rx) = watch::channel(false);
        let batches = ScriptBatches::new(Recorder {
            calls: Mutex::default(),
            gated: gated.clone(),
            open: rx,
        });
        Setup {
            batches,
            gated,
            open,
        }
    }

    impl Setup {
        fn send(&self, item: Item) -> tokio::task::JoinHandle<Answer<Recorder>> {
            let batches = self.batches.clone();
            tokio::spawn(async move { batches.run(item).await })
        }

        fn calls(&self) -> Vec<(SaleId, Vec<u32>)> {
            self.batches.shared.script.calls.lock().clone()
        }

        fn queued(&self, sale: &SaleId) -> usize {
            self.batches
                .shared
                .queues
                .lock()
                .get(sale)
                .map_or(0, VecDeque::len)
        }

        /// Waits until `done` holds (a few seconds at most).
        async fn until(&self, what: &str, done: impl Fn(&Self) -> bool) {
            let waited = tokio::time::timeout(Duration::from_secs(5), async {
                while !done(self) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
            .await;
            assert!(waited.is_ok(), "waited in vain until {what}");
        }

        fn item(&self, n: u32) -> Item {
            (self.gated.clone(), n, false, 1)
        }
    }

    #[tokio::test]
    async fn what_queues_while_a_call_is_out_goes_in_the_next_calls_in_order() {
        let s = setup();
        let first = s.send(s.item(0));
        s.until("the first call is out", |s| s.calls().len() == 1)
            .await;
        let mut rest = Vec::new();
        for n in 1..=60 {
            let mut item = s.item(n);
            item.2 = n == 10 || n == 20;
            item.3 = if n == 30 { 990 } else { 1 };
            rest.push(s.send(item));
            s.until("it is queued", |s| s.queued(&s.gated) == n as usize)
                .await;
        }
        s.open.send(true).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 0);
        for (n, answer) in (1..).zip(rest) {
            assert_eq!(answer.await.unwrap().unwrap(), n, "each its own answer");
        }
        let calls: Vec<Vec<u32>> = s.calls().into_iter().map(|(_, c)| c).collect();
        assert_eq!(
            calls,
            vec![
                vec![0],
                // Up to the second keyed item.
                (1..=19).collect(),
                // 10 units, then 990: 1,000 in all.
                (20..=30).collect(),
                // At most BATCH_CHUNK.
                (31..=55).collect(),
                (56..=60).collect(),
            ]
        );
        assert_eq!(s.queued(&s.gated), 0);
        assert!(s.batches.shared.queues.lock().is_empty(), "the sale left");
    }

    #[tokio::test]
    async fn a_request_whose_caller_left_is_not_sent_and_other_sales_do_not_wait() {
        let s = setup();
        let first = s.send(s.item(0));
        s.until("the first call is out", |s| s.calls().len() == 1)
            .await;
        let gone = s.send(s.item(1));
        let kept = s.send(s.item(2));
        s.until("both are queued", |s| s.queued(&s.gated) == 2)
            .await;
        gone.abort();
        assert!(gone.await.unwrap_err().is_cancelled());

        // Another sale's request is served while the first call is out.
        let other = SaleId::new();
        let elsewhere = s.send((other.clone(), 7, false, 1));
        assert_eq!(elsewhere.await.unwrap().unwrap(), 7);

        s.open.send(true).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 0);
        assert_eq!(kept.await.unwrap().unwrap(), 2);
        let calls = s.calls();
        assert_eq!(
            calls,
            vec![
                (s.gated.clone(), vec![0]),
                (other, vec![7]),
                (s.gated.clone(), vec![2]),
            ]
        );
    }

    #[tokio::test]
    async fn a_call_that_fails_answers_its_callers_and_the_next_call_is_made() {
        let s = setup();
        s.open.send(true).unwrap();
        let failed = s.send(s.item(666)).await.unwrap();
        assert!(
            matches!(&failed, Err(StoreError::Unavailable(m)) if m.contains("interrupted")),
            "{failed:?}"
        );
        assert!(s.batches.shared.queues.lock().is_empty(), "the sale left");
        assert_eq!(s.send(s.item(1)).await.unwrap().unwrap(), 1);
    }
}
