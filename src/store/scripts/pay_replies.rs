//! The payment scripts' replies.

use serde::Deserialize;

use super::replies::{from_csv, from_text};
use crate::store::keys::HoldState;

#[derive(Debug, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum PayBeginReply {
    /// The hold is paying: this intent, made now (`first`) or before.
    Intent {
        payment: String,
        qty: i64,
        #[serde(deserialize_with = "from_text")]
        price: i64,
        currency: String,
        expires: i64,
        first: bool,
    },
    /// The sale takes no payment: the buyer confirms.
    NoPayment,
    Missing,
    NotFound,
    Expired,
    Confirming,
    Confirmed,
    Cancelled,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum PaySettleReply {
    /// The money won: the hold is confirming, and its order is written
    /// next, carrying the payment.
    Confirming {
        user: String,
        qty: i64,
        #[serde(deserialize_with = "from_csv")]
        units: Vec<i64>,
        #[serde(deserialize_with = "from_csv")]
        slots: Vec<i64>,
        #[serde(deserialize_with = "from_text")]
        price: i64,
        currency: String,
        lease: i64,
    },
    /// Confirmed before (by an earlier delivery).
    Confirmed,
    /// The hold ended before the money came (now, at its deadline, or
    /// before): no order, a refund is due.
    Late { state: HoldState },
    /// A failed payment gave the hold's units back.
    Released,
    /// A failure for a hold that no longer waits: nothing changes.
    Unchanged { state: HoldState },
    /// Redis has no such hold (or no such sale): MongoDB decides.
    Missing,
}
