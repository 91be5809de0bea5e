//! `dabba bench`: dabba against baselines on the same machine, in one run, reported as
//! ratios next to absolute values.
//!
//! One module per suite: `runtime` (hello-world throughput: `dabba serve` against a native
//! hyper server and `wasmtime serve`), `cluster` (Raft writes, durable payments,
//! failover), `autoscale` (cold starts, scale-out, density), `settlement` (the cron job's
//! throughput) and `containers` (dabba against Docker containers of the same samples).
//! Servers run alone, one after another, under the same closed-loop load from this
//! process. Results go to stdout as Markdown and to `--out` as JSON and Markdown (and SVG
//! charts for `containers`).

mod autoscale;
mod chart;
mod cluster;
mod containers;
mod docker;
mod load;
mod settlement;
mod stats;
mod targets;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use dabba_spec::HumanDuration;
use serde::Serialize;

use load::{Load, LoadResult};
use stats::{format_ratio, ratio, thousands};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    /// Hello-world throughput: dabba serve vs native hyper vs wasmtime serve.
    Runtime,
    /// The control plane: Raft writes, durable payments through the ingress, failover.
    Cluster,
    /// Autoscaling: cold starts from zero, scale-out to 100 pods, density.
    Autoscale,
    /// The settlement job: payments settled per second over a 1,000,000-payment day.
    Settlement,
    /// dabba against Docker containers and `wasmtime serve` on the payment and search
    /// samples: cold start, scale-out, memory per replica, artifact size, throughput.
    Containers,
    /// All of them.
    All,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(long, value_enum, default_value = "runtime")]
    pub suite: Suite,
    /// Leader failovers to measure in the cluster suite. Default: 5 (2 with --quick).
    #[arg(long, value_name = "N")]
    pub failovers: Option<usize>,
    /// Raft heartbeat interval for the benchmarks' controllers. Default: theirs.
    #[arg(long, value_name = "DURATION")]
    pub heartbeat_interval: Option<HumanDuration>,
    /// Raft election timeout for the benchmarks' controllers. Default: theirs.
    #[arg(long, value_name = "DURATION")]
    pub election_timeout: Option<HumanDuration>,
    /// A short run (1 s per measurement, concurrency 32) that checks every measurement can
    /// be taken.
    #[arg(long)]
    pub quick: bool,
    /// Concurrent connections to measure at, comma-separated. Default: 1,32,128.
    #[arg(long, value_delimiter = ',', value_name = "N,...")]
    pub concurrency: Vec<usize>,
    /// How long each measurement runs, after a 1 s warm-up. Default: 5s (1s with --quick).
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<HumanDuration>,
    /// Payments in the settlement suite's ledger. Default: 1,000,000 (20,000 with --quick).
    #[arg(long, value_name = "N")]
    pub payments: Option<u64>,
    /// Where the native servers for the container images are (`cargo build --profile
    /// container -p dabba-baseline`).
    #[arg(long, value_name = "DIR", default_value = "target/container")]
    pub native: PathBuf,
    /// Where the guest components are. Default: target/wasm32-wasip2/guest.
    #[arg(long, value_name = "DIR", default_value = "target/wasm32-wasip2/guest")]
    pub guests: PathBuf,
    /// The wasmtime CLI to compare with. Default: `wasmtime` on PATH.
    #[arg(long, value_name = "PATH")]
    pub wasmtime: Option<PathBuf>,
    /// Directory for the JSON and Markdown results.
    #[arg(long, value_name = "DIR", default_value = "bench-results")]
    pub out: PathBuf,
}

#[derive(Debug, Serialize)]
struct Machine {
    cores: usize,
    memory_kib: Option<u64>,
    kernel: Option<String>,
    when_unix: u64,
}

#[derive(Debug, Serialize)]
struct ThroughputRow {
    concurrency: usize,
    dabba: LoadResult,
    native: LoadResult,
    wasmtime: LoadResult,
    dabba_over_native: Option<f64>,
    dabba_over_wasmtime: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    workload: &'static str,
    throughput: Vec<ThroughputRow>,
}

pub fn bench(args: BenchArgs) -> anyhow::Result<()> {
    if matches!(args.suite, Suite::Cluster | Suite::All) {
        bench_cluster(&args)?;
    }
    if matches!(args.suite, Suite::Autoscale | Suite::All) {
        bench_autoscale(&args)?;
    }
    if matches!(args.suite, Suite::Containers | Suite::All) {
        bench_containers(&args)?;
    }
    if matches!(args.suite, Suite::Settlement | Suite::All) {
        bench_settlement(&args)?;
    }
    if matches!(args.suite, Suite::Runtime | Suite::All) {
        bench_runtime(&args)?;
    }
    Ok(())
}

