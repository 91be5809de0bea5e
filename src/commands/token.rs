//! `dabba token --role R --label L [--for-namespace NS]`: a new API token (admins only),
//! printed once.

use clap::{Args, ValueEnum};
use dabba_spec::api::TokenRequest;
use dabba_spec::resources::Role;

use super::block_on;
use super::target::ClusterArgs;

/// The roles a person's token may have (hosts get the cluster's join token).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TokenRole {
    Viewer,
    Deployer,
    Admin,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[arg(long, value_enum)]
    pub role: TokenRole,
    /// Limit the token to one namespace. Default: all.
    #[arg(long = "for-namespace")]
    pub for_namespace: Option<String>,
    /// A name for the token, shown in errors and audits.
    #[arg(long)]
    pub label: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

pub fn token(args: TokenArgs) -> anyhow::Result<()> {
    let role = match args.role {
        TokenRole::Viewer => Role::Viewer,
        TokenRole::Deployer => Role::Deployer,
        TokenRole::Admin => Role::Admin,
    };
    let api = args.cluster.client()?;
    block_on(async move {
        let t = api
            .create_token(&TokenRequest {
                role,
                namespace: args.for_namespace,
                label: args.label,
            })
            .await?;
        println!("{}", t.token);
        Ok(())
    })
}
