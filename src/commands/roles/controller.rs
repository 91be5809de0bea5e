//! `dabba controller`: one member of the replicated control plane. Without `--join` a
//! new controller starts a one-node cluster (and writes its admin and host-join tokens);
//! with it, it asks a member for the cluster's peer token and to be added.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use dabba_client::{ApiClient, ApiError};
use dabba_controller::node::ControllerOptions;
use dabba_spec::api::{AddMember, ControllerPlace};

use super::{RaftFlags, TuningFlags, bind, start_controller, url_of};

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// This controller's id, unique in the cluster (1, 2, 3...).
    #[arg(long)]
    pub id: u64,
    /// Address the API (and Raft) listens on.
    #[arg(long, default_value = "127.0.0.1:7070", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// The URL peers and hosts use to reach this controller. Default: http:// and the --listen address.
    #[arg(long, value_name = "URL")]
    pub advertise: Option<String>,
    /// Where the Raft log, snapshots and secrets are kept.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Join the cluster one of whose controllers answers at URL (needs --token, an admin
    /// token). Without --join, a new controller starts a new one-node cluster.
    #[arg(long, value_name = "URL")]
    pub join: Option<String>,
    /// Admin token for --join. Also read from DABBA_TOKEN.
    #[arg(long, env = "DABBA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The region this controller runs in (its voters' spread decides which region's
    /// loss the cluster survives: spec/regions.md).
    #[arg(long, default_value = "default")]
    pub region: String,
    /// The zone within the region.
    #[arg(long, default_value = "default")]
    pub zone: String,
    /// When this controller starts a new cluster: keep the leader in this region while
    /// it is healthy (`dabba cluster prefer-leader-region` changes it later).
    #[arg(long, value_name = "REGION")]
    pub preferred_leader_region: Option<String>,
    #[command(flatten)]
    pub raft: RaftFlags,
    #[command(flatten)]
    pub tuning: TuningFlags,
}

