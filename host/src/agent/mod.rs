//! The agent: what makes a host part of a cluster.
//!
//! It registers the host with the controllers (authenticated by the join token), then
//! runs three loops. The watch loop long-polls the host's assignments and converges: it
//! fetches each assigned component by digest (from a local cache, or from any
//! controller, verifying the SHA-256), loads it as a pod, drops pods no longer
//! assigned, and swaps the ingress's routing table. The heartbeat loop reports, every
//! interval and right after each change, the phase and load of every pod and the
//! requests the activator holds; guest output stays in the pods' logs on this host's
//! disk, which the ingress answers to the controllers (`crate::logs`). The activation loop turns
//! the activator's demand for an app with no pod into an activation at the leader and,
//! when the leader places the first pod here, starts it without waiting for the next
//! assignments. The controller decides; the agent only converges and reports.
//!
//! Here: registering, the watch loop and converging. `pods` starts and tracks pods,
//! `runs` executes cron job runs, `activation` asks for pods of apps at zero,
//! `heartbeat` reports.

mod activation;
mod attempts;
pub mod credential;
mod heartbeat;
mod pods;
mod runs;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dabba_client::{ApiClient, ApiError};
use dabba_spec::api::{
    ActivateRequest, ActivateResponse, Assignment, HostView, RegionStateView, RouteEntry,
};
use dabba_spec::resources::{HostInfo, PodPhase, ResourceKey};
use dabba_spec::{Digest, LimitError};
use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use tokio::sync::{Notify, mpsc};

use self::attempts::{Attempt, Attempts, Next};
use crate::component::{ComponentBytes, LoadError};
use crate::ingress::{Demand, Ingress, LocalPod};
use crate::kv::KvBackend;
use crate::logs::LogDir;
use crate::peer::PeerReads;
use crate::runtime::Runtime;

#[derive(Clone)]
pub struct AgentOptions {
    pub info: HostInfo,
    /// Where fetched components are cached, by digest.
    pub data_dir: PathBuf,
    pub heartbeat: Duration,
    /// A shorter way to the leader for activations, when it runs in this process (the
    /// embedded default); otherwise they go over the API.
    pub local_leader: Option<Arc<dyn LocalLeader>>,
    /// What the ingress answers other hosts and the controllers: where the pods' and
    /// runs' logs are kept, and the read key.
    pub reads: Arc<PeerReads>,
    /// The cluster's join token: registers this host when it has no credential of its
    /// own yet (or its own stopped working).
    pub join_token: String,
}

impl AgentOptions {
    /// How often a host heartbeats unless told otherwise (`dabba host --heartbeat`).
    pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(500);
}

/// The leader, reached without the network: `dabba up` runs the controller and the host
/// in one process, and an activation is the one call where the hops of an HTTP exchange
/// show in a user's latency.
pub trait LocalLeader: Send + Sync {
    /// Activates `app` for `req`; `None` when this process does not lead (the agent
    /// then asks over the API).
    fn activate<'a>(&'a self, app: &'a ResourceKey, req: &'a ActivateRequest) -> Activation<'a>;
}

/// The answer of a [`LocalLeader`], to come.
pub type Activation<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Option<Result<ActivateResponse, ActivationError>>>
            + Send
            + 'a,
    >,
>;

/// Why the leader did not activate an app (whatever error its own call gave).
pub type ActivationError = Box<dyn std::error::Error + Send + Sync>;

/// Why a pod or a run could not start on this host; what the pod's `reason` (or the
/// run's report) then says.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("fetching component {digest}: {source}")]
    Fetch { digest: String, source: ApiError },
    #[error("limits: {0}")]
    Limits(#[from] LimitError),
    #[error("loading panicked: {0}")]
    Panicked(String),
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The run's time zone or schedule time cannot be read.
    #[error("{0}")]
    Schedule(String),
    /// A rollout check that cannot be set up (no component, a bad ingress address).
    #[error("{0}")]
    Check(String),
    /// The secrets it lists could not be given to it.
    #[error("its secrets: {0}")]
    Secrets(String),
}

/// One pod as the agent knows it.
enum Local {
    Running(Arc<LocalPod>),
    Failed(String),
}

