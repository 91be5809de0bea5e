//! `dabba bench ARGS`: runs `dabba-bench ARGS`, the benchmark harness, found next to
//! this binary (as `cargo foo` runs `cargo-foo`). The harness is its own binary so the
//! product does not carry it; `dabba bench --help` is its help.

use std::ffi::OsString;

use anyhow::Context;
use clap::Args;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Everything `dabba-bench` takes (see `dabba bench --help`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<OsString>,
}

/// Replaces this process with `dabba-bench ARGS`.
pub fn bench(args: BenchArgs) -> anyhow::Result<std::process::ExitCode> {
    let exe = std::env::current_exe().context("finding this program")?;
    let harness = exe.with_file_name("dabba-bench");
    anyhow::ensure!(
        harness.is_file(),
        "{} not found: `dabba bench` runs the benchmark harness next to dabba; build it with `cargo build --release` (it builds both) or `cargo build --release -p dabba-bench`",
        harness.display()
    );
    let mut cmd = std::process::Command::new(&harness);
    cmd.args(&args.args);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let e = cmd.exec();
        Err(e).with_context(|| format!("running {}", harness.display()))
    }
    #[cfg(not(unix))]
    {
        let status = cmd
            .status()
            .with_context(|| format!("running {}", harness.display()))?;
        Ok(std::process::ExitCode::from(
            status.code().unwrap_or(2).clamp(0, 255) as u8,
        ))
    }
}
