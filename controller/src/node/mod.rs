//! A controller node: the Raft instance with its storage and network, the leader's soft
//! state (heartbeats, recent guest output), and the reconcile driver.
//!
//! Every node serves the API, but only the leader acts: the API layer forwards requests
//! it receives on a follower to the leader, so writes are proposed once and reads are
//! linearizable (the leader confirms it still leads before answering).
//!
//! Here: opening a node, initializing a cluster, leadership and membership. `proposals`
//! batches writes and leadership checks above Raft; `leader` is what only the leader
//! does — soft state from heartbeats, activations, and the reconcile driver.

pub mod analysis;
mod blobs;
pub use blobs::{ReceiveError, SpreadError, peer_path};
mod leader;
mod proposals;
mod regions;
pub mod secrets;

use leader::Soft;
use proposals::{Proposal, spawn_batcher, spawn_read_batcher};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dabba_spec::api::{ClusterStatus, ControllerPlace, Member};
use dabba_spec::resources::{Grant, Millis, Role};
use openraft::{BasicNode, ChangeMembers, SnapshotPolicy};

use crate::blobs::BlobStore;
use crate::command::{Command, Reply};
use crate::credentials::{new_token, token_hash, write_secret};
use crate::raft::log_store::LogStore;
use crate::raft::network::Network;
use crate::raft::state_machine::{Shared, StateMachine};
use crate::raft::{NodeId, Raft};
use crate::reconcile::Tuning;
use dabba_client::transport::{self as http_client, HttpClient};

#[derive(Debug, Clone)]
pub struct ControllerOptions {
    pub id: NodeId,
    /// This node's API address as peers and hosts reach it, e.g. `http://127.0.0.1:7070`.
    pub address: String,
    pub data_dir: PathBuf,
    pub tuning: Tuning,
    /// The cluster's peer token, for a node joining an existing cluster.
    pub peer_token: Option<String>,
    /// The cluster's key-encryption key for secrets (`crate::vault`), for a node
    /// joining an existing cluster.
    pub secrets_key: Option<String>,
    pub timing: RaftTiming,
    /// Log entries between snapshots ([`SNAPSHOT_LOGS`] unless told).
    pub snapshot_logs: u64,
    /// Bytes a second components may be written at on this controller, all together;
    /// 0: as fast as they go.
    pub blob_bandwidth: u64,
    /// Bytes of cache for the workload store.
    pub kv_cache: u64,
    /// How much of each audited request the audit log keeps.
    pub audit_level: dabba_spec::audit::AuditLevel,
    /// Where this controller runs.
    pub place: ControllerPlace,
    /// At initialization: keep the leader in this region while it is healthy.
    pub preferred_leader_region: Option<String>,
    /// A new node joining a cluster: it stands for no election until it has joined
    /// ([`Controller::joined`]). It is sent the leader's log from where that log
    /// starts, which can hold membership entries from before a member of its id was
    /// removed: appended, they make it a voter for a while, and a node far behind (its
    /// appends timing out while a snapshot is on its way) then campaigns every election
    /// timeout — each higher term unseats the leader, which starts the snapshot over.
    pub joining: bool,
}

/// Log entries between snapshots by default. Each snapshot writes the whole state, the
/// workload store included, in the background.
pub const SNAPSHOT_LOGS: u64 = 5000;

/// How fast Raft notices a lost leader. openraft 0.9 also bounds every AppendEntries
/// RPC by the heartbeat interval, so the interval must exceed the slowest append (32
/// entries on a busy machine): slow machines and debug builds need more.
#[derive(Debug, Clone, Copy)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    /// Elections start after a random timeout in [this, 2 × this); followers refuse
    /// votes for 2 × this after the last heartbeat (the leader lease).
    pub election_ms: u64,
}

impl Default for RaftTiming {
    /// Failover in about 400 ms on release builds (see spec/benchmarks.md).
    fn default() -> Self {
        RaftTiming {
            heartbeat_ms: 30,
            election_ms: 100,
        }
    }
}

