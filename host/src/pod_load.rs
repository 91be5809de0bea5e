//! The load one pod carries, as the autoscaler needs it: requests in flight, requests,
//! errors, a latency distribution, fuel and memory, counted with atomics on the request
//! path and taken (and reset) once per heartbeat.
//!
//! Concurrency follows Knative's queue-proxy: the average number of requests in flight
//! over the interval (the time requests spent in the pod divided by the interval), or
//! the number in flight right now if that is more, so a burst of long requests shows
//! before any of them finishes.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dabba_spec::api::PodLoad;
use dabba_spec::latency::{self, BUCKETS, Histogram};

#[derive(Default)]
pub struct LoadCounters {
    in_flight: AtomicU32,
    requests: AtomicU64,
    errors: AtomicU64,
    limit_hits: AtomicU64,
    busy_micros: AtomicU64,
    fuel: AtomicU64,
    peak_memory: AtomicU64,
    latency: [AtomicU64; BUCKETS],
}

/// A request in the pod; dropping it without [`InFlight::finish`] counts as an error.
pub struct InFlight<'a> {
    load: &'a LoadCounters,
    started: Instant,
    done: bool,
}

impl LoadCounters {
    pub fn begin(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            load: self,
            started: Instant::now(),
            done: false,
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Fuel and peak memory of a finished instance.
    pub fn instance(&self, fuel: Option<u64>, memory: usize) {
        if let Some(f) = fuel {
            self.fuel.fetch_add(f, Ordering::Relaxed);
        }
        self.peak_memory.fetch_max(memory as u64, Ordering::Relaxed);
    }

    /// What happened since the last call, which was `interval` ago; `None` for a pod
    /// that was idle throughout (most of them, on a dense host: their heartbeats stay
    /// small).
    pub fn take(&self, interval: Duration) -> Option<PodLoad> {
        if self.requests.load(Ordering::Relaxed) == 0 && self.in_flight() == 0 {
            return None;
        }
        let secs = interval.as_secs_f64().max(1e-3);
        let requests = self.requests.swap(0, Ordering::Relaxed);
        let counts: Histogram = std::array::from_fn(|i| self.latency[i].swap(0, Ordering::Relaxed));
        let busy = self.busy_micros.swap(0, Ordering::Relaxed) as f64 / 1e6;
        let in_flight = f64::from(self.in_flight());
        Some(PodLoad {
            concurrency: (busy / secs).max(in_flight),
            in_flight: self.in_flight(),
            rps: requests as f64 / secs,
            requests,
            errors: self.errors.swap(0, Ordering::Relaxed),
            limit_hits: self.limit_hits.swap(0, Ordering::Relaxed),
            p95_ms: latency::quantile_ms(&counts, 0.95).unwrap_or(0.0),
            latency: counts,
            fuel: self.fuel.swap(0, Ordering::Relaxed),
            peak_memory: self.peak_memory.swap(0, Ordering::Relaxed),
        })
    }
}

impl InFlight<'_> {
    /// The request was answered with `status`; `limit_hit` if a limit stopped it.
    pub fn finish(mut self, status: u16, limit_hit: bool) {
        self.done = true;
        self.record(status >= 500 || limit_hit);
        if limit_hit {
            self.load.limit_hits.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn record(&self, error: bool) {
        let l = self.load;
        let took = self.started.elapsed().as_micros() as u64;
        l.in_flight.fetch_sub(1, Ordering::Relaxed);
        l.requests.fetch_add(1, Ordering::Relaxed);
        l.busy_micros.fetch_add(took, Ordering::Relaxed);
        if error {
            l.errors.fetch_add(1, Ordering::Relaxed);
        }
        l.latency[latency::bucket(took)].fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.done {
            // The request was abandoned (the client went away): it still left.
            self.record(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_take_reports_the_interval_and_resets() {
        let load = LoadCounters::default();
        let a = load.begin();
        let b = load.begin();
        let c = load.begin();
        assert_eq!(load.in_flight(), 3);
        a.finish(200, false);
        drop(b); // abandoned: an error
        c.finish(429, true); // a limit: an error whatever its status
        load.instance(Some(1000), 65536);
        load.instance(None, 4096);
        let r = load.take(Duration::from_secs(2)).unwrap();
        assert_eq!(
            (r.requests, r.errors, r.limit_hits, r.in_flight),
            (3, 2, 1, 0)
        );
        assert_eq!(r.latency.iter().sum::<u64>(), 3);
        assert!((r.rps - 1.5).abs() < 1e-9, "{}", r.rps);
        assert_eq!((r.fuel, r.peak_memory), (1000, 65536));
        assert_eq!(load.take(Duration::from_secs(1)), None, "idle since");
    }

    #[test]
    fn requests_still_running_count_as_concurrency() {
        let load = LoadCounters::default();
        let _held: Vec<_> = (0..5).map(|_| load.begin()).collect();
        let r = load.take(Duration::from_secs(1)).unwrap();
        assert_eq!(r.concurrency, 5.0);
    }
}
