//! `dabba bench --suite autoscale`: scale from zero, scale out, and density.
//!
//! - Cold start from zero: apps of the hello component are deployed with `[scale] min =
//!   0` at zero pods; one request is sent to each, once, on an open connection, and the
//!   time from writing it to the first response byte is recorded: half of the apps back
//!   to back, half one at a time after 50 ms of idleness. Every sample is a
//!   real activation: the ingress holds the request, the leader commits the first pod
//!   through Raft, the host starts it and releases the request. The component itself is
//!   already known to the host (a warm-up app loads it once), as an image is already
//!   pulled on a node. Measured on the embedded default (`dabba up`) and on a cluster
//!   of 3 controllers.
//! - Scale-out: an app of the hello component at zero is scaled to 100 pods; the time
//!   from the scale request to the API reporting 100 Running pods across two hosts.
//! - Density: apps deployed at zero on a cluster (their routes on every host), then live
//!   idle pods pinned to one host; that host's resident memory before and after, per
//!   app and per pod.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use dabba_client::ApiClient;
use dabba_host::ComponentBytes;
use dabba_spec::resources::{AppSpec, Route};
use dabba_spec::scale::Scale;
use dabba_testkit::{Up, UpOptions};
use serde::Serialize;

use crate::cluster::start_cluster;
use crate::deploy::{apply_all, scale, until_ready, upload};
use crate::probe::{POLL, first_byte, rss_kib, until_ok};
use crate::stats::{ColdStarts, summarize, thousands};

/// The pause before each cold start.
const SETTLE: Duration = Duration::from_millis(50);

/// How big a run is.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Cold starts measured per platform.
    pub cold_starts: usize,
    pub scale_out_pods: u32,
    pub scale_out_rounds: usize,
    pub density_apps: usize,
    pub density_pods: u32,
}

impl Sizes {
    pub fn full() -> Sizes {
        Sizes {
            cold_starts: 300,
            scale_out_pods: 100,
            scale_out_rounds: 3,
            density_apps: 10_000,
            density_pods: 1_000,
        }
    }

