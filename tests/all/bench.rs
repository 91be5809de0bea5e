//! `dabba bench --quick` for every suite: each runs against real processes (and, for
//! the containers, real Docker and `wasmtime serve`), takes every measurement and
//! writes its report. The figures themselves are the benchmarks' business; here a
//! missing measurement, an empty one, or a failed run fails.

use std::time::Duration;

use serde_json::Value;

use crate::cluster::ONE_AT_A_TIME;
use crate::support::{bench_harness, guest, run_dabba, stderr, stdout};

#[test]
fn the_cluster_benchmark_takes_every_measurement() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (run, report, _) = quick_bench(
        "cluster",
        "payment",
        &["--duration", "1s", "--failovers", "1"],
    );
    let c = &report["cluster"];
    for m in ["raft_write_serial", "raft_write_concurrent", "payments"] {
        assert!(c[m]["requests"].as_u64().unwrap() > 0, "{m}: {c}");
        assert!(
            c[m]["latency"]["p99_us"].as_f64().unwrap() > 0.0,
            "{m}: {c}"
        );
    }
    assert_eq!(c["failover_ms"].as_array().unwrap().len(), 1, "{c}");
    assert!(stdout(&run).contains("Leader failover"));
    let k = &c["components"];
    assert_eq!(k["component_mib"], 16.0, "{k}");
    assert!(k["upload_ms"].as_f64().unwrap() > 0.0, "{k}");
    assert!(k["first_serve_ms"].as_f64().unwrap() > 0.0, "{k}");
    assert!(k["uploads_during"].as_u64().unwrap() >= 1, "{k}");
    for m in ["raft_write_idle", "raft_write_during_uploads"] {
        assert!(k[m]["requests"].as_u64().unwrap() > 0, "{m}: {k}");
    }
    assert!(stdout(&run).contains("MiB component: upload"));
}

#[test]
fn the_autoscale_benchmark_takes_every_measurement() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (run, report, _) = quick_bench("autoscale", "hello", &[]);
    let a = &report["autoscale"];
    for cold in ["cold_start_embedded", "cold_start_cluster"] {
        for run in ["stream", "isolated"] {
            assert_eq!(a[cold][run]["samples"], 20, "{a}");
            assert!(a[cold][run]["p99_ms"].as_f64().unwrap() > 0.0, "{a}");
        }
    }
    assert_eq!(a["scale_out_ms"].as_array().unwrap().len(), 1, "{a}");
    assert_eq!(a["density"]["apps"], 200, "{a}");
    assert!(
        a["density"]["host_rss_with_pods_kib"].as_u64().unwrap() > 0,
        "{a}"
    );
    assert!(stdout(&run).contains("Idle pods on one host"));
}

#[test]
fn the_rollout_benchmark_takes_every_measurement() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (run, report, _) = quick_bench("rollout", "hostile", &[]);
    let r = &report["rollout"];
    let aborts = r["aborts"].as_array().unwrap();
    assert_eq!(aborts.len(), 1, "{r}");
    assert!(aborts[0]["detection_ms"].as_f64().unwrap() > 0.0, "{r}");
    assert_eq!(
        aborts[0]["propagation_ms"].as_array().unwrap().len(),
        2,
        "{r}"
    );
    assert!(aborts[0]["reached_canary"].as_u64().unwrap() > 0, "{r}");
    let splits = r["splits"].as_array().unwrap();
    assert_eq!(splits.len(), 3, "{r}");
    for s in splits {
        assert_eq!(s["requests"], 2000, "{r}");
        assert!(s["canary"].as_u64().unwrap() > 0, "{r}");
    }
    assert!(r["switch"]["requests"].as_u64().unwrap() > 0, "{r}");
    assert!(stdout(&run).contains("Abort propagation"));
}

