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

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use dabba_spec::client::ApiClient;
use dabba_spec::resources::{AppSpec, Route};
use serde::Serialize;

use super::autoscale::{
    ColdStarts, POLL, apply_all, first_byte, rss_kib, scale, start_up, summarize, until_ok,
    until_ready,
};
use super::chart::{Bar, bars};
use super::docker;
use super::load::{self, Load, LoadResult};
use super::stats::{format_ratio, ratio, thousands};
use super::targets::{self, Target};

/// A free loopback port not handed out before in this run: containers started at once
/// would otherwise be given the same just-released port.
fn free_port() -> anyhow::Result<u16> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    for _ in 0..1000 {
        let port = targets::free_port()?;
        let mut given = GIVEN.lock().expect("port list lock");
        if !given.contains(&port) {
            given.push(port);
            return Ok(port);
        }
    }
    bail!("no unused loopback port found")
}

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
    name: &'static str,
    component: PathBuf,
    native: PathBuf,
    image: String,
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
    let dir = super::scratch_dir("containers")?;
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
    let (up, api) = start_up(dabba, dir, raft_flags)?;
    let bytes = std::fs::read(&search.component)?;
    let wasm = dabba_host::component::ComponentBytes::new(bytes, search.name.to_string());
    crate::commands::client::upload(&api, &search.component, &wasm.bytes, wasm.digest).await?;
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
        up.addr,
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
        let took = first_byte(up.addr, &format!("cold-{i}.bench"), SEARCH_PATH)
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
        let before = rss_kib(up.child.id())?;
        eprintln!("containers: dabba scale-out 0 → {replicas}");
        let started = Instant::now();
        scale(&api, "scale", replicas as u32).await?;
        let ready = until_ready(&api, "scale", replicas as u32, Duration::from_secs(300)).await?;
        let ms = ready.duration_since(started).as_secs_f64() * 1000.0;
        until_ok(
            up.addr,
            "scale.bench",
            SEARCH_PATH,
            Duration::from_secs(30),
            POLL,
        )
        .await?;
        let with = rss_kib(up.child.id())?;
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
        throughput.extend(compare_throughput(dabba, w, wasmtime, sizes).await?);
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
    api.request(
        http::Method::DELETE,
        &format!("/v1/apps/default/{name}"),
        bytes::Bytes::new(),
        "application/json",
    )
    .await
    .with_context(|| format!("deleting app {name}"))?;
    Ok(())
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

/// The load for `workload` against `addr`.
fn load_for(workload: &str, addr: SocketAddr, concurrency: usize, duration: Duration) -> Load {
    let (method, path, headers, unique, body) = if workload == "payment" {
        (
            http::Method::POST,
            "/payments",
            vec![("content-type".to_string(), "application/json".to_string())],
            Some("idempotency-key".to_string()),
            bytes::Bytes::from_static(PAYMENT_BODY.as_bytes()),
        )
    } else {
        (
            http::Method::GET,
            SEARCH_PATH,
            Vec::new(),
            None,
            bytes::Bytes::new(),
        )
    };
    Load {
        addr,
        method,
        path: path.into(),
        headers,
        unique_header: unique,
        body,
        concurrency,
        warmup: Duration::from_secs(1),
        duration,
        max_requests: u64::MAX,
    }
}

async fn measure_load(what: &str, load: &Load) -> anyhow::Result<LoadResult> {
    let r = load::run(load).await?;
    if r.requests == 0 || r.errors > 0 {
        bail!(
            "{what} at concurrency {}: {} answered, {} failed",
            load.concurrency,
            r.requests,
            r.errors
        );
    }
    Ok(r)
}

/// `wasmtime serve`'s flags for `workload`, or why it cannot serve it.
fn wasmtime_flags(workload: &str) -> Result<Vec<&'static str>, String> {
    match workload {
        "search" => Ok(vec!["-Scli", "-Sconfig"]),
        // Measured with wasmtime-cli 48.0.8: `wasmtime serve -Skeyvalue -Sconfig` fails
        // to instantiate the payment component ("component imports instance
        // `wasi:keyvalue/store@0.2.0-draft2` … resource implementation is missing"):
        // serve does not link key-value stores.
        _ => Err("wasmtime serve 48 does not link wasi:keyvalue, which payment needs".into()),
    }
}

