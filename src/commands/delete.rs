//! `dabba delete app|cronjob|analysistemplate|secret NAME`: an app with its revisions and
//! pods, a cron job with its runs, an analysis template (unless a rollout names it), or
//! a secret (unless an app or cron job lists it).

use clap::Args;

use super::target::ClusterArgs;
use super::{ObjectKind, block_on};

#[derive(Debug, Args)]
pub struct DeleteArgs {
    pub kind: ObjectKind,
    pub name: String,
    /// A cluster-wide role or role binding (else the one in -n's namespace).
    #[arg(long)]
    pub cluster_wide: bool,
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
            ObjectKind::Analysistemplate => api.delete_analysis_template(&key).await?,
            ObjectKind::Role | ObjectKind::Rolebinding => {
                let ns = (!args.cluster_wide).then_some(args.cluster.namespace.as_str());
                let binding = matches!(args.kind, ObjectKind::Rolebinding);
                api.delete_rbac(binding, &args.name, ns).await?;
                println!(
                    "{} {} deleted",
                    args.kind.noun(),
                    super::rbac::shown(ns, &args.name)
                );
                return Ok(());
            }
            ObjectKind::Namespace => anyhow::bail!(
                "a namespace is not deleted (delete what is in it); to lift its quota and \
                 limit range, apply a [namespace] manifest without them"
            ),
            ObjectKind::Secret => {
                let key = super::secret::secret_key(&args.cluster, &args.name);
                api.delete_secret(&key).await?;
                println!("secret {key} deleted");
                return Ok(());
            }
        }
        println!("{} {key} deleted", args.kind.noun());
        Ok(())
    })
}