/// The Raft timing flags to pass to every controller, if given.
fn raft_flags(args: &BenchArgs) -> Vec<String> {
    let mut flags = Vec::new();
    if let Some(h) = args.heartbeat_interval {
        flags.extend([
            "--heartbeat-interval".to_string(),
            format!("{}ms", h.get().as_millis()),
        ]);
    }
    if let Some(e) = args.election_timeout {
        flags.extend([
            "--election-timeout".to_string(),
            format!("{}ms", e.get().as_millis()),
        ]);
    }
    flags
}

fn bench_autoscale(args: &BenchArgs) -> anyhow::Result<()> {
    let sizes = if args.quick {
        autoscale::Sizes::quick()
    } else {
        autoscale::Sizes::full()
    };
    let dabba = std::env::current_exe()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let report = rt.block_on(autoscale::run(
        &dabba,
        &args.guests,
        sizes,
        &raft_flags(args),
    ))?;
    write_results(args, "autoscale", &report, &autoscale::render(&report))
}

fn bench_containers(args: &BenchArgs) -> anyhow::Result<()> {
    let mut sizes = if args.quick {
        containers::Sizes::quick()
    } else {
        containers::Sizes::full()
    };
    if !args.concurrency.is_empty() {
        sizes.concurrency = args.concurrency.clone();
    }
    if let Some(d) = args.duration {
        sizes.duration = d.get();
    }
    let wasmtime = wasmtime_path(args)?;
    let dabba = std::env::current_exe()?;
    // Two load-generator threads: enough to drive the servers at 128 connections while
    // leaving them most of the machine.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let raft_flags = raft_flags(args);
    let report = rt.block_on(containers::run(&containers::Setup {
        dabba: &dabba,
        guests: &args.guests,
        native_dir: &args.native,
        wasmtime: Some(&wasmtime),
        sizes,
        raft_flags: &raft_flags,
    }))?;
    write_results(args, "containers", &report, &containers::render(&report))?;
    for (name, svg) in containers::charts(&report) {
        std::fs::write(args.out.join(&name), svg)?;
    }
    Ok(())
}

/// `--wasmtime`, else `wasmtime` on PATH.
fn wasmtime_path(args: &BenchArgs) -> anyhow::Result<PathBuf> {
    match &args.wasmtime {
        Some(p) => Ok(p.clone()),
        None => targets::which("wasmtime").context(
            "wasmtime not found on PATH: install it with `cargo install --locked wasmtime-cli@48.0.8` or pass --wasmtime",
        ),
    }
}

fn bench_settlement(args: &BenchArgs) -> anyhow::Result<()> {
    let mut sizes = if args.quick {
        settlement::Sizes::quick()
    } else {
        settlement::Sizes::full()
    };
    if let Some(n) = args.payments {
        sizes.payments = n;
    }
    // One thread: the job, and the store answering it, on one core.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let dabba = std::env::current_exe()?;
    let report = rt.block_on(settlement::run(
        &dabba,
        &args.guests,
        sizes,
        &raft_flags(args),
    ))?;
    write_results(args, "settlement", &report, &settlement::render(&report))
}