async fn compare_throughput(
    dabba: &Path,
    w: &Workload,
    wasmtime: Option<&Path>,
    sizes: &Sizes,
) -> anyhow::Result<Vec<Throughput>> {
    let component = w.component.display().to_string();
    let mut per_target: Vec<Vec<LoadResult>> = Vec::new();
    eprintln!("containers: {} on dabba serve", w.name);
    let serve: Target = if w.name == "payment" {
        targets::dabba_serve(
            dabba,
            &w.component,
            &["--kv-bucket", "ledger", "--config", "bucket=ledger"],
        )?
    } else {
        targets::dabba_serve(dabba, &w.component, &[])?
    };
    let mut rows = Vec::new();
    for &c in &sizes.concurrency {
        rows.push(
            measure_load(
                "dabba serve",
                &load_for(w.name, serve.addr, c, sizes.duration),
            )
            .await?,
        );
    }
    drop(serve);
    per_target.push(rows);

    eprintln!("containers: {} in a container", w.name);
    let port = free_port()?;
    let id = docker::run(&w.image, port, &[("DABBA_CONFIG_BUCKET", "ledger")]).await?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut rows = Vec::new();
    let measured = async {
        until_answers(port, "/health", Duration::from_secs(60)).await?;
        for &c in &sizes.concurrency {
            rows.push(
                measure_load("the container", &load_for(w.name, addr, c, sizes.duration)).await?,
            );
        }
        anyhow::Ok(())
    }
    .await;
    docker::remove(&[id]).await?;
    measured?;
    per_target.push(rows);

    let (wasmtime_rows, note) = match (wasmtime, wasmtime_flags(w.name)) {
        (None, _) => (
            None,
            Some("wasmtime not found (pass --wasmtime)".to_string()),
        ),
        (Some(_), Err(why)) => (None, Some(why)),
        (Some(bin), Ok(flags)) => {
            eprintln!("containers: {} on wasmtime serve", w.name);
            let target = targets::wasmtime_serve_with(bin, Path::new(&component), &flags)?;
            let mut rows = Vec::new();
            for &c in &sizes.concurrency {
                rows.push(
                    measure_load(
                        "wasmtime serve",
                        &load_for(w.name, target.addr, c, sizes.duration),
                    )
                    .await?,
                );
            }
            (Some(rows), None)
        }
    };
    Ok(sizes
        .concurrency
        .iter()
        .enumerate()
        .map(|(i, &concurrency)| {
            let dabba = per_target[0][i].clone();
            let container = per_target[1][i].clone();
            let wasmtime = wasmtime_rows.as_ref().map(|r| r[i].clone());
            Throughput {
                workload: w.name,
                concurrency,
                dabba_over_container: ratio(dabba.rps, Some(container.rps)),
                dabba_over_wasmtime: ratio(dabba.rps, wasmtime.as_ref().map(|w| w.rps)),
                dabba,
                container,
                wasmtime,
                wasmtime_note: note.clone(),
            }
        })
        .collect())
}

fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.0} ms")
    }
}

fn kib(v: f64) -> String {
    if v >= 10_240.0 {
        format!("{:.1} MiB", v / 1024.0)
    } else {
        format!("{v:.0} KiB")
    }
}

