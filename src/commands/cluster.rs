//! `dabba cluster status|add|remove|prefer-leader-region`: the controllers, their regions,
//! roles, lag and round trips, and which region's loss the cluster survives.

use clap::Subcommand;
use dabba_spec::api::{AddMember, ClusterStatus, PreferredLeaderRegion};

use super::block_on;
use super::output::{Output, print_json, table};
use super::target::ClusterArgs;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Members, leader, term, commit index and each member's lag.
    Status {
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Add a controller (started with the cluster's peer token) as a voter.
    Add {
        #[arg(long)]
        id: u64,
        #[arg(long, value_name = "URL")]
        address: String,
        #[arg(long, default_value = "default")]
        region: String,
        #[arg(long, default_value = "default")]
        zone: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Keep the leader in REGION while it is healthy (`--none`: anywhere).
    PreferLeaderRegion {
        region: Option<String>,
        #[arg(long, conflicts_with = "region")]
        none: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Remove a controller from the cluster.
    Remove {
        id: u64,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

pub fn cluster(cmd: ClusterCommand) -> anyhow::Result<()> {
    block_on(async move {
        let (status, output) = match cmd {
            ClusterCommand::Status { output, cluster } => {
                (cluster.client()?.cluster_status().await?, output)
            }
            ClusterCommand::Add {
                id,
                address,
                region,
                zone,
                cluster,
            } => (
                cluster
                    .client()?
                    .add_member(&AddMember {
                        id,
                        address,
                        region,
                        zone,
                    })
                    .await?,
                Output::Table,
            ),
            ClusterCommand::PreferLeaderRegion {
                region,
                none,
                cluster,
            } => {
                if region.is_none() && !none {
                    anyhow::bail!("name a region, or --none");
                }
                (
                    cluster
                        .client()?
                        .prefer_leader_region(&PreferredLeaderRegion { region })
                        .await?,
                    Output::Table,
                )
            }
            ClusterCommand::Remove { id, cluster } => {
                (cluster.client()?.remove_member(id).await?, Output::Table)
            }
        };
        if output == Output::Json {
            return print_json(&status);
        }
        print_status(&status);
        Ok(())
    })
}

fn print_status(s: &ClusterStatus) {
    println!(
        "leader: {}   term: {}   commit index: {}   applied index: {}   state version: {}",
        s.leader.map_or("none".into(), |l| l.to_string()),
        s.term,
        s.commit_index.map_or("-".into(), |c| c.to_string()),
        s.applied_index.map_or("-".into(), |c| c.to_string()),
        s.version
    );
    table(
        &["ID", "ADDRESS", "REGION", "ZONE", "ROLE", "LAG", "RTT"],
        s.members
            .iter()
            .map(|m| {
                let role = if Some(m.id) == s.leader {
                    "leader"
                } else if m.voter {
                    "follower"
                } else {
                    "learner"
                };
                vec![
                    m.id.to_string(),
                    m.address.clone(),
                    m.region.clone(),
                    m.zone.clone(),
                    role.into(),
                    m.lag.map_or("-".into(), |l| l.to_string()),
                    m.rtt_ms.map_or("-".into(), |r| format!("{r:.1} ms")),
                ]
            })
            .collect(),
    );
    println!();
    println!("{}", survival(s));
    if let Some(r) = &s.preferred_leader_region {
        println!("preferred leader region: {r}");
    }
    let c = &s.components;
    println!(
        "components: {} ({:.1} MiB, outside the Raft log); controller {} holds {} of them",
        c.count,
        c.bytes as f64 / (1 << 20) as f64,
        s.node,
        c.held_here
    );
}

/// Which region's loss the cluster survives, in words.
fn survival(s: &ClusterStatus) -> String {
    let regions = &s.survives_region_loss;
    if regions.len() < 2 {
        return format!(
            "voters in {} region: the cluster cannot survive losing it (spread voters over 3 regions)",
            regions.len()
        );
    }
    let lost: Vec<&str> = regions
        .iter()
        .filter(|(_, ok)| !**ok)
        .map(|(r, _)| r.as_str())
        .collect();
    if lost.is_empty() {
        format!(
            "voters in {} regions: the cluster survives losing any one of them, with every acknowledged write",
            regions.len()
        )
    } else {
        format!(
            "voters in {} regions: losing {} would lose the quorum (with 2 regions one always holds a majority; spread voters over 3)",
            regions.len(),
            lost.join(" or ")
        )
    }
}
