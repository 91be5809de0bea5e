//! The settlement benchmark: how many payments per second the nightly settlement job
//! settles, on one core.
//!
//! A synthetic day of payments (`ledger::synthetic`, shaped like the payment API's own
//! records) is written to a durable local bucket (the redb store a host keeps buckets
//! in), and the settlement component runs on it as a dabba job would: one fresh instance
//! on dabba's runtime, its reads answered by the host from the store. The guest is one
//! thread, and the store answers in that thread, so the job uses one core.
//!
//! The baseline is the same settlement code compiled natively, over an in-memory map
//! (no sandbox, no store): what the machine does with no platform at all. The report is
//! checked against totals computed here from the generated payments, independently of
//! the job; a run that settles anything else fails the benchmark.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use dabba_host::AppConfig;
use dabba_host::ComponentBytes;
use dabba_host::job::RunInput;
use dabba_host::kv::{KvBackend, LocalKv, RedbKv, Write};
use dabba_host::runtime::{Runtime, RuntimeOptions};
use dabba_spec::WorkloadKind;
use ledger::synthetic::Day;
use ledger::{MerchantSettlement, SettlementReport, gst_on};
use serde::Serialize;

use super::stats::{format_ratio, ratio, thousands};

/// The goal: a 45-million-payment day settled in under 25 minutes.
pub const GOAL_PER_SECOND: f64 = 33_000.0;

const DATE: &str = "2026-11-25";
const BUCKET: &str = "ledger";
/// Payments written per store transaction while loading.
const LOAD_BATCH: u64 = 20_000;

#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub payments: u64,
    pub merchants: u64,
}

impl Sizes {
    pub fn full() -> Sizes {
        Sizes {
            payments: 1_000_000,
            merchants: 5_000,
        }
    }

