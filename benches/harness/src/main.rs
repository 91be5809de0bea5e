//! `dabba-bench`, run as `dabba bench`: dabba against baselines on the same machine, in
//! one run, reported as ratios next to absolute values.
//!
//! It is its own binary so that the product does not carry the harness (the load
//! generator's histograms, the settlement sample's code, Docker handling): `dabba bench
//! ARGS` runs the `dabba-bench` next to it, and this finds the `dabba` next to itself.
//! Every dabba process it measures is started by `dabba-testkit`, as the tests start
//! them.
//!
//! One module per suite: `runtime` (hello-world throughput: `dabba serve` against a
//! native hyper server and `wasmtime serve`), `cluster` (Raft writes, durable payments,
//! failover), `autoscale` (cold starts, scale-out, density), `settlement` (the cron job's
//! throughput), `rollout` (abort, split, blue-green switch), `regions` (region loss,
//! drain, the cost of spreading voters; emulated regions, needs root) and `containers` (dabba against Docker containers of the same samples;
//! its `throughput` and `report` submodules). Shared pieces: `load` (the load
//! generator), `probe` (one request timed, polls until an answer, process memory),
//! `targets` (the baseline servers), `docker`, `stats`, `chart`. Servers run alone, one
//! after another, under the same closed-loop load from this process. Results go to
//! stdout as Markdown and to `--out` as JSON and Markdown (and SVG charts for
//! `containers`).

mod autoscale;
mod chart;
mod cluster;
mod containers;
mod deploy;
mod docker;
mod load;
mod probe;
mod regions;
mod rollout;
mod runtime;
mod settlement;
mod state;
mod stats;
mod targets;

use std::path::PathBuf;
use std::time::Duration;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use dabba_spec::HumanDuration;
use serde::Serialize;

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
    /// Workload state: controller memory, restart and catch-up of a follower, as a
    /// ledger of 10,000,000 payments grows in the controllers' store.
    State,
    /// Rollouts: abort detection and propagation, split accuracy, blue-green switch.
    Rollout,
    /// Regions (emulated; needs root): RTO and RPO over region losses, planned drain
    /// and failback, write cost of voters in three regions, the standby's cost.
    Regions,
    /// dabba against Docker containers and `wasmtime serve` on the payment and search
    /// samples: cold start, scale-out, memory per replica, artifact size, throughput.
    Containers,
    /// All of them.
    All,
}

