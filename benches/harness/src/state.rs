//! The state suite: a payment ledger of millions of records in the controllers' workload
//! store, and what its size costs.
//!
//! Three controllers (no hosts); the synthetic day of the settlement suite is written
//! through Raft in entries of 500 payments. At each size (1 M, 5 M, 10 M payments by default) it records every
//! controller's resident memory, the size of the leader's store file, and how long a
//! follower killed with SIGKILL takes to serve again and catch up (the restart time).
//! At the end one follower loses its data, is removed and joins again: the time until it
//! holds every key, from a snapshot streamed from the leader, and that snapshot's size.
//!
//! The baseline is the controller's own memory with an empty store, measured in the same
//! run: the goal is that memory stays flat as the ledger grows (a controller that held
//! the ledger in memory, as dabba did before, grows by about its size).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use dabba_spec::api::KvWrite;
use dabba_spec::kv::Write;
use dabba_testkit::Cluster;
use ledger::synthetic::Day;
use serde::Serialize;

use super::stats::thousands;

const DATE: &str = "2026-11-25";
/// Payments per ledger write through Raft (about 300 KiB of JSON); `--quick` writes 100,
/// so that debug builds (the test suite's) keep each replication RPC within its bound.
pub const RAFT_BATCH: u64 = 500;
pub const QUICK_BATCH: u64 = 100;
const BUCKET: &str = "default/ledger";

