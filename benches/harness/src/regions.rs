//! `dabba bench --suite regions`: three emulated regions on this machine (a network
//! namespace each, a wide-area delay between them added by user-space proxies: the
//! kernel here has no `netem`), five controllers spread Mumbai 2 / Singapore 2 /
//! Hyderabad 1, two hosts per region, the payment sample placed in all three with
//! Mumbai primary and Singapore a standby at zero pods.
//!
//! - Region loss, repeated: every process in Mumbai (its two controllers, one of them
//!   the leader, and its two hosts) SIGKILLed under payment load from clients in
//!   Singapore and Hyderabad. RTO: from the kill to the last request a client sent that
//!   failed, once every request sent after it has succeeded for 3 s. RPO: acknowledged
//!   payments that do not read back afterwards, or share a ledger slot. Then Mumbai is
//!   restarted and restored, and the leader returns there (leader preference).
//! - Planned drain and failback under load from all three regions: failed requests.
//! - The price of surviving a region: Raft write latency, Raft writes/s and durable
//!   payments/s with the five voters spread over the three regions, against the same
//!   five voters all in Mumbai (the baseline, same machine, same run, same Raft timing,
//!   same proxies in every path).
//! - The standby's cost: pods and the standby hosts' memory with Singapore at
//!   `min = 0` against `min = 2` (as many as the primary runs).
//!
//! Clients reach an ingress at its region address, as a client inside that region
//! would; what crosses regions (host to controller, controller to controller, ingress
//! to ingress) pays the delay both ways.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use dabba_client::ApiClient;
use dabba_host::ComponentBytes;
use dabba_spec::Manifest;
use dabba_spec::api::RegionAppView;
use dabba_spec::resources::HostState;
use dabba_testkit::payments::{Attempt, LedgerCheck, PaymentLoad, check_ledger};
use dabba_testkit::wan::{Latency, Wan};
use dabba_testkit::{Cluster, ClusterOptions, HostOptions, until};
use serde::Serialize;

use crate::cluster::{kv_write, payments};
use crate::deploy::upload;
use crate::load::{self, LoadResult};
use crate::probe::{POLL, rss_kib};

const REGIONS: [&str; 3] = ["mumbai", "singapore", "hyderabad"];
const PRIMARY: &str = "mumbai";
const STANDBY: &str = "singapore";

/// One way: Mumbai–Hyderabad 10 ms, Singapore to either 30 ms (about what the real
/// links measure: ~20 ms and ~60 ms round trips), each with up to 10% jitter on top.
fn latency(a: &str, b: &str) -> Latency {
    let pair: BTreeSet<&str> = [a, b].into();
    let delay = if pair == BTreeSet::from(["mumbai", "hyderabad"]) {
        Duration::from_millis(10)
    } else {
        Duration::from_millis(30)
    };
    Latency {
        delay,
        jitter: delay / 10,
    }
}

/// How much to measure.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub kills: usize,
    pub duration: Duration,
}

impl Sizes {
    pub fn full() -> Sizes {
        Sizes {
            kills: 5,
            duration: Duration::from_secs(5),
        }
    }

