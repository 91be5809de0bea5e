//! The agent: what makes a host part of a cluster.
//!
//! It registers the host with the controllers (authenticated by the join token), then
//! runs two loops. The watch loop long-polls the host's assignments and converges: it
//! fetches each assigned component by digest (from a local cache, or from any
//! controller, verifying the SHA-256), loads it as a pod, drops pods no longer
//! assigned, and swaps the ingress's routing table. The heartbeat loop reports, every
//! interval and right after each change, the phase and load of every pod, the requests
//! the activator holds, and the new lines of guest output. The activation loop turns
//! the activator's demand for an app with no pod into an activation at the leader and,
//! when the leader places the first pod here, starts it without waiting for the next
//! assignments. The controller decides; the agent only converges and reports.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dabba_client::{ApiClient, ApiError};
use dabba_spec::api::{
    ActivateRequest, ActivateResponse, AppLogLines, Assignment, Heartbeat, HeldRequests, HostView,
    LogLine, PodReport, RouteEntry,
};
use dabba_spec::cronjob::{RunAssignment, RunReport};
use dabba_spec::resources::{HostInfo, PodPhase, ResourceKey};
use dabba_spec::{Digest, WorkloadKind};
use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use tokio::sync::{Notify, mpsc};

use crate::component::ComponentBytes;
use crate::ingress::{Demand, Ingress, LocalPod, RoutingTable};
use crate::job::RunInput;
use crate::kv::KvBackend;
use crate::runtime::{AppConfig, Runtime};

