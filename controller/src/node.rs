//! A controller node: the Raft instance with its storage and network, the leader's soft
//! state (heartbeats, recent guest output), and the reconcile driver.
//!
//! Every node serves the API, but only the leader acts: the API layer forwards requests
//! it receives on a follower to the leader, so writes are proposed once and reads are
//! linearizable (the leader confirms it still leads before answering).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dabba_spec::api::{
    ActivateResponse, Assignment, AutoscalerStatus, ClusterStatus, HeldRequests, LogLine, Member,
    PodReport,
};
use dabba_spec::resources::{Grant, Millis, ResourceKey, Role};
use dabba_spec::scale::AutoscalerMode;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, SnapshotPolicy};

use crate::command::{Command, Reply};
use crate::raft::log_store::LogStore;
use crate::raft::network::Network;
use crate::raft::state_machine::{Shared, StateMachine};
use crate::raft::{NodeId, Raft};
use crate::reconcile::autoscale::{self, AppScaler, LoadReports};
use crate::reconcile::{self, Observed, Tuning};
use crate::secrets::{new_token, token_hash, write_secret};
use dabba_client::transport::{self as http_client, HttpClient};

/// Lines of recent guest output kept per app on the leader.
const LOG_LINES: usize = 1000;

#[derive(Debug, Clone)]
pub struct ControllerOptions {
    pub id: NodeId,
    /// This node's API address as peers and hosts reach it, e.g. `http://127.0.0.1:7070`.
    pub address: String,
    pub data_dir: PathBuf,
    pub tuning: Tuning,
    /// The cluster's peer token, for a node joining an existing cluster.
    pub peer_token: Option<String>,
    pub timing: RaftTiming,
}

/// How fast Raft notices a lost leader. openraft 0.9 also bounds every AppendEntries
/// RPC by the heartbeat interval, so the interval must exceed the slowest append (a
/// 4 MiB component entry on a busy machine): slow machines and debug builds need more.
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

#[derive(Default)]
struct Soft {
    heartbeats: HashMap<String, Millis>,
    /// Pod load and held requests from the heartbeats, for the autoscaler.
    load: LoadReports,
    /// What each autoscaled app's autoscaler remembers.
    scalers: HashMap<ResourceKey, AppScaler>,
    last_autoscale: Millis,
    /// When this node last became leader; `None` while it follows.
    leader_since: Option<Millis>,
    logs: HashMap<ResourceKey, VecDeque<LogLine>>,
}

/// A command waiting to be proposed, and who waits for its reply.
struct Proposal {
    command: Command,
    reply: tokio::sync::oneshot::Sender<Result<Reply, ProposeError>>,
}

/// Most commands in one batch entry.
const MAX_BATCH: usize = 512;
/// Batches in flight at once. openraft 0.9 flushes one leader append at a time, so a
/// few in flight keep the disk busy while the next batch fills.
const BATCHES_IN_FLIGHT: usize = 2;

