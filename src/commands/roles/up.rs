//! `dabba up`: the embedded default — a one-node controller, a host and its ingress in
//! one process, the CLI config written, and with `--demo` the samples deployed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use dabba_controller::node::{Controller, ControllerOptions};
use dabba_host::agent::{Activation, AgentOptions, LocalLeader};
use dabba_host::logs::LogDir;
use dabba_spec::api::ActivateRequest;
use dabba_spec::api::ControllerPlace;
use dabba_spec::resources::{Capacity, HostInfo, ResourceKey};

use super::super::apply::apply_file;
use super::super::target::ClientConfig;
use super::{
    ActivatorFlags, HostSetup, RaftFlags, TuningFlags, bind, host_runtime, secret,
    start_controller, start_host, url_of,
};

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
    pub tuning: TuningFlags,
    #[command(flatten)]
    pub activator: ActivatorFlags,
}

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
                    .map_err(Into::into),
            )
        })
    }
}

pub fn up(args: UpArgs) -> anyhow::Result<()> {
    let rt = super::super::tokio_runtime()?;
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
            tuning: args.tuning.tuning()?,
            peer_token: None,
            secrets_key: None,
            timing: args.raft.timing()?,
            snapshot_logs: args.raft.snapshot_logs()?,
            blob_bandwidth: args.raft.blob_bandwidth.as_u64(),
            kv_cache: args.raft.kv_cache.as_u64(),
            audit_level: args.raft.audit_level,
            place: ControllerPlace {
                region: "local".into(),
                zone: "local-a".into(),
            },
            preferred_leader_region: None,
            joining: false,
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
        start_host(HostSetup {
            runtime,
            info,
            listener: ingress_listener,
            controllers: vec![api_url.clone()],
            join_token: join,
            data_dir: &args.data_dir.join("host"),
            heartbeat: AgentOptions::DEFAULT_HEARTBEAT,
            local_leader: Some(Arc::new(EmbeddedLeader(node.clone()))),
            activator: args.activator.options(),
            log_size: LogDir::DEFAULT_CAP,
        })?;
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
                apply_file(
                    &api,
                    Path::new(manifest),
                    "default",
                    true,
                    Duration::from_secs(60),
                )
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
        super::super::shutdown_signal().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = node.raft.shutdown().await;
        Ok(())
    })
}
