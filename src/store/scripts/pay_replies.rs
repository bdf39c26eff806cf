//! The replies of the scripts past the hold: payments, and a cancelled
//! order's units coming back.

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

#[derive(Debug, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum ReturnReply {
    /// The units are back (to the line first).
    Returned,
    /// They came back before (a repeat, or a rebuild read the order
    /// cancelled).
    Already,
    /// A rebuild holds the sale: try again in a moment.
    Rebuilding,
    /// Redis has no such sale: its rebuild reads the order cancelled.
    Missing,
}
