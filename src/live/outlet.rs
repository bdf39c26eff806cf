//! A socket's sending half, shared by the socket's own task and its sale's
//! stock writers. A change wakes one writer task per group of sockets
//! ([`GROUP_SIZE`]), not one task per socket: the writer hands the frame,
//! encoded once, to each socket of its group that can take it at once,
//! with no wait. A socket that cannot (its send buffer is full, its task
//! is writing, or the change needs more than a frame: a rebuilt sale, a
//! resync) is woken to do it itself, with its send timeout.

use std::{
    collections::BTreeSet,
    pin::Pin,
    sync::{Arc, OnceLock, Weak},
    task::{Context, Poll},
    time::Duration,
};

use futures_util::{Sink, SinkExt};
use parking_lot::Mutex;
use poem::web::websocket::{Message, WebSocketStream};
use tokio::{
    sync::{Notify, watch},
    time::Instant,
};

use super::hub::Update;

/// Sockets one writer task serves.
pub const GROUP_SIZE: usize = 256;

type SocketSink = futures_util::stream::SplitSink<WebSocketStream, Message>;

/// The sending half, each send bounded by the send timeout.
pub struct Out {
    pub sink: SocketSink,
    pub timeout: Duration,
}

/// What an attempt to send without waiting did.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySend {
    /// Written to the socket.
    Sent,
    /// Taken, not all written yet: someone must flush.
    Unflushed,
    /// Not taken: the socket cannot take more now.
    Busy,
    /// The connection is broken (its task finds out on its own).
    Failed,
}

impl Out {
    pub async fn send(&mut self, msg: Message) -> Result<(), &'static str> {
        tokio::time::timeout(self.timeout, self.sink.send(msg))
            .await
            .map_err(|_| "send timed out")?
            .map_err(|_| "send failed")
    }

    pub async fn text(&mut self, text: String) -> Result<(), &'static str> {
        self.send(Message::Text(text)).await
    }

    pub async fn json(&mut self, frame: serde_json::Value) -> Result<(), &'static str> {
        self.text(frame.to_string()).await
    }

    /// Writes out what an earlier send left buffered.
    pub async fn flush(&mut self) -> Result<(), &'static str> {
        tokio::time::timeout(self.timeout, self.sink.flush())
            .await
            .map_err(|_| "send timed out")?
            .map_err(|_| "send failed")
    }

    /// Tells the client to come back later: the stores cannot serve it now.
    pub async fn close_unavailable(&mut self) {
        let _ = self
            .send(Message::Close(Some((
                poem::web::websocket::CloseCode::Again,
                "stores unavailable; reconnect".into(),
            ))))
            .await;
    }

    /// Sends without waiting, or says why not.
    pub fn try_send(&mut self, msg: Message) -> TrySend {
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        let mut sink = Pin::new(&mut self.sink);
        match sink.as_mut().poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(_)) => return TrySend::Failed,
            Poll::Pending => return TrySend::Busy,
        }
        if sink.as_mut().start_send(msg).is_err() {
            return TrySend::Failed;
        }
        match sink.poll_flush(&mut cx) {
            Poll::Ready(Ok(())) => TrySend::Sent,
            Poll::Ready(Err(_)) => TrySend::Failed,
            Poll::Pending => TrySend::Unflushed,
        }
    }
}

/// A socket's sending half with what it has sent of the sale's stock.
pub struct Sending {
    pub out: Out,
    /// The seq of the last stock the client has (snapshot or frame).
    pub last_seq: i64,
    /// The Redis copy of the sale that stock came from.
    pub epoch: String,
    /// False until the first snapshot is sent: writers leave it alone.
    pub ready: bool,
}

pub struct Outlet {
    pub sending: tokio::sync::Mutex<Sending>,
    /// Wakes the socket's task to do what a writer could not.
    pub wake: Notify,
    /// Its place in a writer group, given back when the socket is gone.
    seat: OnceLock<Seat>,
}

impl Outlet {
    pub fn new(out: Out) -> Arc<Self> {
        Arc::new(Self {
            sending: tokio::sync::Mutex::new(Sending {
                out,
                last_seq: 0,
                epoch: String::new(),
                ready: false,
            }),
            wake: Notify::new(),
            seat: OnceLock::new(),
        })
    }

