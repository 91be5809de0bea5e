//! The long-running roles a `dabba` process can take: `dabba controller`, `dabba host`,
//! and `dabba up`, which runs a one-node controller, a host and its ingress in one
//! process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use dabba_client::ApiClient;
use dabba_controller::api::Api;
use dabba_controller::node::{Controller, ControllerOptions, RaftTiming};
use dabba_controller::reconcile::Tuning;
use dabba_controller::secrets::read_secret;
use dabba_host::agent::{Activation, Agent, AgentOptions, LocalLeader};
use dabba_host::http::HttpResponse;
use dabba_host::ingress::{ActivatorOptions, Ingress};
use dabba_host::kv::ReplicatedKv;
use dabba_host::runtime::{Runtime, RuntimeOptions};
use dabba_host::server::{self, Handler};
use dabba_spec::api::{ActivateRequest, AddMember};
use dabba_spec::resources::{Capacity, HostInfo, ResourceKey};
use dabba_spec::{ByteSize, HumanDuration};
use http_body_util::Full;
use hyper::body::Incoming;

use super::apply::apply_file;
use super::target::ClientConfig;

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// This controller's id, unique in the cluster (1, 2, 3...).
    #[arg(long)]
    pub id: u64,
    /// Address the API (and Raft) listens on.
    #[arg(long, default_value = "127.0.0.1:7070", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// The URL peers and hosts use to reach this controller. Default: http://<listen>.
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
    /// How long a host may miss heartbeats before it is NotReady, e.g. 3s.
    #[arg(long, default_value = "3s", value_name = "DURATION")]
    pub failure_timeout: HumanDuration,
    #[command(flatten)]
    pub raft: RaftFlags,
}

/// Raft timing. The defaults fail over in about 400 ms on a release build; slower
/// machines (or debug builds) need a longer heartbeat, since it also bounds how long one
/// replication RPC may take.
#[derive(Debug, Args)]
pub struct RaftFlags {
    /// Leader heartbeat interval (also the bound on one replication RPC).
    #[arg(long, default_value = "30ms", value_name = "DURATION")]
    pub heartbeat_interval: HumanDuration,
    /// Minimum election timeout; the maximum (and the leader lease) is twice this.
    #[arg(long, default_value = "100ms", value_name = "DURATION")]
    pub election_timeout: HumanDuration,
}

impl RaftFlags {
    fn timing(&self) -> anyhow::Result<RaftTiming> {
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
}

#[derive(Debug, Args)]
pub struct HostArgs {
    /// Controller URLs, comma-separated; the agent fails over between them.
    #[arg(long, value_delimiter = ',', required = true, value_name = "URL,...")]
    pub controller: Vec<String>,
    /// The cluster's join token (written to join.token in the first controller's data
    /// directory). Also read from DABBA_JOIN_TOKEN.
    #[arg(long, env = "DABBA_JOIN_TOKEN", hide_env_values = true)]
    pub token: String,
    /// This host's name. Default: the machine's host name and port.
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, default_value = "local")]
    pub region: String,
    #[arg(long, default_value = "local-a")]
    pub zone: String,
    /// Address the ingress listens on.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// The URL other hosts use to reach this ingress. Default: http://<listen>.
    #[arg(long, value_name = "URL")]
    pub advertise: Option<String>,
    /// Serve this host's Prometheus metrics on ADDR at /metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Where components and compiled artifacts are cached.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// A label for node selectors, k=v; repeatable.
    #[arg(long = "label", value_name = "K=V")]
    pub labels: Vec<String>,
    /// Memory the host offers to pods.
    #[arg(long, default_value = "4Gi", value_name = "SIZE")]
    pub memory: ByteSize,
    /// Pods the host runs at most.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub instances: u32,
    /// Heartbeat interval.
    #[arg(long, default_value = "500ms", value_name = "DURATION")]
    pub heartbeat: HumanDuration,
    #[command(flatten)]
    pub activator: ActivatorFlags,
}

/// How the ingress holds requests for an app with no running pod (see
/// spec/autoscaling.md).
#[derive(Debug, Args)]
pub struct ActivatorFlags {
    /// Requests held per app while it scales from zero; more get 503 at once.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub activator_queue: u32,
    /// How long a held request waits for a pod before it gets 503.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub activator_timeout: HumanDuration,
}

impl ActivatorFlags {
    fn options(&self) -> ActivatorOptions {
        ActivatorOptions {
            queue_depth: self.activator_queue,
            patience: self.activator_timeout.get(),
        }
    }
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Where all state is kept; restarting with the same directory keeps everything.
    #[arg(long, default_value = ".dabba", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Address the ingress (the apps) listens on.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Address the API listens on (what the CLI talks to).
    #[arg(long, default_value = "127.0.0.1:7070", value_name = "ADDR")]
    pub api: SocketAddr,
    /// Deploy the sample apps (examples/payment and examples/search manifests, relative
    /// to the current directory; build them first with `cargo guests`).
    #[arg(long)]
    pub demo: bool,
    /// Where to write the CLI configuration (server and admin token). Default:
    /// $DABBA_CONFIG, else ~/.config/dabba/config.json.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub raft: RaftFlags,
    #[command(flatten)]
    pub activator: ActivatorFlags,
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
                http::Response::from_parts(parts, Full::new(Bytes::from(text)))
            }
            _ => resp,
        }
    }
}