pub struct Controller {
    pub id: NodeId,
    pub address: String,
    pub raft: Raft,
    pub shared: Shared,
    pub client: HttpClient,
    peer_token: String,
    data_dir: PathBuf,
    tuning: Tuning,
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
        let log = LogStore::open(&opts.data_dir.join("raft.redb"))
            .map_err(|e| anyhow::anyhow!("opening the raft log: {e}"))?;
        let sm = StateMachine::open(&opts.data_dir.join("snapshots"))
            .map_err(|e| anyhow::anyhow!("opening the state machine: {e}"))?;
        let shared = sm.shared();
        let client = http_client::client();
        let config = openraft::Config {
            cluster_name: "dabba".into(),
            heartbeat_interval: opts.timing.heartbeat_ms,
            election_timeout_min: opts.timing.election_ms,
            election_timeout_max: 2 * opts.timing.election_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(5000),
            max_in_snapshot_log_to_keep: 1000,
            // openraft bounds an AppendEntries RPC by the heartbeat interval: keep each
            // one small enough to fit, also when a follower catches up.
            max_payload_entries: 32,
            ..Default::default()
        }
        .validate()?;
        let network = Network {
            client: client.clone(),
            peer_token: peer_token.clone(),
        };
        let raft = Raft::new(opts.id, Arc::new(config), network, log, sm).await?;
        let (proposals, inbox) = tokio::sync::mpsc::unbounded_channel();
        spawn_batcher(raft.clone(), inbox);
        let (reads, read_inbox) = tokio::sync::mpsc::unbounded_channel();
        spawn_read_batcher(raft.clone(), read_inbox);
        let node = Arc::new(Controller {
            id: opts.id,
            address: opts.address.trim_end_matches('/').to_string(),
            raft,
            shared,
            client,
            peer_token,
            data_dir: opts.data_dir,
            tuning: opts.tuning,
            soft: Mutex::new(Soft::default()),
            proposals,
            reads,
        });
        node.clone().spawn_driver();
        Ok(node)
    }

    pub fn peer_token(&self) -> &str {
        &self.peer_token
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

    /// Proposes a command on this node, which must be the leader, and waits until it is
    /// committed by a quorum and applied. Concurrent proposals are batched into one log
    /// entry.
    pub async fn propose(&self, command: Command) -> Result<Reply, ProposeError> {
        let (reply, wait) = tokio::sync::oneshot::channel();
        self.proposals
            .send(Proposal { command, reply })
            .map_err(|_| ProposeError::Raft("the controller is shutting down".into()))?;
        wait.await
            .map_err(|_| ProposeError::Raft("the proposal was dropped".into()))?
    }

    /// Confirms this node still leads, so a read of its state sees every committed write.
    /// Concurrent reads share one confirmation (one round of heartbeats), started after
    /// they all arrived.
    pub async fn linearize(&self) -> Result<(), ProposeError> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.reads
            .send(done)
            .map_err(|_| ProposeError::Raft("the controller is shutting down".into()))?;
        wait.await
            .map_err(|_| ProposeError::Raft("the read was dropped".into()))?
    }

    /// Adds a controller: first as a learner that catches up, then as a voter.
    pub async fn add_member(&self, id: NodeId, address: &str) -> Result<(), ProposeError> {
        let raft_err = |e: &dyn std::fmt::Display| ProposeError::Raft(e.to_string());
        self.raft
            .add_learner(id, BasicNode::new(address), true)
            .await
            .map_err(|e| raft_err(&e))?;
        let voters: BTreeSet<NodeId> = self.voters().into_iter().chain([id]).collect();
        self.raft
            .change_membership(ChangeMembers::ReplaceAllVoters(voters), false)
            .await
            .map_err(|e| raft_err(&e))?;
        Ok(())
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

    fn voters(&self) -> Vec<NodeId> {
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
        let members = membership
            .nodes()
            .map(|(id, node)| Member {
                id: *id,
                address: node.addr.clone(),
                voter: voters.contains(id),
                lag: m.replication.as_ref().map(|r| {
                    let matched = r.get(id).and_then(|l| l.as_ref()).map_or(0, |l| l.index);
                    last.saturating_sub(matched)
                }),
            })
            .collect();
        ClusterStatus {
            node: self.id,
            leader: m.current_leader,
            term: m.current_term,
            commit_index: m.last_applied.map(|l| l.index),
            applied_index: self.shared.last_applied().map(|l| l.index),
            members,
            version: self.shared.read(|s| s.version),
        }
    }

    /// Records a host's heartbeat (leader only), and proposes the pod phases that changed.
    pub async fn heartbeat(
        &self,
        host: &str,
        reports: &[PodReport],
        held: &[HeldRequests],
        logs: Vec<(ResourceKey, Vec<LogLine>)>,
    ) {
        {
            let now = now_millis();
            let mut soft = self.soft.lock().expect("soft state lock");
            soft.heartbeats.insert(host.to_string(), now);
            for r in reports {
                match r.load {
                    Some(load) => soft.load.pods.insert(r.key.clone(), (now, load)),
                    None => soft.load.pods.remove(&r.key),
                };
            }
            soft.load.held.retain(|(h, _), _| h != host);
            for h in held {
                soft.load.held.insert(
                    (host.to_string(), ResourceKey::new(&h.namespace, &h.app)),
                    (now, h.requests),
                );
            }
            let stale = now.saturating_sub(10 * autoscale::REPORT_FRESHNESS);
            soft.load.pods.retain(|_, (at, _)| *at >= stale);
            for (app, lines) in logs {
                let ring = soft.logs.entry(app).or_default();
                for l in lines {
                    if ring.len() == LOG_LINES {
                        ring.pop_front();
                    }
                    ring.push_back(l);
                }
            }
        }
        let changes = self
            .shared
            .read(|s| reconcile::pods::reported(s, host, reports));
        if !changes.is_empty() {
            let _ = self
                .propose(Command::Pods {
                    changes,
                    at: now_millis(),
                })
                .await;
        }
    }

    /// Scales an autoscaled app from zero because `host` holds `held` requests for it,
    /// placing the first pod on that host if it fits. Answers with the pod's assignment
    /// when one was placed there, so the host can start it at once.
    pub async fn activate(
        &self,
        key: &ResourceKey,
        host: &str,
        held: u32,
    ) -> Result<ActivateResponse, ProposeError> {
        let now = now_millis();
        {
            let mut soft = self.soft.lock().expect("soft state lock");
            soft.load
                .held
                .insert((host.to_string(), key.clone()), (now, held));
            if let Some(scaler) = soft.scalers.get_mut(key) {
                scaler.memory.last_demand = Some(now);
            }
        }
        let on = self
            .shared
            .read(|s| reconcile::scheduler::activation_host(s, key, host));
        let reply = self
            .propose(Command::Activate {
                namespace: key.namespace().into(),
                name: key.name().into(),
                host: on,
                at: now,
            })
            .await?;
        let Reply::Activated { replicas, pod } = reply else {
            return Err(ProposeError::Raft(format!("activation: {reply:?}")));
        };
        if pod.is_some() {
            let mut soft = self.soft.lock().expect("soft state lock");
            if let Some(scaler) = soft.scalers.get_mut(key) {
                scaler.status = Some(AutoscalerStatus {
                    mode: AutoscalerMode::Stable,
                    desired: 1,
                    reason: format!("activated: {held} request(s) held on {host}"),
                    demand: f64::from(held),
                    at: now,
                });
            }
        }
        let (assignment, version) = self.shared.read(|s| {
            let assignment = pod
                .filter(|p| p.host.as_deref() == Some(host))
                .and_then(|p| {
                    let spec = s.revision(&p.namespace, &p.app, p.revision)?.spec.clone();
                    Some(Assignment { pod: *p, spec })
                });
            (assignment, s.version)
        });
        Ok(ActivateResponse {
            replicas,
            version,
            assignment,
        })
    }

    /// What the autoscaler last decided for an app (on the leader).
    pub fn autoscaler(&self, app: &ResourceKey) -> Option<AutoscalerStatus> {
        let soft = self.soft.lock().expect("soft state lock");
        soft.scalers.get(app)?.status.clone()
    }

    /// Recent output lines of an app's instances, from every host.
    pub fn logs(&self, app: &ResourceKey, tail: usize) -> Vec<LogLine> {
        let soft = self.soft.lock().expect("soft state lock");
        soft.logs
            .get(app)
            .map(|r| {
                r.iter()
                    .skip(r.len().saturating_sub(tail))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Runs the reconcilers on the leader, a few times a second and whenever the state
    /// changes, and commits what they propose.
    fn spawn_driver(self: Arc<Self>) {
        let mut changed = self.shared.watch();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    r = changed.changed() => if r.is_err() { return },
                }
                if !self.is_leader() {
                    let mut soft = self.soft.lock().expect("soft state lock");
                    soft.leader_since = None;
                    // A leader again later starts its autoscalers afresh (with a grace
                    // period), not from what it knew before.
                    soft.scalers.clear();
                    continue;
                }
                let now = now_millis();
                let observed = {
                    let mut soft = self.soft.lock().expect("soft state lock");
                    let since = *soft.leader_since.get_or_insert(now);
                    Observed {
                        heartbeats: soft.heartbeats.clone(),
                        leader_since: since,
                    }
                };
                let mut commands = self
                    .shared
                    .read(|s| reconcile::reconcile(s, &observed, now, &self.tuning));
                commands.extend(self.autoscale(now));
                for command in commands {
                    if let Err(e) = self.propose(command).await {
                        tracing::debug!(error = %e, "reconcile proposal not committed");
                        break;
                    }
                }
            }
        });
    }
}

