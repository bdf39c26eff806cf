//! Which message types some webhook endpoint wants, as this instance last
//! read them: a message nobody wants is not written to the outbox at all,
//! which spares MongoDB two writes per order when no endpoint listens for
//! `order.confirmed`.
//!
//! Each instance reads the endpoints at least every [`INTEREST_REFRESH`]:
//! every full read of them (the webhook deliverer's, five times a second)
//! is knowledge, and the interest reads them itself only when no read
//! began within that time. Knowledge older than [`INTEREST_FRESH`]
//! (MongoDB slow or away, or not read yet) counts as wanting everything.
//! So every instance stages an endpoint's types from [`INTEREST_SETTLE`]
//! after the endpoint was written, and the API answers a new endpoint only
//! then: every message whose cause comes after that answer is in the
//! outbox.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::{Message, Mongo, messages::MessageType};
use crate::store::StoreError;

pub const INTEREST_REFRESH: Duration = Duration::from_millis(250);
pub const INTEREST_FRESH: Duration = Duration::from_secs(1);
/// From an endpoint's write until every instance stages its types: a
/// read that began after the write is fresh by then.
pub const INTEREST_SETTLE: Duration = Duration::from_millis(1500);

/// The types wanted, with when the read that found them began.
#[derive(Default)]
pub struct OutboxInterest {
    known: Mutex<Option<(Instant, HashSet<MessageType>)>>,
}

impl OutboxInterest {
    /// Whether a message of this type must be written.
    pub fn wants(&self, kind: MessageType) -> bool {
        match &*self.known.lock() {
            Some((read_at, types)) if read_at.elapsed() < INTEREST_FRESH => types.contains(&kind),
            _ => true,
        }
    }

    /// How long until a read is due: none began within [`INTEREST_REFRESH`]
    /// of `now` (zero), or the time left until one will not have.
    fn read_due_in(&self, now: Instant) -> Duration {
        match &*self.known.lock() {
            Some((read_at, _)) => {
                INTEREST_REFRESH.saturating_sub(now.saturating_duration_since(*read_at))
            }
            None => Duration::ZERO,
        }
    }

    pub(super) fn learn(&self, read_at: Instant, types: HashSet<MessageType>) {
        let mut known = self.known.lock();
        // A slow read that began before a later one does not overwrite it.
        if known.as_ref().is_none_or(|(at, _)| *at <= read_at) {
            *known = Some((read_at, types));
        }
    }

    /// The messages of the types wanted.
    pub fn filter<'a>(&self, messages: &'a [Message]) -> Vec<&'a Message> {
        messages.iter().filter(|m| self.wants(m.kind)).collect()
    }
}

impl Mongo {
    /// Whether a message of this type must be written: a writer that
    /// builds many (an order batch) asks before it builds them.
    pub fn wants_message(&self, kind: MessageType) -> bool {
        self.interest.wants(kind)
    }

    /// Reads which types the endpoints want (a disabled endpoint still
    /// wants its messages: they wait for it). Any read of the endpoints
    /// teaches the interest (see `Mongo::endpoints`).
    pub async fn refresh_outbox_interest(&self) -> Result<(), StoreError> {
        self.endpoints().await.map(|_| ())
    }

    /// Keeps the interest fresh until shutdown, reading the endpoints
    /// whenever no other read of them began within [`INTEREST_REFRESH`].
    pub async fn keep_outbox_interest(self, shutdown: CancellationToken) {
        loop {
            let mut wait = self.interest.read_due_in(Instant::now());
            if wait.is_zero() {
                if let Err(err) = self.refresh_outbox_interest().await {
                    tracing::debug!(error = %err, "webhook endpoints unreadable; every message is written");
                }
                wait = INTEREST_REFRESH;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fresh_knowledge_spares_a_message() {
        let interest = OutboxInterest::default();
        assert!(
            interest.wants(MessageType::OrderConfirmed),
            "nothing read yet"
        );
        let now = Instant::now();
        interest.learn(now, HashSet::from([MessageType::SaleEnded]));
        assert!(!interest.wants(MessageType::OrderConfirmed));
        assert!(interest.wants(MessageType::SaleEnded));
        // An older read finishing late changes nothing.
        interest.learn(now - Duration::from_millis(10), HashSet::new());
        assert!(interest.wants(MessageType::SaleEnded));
        // Stale knowledge wants everything.
        let stale = OutboxInterest::default();
        stale.learn(Instant::now() - INTEREST_FRESH, HashSet::new());
        assert!(stale.wants(MessageType::OrderConfirmed));
    }

    #[test]
    fn a_read_is_due_once_none_began_within_the_refresh() {
        let interest = OutboxInterest::default();
        let now = Instant::now();
        assert_eq!(
            interest.read_due_in(now),
            Duration::ZERO,
            "nothing read yet"
        );
        interest.learn(now - Duration::from_millis(100), HashSet::new());
        assert_eq!(
            interest.read_due_in(now),
            INTEREST_REFRESH - Duration::from_millis(100)
        );
        assert_eq!(interest.read_due_in(now + INTEREST_REFRESH), Duration::ZERO);
    }
}
