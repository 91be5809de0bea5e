//! dabba against Docker containers (and `wasmtime serve`) running the same workloads, in
//! one run on one machine.
//!
//! The container side is the samples' own handlers compiled natively and served by the
//! SDK's hyper adapter (`benches/baseline`: `payment-native`, `search-native`), packaged
//! here into `FROM scratch` images holding the binary and the glibc libraries it links —
//! built locally, no registry. Containers publish their port on 127.0.0.1 only, and all
//! load goes to loopback.
//!
//! Measured:
//! 1. cold start, zero to first 200: a search app scaled to zero on `dabba up` (the
//!    request is held by the activator while a pod starts) against `docker run` of the
//!    search image until it answers;
//! 2. scale-out 0 → N ready replicas: dabba pods against containers;
//! 3. memory per replica at N: `dabba up`'s whole resident memory over its pods against
//!    each container's cgroup memory plus its runtime processes (shim, proxy);
//! 4. artifact size: component bytes against image bytes;
//! 5. throughput and latency at fixed concurrency for payment and search: `dabba serve`
//!    against the container and `wasmtime serve` on the same component.
//!
//! This module measures cold starts, scale-out and memory; `throughput` the throughput
//! rows; `report` turns a [`Report`] into Markdown and SVG.

pub mod report;
mod throughput;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use dabba_client::ApiClient;
use dabba_host::ComponentBytes;
use dabba_spec::resources::{AppSpec, Route};
use dabba_testkit::free_port;
use serde::Serialize;

use crate::autoscale::start_up;
use crate::deploy::{apply_all, key, scale, until_ready, upload};
use crate::docker;
use crate::load::LoadResult;
use crate::probe::{POLL, first_byte, rss_kib, until_ok};
use crate::stats::{ColdStarts, ratio, summarize};

/// The search request every cold start and readiness probe sends.
const SEARCH_PATH: &str = "/search?q=samsng+phone&max_price=20000&sort=price_asc&page_size=3";
const PAYMENT_BODY: &str =
    r#"{"merchant_id":"m_bench","payer_vpa":"asha@okhdfc","amount":250050,"currency":"INR"}"#;

#[derive(Debug, Clone)]
pub struct Sizes {
    pub cold_starts: usize,
    pub scale_out: Vec<usize>,
    pub concurrency: Vec<usize>,
    pub duration: Duration,
}

impl Sizes {
    pub fn full() -> Sizes {
        Sizes {
            cold_starts: 20,
            scale_out: vec![10, 100],
            concurrency: vec![1, 32, 128],
            duration: Duration::from_secs(5),
        }
    }