impl Controller {
    /// Runs the autoscaler, at most every [`AUTOSCALE_EVERY`] ms.
    fn autoscale(&self, now: Millis) -> Vec<Command> {
        let mut soft = self.soft.lock().expect("soft state lock");
        if now.saturating_sub(soft.last_autoscale) < AUTOSCALE_EVERY {
            return Vec::new();
        }
        soft.last_autoscale = now;
        let Soft { load, scalers, .. } = &mut *soft;
        self.shared
            .read(|s| autoscale::drive(s, load, scalers, now))
    }
}

/// How often the autoscaler decides.
const AUTOSCALE_EVERY: Millis = 200;

/// Writes one command (or a batch of them) through Raft.
async fn client_write(raft: &Raft, command: Command) -> Result<Reply, ProposeError> {
    match raft.client_write(command).await {
        Ok(resp) => Ok(resp.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(ProposeError::NotLeader {
                leader: f.leader_node.map(|n| n.addr),
            })
        }
        Err(e) => Err(ProposeError::Raft(e.to_string())),
    }
}

/// Group commit above Raft: takes every proposal waiting, proposes them as one entry
/// (alone if there is only one), and hands each caller its own reply. At most
/// [`BATCHES_IN_FLIGHT`] entries are in flight, so under load proposals gather while the
/// previous entries are flushed and replicated, and one fsync serves many writes.
fn spawn_batcher(raft: Raft, mut inbox: tokio::sync::mpsc::UnboundedReceiver<Proposal>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT));
    tokio::spawn(async move {
        while let Some(first) = inbox.recv().await {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match inbox.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            let raft = raft.clone();
            tokio::spawn(async move {
                if batch.len() == 1 {
                    let p = batch.pop().expect("one proposal");
                    let _ = p.reply.send(client_write(&raft, p.command).await);
                } else {
                    let (commands, replies): (Vec<Command>, Vec<_>) =
                        batch.into_iter().map(|p| (p.command, p.reply)).unzip();
                    match client_write(&raft, Command::Batch { commands }).await {
                        Ok(Reply::Batch { replies: answers }) => {
                            for (tx, answer) in replies.into_iter().zip(answers) {
                                let _ = tx.send(Ok(answer));
                            }
                        }
                        Ok(other) => {
                            for tx in replies {
                                let _ = tx.send(Err(ProposeError::Raft(format!(
                                    "unexpected reply to a batch: {other:?}"
                                ))));
                            }
                        }
                        Err(e) => {
                            for tx in replies {
                                let _ = tx.send(Err(e.clone()));
                            }
                        }
                    }
                }
                drop(permit);
            });
        }
    });
}

/// Confirms leadership once for every read waiting when the confirmation starts.
fn spawn_read_batcher(
    raft: Raft,
    mut inbox: tokio::sync::mpsc::UnboundedReceiver<
        tokio::sync::oneshot::Sender<Result<(), ProposeError>>,
    >,
) {
    tokio::spawn(async move {
        while let Some(first) = inbox.recv().await {
            let mut waiting = vec![first];
            while let Ok(more) = inbox.try_recv() {
                waiting.push(more);
            }
            let result = match raft.ensure_linearizable().await {
                Ok(_) => Ok(()),
                Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(
                    f,
                ))) => Err(ProposeError::NotLeader {
                    leader: f.leader_node.map(|n| n.addr),
                }),
                Err(e) => Err(ProposeError::Raft(e.to_string())),
            };
            for w in waiting {
                let _ = w.send(result.clone());
            }
        }
    });
}
