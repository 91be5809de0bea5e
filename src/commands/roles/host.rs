//! `dabba host`: a node. It registers with the controllers (with the join token) and
//! runs the pods they assign, behind its ingress.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use dabba_host::agent::AgentOptions;
use dabba_host::server;
use dabba_spec::resources::{Capacity, HostInfo};
use dabba_spec::{ByteSize, HumanDuration};

use super::{ActivatorFlags, HostSetup, MetricsOnly, bind, host_runtime, start_host, url_of};

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
    /// The URL other hosts use to reach this ingress. Default: http:// and the --listen address.
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
    /// The cap of one log file of a pod or job run on this host's disk; a log that
    /// reaches it rotates, keeping one previous file (so at most twice this per pod).
    #[arg(long, default_value = "10Mi", value_name = "SIZE")]
    pub log_size: ByteSize,
    /// Heartbeat interval.
    #[arg(
        long,
        default_value_t = HumanDuration::from(AgentOptions::DEFAULT_HEARTBEAT),
        value_name = "DURATION"
    )]
    pub heartbeat: HumanDuration,
    #[command(flatten)]
    pub activator: ActivatorFlags,
}

pub fn host(args: HostArgs) -> anyhow::Result<()> {
    let rt = super::super::tokio_runtime()?;
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
        start_host(HostSetup {
            runtime: runtime.clone(),
            info,
            listener,
            controllers: args.controller.clone(),
            join_token: args.token.clone(),
            data_dir: &args.data_dir,
            heartbeat: args.heartbeat.get(),
            local_leader: None,
            activator: args.activator.options(),
            log_size: args.log_size.as_u64(),
        })?;
        if let Some(addr) = args.metrics_listen {
            let ml = bind(addr, "metrics").await?;
            tokio::spawn(server::serve(
                ml,
                Arc::new(MetricsOnly(runtime)),
                super::super::shutdown_signal(),
            ));
        }
        println!("host {name} serving the ingress on {address}");
        super::super::shutdown_signal().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(())
    })
}

fn parse_labels(labels: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("--label `{l}`: expected KEY=VALUE"),
        })
        .collect()
}
