//! The harness as a user meets it: its help lists every suite, and a mistake in its
//! flags is refused before anything starts. (`cargo test --workspace` building this
//! test also builds the `dabba-bench` binary, which `dabba bench` and the end-to-end
//! quick runs in `tests/all/bench.rs` need next to `dabba`.)

use std::process::Command;

fn harness(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dabba-bench"))
        .args(args)
        .output()
        .expect("running dabba-bench")
}

#[test]
fn the_help_names_every_suite() {
    let out = harness(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for suite in [
        "runtime",
        "cluster",
        "autoscale",
        "settlement",
        "containers",
        "all",
    ] {
        assert!(help.contains(suite), "{suite} missing from\n{help}");
    }
}

#[test]
fn an_unknown_suite_is_refused_with_the_choices() {
    let out = harness(&["--suite", "everything"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("everything") && err.contains("containers"),
        "{err}"
    );
}
