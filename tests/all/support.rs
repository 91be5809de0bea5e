//! Shared helpers over `dabba-testkit` (the one launcher the benchmarks use too): the
//! `dabba` under test, `dabba serve` and CLI runs that block, and reading CLI output.
//! Everything talks to 127.0.0.1 only, and every wait is bounded.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

pub use dabba_testkit::http::{Reply, request, try_request};
pub use dabba_testkit::{
    Served, bench_harness, block_on, eventually, guest, native_servers, workspace,
};
use serde::de::DeserializeOwned;

/// The `dabba` binary under test.
pub fn dabba_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dabba"))
}

pub fn dabba() -> Command {
    let mut cmd = Command::new(dabba_bin());
    cmd.env("RUST_LOG", "warn");
    cmd
}

/// Where the processes the tests start write their logs.
fn log_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("dabba-tests-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("a log directory");
        d
    })
}

/// `dabba serve COMPONENT ARGS...`, once it answers.
pub fn serve(component: &Path, args: &[&str]) -> Served {
    block_on(Served::start(dabba_bin(), component, args, log_dir())).expect("dabba serve")
}

/// Like [`serve`], with Prometheus metrics on a port of its own.
pub fn serve_with_metrics(component: &Path, args: &[&str]) -> Served {
    block_on(Served::with_metrics(
        dabba_bin(),
        component,
        args,
        log_dir(),
    ))
    .expect("dabba serve")
}

/// Runs `dabba ARGS...` to completion (bounded by `timeout`).
pub fn run_dabba(args: &[&str], timeout: Duration) -> Output {
    let child = dabba()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting dabba");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.expect("collecting output"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("dabba {args:?} did not finish within {timeout:?}");
        }
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A CLI command's `-o json` output, as the API type it prints.
pub fn json_out<T: DeserializeOwned>(o: &Output) -> T {
    assert!(o.status.success(), "{}{}", stdout(o), stderr(o));
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not the JSON expected ({e}):\n{}", stdout(o)))
}

/// Writes a manifest to `path` and applies it with `cli` (a platform's CLI with its
/// credentials), which must succeed.
pub fn apply_manifest(cli: &dyn Fn(&[&str]) -> Output, path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    let out = cli(&["apply", "-f", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
}
