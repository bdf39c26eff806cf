//! How many live sockets this instance serves: a cap in all and one per
//! client address, checked before the upgrade, so a flood of sockets is
//! refused with the error body instead of exhausting memory.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use parking_lot::Mutex;

use crate::error::ApiError;

pub struct Admission {
    open: Mutex<Open>,
    max_total: usize,
    max_per_ip: Option<usize>,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One admitted socket; its place is freed when this is dropped.
pub struct Permit {
    admission: Arc<Admission>,
    ip: Option<IpAddr>,
}

impl Admission {
    pub fn new(max_total: usize, max_per_ip: Option<usize>) -> Self {
        Self {
            open: Mutex::default(),
            max_total,
            max_per_ip,
        }
    }

    /// A place for one more socket from `ip`: 503 when this instance is
    /// full, 429 when the address has its share.
    pub fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Permit, ApiError> {
        let mut open = self.open.lock();
        if open.total >= self.max_total {
            return Err(ApiError::unavailable(
                "this server has as many live sockets as it serves; try again later",
            ));
        }
        if let (Some(ip), Some(max)) = (ip, self.max_per_ip)
            && open.per_ip.get(&ip).copied().unwrap_or(0) >= max
        {
            metrics::counter!("flashdrop_rate_limited_total", "key" => "live").increment(1);
            return Err(ApiError::RateLimited(5));
        }
        open.total += 1;
        if let Some(ip) = ip {
            *open.per_ip.entry(ip).or_default() += 1;
        }
        Ok(Permit {
            admission: self.clone(),
            ip,
        })
    }

    /// Open sockets.
    pub fn open(&self) -> usize {
        self.open.lock().total
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.admission.open.lock();
        open.total -= 1;
        if let Some(ip) = self.ip
            && let Some(n) = open.per_ip.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                open.per_ip.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn places_are_counted_in_all_and_per_address_and_freed() {
        let admission = Arc::new(Admission::new(2, Some(1)));
        let (a, b) = ("10.0.0.1".parse().ok(), "10.0.0.2".parse().ok());
        let first = admission.admit(a).unwrap();
        assert!(matches!(admission.admit(a), Err(ApiError::RateLimited(_))));
        let _second = admission.admit(b).unwrap();
        assert_eq!(
            admission
                .admit("10.0.0.3".parse().ok())
                .err()
                .map(|e| e.code()),
            Some(ErrorCode::Unavailable)
        );
        drop(first);
        assert_eq!(admission.open(), 1);
        assert!(admission.admit(a).is_ok());
    }
}
