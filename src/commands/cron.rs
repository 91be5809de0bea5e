//! What is done to a cron job besides applying it: `dabba suspend|resume cronjob NAME`,
//! and `dabba create job --from cronjob/NAME` (a manual run now).

use anyhow::bail;
use clap::{Args, ValueEnum};

use super::block_on;
use super::target::ClusterArgs;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CronKind {
    Cronjob,
}

/// `dabba suspend|resume cronjob NAME`.
#[derive(Debug, Args)]
pub struct CronArgs {
    pub kind: CronKind,
    pub name: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Stops a cron job from claiming schedule times.
pub fn suspend(args: CronArgs) -> anyhow::Result<()> {
    let api = args.cluster.client()?;
    let key = args.cluster.key(&args.name);
    block_on(async move {
        api.suspend_cron_job(&key).await?;
        println!("cronjob {key} suspended");
        Ok(())
    })
}

/// Lets a suspended cron job claim schedule times again.
pub fn resume(args: CronArgs) -> anyhow::Result<()> {
    let api = args.cluster.client()?;
    let key = args.cluster.key(&args.name);
    block_on(async move {
        api.resume_cron_job(&key).await?;
        println!("cronjob {key} resumed");
        Ok(())
    })
}

/// `dabba create job --from cronjob/NAME`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The cron job to run now, as `cronjob/NAME`.
    #[arg(long, value_name = "cronjob/NAME")]
    pub from: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Starts a manual run of a cron job.
pub fn create(args: CreateArgs) -> anyhow::Result<()> {
    let Some(name) = args.from.strip_prefix("cronjob/") else {
        bail!("--from takes cronjob/NAME, not `{}`", args.from);
    };
    let api = args.cluster.client()?;
    let key = args.cluster.key(name);
    block_on(async move {
        api.run_cron_job(&key).await?;
        println!("a manual run of cronjob {key} was created (see `dabba get jobs`)");
        Ok(())
    })
}