/// A fresh scratch directory for suite `name` (removed by the suite when it is done).
fn scratch_dir(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("dabba-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Prints the Markdown and writes `NAME.json` (with the machine) and `NAME.md` to `--out`.
fn write_results<T: Serialize>(
    args: &BenchArgs,
    name: &str,
    report: &T,
    markdown: &str,
) -> anyhow::Result<()> {
    print!("{markdown}");
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let json = serde_json::json!({"machine": machine(), name: report});
    std::fs::write(
        args.out.join(format!("{name}.json")),
        serde_json::to_vec_pretty(&json)?,
    )?;
    std::fs::write(args.out.join(format!("{name}.md")), markdown)?;
    eprintln!("results written to {}", args.out.display());
    Ok(())
}

fn bench_cluster(args: &BenchArgs) -> anyhow::Result<()> {
    let duration = args
        .duration
        .map(HumanDuration::get)
        .unwrap_or(Duration::from_secs(if args.quick { 2 } else { 10 }));
    let failovers = args.failovers.unwrap_or(if args.quick { 2 } else { 5 });
    let dabba = std::env::current_exe()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let raft_flags = raft_flags(args);
    let report = rt.block_on(cluster::run(
        &dabba,
        &args.guests,
        duration,
        failovers,
        &raft_flags,
    ))?;
    write_results(args, "cluster", &report, &cluster::render(&report))
}

fn bench_runtime(args: &BenchArgs) -> anyhow::Result<()> {
    let concurrency = match (&args.concurrency[..], args.quick) {
        ([], true) => vec![32],
        ([], false) => vec![1, 32, 128],
        (c, _) => c.to_vec(),
    };
    let duration = args
        .duration
        .map(HumanDuration::get)
        .unwrap_or(if args.quick {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(5)
        });
    let hello = args.guests.join("hello.wasm");
    if !hello.is_file() {
        bail!(
            "{} not found: build the guests with `cargo guests`",
            hello.display()
        );
    }
    let dabba = std::env::current_exe()?;
    let native = targets::sibling("baseline-hello")?;
    let wasmtime = wasmtime_path(args)?;

    // One load-generator thread, so the servers keep the rest of the machine.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let measure = |target: &targets::Target, c: usize| -> anyhow::Result<LoadResult> {
        let load = Load {
            addr: target.addr,
            method: http::Method::GET,
            path: "/".into(),
            headers: Vec::new(),
            unique_header: None,
            body: bytes::Bytes::new(),
            concurrency: c,
            warmup: Duration::from_secs(1),
            duration,
            max_requests: u64::MAX,
        };
        let r = rt.block_on(load::run(&load))?;
        if r.requests == 0 {
            bail!(
                "no successful request to {} at concurrency {c} ({} errors)",
                target.addr,
                r.errors
            );
        }
        Ok(r)
    };
    let mut per_target: Vec<Vec<LoadResult>> = Vec::new();
    for (name, start) in [
        (
            "dabba serve",
            Box::new(|| targets::dabba_serve(&dabba, &hello, &[]))
                as Box<dyn Fn() -> anyhow::Result<targets::Target>>,
        ),
        ("native hyper", Box::new(|| targets::native(&native))),
        (
            "wasmtime serve",
            Box::new(|| targets::wasmtime_serve(&wasmtime, &hello)),
        ),
    ] {
        eprintln!("measuring {name} ...");
        let target = start()?;
        let results = concurrency
            .iter()
            .map(|&c| measure(&target, c).with_context(|| format!("measuring {name}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        per_target.push(results);
    }
    let rows: Vec<ThroughputRow> = concurrency
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let (d, n, w) = (
                per_target[0][i].clone(),
                per_target[1][i].clone(),
                per_target[2][i].clone(),
            );
            ThroughputRow {
                concurrency: c,
                dabba_over_native: ratio(d.rps, Some(n.rps)),
                dabba_over_wasmtime: ratio(d.rps, Some(w.rps)),
                dabba: d,
                native: n,
                wasmtime: w,
            }
        })
        .collect();
    let report = Report {
        machine: machine(),
        workload: "hello (tests/guests/hello): a fresh instance per request",
        throughput: rows,
    };
    let markdown = render(&report);
    print!("{markdown}");
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    std::fs::write(
        args.out.join("throughput.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    std::fs::write(args.out.join("throughput.md"), &markdown)?;
    eprintln!("results written to {}", args.out.display());
    Ok(())
}

fn render(r: &Report) -> String {
    let m = &r.machine;
    let mut s = format!(
        "## Hello-world throughput\n\nMachine: {} cores, {} MiB, kernel {}. Workload: {}.\n\n",
        m.cores,
        m.memory_kib
            .map(|k| (k / 1024).to_string())
            .unwrap_or_else(|| "?".into()),
        m.kernel.as_deref().unwrap_or("?"),
        r.workload
    );
    s.push_str("| concurrency | dabba req/s | native req/s | wasmtime serve req/s | dabba ÷ native | dabba ÷ wasmtime serve | p50 / p99 µs: dabba | native | wasmtime serve |\n");
    s.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for row in &r.throughput {
        let lat = |l: &LoadResult| format!("{:.0} / {:.0}", l.latency.p50_us, l.latency.p99_us);
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.concurrency,
            thousands(row.dabba.rps),
            thousands(row.native.rps),
            thousands(row.wasmtime.rps),
            format_ratio(row.dabba_over_native),
            format_ratio(row.dabba_over_wasmtime),
            lat(&row.dabba),
            lat(&row.native),
            lat(&row.wasmtime),
        ));
    }
    s
}

fn machine() -> Machine {
    let memory_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    });
    Machine {
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        memory_kib,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|s| s.trim().to_string()),
        when_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    }
}
