//! `dabba bench --suite cluster`: the control plane under load, on a real 3-controller
//! cluster and one host, all separate processes on loopback.
//!
//! - Raft writes: KV writes sent straight to the leader's API (each is one Raft entry,
//!   acknowledged once durable on a quorum): latency from one client, then throughput
//!   from many (openraft batches concurrent entries into one append and one fsync).
//! - Durable payments: the payment sample through the host's ingress, every request a
//!   new payment (a unique idempotency key), each making three replicated writes.
//! - Failover: the leader is killed (SIGKILL) while a client writes; the time from the
//!   kill to the next committed write, through the surviving controllers.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use dabba_client::ApiClient;
use dabba_host::ComponentBytes;
use dabba_spec::Manifest;
use dabba_spec::api::KvWrite;
use dabba_spec::kv::Write;
use dabba_testkit::{Cluster, ClusterOptions, HostOptions};
use serde::Serialize;

use crate::deploy::{until_ready, upload};
use crate::load::{self, Load, LoadResult};

#[derive(Debug, Serialize)]
pub struct ClusterReport {
    pub raft_write_serial: LoadResult,
    pub raft_write_concurrent: LoadResult,
    pub raft_write_concurrency: usize,
    pub payments: LoadResult,
    pub payments_concurrency: usize,
    pub failover_ms: Vec<f64>,
}

/// Starts 3 controllers and one host per entry of `hosts` (`bench-host-N` in zone
/// `zone-N`, with the extra flags given), as every test cluster is started.
pub async fn start_cluster(
    dabba: &Path,
    dir: &Path,
    raft_flags: &[String],
    hosts: &[&[&str]],
) -> anyhow::Result<Cluster> {
    Cluster::start(ClusterOptions {
        dabba: dabba.to_path_buf(),
        dir: dir.to_path_buf(),
        controllers: 3,
        controller_flags: raft_flags.to_vec(),
        hosts: hosts
            .iter()
            .enumerate()
            .map(|(i, flags)| HostOptions {
                name: format!("bench-host-{}", i + 1),
                zone: format!("zone-{}", i + 1),
                flags: flags.iter().map(|f| f.to_string()).collect(),
                region: None,
            })
            .collect(),
        patience: Duration::from_secs(60),
        wan: None,
        controller_regions: Vec::new(),
    })
    .await
}

/// Starts the cluster and a host, and deploys the payment sample (2 pods).
async fn start(
    dabba: &Path,
    guests: &Path,
    dir: &Path,
    raft_flags: &[String],
) -> anyhow::Result<Cluster> {
    let c = start_cluster(dabba, dir, raft_flags, &[&[]]).await?;
    let path = guests.join("payment.wasm");
    let wasm = ComponentBytes::read(&path)
        .context("payment.wasm not found: build the guests with `cargo guests`")?;
    let manifest = Manifest::parse(
        "payment.toml",
        "[app]\nname = \"payment\"\ncomponent = \"payment.wasm\"\nroute = \"/payments\"\nreplicas = 2\n\n[capabilities]\nkey_value_buckets = [\"default\"]\n",
    )?;
    let api = c.api();
    upload(api, &wasm).await?;
    api.apply_app(&manifest.to_spec(wasm.digest)).await?;
    until_ready(api, "payment", 2, Duration::from_secs(60)).await?;
    Ok(c)
}

/// Raft writes: KV writes to `addr` (the leader) with the hosts' token, each one entry.
pub(crate) fn kv_write(
    addr: SocketAddr,
    token: &str,
    concurrency: usize,
    duration: Duration,
) -> Load {
    Load {
        addr,
        method: http::Method::POST,
        path: dabba_client::paths::KV_WRITE.into(),
        headers: vec![
            ("authorization".into(), format!("Bearer {token}")),
            ("content-type".into(), "application/json".into()),
        ],
        unique_header: None,
        body: Bytes::from(
            serde_json::to_vec(&KvWrite {
                bucket: "bench/raft".into(),
                write: Write::Put(vec![("k".into(), Some(b"value".to_vec()))]),
                id: None,
            })
            .expect("a write serializes"),
        ),
        concurrency,
        warmup: Duration::from_millis(500),
        duration,
        max_requests: u64::MAX,
    }
}

/// New payments (a unique idempotency key each) through the ingress at `addr`.
pub(crate) fn payments(addr: SocketAddr, concurrency: usize, duration: Duration) -> Load {
    Load {
        addr,
        method: http::Method::POST,
        path: "/payments".into(),
        headers: vec![("content-type".into(), "application/json".into())],
        unique_header: Some("idempotency-key".into()),
        body: Bytes::from_static(
            br#"{"merchant_id":"m_bench","payer_vpa":"alice@upi","amount":125000,"currency":"INR"}"#,
        ),
        concurrency,
        warmup: Duration::from_secs(1),
        duration,
        max_requests: u64::MAX,
    }
}

