//! The long-running roles a `dabba` process can take: `dabba controller`, `dabba host`,
//! and `dabba up`, which runs a one-node controller, a host and its ingress in one
//! process. Here: what they share — the Raft and activator flags (their defaults are
//! the libraries' own `Default`s), the API listener, and starting a host.

pub mod controller;
pub mod host;
pub mod up;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use dabba_client::ApiClient;
use dabba_client::transport::whole;
use dabba_controller::api::Api;
use dabba_controller::credentials::read_secret;
use dabba_controller::node::{Controller, ControllerOptions, RaftTiming};
use dabba_controller::reconcile::Tuning;
use dabba_host::agent::{Agent, AgentOptions, LocalLeader};
use dabba_host::function::HttpResponse;
use dabba_host::ingress::{ActivatorOptions, Ingress};
use dabba_host::kv::ReplicatedKv;
use dabba_host::logs::{LogDir, LogService};
use dabba_host::peer::PeerReads;
use dabba_host::reachability::ControlPlane;
use dabba_host::runtime::{Runtime, RuntimeOptions};
use dabba_host::server::{self, Handler};
use dabba_spec::audit::AuditLevel;
use dabba_spec::resources::{HostInfo, RestartBackoff};
use dabba_spec::{ByteSize, HumanDuration};
use hyper::body::Incoming;

/// Raft timing. The defaults fail over in about 400 ms on a release build; slower
/// machines (or debug builds) need a longer heartbeat, since it also bounds how long one
/// replication RPC may take.
#[derive(Debug, Args)]
pub struct RaftFlags {
    /// Leader heartbeat interval (also the bound on one replication RPC).
    #[arg(
        long,
        default_value_t = HumanDuration::from_millis(RaftTiming::default().heartbeat_ms),
        value_name = "DURATION"
    )]
    pub heartbeat_interval: HumanDuration,
    /// Minimum election timeout; the maximum (and the leader lease) is twice this.
    #[arg(
        long,
        default_value_t = HumanDuration::from_millis(RaftTiming::default().election_ms),
        value_name = "DURATION"
    )]
    pub election_timeout: HumanDuration,
    /// Raft log entries between snapshots. A snapshot copies the whole state (the
    /// workload store included) and lets the log before it go; a follower that falls
    /// further behind than the log kept is sent the snapshot.
    #[arg(long, default_value_t = dabba_controller::node::SNAPSHOT_LOGS, value_name = "ENTRIES")]
    pub snapshot_logs: u64,
    /// Bytes a second components may be written to this controller's store, all
    /// together: an upload paced so leaves the disk to the Raft log's fsync (0: as fast
    /// as it goes; see spec/benchmarks.md for what each costs).
    #[arg(long, default_value = "24Mi", value_name = "SIZE")]
    pub blob_bandwidth: ByteSize,
    /// Memory for the workload store's cache (key-value buckets are on disk, read
    /// through it): bounds the store's share of this controller's memory, whatever the
    /// buckets hold. Reads beyond it go to the file and are slower.
    #[arg(
        long,
        default_value_t = ByteSize::bytes(dabba_controller::raft::workload::DEFAULT_CACHE),
        value_name = "SIZE"
    )]
    pub kv_cache: ByteSize,
    /// How much of each audited request (every change, every refusal) the audit log
    /// keeps: none, metadata (who, what, where, when, outcome) or request (and the
    /// request's JSON body, secret-looking fields redacted).
    #[arg(long, default_value_t = AuditLevel::default(), value_name = "LEVEL")]
    pub audit_level: AuditLevel,
}

impl RaftFlags {
    pub(super) fn timing(&self) -> anyhow::Result<RaftTiming> {
        let t = RaftTiming {
            heartbeat_ms: self.heartbeat_interval.get().as_millis() as u64,
            election_ms: self.election_timeout.get().as_millis() as u64,
        };
        if t.heartbeat_ms == 0 || t.election_ms <= t.heartbeat_ms {
            bail!(
                "--election-timeout ({} ms) must be longer than --heartbeat-interval ({} ms)",
                t.election_ms,
                t.heartbeat_ms
            );
        }
        Ok(t)
    }

