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
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use dabba_spec::Digest;
use dabba_spec::api::AppSummary;
use dabba_spec::client::ApiClient;
use dabba_spec::resources::{AppSpec, Route};
use dabba_spec::scale::Scale;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::cluster::start_cluster;
use super::stats::thousands;
use super::targets::{free_port, spawn_logged};

/// The pause before each cold start.
const SETTLE: Duration = Duration::from_millis(50);
/// How often readiness is polled where its exact moment is not measured.
pub(super) const POLL: Duration = Duration::from_millis(50);

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
pub struct ColdStarts {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
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
struct Component {
    bytes: Vec<u8>,
    digest: Digest,
    path: std::path::PathBuf,
}

fn hello(guests: &Path) -> anyhow::Result<Component> {
    let path = guests.join("hello.wasm");
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "{} not found: build the guests with `cargo guests`",
            path.display()
        )
    })?;
    let wasm = dabba_host::component::ComponentBytes::new(bytes, path.display().to_string());
    Ok(Component {
        digest: wasm.digest,
        bytes: wasm.bytes,
        path,
    })
}

fn spec(c: &Component, name: &str, replicas: u32, scale: Option<Scale>) -> AppSpec {
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

/// Applies `specs`, `parallel` at a time.
pub(super) async fn apply_all(
    api: &Arc<ApiClient>,
    specs: Vec<AppSpec>,
    parallel: usize,
) -> anyhow::Result<()> {
    let gate = Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut tasks = tokio::task::JoinSet::new();
    for s in specs {
        let (api, gate) = (api.clone(), gate.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let path = format!("/v1/apps/{}/{}", s.namespace, s.name);
            api.send_json::<_, serde_json::Value>(http::Method::PUT, &path, &s)
                .await
                .with_context(|| format!("applying {}", s.name))?;
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

/// Sends one GET on a connection opened beforehand; the time from writing it to the
/// first byte of the answer, which must be a 200.
pub(super) async fn first_byte(
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> anyhow::Result<Duration> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    let started = Instant::now();
    s.write_all(request.as_bytes()).await?;
    let mut first = [0u8; 1];
    s.read_exact(&mut first).await?;
    let took = started.elapsed();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await?;
    let head = String::from_utf8_lossy(&rest);
    if !head.starts_with("TTP/1.1 200") {
        bail!(
            "GET {path} did not answer 200: H{}",
            head.lines()
                .next()
                .into_iter()
                .chain(head.lines().last())
                .collect::<Vec<_>>()
                .join(" … ")
        );
    }
    Ok(took)
}

/// Waits until `path` on `addr` answers 200, asking again every `pause`.
pub(super) async fn until_ok(
    addr: SocketAddr,
    host: &str,
    path: &str,
    timeout: Duration,
    pause: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match first_byte(addr, host, path).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!("{path} did not answer within {timeout:?}")));
            }
            Err(_) => tokio::time::sleep(pause).await,
        }
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
    c: &Component,
    ingress: SocketAddr,
    n: usize,
    tag: &str,
) -> anyhow::Result<ColdStartRuns> {
    crate::commands::client::upload(api, &c.path, &c.bytes, c.digest).await?;
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

pub(super) fn summarize(mut samples: Vec<f64>) -> ColdStarts {
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

pub(super) async fn app(api: &ApiClient, name: &str) -> anyhow::Result<AppSummary> {
    let apps: Vec<AppSummary> = api.get("/v1/apps?namespace=default").await?;
    apps.into_iter()
        .find(|a| a.name == name)
        .with_context(|| format!("app {name} is missing"))
}

pub(super) async fn scale(api: &ApiClient, name: &str, replicas: u32) -> anyhow::Result<()> {
    api.send_json::<_, serde_json::Value>(
        http::Method::POST,
        &format!("/v1/apps/default/{name}/scale"),
        &serde_json::json!({ "replicas": replicas }),
    )
    .await?;
    Ok(())
}

/// Polls until `name` has `ready` Running pods (and no more desired); returns when.
pub(super) async fn until_ready(
    api: &ApiClient,
    name: &str,
    ready: u32,
    timeout: Duration,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        let a = app(api, name).await?;
        if a.ready == ready && a.desired == ready {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!(
                "{name}: {} of {ready} pods ready after {timeout:?}",
                a.ready
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Resident memory of a process, in KiB.
pub(super) fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    vm_rss_kib(&status).context("no VmRSS")
}

/// The `VmRSS` of a `/proc/PID/status` text, in KiB.
pub(super) fn vm_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The embedded default: `dabba up` in its own process.
async fn embedded(
    dabba: &Path,
    dir: &Path,
    c: &Component,
    n: usize,
    raft_flags: &[String],
) -> anyhow::Result<ColdStartRuns> {
    let (up, api) = start_up(dabba, dir, raft_flags)?;
    let result = cold_starts(&api, c, up.addr, n, "up").await;
    drop(up);
    result
}

/// Starts `dabba up` with its data in `dir/up`; the process (stopped when dropped) and
/// an admin client of its API.
pub(super) fn start_up(
    dabba: &Path,
    dir: &Path,
    raft_flags: &[String],
) -> anyhow::Result<(super::targets::Target, Arc<ApiClient>)> {
    let api_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let mut cmd = Command::new(dabba);
    cmd.args([
        "up",
        "--data-dir",
        &dir.join("up").display().to_string(),
        "--api",
        &api_addr.to_string(),
        "--listen",
        "127.0.0.1:0",
        "--config",
        &dir.join("up-config.json").display().to_string(),
    ])
    .args(raft_flags);
    let up = spawn_logged(cmd, "dabba up", Some(&dir.join("up.log")))?;
    let admin = std::fs::read_to_string(dir.join("up/controller/admin.token"))?;
    let api = Arc::new(ApiClient::new(
        vec![format!("http://{api_addr}")],
        admin.trim().to_string(),
    ));
    Ok((up, api))
}

pub async fn run(
    dabba: &Path,
    guests: &Path,
    sizes: Sizes,
    raft_flags: &[String],
) -> anyhow::Result<AutoscaleReport> {
    let c = hello(guests)?;
    let dir = super::scratch_dir("autoscale")?;

    eprintln!(
        "measuring {} cold starts from zero on dabba up ...",
        sizes.cold_starts
    );
    let cold_start_embedded = embedded(dabba, &dir, &c, sizes.cold_starts, raft_flags).await?;

    eprintln!("starting 3 controllers and 2 hosts ...");
    let cluster = start_cluster(
        dabba,
        &dir,
        raft_flags,
        &[
            &["--memory", "64Gi", "--instances", "20000"],
            &[
                "--memory",
                "64Gi",
                "--instances",
                "20000",
                "--label",
                "role=density",
            ],
        ],
    )
    .await?;
    let api = Arc::new(cluster.admin_api());
    let ingress = cluster.hosts[0].addr;
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
    let host = &cluster.hosts[1];
    let pid = host.child.id();
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
        host.addr,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_memory_is_read_from_proc_status() {
        let status = "Name:\tdabba\nVmPeak:\t  9000 kB\nVmRSS:\t    5632 kB\nThreads:\t4\n";
        assert_eq!(vm_rss_kib(status), Some(5632));
        assert_eq!(
            vm_rss_kib("Name:\tkworker\n"),
            None,
            "kernel threads have none"
        );
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = summarize((1..=100).map(f64::from).collect());
        assert_eq!((s.p50_ms, s.p99_ms, s.max_ms), (50.0, 99.0, 100.0));
        let one = summarize(vec![3.0]);
        assert_eq!((one.p50_ms, one.p99_ms), (3.0, 3.0));
    }
}
