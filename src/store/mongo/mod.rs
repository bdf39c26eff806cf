//! MongoDB: `sales`, `orders` and the stock event log, their documents and
//! indexes, and the typed queries the services run (one file per
//! collection). The unique indexes on orders are the last line of defence:
//! even a Redis that lost data cannot make MongoDB record a unit sold twice
//! or a buyer over the limit.

mod cancels;
mod events;
mod interest;
mod lobby;
mod messages;
mod orders;
mod outbox;
mod payments;
mod sales;
mod webhooks;

pub use cancels::CancelRequest;
pub use events::{LogTail, Recorded, SummaryFigures};
pub use interest::INTEREST_SETTLE;
pub use lobby::{DrawChunkDoc, DrawDoc, LobbyDoc, LobbyEntryDoc, LobbyRecord};
pub use messages::{Message, MessageState, MessageType, OutboxDoc, sells_out};
pub use orders::{Fence, OrderLookup, OrderWrite};
pub use payments::{PaymentDoc, PaymentEventDoc, RefundDoc};
pub use webhooks::{
    AttemptDoc, CursorDoc, DeliveryDoc, DeliveryState, DisabledDoc, EndpointDoc, cursor_id,
};

use std::time::Duration;

use bson::{DateTime, doc};
use mongodb::{
    Client, Collection, Database, IndexModel,
    error::{Error, ErrorKind, WriteFailure},
    options::{
        Acknowledgment, ClientOptions, CollectionOptions, IndexOptions, ReadConcern, WriteConcern,
    },
};
use serde::{Deserialize, Serialize};

use super::StoreError;

pub const UNITS_INDEX: &str = "order_units_unique";
/// A buyer's purchase slots, unique per sale: `(user_id, sale_id, slots)`.
/// Led by the buyer, it also finds a buyer's orders, so an order writes
/// one index entry fewer than with a slots index led by the sale and one
/// more for the buyer's orders.
pub const SLOTS_INDEX: &str = "order_buyer_slots_unique";
/// The orders' indexes of earlier versions that `SLOTS_INDEX` replaces:
/// `(sale_id, user_id, slots)` unique, and `(user_id, created_at)`.
const REPLACED_ORDER_INDEXES: [&str; 2] = ["order_slots_unique", "user_id_1_created_at_-1"];
/// A refunds index without `_id`, whose pages the server sorted in memory.
const REPLACED_REFUND_INDEXES: [&str; 1] = ["sale_id_1_created_at_-1"];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SaleDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub name: String,
    pub price_cents: i64,
    pub currency: String,
    pub total: i64,
    pub per_user_limit: i64,
    pub starts_at: DateTime,
    pub ends_at: DateTime,
    pub hold_seconds: i64,
    pub waitlist_enabled: bool,
    pub created_at: DateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<DateTime>,
    /// Rises by one with every change: a change applies only to the
    /// version it was made from, and Redis follows the newest.
    #[serde(default)]
    pub version: i64,
    /// The lobby, when the sale has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lobby: Option<LobbyDoc>,
    /// How long a buyer may take to pay, for a sale that takes payment
    /// through the webhook; none for a sale whose buyers confirm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_seconds: Option<i64>,
    /// How long after an order its buyer may cancel it (0: they cannot).
    #[serde(default)]
    pub cancel_seconds: i64,
}

/// A confirmed purchase. `_id` is the reservation id, so a hold can become
/// at most one order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub sale_id: String,
    pub user_id: String,
    pub quantity: i64,
    /// Unit serials 1..=total: unique per sale.
    #[serde(with = "one_or_many")]
    pub units: Vec<i64>,
    /// The buyer's purchase slots 1..=limit: unique per sale and buyer.
    #[serde(with = "one_or_many")]
    pub slots: Vec<i64>,
    pub unit_price_cents: i64,
    pub total_cents: i64,
    pub currency: String,
    pub created_at: DateTime,
    /// The payment that confirmed it, for a sale that takes payment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    /// Set on the copy of a cancelled order in `cancelled_orders` (see
    /// `Mongo::cancel_order`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled: Option<Box<CancelDoc>>,
}

/// An order's units and slots as stored: a list of one is stored as its
/// value. Both fields are in unique indexes, which a document with an
/// array in them makes multikey, and the server does more for every such
/// document it inserts (it keeps the index's multikey flag); most orders
/// are of one unit and one slot. A scalar and an array holding it are the
/// same key to the index, so the uniqueness holds across both forms, and
/// both are read.
pub(crate) mod one_or_many {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(values: &[i64], s: S) -> Result<S::Ok, S::Error> {
        match values {
            [one] => s.serialize_i64(*one),
            many => many.serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<i64>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Stored {
            One(i64),
            Many(Vec<i64>),
        }
        Ok(match Stored::deserialize(d)? {
            Stored::One(one) => vec![one],
            Stored::Many(many) => many,
        })
    }
}

/// How an order was cancelled, and what it gave back.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CancelDoc {
    pub at: DateTime,
    pub reason: String,
    /// `admin:<id>` or `buyer:<id>`.
    pub by: String,
    /// Redis has the units back (`lua/return_order.lua`); until then the
    /// reaper finishes the return.
    pub returned: bool,
}