    pub fn quick() -> Sizes {
        Sizes {
            kills: 1,
            duration: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct RegionsReport {
    /// One-way delays between the regions and their jitter, ms.
    pub delays_ms: Vec<(String, String, u64, u64)>,
    pub controller_flags: Vec<String>,
    pub losses: Vec<RegionLoss>,
    pub drain: Moved,
    pub failback: Moved,
    pub spread: Writes,
    pub one_region: Writes,
    pub standby: Standby,
}

/// One loss of the primary region.
#[derive(Debug, Serialize)]
pub struct RegionLoss {
    /// Kill → the last failing request sent (after it, every request is acknowledged).
    pub rto_ms: f64,
    /// The longest any request sent after the kill took to be answered: a request held
    /// (by the activator, or a write waiting for the new leader) is not a failure, but
    /// its client waited this long.
    pub longest_wait_ms: f64,
    pub requests: usize,
    pub failed: usize,
    /// The failures by status (0: no answer within 5 s).
    pub failures: BTreeMap<u16, usize>,
    pub ledger: LedgerCheck,
    /// Restore asked → the leader back in Mumbai (leader preference).
    pub leader_back_ms: f64,
}

/// Requests around a planned move.
#[derive(Debug, Serialize)]
pub struct Moved {
    pub requests: usize,
    pub failed: usize,
    /// The failures by status (0: no answer within 5 s).
    pub failures: BTreeMap<u16, usize>,
    /// The command → the move complete (routes and pods where they belong).
    pub took_ms: f64,
}

/// The control plane's write path with the voters in one topology.
#[derive(Debug, Serialize)]
pub struct Writes {
    pub raft_write_serial: LoadResult,
    pub raft_write_concurrent: LoadResult,
    pub payments: LoadResult,
}

#[derive(Debug, Serialize)]
pub struct Standby {
    pub pods_at_zero: u32,
    pub rss_at_zero_kib: u64,
    pub pods_warm: u32,
    pub rss_warm_kib: u64,
}

const RAFT_CONCURRENCY: usize = 64;
const PAYMENT_CONCURRENCY: usize = 32;

pub async fn run(
    dabba: &Path,
    guests: &Path,
    sizes: Sizes,
    raft_flags: &[String],
) -> anyhow::Result<RegionsReport> {
    Wan::available().map_err(|why| anyhow::anyhow!("the regions suite needs {why}"))?;
    let wan = Wan::create(&REGIONS, latency)?;
    // A cross-region cluster's heartbeat must outlast a round trip (60 ms here): the
    // default 30 ms is for one site. Flags given on the command line win.
    let mut controller_flags = if raft_flags.is_empty() {
        [
            "--heartbeat-interval",
            "100ms",
            "--election-timeout",
            "400ms",
        ]
        .map(String::from)
        .to_vec()
    } else {
        raft_flags.to_vec()
    };
    controller_flags.extend(["--preferred-leader-region".into(), PRIMARY.into()]);
    let wasm = ComponentBytes::read(&guests.join("payment.wasm"))
        .context("payment.wasm not found: build the guests with `cargo guests`")?;

    // The baseline first: the same five voters and six hosts, all in Mumbai.
    eprintln!("voters in one region: starting ...");
    let dir = crate::scratch_dir("regions-one")?;
    let one = World::start(dabba, &dir, &wan, &controller_flags, [PRIMARY; 5]).await?;
    one.deploy(&wasm, "").await?;
    let one_region = one.writes(sizes.duration).await?;
    drop(one);
    let _ = std::fs::remove_dir_all(&dir);

    eprintln!("voters in three regions: starting ...");
    let dir = crate::scratch_dir("regions")?;
    let mut w = World::start(
        dabba,
        &dir,
        &wan,
        &controller_flags,
        [PRIMARY, PRIMARY, STANDBY, STANDBY, "hyderabad"],
    )
    .await?;
    let placed = |standby_min: u32| {
        format!(
            "[placement]\nregions = [\"mumbai\", \"singapore\", \"hyderabad\"]\n[placement.region.singapore]\nmin = {standby_min}\n"
        )
    };
    w.deploy(&wasm, &placed(0)).await?;
    let spread = w.writes(sizes.duration).await?;

    eprintln!("the standby's cost ...");
    let rss_at_zero_kib = w.rss(STANDBY)?;
    let pods_at_zero = w.placement(STANDBY).await?.running;
    w.deploy(&wasm, &placed(2)).await?;
    w.until("the warm standby", |p| p(STANDBY).running == 2)
        .await?;
    // Let the pods settle (first compilation, caches) before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let standby = Standby {
        pods_at_zero,
        rss_at_zero_kib,
        pods_warm: w.placement(STANDBY).await?.running,
        rss_warm_kib: w.rss(STANDBY)?,
    };
    w.deploy(&wasm, &placed(0)).await?;
    w.until("the standby back at zero", |p| p(STANDBY).running == 0)
        .await?;

    eprintln!("a planned drain of mumbai under load ...");
    let load = w.load(&["m1", "s1", "h1"], "drain");
    w.until_accepted(&load, 10).await?;
    let asked = Instant::now();
    w.api
        .region_action(PRIMARY, "drain", Some(STANDBY))
        .await
        .context("draining mumbai")?;
    w.until("mumbai drained", |p| {
        p(PRIMARY).failed.is_some() && p(STANDBY).serving && p(STANDBY).running == 2
    })
    .await?;
    let took = asked.elapsed();
    w.until_accepted(&load, load.accepted() + 10).await?;
    let drain = moved(load, took);

    eprintln!("failback to mumbai under load ...");
    let load = w.load(&["m1", "s1", "h1"], "failback");
    w.until_accepted(&load, 10).await?;
    let asked = Instant::now();
    w.api.region_action(PRIMARY, "restore", None).await?;
    w.until("mumbai serving again", |p| {
        p(PRIMARY).serving && p(PRIMARY).running == 2 && p(STANDBY).running == 0
    })
    .await?;
    let took = asked.elapsed();
    w.until_accepted(&load, load.accepted() + 10).await?;
    let failback = moved(load, took);

    let mut losses = Vec::new();
    for round in 0..sizes.kills {
        eprintln!("losing mumbai ({}/{}) ...", round + 1, sizes.kills);
        losses.push(w.lose_primary().await?);
    }
    drop(w);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(RegionsReport {
        delays_ms: pairs()
            .into_iter()
            .map(|(a, b)| {
                let l = latency(a, b);
                (
                    a.to_string(),
                    b.to_string(),
                    l.delay.as_millis() as u64,
                    l.jitter.as_millis() as u64,
                )
            })
            .collect(),
        controller_flags,
        losses,
        drain,
        failback,
        spread,
        one_region,
        standby,
    })
}

fn pairs() -> Vec<(&'static str, &'static str)> {
    vec![
        (PRIMARY, STANDBY),
        (PRIMARY, "hyderabad"),
        (STANDBY, "hyderabad"),
    ]
}

fn moved(load: PaymentLoad, took: Duration) -> Moved {
    let (_, attempts) = load.stop();
    Moved {
        requests: attempts.len(),
        failed: attempts.iter().filter(|a| !a.acknowledged()).count(),
        failures: failures(&attempts),
        took_ms: took.as_secs_f64() * 1000.0,
    }
}

/// The failed attempts by status.
fn failures(attempts: &[Attempt]) -> BTreeMap<u16, usize> {
    let mut by = BTreeMap::new();
    for a in attempts.iter().filter(|a| !a.acknowledged()) {
        *by.entry(a.status).or_default() += 1;
    }
    by
}

/// A cluster in the emulated regions, and what the suite asks of it.
struct World {
    c: Cluster,
    /// The controllers' admin API, with patience for an election.
    api: ApiClient,
    controller_regions: Vec<String>,
}

/// The hosts: two per region, `m1`, `m2`, `s1`, ...
fn hosts() -> Vec<HostOptions> {
    REGIONS
        .iter()
        .flat_map(|r| {
            (1..=2).map(move |i| {
                let mut h = HostOptions::new(&format!("{}{i}", &r[..1]), &format!("{r}-{i}"));
                h.region = Some(r.to_string());
                h
            })
        })
        .collect()
}

impl World {
    async fn start(
        dabba: &Path,
        dir: &Path,
        wan: &Arc<Wan>,
        controller_flags: &[String],
        controller_regions: [&str; 5],
    ) -> anyhow::Result<World> {
        let controller_regions: Vec<String> =
            controller_regions.iter().map(|r| r.to_string()).collect();
        // Hosts of the one-region baseline are all in Mumbai too.
        let hosts = hosts()
            .into_iter()
            .map(|mut h| {
                if controller_regions.iter().all(|r| r == PRIMARY) {
                    h.region = Some(PRIMARY.into());
                }
                h
            })
            .collect();
        let c = Cluster::start(ClusterOptions {
            dabba: dabba.to_path_buf(),
            dir: dir.to_path_buf(),
            controllers: 5,
            controller_flags: controller_flags.to_vec(),
            hosts,
            patience: Duration::from_secs(120),
            wan: Some(wan.clone()),
            controller_regions: controller_regions.clone(),
        })
        .await?;
        let api = c
            .api()
            .clone()
            .with_bounds(Duration::from_secs(30), Duration::from_secs(5));
        Ok(World {
            c,
            api,
            controller_regions,
        })
    }

    /// Applies the payment sample (2 replicas) with `placement`, and waits until the
    /// primary runs both pods.
    async fn deploy(&self, wasm: &ComponentBytes, placement: &str) -> anyhow::Result<()> {
        let manifest = Manifest::parse(
            "payment.toml",
            &format!(
                "[app]\nname = \"payment\"\ncomponent = \"payment.wasm\"\nroute = \"/payments\"\nreplicas = 2\n\n[capabilities]\nkey_value_buckets = [\"ledger\"]\n\n[config]\nbucket = \"ledger\"\n\n{placement}"
            ),
        )?;
        upload(&self.api, wasm).await?;
        self.api.apply_app(&manifest.to_spec(wasm.digest)).await?;
        let api = &self.api;
        until(
            "payment running in mumbai",
            Duration::from_secs(120),
            POLL,
            None,
            || async {
                let pods = api.pods(None, Some("payment")).await.ok()?;
                let running = pods
                    .iter()
                    .filter(|p| {
                        p.app == "payment"
                            && p.phase == dabba_spec::resources::PodPhase::Running
                            && p.region.as_deref().is_none_or(|r| r == PRIMARY)
                    })
                    .count();
                (running >= 2).then_some(())
            },
        )
        .await
    }

    fn ingress(&self, host: &str) -> anyhow::Result<SocketAddr> {
        let i = self
            .c
            .hosts
            .iter()
            .position(|p| p.name == host)
            .with_context(|| format!("no host {host}"))?;
        Ok(self.c.host_addrs[i])
    }

    fn load(&self, hosts: &[&str], tag: &str) -> PaymentLoad {
        let clients: Vec<(String, SocketAddr)> = hosts
            .iter()
            .filter_map(|h| Some((h.to_string(), self.ingress(h).ok()?)))
            .collect();
        PaymentLoad::start(&clients, tag)
    }

    async fn until_accepted(&self, load: &PaymentLoad, n: usize) -> anyhow::Result<()> {
        until(
            &format!("{n} payments acknowledged"),
            Duration::from_secs(60),
            POLL,
            None,
            || async { (load.accepted() >= n).then_some(()) },
        )
        .await
    }

    async fn placement(&self, region: &str) -> anyhow::Result<RegionAppView> {
        placement_in(&self.api, region).await
    }

    /// Waits until `done(placement_of)` holds.
    async fn until(
        &self,
        what: &str,
        done: impl Fn(&dyn Fn(&str) -> RegionAppView) -> bool,
    ) -> anyhow::Result<()> {
        let api = &self.api;
        let done = &done;
        until(what, Duration::from_secs(120), POLL, None, || async move {
            let regions = api.regions().await.ok()?;
            let of = |region: &str| {
                regions
                    .iter()
                    .find(|r| r.health.region == region)
                    .and_then(|r| r.apps.first().cloned())
                    .unwrap_or_else(|| RegionAppView {
                        app: crate::deploy::key("payment"),
                        serving: false,
                        replicas: 0,
                        running: 0,
                        failed: None,
                        draining_to: None,
                        triggers: Vec::new(),
                    })
            };
            done(&of).then_some(())
        })
        .await
    }

    /// Total memory of the hosts in `region`.
    fn rss(&self, region: &str) -> anyhow::Result<u64> {
        let mut total = 0;
        for p in self
            .c
            .hosts
            .iter()
            .filter(|p| p.name.starts_with(&region[..1]))
        {
            total += rss_kib(p.pid().context("a host's pid")?)?;
        }
        Ok(total)
    }

    /// Raft writes to the leader and payments through a Mumbai ingress.
    async fn writes(&self, duration: Duration) -> anyhow::Result<Writes> {
        self.until_leader_in(PRIMARY).await?;
        let leader = self.c.leader().await?;
        let addr = self.c.controller_addrs[leader];
        eprintln!("  raft writes (1 client) ...");
        let raft_write_serial = load::run(&kv_write(addr, &self.c.admin, 1, duration)).await?;
        eprintln!("  raft writes ({RAFT_CONCURRENCY} clients) ...");
        let raft_write_concurrent =
            load::run(&kv_write(addr, &self.c.admin, RAFT_CONCURRENCY, duration)).await?;
        eprintln!("  durable payments ({PAYMENT_CONCURRENCY} clients) ...");
        let payments = load::run(&payments(
            self.ingress("m1")?,
            PAYMENT_CONCURRENCY,
            duration,
        ))
        .await?;
        if raft_write_serial.requests == 0 || payments.requests == 0 {
            bail!("a measurement got no successful request");
        }
        Ok(Writes {
            raft_write_serial,
            raft_write_concurrent,
            payments,
        })
    }

    async fn until_leader_in(&self, region: &str) -> anyhow::Result<()> {
        let api = &self.api;
        until(
            &format!("the leader in {region}"),
            Duration::from_secs(120),
            POLL,
            None,
            || async {
                let s = api.cluster_status().await.ok()?;
                let leader = s.leader?;
                let caught_up = s.members.iter().all(|m| m.lag.is_some_and(|l| l < 10));
                (self.controller_regions.get(leader as usize - 1)? == region && caught_up)
                    .then_some(())
            },
        )
        .await
    }

    /// SIGKILLs every Mumbai process under load from Singapore and Hyderabad, measures,
    /// then brings Mumbai back and restores it.
    async fn lose_primary(&mut self) -> anyhow::Result<RegionLoss> {
        self.until_leader_in(PRIMARY).await?;
        let load = self.load(&["s1", "s2", "h1", "h2"], &format!("loss-{}", now_ms()));
        self.until_accepted(&load, 20).await?;
        let killed = Instant::now();
        for i in self.mumbai_controllers() {
            self.c.kill_controller(i);
        }
        for p in self.c.hosts.iter_mut().filter(|p| p.name.starts_with('m')) {
            p.kill();
        }
        let rto = until(
            "the survivors to serve every request for 3 s",
            Duration::from_secs(120),
            POLL,
            None,
            || async { load.recovered_after(killed, Duration::from_secs(3)) },
        )
        .await?;
        let (accepted, attempts) = load.stop();
        let s1 = self.ingress("s1")?;
        let ledger = tokio::task::spawn_blocking(move || check_ledger(s1, &accepted)).await?;

        // Mumbai comes back: controllers, hosts; then the operator restores it.
        for i in self.mumbai_controllers() {
            self.c.restart_controller(i).await?;
        }
        for p in self.c.hosts.iter_mut().filter(|p| p.name.starts_with('m')) {
            p.restart()?;
        }
        let api = &self.api;
        until(
            "mumbai's hosts Ready",
            Duration::from_secs(120),
            POLL,
            None,
            || async {
                let hosts = api.hosts().await.ok()?;
                hosts
                    .iter()
                    .filter(|h| h.info.region == PRIMARY)
                    .all(|h| h.state == HostState::Ready)
                    .then_some(())
            },
        )
        .await?;
        let asked = Instant::now();
        self.api.region_action(PRIMARY, "restore", None).await?;
        self.until_leader_in(PRIMARY).await?;
        let leader_back = asked.elapsed();
        self.until("mumbai serving again", |p| {
            p(PRIMARY).serving && p(PRIMARY).running == 2 && p(STANDBY).running == 0
        })
        .await?;
        let longest_wait = attempts
            .iter()
            .filter(|a| a.sent >= killed)
            .map(|a| a.took)
            .max()
            .unwrap_or_default();
        Ok(RegionLoss {
            rto_ms: rto.as_secs_f64() * 1000.0,
            longest_wait_ms: longest_wait.as_secs_f64() * 1000.0,
            requests: attempts.len(),
            failed: attempts.iter().filter(|a| !a.acknowledged()).count(),
            failures: failures(&attempts),
            ledger,
            leader_back_ms: leader_back.as_secs_f64() * 1000.0,
        })
    }

    fn mumbai_controllers(&self) -> Vec<usize> {
        (0..self.c.controllers.len())
            .filter(|i| self.controller_regions[*i] == PRIMARY)
            .collect()
    }
}

async fn placement_in(api: &ApiClient, region: &str) -> anyhow::Result<RegionAppView> {
    api.regions()
        .await?
        .into_iter()
        .find(|r| r.health.region == region)
        .and_then(|r| r.apps.into_iter().next())
        .with_context(|| format!("no app placed in {region}"))
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

pub fn render(r: &RegionsReport) -> String {
    let mut rto: Vec<f64> = r.losses.iter().map(|l| l.rto_ms).collect();
    rto.sort_by(f64::total_cmp);
    let median = rto.get(rto.len() / 2).copied().unwrap_or(f64::NAN);
    let worst = rto.last().copied().unwrap_or(f64::NAN);
    let mut waits: Vec<f64> = r.losses.iter().map(|l| l.longest_wait_ms).collect();
    waits.sort_by(f64::total_cmp);
    let wait_median = waits.get(waits.len() / 2).copied().unwrap_or(f64::NAN);
    let wait_worst = waits.last().copied().unwrap_or(f64::NAN);
    let lost: usize = r.losses.iter().map(|l| l.ledger.lost.len()).sum();
    let shared: usize = r.losses.iter().map(|l| l.ledger.shared_slots.len()).sum();
    let acknowledged: usize = r.losses.iter().map(|l| l.ledger.acknowledged).sum();
    let failed: usize = r.losses.iter().map(|l| l.failed).sum();
    let requests: usize = r.losses.iter().map(|l| l.requests).sum();
    let mut back: Vec<f64> = r.losses.iter().map(|l| l.leader_back_ms).collect();
    back.sort_by(f64::total_cmp);
    let lat = |l: &LoadResult| {
        format!(
            "{:.1} / {:.1} ms",
            l.latency.p50_us / 1000.0,
            l.latency.p99_us / 1000.0
        )
    };
    let delays = r
        .delays_ms
        .iter()
        .map(|(a, b, d, j)| format!("{a}–{b} {d} ms + ≤{j} ms jitter"))
        .collect::<Vec<_>>()
        .join(", ");
    let ratio = |spread: f64, one: f64| spread / one.max(f64::MIN_POSITIVE);
    format!(
        "## Regions (3 emulated regions: one-way {delays}; 5 controllers, 6 hosts; {})\n\n\
         | measurement | result | goal |\n|---|---:|---:|\n\
         | RTO, every Mumbai process killed under load | median {median:.0} ms, worst {worst:.0} ms of {} | ≤ 5 s (seed plan: 5 min) |\n\
         | Longest a request sent after the kill waited for its answer | median {wait_median:.0} ms, worst {wait_worst:.0} ms | — |\n\
         | RPO: acknowledged payments lost / sharing a ledger slot | {lost} / {shared} of {acknowledged} | 0 |\n\
         | Requests failed around the losses (clients in Singapore, Hyderabad) | {failed} of {requests} | — |\n\
         | Planned drain Mumbai → Singapore: requests failed | {} of {}{} (done in {:.1} s) | 0 |\n\
         | Failback to Mumbai: requests failed | {} of {}{} (done in {:.1} s) | 0 |\n\
         | Leader back in Mumbai after restore (preference) | median {:.1} s | — |\n\n\
         ### The price of surviving a region\n\n\
         | measurement | voters in 3 regions | voters in Mumbai only (baseline) | ratio |\n|---|---:|---:|---:|\n\
         | Raft write latency p50 / p99 (1 client) | {} | {} | {:.1}× p50 |\n\
         | Raft writes/s ({RAFT_CONCURRENCY} clients) | {:.0} | {:.0} | {:.2} |\n\
         | Durable payments/s through a Mumbai ingress ({PAYMENT_CONCURRENCY} clients) | {:.0} (p99 {:.1} ms) | {:.0} (p99 {:.1} ms) | {:.2} |\n\n\
         ### The standby's cost (Singapore's two hosts)\n\n\
         | standby | pods | host memory |\n|---|---:|---:|\n\
         | `min = 0` (pilot light) | {} | {:.1} MiB |\n\
         | `min = 2` (warm, as the primary) | {} | {:.1} MiB |\n",
        r.controller_flags.join(" "),
        r.losses.len(),
        r.drain.failed,
        r.drain.requests,
        by_status(&r.drain.failures),
        r.drain.took_ms / 1000.0,
        r.failback.failed,
        r.failback.requests,
        by_status(&r.failback.failures),
        r.failback.took_ms / 1000.0,
        back.get(back.len() / 2).copied().unwrap_or(f64::NAN) / 1000.0,
        lat(&r.spread.raft_write_serial),
        lat(&r.one_region.raft_write_serial),
        ratio(
            r.spread.raft_write_serial.latency.p50_us,
            r.one_region.raft_write_serial.latency.p50_us
        ),
        r.spread.raft_write_concurrent.rps,
        r.one_region.raft_write_concurrent.rps,
        ratio(
            r.spread.raft_write_concurrent.rps,
            r.one_region.raft_write_concurrent.rps
        ),
        r.spread.payments.rps,
        r.spread.payments.latency.p99_us / 1000.0,
        r.one_region.payments.rps,
        r.one_region.payments.latency.p99_us / 1000.0,
        ratio(r.spread.payments.rps, r.one_region.payments.rps),
        r.standby.pods_at_zero,
        r.standby.rss_at_zero_kib as f64 / 1024.0,
        r.standby.pods_warm,
        r.standby.rss_warm_kib as f64 / 1024.0,
    )
}

/// " (503 ×2, no answer ×1)", or nothing without failures.
fn by_status(failures: &BTreeMap<u16, usize>) -> String {
    if failures.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = failures
        .iter()
        .map(|(status, n)| match status {
            0 => format!("no answer ×{n}"),
            s => format!("{s} ×{n}"),
        })
        .collect();
    format!(" ({})", parts.join(", "))
}
