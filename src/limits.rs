//! Request limits: per-buyer and per-IP rate limits (governor, per instance)
//! and the cap on body size.

use std::{net::IpAddr, sync::Arc, time::Duration};

use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock};
use poem::{
    Body, Endpoint, IntoResponse, Request, Response, Result, error::ReadBodyError, http::StatusCode,
};

use crate::{
    config::RateLimit,
    error::{ApiError, rate_limited_response},
};

/// Keyed limiters; `None` where a limit is `off`. Limits are per instance:
/// N instances behind a balancer allow up to N times the quota.
pub struct RateLimits {
    buyer: Option<DefaultKeyedRateLimiter<String>>,
    ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    trust_forwarded_for: bool,
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
    pub fn new(buyer: RateLimit, ip: RateLimit, trust_forwarded_for: bool) -> Self {
        Self {
            buyer: limiter(buyer),
            ip: limiter(ip),
            trust_forwarded_for,
        }
    }

    /// Counts one write by `buyer`; `RateLimited` when over the quota.
    pub fn check_buyer(&self, buyer: &str) -> Result<(), ApiError> {
        let Some(limiter) = &self.buyer else {
            return Ok(());
        };
        limiter.check_key(&buyer.to_owned()).map_err(|not_until| {
            metrics::counter!("flashdrop_rate_limited_total", "key" => "buyer").increment(1);
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            ApiError::RateLimited(retry_after(wait))
        })
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

    /// Forgets keys whose quota is full again, so memory stays bounded under
    /// millions of distinct buyers.
    pub fn prune(&self) {
        if let Some(l) = &self.buyer {
            l.retain_recent();
            l.shrink_to_fit();
        }
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
}

/// Per-IP limit on every route.
pub async fn limit_ip<E: Endpoint>(next: E, req: Request) -> Result<Response> {
    if let Some(limits) = req.data::<Arc<RateLimits>>()
        && let Some(ip) = limits.client_ip(&req)
        && let Err(secs) = limits.check_ip(ip)
    {
        return Ok(rate_limited_response(secs));
    }
    next.call(req).await.map(IntoResponse::into_response)
}

/// Refuses bodies larger than `max` bytes with 413, whether the client
/// declares a length or streams a chunked body.
pub async fn cap_body<E: Endpoint>(next: E, mut req: Request, max: usize) -> Result<Response> {
    let declared = req
        .headers()
        .get(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(len) if len > max as u64 => return Err(too_large(max)),
        Some(_) => {}
        None if req
            .headers()
            .contains_key(poem::http::header::TRANSFER_ENCODING) =>
        {
            let bytes = req
                .take_body()
                .into_bytes_limit(max)
                .await
                .map_err(|e| match e {
                    ReadBodyError::PayloadTooLarge => too_large(max),
                    other => ApiError::invalid(format!("cannot read the body: {other}")).into(),
                })?;
            req.set_body(Body::from_bytes(bytes));
        }
        None => {}
    }
    next.call(req).await.map(IntoResponse::into_response)
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
    use std::num::NonZeroU32;

    #[test]
    fn a_buyer_over_the_quota_is_told_when_to_retry_and_others_are_not() {
        let one = NonZeroU32::new(1).unwrap();
        let limits = RateLimits::new(
            RateLimit::PerSecond {
                rate: one,
                burst: NonZeroU32::new(2).unwrap(),
            },
            RateLimit::Off,
            false,
        );
        assert!(limits.check_buyer("a").is_ok());
        assert!(limits.check_buyer("a").is_ok());
        match limits.check_buyer("a") {
            Err(ApiError::RateLimited(secs)) => assert_eq!(secs, 1),
            other => panic!("{other:?}"),
        }
        assert!(limits.check_buyer("b").is_ok());
        assert!(
            limits.check_ip("127.0.0.1".parse().unwrap()).is_ok(),
            "ip limit off"
        );
    }
}
