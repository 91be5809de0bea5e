//! `dabba scale app NAME --replicas N`.

use clap::{Args, ValueEnum};

use super::block_on;
use super::target::ClusterArgs;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ScaleKind {
    App,
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    pub kind: ScaleKind,
    pub name: String,
    #[arg(long)]
    pub replicas: u32,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

pub fn scale(args: ScaleArgs) -> anyhow::Result<()> {
    let api = args.cluster.client()?;
    let key = args.cluster.key(&args.name);
    block_on(async move {
        let app = api.scale_app(&key, args.replicas).await?;
        println!(
            "app {key} scaled to {} replicas (revision {})",
            app.spec.replicas, app.revision
        );
        Ok(())
    })
}
