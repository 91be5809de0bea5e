//! A cluster of `dabba controller` and `dabba host` processes on loopback.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use dabba_client::ApiClient;
use dabba_spec::resources::HostState;

use crate::ports::free_addr;
use crate::process::Process;
use crate::ready::{until, until_healthy};
use crate::wan::Wan;

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The `dabba` binary.
    pub dabba: PathBuf,
    /// Where the processes keep their data and logs.
    pub dir: PathBuf,
    /// Controllers: the first starts the cluster, the others join it one at a time.
    pub controllers: usize,
    /// Flags for every controller (Raft timing, failure timeout).
    pub controller_flags: Vec<String>,
    pub hosts: Vec<HostOptions>,
    /// How long a controller may take to join, or the hosts to be Ready.
    pub patience: Duration,
    /// Emulated regions to run the processes in (`None`: all on loopback).
    pub wan: Option<Arc<Wan>>,
    /// The region of each controller, in order (the rest: `default`).
    pub controller_regions: Vec<String>,
}

/// One host.
#[derive(Debug, Clone)]
pub struct HostOptions {
    pub name: String,
    pub zone: String,
    /// Extra flags (`--label`, `--activator-timeout`, ...).
    pub flags: Vec<String>,
    /// Its region (with emulated regions, the one it runs in). By default `local`.
    pub region: Option<String>,
}

impl HostOptions {
    /// Host `name` in `zone`, with no extra flags.
    pub fn new(name: &str, zone: &str) -> HostOptions {
        HostOptions {
            name: name.into(),
            zone: zone.into(),
            flags: Vec::new(),
            region: None,
        }
    }
}

/// A running cluster; every process is killed when it is dropped.
pub struct Cluster {
    opts: ClusterOptions,
    pub controllers: Vec<Process>,
    /// Where the controllers listen (reachable from here directly).
    pub controller_addrs: Vec<SocketAddr>,
    /// What they advertise to each other and to hosts (with emulated regions: behind
    /// the wide-area delay; else the same as `controller_addrs`).
    pub controller_peers: Vec<SocketAddr>,
    pub hosts: Vec<Process>,
    pub host_addrs: Vec<SocketAddr>,
    /// The admin token and the hosts' join token the first controller made.
    pub admin: String,
    pub join: String,
    api: ApiClient,
}

impl Cluster {
    /// Starts the controllers, waits until every one is a voter, then starts the hosts
    /// and waits until the controllers list them all Ready.
    pub async fn start(opts: ClusterOptions) -> anyhow::Result<Cluster> {
        anyhow::ensure!(opts.controllers > 0, "a cluster needs a controller");
        std::fs::create_dir_all(&opts.dir)
            .with_context(|| format!("creating {}", opts.dir.display()))?;
        let mut controller_addrs = Vec::new();
        let mut controller_peers = Vec::new();
        for i in 0..opts.controllers {
            match &opts.wan {
                Some(wan) => {
                    let region = controller_region(&opts, i);
                    let addr = wan.listen_addr(&region);
                    controller_peers.push(wan.expose(&region, addr).await?);
                    controller_addrs.push(addr);
                }
                None => {
                    let addr = free_addr()?;
                    controller_addrs.push(addr);
                    controller_peers.push(addr);
                }
            }
        }
        let mut c = Cluster {
            controllers: Vec::new(),
            controller_addrs,
            controller_peers,
            hosts: Vec::new(),
            host_addrs: Vec::new(),
            admin: String::new(),
            join: String::new(),
            api: ApiClient::new(Vec::new(), String::new()),
            opts,
        };
        for i in 0..c.opts.controllers {
            let p = c.spawn_controller(i)?;
            c.controllers.push(p);
            until_healthy(
                c.controller_addrs[i],
                &mut c.controllers[i],
                c.opts.patience,
            )
            .await?;
            if i == 0 {
                c.read_tokens(c.opts.patience).await?;
            }
            // Members join one at a time: Raft changes membership one step at once.
            c.wait_voters(i + 1, false)
                .await
                .with_context(|| format!("controller c{} joining; logs:\n{}", i + 1, c.logs()))?;
        }
        for h in c.opts.hosts.clone() {
            c.start_host(&h).await?;
        }
        let want = c.hosts.len();
        let api = c.api.clone();
        until(
            "every host to be Ready",
            c.opts.patience,
            Duration::from_millis(50),
            None,
            || async {
                let hosts = api.hosts().await.ok()?;
                (hosts.iter().filter(|h| h.state == HostState::Ready).count() == want).then_some(())
            },
        )
        .await
        .with_context(|| format!("logs:\n{}", c.logs()))?;
        Ok(c)
    }

    /// The command line of controller `i` (0-based; its id is `i + 1`).
    fn spawn_controller(&self, i: usize) -> anyhow::Result<Process> {
        let id = i + 1;
        let region = controller_region(&self.opts, i);
        let mut args: Vec<String> = vec![
            "controller".into(),
            "--id".into(),
            id.to_string(),
            "--listen".into(),
            self.controller_addrs[i].to_string(),
            "--advertise".into(),
            format!("http://{}", self.controller_peers[i]),
            "--region".into(),
            region.clone(),
            "--data-dir".into(),
            self.data_dir(&format!("c{id}")).display().to_string(),
        ];
        args.extend(self.opts.controller_flags.iter().cloned());
        let mut envs = vec![("RUST_LOG", "warn")];
        if i > 0 {
            args.extend([
                "--join".into(),
                format!("http://{}", self.controller_peers[0]),
            ]);
            envs.push(("DABBA_TOKEN", self.admin.as_str()));
        }
        let (program, args) = self.in_region(&region, args);
        Process::start(
            &format!("c{id}"),
            &program,
            &args,
            &envs,
            None,
            &self.opts.dir,
        )
    }