/// The Markdown report. Every figure sits next to its baseline and the ratio.
pub fn render(r: &Report) -> String {
    let c = &r.cold_start;
    let mut md = format!(
        "## dabba vs Docker containers (Docker {})\n\n\
         ### Cold start: zero to first 200 (search)\n\n\
         | | p50 | p99 | samples |\n|---|---|---|---|\n\
         | dabba (scaled to zero on `dabba up`) | {} | {} | {} |\n\
         | `docker run` of the native image (baseline) | {} | {} | {} |\n\n\
         dabba is **{}** faster at p50 ({} at p99); goal ≥ 100×.\n\n",
        r.docker_version,
        ms(c.dabba.p50_ms),
        ms(c.dabba.p99_ms),
        c.dabba.samples,
        ms(c.docker.p50_ms),
        ms(c.docker.p99_ms),
        c.docker.samples,
        format_ratio(c.speedup_p50),
        format_ratio(c.speedup_p99),
    );
    md.push_str(
        "### Scale-out 0 → N ready replicas, and memory per replica (search)\n\n\
         | N | dabba | docker (baseline) | dabba faster | dabba per replica (all of dabba / N) | pods' own share | container per replica (cgroup + runtime) | dabba smaller |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for s in &r.scale_out {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} ({} + {}) | {} |\n",
            s.replicas,
            ms(s.dabba_ms),
            ms(s.docker_ms),
            format_ratio(s.speedup),
            kib(s.dabba_kib_per_replica),
            kib(s.dabba_added_kib_per_replica),
            kib(s.docker_kib_per_replica),
            kib(s.docker_cgroup_kib_per_replica),
            kib(s.docker_runtime_kib_per_replica),
            format_ratio(s.memory_ratio),
        ));
    }
    md.push_str("\nMemory goal: dabba ≥ 20× smaller per replica.\n\n### Artifact size\n\n| workload | component | image (baseline) | component smaller |\n|---|---|---|---|\n");
    for a in &r.artifacts {
        md.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            a.workload,
            kib(a.component_bytes as f64 / 1024.0),
            kib(a.image_bytes as f64 / 1024.0),
            format_ratio(a.image_over_component),
        ));
    }
    md.push_str("\n### Throughput and latency (requests/s, p50 / p99)\n\n| workload | concurrency | dabba serve | container (baseline) | vs container | wasmtime serve | vs wasmtime |\n|---|---|---|---|---|---|---|\n");
    let cell = |l: &LoadResult| {
        format!(
            "{}/s, {:.2} / {:.2} ms",
            thousands(l.rps),
            l.latency.p50_us / 1000.0,
            l.latency.p99_us / 1000.0
        )
    };
    for t in &r.throughput {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            t.workload,
            t.concurrency,
            cell(&t.dabba),
            cell(&t.container),
            format_ratio(t.dabba_over_container),
            t.wasmtime
                .as_ref()
                .map(cell)
                .unwrap_or_else(|| format!("n/a: {}", t.wasmtime_note.clone().unwrap_or_default())),
            format_ratio(t.dabba_over_wasmtime),
        ));
    }
    md.push_str("\nThroughput goals: dabba ≥ 0.5× the container and ≥ 2.5× `wasmtime serve`.\n");
    md
}