    pub fn quick() -> Sizes {
        Sizes {
            cold_starts: 3,
            scale_out: vec![10],
            concurrency: vec![32],
            duration: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Artifact {
    pub workload: &'static str,
    pub component_bytes: u64,
    pub image_bytes: u64,
    /// How many times smaller the component is.
    pub image_over_component: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct ColdStart {
    pub dabba: ColdStarts,
    pub docker: ColdStarts,
    /// How many times faster dabba is at p50 (docker p50 / dabba p50).
    pub speedup_p50: Option<f64>,
    pub speedup_p99: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct ScaleOut {
    pub replicas: usize,
    pub dabba_ms: f64,
    pub docker_ms: f64,
    pub speedup: Option<f64>,
    /// `dabba up`'s resident memory with the pods, over the pods (all of dabba counted).
    pub dabba_kib_per_replica: f64,
    /// What the pods added to `dabba up`'s resident memory, per pod.
    pub dabba_added_kib_per_replica: f64,
    /// Per container: its cgroup's memory plus its share of the runtime processes.
    pub docker_kib_per_replica: f64,
    pub docker_cgroup_kib_per_replica: f64,
    pub docker_runtime_kib_per_replica: f64,
    /// How many times smaller a dabba replica is (docker / dabba, all of dabba counted).
    pub memory_ratio: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub workload: &'static str,
    pub concurrency: usize,
    pub dabba: LoadResult,
    pub container: LoadResult,
    pub wasmtime: Option<LoadResult>,
    /// Why `wasmtime serve` has no figure, when it has none.
    pub wasmtime_note: Option<String>,
    pub dabba_over_container: Option<f64>,
    pub dabba_over_wasmtime: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub docker_version: String,
    pub artifacts: Vec<Artifact>,
    pub cold_start: ColdStart,
    pub scale_out: Vec<ScaleOut>,
    pub throughput: Vec<Throughput>,
}

/// One sample workload, in both its forms.
struct Workload {
    pub name: &'static str,
    pub component: PathBuf,
    pub native: PathBuf,
    pub image: String,
}

/// What the suite runs, and where things are.
pub struct Setup<'a> {
    pub dabba: &'a Path,
    pub guests: &'a Path,
    /// Where `payment-native` and `search-native` are.
    pub native_dir: &'a Path,
    pub wasmtime: Option<&'a Path>,
    pub sizes: Sizes,
    pub raft_flags: &'a [String],
}

pub async fn run(setup: &Setup<'_>) -> anyhow::Result<Report> {
    let docker_version = docker::version().await?;
    docker::remove_leftovers().await?;
    let dir = crate::scratch_dir("containers")?;
    let outcome = measure(setup, &dir, docker_version).await;
    let _ = docker::remove_leftovers().await;
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

async fn measure(setup: &Setup<'_>, dir: &Path, docker_version: String) -> anyhow::Result<Report> {
    let Setup {
        dabba,
        guests,
        native_dir,
        wasmtime,
        ref sizes,
        raft_flags,
    } = *setup;
    let mut workloads = Vec::new();
    let mut artifacts = Vec::new();
    for name in ["payment", "search"] {
        let w = Workload {
            name,
            component: guests.join(format!("{name}.wasm")),
            native: native_dir.join(format!("{name}-native")),
            image: format!("dabba-bench/{name}-native:latest"),
        };
        let component_bytes = std::fs::metadata(&w.component)
            .with_context(|| {
                format!(
                    "{} not found: build the guests with `cargo guests`",
                    w.component.display()
                )
            })?
            .len();
        if !w.native.is_file() {
            bail!(
                "{} not found: build it with `cargo build --profile container -p dabba-baseline`",
                w.native.display()
            );
        }
        eprintln!("containers: building image {}", w.image);
        let image_bytes = docker::build_image(&w.image, &w.native, dir).await?;
        artifacts.push(Artifact {
            workload: name,
            component_bytes,
            image_bytes,
            image_over_component: ratio(image_bytes as f64, Some(component_bytes as f64)),
        });
        workloads.push(w);
    }
    let search = &workloads[1];

    // On `dabba up`: cold starts from zero, then scale-out and memory.
    let up = start_up(dabba, dir, raft_flags).await?;
    let api = Arc::new(up.api().clone());
    let up_pid = up.process.pid().context("dabba up is not running")?;
    let wasm = ComponentBytes::read(&search.component)?;
    upload(&api, &wasm).await?;
    let app = |name: String, replicas: u32, scale: Option<dabba_spec::scale::Scale>| AppSpec {
        route: Route {
            prefix: "/search".into(),
            host: Some(format!("{name}.bench")),
        },
        name,
        namespace: "default".into(),
        component: wasm.digest,
        replicas,
        limits: dabba_spec::LimitOverrides {
            memory: Some(dabba_spec::ByteSize::mib(64)),
            ..Default::default()
        },
        capabilities: Default::default(),
        node_selector: Default::default(),
        scale,
        rollout: None,
        analysis: Vec::new(),
        regions: None,
        rate_limit: None,
    };
    let n = sizes.cold_starts;
    let cold: Vec<AppSpec> = (0..n)
        .map(|i| {
            let scale = dabba_spec::scale::Scale {
                min: 0,
                max: 2,
                scale_to_zero_after: dabba_spec::HumanDuration::from_secs(600),
                ..Default::default()
            };
            app(format!("cold-{i}"), 0, Some(scale))
        })
        .collect();
    apply_all(&api, cold, 8).await?;
    apply_all(&api, vec![app("warm".into(), 1, None)], 1).await?;
    until_ok(
        up.ingress,
        "warm.bench",
        SEARCH_PATH,
        Duration::from_secs(120),
        POLL,
    )
    .await?;
    eprintln!("containers: {n} cold starts on dabba up");
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let took = first_byte(up.ingress, &format!("cold-{i}.bench"), SEARCH_PATH)
            .await
            .with_context(|| format!("dabba cold start {i}"))?;
        samples.push(took.as_secs_f64() * 1000.0);
    }
    let dabba_cold = summarize(samples);
    for i in 0..n {
        delete_app(&api, &format!("cold-{i}")).await?;
    }
    delete_app(&api, "warm").await?;

    let mut dabba_scale = Vec::new();
    apply_all(&api, vec![app("scale".into(), 0, None)], 1).await?;
    until_ready(&api, "scale", 0, Duration::from_secs(60)).await?;
    for &replicas in &sizes.scale_out {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = rss_kib(up_pid)?;
        eprintln!("containers: dabba scale-out 0 → {replicas}");
        let started = Instant::now();
        scale(&api, "scale", replicas as u32).await?;
        let ready = until_ready(&api, "scale", replicas as u32, Duration::from_secs(300)).await?;
        let ms = ready.duration_since(started).as_secs_f64() * 1000.0;
        until_ok(
            up.ingress,
            "scale.bench",
            SEARCH_PATH,
            Duration::from_secs(30),
            POLL,
        )
        .await?;
        let with = rss_kib(up_pid)?;
        dabba_scale.push((ms, with, before));
        scale(&api, "scale", 0).await?;
        until_ready(&api, "scale", 0, Duration::from_secs(120)).await?;
    }
    drop(up);

    eprintln!("containers: {n} cold starts with docker run");
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let port = free_port()?;
        let started = Instant::now();
        let id = docker::run(&search.image, port, &[]).await?;
        let answered = until_answers(port, SEARCH_PATH, Duration::from_secs(60)).await;
        let took = started.elapsed();
        docker::remove(&[id]).await?;
        answered.with_context(|| format!("docker cold start {i}"))?;
        samples.push(took.as_secs_f64() * 1000.0);
    }
    let docker_cold = summarize(samples);

    let mut scale_out = Vec::new();
    for (&replicas, (dabba_ms, with, before)) in sizes.scale_out.iter().zip(dabba_scale) {
        eprintln!("containers: docker scale-out 0 → {replicas}");
        let (docker_ms, cgroup_kib, runtime_kib) =
            docker_scale_out(&search.image, replicas).await?;
        let per = |kib: u64| kib as f64 / replicas as f64;
        let dabba_per = per(with);
        let docker_per = per(cgroup_kib + runtime_kib);
        scale_out.push(ScaleOut {
            replicas,
            dabba_ms,
            docker_ms,
            speedup: ratio(docker_ms, Some(dabba_ms)),
            dabba_kib_per_replica: dabba_per,
            dabba_added_kib_per_replica: per(with.saturating_sub(before)),
            docker_kib_per_replica: docker_per,
            docker_cgroup_kib_per_replica: per(cgroup_kib),
            docker_runtime_kib_per_replica: per(runtime_kib),
            memory_ratio: ratio(docker_per, Some(dabba_per)),
        });
    }

    let mut throughput = Vec::new();
    for w in &workloads {
        throughput.extend(throughput::compare_throughput(dabba, w, wasmtime, sizes, dir).await?);
    }
    Ok(Report {
        docker_version,
        artifacts,
        cold_start: ColdStart {
            speedup_p50: ratio(docker_cold.p50_ms, Some(dabba_cold.p50_ms)),
            speedup_p99: ratio(docker_cold.p99_ms, Some(dabba_cold.p99_ms)),
            dabba: dabba_cold,
            docker: docker_cold,
        },
        scale_out,
        throughput,
    })
}

async fn delete_app(api: &Arc<ApiClient>, name: &str) -> anyhow::Result<()> {
    api.delete_app(&key(name))
        .await
        .with_context(|| format!("deleting app {name}"))
}

/// Polls `path` on `127.0.0.1:port` every millisecond until it answers 200 (a
/// container's start is timed by it).
async fn until_answers(port: u16, path: &str, timeout: Duration) -> anyhow::Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    until_ok(addr, "bench", path, timeout, Duration::from_millis(1)).await
}

/// Starts `replicas` containers at once (eight `docker run`s in flight) and waits until
/// every one answers; the time, then the containers' cgroup memory and what the runtime
/// processes added, in KiB. The containers are removed.
async fn docker_scale_out(image: &str, replicas: usize) -> anyhow::Result<(f64, u64, u64)> {
    let runtime_before = docker::runtime_overhead_kib();
    let gate = Arc::new(tokio::sync::Semaphore::new(8));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..replicas {
        let (gate, image) = (gate.clone(), image.to_string());
        tasks.spawn(async move {
            let port = free_port()?;
            let id = {
                let _permit = gate.acquire_owned().await?;
                docker::run(&image, port, &[]).await?
            };
            let answered = until_answers(port, SEARCH_PATH, Duration::from_secs(300)).await;
            anyhow::Ok((id, answered))
        });
    }
    let mut ids = Vec::new();
    let mut failed = None;
    while let Some(r) = tasks.join_next().await {
        match r? {
            Ok((id, answered)) => {
                ids.push(id);
                if let Err(e) = answered {
                    failed.get_or_insert(e);
                }
            }
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let measured = (|| {
        if let Some(e) = failed {
            return Err(e);
        }
        let cgroup: u64 = ids
            .iter()
            .map(|id| docker::memory_bytes(id))
            .sum::<anyhow::Result<u64>>()?;
        let runtime = docker::runtime_overhead_kib().saturating_sub(runtime_before);
        Ok((ms, cgroup / 1024, runtime))
    })();
    docker::remove(&ids).await?;
    measured
}