/// One change of a sale's stock, copied from the sale's Redis stream. The
/// log keeps changes in batches (`events::StockBatchDoc`), each seq once;
/// logs written before batches keep one document per change in
/// `stock_events`, unique by `(sale_id, seq)`, and are read with them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StockEventDoc {
    /// Not stored with a change in a batch, which names its sale once.
    #[serde(default, skip_serializing)]
    pub sale_id: String,
    pub seq: i64,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buyer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<String>,
    /// A waiting-list join's ticket (its place in line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<i64>,
    /// Set when Redis had come back older and handed out this change's seq
    /// again: the seq it came with (it is recorded under a fresh one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restamped_from: Option<i64>,
    /// A `restored` change's read of the log: the rebuild that made it
    /// read the batches up to this one, and nothing after (see
    /// `recovery::replay_line`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_n: Option<i64>,
    /// The batch this change was read from (0: the older log). Not stored:
    /// set when the log is read.
    #[serde(skip)]
    pub batch: i64,
    /// The copy of the sale in Redis that made this change, as its stream
    /// entry says (none: an entry that does not say). Not stored.
    #[serde(skip)]
    pub epoch: Option<String>,
    pub available: i64,
    pub held: i64,
    pub sold: i64,
    pub at: DateTime,
    /// `at` in whole seconds, for per-second statistics.
    pub second: i64,
}

#[derive(Clone)]
pub struct Mongo {
    db: Database,
    sales: Collection<SaleDoc>,
    /// Writes wait for a majority and the journal: an order is durable
    /// before the API says 201.
    orders: Collection<OrderDoc>,
    /// The same collection as plain documents, for fences (same write
    /// concern), and for reads whose answer must not roll back.
    orders_raw: Collection<bson::Document>,
    orders_read: Collection<bson::Document>,
    /// Orders that were cancelled, out of `orders` (see `cancels.rs`).
    cancelled_orders: Collection<OrderDoc>,
    /// The log of one document per change, as versions before batches
    /// wrote it: read, no longer written.
    stock_events: Collection<StockEventDoc>,
    /// The stock event log, a batch of changes per document.
    stock_batches: Collection<events::StockBatchDoc>,
    /// One entry per buyer and lobby, durable before the join answers.
    lobby_entries: Collection<LobbyEntryDoc>,
    /// Frozen draws: heads and their chunks.
    lobby_draws: Collection<DrawDoc>,
    lobby_draw_chunks: Collection<DrawChunkDoc>,
    /// Payment intents, provider events and refunds due.
    payments: Collection<PaymentDoc>,
    payment_events: Collection<PaymentEventDoc>,
    refunds: Collection<RefundDoc>,
    /// Messages for webhook endpoints, written with their causes, and each
    /// sale's last place in its sequence (`outbox.rs`).
    outbox: Collection<OutboxDoc>,
    outbox_seqs: Collection<bson::Document>,
    webhook_endpoints: Collection<EndpointDoc>,
    webhook_cursors: Collection<CursorDoc>,
    webhook_deliveries: Collection<DeliveryDoc>,
    /// Which message types some endpoint wants (`interest.rs`).
    interest: std::sync::Arc<interest::OutboxInterest>,
    /// How long one operation may take before its caller gives up.
    timeout: Duration,
}

/// Rebuilding a sale reads all its orders and events: it may take longer.
const LONG_OPERATIONS: u32 = 15;

impl Mongo {
    /// Connects with the default operation timeout (see [`Mongo::with_timeout`]).
    pub async fn connect(uri: &str, db: &str) -> Result<Self, StoreError> {
        Self::connect_with(uri, db, |_| {}).await
    }

