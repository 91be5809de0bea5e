//! The ingress's rate limiter: a token bucket per app with a `[rate_limit]`, or per
//! app and value of its `per_header`, holding this ingress's share of the limit
//! (`dabba_spec::ratelimit`). A request over the limit is answered 429 with
//! `Retry-After` before anything else is done for it — no instance started, no pod
//! asked, no request held — so a rush costs the platform almost nothing.
//!
//! Memory is bounded: buckets that have refilled are forgotten once there are many, and
//! beyond [`MAX_BUCKETS`] clients at once the newcomers share their app's common
//! bucket.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dabba_spec::ratelimit::{RouteLimit, TokenBucket};
use dabba_spec::resources::ResourceKey;

/// Buckets kept at once, every app together.
pub const MAX_BUCKETS: usize = 100_000;

pub struct Limiter {
    buckets: Mutex<HashMap<(ResourceKey, Option<String>), TokenBucket>>,
    /// Bucket times are ms since this.
    epoch: Instant,
}

impl Default for Limiter {
    fn default() -> Limiter {
        Limiter::new()
    }
}

impl Limiter {
    pub fn new() -> Limiter {
        Limiter {
            buckets: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
        }
    }

    /// Takes a token for a request to `app` with `headers`, or says how long until
    /// one is there.
    pub fn admit(
        &self,
        app: &ResourceKey,
        limit: &RouteLimit,
        headers: &http::HeaderMap,
    ) -> Result<(), Duration> {
        let share = limit.app.share(limit.ingresses as usize);
        let now = self.epoch.elapsed().as_secs_f64() * 1000.0;
        let client = share.per_header.as_ref().and_then(|h| {
            headers
                .get(h.as_str())
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        });
        let mut buckets = self.buckets.lock().expect("limiter lock");
        let mut key = (app.clone(), client);
        if !buckets.contains_key(&key) && buckets.len() >= MAX_BUCKETS {
            buckets.retain(|_, b| !b.refilled(&share, now));
            if buckets.len() >= MAX_BUCKETS {
                key.1 = None;
            }
        }
        buckets
            .entry(key)
            .or_insert_with(|| TokenBucket::full(&share, now))
            .take(&share, now)
            .map_err(|ms| Duration::from_secs_f64(ms / 1000.0))
    }
}

/// The `Retry-After` for a wait: whole seconds, at least 1.
pub fn retry_after(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use dabba_spec::ratelimit::RateLimit;

    use super::*;

    fn limit(rps: u32, per_header: Option<&str>, ingresses: u32) -> RouteLimit {
        RouteLimit {
            app: RateLimit {
                requests_per_second: rps,
                burst: None,
                per_header: per_header.map(str::to_string),
            },
            ingresses,
        }
    }

    #[test]
    fn each_client_has_its_bucket_and_apps_are_apart() {
        let l = Limiter::new();
        let app = ResourceKey::new("shop", "pay");
        let other = ResourceKey::new("shop", "search");
        let lim = limit(3, Some("X-Merchant"), 1);
        let from = |m: &str| {
            let mut h = http::HeaderMap::new();
            h.insert("x-merchant", m.parse().unwrap());
            h
        };
        let passed = |who: &http::HeaderMap, app: &ResourceKey| {
            (0..10).filter(|_| l.admit(app, &lim, who).is_ok()).count()
        };
        assert_eq!(passed(&from("m1"), &app), 3);
        assert_eq!(passed(&from("m2"), &app), 3, "another merchant");
        assert_eq!(passed(&from("m1"), &other), 3, "another app");
        let none = http::HeaderMap::new();
        assert_eq!(
            passed(&none, &app),
            3,
            "without the header: one common bucket"
        );
        let wait = l.admit(&app, &lim, &from("m1")).unwrap_err();
        assert!(wait <= Duration::from_millis(334), "{wait:?}");
        assert_eq!(retry_after(wait), 1);
    }

    #[test]
    fn a_share_is_what_one_ingress_lets_through() {
        let l = Limiter::new();
        let app = ResourceKey::new("shop", "pay");
        let none = http::HeaderMap::new();
        let passed = (0..100)
            .filter(|_| l.admit(&app, &limit(40, None, 4), &none).is_ok())
            .count();
        assert_eq!(passed, 10, "a quarter of 40");
    }
}
