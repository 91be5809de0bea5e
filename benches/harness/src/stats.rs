//! Summaries of measurements: percentiles from an HDR histogram, and ratios against a
//! baseline. Pure functions, unit-tested; every figure the harness prints comes from here.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

/// A new histogram for latencies from 1 µs to 60 s at 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

pub fn latency(h: &Histogram<u64>) -> Latency {
    Latency {
        p50_us: h.value_at_quantile(0.50) as f64,
        p90_us: h.value_at_quantile(0.90) as f64,
        p99_us: h.value_at_quantile(0.99) as f64,
        max_us: h.max() as f64,
    }
}

/// `value / baseline`, or `None` when the baseline is missing or zero.
pub fn ratio(value: f64, baseline: Option<f64>) -> Option<f64> {
    match baseline {
        Some(b) if b > 0.0 => Some(value / b),
        _ => None,
    }
}

/// `0.37×`, or `n/a`.
pub fn format_ratio(r: Option<f64>) -> String {
    match r {
        Some(r) if r >= 10.0 => format!("{r:.0}×"),
        Some(r) if r >= 1.0 => format!("{r:.2}×"),
        Some(r) => format!("{r:.3}×"),
        None => "n/a".into(),
    }
}

/// A count with thousands separators: `35,706`.
pub fn thousands(n: f64) -> String {
    let n = n.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Cold starts, summarized: how many, and the nearest-rank p50, p99 and maximum.
#[derive(Debug, Clone, Serialize)]
pub struct ColdStarts {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Summarizes samples in milliseconds (nearest-rank percentiles).
pub fn summarize(mut samples: Vec<f64>) -> ColdStarts {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let i = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i]
    };
    ColdStarts {
        samples: samples.len(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: samples.last().copied().unwrap_or(f64::NAN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = summarize((1..=100).map(f64::from).collect());
        assert_eq!((s.p50_ms, s.p99_ms, s.max_ms), (50.0, 99.0, 100.0));
        let one = summarize(vec![3.0]);
        assert_eq!((one.p50_ms, one.p99_ms), (3.0, 3.0));
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut h = histogram();
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        let l = latency(&h);
        assert!((l.p50_us - 500.0).abs() <= 1.0, "{l:?}");
        assert!((l.p99_us - 990.0).abs() <= 1.0, "{l:?}");
        assert_eq!(l.max_us, 1000.0);
    }

    #[test]
    fn ratios_need_a_baseline() {
        assert_eq!(ratio(30.0, Some(100.0)), Some(0.3));
        assert_eq!(ratio(30.0, Some(0.0)), None);
        assert_eq!(ratio(30.0, None), None);
        assert_eq!(format_ratio(Some(0.3)), "0.300×");
        assert_eq!(format_ratio(Some(3.256)), "3.26×");
        assert_eq!(format_ratio(Some(128.4)), "128×");
        assert_eq!(format_ratio(None), "n/a");
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(35_706.4), "35,706");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
    }
}
