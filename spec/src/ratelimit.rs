//! `[rate_limit]`: how many requests a second reach an app — the Tatkal-rush
//! protection. Requests beyond the limit are answered `429 Too Many Requests` with
//! `Retry-After` at the ingress, before any instance is started or any pod is asked.
//!
//! ```toml
//! [rate_limit]
//! requests_per_second = 200
//! burst = 400                 # optional: the bucket's size (default: one second's worth)
//! per_header = "x-merchant-id"  # optional: one bucket per value of this header
//! ```
//!
//! Each ingress keeps token buckets of its share of the limit: the controllers divide
//! the rate and the burst by the number of Ready hosts (every host runs an ingress), so
//! clients spread over the hosts (behind a load balancer) get the configured rate in
//! all; a client that sends everything to one host gets that host's share.
//! [`TokenBucket`] is the whole algorithm, a pure function of time.

use serde::{Deserialize, Serialize};

use crate::validate::Invalid;

/// The most requests a second an app may be limited to.
pub const MAX_RATE: u32 = 10_000_000;

/// An app's `[rate_limit]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub requests_per_second: u32,
    /// The bucket's size: requests that may come at once after a quiet spell. Default:
    /// `requests_per_second`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// One bucket per value of this request header (a merchant, an API key); requests
    /// without it share one bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_header: Option<String>,
}

impl RateLimit {
    pub fn validate(&self) -> Result<(), Invalid> {
        if !(1..=MAX_RATE).contains(&self.requests_per_second) {
            return Err(Invalid::new(
                "rate_limit.requests_per_second",
                format!("must be 1 to {MAX_RATE}"),
            ));
        }
        if self.burst.is_some_and(|b| !(1..=MAX_RATE).contains(&b)) {
            return Err(Invalid::new(
                "rate_limit.burst",
                format!("must be 1 to {MAX_RATE}"),
            ));
        }
        if let Some(h) = &self.per_header
            && http_header_name(h).is_none()
        {
            return Err(Invalid::new(
                "rate_limit.per_header",
                format!("`{h}` is not an HTTP header name"),
            ));
        }
        Ok(())
    }

    /// This limit's share on one of `ingresses` ingresses.
    pub fn share(&self, ingresses: usize) -> IngressLimit {
        let n = ingresses.max(1) as f64;
        let burst = self.burst.unwrap_or(self.requests_per_second);
        IngressLimit {
            per_second: f64::from(self.requests_per_second) / n,
            burst: (f64::from(burst) / n).max(1.0),
            per_header: self.per_header.as_ref().map(|h| h.to_ascii_lowercase()),
        }
    }
}

/// A lower-case header name made of token characters, if `h` is one.
fn http_header_name(h: &str) -> Option<String> {
    let ok = !h.is_empty()
        && h.len() <= 100
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    ok.then(|| h.to_ascii_lowercase())
}

/// An app's limit as its route carries it to the ingresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteLimit {
    pub app: RateLimit,
    /// The Ready hosts (each runs an ingress) the limit is shared between.
    pub ingresses: u32,
}

/// What one ingress enforces for an app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngressLimit {
    pub per_second: f64,
    pub burst: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_header: Option<String>,
}

/// A token bucket: full at `burst`, refilled at `per_second`, one token a request.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    /// When `tokens` was last brought up to date, in ms (any monotonic clock).
    at_ms: f64,
}

impl TokenBucket {
    /// A full bucket at `now_ms`.
    pub fn full(limit: &IngressLimit, now_ms: f64) -> TokenBucket {
        TokenBucket {
            tokens: limit.burst,
            at_ms: now_ms,
        }
    }

    /// Takes a token for a request at `now_ms`: `Ok`, or `Err(ms)` until one is there.
    pub fn take(&mut self, limit: &IngressLimit, now_ms: f64) -> Result<(), f64> {
        let elapsed = (now_ms - self.at_ms).max(0.0);
        self.tokens = (self.tokens + elapsed * limit.per_second / 1000.0).min(limit.burst);
        self.at_ms = now_ms.max(self.at_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err((1.0 - self.tokens) * 1000.0 / limit.per_second)
        }
    }

    /// Whether the bucket is full again at `now_ms` (it can be forgotten).
    pub fn refilled(&self, limit: &IngressLimit, now_ms: f64) -> bool {
        self.tokens + (now_ms - self.at_ms).max(0.0) * limit.per_second / 1000.0 >= limit.burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(rps: u32, burst: Option<u32>) -> RateLimit {
        RateLimit {
            requests_per_second: rps,
            burst,
            per_header: None,
        }
    }

    #[test]
    fn a_bucket_lets_a_burst_through_then_the_rate() {
        let l = limit(10, Some(5)).share(1);
        let mut b = TokenBucket::full(&l, 0.0);
        let passed = (0..20).filter(|_| b.take(&l, 0.0).is_ok()).count();
        assert_eq!(passed, 5, "the burst, at once");
        // 10 a second: one token every 100 ms.
        let wait = b.take(&l, 0.0).unwrap_err();
        assert!((wait - 100.0).abs() < 1e-6, "{wait}");
        assert!(b.take(&l, 50.0).is_err());
        assert!(b.take(&l, 100.0).is_ok());
        // Over 10 s at a steady 100 a second, 10 a second pass (and the burst is not
        // refilled while the limit is hit).
        let mut passed = 0;
        for i in 1..=1000 {
            if b.take(&l, 100.0 + f64::from(i) * 10.0).is_ok() {
                passed += 1;
            }
        }
        // (The last token may be a rounding error short of whole at the very end.)
        assert!((99..=100).contains(&passed), "{passed}");
        // After a quiet spell, full again — never more than the burst.
        assert!(b.refilled(&l, 20_000.0));
        let passed = (0..20).filter(|_| b.take(&l, 20_000.0).is_ok()).count();
        assert_eq!(passed, 5);
    }

    #[test]
    fn the_limit_is_shared_between_the_ingresses() {
        let l = limit(100, Some(300)).share(4);
        assert_eq!((l.per_second, l.burst), (25.0, 75.0));
        // A share never drops below one request at once.
        assert_eq!(limit(2, None).share(10).burst, 1.0);
        assert_eq!(limit(2, None).share(0).per_second, 2.0);
    }

    #[test]
    fn bad_limits_name_their_field() {
        for (l, field) in [
            (limit(0, None), "rate_limit.requests_per_second"),
            (limit(5, Some(0)), "rate_limit.burst"),
            (
                RateLimit {
                    per_header: Some("x client".into()),
                    ..limit(5, None)
                },
                "rate_limit.per_header",
            ),
        ] {
            assert_eq!(l.validate().unwrap_err().field, field);
        }
        limit(5, Some(10)).validate().unwrap();
    }
}
