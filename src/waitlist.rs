//! The FIFO waiting list of a sale. Units returned while people wait go to
//! the head of the line in the same Lua step that returns them (see
//! `fd_promote` in `lua/prelude.lua` for the partial-fit rule); this module
//! joins, reads and leaves the line.

use bson::DateTime as BsonDateTime;
use chrono::{DateTime, Utc};
use poem_openapi::{Enum, Object};
use serde::Deserialize;

use crate::{
    engine::check_quantity,
    error::ApiError,
    sale::is_sale_id,
    state::AppState,
    store::{
        StoreError,
        redis::{SaleKeys, run_json},
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

#[derive(Debug, Clone, Object)]
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

#[derive(Deserialize)]
struct JoinReply {
    r: String,
    position: Option<i64>,
    rid: Option<String>,
    bought: Option<i64>,
    limit: Option<i64>,
}

/// Whether a join put the buyer in line now (201) or found them there (200).
pub enum Joined {
    New(WaitView),
    Existing(WaitView),
}

impl AppState {
    pub async fn join_waitlist(
        &self,
        sale_id: &str,
        buyer: &str,
        quantity: i64,
    ) -> Result<Joined, ApiError> {
        if !is_sale_id(sale_id) {
            return Err(ApiError::not_found("sale"));
        }
        check_quantity(quantity)?;
        let keys = SaleKeys::new(sale_id);
        let reply: JoinReply = self
            .with_sale_state(
                sale_id,
                |r: &JoinReply| r.r == "missing",
                || async {
                    let mut conn = self.redis.clone();
                    run_json(
                        &mut conn,
                        self.scripts
                            .waitlist_join
                            .key(keys.sale())
                            .key(keys.wait())
                            .key(keys.waitq())
                            .key(keys.bought())
                            .key(keys.holding())
                            .key(keys.promoted())
                            .key(keys.events())
                            .arg(keys.channel())
                            .arg(buyer)
                            .arg(quantity),
                    )
                    .await
                },
            )
            .await?;
        match reply.r.as_str() {
            "joined" => Ok(Joined::New(WaitView::waiting(reply.position.unwrap_or(0)))),
            "waiting" => Ok(Joined::Existing(WaitView::waiting(
                reply.position.unwrap_or(0),
            ))),
            "promoted" => Ok(Joined::Existing(
                self.waitlist_status(sale_id, buyer).await?,
            )),
            "has_hold" => Err(ApiError::conflict(
                "reservation_exists",
                format!(
                    "you hold units of this sale ({}); confirm or cancel them first",
                    reply.rid.unwrap_or_default()
                ),
            )),
            "stock_available" => Err(ApiError::conflict(
                "stock_available",
                "units are free: reserve them instead of waiting",
            )),
            "sold_out" => Err(ApiError::conflict(
                "sold_out",
                "every unit is sold; the waiting list is closed",
            )),
            "limit_exceeded" => Err(ApiError::conflict(
                "limit_exceeded",
                format!(
                    "the limit is {} per buyer and you have bought {}",
                    reply.limit.unwrap_or_default(),
                    reply.bought.unwrap_or_default()
                ),
            )),
            "disabled" => Err(ApiError::conflict(
                "waitlist_disabled",
                "this sale has no waiting list",
            )),
            "upcoming" => Err(ApiError::conflict(
                "sale_not_active",
                "the sale has not started yet",
            )),
            "ended" => Err(ApiError::conflict("sale_not_active", "the sale has ended")),
            "missing" => Err(ApiError::Unavailable("sale state is being rebuilt".into())),
            other => Err(anyhow::anyhow!("waitlist_join: unexpected reply {other}").into()),
        }
    }

    pub async fn waitlist_status(&self, sale_id: &str, buyer: &str) -> Result<WaitView, ApiError> {
        if !is_sale_id(sale_id) {
            return Err(ApiError::not_found("sale"));
        }
        let keys = SaleKeys::new(sale_id);
        let mut conn = self.redis.clone();
        let (rank, promoted, sale): (Option<i64>, Option<String>, Vec<Option<i64>>) = redis::pipe()
            .zrank(keys.wait(), buyer)
            .hget(keys.promoted(), buyer)
            .cmd("HMGET")
            .arg(keys.sale())
            .arg(&["wl_closed", "closed", "ends", "total"])
            .query_async(&mut conn)
            .await
            .map_err(StoreError::from)?;
        if sale[3].is_none() {
            // Unknown here: either no such sale, or Redis lost it (and with
            // it the line).
            self.find_sale(sale_id).await?;
            return Ok(WaitView::bare(WaitStatus::NotListed));
        }
        if let Some(rid) = promoted {
            let expires: Option<i64> = redis::cmd("HGET")
                .arg(keys.hold(&rid))
                .arg("expires")
                .query_async(&mut conn)
                .await
                .map_err(StoreError::from)?;
            return Ok(WaitView {
                status: WaitStatus::Promoted,
                position: None,
                reservation_id: Some(rid),
                expires_at: expires.map(|ms| BsonDateTime::from_millis(ms).to_chrono()),
            });
        }
        let Some(rank) = rank else {
            return Ok(WaitView::bare(WaitStatus::NotListed));
        };
        let now = Utc::now().timestamp_millis();
        let closed = sale[0] == Some(1) || sale[1] == Some(1) || sale[2].is_some_and(|e| now >= e);
        if closed {
            return Ok(WaitView::bare(WaitStatus::Closed));
        }
        Ok(WaitView::waiting(rank + 1))
    }

    /// Leaves the line; true when the buyer was in it.
    pub async fn leave_waitlist(&self, sale_id: &str, buyer: &str) -> Result<bool, ApiError> {
        if !is_sale_id(sale_id) {
            return Err(ApiError::not_found("sale"));
        }
        let keys = SaleKeys::new(sale_id);
        let mut conn = self.redis.clone();
        let reply: JoinReply = run_json(
            &mut conn,
            self.scripts
                .waitlist_leave
                .key(keys.sale())
                .key(keys.wait())
                .key(keys.waitq())
                .key(keys.events())
                .arg(keys.channel())
                .arg(buyer),
        )
        .await?;
        match reply.r.as_str() {
            "left" => Ok(true),
            "not_listed" => Ok(false),
            _ => {
                self.find_sale(sale_id).await?;
                Ok(false)
            }
        }
    }
}
