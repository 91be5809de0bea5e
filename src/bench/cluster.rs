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
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use dabba_spec::api::ClusterStatus;
use dabba_spec::client::ApiClient;
use serde::Serialize;

use super::load::{self, Load, LoadResult};
use super::targets::{Target, free_port, spawn_logged};

#[derive(Debug, Serialize)]
pub struct ClusterReport {
    pub raft_write_serial: LoadResult,
    pub raft_write_concurrent: LoadResult,
    pub raft_write_concurrency: usize,
    pub payments: LoadResult,
    pub payments_concurrency: usize,
    pub failover_ms: Vec<f64>,
}

pub(super) struct Cluster {
    dabba: PathBuf,
    /// Extra flags for every controller (Raft timing).
    raft_flags: Vec<String>,
    dir: PathBuf,
    controllers: Vec<Option<Target>>,
    addrs: Vec<SocketAddr>,
    admin: String,
    join: String,
    pub(super) hosts: Vec<Target>,
}

impl Cluster {
    fn controller_args(&self, i: usize) -> Vec<String> {
        let mut args = vec![
            "controller".to_string(),
            "--id".into(),
            (i + 1).to_string(),
            "--listen".into(),
            self.addrs[i].to_string(),
            "--data-dir".into(),
            self.dir.join(format!("c{}", i + 1)).display().to_string(),
        ];
        if i > 0 {
            args.extend(["--join".into(), format!("http://{}", self.addrs[0])]);
        }
        args.extend(self.raft_flags.iter().cloned());
        args
    }

    fn start_controller(&mut self, i: usize) -> anyhow::Result<()> {
        let mut cmd = Command::new(&self.dabba);
        cmd.args(self.controller_args(i))
            .env("DABBA_TOKEN", &self.admin);
        let log = self.dir.join(format!("c{}.log", i + 1));
        self.controllers[i] = Some(spawn_logged(
            cmd,
            &format!("controller {}", i + 1),
            Some(&log),
        )?);
        Ok(())
    }

    fn urls(&self) -> Vec<String> {
        self.addrs.iter().map(|a| format!("http://{a}")).collect()
    }

    pub(super) fn admin_api(&self) -> ApiClient {
        ApiClient::new(self.urls(), self.admin.clone())
    }

    async fn status(&self) -> anyhow::Result<ClusterStatus> {
        Ok(self.admin_api().get("/v1/cluster").await?)
    }

    async fn leader(&self) -> anyhow::Result<usize> {
        let s = self.status().await?;
        let l = s.leader.context("no leader")?;
        Ok(l as usize - 1)
    }