    pub fn quick() -> Sizes {
        Sizes {
            cold_starts: 20,
            scale_out_pods: 10,
            scale_out_rounds: 1,
            density_apps: 200,
            density_pods: 20,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Density {
    pub apps: usize,
    pub deploy_seconds: f64,
    pub host_rss_before_kib: u64,
    pub host_rss_with_apps_kib: u64,
    pub per_app_bytes: f64,
    pub pods: u32,
    pub host_rss_with_pods_kib: u64,
    pub per_pod_bytes: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AutoscaleReport {
    pub cold_start_embedded: ColdStartRuns,
    pub cold_start_cluster: ColdStartRuns,
    pub scale_out_pods: u32,
    pub scale_out_ms: Vec<f64>,
    pub density: Density,
}

/// The hello component, read and hashed.
fn hello(guests: &Path) -> anyhow::Result<ComponentBytes> {
    let path = guests.join("hello.wasm");
    ComponentBytes::read(&path).with_context(|| {
        format!(
            "{} not found: build the guests with `cargo guests`",
            path.display()
        )
    })
}

fn spec(c: &ComponentBytes, name: &str, replicas: u32, scale: Option<Scale>) -> AppSpec {
    AppSpec {
        name: name.into(),
        namespace: "default".into(),
        component: c.digest,
        route: Route {
            prefix: format!("/{name}"),
            host: None,
        },
        replicas,
        // hello needs little; a small reservation keeps 600 cold apps' pods within the
        // embedded host's 8 GiB.
        limits: dabba_spec::LimitOverrides {
            memory: Some(dabba_spec::ByteSize::mib(4)),
            ..Default::default()
        },
        capabilities: Default::default(),
        node_selector: Default::default(),
        scale,
        rollout: None,
        analysis: Vec::new(),
        regions: None,
        rate_limit: None,
    }
}

/// Scales from zero on demand and stays up long enough to be measured once.
fn from_zero() -> Scale {
    Scale {
        min: 0,
        max: 4,
        scale_to_zero_after: dabba_spec::HumanDuration::from_secs(600),
        ..Scale::default()
    }
}

/// Cold starts measured one after another (a stream, as when many idle apps wake at
/// once) and one at a time on an otherwise idle platform.
#[derive(Debug, Clone, Serialize)]
pub struct ColdStartRuns {
    pub stream: ColdStarts,
    pub isolated: ColdStarts,
}

/// Deploys `2n` apps at zero plus a warm-up app, then measures one cold start of each:
/// `n` back to back, and `n` each after a pause of [`SETTLE`].
async fn cold_starts(
    api: &Arc<ApiClient>,
    c: &ComponentBytes,
    ingress: SocketAddr,
    n: usize,
    tag: &str,
) -> anyhow::Result<ColdStartRuns> {
    upload(api, c).await?;
    // The warm-up app loads the component on the host and, applied last, shows that
    // the host's routes include every cold app.
    let cold: Vec<AppSpec> = (0..2 * n)
        .map(|i| spec(c, &format!("{tag}-cold-{i}"), 0, Some(from_zero())))
        .collect();
    apply_all(api, cold, 16).await?;
    let warm = format!("{tag}-warm");
    apply_all(api, vec![spec(c, &warm, 1, None)], 1).await?;
    until_ok(
        ingress,
        "bench",
        &format!("/{warm}"),
        Duration::from_secs(120),
        POLL,
    )
    .await?;
    let mut runs = Vec::new();
    for (first, pause) in [(n, Some(SETTLE)), (0, None)] {
        let mut samples = Vec::with_capacity(n);
        for i in first..first + n {
            if let Some(p) = pause {
                // The previous cold start's aftermath (its pod's Running report, the
                // hosts' new routing tables) settles, and the machine goes idle.
                tokio::time::sleep(p).await;
            }
            let took = first_byte(ingress, "bench", &format!("/{tag}-cold-{i}"))
                .await
                .with_context(|| format!("cold start {i}"))?;
            samples.push(took.as_secs_f64() * 1000.0);
        }
        runs.push(summarize(samples));
    }
    let stream = runs.pop().expect("two runs");
    let isolated = runs.pop().expect("two runs");
    Ok(ColdStartRuns { stream, isolated })
}

/// The embedded default: `dabba up` in its own process.
async fn embedded(
    dabba: &Path,
    dir: &Path,
    c: &ComponentBytes,
    n: usize,
    raft_flags: &[String],
) -> anyhow::Result<ColdStartRuns> {
    let up = start_up(dabba, dir, raft_flags).await?;
    let api = Arc::new(up.api().clone());
    cold_starts(&api, c, up.ingress, n, "up").await
}

/// Starts `dabba up` with its data in `dir/up` (stopped when dropped).
pub async fn start_up(dabba: &Path, dir: &Path, raft_flags: &[String]) -> anyhow::Result<Up> {
    Up::start(UpOptions {
        dabba: dabba.to_path_buf(),
        dir: dir.join("up"),
        demo: false,
        cwd: None,
        flags: raft_flags.to_vec(),
        patience: Duration::from_secs(120),
    })
    .await
}

pub async fn run(
    dabba: &Path,
    guests: &Path,
    sizes: Sizes,
    raft_flags: &[String],
) -> anyhow::Result<AutoscaleReport> {
    let c = hello(guests)?;
    let dir = crate::scratch_dir("autoscale")?;

    eprintln!(
        "measuring {} cold starts from zero on dabba up ...",
        sizes.cold_starts
    );
    let cold_start_embedded = embedded(dabba, &dir, &c, sizes.cold_starts, raft_flags).await?;

    eprintln!("starting 3 controllers and 2 hosts ...");
    let big = ["--memory", "64Gi", "--instances", "20000"];
    let cluster = start_cluster(
        dabba,
        &dir,
        raft_flags,
        &[&big, &[&big[..], &["--label", "role=density"]].concat()],
    )
    .await?;
    let api = Arc::new(cluster.api().clone());
    let ingress = cluster.host_addrs[0];
    eprintln!(
        "measuring {} cold starts from zero on the cluster ...",
        sizes.cold_starts
    );
    let cold_start_cluster = cold_starts(&api, &c, ingress, sizes.cold_starts, "cl").await?;

    eprintln!("measuring scale-out 0 → {} pods ...", sizes.scale_out_pods);
    apply_all(&api, vec![spec(&c, "wide", 0, None)], 1).await?;
    let mut scale_out_ms = Vec::new();
    for _ in 0..sizes.scale_out_rounds {
        let started = Instant::now();
        scale(&api, "wide", sizes.scale_out_pods).await?;
        let done = until_ready(&api, "wide", sizes.scale_out_pods, Duration::from_secs(60)).await?;
        scale_out_ms.push(done.duration_since(started).as_secs_f64() * 1000.0);
        scale(&api, "wide", 0).await?;
        until_ready(&api, "wide", 0, Duration::from_secs(60)).await?;
        // Let the hosts drop the pods before the next round.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    eprintln!("measuring density: {} apps at zero ...", sizes.density_apps);
    let host_addr = cluster.host_addrs[1];
    let pid = cluster.hosts[1]
        .pid()
        .context("the density host is not running")?;
    let before = rss_kib(pid)?;
    let started = Instant::now();
    let apps: Vec<AppSpec> = (0..sizes.density_apps)
        .map(|i| spec(&c, &format!("idle-{i}"), 0, Some(from_zero())))
        .collect();
    apply_all(&api, apps, 32).await?;
    let deploy_seconds = started.elapsed().as_secs_f64();
    // An app applied after them, running on the density host, answers once that host's
    // routes include them all.
    let mut marker = spec(&c, "density-marker", 1, None);
    marker.node_selector = [("role".to_string(), "density".to_string())].into();
    apply_all(&api, vec![marker], 1).await?;
    until_ok(
        host_addr,
        "bench",
        "/density-marker",
        Duration::from_secs(300),
        POLL,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let with_apps = rss_kib(pid)?;

    eprintln!(
        "measuring density: {} idle pods on one host ...",
        sizes.density_pods
    );
    let mut dense = spec(&c, "dense", 0, None);
    dense.node_selector = [("role".to_string(), "density".to_string())].into();
    apply_all(&api, vec![dense], 1).await?;
    scale(&api, "dense", sizes.density_pods).await?;
    until_ready(&api, "dense", sizes.density_pods, Duration::from_secs(300)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let with_pods = rss_kib(pid)?;
    let density = Density {
        apps: sizes.density_apps,
        deploy_seconds,
        host_rss_before_kib: before,
        host_rss_with_apps_kib: with_apps,
        per_app_bytes: with_apps.saturating_sub(before) as f64 * 1024.0 / sizes.density_apps as f64,
        pods: sizes.density_pods,
        host_rss_with_pods_kib: with_pods,
        per_pod_bytes: with_pods.saturating_sub(with_apps) as f64 * 1024.0
            / f64::from(sizes.density_pods),
    };
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(AutoscaleReport {
        cold_start_embedded,
        cold_start_cluster,
        scale_out_pods: sizes.scale_out_pods,
        scale_out_ms,
        density,
    })
}

pub fn render(r: &AutoscaleReport) -> String {
    let cold = |c: &ColdStarts, goal: f64| {
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples) | p99 ≤ {goal} ms (goal ÷ p99 = {:.2})",
            c.p50_ms,
            c.p99_ms,
            c.max_ms,
            c.samples,
            goal / c.p99_ms
        )
    };
    let mut outs = r.scale_out_ms.clone();
    outs.sort_by(f64::total_cmp);
    let median = outs.get(outs.len() / 2).copied().unwrap_or(f64::NAN);
    let worst = outs.last().copied().unwrap_or(f64::NAN);
    let d = &r.density;
    let (e, c) = (&r.cold_start_embedded, &r.cold_start_cluster);
    format!(
        "## Autoscaling\n\n\
         | measurement | result | goal |\n|---|---|---|\n\
         | Cold start from zero, request → first byte, `dabba up`, one at a time (idle) | {} |\n\
         | Cold start from zero, request → first byte, `dabba up`, back to back | {} |\n\
         | Cold start from zero, request → first byte, 3 controllers, one at a time (idle) | {} |\n\
         | Cold start from zero, request → first byte, 3 controllers, back to back | {} |\n\
         | Scale-out 0 → {} Running pods over 2 hosts | median {median:.0} ms, worst {worst:.0} ms of {} | ≤ 1000 ms (goal ÷ worst = {:.2}) |\n\
         | Apps deployed at zero | {} in {:.1} s; host memory {} → {} KiB, {:.1} KiB per app | ≥ 10,000 apps |\n\
         | Idle pods on one host | {}; host memory {} → {} KiB, {:.1} KiB per pod | ≤ 200 KiB per pod (goal ÷ measured = {:.2}) |\n",
        cold(&e.isolated, 5.0),
        cold(&e.stream, 5.0),
        cold(&c.isolated, 20.0),
        cold(&c.stream, 20.0),
        r.scale_out_pods,
        outs.len(),
        1000.0 / worst,
        thousands(d.apps as f64),
        d.deploy_seconds,
        d.host_rss_before_kib,
        d.host_rss_with_apps_kib,
        d.per_app_bytes / 1024.0,
        d.pods,
        d.host_rss_with_apps_kib,
        d.host_rss_with_pods_kib,
        d.per_pod_bytes / 1024.0,
        200.0 * 1024.0 / d.per_pod_bytes.max(1.0),
    )
}