/// Measure dabba against its baselines on this machine: native servers, `wasmtime
/// serve`, Docker containers (see --suite).
#[derive(Debug, Parser)]
#[command(name = "dabba bench", bin_name = "dabba bench", version)]
pub struct BenchArgs {
    /// The `dabba` binary to measure. Default: the one next to this program.
    #[arg(long, value_name = "PATH")]
    pub dabba: Option<PathBuf>,
    /// What to measure.
    #[arg(long, value_enum, default_value = "runtime")]
    pub suite: Suite,
    /// Leader failovers to measure in the cluster suite (region losses in the regions
    /// suite). Default: 5 (2 with --quick; 1 region loss).
    #[arg(long, value_name = "N")]
    pub failovers: Option<usize>,
    /// Raft heartbeat interval for the benchmarks' controllers. Default: theirs.
    #[arg(long, value_name = "DURATION")]
    pub heartbeat_interval: Option<HumanDuration>,
    /// Raft election timeout for the benchmarks' controllers. Default: theirs.
    #[arg(long, value_name = "DURATION")]
    pub election_timeout: Option<HumanDuration>,
    /// The controllers' `--blob-bandwidth` (components moved at most this many bytes a
    /// second). Default: theirs.
    #[arg(long, value_name = "SIZE")]
    pub blob_bandwidth: Option<dabba_spec::ByteSize>,
    /// The controllers' `--kv-cache` (memory for the workload store's cache). Default:
    /// theirs.
    #[arg(long, value_name = "SIZE")]
    pub kv_cache: Option<dabba_spec::ByteSize>,
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
    /// Payments in the settlement suite's ledger (default 1,000,000) and the state
    /// suite's (default 10,000,000); 20,000 with --quick.
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
pub(crate) struct Machine {
    cores: usize,
    memory_kib: Option<u64>,
    kernel: Option<String>,
    when_unix: u64,
}

/// The allocator `dabba` itself uses, so the native baselines measured here (the
/// settlement in memory, the native servers) run on the same footing as dabba.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let args = BenchArgs::parse();
    match bench(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The `dabba` binary: `--dabba`, else the one next to this program.
pub(crate) fn dabba_binary(args: &BenchArgs) -> anyhow::Result<PathBuf> {
    match &args.dabba {
        Some(p) => Ok(p.clone()),
        None => targets::sibling("dabba"),
    }
}

fn bench(args: BenchArgs) -> anyhow::Result<()> {
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
    if matches!(args.suite, Suite::State | Suite::All) {
        bench_state(&args)?;
    }
    if matches!(args.suite, Suite::Rollout | Suite::All) {
        bench_rollout(&args)?;
    }
    if matches!(args.suite, Suite::Regions | Suite::All) {
        bench_regions(&args)?;
    }
    if matches!(args.suite, Suite::Runtime | Suite::All) {
        runtime::bench_runtime(&args)?;
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
    if let Some(b) = args.blob_bandwidth {
        flags.extend(["--blob-bandwidth".to_string(), b.as_u64().to_string()]);
    }
    if let Some(c) = args.kv_cache {
        flags.extend(["--kv-cache".to_string(), c.as_u64().to_string()]);
    }
    flags
}

fn bench_autoscale(args: &BenchArgs) -> anyhow::Result<()> {
    let sizes = if args.quick {
        autoscale::Sizes::quick()
    } else {
        autoscale::Sizes::full()
    };
    let dabba = dabba_binary(args)?;
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

fn bench_rollout(args: &BenchArgs) -> anyhow::Result<()> {
    let sizes = if args.quick {
        rollout::Sizes::quick()
    } else {
        rollout::Sizes::full()
    };
    let dabba = dabba_binary(args)?;
    // Two load-generator threads, as for the containers.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = rt.block_on(rollout::run(&dabba, &args.guests, sizes, &raft_flags(args)))?;
    write_results(args, "rollout", &report, &rollout::render(&report))
}

fn bench_regions(args: &BenchArgs) -> anyhow::Result<()> {
    let mut sizes = if args.quick {
        regions::Sizes::quick()
    } else {
        regions::Sizes::full()
    };
    if let Some(n) = args.failovers {
        sizes.kills = n;
    }
    if let Some(d) = args.duration {
        sizes.duration = d.get();
    }
    let dabba = dabba_binary(args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = rt.block_on(regions::run(&dabba, &args.guests, sizes, &raft_flags(args)))?;
    write_results(args, "regions", &report, &regions::render(&report))
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
    let dabba = dabba_binary(args)?;
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
    write_results(
        args,
        "containers",
        &report,
        &containers::report::render(&report),
    )?;
    for (name, svg) in containers::report::charts(&report) {
        std::fs::write(args.out.join(&name), svg)?;
    }
    Ok(())
}

/// `--wasmtime`, else `wasmtime` on PATH.
pub(crate) fn wasmtime_path(args: &BenchArgs) -> anyhow::Result<PathBuf> {
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
    let dabba = dabba_binary(args)?;
    let report = rt.block_on(settlement::run(
        &dabba,
        &args.guests,
        sizes,
        &raft_flags(args),
    ))?;
    write_results(args, "settlement", &report, &settlement::render(&report))
}

fn bench_state(args: &BenchArgs) -> anyhow::Result<()> {
    let payments = args
        .payments
        .unwrap_or(if args.quick { 20_000 } else { 10_000_000 });
    let rt = tokio::runtime::Runtime::new()?;
    let dabba = dabba_binary(args)?;
    let batch = if args.quick {
        state::QUICK_BATCH
    } else {
        state::RAFT_BATCH
    };
    let report = rt.block_on(state::run(&dabba, payments, batch, &raft_flags(args)))?;
    write_results(args, "state", &report, &state::render(&report))
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
    let dabba = dabba_binary(args)?;
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
        if args.quick { 16 } else { 100 },
    ))?;
    write_results(args, "cluster", &report, &cluster::render(&report))
}

pub(crate) fn machine() -> Machine {
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
