//! Bad input gets a clear error that says what and where, and dabba exits 2 without
//! crashing: random bytes, core modules, components of the wrong world, truncated and
//! missing files, malformed flags.

use std::path::Path;
use std::time::Duration;

use crate::support::*;

fn serve_fails(component: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "serve",
        component.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--no-cache",
    ];
    args.extend_from_slice(extra);
    let out = run_dabba(&args, Duration::from_secs(60));
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout: {}\nstderr: {}",
        stdout(&out),
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn random_bytes_are_not_webassembly() {
    let dir = tempfile::tempdir().unwrap();
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let err = serve_fails(&write(dir.path(), "noise.wasm", &noise), &[]);
    assert!(err.contains("noise.wasm is not WebAssembly"), "{err}");
    let err = serve_fails(&write(dir.path(), "empty.wasm", b""), &[]);
    assert!(err.contains("is empty"), "{err}");
}

#[test]
fn a_core_module_is_told_how_to_build_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let module = wat::parse_str("(module (func (export \"_start\")))").unwrap();
    let err = serve_fails(&write(dir.path(), "module.wasm", &module), &[]);
    assert!(
        err.contains("core WebAssembly module, not a component"),
        "{err}"
    );
    assert!(err.contains("cargo build --target wasm32-wasip2"), "{err}");
}

#[test]
fn a_component_of_the_wrong_world_lists_its_exports() {
    let err = serve_fails(&guest("settlement"), &[]);
    assert!(
        err.contains("does not export `wasi:http/incoming-handler@0.2"),
        "{err}"
    );
    assert!(err.contains("it exports: wasi:cli/run@0.2"), "{err}");
    assert!(err.contains("dabba run"), "{err}");

    let out = run_dabba(
        &["run", guest("payment").to_str().unwrap(), "--no-cache"],
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("wasi:http/incoming-handler@0.2"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("dabba serve"), "{}", stderr(&out));

    let dir = tempfile::tempdir().unwrap();
    let empty = wat::parse_str("(component)").unwrap();
    let err = serve_fails(&write(dir.path(), "empty-component.wasm", &empty), &[]);
    assert!(err.contains("it exports: nothing"), "{err}");
}

#[test]
fn a_truncated_component_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let whole = std::fs::read(guest("payment")).unwrap();
    let err = serve_fails(
        &write(dir.path(), "half.wasm", &whole[..whole.len() / 2]),
        &[],
    );
    assert!(err.contains("half.wasm ends early"), "{err}");
    let err = serve_fails(&write(dir.path(), "header.wasm", &whole[..6]), &[]);
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn a_missing_file_is_named() {
    let err = serve_fails(Path::new("/nonexistent/app.wasm"), &[]);
    assert!(err.contains("cannot read /nonexistent/app.wasm"), "{err}");
}

#[test]
fn a_component_needing_unknown_imports_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let c = wat::parse_str(
        r#"(component
             (import "acme:billing/ledger@1.0.0" (instance (export "post" (func))))
             (instance $handler)
             (export "wasi:http/incoming-handler@0.2.0" (instance $handler)))"#,
    )
    .unwrap();
    let err = serve_fails(&write(dir.path(), "needs-acme.wasm", &c), &[]);
    assert!(
        err.contains("needs an import this host does not provide"),
        "{err}"
    );
    assert!(err.contains("acme:billing/ledger"), "{err}");
}

#[test]
fn malformed_flags_are_explained() {
    let hello = guest("hello");
    let out = run_dabba(
        &["serve", hello.to_str().unwrap(), "--memory", "64MB"],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown unit `MB`"),
        "{}",
        stderr(&out)
    );
    let err = serve_fails(&hello, &["--memory", "64Gi"]);
    assert!(err.contains("more than one instance may have"), "{err}");
    let err = serve_fails(&hello, &["--allow-outbound", "example.com"]);
    assert!(err.contains("https://example.com"), "{err}");
    let out = run_dabba(
        &["serve", hello.to_str().unwrap(), "--timeout", "5"],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("expected a whole number followed by a unit"),
        "{}",
        stderr(&out)
    );
}

/// A controller whose join did not finish (its data directory says so) is not started
/// without `--join`: it says what to give, and writes nothing.
#[test]
fn a_controller_whose_join_did_not_finish_needs_join_again() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("raft.redb"), b"").unwrap();
    std::fs::write(dir.path().join("joining"), b"http://127.0.0.1:1").unwrap();
    let addr = dabba_testkit::free_addr().unwrap().to_string();
    let out = run_dabba(
        &[
            "controller",
            "--id",
            "2",
            "--listen",
            &addr,
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("join of a cluster did not finish") && err.contains("--join"),
        "{err}"
    );
    assert_eq!(std::fs::read(dir.path().join("raft.redb")).unwrap(), b"");
}
