//! Per-process fan-out from the Redis subscription to sockets. A socket
//! waits on its sale's stock `watch` and, with a token, on the sale's
//! personal `broadcast`: nothing is shared by every socket of the process,
//! so a change wakes only the sockets of its sale. The first socket of a
//! sale asks the subscriber to subscribe to the sale's channel, and waits
//! until it has before reading its snapshot; the last one leaves it.

use std::{
    collections::HashMap,
    sync::{Arc, Weak},
    time::Duration,
};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, watch};

use super::{
    admission::Admission,
    outlet::{Outlet, Writers},
};
use crate::ids::SaleId;

/// A change as `fd_emit` in `lua/prelude.lua` publishes it.
#[derive(Debug, Clone, Deserialize)]
pub struct Change {
    pub seq: i64,
    pub kind: String,
    pub ts: i64,
    pub available: i64,
    pub held: i64,
    pub sold: i64,
    pub status: String,
    #[serde(default)]
    pub waitlist_length: i64,
    pub user: Option<String>,
    pub rid: Option<String>,
    pub qty: Option<i64>,
    pub expires: Option<i64>,
    pub ticket: Option<i64>,
    pub position: Option<i64>,
    /// The Redis copy of the sale it happened on; a rebuild makes a new one.
    #[serde(default)]
    pub epoch: String,
}

/// A lobby's figures as `lua/lobby_tick.lua` publishes them (at most once
/// a second, and at once when the lobby learns it is sold out).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct LobbyFigures {
    /// Buyers still waiting.
    pub lobby_length: i64,
    /// Buyers let in so far.
    pub admitted: i64,
    /// Nobody waiting can be served any more.
    pub sold_out: bool,
    /// The sale has started: buyers are let in.
    pub started: bool,
    #[serde(default, skip_serializing)]
    pub epoch: String,
    pub ts: i64,
}

/// A buyer took a place in the lobby (`lua/lobby_join.lua`).
#[derive(Debug, Clone, Deserialize)]
pub struct LobbyJoined {
    pub lobby_joined: String,
}

/// What a sale's channel carries: its changes, its lobby's figures, and
/// lobby joins.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Published {
    Change(Change),
    Lobby(LobbyFigures),
    Joined(LobbyJoined),
}

/// Lobby figures with their frame, serialized once for every socket.
#[derive(Debug)]
pub struct LobbyUpdate {
    pub figures: LobbyFigures,
    pub frame: String,
}

impl LobbyUpdate {
    pub fn new(figures: LobbyFigures) -> Self {
        #[derive(Serialize)]
        struct Frame<'a> {
            r#type: &'static str,
            #[serde(flatten)]
            figures: &'a LobbyFigures,
        }
        // Plain fields: serializing cannot fail.
        let frame = serde_json::to_string(&Frame {
            r#type: "lobby_figures",
            figures: &figures,
        })
        .unwrap_or_default();
        Self { figures, frame }
    }
}

#[derive(Serialize)]
struct StockFrame<'a> {
    r#type: &'static str,
    seq: i64,
    available: i64,
    held: i64,
    sold: i64,
    status: &'a str,
    waitlist_length: i64,
    ts: i64,
}

/// What the subscriber hands to sockets: a change with its stock frame
/// serialized once for every socket, or the word that changes were lost
/// (the subscription was re-established) and a fresh snapshot is due.
#[derive(Debug)]
#[expect(clippy::large_enum_variant, reason = "always shared behind an Arc")]
pub enum Update {
    Change { change: Change, stock_frame: String },
    Resync,
}

/// Per buyer, a signal their sockets here wait on for their lobby join.
type Joins = Arc<Mutex<HashMap<String, Weak<watch::Sender<()>>>>>;

struct SaleFeed {
    stock: watch::Sender<Option<Arc<Update>>>,
    personal: broadcast::Sender<Arc<Update>>,
    lobby: watch::Sender<Option<Arc<LobbyUpdate>>>,
    /// A lobby join wakes only the joiner's sockets, not every buyer's.
    joins: Joins,
    /// Whether Redis sends this instance the sale's changes yet.
    subscribed: watch::Sender<bool>,
    /// The tasks that write its stock frames, a group of sockets each.
    writers: Arc<Writers>,
}

/// What the hub asks of the subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interest {
    Watch(SaleId),
    Leave(SaleId),
}

pub struct Hub {
    sales: Mutex<HashMap<SaleId, Arc<SaleFeed>>>,
    interest: mpsc::UnboundedSender<Interest>,
    /// Personal events buffered per sale before a slow socket falls behind
    /// (and then catches up from Redis).
    personal_buffer: usize,
    /// At most one stock frame per socket per this long (`None`: one per
    /// change).
    stock_gap: Option<Duration>,
    /// Who may open a socket.
    pub admission: Arc<Admission>,
}

pub struct Subscription {
    pub stock: watch::Receiver<Option<Arc<Update>>>,
    pub personal: broadcast::Receiver<Arc<Update>>,
    pub lobby: watch::Receiver<Option<Arc<LobbyUpdate>>>,
    joins: Joins,
    subscribed: watch::Receiver<bool>,
    writers: Arc<Writers>,
}

