//! `dabba bench --suite rollout`: progressive delivery on a real cluster (3 controllers,
//! 2 hosts, separate processes on loopback) under closed-loop load on both hosts'
//! ingresses, every request traced with the revision that answered it.
//!
//! - Abort: a canary that fails 30% of its requests, at 20%, measured every second with
//!   `failure_limit = 0`. Detection is from the first failing request it answered to
//!   the abort's Raft entry (the entry's own timestamp); propagation is from that entry
//!   to the last request each host still sent to the canary (resolution: the gap
//!   between a host's requests to the canary, a few ms at this load). Repeated with
//!   `dabba rollout retry`.
//! - Split: at 5, 25 and 50% (a good canary, paused at each), the share of N
//!   consecutive requests the canary answered, and the worst window of 1,000.
//! - Blue-green switch: a preview promoted under load; from the switch's Raft entry to
//!   the last request each host sent to the old revision, and the errors around it.
//!
//! Times are wall-clock milliseconds of this machine on both sides (the leader stamps
//! each entry when it proposes it), so no clock is compared across machines.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use dabba_client::ApiClient;
use dabba_host::ComponentBytes;
use dabba_spec::Manifest;
use dabba_spec::api::{RolloutAction, RolloutView};
use dabba_testkit::manifests;
use serde::Serialize;

use crate::cluster::start_cluster;
use crate::deploy::{key, until_ready, upload};
use crate::load::{self, Load, Traced};

/// How much to measure.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub aborts: usize,
    pub split_requests: u64,
    /// Connections per host.
    pub concurrency: usize,
}

impl Sizes {
    pub fn full() -> Sizes {
        Sizes {
            aborts: 5,
            split_requests: 10_000,
            concurrency: 8,
        }
    }

