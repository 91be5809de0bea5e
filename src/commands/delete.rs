//! `dabba delete app|cronjob NAME`: an app with its revisions and pods, or a cron job
//! with its runs.

use clap::Args;

use super::target::ClusterArgs;
use super::{ObjectKind, block_on};

#[derive(Debug, Args)]
pub struct DeleteArgs {
    pub kind: ObjectKind,
    pub name: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

pub fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let api = args.cluster.client()?;
    let key = args.cluster.key(&args.name);
    block_on(async move {
        match args.kind {
            ObjectKind::App => api.delete_app(&key).await?,
            ObjectKind::Cronjob => api.delete_cron_job(&key).await?,
        }
        println!("{} {key} deleted", args.kind.noun());
        Ok(())
    })
}
