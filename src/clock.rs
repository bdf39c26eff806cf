//! Time. Every decision about a sale's window and its lobby (opened,
//! started, ended, revealed, lapsed) is taken on the Redis clock, inside
//! the scripts or from `Redis::now_ms`, so instances whose clocks differ
//! still agree. An instance's own clock only records when something
//! happened, and only through [`LocalClock`] (clippy refuses the direct
//! calls), which tests can set off by an offset to show that nothing
//! decides on it.

use chrono::{DateTime, Utc};

/// The instance's own clock, shifted by a test-only skew.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LocalClock {
    skew_ms: i64,
}

impl LocalClock {
    /// A clock `skew_ms` ahead of the machine's (behind when negative).
    pub fn skewed(skew_ms: i64) -> Self {
        Self { skew_ms }
    }

    #[allow(clippy::disallowed_methods)]
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.skew_ms)
    }

    pub fn now_bson(&self) -> bson::DateTime {
        bson::DateTime::from_chrono(self.now())
    }

    pub fn now_ms(&self) -> i64 {
        self.now().timestamp_millis()
    }
}
