//! Work that may take its time but must never take a core from the Raft log,
//! heartbeats or the API: moving a component, writing a snapshot. On a 2-core machine
//! such work at normal priority multiplies the latency of every write it overlaps.

/// Runs `f` on a thread of its own, named `name`, at the lowest CPU priority. The future
/// resolves to `f`'s result; dropping it leaves `f` running to its end.
pub fn at_low_priority<T: Send + 'static>(
    name: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> impl std::future::Future<Output = T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19)
            {
                tracing::debug!(error = %e, "background work runs at normal priority");
            }
            let _ = tx.send(f());
        })
        .expect("a thread for background work");
    async move {
        rx.await
            .expect("a background thread ends by sending its result")
    }
}

/// Paces a stream of bytes to a bandwidth: each mover books its bytes and waits until
/// the bandwidth has room for them. Moving components at full speed takes the disk
/// (and the cores) the Raft log's fsync and replication need; a paced transfer takes
/// longer and leaves them room, as a container runtime's paced image pulls do.
#[derive(Debug)]
pub struct Pacer {
    /// Bytes per second; 0: not paced.
    rate: u64,
    /// When the bandwidth is free again.
    free_at: std::sync::Mutex<std::time::Instant>,
}

impl Pacer {
    pub fn new(rate: u64) -> Pacer {
        Pacer {
            rate,
            free_at: std::sync::Mutex::new(std::time::Instant::now()),
        }
    }

    /// Books `n` bytes at `now`: how long to wait before moving them. Time the bandwidth
    /// went unused is not saved up (no bursts after a pause).
    pub fn book(&self, n: u64, now: std::time::Instant) -> std::time::Duration {
        if self.rate == 0 {
            return std::time::Duration::ZERO;
        }
        let mut free_at = self.free_at.lock().expect("pacer lock");
        let start = (*free_at).max(now);
        *free_at = start + std::time::Duration::from_secs_f64(n as f64 / self.rate as f64);
        start - now
    }

    /// Waits (blocking this thread) until `n` bytes may move.
    pub fn pace(&self, n: u64) {
        let wait = self.book(n, std::time::Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::Pacer;

    #[test]
    fn a_pacer_spaces_bookings_to_its_rate_and_saves_up_no_burst() {
        let p = Pacer::new(1 << 20); // 1 MiB/s
        let t0 = Instant::now();
        assert_eq!(p.book(512 << 10, t0), Duration::ZERO);
        assert_eq!(p.book(512 << 10, t0), Duration::from_millis(500));
        assert_eq!(p.book(1 << 20, t0), Duration::from_secs(1));
        // After a long pause, the next booking waits for nothing, and the one after it
        // for its own share only.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(p.book(1 << 20, later), Duration::ZERO);
        assert_eq!(p.book(256 << 10, later), Duration::from_secs(1));
        // Unpaced: never waits.
        let free = Pacer::new(0);
        assert_eq!(free.book(u64::MAX / 2, t0), Duration::ZERO);
    }
}
