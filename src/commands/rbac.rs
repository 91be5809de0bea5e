//! `dabba create job|role|rolebinding`, `dabba auth can-i`: what the cluster lets each
//! token do (`dabba_spec::rbac`). Roles and bindings are in `-n`'s namespace, or
//! cluster-wide with `--cluster-wide`.

use clap::{Args, Subcommand};
use dabba_spec::rbac::{PolicyRule, RoleBinding, RoleSpec};

use super::block_on;
use super::target::ClusterArgs;

#[derive(Debug, Subcommand)]
pub enum CreateCommand {
    /// A manual run of a cron job now: `dabba create job --from cronjob/NAME`.
    Job(super::cron::CreateArgs),
    /// A role: these verbs on these resources (`dabba auth can-i` lists both).
    Role(RoleArgs),
    /// A role binding: give a role to tokens (by id, as `dabba token list` shows).
    Rolebinding(BindingArgs),
}

#[derive(Debug, Args)]
pub struct RoleArgs {
    pub name: String,
    /// Verbs, comma-separated: get, list, watch, create, update, delete, scale,
    /// rollout, logs, exec-job, or *.
    #[arg(long = "verb", value_delimiter = ',', required = true)]
    pub verbs: Vec<String>,
    /// Resources, comma-separated: apps, pods, secrets, cronjobs, ... or *.
    #[arg(long = "resource", value_delimiter = ',', required = true)]
    pub resources: Vec<String>,
    /// A cluster-wide role (else in -n's namespace).
    #[arg(long)]
    pub cluster_wide: bool,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Debug, Args)]
pub struct BindingArgs {
    pub name: String,
    /// The role: the cluster's own, or viewer, deployer, admin.
    #[arg(long)]
    pub role: String,
    /// Token ids, comma-separated.
    #[arg(long = "token-id", value_delimiter = ',', required = true)]
    pub tokens: Vec<String>,
    /// Everywhere (else in -n's namespace only).
    #[arg(long)]
    pub cluster_wide: bool,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Whether this token may VERB RESOURCE (in -n's namespace): `yes` (exit 0) or
    /// `no` (exit 1), and which role or binding decides.
    CanI(CanIArgs),
}

#[derive(Debug, Args)]
pub struct CanIArgs {
    pub verb: String,
    pub resource: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

fn scope(cluster: &ClusterArgs, cluster_wide: bool) -> Option<String> {
    (!cluster_wide).then(|| cluster.namespace.clone())
}

pub fn create(cmd: CreateCommand) -> anyhow::Result<()> {
    match cmd {
        CreateCommand::Job(args) => super::cron::create(args),
        CreateCommand::Role(args) => {
            let role = RoleSpec {
                name: args.name,
                namespace: scope(&args.cluster, args.cluster_wide),
                rules: vec![PolicyRule {
                    resources: args.resources,
                    verbs: args.verbs,
                }],
            };
            role.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
            let api = args.cluster.client()?;
            block_on(async move {
                api.put_role(&role).await?;
                println!(
                    "role {} configured",
                    shown(role.namespace.as_deref(), &role.name)
                );
                Ok(())
            })
        }
        CreateCommand::Rolebinding(args) => {
            let binding = RoleBinding {
                name: args.name,
                namespace: scope(&args.cluster, args.cluster_wide),
                role: args.role,
                tokens: args.tokens,
            };
            binding.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
            let api = args.cluster.client()?;
            block_on(async move {
                api.put_role_binding(&binding).await?;
                println!(
                    "rolebinding {} configured: role {} to {} token(s)",
                    shown(binding.namespace.as_deref(), &binding.name),
                    binding.role,
                    binding.tokens.len()
                );
                Ok(())
            })
        }
    }
}

/// `ns/name`, or `name (cluster-wide)`.
pub fn shown(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => format!("{name} (cluster-wide)"),
    }
}

/// `dabba auth can-i`: true when allowed.
pub fn auth(cmd: AuthCommand) -> anyhow::Result<bool> {
    let AuthCommand::CanI(args) = cmd;
    let api = args.cluster.client()?;
    let mut allowed = false;
    block_on(async {
        let answer = api
            .can_i(&args.verb, &args.resource, Some(&args.cluster.namespace))
            .await?;
        println!(
            "{} ({})",
            if answer.allowed { "yes" } else { "no" },
            answer.reason
        );
        allowed = answer.allowed;
        Ok(())
    })?;
    Ok(allowed)
}
