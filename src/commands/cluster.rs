//! `dabba cluster status|add|remove`: the controllers, their roles and lag.

use clap::Subcommand;
use dabba_spec::api::{AddMember, ClusterStatus};

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
                cluster,
            } => (
                cluster
                    .client()?
                    .add_member(&AddMember { id, address })
                    .await?,
                Output::Table,
            ),
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
        &["ID", "ADDRESS", "ROLE", "LAG"],
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
                    role.into(),
                    m.lag.map_or("-".into(), |l| l.to_string()),
                ]
            })
            .collect(),
    );
}
