//! `dabba run`: arguments, environment, captured output, exit codes and limits.

use std::time::Duration;

use crate::support::*;

fn run_job(flags: &[&str], args: &[&str]) -> std::process::Output {
    let job = guest("job");
    let mut all = vec!["run", job.to_str().unwrap()];
    all.extend_from_slice(flags);
    all.push("--");
    all.extend_from_slice(args);
    run_dabba(&all, Duration::from_secs(120))
}

#[test]
fn arguments_and_output_pass_through() {
    let out = run_job(&[], &["echo", "one", "two words"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "one\ntwo words\n");
}

#[test]
fn the_environment_is_only_what_was_granted() {
    let out = run_job(&["--env", "SETTLE_MODE=dry"], &["env"]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), "SETTLE_MODE=dry\n");
    assert!(stdout(&run_job(&[], &["env"])).is_empty());
}

#[test]
fn a_failing_job_fails_dabba_with_its_stderr() {
    let out = run_job(&[], &["fail", "ledger unreadable"]);
    assert!(!out.status.success());
    assert_ne!(
        out.status.code(),
        Some(2),
        "2 is reserved for dabba's own errors"
    );
    assert!(
        stderr(&out).contains("ledger unreadable"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_runaway_job_is_stopped_by_timeout_and_by_fuel() {
    let out = run_job(&["--timeout", "1s"], &["spin"]);
    assert_eq!(out.status.code(), Some(124));
    assert!(stderr(&out).contains("timeout limit"), "{}", stderr(&out));
    let out = run_job(&["--fuel", "100000000"], &["spin"]);
    assert_eq!(out.status.code(), Some(124));
    assert!(stderr(&out).contains("fuel limit"), "{}", stderr(&out));
}

#[test]
fn a_hoarding_job_hits_the_memory_cap() {
    let out = run_job(&["--memory", "64Mi"], &["alloc", "1000"]);
    assert_eq!(out.status.code(), Some(124));
    assert!(stderr(&out).contains("memory limit"), "{}", stderr(&out));
    let ok = run_job(&["--memory", "64Mi"], &["alloc", "16"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
}

#[test]
fn output_past_the_cap_is_dropped_and_reported() {
    let out = run_job(&["--max-output", "64Ki"], &["flood", "1024"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout.len(), 64 * 1024);
    assert!(
        stderr(&out).contains("dropped 983040 bytes of stdout"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn job_state_is_durable_across_runs() {
    let kv = tempfile::tempdir().unwrap();
    let dir = kv.path().to_str().unwrap();
    for expected in 1..=3 {
        let out = run_job(&["--kv-dir", dir], &["kv", "default"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out), format!("runs={expected}\n"));
    }
    let denied = run_job(&["--kv-dir", dir], &["kv", "other"]);
    assert!(!denied.status.success());
    assert!(
        stderr(&denied).contains("not granted"),
        "{}",
        stderr(&denied)
    );
}
