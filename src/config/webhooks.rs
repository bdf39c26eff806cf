//! How webhooks are sent and retried (`FLASHDROP_WEBHOOK_*`).

use std::time::Duration;

use super::ConfigError;

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// The wait after the first failed attempt; each next wait is four
    /// times the last (capped at `RETRY_CAP`), with ±25 % jitter
    /// (`FLASHDROP_WEBHOOK_RETRY_FIRST`, default 5s).
    pub retry_first: Duration,
    /// How long a message is retried before its endpoint is disabled
    /// (`FLASHDROP_WEBHOOK_RETRY_FOR`, default 24h).
    pub retry_for: Duration,
    /// How long one attempt may take (`FLASHDROP_WEBHOOK_TIMEOUT`, default
    /// 10s). An instance holds a sequence for three times this long; one
    /// that died is taken over after it.
    pub timeout: Duration,
}

/// The longest wait between two attempts.
pub const RETRY_CAP: Duration = Duration::from_secs(6 * 3600);

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            retry_first: Duration::from_secs(5),
            retry_for: Duration::from_secs(24 * 3600),
            timeout: Duration::from_secs(10),
        }
    }
}

impl WebhookSettings {
    pub fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let duration = |var: &'static str, default: Duration, most: Duration| match lookup(var)
            .filter(|v| !v.trim().is_empty())
        {
            None => Ok(default),
            Some(v) => humantime::parse_duration(v.trim())
                .ok()
                .filter(|d| !d.is_zero() && *d <= most)
                .ok_or_else(|| {
                    ConfigError::new(
                        var,
                        format!(
                            "{v:?} is not a duration such as `5s` up to {}",
                            humantime::format_duration(most)
                        ),
                    )
                }),
        };
        let d = Self::default();
        Ok(Self {
            retry_first: duration(
                "FLASHDROP_WEBHOOK_RETRY_FIRST",
                d.retry_first,
                Duration::from_secs(3600),
            )?,
            retry_for: duration(
                "FLASHDROP_WEBHOOK_RETRY_FOR",
                d.retry_for,
                Duration::from_secs(7 * 24 * 3600),
            )?,
            timeout: duration(
                "FLASHDROP_WEBHOOK_TIMEOUT",
                d.timeout,
                Duration::from_secs(60),
            )?,
        })
    }

    /// The wait after the `failures`-th failed attempt, before jitter.
    pub fn backoff(&self, failures: u32) -> Duration {
        let factor = 4u32.saturating_pow(failures.saturating_sub(1).min(15));
        self.retry_first.saturating_mul(factor).min(RETRY_CAP)
    }

    /// How long an instance holds a sequence it works on.
    pub fn lease(&self) -> Duration {
        self.timeout * 3
    }
}