/// What a buyer's socket waits on to hear of the buyer's own lobby join.
/// Dropping the last one of a buyer forgets the buyer.
pub struct JoinWatch {
    signal: Arc<watch::Sender<()>>,
    pub joined: watch::Receiver<()>,
    joins: Joins,
    buyer: String,
}

impl Drop for JoinWatch {
    fn drop(&mut self) {
        let mut joins = self.joins.lock();
        if Arc::strong_count(&self.signal) == 1 {
            joins.remove(&self.buyer);
        }
    }
}

impl Subscription {
    /// Lets the sale's writers send this socket its stock frames.
    pub fn join_writers(&self, outlet: &Arc<Outlet>) {
        self.writers.join(outlet, &self.stock);
    }

    /// Signals when `buyer` joins the sale's lobby (on any instance).
    pub fn watch_join(&self, buyer: &str) -> JoinWatch {
        let mut joins = self.joins.lock();
        let signal = match joins.get(buyer).and_then(Weak::upgrade) {
            Some(signal) => signal,
            None => {
                let signal = Arc::new(watch::channel(()).0);
                joins.insert(buyer.to_owned(), Arc::downgrade(&signal));
                signal
            }
        };
        JoinWatch {
            joined: signal.subscribe(),
            signal,
            joins: self.joins.clone(),
            buyer: buyer.to_owned(),
        }
    }

    /// Resolves once the sale's changes reach this instance, so a snapshot
    /// read after it misses none.
    pub async fn subscribed(&mut self) -> bool {
        self.subscribed.wait_for(|on| *on).await.is_ok()
    }
}

impl Hub {
    /// A hub and the stream of subscriptions it needs.
    pub fn new(
        personal_buffer: usize,
        stock_gap: Option<Duration>,
        admission: Admission,
    ) -> (Self, mpsc::UnboundedReceiver<Interest>) {
        let (interest, wanted) = mpsc::unbounded_channel();
        let hub = Hub {
            sales: Mutex::default(),
            interest,
            personal_buffer: personal_buffer.max(1),
            stock_gap,
            admission: Arc::new(admission),
        };
        (hub, wanted)
    }

    pub fn subscribe(&self, sale: &SaleId) -> Subscription {
        let mut sales = self.sales.lock();
        let feed = sales
            .entry(sale.clone())
            .or_insert_with(|| {
                let _ = self.interest.send(Interest::Watch(sale.clone()));
                Arc::new(SaleFeed {
                    stock: watch::channel(None).0,
                    personal: broadcast::channel(self.personal_buffer).0,
                    lobby: watch::channel(None).0,
                    joins: Joins::default(),
                    subscribed: watch::channel(false).0,
                    writers: Arc::new(Writers::new(self.stock_gap)),
                })
            })
            .clone();
        Subscription {
            stock: feed.stock.subscribe(),
            personal: feed.personal.subscribe(),
            lobby: feed.lobby.subscribe(),
            joins: feed.joins.clone(),
            subscribed: feed.subscribed.subscribe(),
            writers: feed.writers.clone(),
        }
    }

    /// Whether some socket here watches the sale.
    pub fn is_watched(&self, sale: &SaleId) -> bool {
        self.sales.lock().contains_key(sale)
    }

    /// The sales sockets here watch.
    pub fn watched(&self) -> Vec<SaleId> {
        self.sales.lock().keys().cloned().collect()
    }

    /// Redis now sends this instance the sale's changes (or, `false`, it
    /// stopped: the connection was lost).
    pub fn mark_subscribed(&self, sale: &SaleId, on: bool) {
        if let Some(feed) = self.sales.lock().get(sale) {
            feed.subscribed.send_replace(on);
        }
    }

    /// Messages published while the subscription was down are lost: every
    /// socket sends a fresh snapshot.
    pub fn resync(&self) {
        let feeds: Vec<_> = self.sales.lock().values().cloned().collect();
        for feed in feeds {
            feed.stock.send_replace(Some(Arc::new(Update::Resync)));
        }
    }

    /// The sale's changes may have been lost: its sockets send a fresh
    /// snapshot.
    pub fn resync_sale(&self, sale: &SaleId) {
        let feed = self.sales.lock().get(sale).cloned();
        if let Some(feed) = feed {
            feed.stock.send_replace(Some(Arc::new(Update::Resync)));
        }
    }

    /// Forgets a sale's feed once its last socket is gone (its writers
    /// end with it).
    pub fn release(&self, sale: &SaleId) {
        let mut sales = self.sales.lock();
        if sales
            .get(sale)
            .is_some_and(|f| f.personal.receiver_count() == 0)
        {
            sales.remove(sale);
            let _ = self.interest.send(Interest::Leave(sale.clone()));
        }
    }

