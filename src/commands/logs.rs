//! `dabba logs app NAME` (recent output of the app's instances on every host) and
//! `dabba logs job RUN` (a cron job run's output, kept with the run).

use anyhow::bail;
use clap::{Args, ValueEnum};

use super::block_on;
use super::target::ClusterArgs;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogsKind {
    /// An app's instances.
    App,
    /// One run of a cron job (its output is kept with it).
    Job,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    pub kind: LogsKind,
    pub name: String,
    /// Lines to show.
    #[arg(long, default_value_t = 100)]
    pub tail: usize,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

pub fn logs(args: LogsArgs) -> anyhow::Result<()> {
    let api = args.cluster.client()?;
    let key = args.cluster.key(&args.name);
    block_on(async move {
        match args.kind {
            LogsKind::Job => {
                let jobs = api.cron_jobs(Some(key.namespace())).await?;
                let Some(run) = jobs
                    .iter()
                    .flat_map(|j| &j.runs)
                    .find(|r| r.name == key.name())
                else {
                    bail!("no job run {key} (see `dabba get jobs`)");
                };
                print!("{}", run.output);
            }
            LogsKind::App => {
                for l in api.app_logs(&key, args.tail).await? {
                    println!("[{}] {}: {}", l.host, l.stream, l.line);
                }
            }
        }
        Ok(())
    })
}