struct MetricsOnly(Arc<Runtime>);

impl Handler for MetricsOnly {
    async fn call(&self, req: http::Request<Incoming>) -> HttpResponse {
        if req.uri().path() != "/metrics" {
            return dabba_host::http::error_response(404, "not_found", "see /metrics", None);
        }
        http::Response::builder()
            .header("content-type", "text/plain; version=0.0.4")
            .body(Full::new(Bytes::from(self.0.metrics().render())))
            .expect("valid response")
    }
}

fn url_of(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for the {what}"))
}

/// A secret `dabba controller` wrote to its data directory.
fn secret(path: &Path) -> anyhow::Result<String> {
    read_secret(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Opens a controller and serves its API; returns it once it serves.
async fn start_controller(
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

pub fn controller(args: ControllerArgs) -> anyhow::Result<()> {
    let rt = super::tokio_runtime()?;
    rt.block_on(async move {
        let listener = bind(args.listen, "controller API").await?;
        let advertise = args.advertise.unwrap_or_else(|| url_of(args.listen));
        let tuning = Tuning {
            failure_timeout: args.failure_timeout.get().as_millis() as u64,
            ..Tuning::default()
        };
        let fresh = !args.data_dir.join("raft.redb").exists();
        let peer_token = match (&args.join, fresh) {
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
                Some(p.token)
            }
            _ => None,
        };
        let opts = ControllerOptions {
            id: args.id,
            address: advertise.clone(),
            data_dir: args.data_dir.clone(),
            tuning,
            peer_token,
            timing: args.raft.timing()?,
        };
        let node = start_controller(opts, listener, None).await?;
        match (&args.join, fresh) {
            (Some(url), true) => {
                let api = ApiClient::new(
                    vec![url.clone()],
                    args.token.clone().unwrap_or_default(),
                );
                let add = AddMember {
                    id: args.id,
                    address: advertise.clone(),
                };
                // The cluster may still be electing its first leader, or finishing
                // another member's change: keep asking for a minute. Adding a member
                // that is already there changes nothing, so a retry is safe.
                let deadline = tokio::time::Instant::now() + JOIN_PATIENCE;
                loop {
                    match api.add_member(&add).await {
                        Ok(_) => break,
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
                println!("controller {} joined the cluster at {url}", args.id);
            }
            (None, true) => {
                if node.initialize().await?.is_some() {
                    println!(
                        "controller {} started a new cluster; admin token in {}, host join token in {}",
                        args.id,
                        args.data_dir.join("admin.token").display(),
                        args.data_dir.join("join.token").display()
                    );
                }
            }
            (_, false) => println!("controller {} rejoined its cluster", args.id),
        }
        println!("controller {} serving the API on {advertise}", args.id);
        super::shutdown_signal().await;
        // Let the server drain, then stop Raft so the log is closed cleanly.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = node.raft.shutdown().await;
        Ok(())
    })
}

/// How long a new controller keeps asking to join.
const JOIN_PATIENCE: Duration = Duration::from_secs(60);

fn parse_labels(labels: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("--label `{l}`: expected KEY=VALUE"),
        })
        .collect()
}

/// A host's runtime, caching compiled components under its data directory.
fn host_runtime(data_dir: &Path) -> anyhow::Result<Arc<Runtime>> {
    Runtime::new(&RuntimeOptions {
        cache_dir: Some(data_dir.join("artifacts")),
        echo_guest_output: false,
        ..Default::default()
    })
}

/// Starts a host's agent and ingress on `runtime`.
/// The embedded controller, as the agent's shortcut for activations.
struct EmbeddedLeader(Arc<Controller>);

impl LocalLeader for EmbeddedLeader {
    fn activate<'a>(&'a self, app: &'a ResourceKey, req: &'a ActivateRequest) -> Activation<'a> {
        Box::pin(async move {
            if !self.0.is_leader() {
                return None;
            }
            Some(
                self.0
                    .activate(app, &req.host, req.held)
                    .await
                    .map_err(|e| e.to_string()),
            )
        })
    }
}

