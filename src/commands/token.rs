//! `dabba token create|list|revoke` (admins): API tokens. A new token's secret is
//! printed once; afterwards a token is named by its id (the start of the secret's
//! SHA-256), which is enough to revoke it and useless to use it.

use anyhow::bail;
use clap::{Args, Subcommand};
use dabba_spec::HumanDuration;
use dabba_spec::api::TokenRequest;
use dabba_spec::resources::Role;

use super::block_on;
use super::output::{Output, age, print_json, span, table};
use super::target::ClusterArgs;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; prints its secret once (and its id on stderr).
    Create(CreateArgs),
    /// List the tokens: id, label, role, namespace, expiry — never a secret.
    List(ListArgs),
    /// Revoke a token by id (`dabba token list`): it stops working at once.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// viewer, deployer, admin, or a role of the cluster's own (`dabba create role`):
    /// the token is then bound to it, in --for-namespace or cluster-wide.
    #[arg(long)]
    pub role: String,
    /// Limit the token to one namespace. Default: all. (`-n` names the namespace a
    /// command acts in; a token's reach is its own flag.)
    #[arg(long = "for-namespace", value_name = "NS")]
    pub for_namespace: Option<String>,
    /// A name for the token, shown in errors and in the audit log.
    #[arg(long)]
    pub label: String,
    /// How long the token works, e.g. 24h. Default: until revoked.
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<HumanDuration>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Output,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    pub id: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

pub fn token(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create(args) => create(args),
        TokenCommand::List(args) => list(args),
        TokenCommand::Revoke(args) => {
            let api = args.cluster.client()?;
            block_on(async move {
                api.revoke_token(&args.id).await?;
                println!("token {} revoked", args.id);
                Ok(())
            })
        }
    }
}

fn create(args: CreateArgs) -> anyhow::Result<()> {
    let (role, bind) = match args.role.as_str() {
        "viewer" => (Role::Viewer, None),
        "deployer" => (Role::Deployer, None),
        "admin" => (Role::Admin, None),
        other => (Role::Bound, Some(other.to_string())),
    };
    let ttl_ms = args.ttl.map(|t| t.get().as_millis() as u64);
    if ttl_ms == Some(0) {
        bail!("--ttl must be longer than 0s");
    }
    let api = args.cluster.client()?;
    block_on(async move {
        let t = api
            .create_token(&TokenRequest {
                role,
                namespace: args.for_namespace,
                label: args.label,
                ttl_ms,
                bind,
            })
            .await?;
        println!("{}", t.token);
        eprintln!("token id {} (for `dabba token revoke`)", t.id);
        Ok(())
    })
}

fn list(args: ListArgs) -> anyhow::Result<()> {
    let api = args.cluster.client()?;
    block_on(async move {
        let tokens = api.tokens().await?;
        if args.output == Output::Json {
            return print_json(&tokens);
        }
        let now = dabba_controller::node::now_millis();
        table(
            &["ID", "LABEL", "ROLE", "NAMESPACE", "EXPIRES"],
            tokens
                .iter()
                .map(|t| {
                    let g = &t.grant;
                    vec![
                        t.id.clone(),
                        g.label.clone(),
                        match &g.host {
                            Some(h) => format!("host ({h})"),
                            None if g.role == Role::Host => "host (join)".into(),
                            None => format!("{:?}", g.role).to_lowercase(),
                        },
                        g.namespace.clone().unwrap_or_else(|| "*".into()),
                        match g.expires {
                            None => "never".into(),
                            Some(at) if at <= now => format!("expired {} ago", age(at)),
                            Some(at) => format!("in {}", span(at - now)),
                        },
                    ]
                })
                .collect(),
        );
        Ok(())
    })
}