    async fn wait_voters(&self, n: usize, caught_up: bool) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(s) = self.status().await {
                let voters = s.members.iter().filter(|m| m.voter).count();
                let lag_ok = !caught_up || s.members.iter().all(|m| m.lag.is_some_and(|l| l < 10));
                if voters == n && lag_ok {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("the cluster did not reach {n} voters within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn read_secret(path: &Path) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_string())
}

/// Starts 3 controllers and `hosts` hosts (`bench-host-N` in zone `zone-N`, with the
/// extra flags given per host).
pub(super) async fn start_cluster(
    dabba: &Path,
    dir: &Path,
    raft_flags: &[String],
    hosts: &[&[&str]],
) -> anyhow::Result<Cluster> {
    let addrs = (0..3)
        .map(|_| Ok(SocketAddr::from(([127, 0, 0, 1], free_port()?))))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut c = Cluster {
        dabba: dabba.to_path_buf(),
        raft_flags: raft_flags.to_vec(),
        dir: dir.to_path_buf(),
        controllers: vec![None, None, None],
        addrs,
        admin: String::new(),
        join: String::new(),
        hosts: Vec::new(),
    };
    c.start_controller(0)?;
    c.admin = read_secret(&dir.join("c1/admin.token"))?;
    c.join = read_secret(&dir.join("c1/join.token"))?;
    for i in 1..3 {
        c.start_controller(i)?;
        c.wait_voters(i + 1, false).await?;
    }
    for (i, extra) in hosts.iter().enumerate() {
        let ingress = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let mut cmd = Command::new(dabba);
        cmd.args([
            "host",
            "--name",
            &format!("bench-host-{}", i + 1),
            "--zone",
            &format!("zone-{}", i + 1),
            "--listen",
            &ingress.to_string(),
            "--controller",
            &c.urls().join(","),
            "--data-dir",
            &dir.join(format!("host{}", i + 1)).display().to_string(),
        ])
        .args(*extra)
        .env("DABBA_JOIN_TOKEN", &c.join);
        let log = dir.join(format!("host{}.log", i + 1));
        c.hosts.push(spawn_logged(cmd, "host", Some(&log))?);
    }
    Ok(c)
}

/// Starts the cluster and a host, and deploys the payment sample.
async fn start(
    dabba: &Path,
    guests: &Path,
    dir: &Path,
    raft_flags: &[String],
) -> anyhow::Result<Cluster> {
    let c = start_cluster(dabba, dir, raft_flags, &[&[]]).await?;
    let manifest = dir.join("payment.toml");
    std::fs::write(
        &manifest,
        format!(
            "[app]\nname = \"payment\"\ncomponent = \"{}\"\nroute = \"/payments\"\nreplicas = 2\n\n[capabilities]\nkey_value_buckets = [\"default\"]\n",
            std::fs::canonicalize(guests.join("payment.wasm"))
                .context("payment.wasm not found: build the guests with `cargo guests`")?
                .display()
        ),
    )?;
    crate::commands::client::apply_file(&c.admin_api(), &manifest, true, Duration::from_secs(60))
        .await?;
    Ok(c)
}

fn kv_write(addr: SocketAddr, token: &str, concurrency: usize, duration: Duration) -> Load {
    Load {
        addr,
        method: http::Method::POST,
        path: "/v1/kv/write".into(),
        headers: vec![
            ("authorization".into(), format!("Bearer {token}")),
            ("content-type".into(), "application/json".into()),
        ],
        unique_header: None,
        body: Bytes::from_static(br#"{"bucket":"bench/raft","write":{"put":[["k","dmFsdWU="]]}}"#),
        concurrency,
        warmup: Duration::from_millis(500),
        duration,
        max_requests: u64::MAX,
    }
}

/// Writes until one is committed, and returns when.
async fn first_commit_after(api: &ApiClient) -> Instant {
    loop {
        let r: Result<serde_json::Value, _> = api
            .send_json(
                http::Method::POST,
                "/v1/kv/write",
                &serde_json::json!({"bucket": "bench/failover", "write": {"put": [["k", "dg=="]]}}),
            )
            .await;
        if r.is_ok() {
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
    let dir = super::scratch_dir("cluster")?;
    let mut c = start(dabba, guests, &dir, raft_flags).await?;
    let leader = c.leader().await?;
    let leader_addr = c.addrs[leader];

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
    let host_addr = c.hosts.first().context("host")?.addr;
    let payments = load::run(&Load {
        addr: host_addr,
        method: http::Method::POST,
        path: "/payments".into(),
        headers: vec![("content-type".into(), "application/json".into())],
        unique_header: Some("idempotency-key".into()),
        body: Bytes::from_static(
            br#"{"merchant_id":"m_bench","payer_vpa":"alice@upi","amount":125000,"currency":"INR"}"#,
        ),
        concurrency: payments_concurrency,
        warmup: Duration::from_secs(1),
        duration,
        max_requests: u64::MAX,
    })
    .await?;
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
        c.controllers[leader] = None; // SIGKILL
        let committed = first_commit_after(&api).await;
        failover_ms.push(committed.duration_since(killed).as_secs_f64() * 1000.0);
        c.start_controller(leader)?;
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