#[allow(
    clippy::too_many_arguments,
    reason = "the two callers (dabba host, dabba up) differ in every one"
)]
async fn start_host(
    runtime: Arc<Runtime>,
    info: HostInfo,
    listener: tokio::net::TcpListener,
    controllers: Vec<String>,
    join_token: String,
    data_dir: &Path,
    heartbeat: Duration,
    local_leader: Option<Arc<dyn LocalLeader>>,
    activator: ActivatorOptions,
) -> anyhow::Result<()> {
    let api = Arc::new(ApiClient::new(controllers, join_token));
    let kv = Arc::new(ReplicatedKv::new(api.clone(), &info.name));
    let (ingress, demands) = Ingress::new(&info.address, activator);
    let ingress = Arc::new(ingress);
    let agent = Agent::new(
        AgentOptions {
            info,
            data_dir: data_dir.to_path_buf(),
            heartbeat,
            local_leader,
        },
        api,
        runtime.clone(),
        kv,
        ingress.clone(),
        demands,
    )?;
    tokio::spawn(agent.run());
    tokio::spawn(server::serve(listener, ingress, super::shutdown_signal()));
    Ok(())
}

pub fn host(args: HostArgs) -> anyhow::Result<()> {
    let rt = super::tokio_runtime()?;
    rt.block_on(async move {
        let listener = bind(args.listen, "ingress").await?;
        let address = args
            .advertise
            .clone()
            .unwrap_or_else(|| url_of(args.listen));
        let name = match &args.name {
            Some(n) => n.clone(),
            None => format!("host-{}", args.listen.port()),
        };
        let info = HostInfo {
            name: name.clone(),
            address: address.clone(),
            region: args.region.clone(),
            zone: args.zone.clone(),
            labels: parse_labels(&args.labels)?,
            capacity: Capacity {
                memory: args.memory.as_u64(),
                instances: args.instances,
            },
        };
        let runtime = host_runtime(&args.data_dir)?;
        start_host(
            runtime.clone(),
            info,
            listener,
            args.controller.clone(),
            args.token.clone(),
            &args.data_dir,
            args.heartbeat.get(),
            None,
            args.activator.options(),
        )
        .await?;
        if let Some(addr) = args.metrics_listen {
            let ml = bind(addr, "metrics").await?;
            tokio::spawn(server::serve(
                ml,
                Arc::new(MetricsOnly(runtime)),
                super::shutdown_signal(),
            ));
        }
        println!("host {name} serving the ingress on {address}");
        super::shutdown_signal().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(())
    })
}

pub fn up(args: UpArgs) -> anyhow::Result<()> {
    let rt = super::tokio_runtime()?;
    rt.block_on(async move {
        std::fs::create_dir_all(&args.data_dir)
            .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
        let api_listener = bind(args.api, "API").await?;
        let ingress_listener = bind(args.listen, "ingress").await?;
        let api_url = url_of(api_listener.local_addr()?);
        let ingress_url = url_of(ingress_listener.local_addr()?);
        let runtime = host_runtime(&args.data_dir.join("host"))?;
        let opts = ControllerOptions {
            id: 1,
            address: api_url.clone(),
            data_dir: args.data_dir.join("controller"),
            tuning: Tuning::default(),
            peer_token: None,
            timing: args.raft.timing()?,
        };
        let node = start_controller(opts, api_listener, Some(runtime.clone())).await?;
        node.initialize().await?;
        let admin = secret(&args.data_dir.join("controller/admin.token"))?;
        let join = secret(&args.data_dir.join("controller/join.token"))?;
        let info = HostInfo {
            name: "local".into(),
            address: ingress_url.clone(),
            region: "local".into(),
            zone: "local-a".into(),
            labels: BTreeMap::new(),
            capacity: Capacity {
                memory: 8 << 30,
                instances: 10_000,
            },
        };
        start_host(
            runtime,
            info,
            ingress_listener,
            vec![api_url.clone()],
            join,
            &args.data_dir.join("host"),
            Duration::from_millis(500),
            Some(Arc::new(EmbeddedLeader(node.clone()))),
            args.activator.options(),
        )
        .await?;
        let config = ClientConfig {
            servers: vec![api_url.clone()],
            token: admin,
        };
        let path = config.save(args.config.as_deref())?;
        println!("dabba is up: apps on {ingress_url}");
        println!("  API      {api_url}   (CLI config written to {})", path.display());
        println!("  ingress  {ingress_url}");
        println!("  state    {}", args.data_dir.display());
        if args.demo {
            let api = config.client();
            for manifest in ["examples/payment/dabba.toml", "examples/search/dabba.toml"] {
                apply_file(&api, Path::new(manifest), true, Duration::from_secs(60))
                    .await
                    .with_context(|| format!("deploying the demo app {manifest}"))?;
            }
            println!();
            println!("try:");
            println!(
                "  curl -s {ingress_url}/payments -H 'idempotency-key: k1' -H 'content-type: application/json' \\\n    -d '{{\"merchant_id\":\"m_1\",\"payer_vpa\":\"alice@upi\",\"amount\":125000,\"currency\":\"INR\"}}'"
            );
            println!("  curl -s '{ingress_url}/search?q=phone'");
            println!("  dabba get apps; dabba get pods");
        }
        println!("press Ctrl-C to stop");
        super::shutdown_signal().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = node.raft.shutdown().await;
        Ok(())
    })
}