/// Writes until one is committed, and returns when.
async fn first_commit_after(api: &ApiClient) -> Instant {
    loop {
        let write = KvWrite {
            bucket: "bench/failover".into(),
            write: Write::Put(vec![("k".into(), Some(b"v".to_vec()))]),
            id: None,
        };
        if api.kv_write(&write).await.is_ok() {
            return Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub async fn run(
    dabba: &Path,
    guests: &Path,
    duration: Duration,
    failovers: usize,
    raft_flags: &[String],
) -> anyhow::Result<ClusterReport> {
    let dir = crate::scratch_dir("cluster")?;
    let mut c = start(dabba, guests, &dir, raft_flags).await?;
    let leader = c.leader().await?;
    let leader_addr = c.controller_addrs[leader];

    eprintln!("measuring raft writes (1 client) ...");
    let raft_write_serial = load::run(&kv_write(leader_addr, &c.join, 1, duration)).await?;
    let raft_write_concurrency = 64;
    eprintln!("measuring raft writes ({raft_write_concurrency} clients) ...");
    let raft_write_concurrent = load::run(&kv_write(
        leader_addr,
        &c.join,
        raft_write_concurrency,
        duration,
    ))
    .await?;

    let payments_concurrency = 32;
    eprintln!(
        "measuring durable payments through the ingress ({payments_concurrency} clients) ..."
    );
    let host_addr = *c.host_addrs.first().context("host")?;
    let payments = load::run(&payments(host_addr, payments_concurrency, duration)).await?;
    if raft_write_serial.requests == 0 || payments.requests == 0 {
        bail!("a measurement got no successful request");
    }

    let mut failover_ms = Vec::new();
    for round in 0..failovers {
        eprintln!("measuring leader failover ({}/{failovers}) ...", round + 1);
        c.wait_voters(3, true).await?;
        let leader = c.leader().await?;
        let survivors: Vec<String> = c
            .urls()
            .into_iter()
            .enumerate()
            .filter(|(i, _)| *i != leader)
            .map(|(_, u)| u)
            .collect();
        let mut api = ApiClient::new(survivors, c.join.clone());
        api.retry_for = Duration::from_secs(30);
        api.timeout = Duration::from_secs(5);
        let killed = Instant::now();
        c.kill_controller(leader); // SIGKILL
        let committed = first_commit_after(&api).await;
        failover_ms.push(committed.duration_since(killed).as_secs_f64() * 1000.0);
        c.restart_controller(leader).await?;
    }
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ClusterReport {
        raft_write_serial,
        raft_write_concurrent,
        raft_write_concurrency,
        payments,
        payments_concurrency,
        failover_ms,
    })
}

pub fn render(r: &ClusterReport) -> String {
    let lat = |l: &LoadResult| {
        format!(
            "{:.2} / {:.2} ms",
            l.latency.p50_us / 1000.0,
            l.latency.p99_us / 1000.0
        )
    };
    let mut failovers = r.failover_ms.clone();
    failovers.sort_by(f64::total_cmp);
    let median = failovers
        .get(failovers.len() / 2)
        .copied()
        .unwrap_or(f64::NAN);
    let worst = failovers.last().copied().unwrap_or(f64::NAN);
    format!(
        "## Control plane (3 controllers, 1 host, loopback)\n\n\
         | measurement | result | goal |\n|---|---:|---:|\n\
         | Raft write latency p50 / p99 (1 client) | {} | p99 ≤ 10 ms (goal ÷ p99 = {:.2}) |\n\
         | Raft writes/s ({} clients, batched) | {:.0} (p50 / p99 {}) | ≥ 10,000 (measured ÷ goal = {:.2}) |\n\
         | Durable payments/s through the ingress ({} clients) | {:.0} (p50 / p99 {}) | ≥ 1,100/s with p99 ≤ 50 ms (measured ÷ goal = {:.2}) |\n\
         | Leader failover, kill → next committed write | median {:.0} ms, worst {:.0} ms of {} | ≤ 500 ms |\n",
        lat(&r.raft_write_serial),
        10_000.0 / r.raft_write_serial.latency.p99_us.max(1.0),
        r.raft_write_concurrency,
        r.raft_write_concurrent.rps,
        lat(&r.raft_write_concurrent),
        r.raft_write_concurrent.rps / 10_000.0,
        r.payments_concurrency,
        r.payments.rps,
        lat(&r.payments),
        r.payments.rps / 1100.0,
        median,
        worst,
        r.failover_ms.len(),
    )
}