    /// Connects, letting `configure` adjust the driver's options (command
    /// monitoring, say) after the URI's.
    pub async fn connect_with(
        uri: &str,
        db: &str,
        configure: impl FnOnce(&mut ClientOptions),
    ) -> Result<Self, StoreError> {
        let mut options = ClientOptions::parse(uri)
            .await
            .map_err(|e| StoreError::Other(anyhow::anyhow!("FLASHDROP_MONGODB_URI: {e}")))?;
        configure(&mut options);
        options.app_name.get_or_insert_with(|| "flashdrop".into());
        // Fail fast instead of holding a buyer's request for the driver's
        // default 30 s when MongoDB is down.
        options
            .server_selection_timeout
            .get_or_insert(Duration::from_secs(5));
        options
            .connect_timeout
            .get_or_insert(Duration::from_secs(3));
        let client = Client::with_options(options).map_err(StoreError::from)?;
        let db = client.database(db);
        let durable = CollectionOptions::builder()
            .write_concern(
                WriteConcern::builder()
                    .w(Acknowledgment::Majority)
                    .journal(true)
                    .build(),
            )
            .build();
        let majority_reads = CollectionOptions::builder()
            .read_concern(ReadConcern::majority())
            .build();
        Ok(Self {
            lobby_entries: db.collection_with_options("lobby_entries", durable.clone()),
            lobby_draws: db.collection_with_options("lobby_draws", durable.clone()),
            lobby_draw_chunks: db.collection_with_options("lobby_draw_chunks", durable.clone()),
            payments: db.collection_with_options("payments", durable.clone()),
            payment_events: db.collection_with_options("payment_events", durable.clone()),
            refunds: db.collection_with_options("refunds", durable.clone()),
            outbox: db.collection_with_options("outbox", durable.clone()),
            outbox_seqs: db.collection_with_options("outbox_seqs", durable.clone()),
            webhook_endpoints: db.collection_with_options("webhook_endpoints", durable.clone()),
            webhook_cursors: db.collection_with_options("webhook_cursors", durable.clone()),
            webhook_deliveries: db.collection("webhook_deliveries"),
            interest: Default::default(),
            sales: db.collection("sales"),
            orders: db.collection_with_options("orders", durable.clone()),
            orders_raw: db.collection_with_options("orders", durable.clone()),
            cancelled_orders: db.collection_with_options("cancelled_orders", durable.clone()),
            orders_read: db.collection_with_options("orders", majority_reads),
            stock_events: db.collection_with_options("stock_events", durable.clone()),
            stock_batches: db.collection_with_options("stock_event_batches", durable),
            db,
            timeout: Duration::from_secs(2),
        })
    }

    pub fn database_name(&self) -> String {
        self.db.name().to_owned()
    }

    /// The same database, with operations bounded by `timeout`.
    pub fn with_timeout(self, timeout: Duration) -> Self {
        Self { timeout, ..self }
    }

    /// Runs one operation, giving up after the timeout: a MongoDB that
    /// stalls turns into a prompt `Unavailable`, never a request that hangs.
    async fn bounded<T>(
        &self,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.bounded_by(self.timeout, op).await
    }

    async fn bounded_long<T>(
        &self,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.bounded_by(self.timeout * LONG_OPERATIONS, op).await
    }