/// Secrets created when a cluster is initialized.
#[derive(Debug, Clone)]
pub struct Secrets {
    pub admin_token: String,
    pub join_token: String,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProposeError {
    #[error("this controller is not the leader")]
    NotLeader { leader: Option<String> },
    #[error("raft: {0}")]
    Raft(String),
}

pub struct Controller {
    pub id: NodeId,
    pub address: String,
    pub raft: Raft,
    pub shared: Shared,
    pub client: HttpClient,
    /// The components this controller holds, by digest.
    pub blobs: Arc<BlobStore>,
    pub audit_level: dabba_spec::audit::AuditLevel,
    /// The key that wraps the secrets' data keys (`secrets.key`).
    pub vault: crate::vault::Vault,
    peer_token: String,
    data_dir: PathBuf,
    tuning: Tuning,
    place: ControllerPlace,
    preferred_leader_region: Option<String>,
    /// Closed (true) while this leader hands leadership to a voter of the preferred
    /// region: proposals and leadership checks wait.
    handoff: tokio::sync::watch::Sender<bool>,
    /// How long followers refuse another candidate after the leader's last heartbeat.
    lease: Duration,
    soft: Mutex<Soft>,
    proposals: tokio::sync::mpsc::UnboundedSender<Proposal>,
    reads:
        tokio::sync::mpsc::UnboundedSender<tokio::sync::oneshot::Sender<Result<(), ProposeError>>>,
}

pub fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

impl Controller {
    /// Opens the node's storage in `data_dir` and starts Raft. A node that was part of a
    /// cluster rejoins it from its own log; a new node waits to be initialized or added.
    pub async fn open(opts: ControllerOptions) -> anyhow::Result<Arc<Controller>> {
        std::fs::create_dir_all(&opts.data_dir)?;
        let peer_path = opts.data_dir.join("peer.token");
        let peer_token = match std::fs::read_to_string(&peer_path) {
            Ok(t) => t.trim().to_string(),
            Err(_) => {
                let t = opts.peer_token.clone().unwrap_or_else(new_token);
                write_secret(&peer_path, &t)?;
                t
            }
        };
        let vault = crate::vault::Vault::open(
            &opts.data_dir.join("secrets.key"),
            opts.secrets_key.as_deref(),
        )?;
        let log = LogStore::open(&opts.data_dir.join("raft.redb"))
            .map_err(|e| anyhow::anyhow!("opening the raft log: {e}"))?;
        let blobs = Arc::new(
            BlobStore::open(&opts.data_dir.join("blobs"))
                .map(|store| store.paced(opts.blob_bandwidth))
                .map_err(|e| anyhow::anyhow!("opening the blob store: {e}"))?,
        );
        let sm = StateMachine::open(
            &opts.data_dir.join("snapshots"),
            &opts.data_dir.join("workload.redb"),
            opts.kv_cache,
            blobs.clone(),
        )
        .map_err(|e| anyhow::anyhow!("opening the state machine: {e}"))?;
        let shared = sm.shared();
        let client = http_client::client();
        let config = openraft::Config {
            cluster_name: "dabba".into(),
            heartbeat_interval: opts.timing.heartbeat_ms,
            election_timeout_min: opts.timing.election_ms,
            election_timeout_max: 2 * opts.timing.election_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(opts.snapshot_logs),
            // A follower this close behind catches up from the log, not a snapshot.
            max_in_snapshot_log_to_keep: opts.snapshot_logs / 5,
            // openraft bounds an AppendEntries RPC by the heartbeat interval: keep each
            // one small enough to fit, also when a follower catches up.
            max_payload_entries: 32,
            // Each chunk of a snapshot is bounded by this, and the last is answered only
            // once the follower has installed the whole snapshot (gigabytes take a
            // while): a shorter bound sends the snapshot again from the start, for ever.
            install_snapshot_timeout: 30 * 60 * 1000,
            enable_elect: !opts.joining,
            ..Default::default()
        }
        .validate()?;
        let network = Network {
            client: client.clone(),
            peer_token: peer_token.clone(),
        };
        let raft = Raft::new(opts.id, Arc::new(config), network, log, sm).await?;
        let (proposals, inbox) = tokio::sync::mpsc::unbounded_channel();
        let (handoff, gate) = tokio::sync::watch::channel(false);
        spawn_batcher(raft.clone(), inbox, gate.clone());
        let (reads, read_inbox) = tokio::sync::mpsc::unbounded_channel();
        spawn_read_batcher(raft.clone(), read_inbox, gate);
        let node = Arc::new(Controller {
            id: opts.id,
            address: opts.address.trim_end_matches('/').to_string(),
            raft,
            shared,
            client,
            blobs,
            audit_level: opts.audit_level,
            vault,
            peer_token,
            data_dir: opts.data_dir,
            tuning: opts.tuning,
            place: opts.place,
            preferred_leader_region: opts.preferred_leader_region,
            handoff,
            lease: Duration::from_millis(2 * opts.timing.election_ms),
            soft: Mutex::new(Soft::default()),
            proposals,
            reads,
        });
        node.clone().spawn_driver();
        node.clone().spawn_placer();
        node.clone().spawn_blob_sync();
        Ok(node)
    }