    pub fn quick() -> Sizes {
        Sizes {
            aborts: 1,
            split_requests: 2_000,
            concurrency: 4,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct RolloutReport {
    pub interval_ms: u64,
    pub failure_limit: u32,
    pub aborts: Vec<Abort>,
    pub splits: Vec<SplitResult>,
    pub switch: Switch,
}

/// One abort of a bad canary.
#[derive(Debug, Serialize)]
pub struct Abort {
    /// First failing request the canary answered → the abort committed.
    pub detection_ms: f64,
    /// The abort committed → the last request each host still sent to the canary.
    pub propagation_ms: Vec<f64>,
    /// Requests the canary answered, and of them after the commit.
    pub reached_canary: usize,
    pub reached_after_commit: usize,
    pub requests: usize,
}

#[derive(Debug, Serialize)]
pub struct SplitResult {
    pub weight: u32,
    pub requests: usize,
    pub canary: usize,
    pub observed_percent: f64,
    /// The largest distance from the weight over any 1,000 consecutive requests, in
    /// percentage points.
    pub worst_window_points: f64,
    pub errors: usize,
}

#[derive(Debug, Serialize)]
pub struct Switch {
    /// The switch committed → the last request each host sent to the old revision.
    pub propagation_ms: Vec<f64>,
    pub requests: usize,
    pub errors: usize,
}

/// The app `manifests::hostile` deploys.
const APP: &str = "flaky";

/// The hostile test guest at `/` on two pods, configured by `extra`.
fn manifest(extra: &str) -> anyhow::Result<Manifest> {
    Ok(Manifest::parse(
        "rollout-bench.toml",
        &manifests::hostile("hostile.wasm", extra),
    )?)
}

struct Bench {
    api: ApiClient,
    wasm: ComponentBytes,
    loads: Vec<Load>,
}

impl Bench {
    async fn apply(&self, extra: &str) -> anyhow::Result<()> {
        let spec = manifest(extra)?.to_spec(self.wasm.digest);
        self.api.apply_app(&spec).await?;
        Ok(())
    }

    async fn rollout(&self) -> anyhow::Result<RolloutView> {
        Ok(self.api.rollout(&key(APP)).await?)
    }

    async fn until(
        &self,
        what: &str,
        check: impl Fn(&RolloutView) -> bool,
    ) -> anyhow::Result<RolloutView> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(v) = self.rollout().await
                && check(&v)
            {
                return Ok(v);
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out waiting for {what}: {:?}",
                    self.rollout().await.ok().map(|v| v.status)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The time (ms since the epoch) of the app's newest event `reason`.
    async fn event_at(&self, reason: &str) -> anyhow::Result<f64> {
        let d = self.api.app(&key(APP)).await?;
        d.events
            .iter()
            .rev()
            .find(|e| e.reason == reason)
            .map(|e| e.at as f64)
            .with_context(|| format!("no {reason} event"))
    }

    /// Traced load on both hosts until `stop` is set (or `max` requests).
    fn load(
        &self,
        stop: &Arc<AtomicBool>,
        max: u64,
    ) -> tokio::task::JoinHandle<anyhow::Result<Vec<Traced>>> {
        let (loads, stop) = (self.loads.clone(), stop.clone());
        tokio::spawn(async move { load::trace(&loads, stop, max).await })
    }
}

/// Per host: the last request sent at or after `from` that `revision` answered, in ms
/// after `from` (0 if none did).
fn last_reached(traced: &[Traced], hosts: usize, revision: u64, from: f64) -> Vec<f64> {
    (0..hosts)
        .map(|h| {
            traced
                .iter()
                .filter(|t| t.target == h && t.revision == Some(revision) && t.sent_ms >= from)
                .map(|t| t.sent_ms - from)
                .fold(0.0, f64::max)
        })
        .collect()
}

pub async fn run(
    dabba: &Path,
    guests: &Path,
    sizes: Sizes,
    raft_flags: &[String],
) -> anyhow::Result<RolloutReport> {
    let dir = crate::scratch_dir("rollout")?;
    let c = start_cluster(dabba, &dir, raft_flags, &[&[], &[]]).await?;
    let wasm = ComponentBytes::read(&guests.join("hostile.wasm"))
        .context("hostile.wasm not found: build the guests with `cargo guests`")?;
    upload(c.api(), &wasm).await?;
    let loads: Vec<Load> = c
        .host_addrs
        .iter()
        .map(|addr| Load {
            addr: *addr,
            method: http::Method::GET,
            path: "/ok".into(),
            headers: Vec::new(),
            unique_header: None,
            body: Bytes::new(),
            concurrency: sizes.concurrency,
            warmup: Duration::ZERO,
            duration: Duration::MAX,
            max_requests: u64::MAX,
        })
        .collect();
    let b = Bench {
        api: c.api().clone(),
        wasm,
        loads,
    };
    b.apply("[config]\nfail_percent = \"0\"\n").await?;
    until_ready(&b.api, APP, 2, Duration::from_secs(60)).await?;

    // Abort.
    let interval_ms = 1000;
    let failure_limit = 0; // as `failing_canary` sets it
    b.apply(&manifests::failing_canary(
        &format!("{interval_ms}ms"),
        "10m",
        "pause = {}",
    ))
    .await?;
    let mut aborts = Vec::new();
    for n in 0..sizes.aborts {
        if n > 0 {
            b.api
                .rollout_action(&key(APP), RolloutAction::Retry)
                .await?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let load = b.load(&stop, u64::MAX);
        b.until("the abort", |v| v.status.aborted).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::Relaxed);
        let traced = load.await??;
        let committed = b.event_at("RolloutAborted").await?;
        let canary = b.rollout().await?.status.canary.context("a canary")?;
        let first_fail = traced
            .iter()
            .find(|t| t.revision == Some(canary) && t.status >= 500)
            .context("the bad canary answered no failing request")?
            .sent_ms;
        let reached = traced.iter().filter(|t| t.revision == Some(canary)).count();
        let after = traced
            .iter()
            .filter(|t| t.revision == Some(canary) && t.sent_ms > committed)
            .count();
        aborts.push(Abort {
            detection_ms: committed - first_fail,
            propagation_ms: last_reached(&traced, b.loads.len(), canary, committed),
            reached_canary: reached,
            reached_after_commit: after,
            requests: traced.len(),
        });
    }

    // Split: a good canary paused at 5, 25 and 50%.
    b.apply(
        r#"[config]
fail_percent = "0"
release = "good"

[rollout]
strategy = "canary"
[[rollout.steps]]
set_weight = 5
[[rollout.steps]]
pause = {}
[[rollout.steps]]
set_weight = 25
[[rollout.steps]]
pause = {}
[[rollout.steps]]
set_weight = 50
[[rollout.steps]]
pause = {}
"#,
    )
    .await?;
    let mut splits = Vec::new();
    for (step, weight) in [(1u32, 5u32), (3, 25), (5, 50)] {
        let v = b
            .until(&format!("the pause at {weight}%"), |v| {
                v.status.step == step && v.status.paused.is_some()
            })
            .await?;
        let canary = v.status.canary.context("a canary")?;
        // The hosts learn of the commit in milliseconds; give them a margin.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stop = Arc::new(AtomicBool::new(false));
        let traced = b.load(&stop, sizes.split_requests).await??;
        let on: Vec<bool> = traced.iter().map(|t| t.revision == Some(canary)).collect();
        let canary_n = on.iter().filter(|c| **c).count();
        let window = 1000.min(on.len());
        let mut in_window = on[..window].iter().filter(|c| **c).count() as i64;
        let mut worst = (in_window as f64 * 100.0 / window as f64 - f64::from(weight)).abs();
        for i in window..on.len() {
            in_window += i64::from(on[i]) - i64::from(on[i - window]);
            worst = worst.max((in_window as f64 * 100.0 / window as f64 - f64::from(weight)).abs());
        }
        splits.push(SplitResult {
            weight,
            requests: traced.len(),
            canary: canary_n,
            observed_percent: canary_n as f64 * 100.0 / traced.len().max(1) as f64,
            worst_window_points: worst,
            errors: traced.iter().filter(|t| t.status != 200).count(),
        });
        b.api
            .rollout_action(&key(APP), RolloutAction::Promote { full: false })
            .await?;
    }
    b.api
        .rollout_action(&key(APP), RolloutAction::Promote { full: true })
        .await?;
    b.until("the canary to complete", |v| v.status.canary.is_none())
        .await?;

    // Blue-green switch under load.
    b.apply(
        r#"[config]
fail_percent = "0"
release = "blue-green"

[rollout]
strategy = "blue-green"
auto_promotion_enabled = false
"#,
    )
    .await?;
    let v = b
        .until("the preview", |v| v.status.paused.is_some())
        .await?;
    let (old, new) = (v.status.stable, v.status.canary.context("a preview")?);
    let stop = Arc::new(AtomicBool::new(false));
    let load = b.load(&stop, u64::MAX);
    tokio::time::sleep(Duration::from_secs(1)).await;
    b.api
        .rollout_action(&key(APP), RolloutAction::Promote { full: false })
        .await?;
    b.until("the switch", |v| {
        v.status.promoted || v.status.stable == new
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let traced = load.await??;
    let switched = b.event_at("Switched").await?;
    let switch = Switch {
        propagation_ms: last_reached(&traced, b.loads.len(), old, switched),
        requests: traced.len(),
        errors: traced.iter().filter(|t| t.status != 200).count(),
    };
    if !traced.iter().any(|t| t.revision == Some(new)) {
        bail!("no request reached the new revision after the switch");
    }
    Ok(RolloutReport {
        interval_ms,
        failure_limit,
        aborts,
        splits,
        switch,
    })
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
}

pub fn render(r: &RolloutReport) -> String {
    let detection: Vec<f64> = r.aborts.iter().map(|a| a.detection_ms).collect();
    let propagation: Vec<f64> = r
        .aborts
        .iter()
        .flat_map(|a| a.propagation_ms.iter().copied())
        .collect();
    let bound = r.interval_ms as f64 * f64::from(r.failure_limit + 1) + 200.0;
    let after: usize = r.aborts.iter().map(|a| a.reached_after_commit).sum();
    let mut out = format!(
        "## Rollouts (3 controllers, 2 hosts, loopback)\n\n\
         | measurement | result | goal |\n|---|---:|---:|\n\
         | Abort detection: first failing canary request → abort committed (interval {} ms, failure_limit {}) | p50 {:.0} ms, worst {:.0} ms of {} | ≤ {:.0} ms (goal ÷ worst = {:.2}) |\n\
         | Abort propagation: committed → every host routes 0% to the canary | p50 {:.1} ms, p99 {:.1} ms of {} host-aborts | p99 ≤ 100 ms (goal ÷ p99 = {:.2}) |\n\
         | Requests still sent to the canary after the commit, before the hosts' tables changed | {after} of {} | — |\n",
        r.interval_ms,
        r.failure_limit,
        percentile(detection.clone(), 0.5),
        percentile(detection.clone(), 1.0),
        detection.len(),
        bound,
        bound / percentile(detection, 1.0).max(1e-9),
        percentile(propagation.clone(), 0.5),
        percentile(propagation.clone(), 0.99),
        propagation.len(),
        100.0 / percentile(propagation, 0.99).max(1e-9),
        r.aborts.iter().map(|a| a.reached_canary).sum::<usize>(),
    );
    for s in &r.splits {
        out.push_str(&format!(
            "| Split at {}%: {} consecutive requests | {:.2}% on the canary ({} errors); worst 1,000-request window {:.2} points off | within 1 point |\n",
            s.weight, s.requests, s.observed_percent, s.errors, s.worst_window_points
        ));
    }
    out.push_str(&format!(
        "| Blue-green switch: committed → every host sends to the new revision | worst {:.1} ms | — |\n\
         | Errors during the switch under load | {} of {} | 0 |\n\n\
         Anchor: Flagger rolls back after `interval × threshold` failed checks (1 min × 5 by default); Argo Rollouts relies on a service mesh (e.g. Istio) to apply weights.\n",
        r.switch.propagation_ms.iter().copied().fold(0.0, f64::max),
        r.switch.errors,
        r.switch.requests,
    ));
    out
}
