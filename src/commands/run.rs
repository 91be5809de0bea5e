//! `dabba run`: run one job component to completion; its exit code is dabba's.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use dabba_host::AppConfig;
use dabba_host::ComponentBytes;
use dabba_host::job::RunInput;
use dabba_host::runtime::{Runtime, RuntimeOptions};
use dabba_spec::WorkloadKind;

use crate::flags::{CacheFlags, CapabilityFlags, LimitFlags, app_name};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job to run: any wasm component exporting wasi:cli/run (a Rust `fn main`
    /// built for wasm32-wasip2).
    #[arg(value_name = "COMPONENT.wasm")]
    pub component: PathBuf,
    /// Arguments for the job, after `--`.
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
    /// The job's name (the first argument it sees, and its name in logs). Default: the file name.
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub limits: LimitFlags,
    #[command(flatten)]
    pub capabilities: CapabilityFlags,
    #[command(flatten)]
    pub cache: CacheFlags,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let rt = super::tokio_runtime()?;
    rt.block_on(async move {
        let limits = args.limits.resolve(WorkloadKind::Job)?;
        let runtime = Runtime::new(&RuntimeOptions {
            cache_dir: args.cache.dir(),
            ..Default::default()
        })?;
        let wasm = ComponentBytes::read(&args.component)?;
        let app = AppConfig {
            name: args.name.clone().unwrap_or_else(|| app_name(&args.component)),
            revision: None,
            scope: "default".into(),
            limits,
            capabilities: args.capabilities.capabilities(),
            secrets: Default::default(),
            kv: args.capabilities.kv_backend()?,
            log: None,
        };
        let job = runtime.load_job(app, &wasm)?;
        let report = job.run(RunInput { args: args.args, env: Vec::new() }).await;
        std::io::stdout().write_all(&report.stdout)?;
        std::io::stdout().flush()?;
        std::io::stderr().write_all(&report.stderr)?;
        let (out_dropped, err_dropped) = report.dropped;
        if out_dropped + err_dropped > 0 {
            eprintln!(
                "dabba: dropped {out_dropped} bytes of stdout and {err_dropped} of stderr past the output cap (--max-output)"
            );
        }
        if let Some((_, text)) = &report.failure {
            eprintln!("dabba: {} stopped: {text}", job.name());
        }
        Ok(ExitCode::from(report.exit_code.clamp(0, 255) as u8))
    })
}
