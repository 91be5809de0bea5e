//! `dabba serve`: serve one HTTP component on a local port, every request to a fresh
//! instance, with the limits and capabilities given as flags.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use dabba_host::AppConfig;
use dabba_host::ComponentBytes;
use dabba_host::function::{HttpFunction, HttpResponse};
use dabba_host::runtime::{Runtime, RuntimeOptions};
use dabba_host::server::{self, Handler};
use dabba_spec::WorkloadKind;
use hyper::body::Incoming;

use crate::flags::{CacheFlags, CapabilityFlags, LimitFlags, app_name};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The component to serve: any wasm component exporting wasi:http/incoming-handler.
    #[arg(value_name = "COMPONENT.wasm")]
    pub component: PathBuf,
    /// Address to listen on; port 0 picks a free port (the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// The app's name in logs and metrics. Default: the component's file name.
    #[arg(long)]
    pub name: Option<String>,
    /// Also serve Prometheus metrics on this address, at /metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Do not echo the guest's stdout/stderr lines to this terminal.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub limits: LimitFlags,
    #[command(flatten)]
    pub capabilities: CapabilityFlags,
    #[command(flatten)]
    pub cache: CacheFlags,
}

struct One(HttpFunction);

impl Handler for One {
    async fn call(&self, req: http::Request<Incoming>) -> HttpResponse {
        self.0.handle(req).await
    }
}

struct MetricsEndpoint(Arc<Runtime>);

impl Handler for MetricsEndpoint {
    async fn call(&self, req: http::Request<Incoming>) -> HttpResponse {
        if req.uri().path() != "/metrics" {
            return dabba_host::function::error_response(
                404,
                "not_found",
                "metrics are at /metrics",
                None,
            );
        }
        http::Response::builder()
            .header("content-type", "text/plain; version=0.0.4")
            .body(dabba_client::transport::whole(self.0.metrics().render()))
            .expect("valid response")
    }
}

pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let rt = super::tokio_runtime()?;
    rt.block_on(async move {
        let limits = args.limits.resolve(WorkloadKind::Http)?;
        let runtime = Runtime::new(&RuntimeOptions {
            cache_dir: args.cache.dir(),
            echo_guest_output: !args.quiet,
            ..Default::default()
        })?;
        let wasm = ComponentBytes::read(&args.component)?;
        let name = args
            .name
            .clone()
            .unwrap_or_else(|| app_name(&args.component));
        let app = AppConfig {
            name: name.clone(),
            revision: None,
            scope: "default".into(),
            limits,
            capabilities: args.capabilities.capabilities(),
            secrets: Default::default(),
            kv: args.capabilities.kv_backend()?,
            log: None,
        };
        let function = runtime.load_http(app, &wasm)?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        if let Some(metrics_addr) = args.metrics_listen {
            let ml = tokio::net::TcpListener::bind(metrics_addr)
                .await
                .with_context(|| format!("cannot listen on {metrics_addr} for metrics"))?;
            println!("metrics on http://{}/metrics", ml.local_addr()?);
            let endpoint = Arc::new(MetricsEndpoint(runtime.clone()));
            tokio::spawn(server::serve(ml, endpoint, std::future::pending()));
        }
        println!(
            "serving {name} ({}) on http://{addr}",
            function.digest().short()
        );
        std::io::stdout().flush()?;
        server::serve(listener, Arc::new(One(function)), super::shutdown_signal()).await?;
        Ok(())
    })
}