struct Tracked {
    app: ResourceKey,
    state: Local,
    /// The state version it was assigned at: a view older than that does not know it
    /// yet and must not stop it.
    assigned_at: u64,
    /// The secrets it was given (or why not): when they change, the pod is loaded
    /// again with the new ones.
    secrets: Secrets,
}

/// An assignment's secrets, as a pod was started with them.
type Secrets = (dabba_spec::secret::Revealed, Option<String>);

fn secrets_of(a: &Assignment) -> Secrets {
    (a.secrets.clone(), a.unrevealed.clone())
}

pub struct Agent {
    opts: AgentOptions,
    api: Arc<ApiClient>,
    runtime: Arc<Runtime>,
    kv: Arc<dyn KvBackend>,
    ingress: Arc<Ingress>,
    pods: Mutex<HashMap<ResourceKey, Tracked>>,
    /// The routes of the last view, for rebuilding the table when a pod starts.
    routes: Mutex<Vec<RouteEntry>>,
    /// The regions of the last view: where each host is, where placed apps serve from.
    regions: Mutex<(BTreeMap<String, String>, Vec<RegionStateView>)>,
    /// Verified components by digest, so a pod start neither reads nor hashes them.
    components: Mutex<HashMap<Digest, Arc<ComponentBytes>>>,
    demands: Mutex<Option<mpsc::UnboundedReceiver<Demand>>>,
    /// Cron job attempts started here, on disk: each runs once, across restarts.
    attempts: Mutex<Attempts>,
    /// The attempts running in this process, to stop one the controllers no longer
    /// assign here (failed at its deadline, replaced, given up).
    running: Mutex<HashMap<Attempt, tokio::task::AbortHandle>>,
    /// Rollout checks started here, by id: each runs once.
    checks_started: Mutex<std::collections::HashSet<String>>,
    last_report: Mutex<Instant>,
    report_now: Notify,
    pod_gauge: IntGaugeVec,
    pod_starts: IntCounterVec,
    /// Components fetched for pods and runs, by where from.
    fetches: IntCounterVec,
}

impl Agent {
    pub fn new(
        opts: AgentOptions,
        api: Arc<ApiClient>,
        runtime: Arc<Runtime>,
        kv: Arc<dyn KvBackend>,
        ingress: Arc<Ingress>,
        demands: mpsc::UnboundedReceiver<Demand>,
    ) -> anyhow::Result<Arc<Agent>> {
        std::fs::create_dir_all(opts.data_dir.join("components"))?;
        let attempts = Attempts::open(&opts.data_dir).map_err(|e| {
            anyhow::anyhow!("reading which cron job attempts this host started: {e}")
        })?;
        let registry = runtime.metrics().registry();
        let pod_gauge = IntGaugeVec::new(
            Opts::new("dabba_pods", "Pods on this host, by phase."),
            &["phase"],
        )?;
        let pod_starts = IntCounterVec::new(
            Opts::new(
                "dabba_pod_starts_total",
                "Pods started on this host (cold starts), by result.",
            ),
            &["result"],
        )?;
        let fetches = IntCounterVec::new(
            Opts::new(
                "dabba_component_fetches_total",
                "Components a pod or run needed that were not in memory, by where they came \
                 from: cache (this host's disk), peer (another host), controller.",
            ),
            &["source"],
        )?;
        registry.register(Box::new(fetches.clone()))?;
        registry.register(Box::new(pod_gauge.clone()))?;
        registry.register(Box::new(pod_starts.clone()))?;
        Ok(Arc::new(Agent {
            opts,
            api,
            runtime,
            kv,
            ingress,
            pods: Mutex::new(HashMap::new()),
            routes: Mutex::new(Vec::new()),
            regions: Mutex::new(Default::default()),
            components: Mutex::new(HashMap::new()),
            demands: Mutex::new(Some(demands)),
            attempts: Mutex::new(attempts),
            running: Mutex::new(HashMap::new()),
            checks_started: Mutex::new(std::collections::HashSet::new()),
            last_report: Mutex::new(Instant::now()),
            report_now: Notify::new(),
            pod_gauge,
            pod_starts,
            fetches,
        }))
    }

    pub fn name(&self) -> &str {
        &self.opts.info.name
    }