    /// The program and arguments that run `dabba args...` in `region`.
    fn in_region(&self, region: &str, args: Vec<String>) -> (PathBuf, Vec<String>) {
        match &self.opts.wan {
            Some(wan) => wan.command(region, &self.opts.dabba, &args),
            None => (self.opts.dabba.clone(), args),
        }
    }

    /// The controllers' URLs as the processes reach them.
    pub fn peer_urls(&self) -> Vec<String> {
        self.controller_peers
            .iter()
            .map(|a| format!("http://{a}"))
            .collect()
    }

    fn data_dir(&self, name: &str) -> PathBuf {
        self.opts.dir.join(name)
    }

    /// Reads the tokens the first controller wrote, once they work.
    async fn read_tokens(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let dir = self.data_dir("c1");
        let urls = self.urls();
        let (admin, join) = until(
            "the first controller to write its tokens",
            timeout,
            Duration::from_millis(20),
            Some(&mut self.controllers[0]),
            || {
                let (dir, urls) = (dir.clone(), urls.clone());
                async move {
                    let admin = read_token(&dir.join("admin.token"))?;
                    let join = read_token(&dir.join("join.token"))?;
                    // A token file can be seen before it is whole: ask with it.
                    ApiClient::new(urls, admin.clone())
                        .cluster_status()
                        .await
                        .ok()?;
                    Some((admin, join))
                }
            },
        )
        .await?;
        self.api = ApiClient::new(self.urls(), admin.clone());
        self.admin = admin;
        self.join = join;
        Ok(())
    }

    /// Starts one more host, named and zoned by `h`.
    pub async fn start_host(&mut self, h: &HostOptions) -> anyhow::Result<()> {
        let region = h.region.clone().unwrap_or_else(|| "local".into());
        let (addr, advertised) = match &self.opts.wan {
            Some(wan) => {
                let addr = wan.listen_addr(&region);
                (addr, wan.expose(&region, addr).await?)
            }
            None => {
                let addr = free_addr()?;
                (addr, addr)
            }
        };
        let mut args: Vec<String> = vec![
            "host".into(),
            "--controller".into(),
            self.peer_urls().join(","),
            "--name".into(),
            h.name.clone(),
            "--region".into(),
            region.clone(),
            "--zone".into(),
            h.zone.clone(),
            "--listen".into(),
            addr.to_string(),
            "--advertise".into(),
            format!("http://{advertised}"),
            "--data-dir".into(),
            self.data_dir(&h.name).display().to_string(),
        ];
        args.extend(h.flags.iter().cloned());
        let join = self.join.clone();
        let (program, args) = self.in_region(&region, args);
        self.hosts.push(Process::start(
            &h.name,
            &program,
            &args,
            &[("RUST_LOG", "warn"), ("DABBA_JOIN_TOKEN", &join)],
            None,
            &self.opts.dir,
        )?);
        self.host_addrs.push(addr);
        Ok(())
    }

    /// The controllers' API URLs.
    pub fn urls(&self) -> Vec<String> {
        self.controller_addrs
            .iter()
            .map(|a| format!("http://{a}"))
            .collect()
    }

    /// An admin client of the cluster (failing over between the controllers).
    pub fn api(&self) -> &ApiClient {
        &self.api
    }

    /// The index (0-based) of the controller that leads.
    pub async fn leader(&self) -> anyhow::Result<usize> {
        let s = self.api.cluster_status().await?;
        let l = s.leader.context("no leader")?;
        Ok(l as usize - 1)
    }

    /// Waits until the cluster has `n` voters (and, if `caught_up`, every member is
    /// within 10 entries of the leader).
    pub async fn wait_voters(&self, n: usize, caught_up: bool) -> anyhow::Result<()> {
        until(
            &format!("{n} voters"),
            self.opts.patience,
            Duration::from_millis(50),
            None,
            || async {
                let s = self.api.cluster_status().await.ok()?;
                let voters = s.members.iter().filter(|m| m.voter).count();
                let lag_ok = !caught_up || s.members.iter().all(|m| m.lag.is_some_and(|l| l < 10));
                (voters == n && lag_ok).then_some(())
            },
        )
        .await
    }

    /// Kills controller `i` at once (SIGKILL).
    pub fn kill_controller(&mut self, i: usize) {
        self.controllers[i].kill();
    }

    /// Starts controller `i` again with its data, and waits until it serves.
    pub async fn restart_controller(&mut self, i: usize) -> anyhow::Result<()> {
        self.controllers[i].restart()?;
        until_healthy(
            self.controller_addrs[i],
            &mut self.controllers[i],
            self.opts.patience,
        )
        .await
    }

    /// Every process's log, for a failure message.
    pub fn logs(&self) -> String {
        self.controllers
            .iter()
            .chain(&self.hosts)
            .map(|p| format!("--- {} ---\n{}", p.name, p.log()))
            .collect()
    }
}

/// The region of controller `i`.
fn controller_region(opts: &ClusterOptions, i: usize) -> String {
    opts.controller_regions
        .get(i)
        .cloned()
        .unwrap_or_else(|| "default".into())
}

/// A token file's content, once it has one.
fn read_token(path: &Path) -> Option<String> {
    let t = std::fs::read_to_string(path).ok()?;
    let t = t.trim();
    (!t.is_empty()).then(|| t.to_string())
}