    /// Hands a change to the sockets of its sale, if this process has any.
    pub fn publish(&self, sale: &SaleId, change: Change) {
        let feed = match self.sales.lock().get(sale) {
            Some(feed) => feed.clone(),
            None => return,
        };
        let stock_frame = serde_json::to_string(&StockFrame {
            r#type: "stock",
            seq: change.seq,
            available: change.available,
            held: change.held,
            sold: change.sold,
            status: &change.status,
            waitlist_length: change.waitlist_length,
            ts: change.ts,
        })
        // Plain fields: serializing cannot fail.
        .unwrap_or_default();
        let personal = change.user.is_some() || change.kind == "sale_closed";
        let update = Arc::new(Update::Change {
            change,
            stock_frame,
        });
        if personal {
            let _ = feed.personal.send(update.clone());
        }
        feed.stock.send_replace(Some(update));
    }

    /// Tells the joiner's sockets here, if any, that they joined the lobby.
    pub fn publish_joined(&self, sale: &SaleId, joined: LobbyJoined) {
        let feed = self.sales.lock().get(sale).cloned();
        let signal = feed.and_then(|feed| {
            let joins = feed.joins.lock();
            joins.get(&joined.lobby_joined).and_then(Weak::upgrade)
        });
        if let Some(signal) = signal {
            signal.send_replace(());
        }
    }

    /// Hands a lobby's figures to the sockets of its sale.
    pub fn publish_lobby(&self, sale: &SaleId, figures: LobbyFigures) {
        let feed = self.sales.lock().get(sale).cloned();
        if let Some(feed) = feed {
            feed.lobby
                .send_replace(Some(Arc::new(LobbyUpdate::new(figures))));
        }
    }

    /// Open WebSockets in this process.
    pub fn sockets(&self) -> usize {
        self.admission.open()
    }

    #[cfg(test)]
    fn feeds(&self) -> usize {
        self.sales.lock().len()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use serde_json::json;

    pub fn change(seq: i64) -> Change {
        serde_json::from_value(json!({
            "seq": seq, "kind": "reserved", "ts": 1, "available": 100 - seq,
            "held": seq, "sold": 0, "status": "active", "user": "u"
        }))
        .unwrap()
    }

    #[test]
    fn a_socket_that_does_not_read_keeps_only_the_newest_stock_and_bounded_events() {
        let (hub, _interest) = Hub::new(64, None, Admission::new(10, None));
        let sale = SaleId::new();
        let mut sub = hub.subscribe(&sale);
        for seq in 1..=1000 {
            hub.publish(&sale, change(seq));
        }
        // Stock is latest-value: one update waits, the newest.
        assert!(sub.stock.has_changed().unwrap());
        let newest = sub.stock.borrow_and_update().clone();
        assert!(
            matches!(newest.as_deref(), Some(Update::Change { change, .. }) if change.seq == 1000)
        );
        // Personal events are bounded: the reader learns it lagged.
        assert!(matches!(
            sub.personal.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(n)) if n == 1000 - 64
        ));
    }

    #[test]
    fn the_first_socket_asks_for_a_sale_and_the_last_one_leaves_it() {
        let (hub, mut interest) = Hub::new(64, None, Admission::new(10, None));
        let (a, b) = (SaleId::new(), SaleId::new());
        let sub_a = hub.subscribe(&a);
        let again_a = hub.subscribe(&a);
        let sub_b = hub.subscribe(&b);
        assert_eq!(interest.try_recv().unwrap(), Interest::Watch(a.clone()));
        assert_eq!(interest.try_recv().unwrap(), Interest::Watch(b.clone()));
        assert!(interest.try_recv().is_err(), "one subscription per sale");
        hub.publish(&a, change(1));
        assert!(!sub_b.stock.has_changed().unwrap());
        drop(sub_a);
        hub.release(&a);
        assert!(interest.try_recv().is_err(), "a socket still watches a");
        drop(again_a);
        hub.release(&a);
        assert_eq!(interest.try_recv().unwrap(), Interest::Leave(a));
        assert_eq!(hub.feeds(), 1);
    }

    #[test]
    fn a_lobby_join_wakes_only_the_joiners_sockets_and_is_forgotten_with_them() {
        let (hub, _interest) = Hub::new(64, None, Admission::new(10, None));
        let sale = SaleId::new();
        let sub = hub.subscribe(&sale);
        let (mut one, two) = (sub.watch_join("ann"), sub.watch_join("ann"));
        let other = sub.watch_join("bob");
        let mut personal = hub.subscribe(&sale).personal;
        let joined = |who: &str| LobbyJoined {
            lobby_joined: who.into(),
        };
        hub.publish_joined(&sale, joined("ann"));
        assert!(one.joined.has_changed().unwrap() && two.joined.has_changed().unwrap());
        assert!(!other.joined.has_changed().unwrap());
        assert!(personal.try_recv().is_err(), "no other socket woken");
        one.joined.borrow_and_update();
        drop(two);
        assert_eq!(sub.joins.lock().len(), 2, "ann has a socket still");
        drop(one);
        drop(other);
        assert!(sub.joins.lock().is_empty());
        // A join of someone not watching here changes nothing.
        hub.publish_joined(&sale, joined("cat"));
    }
}