    pub(super) fn snapshot_logs(&self) -> anyhow::Result<u64> {
        if self.snapshot_logs < 10 {
            bail!(
                "--snapshot-logs must be at least 10 (got {}): each snapshot copies the whole state",
                self.snapshot_logs
            );
        }
        Ok(self.snapshot_logs)
    }
}

/// The reconcilers' knobs (spec/controller.md): when a host is lost, when a failed pod
/// is replaced.
#[derive(Debug, Args)]
pub struct TuningFlags {
    /// How long a host may miss heartbeats before it is NotReady, e.g. 3s.
    #[arg(
        long,
        default_value_t = HumanDuration::from_millis(Tuning::default().failure_timeout),
        value_name = "DURATION"
    )]
    pub failure_timeout: HumanDuration,
    /// How long after it failed a pod is first replaced; each failure in a row doubles
    /// it, up to 30 times this (Kubernetes' crash-loop back-off: 10s to 5 min).
    #[arg(
        long,
        default_value_t = HumanDuration::from_millis(RestartBackoff::default().first),
        value_name = "DURATION"
    )]
    pub restart_backoff: HumanDuration,
    /// How long a component no kept revision or cron job uses stays after its upload,
    /// e.g. 10m (an upload is applied after it lands; rollbacks find theirs).
    #[arg(
        long,
        default_value_t = HumanDuration::from_millis(Tuning::default().component_grace),
        value_name = "DURATION"
    )]
    pub component_grace: HumanDuration,
}

impl TuningFlags {
    pub(super) fn tuning(&self) -> anyhow::Result<Tuning> {
        let first = self.restart_backoff.get().as_millis() as u64;
        if first == 0 {
            bail!(
                "--restart-backoff must be longer than 0s: a failed pod would be replaced in a tight loop"
            );
        }
        Ok(Tuning {
            failure_timeout: self.failure_timeout.get().as_millis() as u64,
            restart: RestartBackoff {
                first,
                max: first.saturating_mul(30),
            },
            component_grace: self.component_grace.get().as_millis() as u64,
        })
    }
}

/// How the ingress holds requests for an app with no running pod (see
/// spec/autoscaling.md).
#[derive(Debug, Args)]
pub struct ActivatorFlags {
    /// Requests held per app while it scales from zero; more get 503 at once.
    #[arg(long, default_value_t = ActivatorOptions::default().queue_depth, value_name = "N")]
    pub activator_queue: u32,
    /// How long a held request waits for a pod before it gets 503.
    #[arg(
        long,
        default_value_t = HumanDuration::from(ActivatorOptions::default().patience),
        value_name = "DURATION"
    )]
    pub activator_timeout: HumanDuration,
}

impl ActivatorFlags {
    pub(super) fn options(&self) -> ActivatorOptions {
        ActivatorOptions {
            queue_depth: self.activator_queue,
            patience: self.activator_timeout.get(),
        }
    }
}

/// Serves the controller API (and Raft) on one listener.
struct ApiHandler {
    api: Api,
    /// In `dabba up`, the host's metrics are served with the controller's.
    host_metrics: Option<Arc<Runtime>>,
}

impl Handler for ApiHandler {
    async fn call(&self, req: http::Request<Incoming>) -> HttpResponse {
        let metrics = req.uri().path() == "/metrics";
        let resp = self.api.handle(req).await;
        match (&self.host_metrics, metrics) {
            (Some(rt), true) => {
                let (parts, body) = resp.into_parts();
                let mut text = http_body_util::BodyExt::collect(body)
                    .await
                    .map(|b| b.to_bytes().to_vec())
                    .unwrap_or_default();
                text.extend_from_slice(rt.metrics().render().as_bytes());
                http::Response::from_parts(parts, whole(text))
            }
            _ => resp,
        }
    }
}