    pub fn quick() -> Sizes {
        Sizes {
            payments: 20_000,
            merchants: 200,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Settled {
    pub seconds: f64,
    pub payments_per_second: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub payments: u64,
    pub merchants: u64,
    pub ledger_bytes: u64,
    /// Writing the ledger to the store (not the job's time).
    pub load_seconds: f64,
    /// The first run: computes the day and writes the settlement.
    pub dabba: Settled,
    /// A second run of the same date: recomputes, finds it settled, writes nothing.
    pub dabba_again: Settled,
    /// The same job as a cron job run on `dabba up`: the ledger in the replicated store
    /// (the controller's Raft state machine), read over the host's API client.
    pub platform: Settled,
    /// Writing the ledger through Raft (fsync'd entries of 2,000 payments).
    pub platform_load_seconds: f64,
    /// The same code compiled natively over an in-memory map.
    pub native: Settled,
    pub dabba_over_native: Option<f64>,
    pub goal_per_second: f64,
    pub dabba_over_goal: Option<f64>,
}

/// What the settlement of `day` must say, computed from the generated payments alone.
pub fn expected(day: &Day<'_>) -> SettlementReport {
    let mut merchants: BTreeMap<String, MerchantSettlement> = BTreeMap::new();
    for seq in 1..=day.payments {
        let p = day.payment(seq);
        let m = merchants
            .entry(p.merchant_id.clone())
            .or_insert_with(|| MerchantSettlement {
                merchant_id: p.merchant_id.clone(),
                date: day.date.to_string(),
                payments: 0,
                gross: 0,
                fees: 0,
                gst: 0,
                net: 0,
            });
        m.payments += 1;
        m.gross += p.amount;
        m.fees += p.fee;
    }
    let mut r = SettlementReport {
        date: day.date.to_string(),
        payments: day.payments,
        merchants: Vec::new(),
        gross: 0,
        fees: 0,
        gst: 0,
        net: 0,
    };
    for mut m in merchants.into_values() {
        m.gst = gst_on(m.fees);
        m.net = m.gross - m.fees - m.gst;
        r.gross += m.gross;
        r.fees += m.fees;
        r.gst += m.gst;
        r.net += m.net;
        r.merchants.push(m);
    }
    r
}

pub async fn run(
    dabba: &Path,
    guests: &Path,
    sizes: Sizes,
    raft_flags: &[String],
) -> anyhow::Result<Report> {
    let component = guests.join("settlement.wasm");
    let wasm = ComponentBytes::read(&component).with_context(|| {
        format!(
            "reading {} (build the guests: cargo guests)",
            component.display()
        )
    })?;
    let day = Day {
        date: DATE,
        payments: sizes.payments,
        merchants: sizes.merchants,
        seed: 0x005e_771e,
    };
    eprintln!(
        "settlement: computing the expected totals of {} payments",
        thousands(day.payments as f64)
    );
    let want = expected(&day);

    let dir = crate::scratch_dir("settlement")?;
    let outcome = async {
        let mut report = measure(&wasm, &day, &want, &dir).await?;
        let (platform, load) = on_platform(dabba, &wasm, &day, &want, &dir, raft_flags).await?;
        report.platform = platform;
        report.platform_load_seconds = load;
        anyhow::Ok(report)
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

async fn measure(
    wasm: &ComponentBytes,
    day: &Day<'_>,
    want: &SettlementReport,
    dir: &Path,
) -> anyhow::Result<Report> {
    let store = Arc::new(RedbKv::open(&dir.join("kv.redb"))?);
    let scoped = crate::deploy::key(BUCKET).to_string();
    eprintln!("settlement: writing the ledger to {}", dir.display());
    let loading = Instant::now();
    let mut ledger_bytes = 0u64;
    for (from, to) in day.batches(LOAD_BATCH) {
        let entries = day.entries(from, to);
        ledger_bytes += entries
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum::<u64>();
        let pairs = entries.into_iter().map(|(k, v)| (k, Some(v))).collect();
        store.write(&scoped, Write::Put(pairs)).await?;
    }
    let (k, v) = day.seq_entry();
    store.write(&scoped, Write::Put(vec![(k, Some(v))])).await?;
    let load_seconds = loading.elapsed().as_secs_f64();

    let runtime = Runtime::new(&RuntimeOptions::default())?;
    let limits = dabba_spec::LimitOverrides::default().resolve(WorkloadKind::Job)?;
    let app = AppConfig {
        name: "settlement".into(),
        scope: "default".into(),
        revision: None,
        limits,
        capabilities: dabba_spec::Capabilities {
            key_value_buckets: vec![BUCKET.into()],
            ..Default::default()
        },
        secrets: Default::default(),
        kv: store.clone(),
        log: None,
    };
    let job = runtime.load_job(app, wasm)?;
    let mut runs = Vec::new();
    for (n, says) in [(1, "settled: wrote"), (2, "already settled")] {
        eprintln!("settlement: run {n} on dabba");
        let started = Instant::now();
        let r = job
            .run(RunInput {
                args: vec![
                    "--date".into(),
                    DATE.into(),
                    "--bucket".into(),
                    BUCKET.into(),
                ],
                env: Vec::new(),
            })
            .await;
        let took = started.elapsed();
        let out = String::from_utf8_lossy(&r.stdout);
        if r.exit_code != 0 || !out.contains(says) {
            bail!(
                "settlement run {n} exited {}: {}{}",
                r.exit_code,
                out,
                String::from_utf8_lossy(&r.stderr)
            );
        }
        runs.push(settled(day.payments, took));
    }
    let written = store
        .read_one(&scoped, &ledger::report_key(DATE))?
        .context("the settlement report was not written")?;
    let got: SettlementReport = serde_json::from_slice(&written)?;
    if &got != want {
        bail!(
            "the settlement disagrees with the ledger: job says {} payments, net {}; expected {} payments, net {}",
            got.payments,
            got.net,
            want.payments,
            want.net
        );
    }

    eprintln!("settlement: the same code, native, in memory");
    let native = native(day, want)?;
    let dabba = runs.remove(0);
    let dabba_again = runs.remove(0);
    Ok(Report {
        payments: day.payments,
        merchants: want.merchants.len() as u64,
        ledger_bytes,
        load_seconds,
        dabba_over_native: ratio(dabba.payments_per_second, Some(native.payments_per_second)),
        dabba_over_goal: ratio(dabba.payments_per_second, Some(GOAL_PER_SECOND)),
        goal_per_second: GOAL_PER_SECOND,
        dabba,
        dabba_again,
        platform: settled(0, Duration::ZERO),
        platform_load_seconds: 0.0,
        native,
    })
}

/// Payments per ledger write through Raft (4,000 pairs, about 1.1 MiB of JSON).
const RAFT_BATCH: u64 = 2_000;

/// Loads the ledger into `dabba up`'s replicated store, runs the settlement once as a
/// manual run of a cron job, and checks the report it wrote; the run's own duration (as
/// its host measured it) and the load's.
async fn on_platform(
    dabba: &Path,
    wasm: &ComponentBytes,
    day: &Day<'_>,
    want: &SettlementReport,
    dir: &Path,
    raft_flags: &[String],
) -> anyhow::Result<(Settled, f64)> {
    use dabba_spec::api::{CronJobApply, KvRead, KvWrite};

    let up = crate::autoscale::start_up(dabba, dir, raft_flags).await?;
    let api = up
        .api()
        .with_bounds(Duration::from_secs(60), Duration::from_secs(120));
    let scoped = crate::deploy::key(BUCKET).to_string();
    eprintln!("settlement: writing the ledger through Raft on dabba up");
    let loading = Instant::now();
    for (from, to) in day.batches(RAFT_BATCH) {
        let mut pairs: Vec<(String, Option<Vec<u8>>)> = day
            .entries(from, to)
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect();
        if to == day.payments {
            let (k, v) = day.seq_entry();
            pairs.push((k, Some(v)));
        }
        let w = KvWrite {
            bucket: scoped.clone(),
            write: Write::Put(pairs),
            id: None,
            fence: None,
        };
        let r = api
            .kv_write(&w)
            .await
            .with_context(|| format!("writing payments {from}..={to}"))?;
        r.result
            .map_err(|e| anyhow::anyhow!("writing payments {from}..={to}: {e}"))?;
    }
    let load_seconds = loading.elapsed().as_secs_f64();

    crate::deploy::upload(&api, wasm).await?;
    let text = format!(
        "[[cron]]\nname = \"settle\"\nschedule = \"0 1 * * *\"\ntimezone = \"Asia/Kolkata\"\n\
         component = \"settlement.wasm\"\nargs = [\"--date\", \"{DATE}\", \"--bucket\", \"{BUCKET}\"]\n\
         key_value_buckets = [\"{BUCKET}\"]\nsuspend = true\n"
    );
    let spec = dabba_spec::cronjob::CronManifest::parse("settle.toml", &text)?
        .cron
        .remove(0);
    let apply = CronJobApply {
        spec,
        component: wasm.digest,
    };
    api.apply_cron_job(&apply).await?;
    eprintln!("settlement: a manual run of the cron job on dabba up");
    api.run_cron_job(&crate::deploy::key("settle")).await?;
    let deadline = Instant::now() + Duration::from_secs(900);
    let run = loop {
        let jobs = api.cron_jobs(None).await?;
        let runs = jobs.into_iter().flat_map(|j| j.runs);
        if let Some(r) = runs.into_iter().find(|r| !r.phase.is_active()) {
            break r;
        }
        if Instant::now() > deadline {
            bail!("the settlement run did not finish in 15 minutes");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    if run.phase != dabba_spec::cronjob::RunPhase::Succeeded {
        bail!(
            "the settlement run on dabba up {:?}: {}\n{}",
            run.phase,
            run.reason.unwrap_or_default(),
            run.output
        );
    }
    let read = KvRead {
        bucket: scoped,
        keys: vec![ledger::report_key(DATE)],
    };
    let values = api.kv_read(&read).await?;
    let written = values
        .values
        .into_iter()
        .next()
        .flatten()
        .context("the settlement report was not written on dabba up")?;
    let got: SettlementReport = serde_json::from_slice(&written)?;
    if &got != want {
        bail!(
            "the settlement on dabba up disagrees with the ledger: {} payments, net {} (expected {}, {})",
            got.payments,
            got.net,
            want.payments,
            want.net
        );
    }
    drop(up);
    let took = Duration::from_millis(run.duration_ms.unwrap_or(0));
    Ok((settled(day.payments, took), load_seconds))
}

fn settled(payments: u64, took: Duration) -> Settled {
    let seconds = took.as_secs_f64();
    Settled {
        seconds,
        payments_per_second: payments as f64 / seconds.max(1e-9),
    }
}

/// The settlement library, natively, over the SDK's in-memory bucket.
fn native(day: &Day<'_>, want: &SettlementReport) -> anyhow::Result<Settled> {
    let bucket = dabba_sdk::kv::Bucket::in_memory();
    for (from, to) in day.batches(LOAD_BATCH) {
        bucket.set_many(&day.entries(from, to))?;
    }
    let (k, v) = day.seq_entry();
    bucket.set(&k, &v)?;
    let date: dabba_sdk::time::Date = DATE.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let started = Instant::now();
    let outcome = settlement::settle(&bucket, date)?;
    let took = started.elapsed();
    match outcome {
        settlement::Outcome::Settled(r) if &r == want => Ok(settled(day.payments, took)),
        other => bail!("the native settlement disagrees with the ledger: {other:?}"),
    }
}

pub fn render(r: &Report) -> String {
    let row = |name: &str, s: &Settled, vs: String| {
        format!(
            "| {name} | {:.2} s | {}/s | {vs} |\n",
            s.seconds,
            thousands(s.payments_per_second)
        )
    };
    let mut md = format!(
        "## Settlement: {} payments, {} merchants, one core\n\n\
         The ledger ({:.0} MiB of records and index) was written to a durable bucket in {:.1} s.\n\
         Totals checked against the generated payments.\n\n\
         | run | time | payments settled | vs baseline |\n|---|---|---|---|\n",
        thousands(r.payments as f64),
        thousands(r.merchants as f64),
        r.ledger_bytes as f64 / (1 << 20) as f64,
        r.load_seconds
    );
    md.push_str(&row(
        "dabba job (wasm, durable store)",
        &r.dabba,
        format!(
            "{} of native; {} of the goal ({}/s)",
            format_ratio(r.dabba_over_native),
            format_ratio(r.dabba_over_goal),
            thousands(r.goal_per_second)
        ),
    ));
    md.push_str(&row(
        "dabba job, second run (already settled)",
        &r.dabba_again,
        String::new(),
    ));
    md.push_str(&row(
        &format!(
            "dabba up cron job (replicated store; ledger written through Raft in {:.1} s)",
            r.platform_load_seconds
        ),
        &r.platform,
        format!(
            "{} of native; {} of the goal",
            format_ratio(ratio(
                r.platform.payments_per_second,
                Some(r.native.payments_per_second)
            )),
            format_ratio(ratio(
                r.platform.payments_per_second,
                Some(r.goal_per_second)
            ))
        ),
    ));
    md.push_str(&row(
        "native code, in-memory map (baseline)",
        &r.native,
        "1×".into(),
    ));
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expected_settlement_adds_up() {
        let day = Day {
            date: DATE,
            payments: 500,
            merchants: 7,
            seed: 1,
        };
        let r = expected(&day);
        assert_eq!(r.merchants.len(), 7);
        assert_eq!(r.merchants.iter().map(|m| m.payments).sum::<u64>(), 500);
        let gross: u64 = (1..=500).map(|s| day.payment(s).amount).sum();
        assert_eq!(r.gross, gross);
        assert_eq!(r.net, r.gross - r.fees - r.gst);
        for m in &r.merchants {
            assert_eq!(m.gst, gst_on(m.fees), "GST per merchant, on its fees");
        }
    }

    #[test]
    fn the_table_shows_each_run_against_its_baseline() {
        let s = |seconds: f64| settled(1_000_000, Duration::from_secs_f64(seconds));
        let r = Report {
            payments: 1_000_000,
            merchants: 5_000,
            ledger_bytes: 400 << 20,
            load_seconds: 9.5,
            dabba: s(20.0),
            dabba_again: s(19.0),
            platform: s(40.0),
            platform_load_seconds: 60.0,
            native: s(5.0),
            dabba_over_native: Some(0.25),
            dabba_over_goal: Some(50_000.0 / 33_000.0),
            goal_per_second: GOAL_PER_SECOND,
        };
        let md = render(&r);
        assert!(md.contains("1,000,000 payments, 5,000 merchants"), "{md}");
        assert!(
            md.contains("| 20.00 s | 50,000/s | 0.250× of native; 1.52× of the goal (33,000/s) |"),
            "{md}"
        );
        assert!(md.contains("| 5.00 s | 200,000/s | 1× |"), "{md}");
        assert!(md.contains("written through Raft in 60.0 s) | 40.00 s | 25,000/s | 0.125× of native; 0.758× of the goal |"), "{md}");
    }
}