    /// Sends the stock frame of `update` now if the socket can take it at
    /// once; else leaves it to the socket's task.
    fn offer(&self, update: &Update) {
        let Ok(mut sending) = self.sending.try_lock() else {
            self.wake.notify_one();
            return;
        };
        let handed = match update {
            Update::Change {
                change,
                stock_frame,
            } if sending.ready && change.epoch == sending.epoch => {
                if change.seq <= sending.last_seq {
                    return;
                }
                match sending.out.try_send(Message::Text(stock_frame.clone())) {
                    TrySend::Sent => {
                        sending.last_seq = change.seq;
                        true
                    }
                    TrySend::Unflushed => {
                        sending.last_seq = change.seq;
                        false
                    }
                    TrySend::Busy | TrySend::Failed => false,
                }
            }
            _ => false,
        };
        if !handed {
            drop(sending);
            self.wake.notify_one();
        }
    }
}

/// The sockets one writer task serves.
type Group<T> = Arc<Mutex<Vec<Weak<T>>>>;

/// The groups that may have room.
type Open = Arc<Mutex<BTreeSet<usize>>>;

/// A member's place: when the member is gone, its group may have room.
struct Seat {
    open: Open,
    group: usize,
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.open.lock().insert(self.group);
    }
}

/// Groups of at most [`GROUP_SIZE`] members. A join costs the same
/// however many members there are: it takes the first group that may
/// have room (one a member left, or the newest while it fills), and
/// prunes the members gone only from a group it finds full. So freed
/// places are taken again, and the groups stay as few as the members
/// need.
struct Seating<T> {
    groups: Mutex<Vec<Group<T>>>,
    open: Open,
    /// Groups looked at by joins, for the tests.
    #[cfg(test)]
    looked: std::sync::atomic::AtomicUsize,
}

impl<T> Default for Seating<T> {
    fn default() -> Self {
        Self {
            groups: Mutex::new(Vec::new()),
            open: Open::default(),
            #[cfg(test)]
            looked: Default::default(),
        }
    }
}

impl<T> Seating<T> {
    /// Seats `member`: its seat (to keep while it lives), and the group
    /// when it is new (its writer is to be started).
    fn join(&self, member: &Arc<T>) -> (Seat, Option<Group<T>>) {
        let mut groups = self.groups.lock();
        let mut created = None;
        loop {
            let first = self.open.lock().first().copied();
            let Some(at) = first else {
                let group: Group<T> = Arc::default();
                groups.push(group.clone());
                created = Some(group);
                self.open.lock().insert(groups.len() - 1);
                continue;
            };
            #[cfg(test)]
            self.looked
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut members = groups[at].lock();
            // Held while the group is judged: a member that goes meanwhile
            // marks it open again after, not before.
            let mut open = self.open.lock();
            if members.len() >= GROUP_SIZE {
                members.retain(|m| m.strong_count() > 0);
            }
            let seated = members.len() < GROUP_SIZE;
            if seated {
                members.push(Arc::downgrade(member));
            }
            if members.len() >= GROUP_SIZE {
                open.remove(&at);
            }
            if seated {
                let seat = Seat {
                    open: self.open.clone(),
                    group: at,
                };
                return (seat, created);
            }
        }
    }

    #[cfg(test)]
    fn groups(&self) -> usize {
        self.groups.lock().len()
    }
}

/// A sale's writer tasks, each with a group of sockets.
pub struct Writers {
    seating: Seating<Outlet>,
    /// At most one stock frame per socket per this long.
    gap: Option<Duration>,
}

impl Writers {
    /// Writers that hand each socket a stock frame per change, or with a
    /// `gap` at most one per gap: the newest of the changes since.
    pub fn new(gap: Option<Duration>) -> Self {
        Self {
            seating: Seating::default(),
            gap,
        }
    }

    /// Adds a socket to a group with room, starting a new group's writer
    /// when every group is full. A writer ends with the sale's feed.
    pub fn join(&self, outlet: &Arc<Outlet>, stock: &watch::Receiver<Option<Arc<Update>>>) {
        let (seat, created) = self.seating.join(outlet);
        let _ = outlet.seat.set(seat);
        if let Some(group) = created {
            // Out of tokio's cooperative budget: a writer never waits
            // within a pass, and a budget spent halfway would leave the
            // rest of its group to their own tasks.
            tokio::spawn(tokio::task::unconstrained(write_group(
                group,
                stock.clone(),
                self.gap,
            )));
        }
    }
}

