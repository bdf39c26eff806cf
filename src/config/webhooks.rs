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

#[cfg(test)]
mod tests {
    use super::*;

    /// The default waits and the number of attempts the README gives: 5 s
    /// growing fourfold to a 6 h cap, about ten attempts within 24 h.
    #[test]
    fn the_default_schedule_is_the_one_the_readme_gives() {
        let s = WebhookSettings::default();
        let waits: Vec<u64> = (1..=9).map(|n| s.backoff(n).as_secs()).collect();
        assert_eq!(waits, [5, 20, 80, 320, 1280, 5120, 20480, 21600, 21600]);
        // Attempts made before the next wait would pass the retry period
        // (jitter left out).
        let (mut attempts, mut elapsed) = (1, Duration::ZERO);
        while elapsed + s.backoff(attempts) <= s.retry_for {
            elapsed += s.backoff(attempts);
            attempts += 1;
        }
        assert_eq!(attempts, 10);
    }

    #[test]
    fn durations_are_read_and_bounded() {
        let vars = |k: &str| match k {
            "FLASHDROP_WEBHOOK_RETRY_FIRST" => Some("250ms".to_owned()),
            "FLASHDROP_WEBHOOK_TIMEOUT" => Some("2s".to_owned()),
            _ => None,
        };
        let s = WebhookSettings::from_lookup(&vars).unwrap();
        assert_eq!(s.retry_first, Duration::from_millis(250));
        assert_eq!(s.lease(), Duration::from_secs(6));
        assert_eq!(s.retry_for, Duration::from_secs(24 * 3600));
        let too_long = |k: &str| (k == "FLASHDROP_WEBHOOK_TIMEOUT").then(|| "2m".to_owned());
        let err = WebhookSettings::from_lookup(&too_long).unwrap_err();
        assert_eq!(err.var, "FLASHDROP_WEBHOOK_TIMEOUT");
    }
}
