//! Request limits: the per-buyer write quota, one budget in Redis shared by
//! every instance; the per-IP limit on every route (governor, each
//! instance's cheap shield); and the cap on body size.

use std::{net::IpAddr, time::Duration};

use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock};
use poem::{Request, Response, Result, error::ReadBodyError, http::StatusCode};

use crate::{
    config::RateLimit,
    error::{ApiError, rate_limited_response},
    store::{Redis, scripts::QuotaReply},
};

/// The limits; `None` where a limit is `off`.
pub struct RateLimits {
    buyer: Option<BuyerQuota>,
    ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    trust_forwarded_for: bool,
}

/// A buyer's write budget in Redis: so many requests at once, refilled at
/// a sustained rate.
struct BuyerQuota {
    redis: Redis,
    per_request: Duration,
    burst: u32,
}

fn limiter<K: std::hash::Hash + Eq + Clone>(
    limit: RateLimit,
) -> Option<DefaultKeyedRateLimiter<K>> {
    match limit {
        RateLimit::Off => None,
        RateLimit::PerSecond { rate, burst } => Some(DefaultKeyedRateLimiter::keyed(
            Quota::per_second(rate).allow_burst(burst),
        )),
    }
}

fn retry_after(wait: Duration) -> u64 {
    // Whole seconds, at least one: the header has no fractions.
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

impl RateLimits {
    pub fn new(buyer: RateLimit, ip: RateLimit, trust_forwarded_for: bool, redis: Redis) -> Self {
        Self {
            buyer: match buyer {
                RateLimit::Off => None,
                RateLimit::PerSecond { rate, burst } => Some(BuyerQuota {
                    redis,
                    per_request: Duration::from_secs(1) / rate.get(),
                    burst: burst.get(),
                }),
            },
            ip: limiter(ip),
            trust_forwarded_for,
        }
    }

    /// Spends one write of `buyer`'s budget; `RateLimited` when over it.
    pub async fn check_buyer(&self, buyer: &str) -> Result<(), ApiError> {
        let Some(quota) = &self.buyer else {
            return Ok(());
        };
        match quota
            .redis
            .spend_quota(buyer, quota.per_request, quota.burst)
            .await?
        {
            QuotaReply::Ok => Ok(()),
            QuotaReply::Limited { retry_ms } => {
                metrics::counter!("flashdrop_rate_limited_total", "key" => "buyer").increment(1);
                Err(ApiError::RateLimited(retry_after(Duration::from_secs_f64(
                    retry_ms.max(0.0) / 1000.0,
                ))))
            }
        }
    }

    fn check_ip(&self, ip: IpAddr) -> Result<(), u64> {
        let Some(limiter) = &self.ip else {
            return Ok(());
        };
        limiter.check_key(&ip).map_err(|not_until| {
            metrics::counter!("flashdrop_rate_limited_total", "key" => "ip").increment(1);
            retry_after(not_until.wait_time_from(governor::clock::DefaultClock::default().now()))
        })
    }

    /// Forgets addresses whose quota is full again, so memory stays bounded
    /// under many clients. (Buyers' budgets expire in Redis on their own.)
    pub fn prune(&self) {
        if let Some(l) = &self.ip {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// The client's address: the peer, or with a trusted proxy in front the
    /// last address it appended to `X-Forwarded-For`.
    pub fn client_ip(&self, req: &Request) -> Option<IpAddr> {
        if self.trust_forwarded_for
            && let Some(ip) = req
                .headers()
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .and_then(|v| v.trim().parse().ok())
        {
            return Some(ip);
        }
        req.remote_addr().as_socket_addr().map(|a| a.ip())
    }

    /// The 429 answer when the client's address is over its limit.
    pub fn refuse_ip(&self, req: &Request) -> Option<Response> {
        let ip = self.client_ip(req)?;
        self.check_ip(ip).err().map(rate_limited_response)
    }
}

/// A request's body as far as its head tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclaredBody {
    /// No body: a length of 0, or neither a length nor chunks.
    Empty,
    /// A declared length, within the cap.
    Fits,
    /// Chunked: only reading it tells whether it fits.
    Chunked,
}

/// What the request's head says of its body; 413 when its declared length
/// is over `max` bytes.
pub fn declared_body(req: &Request, max: usize) -> Result<DeclaredBody> {
    let declared = req
        .headers()
        .get(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(len) if len > max as u64 => Err(too_large(max)),
        Some(0) => Ok(DeclaredBody::Empty),
        Some(_) => Ok(DeclaredBody::Fits),
        None if req
            .headers()
            .contains_key(poem::http::header::TRANSFER_ENCODING) =>
        {
            Ok(DeclaredBody::Chunked)
        }
        None => Ok(DeclaredBody::Empty),
    }
}

/// The answer to a body that could not be read: 413 past `max` bytes.
pub fn unreadable(err: ReadBodyError, max: usize) -> poem::Error {
    match err {
        ReadBodyError::PayloadTooLarge => too_large(max),
        other => ApiError::invalid(format!("cannot read the body: {other}")).into(),
    }
}

fn too_large(max: usize) -> poem::Error {
    poem::Error::from_string(
        format!("the request body is larger than {max} bytes"),
        StatusCode::PAYLOAD_TOO_LARGE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_whole_seconds_and_at_least_one() {
        assert_eq!(retry_after(Duration::from_millis(1)), 1);
        assert_eq!(retry_after(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after(Duration::from_secs(3)), 3);
    }
}