/// Offers `update` to each socket of the group.
fn offer_all(group: &Group<Outlet>, update: &Update) {
    let members: Vec<Arc<Outlet>> = {
        let mut members = group.lock();
        members.retain(|m| m.strong_count() > 0);
        members.iter().filter_map(Weak::upgrade).collect()
    };
    for outlet in members {
        outlet.offer(update);
    }
}

/// When a writer hands its group a stock frame: each change as it comes,
/// or with a gap, at most one per gap. The first change after a quiet
/// spell goes at once; one that comes sooner than a gap after the last
/// frame waits for it, and only the newest of those that waited goes (a
/// stock frame carries whole counts, so the skipped ones lose nothing).
/// A resync never waits, and voids the change waiting: each socket sends
/// the sale afresh.
struct Pace {
    gap: Option<Duration>,
    /// When the next stock frame may go.
    due: Instant,
    waiting: Option<Arc<Update>>,
}

impl Pace {
    fn new(gap: Option<Duration>, now: Instant) -> Self {
        Self {
            gap,
            due: now,
            waiting: None,
        }
    }

    /// `update` came: what to hand the group now, if anything.
    fn came(&mut self, update: Arc<Update>, now: Instant) -> Option<Arc<Update>> {
        let change = matches!(*update, Update::Change { .. });
        if change && self.gap.is_some() && now < self.due {
            self.waiting = Some(update);
            return None;
        }
        self.waiting = None;
        Some(self.handed(update, now))
    }

    /// When the change waiting may go.
    fn waiting_until(&self) -> Option<Instant> {
        self.waiting.as_ref().map(|_| self.due)
    }

    /// The change waiting, now that its time has come.
    fn take(&mut self, now: Instant) -> Option<Arc<Update>> {
        let update = self.waiting.take()?;
        Some(self.handed(update, now))
    }

    fn handed(&mut self, update: Arc<Update>, now: Instant) -> Arc<Update> {
        if let (Some(gap), Update::Change { .. }) = (self.gap, &*update) {
            self.due = now + gap;
        }
        update
    }
}

