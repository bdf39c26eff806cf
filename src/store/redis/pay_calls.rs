//! The scripts past the hold: a hold asks to pay, its payment settles,
//! and a cancelled order's units come back.

use std::time::Duration;

use super::Redis;
use crate::{
    ids::ReservationId,
    store::{
        StoreError,
        keys::SaleKeys,
        scripts::{PayBeginReply, PaySettleReply, ReturnReply},
    },
};

/// How a payment ended, as the provider reports it to the settling script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentEnd {
    Succeeded,
    /// Failed or canceled: the hold's units go back.
    Failed,
}

impl Redis {
    /// Moves a held hold to paying with `payment` as its intent (a repeat
    /// returns the intent made before).
    pub async fn pay_begin(
        &self,
        rid: &ReservationId,
        buyer: &str,
        payment: &str,
    ) -> Result<PayBeginReply, StoreError> {
        let keys = SaleKeys::new(rid.sale());
        let mut call = self.scripts.pay_begin.on(&keys);
        call.arg(rid.as_str()).arg(buyer).arg(payment);
        self.run(&call).await
    }

    /// Gives a cancelled order's units back: see `lua/return_order.lua`.
    pub async fn return_order(
        &self,
        order: &ReservationId,
        buyer: &str,
        quantity: i64,
        units: &[i64],
    ) -> Result<ReturnReply, StoreError> {
        let keys = SaleKeys::new(order.sale());
        let mut call = self.scripts.return_order.on(&keys);
        let units: Vec<String> = units.iter().map(i64::to_string).collect();
        call.arg(self.announce(&keys))
            .arg(order.as_str())
            .arg(buyer)
            .arg(quantity)
            .arg(units.join(","));
        self.run(&call).await
    }

    /// Settles a hold's payment: see `lua/pay_settle.lua`.
    pub async fn pay_settle(
        &self,
        rid: &ReservationId,
        payment: &str,
        end: PaymentEnd,
        lease: Duration,
    ) -> Result<PaySettleReply, StoreError> {
        let keys = SaleKeys::new(rid.sale());
        let mut call = self.scripts.pay_settle.on(&keys);
        call.arg(self.announce(&keys))
            .arg(rid.as_str())
            .arg(payment)
            .arg(match end {
                PaymentEnd::Succeeded => "succeeded",
                PaymentEnd::Failed => "failed",
            })
            .arg(lease.as_millis() as u64);
        self.run(&call).await
    }
}
