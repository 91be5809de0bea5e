//! The embedded default, `dabba up`, as its own process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use dabba_client::ApiClient;
use dabba_spec::resources::HostState;

use crate::ports::free_addr;
use crate::process::Process;
use crate::ready::{until, until_healthy};

/// What to start.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// The `dabba` binary.
    pub dabba: PathBuf,
    /// Where its state (`DIR/state`), CLI config (`DIR/config.json`) and log go.
    pub dir: PathBuf,
    /// Deploy the samples (`--demo`); ready once they run.
    pub demo: bool,
    /// The working directory (`--demo` finds the sample manifests relative to it).
    pub cwd: Option<PathBuf>,
    /// Extra flags.
    pub flags: Vec<String>,
    /// How long it may take to be ready.
    pub patience: Duration,
}

/// A running `dabba up`, killed when dropped.
pub struct Up {
    opts: UpOptions,
    pub process: Process,
    /// The API and the ingress.
    pub api_addr: SocketAddr,
    pub ingress: SocketAddr,
    pub admin: String,
    api: ApiClient,
}

impl Up {
    /// Starts `dabba up` and waits until it is ready: its API answers, its host is
    /// Ready, it wrote the CLI config, and (with the demo) the sample apps run.
    pub async fn start(opts: UpOptions) -> anyhow::Result<Up> {
        std::fs::create_dir_all(&opts.dir)
            .with_context(|| format!("creating {}", opts.dir.display()))?;
        let api_addr = free_addr()?;
        let ingress = free_addr()?;
        let mut args: Vec<String> = vec![
            "up".into(),
            "--data-dir".into(),
            opts.dir.join("state").display().to_string(),
            "--api".into(),
            api_addr.to_string(),
            "--listen".into(),
            ingress.to_string(),
            "--config".into(),
            opts.dir.join("config.json").display().to_string(),
        ];
        if opts.demo {
            args.push("--demo".into());
        }
        args.extend(opts.flags.iter().cloned());
        let process = Process::start(
            "up",
            &opts.dabba,
            &args,
            &[("RUST_LOG", "warn")],
            opts.cwd.as_deref(),
            &opts.dir,
        )?;
        let mut up = Up {
            opts,
            process,
            api_addr,
            ingress,
            admin: String::new(),
            api: ApiClient::new(Vec::new(), String::new()),
        };
        up.wait_ready().await?;
        Ok(up)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let patience = self.opts.patience;
        until_healthy(self.api_addr, &mut self.process, patience).await?;
        let token = self.opts.dir.join("state/controller/admin.token");
        let config = self.config();
        let url = format!("http://{}", self.api_addr);
        let demo = self.opts.demo;
        self.api = until(
            "dabba up to be ready",
            patience,
            Duration::from_millis(20),
            Some(&mut self.process),
            || {
                let (token, config, url) = (token.clone(), config.clone(), url.clone());
                async move {
                    let admin = std::fs::read_to_string(&token).ok()?.trim().to_string();
                    let api = ApiClient::new(vec![url], admin);
                    let hosts = api.hosts().await.ok()?;
                    let ready = hosts.iter().any(|h| h.state == HostState::Ready)
                        && config.exists()
                        && (!demo || demo_runs(&api).await);
                    ready.then_some(api)
                }
            },
        )
        .await
        .with_context(|| format!("its log:\n{}", self.process.log()))?;
        self.admin = std::fs::read_to_string(&token)?.trim().to_string();
        Ok(())
    }

    /// An admin client of its API.
    pub fn api(&self) -> &ApiClient {
        &self.api
    }

    /// The CLI config it wrote.
    pub fn config(&self) -> PathBuf {
        self.opts.dir.join("config.json")
    }

    /// Its data directory (`--data-dir`).
    pub fn data_dir(&self) -> PathBuf {
        self.opts.dir.join("state")
    }

    pub fn dir(&self) -> &Path {
        &self.opts.dir
    }

    /// What it printed so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Stops it (SIGTERM) and starts it again on the same data, ports and flags.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.process.stop();
        self.process.restart()?;
        self.wait_ready().await
    }
}

/// Whether the demo's apps are there and every pod they want runs.
async fn demo_runs(api: &ApiClient) -> bool {
    let Ok(apps) = api.apps(None).await else {
        return false;
    };
    ["payment", "search"]
        .iter()
        .all(|name| apps.iter().any(|a| a.name == *name && a.ready == a.desired))
}
