//! `dabba region failover|drain|restore REGION`: an operator moves every app placed in
//! a region (`spec/regions.md`); and how regions print (shared with `get regions`).

use clap::Subcommand;
use dabba_spec::api::RegionView;

use super::block_on;
use super::output::table;
use super::target::ClusterArgs;

#[derive(Debug, Subcommand)]
pub enum RegionCommand {
    /// Stop serving from REGION now: the next region (or --to) takes its apps at once.
    Failover {
        region: String,
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Move REGION's apps to another region, planned: requests move once the target
    /// runs their pods (no request fails).
    Drain {
        region: String,
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Serve from REGION again (its hosts are back): failback.
    Restore {
        region: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

pub fn region(cmd: RegionCommand) -> anyhow::Result<()> {
    let (region, action, to, cluster) = match cmd {
        RegionCommand::Failover {
            region,
            to,
            cluster,
        } => (region, "failover", to, cluster),
        RegionCommand::Drain {
            region,
            to,
            cluster,
        } => (region, "drain", to, cluster),
        RegionCommand::Restore { region, cluster } => (region, "restore", None, cluster),
    };
    let api = cluster.client()?;
    block_on(async move {
        let views = api.region_action(&region, action, to.as_deref()).await?;
        println!("region {region}: {action} committed");
        print_table(&views);
        Ok(())
    })
}

/// Regions as `get regions` shows them.
pub fn print_table(views: &[RegionView]) {
    table(
        &["REGION", "HOSTS READY", "AVAILABILITY", "VOTERS", "APPS"],
        views
            .iter()
            .map(|v| {
                let h = &v.health;
                let apps: Vec<String> = v
                    .apps
                    .iter()
                    .map(|a| {
                        let state = match (&a.failed, &a.draining_to, a.serving) {
                            (Some(f), _, _) => format!("failed over to {} ({:?})", f.to, f.kind),
                            (None, Some(t), _) => format!("draining to {t}"),
                            (None, None, true) => "serving".into(),
                            (None, None, false) => "standby".into(),
                        };
                        let firing = if a.triggers.is_empty() {
                            String::new()
                        } else {
                            format!(" [{}]", a.triggers.join("; "))
                        };
                        format!(
                            "{} {state} {}/{} pods{firing}",
                            a.app.name(),
                            a.running,
                            a.replicas
                        )
                    })
                    .collect();
                vec![
                    h.region.clone(),
                    format!("{}/{}", h.ready, h.hosts),
                    format!("{}%", h.availability),
                    h.voters.to_string(),
                    apps.join(", "),
                ]
            })
            .collect(),
    );
}