#[derive(Debug, Serialize)]
pub struct AtSize {
    pub payments: u64,
    /// Bytes of keys and values written so far.
    pub ledger_bytes: u64,
    /// Seconds the writes since the previous size took, and their rate.
    pub write_seconds: f64,
    pub payments_per_second: f64,
    /// Resident memory of each controller (KiB), in id order.
    pub rss_kib: Vec<u64>,
    /// The leader's workload store file and Raft log file.
    pub store_bytes: u64,
    pub log_bytes: u64,
    /// A follower killed and started again: until it serves, and until it has applied
    /// what the leader had.
    pub restart_serving_seconds: f64,
    pub restart_caught_up_seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct CatchUp {
    pub payments: u64,
    /// The leader's newest snapshot file.
    pub snapshot_bytes: u64,
    /// From starting the wiped controller to it holding every key.
    pub seconds: f64,
    pub mib_per_second: f64,
}

#[derive(Debug, Serialize)]
pub struct StateReport {
    /// Payments per write.
    pub batch: u64,
    /// Each controller's resident memory before anything was written (KiB).
    pub empty_rss_kib: Vec<u64>,
    pub sizes: Vec<AtSize>,
    pub catch_up: CatchUp,
}

/// The sizes measured for a ledger of `payments` written `batch` at a time: a tenth,
/// half, and all of it.
pub fn sizes(payments: u64, batch: u64) -> Vec<u64> {
    let round = |n: u64| (n / batch).max(1) * batch;
    let mut points = vec![round(payments / 10), round(payments / 2), round(payments)];
    points.dedup();
    points
}

pub async fn run(
    dabba: &Path,
    payments: u64,
    batch: u64,
    raft_flags: &[String],
) -> anyhow::Result<StateReport> {
    let dir = crate::scratch_dir("state")?;
    // Two snapshots over the ledger (half-way and at its end): the wiped follower is
    // sent the last, whole.
    let entries = payments.div_ceil(batch);
    let mut flags = raft_flags.to_vec();
    flags.extend([
        "--snapshot-logs".to_string(),
        (entries / 2).max(10).to_string(),
    ]);
    let outcome = async {
        let mut c = crate::cluster::start_cluster(dabba, &dir, &flags, &[]).await?;
        let r = measure(&mut c, &dir, payments, batch).await;
        if r.is_err() {
            eprintln!("state: logs:\n{}", c.logs());
        }
        r
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

fn rss(c: &Cluster) -> Vec<u64> {
    c.controllers
        .iter()
        .map(|p| {
            p.pid()
                .and_then(|pid| crate::probe::rss_kib(pid).ok())
                .unwrap_or(0)
        })
        .collect()
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

async fn measure(
    c: &mut Cluster,
    dir: &Path,
    payments: u64,
    batch: u64,
) -> anyhow::Result<StateReport> {
    let api = c
        .api()
        .clone()
        .with_bounds(Duration::from_secs(60), Duration::from_secs(120));
    let day = Day {
        date: DATE,
        payments,
        merchants: 5_000,
        seed: 0x005e_771e,
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let empty_rss_kib = rss(c);
    let mut report = StateReport {
        batch,
        empty_rss_kib,
        sizes: Vec::new(),
        catch_up: CatchUp {
            payments,
            snapshot_bytes: 0,
            seconds: 0.0,
            mib_per_second: 0.0,
        },
    };
    let mut ledger_bytes = 0;
    let mut written = 0;
    for point in sizes(payments, batch) {
        eprintln!("state: writing payments {}..={point}", written + 1);
        let started = Instant::now();
        for (from, to) in day.batches(batch) {
            if to <= written || from > point {
                continue;
            }
            let entries = day.entries(from, to);
            ledger_bytes += entries
                .iter()
                .map(|(k, v)| (k.len() + v.len()) as u64)
                .sum::<u64>();
            let w = KvWrite {
                bucket: BUCKET.into(),
                write: Write::Put(entries.into_iter().map(|(k, v)| (k, Some(v))).collect()),
                id: Some(format!("ledger-{from}")),
                fence: None,
            };
            api.kv_write(&w)
                .await
                .with_context(|| format!("writing payments {from}..={to}"))?
                .result
                .map_err(|e| anyhow::anyhow!("writing payments {from}..={to}: {e}"))?;
        }
        let write_seconds = started.elapsed().as_secs_f64();
        let count = point - written;
        written = point;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_kib = rss(c);
        let leader = c.leader().await?;
        let data = dir.join(format!("c{}", leader + 1));
        let (serving, caught_up) = restart_follower(c, leader).await?;
        report.sizes.push(AtSize {
            payments: point,
            ledger_bytes,
            write_seconds,
            payments_per_second: count as f64 / write_seconds,
            rss_kib,
            store_bytes: file_size(&data.join("workload.redb")),
            log_bytes: file_size(&data.join("raft.redb")),
            restart_serving_seconds: serving,
            restart_caught_up_seconds: caught_up,
        });
        eprintln!("state: {:?}", report.sizes.last());
    }
    report.catch_up = wiped_catch_up(c, dir, payments).await?;
    Ok(report)
}

/// A follower (not the first controller) other than the leader.
fn follower(leader: usize) -> usize {
    if leader == 1 { 2 } else { 1 }
}

/// Kills a follower, starts it again, and times it to serving and to having applied
/// everything the leader had applied when it was killed.
async fn restart_follower(c: &mut Cluster, leader: usize) -> anyhow::Result<(f64, f64)> {
    let applied = "dabba_raft_state{field=\"applied_index\"}";
    let target = metric(c, leader, applied)
        .await
        .context("the leader's applied index")?;
    let f = follower(leader);
    c.kill_controller(f);
    let started = Instant::now();
    c.restart_controller(f).await?;
    let serving = started.elapsed().as_secs_f64();
    while metric(c, f, applied).await.is_none_or(|a| a < target) {
        if started.elapsed() > Duration::from_secs(600) {
            bail!("c{} has not applied index {target} after 10 min", f + 1);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok((serving, started.elapsed().as_secs_f64()))
}

/// A metric of one controller's `/metrics`.
async fn metric(c: &Cluster, i: usize, name: &str) -> Option<f64> {
    let text = crate::probe::get_text(c.controller_addrs[i], "/metrics")
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Wipes a follower, removes it from the cluster, starts it again (it joins as a new
/// member) and times it until it holds every key, from an installed snapshot.
async fn wiped_catch_up(c: &mut Cluster, dir: &Path, payments: u64) -> anyhow::Result<CatchUp> {
    let leader = c.leader().await?;
    let v = follower(leader);
    c.kill_controller(v);
    std::fs::remove_dir_all(dir.join(format!("c{}", v + 1)))?;
    c.api().remove_member(v as u64 + 1).await?;
    let snapshots = dir.join(format!("c{}", leader + 1)).join("snapshots");
    eprintln!("state: controller c{} wiped and joining again", v + 1);
    let started = Instant::now();
    c.restart_controller(v).await?;
    // Each payment is two keys: its record and its index entry.
    let want = (2 * payments) as f64;
    loop {
        let keys = metric(c, v, "dabba_workload_keys").await;
        let installed = metric(c, v, "dabba_raft_state{field=\"snapshots_installed\"}").await;
        if keys == Some(want) && installed.is_some_and(|n| n >= 1.0) {
            break;
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("c{} holds {keys:?} keys of {want} after 30 min", v + 1);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let snapshot_bytes = std::fs::read_dir(&snapshots)?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".snap"))
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .max()
        .unwrap_or(0);
    Ok(CatchUp {
        payments,
        snapshot_bytes,
        seconds,
        mib_per_second: snapshot_bytes as f64 / (1 << 20) as f64 / seconds,
    })
}

pub fn render(r: &StateReport) -> String {
    let mib = |kib: u64| kib as f64 / 1024.0;
    let list = |v: &[u64]| {
        v.iter()
            .map(|k| format!("{:.0}", mib(*k)))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let mut md = format!(
        "## State: a payment ledger in the controllers' workload store\n\n\
         Three controllers; payments written through Raft in entries of {}. \
         Controller RSS with an empty store: {} MiB.\n\n\
         | payments | ledger | written at | controller RSS (MiB) | store file | Raft log | follower restart: serving / caught up |\n\
         |---|---|---|---|---|---|---|\n",
        r.batch,
        list(&r.empty_rss_kib)
    );
    for p in &r.sizes {
        md.push_str(&format!(
            "| {} | {:.0} MiB | {}/s | {} | {:.0} MiB | {:.0} MiB | {:.2} s / {:.2} s |\n",
            thousands(p.payments as f64),
            p.ledger_bytes as f64 / (1 << 20) as f64,
            thousands(p.payments_per_second),
            list(&p.rss_kib),
            p.store_bytes as f64 / (1 << 20) as f64,
            p.log_bytes as f64 / (1 << 20) as f64,
            p.restart_serving_seconds,
            p.restart_caught_up_seconds,
        ));
    }
    let c = &r.catch_up;
    md.push_str(&format!(
        "\nA follower wiped, removed and joined again holds all {} payments after {:.1} s \
         (snapshot {:.0} MiB: {:.1} MiB/s built, sent and installed).\n",
        thousands(c.payments as f64),
        c.seconds,
        c.snapshot_bytes as f64 / (1 << 20) as f64,
        c.mib_per_second
    ));
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_whole_batches_up_to_the_ledger() {
        assert_eq!(
            sizes(10_000_000, RAFT_BATCH),
            [1_000_000, 5_000_000, 10_000_000]
        );
        assert_eq!(sizes(20_000, QUICK_BATCH), [2_000, 10_000, 20_000]);
        assert_eq!(sizes(3_000, RAFT_BATCH), [500, 1_500, 3_000]);
        assert_eq!(sizes(600, RAFT_BATCH), [500]);
    }
}
