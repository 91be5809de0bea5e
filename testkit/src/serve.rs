//! One component under `dabba serve`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::http::{Reply, request};
use crate::ports::free_addr;
use crate::process::Process;
use crate::ready::until_listening;

/// Starts a server process (`program args...`) that listens on `addr`, and waits (at
/// most 120 s) until it accepts connections there; an error with its log if it exits
/// first. (Every server started this way binds its port once it can serve.)
pub async fn start_server(
    name: &str,
    program: &Path,
    args: &[String],
    envs: &[(&str, &str)],
    log_dir: &Path,
    addr: SocketAddr,
) -> anyhow::Result<Process> {
    let mut process = Process::start(name, program, args, envs, None, log_dir)?;
    until_listening(
        addr,
        Some(&mut process),
        &format!("{name} to listen on {addr}"),
        Duration::from_secs(120),
    )
    .await?;
    Ok(process)
}

/// A `dabba serve` process, killed when dropped.
pub struct Served {
    pub process: Process,
    pub addr: SocketAddr,
    /// Where its metrics are served, when started [`Served::with_metrics`].
    pub metrics: Option<SocketAddr>,
}

impl Served {
    /// `dabba serve COMPONENT --listen ADDR ARGS...`, once it answers HTTP.
    pub async fn start(
        dabba: &Path,
        component: &Path,
        args: &[&str],
        log_dir: &Path,
    ) -> anyhow::Result<Served> {
        Served::launch(dabba, component, args, log_dir, false).await
    }

    /// Like [`Served::start`], also serving Prometheus metrics on a port of its own.
    pub async fn with_metrics(
        dabba: &Path,
        component: &Path,
        args: &[&str],
        log_dir: &Path,
    ) -> anyhow::Result<Served> {
        Served::launch(dabba, component, args, log_dir, true).await
    }

    async fn launch(
        dabba: &Path,
        component: &Path,
        args: &[&str],
        log_dir: &Path,
        metrics: bool,
    ) -> anyhow::Result<Served> {
        let addr = free_addr()?;
        let mut all: Vec<String> = vec![
            "serve".into(),
            component.display().to_string(),
            "--listen".into(),
            addr.to_string(),
            "--quiet".into(),
        ];
        let metrics = if metrics {
            let m = free_addr()?;
            all.extend(["--metrics-listen".into(), m.to_string()]);
            Some(m)
        } else {
            None
        };
        all.extend(args.iter().map(|a| a.to_string()));
        let name = format!("serve-{}", addr.port());
        let mut process =
            start_server(&name, dabba, &all, &[("RUST_LOG", "warn")], log_dir, addr).await?;
        if let Some(m) = metrics {
            // Bound just after the main port.
            until_listening(
                m,
                Some(&mut process),
                "its metrics port",
                Duration::from_secs(10),
            )
            .await?;
        }
        Ok(Served {
            process,
            addr,
            metrics,
        })
    }

    pub fn get(&self, path: &str) -> Reply {
        request(self.addr, "GET", path, &[], b"")
    }

    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        request(self.addr, "POST", path, headers, body)
    }

    /// Stops it the way an operator does (SIGTERM), and waits for it.
    pub fn stop(mut self) {
        self.process.stop();
    }
}