pub(super) struct MetricsOnly(Arc<Runtime>);

impl Handler for MetricsOnly {
    async fn call(&self, req: http::Request<Incoming>) -> HttpResponse {
        if req.uri().path() != "/metrics" {
            return dabba_host::function::error_response(404, "not_found", "see /metrics", None);
        }
        http::Response::builder()
            .header("content-type", "text/plain; version=0.0.4")
            .body(whole(self.0.metrics().render()))
            .expect("valid response")
    }
}

pub(super) fn url_of(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

pub(super) async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for the {what}"))
}

/// A secret `dabba controller` wrote to its data directory.
pub(super) fn secret(path: &Path) -> anyhow::Result<String> {
    read_secret(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Opens a controller and serves its API; returns it once it serves.
pub(super) async fn start_controller(
    opts: ControllerOptions,
    listener: tokio::net::TcpListener,
    host_metrics: Option<Arc<Runtime>>,
) -> anyhow::Result<Arc<Controller>> {
    let node = Controller::open(opts).await?;
    let handler = Arc::new(ApiHandler {
        api: Api::new(node.clone()),
        host_metrics,
    });
    tokio::spawn(server::serve(listener, handler, super::shutdown_signal()));
    Ok(node)
}

/// A host's runtime, caching compiled components under its data directory.
pub(super) fn host_runtime(data_dir: &Path) -> anyhow::Result<Arc<Runtime>> {
    Runtime::new(&RuntimeOptions {
        cache_dir: Some(data_dir.join("artifacts")),
        echo_guest_output: false,
        ..Default::default()
    })
}

/// What a host is started with: `dabba host` and `dabba up` differ in every field.
pub(super) struct HostSetup<'a> {
    pub runtime: Arc<Runtime>,
    pub info: HostInfo,
    pub listener: tokio::net::TcpListener,
    pub controllers: Vec<String>,
    pub join_token: String,
    pub data_dir: &'a Path,
    pub heartbeat: Duration,
    pub local_leader: Option<Arc<dyn LocalLeader>>,
    pub activator: ActivatorOptions,
    /// The cap of one log file of a pod or run (`dabba host --log-size`).
    pub log_size: u64,
}

/// Starts a host's agent and its ingress.
pub(super) fn start_host(h: HostSetup<'_>) -> anyhow::Result<()> {
    // Its own credential when it registered before; the join token otherwise.
    let own = dabba_host::agent::credential::read(h.data_dir)
        .with_context(|| format!("reading this host's credential in {}", h.data_dir.display()))?;
    let api = Arc::new(ApiClient::new(
        h.controllers,
        own.unwrap_or_else(|| h.join_token.clone()),
    ));
    // Cut off once no heartbeat was answered for longer than a leader failover takes.
    let patience = (h.heartbeat * 6).max(Duration::from_secs(3));
    let control_plane = Arc::new(ControlPlane::new(&h.info.region, patience));
    let kv = Arc::new(ReplicatedKv::new(
        api.clone(),
        &h.info.name,
        control_plane.clone(),
    ));
    let reads = Arc::new(PeerReads::new(
        LogService::new(
            LogDir::new(h.data_dir.join("logs"), h.log_size),
            &h.info.name,
        ),
        h.data_dir.join("components"),
    ));
    let (ingress, demands) = Ingress::new(&h.info.address, h.activator, control_plane);
    let ingress = Arc::new(ingress.with_peer_reads(reads.clone()));
    let agent = Agent::new(
        AgentOptions {
            info: h.info,
            data_dir: h.data_dir.to_path_buf(),
            heartbeat: h.heartbeat,
            local_leader: h.local_leader,
            reads,
            join_token: h.join_token,
        },
        api,
        h.runtime,
        kv,
        ingress.clone(),
        demands,
    )?;
    tokio::spawn(agent.run());
    tokio::spawn(server::serve(h.listener, ingress, super::shutdown_signal()));
    Ok(())
}
