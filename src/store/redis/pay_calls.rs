//! The payment scripts: a hold asks to pay, and its payment settles.

use std::time::Duration;

use super::Redis;
use crate::{
    ids::ReservationId,
    store::{
        StoreError,
        keys::SaleKeys,
        scripts::{PayBeginReply, PaySettleReply},
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
