//! The FIFO waiting list of a sale. Units returned while people wait go to
//! the head of the line in the same Lua step that returns them (see
//! `fd_promote` in `lua/prelude.lua` for the partial-fit rule); this
//! service joins, reads and leaves the line.

use bson::DateTime as BsonDateTime;
use chrono::{DateTime, Utc};
use poem_openapi::{Enum, Object};

use crate::{
    error::{ApiError, ErrorCode},
    holds::check_quantity,
    ids::SaleId,
    recovery::Recovery,
    store::{
        Store,
        redis::LinePlace,
        scripts::{JoinReply, LeaveReply, PlaceReply},
    },
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum WaitStatus {
    /// In line; `position` 1 is next.
    Waiting,
    /// Units came back and a hold was made for the buyer: `reservation_id`.
    Promoted,
    /// The line is closed: every unit is sold, or the sale ended.
    Closed,
    /// Not in this sale's line.
    NotListed,
}

/// Fields that do not apply to the status are absent.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct WaitView {
    pub status: WaitStatus,
    /// 1-based place in line, while waiting.
    pub position: Option<i64>,
    /// The hold made from the line, once promoted.
    pub reservation_id: Option<String>,
    /// Deadline of that hold.
    pub expires_at: Option<DateTime<Utc>>,
}

impl WaitView {
    fn waiting(position: i64) -> Self {
        Self {
            status: WaitStatus::Waiting,
            position: Some(position),
            reservation_id: None,
            expires_at: None,
        }
    }

    fn bare(status: WaitStatus) -> Self {
        Self {
            status,
            position: None,
            reservation_id: None,
            expires_at: None,
        }
    }
}

/// A hold made for a buyer from the line.
#[derive(Debug, Clone)]
pub struct Promotion {
    pub reservation_id: String,
    pub quantity: i64,
    pub expires_at: DateTime<Utc>,
}

/// Whether a join put the buyer in line now (201) or found them there (200).
pub enum Joined {
    New(WaitView),
    Existing(WaitView),
}

#[derive(Clone)]
pub struct Waitlist {
    store: Store,
    recovery: Recovery,
}

impl Waitlist {
    pub fn new(store: Store, recovery: Recovery) -> Self {
        Self { store, recovery }
    }

    pub async fn join(
        &self,
        sale: &SaleId,
        buyer: &str,
        quantity: i64,
    ) -> Result<Joined, ApiError> {
        check_quantity(quantity)?;
        let reply = self
            .recovery
            .with_sale(sale, || {
                self.store.redis.waitlist_join(sale, buyer, quantity)
            })
            .await?;
        let refused = |code, message: String| Err(ApiError::new(code, message));
        match reply {
            JoinReply::Joined { position } => Ok(Joined::New(WaitView::waiting(position))),
            JoinReply::NotAdmitted => {
                refused(ErrorCode::NotAdmitted, crate::lobby::NOT_ADMITTED.into())
            }
            JoinReply::Waiting { position } => Ok(Joined::Existing(WaitView::waiting(position))),
            JoinReply::Promoted { .. } => Ok(Joined::Existing(self.place(sale, buyer).await?)),
            JoinReply::HasHold { rid } => refused(
                ErrorCode::ReservationExists,
                format!("you hold units of this sale ({rid}); confirm or cancel them first"),
            ),
            JoinReply::StockAvailable => refused(
                ErrorCode::StockAvailable,
                "units are free: reserve them instead of waiting".into(),
            ),
            JoinReply::SoldOut => refused(
                ErrorCode::SoldOut,
                "every unit is sold; the waiting list is closed".into(),
            ),
            JoinReply::LimitExceeded { bought, limit } => refused(
                ErrorCode::LimitExceeded,
                format!("the limit is {limit} per buyer and you have bought {bought}"),
            ),
            JoinReply::Disabled => refused(
                ErrorCode::WaitlistDisabled,
                "this sale has no waiting list".into(),
            ),
            JoinReply::Upcoming => refused(
                ErrorCode::SaleNotActive,
                "the sale has not started yet".into(),
            ),
            JoinReply::Ended => refused(ErrorCode::SaleNotActive, "the sale has ended".into()),
            JoinReply::Missing => Err(ApiError::rebuilding()),
        }
    }

    /// The buyer's place in line, or the hold made for them.
    pub async fn place(&self, sale: &SaleId, buyer: &str) -> Result<WaitView, ApiError> {
        let reply = self
            .recovery
            .with_sale(sale, || self.store.redis.waitlist_place(sale, buyer))
            .await?;
        Ok(match reply {
            PlaceReply::Promoted { rid, expires, .. } => WaitView {
                status: WaitStatus::Promoted,
                position: None,
                reservation_id: Some(rid),
                expires_at: Some(BsonDateTime::from_millis(expires).to_chrono()),
            },
            PlaceReply::Waiting { position } => WaitView::waiting(position),
            PlaceReply::Closed => WaitView::bare(WaitStatus::Closed),
            PlaceReply::NotListed => WaitView::bare(WaitStatus::NotListed),
            PlaceReply::Missing => return Err(ApiError::rebuilding()),
        })
    }

    /// Leaves the line; true when the buyer was in it.
    pub async fn leave(&self, sale: &SaleId, buyer: &str) -> Result<bool, ApiError> {
        let reply = self
            .recovery
            .with_sale(sale, || self.store.redis.waitlist_leave(sale, buyer))
            .await?;
        match reply {
            LeaveReply::Left => Ok(true),
            LeaveReply::NotListed => Ok(false),
            LeaveReply::Missing => Err(ApiError::rebuilding()),
        }
    }

    /// The buyer's promotion, while its hold is live.
    pub async fn live_promotion(
        &self,
        sale: &SaleId,
        buyer: &str,
    ) -> Result<Option<Promotion>, ApiError> {
        Ok(match self.store.redis.waitlist_place(sale, buyer).await? {
            PlaceReply::Promoted { rid, expires, qty } => Some(Promotion {
                reservation_id: rid,
                quantity: qty,
                expires_at: BsonDateTime::from_millis(expires).to_chrono(),
            }),
            _ => None,
        })
    }

    /// The buyer's ticket and position, as the live feed tracks them.
    pub async fn line_place(&self, sale: &SaleId, buyer: &str) -> LinePlace {
        self.store
            .redis
            .line_place(sale, buyer)
            .await
            .unwrap_or_default()
    }
}