/// One SVG chart per measurement, by file name.
pub fn charts(r: &Report) -> Vec<(String, String)> {
    let c = &r.cold_start;
    let mut out = vec![(
        "cold-start.svg".to_string(),
        bars(
            "Cold start, zero to first 200 (p50)",
            &format!(
                "search; lower is better; dabba {} faster",
                format_ratio(c.speedup_p50)
            ),
            &[
                Bar::new("dabba", c.dabba.p50_ms, ms(c.dabba.p50_ms)),
                Bar::new("docker run", c.docker.p50_ms, ms(c.docker.p50_ms)),
            ],
        ),
    )];
    let mut scale = Vec::new();
    let mut memory = Vec::new();
    for s in &r.scale_out {
        scale.push(Bar::new(
            format!("dabba, N = {}", s.replicas),
            s.dabba_ms,
            ms(s.dabba_ms),
        ));
        scale.push(Bar::new(
            format!("docker, N = {}", s.replicas),
            s.docker_ms,
            ms(s.docker_ms),
        ));
        memory.push(Bar::new(
            format!("dabba, N = {}", s.replicas),
            s.dabba_kib_per_replica,
            kib(s.dabba_kib_per_replica),
        ));
        memory.push(Bar::new(
            format!("docker, N = {}", s.replicas),
            s.docker_kib_per_replica,
            kib(s.docker_kib_per_replica),
        ));
    }
    out.push((
        "scale-out.svg".into(),
        bars(
            "Scale-out 0 → N ready replicas",
            "search; lower is better",
            &scale,
        ),
    ));
    out.push((
        "memory-per-replica.svg".into(),
        bars("Memory per replica", "search; lower is better", &memory),
    ));
    let sizes: Vec<Bar> = r
        .artifacts
        .iter()
        .flat_map(|a| {
            [
                Bar::new(
                    format!("dabba component, {}", a.workload),
                    a.component_bytes as f64,
                    kib(a.component_bytes as f64 / 1024.0),
                ),
                Bar::new(
                    format!("image, {}", a.workload),
                    a.image_bytes as f64,
                    kib(a.image_bytes as f64 / 1024.0),
                ),
            ]
        })
        .collect();
    out.push((
        "artifact-size.svg".into(),
        bars("Artifact size", "lower is better", &sizes),
    ));
    for workload in ["payment", "search"] {
        let rows: Vec<Bar> = r
            .throughput
            .iter()
            .filter(|t| t.workload == workload)
            .flat_map(|t| {
                let mut b = vec![
                    Bar::new(
                        format!("dabba, c = {}", t.concurrency),
                        t.dabba.rps,
                        format!("{}/s", thousands(t.dabba.rps)),
                    ),
                    Bar::new(
                        format!("container, c = {}", t.concurrency),
                        t.container.rps,
                        format!("{}/s", thousands(t.container.rps)),
                    ),
                ];
                if let Some(w) = &t.wasmtime {
                    b.push(Bar::new(
                        format!("wasmtime serve, c = {}", t.concurrency),
                        w.rps,
                        format!("{}/s", thousands(w.rps)),
                    ));
                }
                b
            })
            .collect();
        out.push((
            format!("throughput-{workload}.svg"),
            bars(
                &format!("Throughput, {workload}"),
                "requests/s; higher is better",
                &rows,
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::stats::Latency;

    fn load(rps: f64) -> LoadResult {
        LoadResult {
            requests: (rps * 5.0) as u64,
            errors: 0,
            seconds: 5.0,
            rps,
            latency: Latency {
                p50_us: 1500.0,
                p90_us: 2000.0,
                p99_us: 4000.0,
                max_us: 9000.0,
            },
        }
    }

    fn cold(p50: f64, p99: f64) -> ColdStarts {
        ColdStarts {
            samples: 20,
            p50_ms: p50,
            p99_ms: p99,
            max_ms: p99,
        }
    }

    fn report() -> Report {
        Report {
            docker_version: "20.10.24".into(),
            artifacts: vec![Artifact {
                workload: "search",
                component_bytes: 512 * 1024,
                image_bytes: 4 * 1024 * 1024,
                image_over_component: Some(8.0),
            }],
            cold_start: ColdStart {
                dabba: cold(2.5, 5.0),
                docker: cold(500.0, 700.0),
                speedup_p50: Some(200.0),
                speedup_p99: Some(140.0),
            },
            scale_out: vec![ScaleOut {
                replicas: 10,
                dabba_ms: 20.0,
                docker_ms: 4000.0,
                speedup: Some(200.0),
                dabba_kib_per_replica: 6000.0,
                dabba_added_kib_per_replica: 100.0,
                docker_kib_per_replica: 18_000.0,
                docker_cgroup_kib_per_replica: 2_000.0,
                docker_runtime_kib_per_replica: 16_000.0,
                memory_ratio: Some(3.0),
            }],
            throughput: vec![Throughput {
                workload: "payment",
                concurrency: 32,
                dabba: load(9000.0),
                container: load(12000.0),
                wasmtime: None,
                wasmtime_note: Some("no named buckets".into()),
                dabba_over_container: Some(0.75),
                dabba_over_wasmtime: None,
            }],
        }
    }

    #[test]
    fn the_report_puts_each_figure_next_to_its_baseline_and_ratio() {
        let md = render(&report());
        for expect in [
            "| dabba (scaled to zero on `dabba up`) | 2.50 ms | 5.00 ms | 20 |",
            "| `docker run` of the native image (baseline) | 500 ms | 700 ms | 20 |",
            "dabba is **200×** faster at p50 (140× at p99)",
            "| 10 | 20 ms | 4000 ms | 200× | 6000 KiB | 100 KiB | 17.6 MiB (2000 KiB + 15.6 MiB) | 3.00× |",
            "| search | 512 KiB | 4096 KiB | 8.00× |",
            "| payment | 32 | 9,000/s, 1.50 / 4.00 ms | 12,000/s, 1.50 / 4.00 ms | 0.750× | n/a: no named buckets | n/a |",
        ] {
            assert!(md.contains(expect), "missing `{expect}` in\n{md}");
        }
    }

    #[test]
    fn every_measurement_has_a_chart() {
        let charts = charts(&report());
        let names: Vec<&str> = charts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "cold-start.svg",
                "scale-out.svg",
                "memory-per-replica.svg",
                "artifact-size.svg",
                "throughput-payment.svg",
                "throughput-search.svg"
            ]
        );
        assert!(charts[0].1.contains("200× faster"));
    }

    #[test]
    fn the_payment_load_makes_a_new_payment_each_time() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let l = load_for("payment", addr, 4, Duration::from_secs(1));
        assert_eq!(l.method, http::Method::POST);
        assert_eq!(l.unique_header.as_deref(), Some("idempotency-key"));
        let s = load_for("search", addr, 4, Duration::from_secs(1));
        assert_eq!(s.method, http::Method::GET);
        assert!(s.path.starts_with("/search?q="));
    }
}