pub fn controller(args: ControllerArgs) -> anyhow::Result<()> {
    let rt = super::super::tokio_runtime()?;
    rt.block_on(async move {
        let listener = bind(args.listen, "controller API").await?;
        let advertise = args.advertise.unwrap_or_else(|| url_of(args.listen));
        let tuning = args.tuning.tuning()?;
        let fresh = !args.data_dir.join("raft.redb").exists();
        // A controller stopped before the cluster answered its join asks again when it
        // starts (and stands for no election until then), whatever its log holds.
        let marker = args.data_dir.join(JOINING);
        let interrupted = !fresh && marker.exists();
        if interrupted && args.join.is_none() {
            bail!(
                "{} says this controller's join of a cluster did not finish; start it again \
                 with --join URL and --token, so it can ask the cluster again",
                marker.display()
            );
        }
        let joining = args.join.is_some() && (fresh || interrupted);
        let joined = match (&args.join, fresh) {
            (Some(url), true) => {
                let token = args
                    .token
                    .clone()
                    .context("--join needs --token (an admin token of the cluster)")?;
                let api = ApiClient::new(vec![url.clone()], token);
                let p = api
                    .peer_token()
                    .await
                    .with_context(|| format!("asking {url} for the cluster's peer token"))?;
                // A member that lost its data must not answer Raft under its old id: it
                // would have forgotten its log and its votes, which Raft's safety rests
                // on (and the leader refuses a follower whose log went backwards).
                let status = api
                    .cluster_status()
                    .await
                    .with_context(|| format!("asking {url} for the cluster's members"))?;
                if status.members.iter().any(|m| m.id == args.id) {
                    bail!(
                        "controller {id} is already a member of the cluster at {url}, but {dir} \
                         holds no Raft log: its data was lost or wiped. Remove the old member \
                         first (`dabba cluster remove {id}`), then start this controller again: \
                         it joins as a new member and catches up from a snapshot.",
                        id = args.id,
                        dir = args.data_dir.display()
                    );
                }
                Some(p)
            }
            _ => None,
        };
        let (peer_token, secrets_key) = match joined {
            Some(p) => (Some(p.token), p.secrets_key),
            None => (None, None),
        };
        let opts = ControllerOptions {
            id: args.id,
            address: advertise.clone(),
            data_dir: args.data_dir.clone(),
            tuning,
            peer_token,
            secrets_key,
            timing: args.raft.timing()?,
            snapshot_logs: args.raft.snapshot_logs()?,
            blob_bandwidth: args.raft.blob_bandwidth.as_u64(),
            kv_cache: args.raft.kv_cache.as_u64(),
            audit_level: args.raft.audit_level,
            place: ControllerPlace {
                region: args.region.clone(),
                zone: args.zone.clone(),
            },
            preferred_leader_region: args.preferred_leader_region.clone(),
            joining,
        };
        if joining && fresh {
            write_durably(&marker, args.join.as_deref().unwrap_or_default())
                .with_context(|| format!("writing {}", marker.display()))?;
        }
        let node = start_controller(opts, listener, None).await?;
        match (&args.join, joining, fresh) {
            (Some(url), true, _) => {
                let api = ApiClient::new(
                    vec![url.clone()],
                    args.token.clone().unwrap_or_default(),
                );
                let add = AddMember {
                    id: args.id,
                    address: advertise.clone(),
                    region: args.region.clone(),
                    zone: args.zone.clone(),
                };
                // The cluster may still be electing its first leader, or finishing
                // another member's change: keep asking for a minute. Adding a member
                // that is already there changes nothing, so a retry is safe. The
                // leader answers once this controller has caught up; an answer lost on
                // the way or a 504 (a follower forwarding the request gives up on it
                // sooner than the leader does) means the cluster is there and working
                // on it: the minute starts again.
                let mut deadline = tokio::time::Instant::now() + JOIN_PATIENCE;
                loop {
                    match api.add_member(&add).await {
                        Ok(_) => break,
                        Err(e @ (ApiError::Unknown(_) | ApiError::Status { status: 504, .. })) => {
                            tracing::info!(error = %e, "still catching up; asking {url} again");
                            deadline = tokio::time::Instant::now() + JOIN_PATIENCE;
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                        // A wrong token or a refused request will not get better.
                        Err(e)
                            if tokio::time::Instant::now() < deadline
                                && !e.status().is_some_and(|s| (400..500).contains(&s)) =>
                        {
                            tracing::warn!(error = %e, "joining the cluster at {url}; retrying");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                        Err(e) => {
                            return Err(e).with_context(|| {
                                format!("joining the cluster at {url} (tried for {JOIN_PATIENCE:?})")
                            });
                        }
                    }
                }
                node.joined();
                std::fs::remove_file(&marker)
                    .with_context(|| format!("removing {}", marker.display()))?;
                println!("controller {} joined the cluster at {url}", args.id);
            }
            (None, _, true) => {
                if node.initialize().await?.is_some() {
                    println!(
                        "controller {} started a new cluster; admin token in {}, host join token in {}",
                        args.id,
                        args.data_dir.join("admin.token").display(),
                        args.data_dir.join("join.token").display()
                    );
                }
            }
            _ => println!("controller {} rejoined its cluster", args.id),
        }
        println!("controller {} serving the API on {advertise}", args.id);
        super::super::shutdown_signal().await;
        // Let the server drain, then stop Raft so the log is closed cleanly.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = node.raft.shutdown().await;
        Ok(())
    })
}

/// The file a joining controller keeps in its data directory until the cluster has
/// answered its join (it holds the URL it joins).
const JOINING: &str = "joining";

/// Writes `text` to `path` and makes it (and its name) durable before returning.
fn write_durably(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::File::create(path)?;
    std::io::Write::write_all(&mut f, text.as_bytes())?;
    f.sync_all()?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// How long a new controller keeps asking to join.
const JOIN_PATIENCE: Duration = Duration::from_secs(60);