/// Hands the group the sale's changes, paced by `gap`.
async fn write_group(
    group: Group<Outlet>,
    mut stock: watch::Receiver<Option<Arc<Update>>>,
    gap: Option<Duration>,
) {
    stock.borrow_and_update();
    let mut pace = Pace::new(gap, Instant::now());
    loop {
        let waiting_until = pace.waiting_until();
        let update = tokio::select! {
            changed = stock.changed() => {
                if changed.is_err() {
                    return;
                }
                let Some(update) = stock.borrow_and_update().clone() else {
                    continue;
                };
                pace.came(update, Instant::now())
            }
            // A timer only while a change waits: none per change otherwise.
            () = async {
                match waiting_until {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => pace.take(Instant::now()),
        };
        if let Some(update) = update {
            offer_all(&group, &update);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    type Seated = Vec<Option<(Arc<u32>, Seat)>>;

    /// `n` members seated, each kept with its seat (`None` once gone).
    fn seat_many(seating: &Seating<u32>, n: usize) -> Seated {
        (0..n as u32)
            .map(|i| {
                let member = Arc::new(i);
                let (seat, _) = seating.join(&member);
                Some((member, seat))
            })
            .collect()
    }

    /// Places freed by members gone are taken again, wherever they are,
    /// and no group is added while one has room.
    #[test]
    fn freed_places_are_taken_again_and_groups_stay_few() {
        let seating: Seating<u32> = Seating::default();
        let mut members = seat_many(&seating, 3 * GROUP_SIZE);
        assert_eq!(seating.groups(), 3);
        // Members leave from the first and the second group.
        for i in [3, 7, GROUP_SIZE + 5] {
            members[i] = None;
        }
        for i in 0..3 {
            let member = Arc::new(1000 + i);
            let (seat, created) = seating.join(&member);
            assert!(created.is_none(), "a group was added while one had room");
            assert!(seat.group < 2, "seated in group {}", seat.group);
            members.push(Some((member, seat)));
        }
        // Every group is full again: the next member starts a fourth.
        let member = Arc::new(2000);
        let (seat, created) = seating.join(&member);
        assert!(created.is_some());
        assert_eq!((seat.group, seating.groups()), (3, 4));
    }

    /// Members come and go among many full groups: each join looks at a
    /// group or two, however many there are.
    #[test]
    fn a_join_after_a_leave_looks_at_few_groups() {
        let seating: Seating<u32> = Seating::default();
        let mut members = seat_many(&seating, 40 * GROUP_SIZE);
        for round in 0..20 {
            // One leaves from an early group; two join.
            members[round * GROUP_SIZE] = None;
            for _ in 0..2 {
                let before = seating.looked.load(Ordering::Relaxed);
                let member = Arc::new(5000);
                let (seat, _) = seating.join(&member);
                let looked = seating.looked.load(Ordering::Relaxed) - before;
                assert!(looked <= 2, "a join looked at {looked} groups");
                members.push(Some((member, seat)));
            }
        }
    }

    /// A join looks at groups from the first that may have room, not from
    /// the first group: full groups before it are not searched again.
    #[test]
    fn a_join_starts_at_the_first_group_with_room() {
        let seating: Seating<u32> = Seating::default();
        let kept = seat_many(&seating, 10 * GROUP_SIZE + 1);
        assert_eq!(seating.open.lock().first(), Some(&10));
        let last = kept.last().and_then(Option::as_ref);
        assert_eq!(last.map(|(_, s)| s.group), Some(10));
    }

    fn change(seq: i64) -> Arc<Update> {
        let change = serde_json::from_value(serde_json::json!({
            "seq": seq, "kind": "reserved", "ts": 1, "available": 1, "held": 0,
            "sold": 0, "status": "active",
        }))
        .unwrap();
        Arc::new(Update::Change {
            change,
            stock_frame: String::new(),
        })
    }

    fn seq(update: Option<Arc<Update>>) -> Option<i64> {
        match update.as_deref() {
            Some(Update::Change { change, .. }) => Some(change.seq),
            Some(Update::Resync) => Some(-1),
            None => None,
        }
    }

    /// Without a gap every change goes as it comes.
    #[test]
    fn without_a_gap_every_change_goes_at_once() {
        let t0 = Instant::now();
        let mut pace = Pace::new(None, t0);
        for n in 1..=3 {
            assert_eq!(seq(pace.came(change(n), t0)), Some(n));
        }
        assert_eq!(pace.waiting_until(), None);
    }

    /// With a gap: the first change of a quiet spell at once, the ones
    /// that come within the gap wait, and only the newest goes when the
    /// gap has passed; then quiet again, the next goes at once.
    #[test]
    fn with_a_gap_a_quiet_spells_first_change_goes_at_once_and_a_bursts_newest_after_the_gap() {
        let gap = Duration::from_millis(200);
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut pace = Pace::new(Some(gap), t0);
        assert_eq!(seq(pace.came(change(1), t0 + ms(5))), Some(1));
        assert_eq!(seq(pace.came(change(2), t0 + ms(50))), None);
        assert_eq!(seq(pace.came(change(3), t0 + ms(90))), None);
        assert_eq!(pace.waiting_until(), Some(t0 + ms(205)));
        assert_eq!(seq(pace.take(t0 + ms(205))), Some(3));
        assert_eq!(pace.waiting_until(), None);
        // The next frame may go a gap after that one.
        assert_eq!(seq(pace.came(change(4), t0 + ms(300))), None);
        assert_eq!(seq(pace.take(t0 + ms(405))), Some(4));
        // Quiet for longer than the gap: at once.
        assert_eq!(seq(pace.came(change(5), t0 + ms(700))), Some(5));
    }

    /// A resync goes at once, and the change waiting goes with it (each
    /// socket sends the sale afresh).
    #[test]
    fn a_resync_never_waits_and_voids_the_change_waiting() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut pace = Pace::new(Some(ms(200)), t0);
        assert_eq!(seq(pace.came(change(1), t0)), Some(1));
        assert_eq!(seq(pace.came(change(2), t0 + ms(10))), None);
        assert_eq!(
            seq(pace.came(Arc::new(Update::Resync), t0 + ms(20))),
            Some(-1)
        );
        assert_eq!(pace.waiting_until(), None);
        assert_eq!(seq(pace.take(t0 + ms(300))), None);
    }
}
