//! A socket's view of its sale's lobby: every watcher gets the lobby's
//! figures (at most once a second, as the keeper publishes them), and a
//! buyer with a token gets `lobby` frames when their own status or place
//! changes. A place is worked out from the figures without asking Redis:
//! buyers leave the lobby only from its head, so a buyer's place is their
//! index in the order (read once) minus the buyers let in since. Redis is
//! asked again only at a turn: the start, their admission, a rebuild.

use std::time::{Duration, Instant};

use poem_openapi::types::ToJSON;
use serde_json::json;

use super::hub::LobbyFigures;
use crate::{
    ids::SaleId,
    lobby::{Lobby, LobbyEntry, LobbyStatus, eta},
    store::scripts::{LobbyPlace, LobbyState},
};

/// What one socket knows of the lobby and of its buyer's place.
#[derive(Debug, Default)]
pub struct LobbyTrack {
    /// The sale has a lobby (learned at connect).
    pub active: bool,
    /// The buyer's 0-based index among everyone who waited: their rank
    /// when read plus the buyers let in by then. Known while they wait.
    index: Option<i64>,
    rate: i64,
    status: Option<LobbyStatus>,
    position: Option<i64>,
    /// When the buyer's last frame went out.
    told_at: Option<Instant>,
    /// A new place that came within a second of the last frame: it goes
    /// out when the second is up (unless a newer one replaces it).
    held: Option<LobbyEntry>,
}

/// A buyer hears of a new place at most this often (a new status at once).
const PLACE_EVERY: Duration = Duration::from_secs(1);

impl LobbyTrack {
    /// Reads the lobby (and the buyer's place) at connect or after a
    /// rebuild; returns the frames to send. Not a lobby sale: nothing.
    pub async fn read(
        &mut self,
        lobby: &Lobby,
        sale: &SaleId,
        buyer: Option<&str>,
    ) -> Vec<serde_json::Value> {
        let Ok(place) = lobby.place(sale, buyer.unwrap_or("")).await else {
            return Vec::new();
        };
        self.active = true;
        let mut frames = vec![json!({
            "type": "lobby_figures", "lobby_length": place.length,
            "admitted": place.admitted_count, "sold_out": place.sold_out,
            "started": place.started, "ts": place.now,
        })];
        if buyer.is_some() {
            frames.extend(self.place(&place));
        }
        frames
    }

    /// Takes a fresh place; a frame when the status or position changed.
    fn place(&mut self, place: &LobbyPlace) -> Option<serde_json::Value> {
        self.rate = place.rate;
        self.index = match (place.state, place.rank) {
            (LobbyState::Waiting, Some(rank)) => Some(rank + place.admitted_count),
            _ => None,
        };
        let entry = LobbyEntry::of(place);
        self.tell(entry)
    }

    fn tell(&mut self, entry: LobbyEntry) -> Option<serde_json::Value> {
        if self.status == Some(entry.status) && self.position == entry.position {
            self.held = None;
            return None;
        }
        let moved_only = self.status == Some(entry.status);
        if moved_only && self.told_at.is_some_and(|at| at.elapsed() < PLACE_EVERY) {
            self.held = Some(entry);
            return None;
        }
        self.held = None;
        self.told_at = Some(Instant::now());
        self.status = Some(entry.status);
        self.position = entry.position;
        let mut frame = entry.to_json()?;
        frame["type"] = json!("lobby");
        Some(frame)
    }

    /// New figures: the buyer's frame, if their place or status changed.
    /// `reread` is set when only Redis can say (their turn came, the sale
    /// started).
    pub fn figures(&mut self, figures: &LobbyFigures) -> Update {
        let waiting = matches!(self.status, Some(LobbyStatus::Lobby | LobbyStatus::Queued));
        if !waiting {
            return Update::None;
        }
        if figures.sold_out {
            let entry = LobbyEntry {
                status: LobbyStatus::SoldOut,
                joined_at: None,
                position: None,
                eta_seconds: None,
                admission_expires_at: None,
            };
            return self.tell(entry).map_or(Update::None, Update::Frame);
        }
        if !figures.started {
            return Update::None;
        }
        match (self.status, self.index) {
            (Some(LobbyStatus::Queued), Some(index)) => {
                let position = index - figures.admitted + 1;
                if position <= 0 {
                    return Update::Reread;
                }
                let entry = LobbyEntry {
                    status: LobbyStatus::Queued,
                    joined_at: None,
                    position: Some(position),
                    eta_seconds: Some(eta(position, self.rate)),
                    admission_expires_at: None,
                };
                self.tell(entry).map_or(Update::None, Update::Frame)
            }
            // The start came (the draw places them now), or the place is
            // unknown.
            _ => Update::Reread,
        }
    }

    /// When a held place may go out, if one is held.
    pub fn held_until(&self) -> Option<tokio::time::Instant> {
        self.held.as_ref()?;
        let told = self.told_at?;
        Some((told + PLACE_EVERY).into())
    }

    /// The held place, now that its second is up.
    pub fn release(&mut self) -> Option<serde_json::Value> {
        let entry = self.held.take()?;
        self.told_at = None;
        self.tell(entry)
    }

    /// A fresh place after a `Reread`.
    pub async fn reread(
        &mut self,
        lobby: &Lobby,
        sale: &SaleId,
        buyer: &str,
    ) -> Option<serde_json::Value> {
        let place = lobby.place(sale, buyer).await.ok()?;
        self.place(&place)
    }
}

/// What new figures mean for a buyer's socket.
#[derive(Debug, PartialEq)]
pub enum Update {
    None,
    Frame(serde_json::Value),
    Reread,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(position: i64) -> LobbyEntry {
        LobbyEntry {
            status: LobbyStatus::Queued,
            joined_at: None,
            position: Some(position),
            eta_seconds: Some(position),
            admission_expires_at: None,
        }
    }

    #[test]
    fn a_place_within_the_second_is_held_not_lost_and_a_newer_one_replaces_it() {
        let mut track = LobbyTrack::default();
        assert!(track.tell(queued(10)).is_some(), "the first place goes out");
        assert!(track.tell(queued(8)).is_none(), "too soon");
        assert!(track.held_until().is_some(), "held, not dropped");
        assert!(track.tell(queued(6)).is_none());
        let frame = track.release().expect("the held place goes out");
        assert_eq!(frame["position"], 6, "the newest place");
        assert!(track.held_until().is_none());
        // A new status is never held.
        let admitted = LobbyEntry {
            status: LobbyStatus::Admitted,
            position: None,
            eta_seconds: None,
            ..queued(0)
        };
        assert!(track.tell(admitted).is_some());
    }
}