    pub fn peer_token(&self) -> &str {
        &self.peer_token
    }

    /// The key that reads from a host (its logs, its cached components): derived from
    /// the peer token (the same on every controller), so a host that learns it cannot
    /// work back to the token.
    pub fn read_key(&self) -> String {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(b"dabba host reads\0");
        h.update(self.peer_token.as_bytes());
        hex::encode(h.finalize())
    }

    /// The cluster has made this node a voter, caught up: it may stand for election.
    pub fn joined(&self) {
        self.raft.runtime_config().elect(true);
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Makes this node a one-member cluster if it belongs to none, and creates the admin
    /// and host-join tokens (written to `admin.token` and `join.token` in the data
    /// directory, mode 0600). Returns them when they were created now.
    pub async fn initialize(&self) -> anyhow::Result<Option<Secrets>> {
        if !self.raft.is_initialized().await? {
            let mut members = BTreeMap::new();
            members.insert(self.id, BasicNode::new(&self.address));
            self.raft.initialize(members).await?;
        }
        self.wait_for_leader(Duration::from_secs(10)).await?;
        if self.shared.read(|s| s.initialized) {
            return Ok(None);
        }
        let secrets = Secrets {
            admin_token: new_token(),
            join_token: new_token(),
        };
        let grant = |role, label: &str| Grant {
            role,
            namespace: None,
            label: label.into(),
            host: None,
            expires: None,
        };
        let init = Command::Init {
            tokens: vec![
                (
                    token_hash(&secrets.admin_token),
                    grant(Role::Admin, "admin"),
                ),
                (token_hash(&secrets.join_token), grant(Role::Host, "hosts")),
            ],
        };
        match self.propose(init).await? {
            Reply::Ok => {}
            other => anyhow::bail!("initializing the cluster: {other:?}"),
        }
        self.propose(Command::PlaceController {
            id: self.id,
            place: self.place.clone(),
        })
        .await?;
        if let Some(region) = &self.preferred_leader_region {
            self.propose(Command::PreferLeaderRegion {
                region: Some(region.clone()),
            })
            .await?;
        }
        write_secret(&self.data_dir.join("admin.token"), &secrets.admin_token)?;
        write_secret(&self.data_dir.join("join.token"), &secrets.join_token)?;
        Ok(Some(secrets))
    }

    /// Waits until some node leads the cluster.
    pub async fn wait_for_leader(&self, timeout: Duration) -> anyhow::Result<NodeId> {
        let mut metrics = self.raft.metrics();
        let wait = async {
            loop {
                if let Some(l) = metrics.borrow().current_leader {
                    return l;
                }
                if metrics.changed().await.is_err() {
                    return u64::MAX;
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(u64::MAX) | Err(_) => anyhow::bail!("no leader was elected within {timeout:?}"),
            Ok(l) => Ok(l),
        }
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }

    /// The API address of the current leader, if known.
    pub fn leader_address(&self) -> Option<String> {
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader?;
        m.membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
    }

    /// Adds a controller: first as a learner that catches up, then as a voter.
    pub async fn add_member(
        &self,
        id: NodeId,
        address: &str,
        place: ControllerPlace,
    ) -> Result<(), ProposeError> {
        let raft_err = |e: &dyn std::fmt::Display| ProposeError::Raft(e.to_string());
        self.propose(Command::PlaceController { id, place }).await?;
        self.raft
            .add_learner(id, BasicNode::new(address), true)
            .await
            .map_err(|e| raft_err(&e))?;
        // `add_learner` waits for the learner to hold its own membership entry only,
        // and not at all when it is already a learner (a retry of this call after the
        // first timed out). A voter that is still far behind — receiving a snapshot of
        // gigabytes, with its disk busy — misses heartbeats, stands for election and
        // unseats the leader again and again: it votes only once it has caught up.
        self.wait_caught_up(id).await?;
        let voters: BTreeSet<NodeId> = self.voters().into_iter().chain([id]).collect();
        self.raft
            .change_membership(ChangeMembers::ReplaceAllVoters(voters), false)
            .await
            .map_err(|e| raft_err(&e))?;
        Ok(())
    }

    /// Waits until learner `id` holds what this leader's log held when the wait began.
    async fn wait_caught_up(&self, id: NodeId) -> Result<(), ProposeError> {
        let mut metrics = self.raft.metrics();
        let target = metrics.borrow().last_log_index;
        loop {
            {
                let m = metrics.borrow_and_update();
                let Some(replication) = &m.replication else {
                    return Err(ProposeError::Raft(format!(
                        "controller {} stopped leading while controller {id} caught up",
                        m.id
                    )));
                };
                let matched = replication.get(&id).cloned().flatten().map(|l| l.index);
                if matched >= target {
                    return Ok(());
                }
            }
            metrics
                .changed()
                .await
                .map_err(|_| ProposeError::Raft("Raft stopped".into()))?;
        }
    }

    /// Removes a controller from the voters and the cluster.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), ProposeError> {
        let voters: BTreeSet<NodeId> = self.voters().into_iter().filter(|v| *v != id).collect();
        if voters.is_empty() {
            return Err(ProposeError::Raft("cannot remove the last voter".into()));
        }
        self.raft
            .change_membership(ChangeMembers::ReplaceAllVoters(voters), false)
            .await
            .map_err(|e| ProposeError::Raft(e.to_string()))?;
        Ok(())
    }

    pub(super) fn voters(&self) -> Vec<NodeId> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    /// What `dabba cluster status` shows.
    pub fn status(&self) -> ClusterStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let last = m.last_log_index.unwrap_or(0);
        let (places, preferred) = self
            .shared
            .read(|s| (s.controllers.clone(), s.preferred_leader_region.clone()));
        let rtts = self.member_rtts();
        let members: Vec<Member> = membership
            .nodes()
            .map(|(id, node)| {
                let place = places.get(id);
                Member {
                    id: *id,
                    address: node.addr.clone(),
                    voter: voters.contains(id),
                    lag: m.replication.as_ref().map(|r| {
                        let matched = r.get(id).and_then(|l| l.as_ref()).map_or(0, |l| l.index);
                        last.saturating_sub(matched)
                    }),
                    region: place.map_or_else(|| "default".into(), |p| p.region.clone()),
                    zone: place.map_or_else(|| "default".into(), |p| p.zone.clone()),
                    rtt_ms: rtts.get(id).copied(),
                }
            })
            .collect();
        let mut by_region: BTreeMap<String, u32> = BTreeMap::new();
        for member in members.iter().filter(|m| m.voter) {
            *by_region.entry(member.region.clone()).or_default() += 1;
        }
        ClusterStatus {
            node: self.id,
            leader: m.current_leader,
            term: m.current_term,
            commit_index: m.last_applied.map(|l| l.index),
            applied_index: self.shared.last_applied().map(|l| l.index),
            members,
            version: self.shared.read(|s| s.version),
            survives_region_loss: dabba_spec::regions::survives_region_loss(&by_region),
            preferred_leader_region: preferred,
            components: self.components(),
        }
    }
}