    async fn bounded_by<T>(
        &self,
        limit: Duration,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(limit, op).await.unwrap_or_else(|_| {
            metrics::counter!("flashdrop_store_errors_total", "store" => "mongodb").increment(1);
            Err(StoreError::Unavailable(format!(
                "mongodb did not answer within {limit:?}"
            )))
        })
    }

    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        let unique = |name: &str| {
            IndexOptions::builder()
                .unique(true)
                .name(name.to_owned())
                .build()
        };
        self.orders
            .create_indexes([
                IndexModel::builder()
                    .keys(doc! {"sale_id": 1, "units": 1})
                    .options(unique(UNITS_INDEX))
                    .build(),
                IndexModel::builder()
                    .keys(doc! {"user_id": 1, "sale_id": 1, "slots": 1})
                    .options(unique(SLOTS_INDEX))
                    .build(),
            ])
            .await?;
        self.drop_replaced_indexes(&self.orders, &REPLACED_ORDER_INDEXES)
            .await?;
        self.cancelled_orders
            .create_indexes([
                IndexModel::builder()
                    .keys(doc! {"sale_id": 1, "_id": 1})
                    .build(),
                IndexModel::builder()
                    .keys(doc! {"user_id": 1, "created_at": -1})
                    .build(),
                IndexModel::builder()
                    .keys(doc! {"cancelled.returned": 1})
                    .build(),
            ])
            .await?;
        self.sales
            .create_indexes([
                IndexModel::builder().keys(doc! {"ends_at": 1}).build(),
                // The listing's order, read a page at a time.
                IndexModel::builder()
                    .keys(doc! {"starts_at": -1, "_id": -1})
                    .build(),
            ])
            .await?;
        // The refunds pages, newest first and by id within a millisecond,
        // of one sale and of all: read in index order, a page at a time.
        self.refunds
            .create_indexes([
                IndexModel::builder()
                    .keys(doc! {"sale_id": 1, "created_at": -1, "_id": 1})
                    .build(),
                IndexModel::builder()
                    .keys(doc! {"created_at": -1, "_id": 1})
                    .build(),
            ])
            .await?;
        self.drop_replaced_indexes(&self.refunds, &REPLACED_REFUND_INDEXES)
            .await?;
        self.lobby_entries
            .create_index(IndexModel::builder().keys(doc! {"sale_id": 1}).build())
            .await?;
        self.lobby_draw_chunks
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"sale_id": 1, "freeze": 1, "index": 1})
                    .build(),
            )
            .await?;
        self.stock_events
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"sale_id": 1, "seq": 1})
                    .options(unique("stock_event_seq_unique"))
                    .build(),
            )
            .await?;
        self.stock_batches
            .create_indexes([
                IndexModel::builder()
                    .keys(doc! {"sale_id": 1, "n": 1})
                    .options(unique("stock_batch_place_unique"))
                    .build(),
                // The batches that may hold a seq, by their highest.
                IndexModel::builder()
                    .keys(doc! {"sale_id": 1, "last": 1})
                    .build(),
            ])
            .await?;
        self.ensure_outbox_indexes().await
    }

    /// Drops the indexes of `collection` named in `replaced`, once the
    /// ones that replace them are built. Two instances starting together
    /// may both try; the second finds the index gone.
    async fn drop_replaced_indexes<T: Send + Sync>(
        &self,
        collection: &Collection<T>,
        replaced: &[&str],
    ) -> Result<(), StoreError> {
        let present = collection.list_index_names().await?;
        for &name in replaced {
            if !present.iter().any(|p| p == name) {
                continue;
            }
            match collection.drop_index(name).await {
                Ok(()) => tracing::info!(
                    collection = collection.name(),
                    index = name,
                    "dropped an index this version replaced"
                ),
                Err(e) if is_index_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Ends the client's sessions and closes its connections, waiting at
    /// most `limit`; every handle to this client fails after it. A process
    /// calls it before it returns: otherwise the driver ends the sessions
    /// in a task it spawns when the last handle drops, which panics when
    /// the runtime has begun to stop under it.
    pub async fn shutdown(&self, limit: Duration) {
        let closed = self.db.client().clone().shutdown();
        if tokio::time::timeout(limit, closed).await.is_err() {
            tracing::warn!(
                ?limit,
                "MongoDB did not close the client's sessions in time"
            );
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(async {
            self.db.run_command(doc! {"ping": 1}).await?;
            Ok(())
        })
        .await
    }
}

/// True when the error says MongoDB could not be reached at all.
pub fn is_unreachable(err: &Error) -> bool {
    matches!(
        *err.kind,
        ErrorKind::ServerSelection { .. }
            | ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. }
    ) || err.contains_label(mongodb::error::RETRYABLE_WRITE_ERROR)
}

/// True when the operation certainly never reached a server, so a write
/// certainly did not happen.
fn never_sent(err: &Error) -> bool {
    matches!(*err.kind, ErrorKind::ServerSelection { .. })
}

/// The server's answer to dropping an index that is not there.
fn is_index_not_found(err: &Error) -> bool {
    const INDEX_NOT_FOUND: i32 = 27;
    matches!(&*err.kind, ErrorKind::Command(c) if c.code == INDEX_NOT_FOUND)
}

/// The server's code for a unique-index violation.
const DUPLICATE_KEY: i32 = 11000;

/// A unique-index violation and nothing else.
pub(super) fn is_duplicate_key(err: &Error) -> bool {
    match &*err.kind {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == DUPLICATE_KEY,
        ErrorKind::Command(e) => e.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(e) => {
            e.write_concern_error.is_none()
                && e.write_errors
                    .as_ref()
                    .is_some_and(|errs| errs.iter().all(|w| w.code == DUPLICATE_KEY))
        }
        _ => false,
    }
}

/// What Redis keeps of a sale, from the sale as MongoDB has it.
impl From<&SaleDoc> for super::scripts::LiveSettings {
    fn from(d: &SaleDoc) -> Self {
        super::scripts::LiveSettings {
            name: d.name.clone(),
            total: d.total,
            per_user_limit: d.per_user_limit,
            starts_ms: d.starts_at.timestamp_millis(),
            ends_ms: d.ends_at.timestamp_millis(),
            hold_ms: d.hold_seconds * 1000,
            price_cents: d.price_cents,
            currency: d.currency.clone(),
            waitlist: d.waitlist_enabled,
            version: d.version,
            admit_per_second: d.lobby.as_ref().map_or(0, |l| l.admit_per_second),
            admission_ms: d.lobby.as_ref().map_or(0, |l| l.admission_seconds * 1000),
            opens_ms: d
                .lobby
                .as_ref()
                .map_or(0, |l| l.opens_at.timestamp_millis()),
            commit: d
                .lobby
                .as_ref()
                .map_or_else(String::new, |l| l.seed_sha256.clone()),
            payment_ms: d.payment_seconds.map_or(0, |s| s * 1000),
        }
    }
}
