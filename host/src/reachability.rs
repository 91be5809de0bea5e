//! Whether this host reaches a majority of the controllers: it does while its
//! heartbeats are answered (a controller answers one only after confirming, with a
//! quorum, that it leads). A host cut off from the majority — its region partitioned
//! away — fails key-value calls at once instead of waiting out their retries, and its
//! ingress refuses the apps placed with `degraded = "refuse"`, so clients and a GSLB
//! go to a region that can write (`spec/regions.md`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct ControlPlane {
    region: String,
    started: Instant,
    /// Milliseconds after `started` of the last answered heartbeat.
    last_ok: AtomicU64,
    patience: Duration,
}

impl ControlPlane {
    /// A host in `region` that counts itself cut off after `patience` without an
    /// answered heartbeat (longer than a leader failover takes).
    pub fn new(region: &str, patience: Duration) -> ControlPlane {
        ControlPlane {
            region: region.to_string(),
            started: Instant::now(),
            last_ok: AtomicU64::new(0),
            patience,
        }
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// A heartbeat was answered.
    pub fn reached(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_ok.store(ms.max(1), Ordering::Relaxed);
    }

    /// `Err` with the cause while no majority has answered for longer than the
    /// patience (a host that has just started gets the patience from its start).
    pub fn check(&self) -> Result<(), String> {
        let last = Duration::from_millis(self.last_ok.load(Ordering::Relaxed));
        let silent = self.started.elapsed().saturating_sub(last);
        if silent <= self.patience {
            return Ok(());
        }
        Err(format!(
            "no majority of controllers has answered this host in region {} for {:.1} s (partitioned?)",
            self.region,
            silent.as_secs_f64()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_is_cut_off_only_after_its_patience() {
        let cp = ControlPlane::new("mumbai", Duration::from_millis(50));
        assert!(
            cp.check().is_ok(),
            "a new host gets the patience from its start"
        );
        std::thread::sleep(Duration::from_millis(80));
        let e = cp.check().unwrap_err();
        assert!(e.contains("region mumbai"), "{e}");
        cp.reached();
        assert!(cp.check().is_ok());
    }
}