    /// Registers, then watches and heartbeats until the process ends.
    pub async fn run(self: Arc<Self>) {
        self.log_restarted();
        self.register().await;
        let beat = self.clone();
        tokio::spawn(async move { beat.heartbeat_loop().await });
        let prober = self.clone();
        tokio::spawn(async move { prober.probe_regions().await });
        let sweeper = self.clone();
        tokio::spawn(async move { sweeper.sweep_logs().await });
        let demands = self.demands.lock().expect("demands lock").take();
        if let Some(demands) = demands {
            let activator = self.clone();
            tokio::spawn(async move { activator.activation_loop(demands).await });
        }
        self.watch_loop().await;
    }

    /// Measures the round trip to one host of every other region every 2 s, for the
    /// ingress to proxy to the nearest region.
    async fn probe_regions(self: Arc<Self>) {
        let client = dabba_client::transport::client();
        loop {
            let own = self.opts.info.region.clone();
            let targets: BTreeMap<String, String> = {
                let regions = self.regions.lock().expect("regions lock");
                let mut one: BTreeMap<String, String> = BTreeMap::new();
                for (addr, region) in &regions.0 {
                    if *region != own {
                        one.entry(region.clone()).or_insert_with(|| addr.clone());
                    }
                }
                one
            };
            for (region, addr) in targets {
                let url = format!(
                    "{}{}",
                    addr.trim_end_matches('/'),
                    crate::ingress::HEALTH_PATH
                );
                let Ok(req) =
                    http::Request::get(url).body(http_body_util::Full::new(bytes::Bytes::new()))
                else {
                    continue;
                };
                let started = Instant::now();
                let ok = dabba_client::transport::send(&client, req, Duration::from_secs(1))
                    .await
                    .is_ok();
                self.ingress
                    .set_region_rtt(&region, ok.then(|| started.elapsed()));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Removes, every ten minutes, the logs of pods and runs that ended here longer
    /// than [`LogDir::RETENTION`] ago.
    async fn sweep_logs(self: Arc<Self>) {
        loop {
            let keep: Vec<std::path::PathBuf> = {
                let pods = self.pods.lock().expect("pods lock");
                pods.iter()
                    .map(|(pod, t)| self.pod_log(&t.app, pod).path)
                    .collect()
            };
            let reads = self.opts.reads.clone();
            let removed = tokio::task::spawn_blocking(move || {
                reads.logs().dir().sweep(LogDir::RETENTION, &keep)
            })
            .await
            .unwrap_or(0);
            if removed > 0 {
                tracing::info!(removed, "removed logs past their retention");
            }
            tokio::time::sleep(Duration::from_secs(600)).await;
        }
    }

    /// Where a pod of `app` keeps its log.
    fn pod_log(&self, app: &ResourceKey, pod: &ResourceKey) -> crate::logs::LogPath {
        let dir = self.opts.reads.logs().dir();
        dir.log(dir.pod_path(app.namespace(), app.name(), pod.name()))
    }

    /// Registers this host: with its own credential when it has one, else with the
    /// join token — whose answer is the host's own credential, kept in the data
    /// directory and used for every call from then on. A credential the controllers no
    /// longer know (revoked, a restored cluster) falls back to the join token.
    async fn register(&self) {
        let mut pause = Duration::from_millis(100);
        loop {
            match self.api.register_host(&self.opts.info).await {
                Ok(registered) => {
                    if let Some(token) = registered.token {
                        if let Err(e) = credential::keep(&self.opts.data_dir, &token) {
                            // Works until a restart, which registers with the join token
                            // again (once this host is judged NotReady).
                            tracing::warn!(error = %e, "keeping this host's credential");
                        }
                        self.api.set_token(&token);
                    }
                    tracing::info!(host = %self.name(), "registered with the controllers");
                    return;
                }
                Err(e) if e.status() == Some(401) && *self.api.token() != *self.opts.join_token => {
                    tracing::warn!(
                        error = %e,
                        "this host's credential no longer works; registering with the join token"
                    );
                    self.api.set_token(&self.opts.join_token);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "registering with the controllers failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    async fn watch_loop(self: &Arc<Self>) {
        /// How long one long-poll of the assignments waits for a change: short, so a
        /// poll stuck on a controller cut off by a partition is given up (and another
        /// controller asked) within seconds.
        const ASSIGNMENTS_WAIT: Duration = Duration::from_secs(3);
        let api = self.api.with_bounds(
            Duration::from_secs(10),
            ASSIGNMENTS_WAIT + Duration::from_secs(2),
        );
        let mut since = 0;
        loop {
            match api.assignments(self.name(), since, ASSIGNMENTS_WAIT).await {
                Ok(view) => {
                    since = view.version;
                    self.opts.reads.set_key(&view.read_key);
                    if view.host.is_none() {
                        // The controllers forgot this host (a restored cluster): register
                        // again.
                        self.register().await;
                    }
                    self.converge(view).await;
                }
                Err(e) if e.status() == Some(401) => {
                    tracing::warn!(error = %e, "the controllers no longer know this host's credential");
                    self.register().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "watching assignments failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Makes the pods on this host what `view` says, rebuilds the routing table, and
    /// starts the cron job runs and rollout checks assigned here.
    async fn converge(self: &Arc<Self>, view: HostView) {
        {
            // Forget attempts no longer assigned (they reported, or were given up).
            let assigned: BTreeSet<Attempt> = view
                .runs
                .iter()
                .map(|a| (a.run.key(), a.run.attempt))
                .collect();
            if let Err(e) = self
                .attempts
                .lock()
                .expect("attempts lock")
                .retain(&assigned)
            {
                tracing::warn!(error = %e, "forgetting finished cron job attempts");
            }
            self.stop_attempts(
                |a| assigned.contains(a),
                "no longer assigned to this host (the run failed at its deadline, was \
                 replaced or was given up)",
            );
        }
        for a in &view.runs {
            let next = self
                .attempts
                .lock()
                .expect("attempts lock")
                .next(&(a.run.key(), a.run.attempt), Instant::now());
            let (agent, a) = (self.clone(), a.clone());
            match next {
                Ok(Next::Start) => {
                    let attempt = (a.run.key(), a.run.attempt);
                    let mut running = self.running.lock().expect("running lock");
                    let task = tokio::spawn(async move { agent.execute(a).await });
                    running.insert(attempt, task.abort_handle());
                }
                Ok(Next::Report(report)) => {
                    let attempt = (a.run.key(), a.run.attempt);
                    tokio::spawn(async move { agent.send_report(attempt, report).await });
                }
                Ok(Next::Nothing) => {}
                // Not started: the next view assigns it again.
                Err(e) => tracing::warn!(
                    run = %a.run.name,
                    error = %e,
                    "recording a cron job attempt before starting it failed"
                ),
            }
        }
        {
            let mut started = self.checks_started.lock().expect("checks lock");
            started.retain(|id| view.checks.iter().any(|c| c.id == *id));
            for c in &view.checks {
                if started.insert(c.id.clone()) {
                    let (agent, c) = (self.clone(), c.clone());
                    tokio::spawn(async move { agent.check(c).await });
                }
            }
        }
        let wanted: HashMap<ResourceKey, &Assignment> = view
            .pods
            .iter()
            .filter(|a| a.pod.phase != PodPhase::Pending)
            .map(|a| (a.pod.key(), a))
            .collect();
        let to_start: Vec<&Assignment> = {
            let mut pods = self.pods.lock().expect("pods lock");
            pods.retain(|key, t| {
                let keep = wanted.contains_key(key) || t.assigned_at > view.version;
                if !keep && let Local::Running(p) = &t.state {
                    p.function
                        .log()
                        .event("stopped: no longer assigned to this host");
                }
                keep
            });
            // New pods, and pods whose secrets changed (loaded again beside the running
            // one, which serves until the new one replaces it).
            wanted
                .iter()
                .filter(|(key, a)| pods.get(*key).is_none_or(|t| t.secrets != secrets_of(a)))
                .map(|(_, a)| *a)
                .collect()
        };
        *self.routes.lock().expect("routes lock") = view.routes.clone();
        *self.regions.lock().expect("regions lock") =
            (view.host_regions.clone(), view.region_states.clone());
        // New routes and stopped pods take effect now, not after new pods start (a
        // first compile can take seconds).
        self.publish();
        for a in to_start {
            self.install(a, view.version).await;
        }
    }
}
