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
//! - Components: a large component (the hello guest padded to `component_mib`) uploaded
//!   (until a majority of controllers hold it) and applied until it first serves; Raft
//!   write latency from one client while such components are uploaded back to back, against
//!   the same measurement idle just before, and the elections the uploads caused.

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
    pub components: ComponentsReport,
}

#[derive(Debug, Serialize)]
pub struct ComponentsReport {
    pub component_mib: f64,
    /// Upload until a majority of the controllers hold it.
    pub upload_ms: f64,
    /// Apply until the app's first 200 through the ingress (the host fetches and
    /// compiles it).
    pub first_serve_ms: f64,
    pub raft_write_idle: LoadResult,
    pub raft_write_during_uploads: LoadResult,
    pub uploads_during: usize,
    /// Raft terms that began during the uploads (each one an election).
    pub elections_during: u64,
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
                fence: None,
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
            fence: None,
        };
        if api.kv_write(&write).await.is_ok() {
            return Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The components measurements: see the module docs.
async fn components(
    c: &Cluster,
    guests: &Path,
    component_mib: usize,
    duration: Duration,
) -> anyhow::Result<ComponentsReport> {
    let hello = std::fs::read(guests.join("hello.wasm"))
        .context("hello.wasm not found: build the guests with `cargo guests`")?;
    // Each upload a new component (the padding differs), so none is skipped.
    let padded = |n: u8| {
        let mut bytes = dabba_testkit::padded_component(&hello, component_mib << 20);
        *bytes.last_mut().expect("padding") = n;
        ComponentBytes {
            digest: dabba_spec::Digest::of(&bytes),
            bytes,
            origin: format!("hello padded to {component_mib} MiB ({n})"),
        }
    };
    let api = c.api();
    let first = padded(0);
    eprintln!("uploading a {component_mib} MiB component ...");
    let started = Instant::now();
    upload(api, &first).await?;
    let upload_ms = started.elapsed().as_secs_f64() * 1000.0;
    let manifest = Manifest::parse(
        "big.toml",
        "[app]\nname = \"big\"\ncomponent = \"big.wasm\"\nroute = \"/big\"\nreplicas = 1\n",
    )?;
    let host = *c.host_addrs.first().context("host")?;
    let started = Instant::now();
    api.apply_app(&manifest.to_spec(first.digest)).await?;
    crate::probe::until_ok(
        host,
        "localhost",
        "/big",
        Duration::from_secs(120),
        Duration::from_millis(5),
    )
    .await?;
    let first_serve_ms = started.elapsed().as_secs_f64() * 1000.0;

    let leader = c.controller_addrs[c.leader().await?];
    eprintln!("measuring raft writes (1 client), idle ...");
    let raft_write_idle = load::run(&kv_write(leader, &c.admin, 1, duration)).await?;
    eprintln!("measuring raft writes (1 client) during {component_mib} MiB uploads ...");
    let term_before = api.cluster_status().await?.term;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let uploader = {
        let (stop, api) = (stop.clone(), api.clone());
        let components: Vec<ComponentBytes> = (1..=8).map(padded).collect();
        tokio::spawn(async move {
            let mut n = 0;
            for wasm in &components {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                upload(&api, wasm).await?;
                n += 1;
            }
            anyhow::Ok(n)
        })
    };
    let raft_write_during_uploads = load::run(&kv_write(leader, &c.admin, 1, duration)).await?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let uploads_during = uploader.await??;
    let elections_during = api.cluster_status().await?.term - term_before;
    Ok(ComponentsReport {
        component_mib: component_mib as f64,
        upload_ms,
        first_serve_ms,
        raft_write_idle,
        raft_write_during_uploads,
        uploads_during,
        elections_during,
    })
}

pub async fn run(
    dabba: &Path,
    guests: &Path,
    duration: Duration,
    failovers: usize,
    raft_flags: &[String],
    component_mib: usize,
) -> anyhow::Result<ClusterReport> {
    let dir = crate::scratch_dir("cluster")?;
    let mut c = start(dabba, guests, &dir, raft_flags).await?;
    let leader = c.leader().await?;
    let leader_addr = c.controller_addrs[leader];

    eprintln!("measuring raft writes (1 client) ...");
    let raft_write_serial = load::run(&kv_write(leader_addr, &c.admin, 1, duration)).await?;
    let raft_write_concurrency = 64;
    eprintln!("measuring raft writes ({raft_write_concurrency} clients) ...");
    let raft_write_concurrent = load::run(&kv_write(
        leader_addr,
        &c.admin,
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
    let components = components(&c, guests, component_mib, duration).await?;

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
        let mut api = ApiClient::new(survivors, c.admin.clone());
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
        components,
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
         | Leader failover, kill → next committed write | median {:.0} ms, worst {:.0} ms of {} | ≤ 500 ms |\n\
         | {:.0} MiB component: upload until a majority holds it / apply until it first serves | {:.0} ms / {:.0} ms | |\n\
         | Raft write p99 (1 client), idle → during {} back-to-back {:.0} MiB uploads | {:.2} → {:.2} ms ({:.2}×); {} elections | ≤ 2×, no election |\n",
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
        r.components.component_mib,
        r.components.upload_ms,
        r.components.first_serve_ms,
        r.components.uploads_during,
        r.components.component_mib,
        r.components.raft_write_idle.latency.p99_us / 1000.0,
        r.components.raft_write_during_uploads.latency.p99_us / 1000.0,
        r.components.raft_write_during_uploads.latency.p99_us
            / r.components.raft_write_idle.latency.p99_us.max(1.0),
        r.components.elections_during,
    )
}