/// The regions suite in quick mode: one loss of the primary region (every process
/// killed), a drain and a failback, both topologies' writes, the standby's cost. The
/// suite must also find what the region tests demand: nothing acknowledged lost.
#[test]
fn the_regions_benchmark_takes_every_measurement() {
    if let Err(why) = dabba_testkit::wan::Wan::available() {
        eprintln!("skipped: {why}");
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (run, report, _) = quick_bench("regions", "payment", &[]);
    let r = &report["regions"];
    let losses = r["losses"].as_array().unwrap();
    assert_eq!(losses.len(), 1, "{r}");
    let loss = &losses[0];
    assert!(loss["rto_ms"].as_f64().unwrap() > 0.0, "{r}");
    assert!(loss["longest_wait_ms"].as_f64().unwrap() > 0.0, "{r}");
    assert!(loss["ledger"]["acknowledged"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(loss["ledger"]["lost"], serde_json::json!({}), "{r}");
    assert_eq!(loss["ledger"]["shared_slots"], serde_json::json!([]), "{r}");
    for moved in ["drain", "failback"] {
        assert!(r[moved]["requests"].as_u64().unwrap() > 0, "{moved}: {r}");
    }
    for topology in ["spread", "one_region"] {
        for m in ["raft_write_serial", "raft_write_concurrent", "payments"] {
            assert!(
                r[topology][m]["requests"].as_u64().unwrap() > 0,
                "{topology} {m}: {r}"
            );
        }
    }
    assert_eq!(r["standby"]["pods_at_zero"], 0, "{r}");
    assert_eq!(r["standby"]["pods_warm"], 2, "{r}");
    assert!(r["standby"]["rss_warm_kib"].as_u64().unwrap() > 0, "{r}");
    assert!(stdout(&run).contains("The price of surviving a region"));
}

/// Runs `dabba bench --suite SUITE --quick` (with the test clusters' Raft timing and the
/// guests next to `guest`), which must succeed; its output, its JSON report and the
/// names of the files it wrote.
fn quick_bench(
    suite: &str,
    guest_name: &str,
    extra: &[&str],
) -> (std::process::Output, Value, Vec<String>) {
    let guests = guest(guest_name).parent().unwrap().to_path_buf();
    let out = tempfile::tempdir().unwrap();
    let mut args = vec![
        "bench",
        "--suite",
        suite,
        "--quick",
        "--heartbeat-interval",
        "100ms",
        "--election-timeout",
        "400ms",
        "--guests",
        guests.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
    ];
    args.extend(extra);
    bench_harness(crate::support::dabba_bin());
    let run = run_dabba(&args, Duration::from_secs(420));
    assert!(run.status.success(), "{}{}", stdout(&run), stderr(&run));
    let file = out.path().join(format!("{suite}.json"));
    let report = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    let mut files: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    (run, report, files)
}

#[test]
fn the_settlement_benchmark_settles_its_ledger_every_way() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (run, report, _) = quick_bench("settlement", "settlement", &["--payments", "5000"]);
    let s = &report["settlement"];
    assert_eq!(s["payments"], 5000, "{s}");
    for row in ["dabba", "dabba_again", "platform", "native"] {
        assert!(
            s[row]["payments_per_second"].as_f64().unwrap() > 0.0,
            "{row}: {s}"
        );
    }
    assert!(s["dabba_over_native"].as_f64().unwrap() > 0.0, "{s}");
    assert!(
        stdout(&run).contains("| dabba up cron job"),
        "{}",
        stdout(&run)
    );
}

/// The container comparison in quick mode, against real Docker, real dabba and
/// `wasmtime serve`: every measurement is taken, every chart written.
#[test]
fn the_container_benchmark_takes_every_measurement() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    guest("search");
    let native = crate::support::native_servers();
    let (run, report, files) = quick_bench(
        "containers",
        "payment",
        &["--native", native.to_str().unwrap()],
    );
    let c = &report["containers"];
    for side in ["dabba", "docker"] {
        assert_eq!(c["cold_start"][side]["samples"], 3, "{c}");
        assert!(
            c["cold_start"][side]["p50_ms"].as_f64().unwrap() > 0.0,
            "{c}"
        );
    }
    let s = &c["scale_out"][0];
    assert_eq!(s["replicas"], 10, "{c}");
    for m in [
        "dabba_ms",
        "docker_ms",
        "dabba_kib_per_replica",
        "docker_kib_per_replica",
    ] {
        assert!(s[m].as_f64().unwrap() > 0.0, "{m}: {c}");
    }
    for a in c["artifacts"].as_array().unwrap() {
        assert!(a["component_bytes"].as_u64().unwrap() > 0, "{a}");
        assert!(a["image_bytes"].as_u64().unwrap() > 0, "{a}");
    }
    let rows = c["throughput"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "payment and search at one concurrency: {c}");
    for t in rows {
        assert!(t["dabba"]["rps"].as_f64().unwrap() > 0.0, "{t}");
        assert!(t["container"]["rps"].as_f64().unwrap() > 0.0, "{t}");
        // wasmtime serve runs what it can; where it cannot, the report says why.
        assert!(
            t["wasmtime"]["rps"].as_f64().is_some_and(|r| r > 0.0)
                || t["wasmtime_note"].as_str().is_some_and(|n| !n.is_empty()),
            "{t}"
        );
    }
    let search = rows.iter().find(|t| t["workload"] == "search").unwrap();
    assert!(
        search["wasmtime"]["rps"].as_f64().unwrap() > 0.0,
        "{search}"
    );
    assert!(stdout(&run).contains("dabba vs Docker containers"));
    assert!(c["docker_version"].as_str().is_some_and(|v| !v.is_empty()));
    for chart in [
        "cold-start.svg",
        "scale-out.svg",
        "memory-per-replica.svg",
        "artifact-size.svg",
        "throughput-payment.svg",
        "throughput-search.svg",
    ] {
        assert!(files.iter().any(|f| f == chart), "{chart} in {files:?}");
    }
}

#[test]
fn the_state_benchmark_takes_every_measurement() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (run, report, _) = quick_bench("state", "hello", &["--payments", "20000"]);
    let s = &report["state"];
    let points = s["sizes"].as_array().unwrap();
    assert_eq!(points.len(), 3, "{s}");
    for p in points {
        assert!(p["store_bytes"].as_u64().unwrap() > 0, "{p}");
        assert!(
            p["restart_caught_up_seconds"].as_f64().unwrap() > 0.0,
            "{p}"
        );
        for rss in p["rss_kib"].as_array().unwrap() {
            assert!(rss.as_u64().unwrap() > 0, "{p}");
        }
    }
    assert_eq!(points[2]["payments"], 20_000, "{s}");
    let c = &s["catch_up"];
    assert!(c["snapshot_bytes"].as_u64().unwrap() > 20_000 * 300, "{c}");
    assert!(c["seconds"].as_f64().unwrap() > 0.0, "{c}");
    assert!(stdout(&run).contains("A follower wiped, removed and joined again"));
}
