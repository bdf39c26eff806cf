//! The sales this instance's background work covers: the reaper expires
//! their holds and the persister copies their changes. The list comes from
//! MongoDB every few seconds, in a task of its own, so a stalled MongoDB
//! never holds up expiry; a hold made on a sale not covered yet adds it at
//! once and wakes the reaper, so a new sale's first holds meet the 1 s
//! expiry target without waiting for the next refresh.

use std::collections::BTreeSet;

use parking_lot::Mutex;

use tokio::sync::Notify;

use crate::ids::SaleId;

#[derive(Default)]
pub struct Coverage {
    sales: Mutex<BTreeSet<SaleId>>,
    wake: Notify,
}

impl Coverage {
    /// A hold was made on `sale`.
    pub fn hold_made(&self, sale: &SaleId) {
        let mut sales = self.sales.lock();
        if sales.insert(sale.clone()) {
            self.wake.notify_one();
        }
    }

    /// The sales covered from now on (what MongoDB lists as recent).
    pub fn replace(&self, sales: impl IntoIterator<Item = SaleId>) {
        *self.sales.lock() = sales.into_iter().collect();
    }

    pub fn sales(&self) -> Vec<SaleId> {
        self.sales.lock().iter().cloned().collect()
    }

    /// Resolves when a hold was made on a sale not covered before.
    pub async fn uncovered_hold(&self) {
        self.wake.notified().await
    }
}