#[derive(Clone)]
pub struct AgentOptions {
    pub info: HostInfo,
    /// Where fetched components are cached, by digest.
    pub data_dir: PathBuf,
    pub heartbeat: Duration,
    /// A shorter way to the leader for activations, when it runs in this process (the
    /// embedded default); otherwise they go over the API.
    pub local_leader: Option<Arc<dyn LocalLeader>>,
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
    Box<dyn std::future::Future<Output = Option<Result<ActivateResponse, String>>> + Send + 'a>,
>;

/// One pod as the agent knows it.
enum Local {
    Running(Arc<LocalPod>),
    Failed(String),
}

struct Tracked {
    app: ResourceKey,
    state: Local,
    /// Guest output lines already reported.
    log_seen: u64,
    /// The state version it was assigned at: a view older than that does not know it
    /// yet and must not stop it.
    assigned_at: u64,
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
    /// Verified components by digest, so a pod start neither reads nor hashes them.
    components: Mutex<HashMap<Digest, Arc<ComponentBytes>>>,
    demands: Mutex<Option<mpsc::UnboundedReceiver<Demand>>>,
    /// Cron job attempts started here, by (run key, attempt): each runs once.
    runs_started: Mutex<std::collections::HashSet<(ResourceKey, u32)>>,
    last_report: Mutex<Instant>,
    report_now: Notify,
    pod_gauge: IntGaugeVec,
    pod_starts: IntCounterVec,
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
            components: Mutex::new(HashMap::new()),
            demands: Mutex::new(Some(demands)),
            runs_started: Mutex::new(std::collections::HashSet::new()),
            last_report: Mutex::new(Instant::now()),
            report_now: Notify::new(),
            pod_gauge,
            pod_starts,
        }))
    }

    pub fn name(&self) -> &str {
        &self.opts.info.name
    }

    /// Registers, then watches and heartbeats until the process ends.
    pub async fn run(self: Arc<Self>) {
        self.register().await;
        let beat = self.clone();
        tokio::spawn(async move { beat.heartbeat_loop().await });
        let demands = self.demands.lock().expect("demands lock").take();
        if let Some(demands) = demands {
            let activator = self.clone();
            tokio::spawn(async move { activator.activation_loop(demands).await });
        }
        self.watch_loop().await;
    }

    async fn register(&self) {
        let mut pause = Duration::from_millis(100);
        loop {
            match self.api.register_host(&self.opts.info).await {
                Ok(_) => {
                    tracing::info!(host = %self.name(), "registered with the controllers");
                    return;
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
        /// How long one long-poll of the assignments waits for a change.
        const ASSIGNMENTS_WAIT: Duration = Duration::from_secs(10);
        let mut since = 0;
        loop {
            match self
                .api
                .assignments(self.name(), since, ASSIGNMENTS_WAIT)
                .await
            {
                Ok(view) => {
                    since = view.version;
                    if view.host.is_none() {
                        // The controllers forgot this host (a restored cluster): register
                        // again.
                        self.register().await;
                    }
                    self.converge(view).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "watching assignments failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Makes the pods on this host what `view` says, rebuilds the routing table, and
    /// starts the cron job runs assigned here.
    async fn converge(self: &Arc<Self>, view: HostView) {
        {
            // Forget attempts no longer assigned (they reported, or were given up).
            let assigned: std::collections::HashSet<(ResourceKey, u32)> = view
                .runs
                .iter()
                .map(|a| (a.run.key(), a.run.attempt))
                .collect();
            self.runs_started
                .lock()
                .expect("runs lock")
                .retain(|k| assigned.contains(k));
        }
        for a in &view.runs {
            let first = self
                .runs_started
                .lock()
                .expect("runs lock")
                .insert((a.run.key(), a.run.attempt));
            if first {
                let (agent, a) = (self.clone(), a.clone());
                tokio::spawn(async move { agent.execute(a).await });
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
            pods.retain(|key, t| wanted.contains_key(key) || t.assigned_at > view.version);
            wanted
                .iter()
                .filter(|(key, _)| !pods.contains_key(*key))
                .map(|(_, a)| *a)
                .collect()
        };
        *self.routes.lock().expect("routes lock") = view.routes.clone();
        // New routes and stopped pods take effect now, not after new pods start (a
        // first compile can take seconds).
        self.publish();
        if !to_start.is_empty() {
            for a in to_start {
                self.install(a, view.version).await;
            }
            self.publish();
        }
    }

    /// Starts an assigned pod and tracks it (unless it already is).
    async fn install(&self, a: &Assignment, version: u64) {
        let state = match self.start(a).await {
            Ok(pod) => {
                self.pod_starts.with_label_values(&["ok"]).inc();
                Local::Running(Arc::new(pod))
            }
            Err(reason) => {
                self.pod_starts.with_label_values(&["failed"]).inc();
                tracing::warn!(pod = %a.pod.key(), %reason, "pod failed to start");
                Local::Failed(reason)
            }
        };
        self.pods
            .lock()
            .expect("pods lock")
            .entry(a.pod.key())
            .or_insert(Tracked {
                app: a.pod.app_key(),
                state,
                log_seen: 0,
                assigned_at: version,
            });
    }

    /// Swaps in a routing table of the last routes and the pods running here.
    fn publish(&self) {
        let local: Vec<(ResourceKey, Arc<LocalPod>)> = {
            let pods = self.pods.lock().expect("pods lock");
            let (mut running, mut failed) = (0, 0);
            let list = pods
                .values()
                .filter_map(|t| match &t.state {
                    Local::Running(p) => {
                        running += 1;
                        Some((t.app.clone(), p.clone()))
                    }
                    Local::Failed(_) => {
                        failed += 1;
                        None
                    }
                })
                .collect();
            self.pod_gauge.with_label_values(&["running"]).set(running);
            self.pod_gauge.with_label_values(&["failed"]).set(failed);
            list
        };
        let routes = self.routes.lock().expect("routes lock").clone();
        self.ingress.replace_table(RoutingTable::new(routes, local));
        self.report_now.notify_one();
    }

    /// Asks the leader to scale each app the activator holds requests for, and starts
    /// the first pod at once when the leader places it here.
    async fn activation_loop(self: Arc<Self>, mut demands: mpsc::UnboundedReceiver<Demand>) {
        let api = Arc::new(
            self.api
                .with_bounds(Duration::from_secs(2), Duration::from_secs(5)),
        );
        while let Some(d) = demands.recv().await {
            let agent = self.clone();
            let api = api.clone();
            tokio::spawn(async move {
                let asked = Instant::now();
                let req = ActivateRequest {
                    host: agent.name().to_string(),
                    held: d.held,
                };
                let local = match &agent.opts.local_leader {
                    Some(leader) => leader.activate(&d.app, &req).await,
                    None => None,
                };
                let answer = match local {
                    Some(answer) => answer,
                    None => api.activate(&d.app, &req).await.map_err(|e| e.to_string()),
                };
                match answer {
                    Ok(answer) => {
                        let answered = asked.elapsed();
                        if let Some(a) = answer.assignment {
                            agent.install(&a, answer.version).await;
                            agent.publish();
                        }
                        tracing::debug!(
                            app = %d.app,
                            answered_us = answered.as_micros() as u64,
                            started_us = asked.elapsed().as_micros() as u64,
                            "activated"
                        );
                    }
                    Err(e) => {
                        // The held requests still count in the next heartbeat, so the
                        // autoscaler scales the app from zero anyway.
                        tracing::warn!(app = %d.app, error = %e, "activation failed");
                    }
                }
            });
        }
    }

    /// Runs one attempt of a cron job run and reports how it ended (retrying the report
    /// for up to a minute; the controllers give the attempt up if the host is lost).
    async fn execute(self: Arc<Self>, a: RunAssignment) {
        let started = Instant::now();
        let report = match self.run_job(&a).await {
            Ok(r) => r,
            Err(reason) => RunReport {
                attempt: a.run.attempt,
                exit_code: -1,
                fuel: None,
                duration_ms: started.elapsed().as_millis() as u64,
                reason: Some(reason),
                output: String::new(),
            },
        };
        let api = self
            .api
            .with_bounds(Duration::from_secs(60), Duration::from_secs(5));
        if let Err(e) = api.report_run(&a.run.key(), &report).await {
            tracing::warn!(run = %a.run.name, error = %e, "reporting a run failed");
        }
    }

    async fn run_job(&self, a: &RunAssignment) -> Result<RunReport, String> {
        let bytes = self.component(&a.component).await?;
        let s = &a.spec;
        let limits = s
            .limits
            .resolve(WorkloadKind::Job)
            .map_err(|e| format!("limits: {e}"))?;
        let config = AppConfig {
            name: s.key().to_string(),
            scope: s.namespace.clone(),
            revision: None,
            limits,
            capabilities: dabba_spec::Capabilities {
                env: s.env.clone(),
                config: s.config.clone(),
                allowed_outbound_hosts: Vec::new(),
                key_value_buckets: s.key_value_buckets.clone(),
            },
            kv: self.kv.clone(),
        };
        let runtime = self.runtime.clone();
        let job = tokio::task::spawn_blocking(move || runtime.load_job(config, &bytes))
            .await
            .map_err(|e| format!("loading panicked: {e}"))?
            .map_err(|e| e.to_string())?;
        let tz = dabba_spec::cron::time_zone(&s.timezone)?;
        let scheduled = jiff::Timestamp::from_millisecond(a.run.scheduled as i64)
            .map_err(|e| format!("scheduled time: {e}"))?;
        let input = RunInput {
            args: s.args.clone(),
            env: vec![
                (
                    "DABBA_SCHEDULED_TIME".into(),
                    dabba_spec::cron::rfc3339_in(scheduled, &tz),
                ),
                ("DABBA_RUN".into(), a.run.name.clone()),
            ],
        };
        let r = job.run(input).await;
        let mut output = String::from_utf8_lossy(&r.stdout).into_owned();
        output.push_str(&String::from_utf8_lossy(&r.stderr));
        Ok(RunReport {
            attempt: a.run.attempt,
            exit_code: r.exit_code,
            fuel: r.fuel_used,
            duration_ms: r.duration.as_millis() as u64,
            reason: r.failure.map(|(_, why)| why),
            output,
        })
    }

    /// Fetches an assignment's component and loads it as a pod.
    async fn start(&self, a: &Assignment) -> Result<LocalPod, String> {
        let digest = a.spec.component;
        let bytes = self.component(&digest).await?;
        let limits = a
            .spec
            .limits
            .resolve(WorkloadKind::Http)
            .map_err(|e| format!("limits: {e}"))?;
        let config = AppConfig {
            name: a.spec.key().to_string(),
            scope: a.spec.namespace.clone(),
            revision: Some(a.pod.revision),
            limits,
            capabilities: a.spec.capabilities.clone(),
            kv: self.kv.clone(),
        };
        let runtime = self.runtime.clone();
        let function = if runtime.is_linked(&digest, &config.limits, WorkloadKind::Http) {
            // Linked before: microseconds, so no hop to the blocking pool.
            runtime.load_http(config, &bytes)
        } else {
            // Compiling can take a while: keep it off the threads that answer requests.
            tokio::task::spawn_blocking(move || runtime.load_http(config, &bytes))
                .await
                .map_err(|e| format!("loading panicked: {e}"))?
        }
        .map_err(|e| e.to_string())?;
        Ok(LocalPod {
            key: a.pod.key(),
            revision: a.pod.revision,
            function,
        })
    }

    /// A component by digest: from memory, from the local cache, or fetched from the
    /// controllers and verified before it is cached.
    async fn component(&self, digest: &Digest) -> Result<Arc<ComponentBytes>, String> {
        if let Some(c) = self.components.lock().expect("components lock").get(digest) {
            return Ok(c.clone());
        }
        let bytes = self.component_bytes(digest).await?;
        let c = Arc::new(ComponentBytes::verified(
            bytes.to_vec(),
            *digest,
            format!("component {}", digest.short()),
        ));
        self.components
            .lock()
            .expect("components lock")
            .insert(*digest, c.clone());
        Ok(c)
    }

    async fn component_bytes(&self, digest: &Digest) -> Result<Bytes, String> {
        let path = self
            .opts
            .data_dir
            .join("components")
            .join(format!("{}.wasm", digest.hex()));
        if let Ok(bytes) = tokio::fs::read(&path).await
            && Digest::of(&bytes) == *digest
        {
            return Ok(Bytes::from(bytes));
        }
        let bytes = self
            .api
            .blob(digest)
            .await
            .map_err(|e: ApiError| format!("fetching component {}: {e}", digest.short()))?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(format!(
                "component {} arrived corrupted (it hashes to {})",
                digest.short(),
                actual.short()
            ));
        }
        let tmp = path.with_extension("tmp");
        if let Err(e) = tokio::fs::write(&tmp, &bytes).await {
            tracing::warn!(error = %e, "cannot cache component");
        } else if let Err(e) = tokio::fs::rename(&tmp, &path).await {
            tracing::warn!(error = %e, "cannot cache component");
        }
        Ok(bytes)
    }

    async fn heartbeat_loop(&self) {
        // A heartbeat that cannot be delivered soon is worthless: the next one replaces
        // it. Never let one stall the loop past the controllers' failure timeout.
        let every = self.opts.heartbeat;
        let api = self
            .api
            .with_bounds(every, every.max(Duration::from_millis(500)));
        loop {
            let beat = self.heartbeat();
            if let Err(e) = api.heartbeat(self.name(), &beat).await {
                tracing::warn!(error = %e, "heartbeat failed");
            }
            tokio::select! {
                () = tokio::time::sleep(self.opts.heartbeat) => {}
                () = self.report_now.notified() => {}
            }
        }
    }

    /// The phase and load of every pod, the held requests, and the guest output since
    /// the last heartbeat.
    fn heartbeat(&self) -> Heartbeat {
        let interval = {
            let mut last = self.last_report.lock().expect("report lock");
            let now = Instant::now();
            now - std::mem::replace(&mut *last, now)
        };
        let mut pods = self.pods.lock().expect("pods lock");
        let mut reports = Vec::with_capacity(pods.len());
        let mut logs: HashMap<ResourceKey, AppLogLines> = HashMap::new();
        for (key, t) in pods.iter_mut() {
            match &t.state {
                Local::Running(p) => {
                    reports.push(PodReport {
                        key: key.clone(),
                        phase: PodPhase::Running,
                        reason: None,
                        load: p.function.load().take(interval),
                    });
                    // Each pod keeps its own ring of output lines.
                    let (lines, seen) = p.function.log().since(t.log_seen);
                    t.log_seen = seen;
                    if !lines.is_empty() {
                        let entry = logs.entry(t.app.clone()).or_insert_with(|| AppLogLines {
                            namespace: t.app.namespace().to_string(),
                            app: t.app.name().to_string(),
                            lines: Vec::new(),
                        });
                        entry.lines.extend(lines.into_iter().map(|l| LogLine {
                            host: self.opts.info.name.clone(),
                            stream: match l.stream {
                                crate::logs::Stream::Stdout => "stdout".into(),
                                crate::logs::Stream::Stderr => "stderr".into(),
                            },
                            line: l.line,
                        }));
                    }
                }
                Local::Failed(reason) => reports.push(PodReport {
                    key: key.clone(),
                    phase: PodPhase::Failed,
                    reason: Some(reason.clone()),
                    load: None,
                }),
            }
        }
        Heartbeat {
            pods: reports,
            logs: logs.into_values().collect(),
            held: self
                .ingress
                .held()
                .into_iter()
                .map(|d| HeldRequests {
                    namespace: d.app.namespace().to_string(),
                    app: d.app.name().to_string(),
                    requests: d.held,
                })
                .collect(),
        }
    }
}
