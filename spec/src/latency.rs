//! Latency as the hosts report it: counts in power-of-two buckets of microseconds, cheap
//! to count with atomics on the request path and to add up across pods and heartbeats,
//! from which the autoscaler and analysis read percentiles.
//!
//! A percentile is reported as the upper bound of the bucket it falls in: never below
//! the true value, and at most twice it.

/// Bucket `i` counts requests that took under 2^i microseconds (the last one everything
/// slower, from about 34 s).
pub const BUCKETS: usize = 26;

/// Request counts by latency bucket.
pub type Histogram = [u64; BUCKETS];

/// The bucket a request of `micros` microseconds falls in.
pub fn bucket(micros: u64) -> usize {
    ((u64::BITS - micros.leading_zeros()) as usize).min(BUCKETS - 1)
}

/// The upper bound of the bucket holding quantile `q` (0 < q ≤ 1), in milliseconds;
/// `None` with no requests.
pub fn quantile_ms(counts: &Histogram, q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some((1u64 << i) as f64 / 1000.0);
        }
    }
    Some((1u64 << (BUCKETS - 1)) as f64 / 1000.0)
}

/// Adds `more` to `into`.
pub fn add(into: &mut Histogram, more: &Histogram) {
    for (a, b) in into.iter_mut().zip(more) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quantile_is_the_bound_of_the_bucket_it_falls_in() {
        let mut counts = [0u64; BUCKETS];
        counts[10] = 95; // < 1.024 ms
        counts[14] = 5; // < 16.384 ms
        assert_eq!(quantile_ms(&counts, 0.95), Some(1.024));
        assert_eq!(quantile_ms(&counts, 0.99), Some(16.384));
        counts[10] = 94;
        counts[14] = 6;
        assert_eq!(quantile_ms(&counts, 0.95), Some(16.384));
        assert_eq!(quantile_ms(&counts, 0.5), Some(1.024));
        assert_eq!(quantile_ms(&[0; BUCKETS], 0.95), None);
    }

    #[test]
    fn buckets_are_powers_of_two_of_microseconds() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1), 1);
        assert_eq!(bucket(1023), 10);
        assert_eq!(bucket(1024), 11);
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }
}
