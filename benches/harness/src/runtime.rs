//! The `runtime` suite: hello-world throughput — `dabba serve` (a fresh instance per
//! request) against a native hyper server answering the same, and `wasmtime serve` on
//! the same component — at each concurrency, one server at a time, under the same
//! closed-loop load from this process.

use std::time::Duration;

use anyhow::{Context, bail};
use dabba_spec::HumanDuration;
use serde::Serialize;

use crate::load::{self, Load, LoadResult};
use crate::stats::{format_ratio, ratio, thousands};
use crate::targets::{self, Server};
use crate::{BenchArgs, Machine, machine, wasmtime_path};

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

pub fn bench_runtime(args: &BenchArgs) -> anyhow::Result<()> {
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
    let dabba = crate::dabba_binary(args)?;
    let native = targets::sibling("baseline-hello")?;
    let wasmtime = wasmtime_path(args)?;

    let logs = crate::scratch_dir("runtime")?;
    // One load-generator thread, so the servers keep the rest of the machine.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let measure = async |server: &Server, c: usize| -> anyhow::Result<LoadResult> {
        let load = Load {
            addr: server.addr,
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
        let r = load::run(&load).await?;
        if r.requests == 0 {
            bail!(
                "no successful request to {} at concurrency {c} ({} errors)",
                server.addr,
                r.errors
            );
        }
        Ok(r)
    };
    let per_server: Vec<Vec<LoadResult>> = rt.block_on(async {
        let mut per_server = Vec::new();
        for name in ["dabba serve", "native hyper", "wasmtime serve"] {
            eprintln!("measuring {name} ...");
            let server = match name {
                "dabba serve" => targets::dabba_serve(&dabba, &hello, &[], &logs).await?,
                "native hyper" => targets::native(&native, &logs).await?,
                _ => targets::wasmtime_serve(&wasmtime, &hello, &logs).await?,
            };
            let mut results = Vec::new();
            for &c in &concurrency {
                results.push(
                    measure(&server, c)
                        .await
                        .with_context(|| format!("measuring {name}"))?,
                );
            }
            per_server.push(results);
        }
        anyhow::Ok(per_server)
    })?;
    let _ = std::fs::remove_dir_all(&logs);
    let rows: Vec<ThroughputRow> = concurrency
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let (d, n, w) = (
                per_server[0][i].clone(),
                per_server[1][i].clone(),
                per_server[2][i].clone(),
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
