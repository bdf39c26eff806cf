//! Which sales the reaper of this instance covers. A hold made on a sale it
//! does not cover yet wakes it at once, so a new sale's first holds meet the
//! 1 s expiry target without waiting for the reaper's next refresh.

use std::{collections::HashSet, sync::Mutex};

use tokio::sync::Notify;

use crate::ids::SaleId;

#[derive(Default)]
pub struct Coverage {
    sales: Mutex<HashSet<SaleId>>,
    wake: Notify,
}

impl Coverage {
    /// A hold was made on `sale`.
    pub fn hold_made(&self, sale: &SaleId) {
        let mut sales = self.sales.lock().expect("coverage lock");
        if !sales.contains(sale) {
            sales.insert(sale.clone());
            self.wake.notify_one();
        }
    }

    /// The sales the reaper walks from now on.
    pub fn replace(&self, sales: impl IntoIterator<Item = SaleId>) {
        let mut covered = self.sales.lock().expect("coverage lock");
        covered.clear();
        covered.extend(sales);
    }

    /// Resolves when a hold was made on a sale not covered before.
    pub async fn uncovered_hold(&self) {
        self.wake.notified().await
    }
}
