//! Request and response bodies of the controller's `/v1` API, shared by the controller,
//! the hosts' agents and the CLI. The endpoints are documented in `spec/api.md`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::kv::{KvError, Outcome, Write};
use crate::resources::{
    App, AppSpec, Grant, Host, HostInfo, Pod, PodPhase, ReplicaSet, ResourceKey, Revision, Role,
    Route,
};

/// Every error the API answers with: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// An app's rollout as `GET /v1/rollouts` and `GET /v1/apps/{ns}/{name}/rollout` show
/// it: the replicated status, what its steps are, and what the ingresses did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutView {
    pub namespace: String,
    pub app: String,
    pub status: crate::rollout::RolloutStatus,
    /// Each canary step, described (`set_weight 25`).
    #[serde(default)]
    pub steps: Vec<String>,
    /// Each metric's conditions, by `template/metric`.
    #[serde(default)]
    pub conditions: std::collections::BTreeMap<String, String>,
    /// The canary's share of the requests the two revisions answered lately (leader's
    /// view of the hosts' reports); absent with no requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<ObservedSplit>,
    /// What the rollout waits for now, in words.
    #[serde(default)]
    pub waiting_for: String,
}

/// The split the ingresses actually made.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ObservedSplit {
    /// Percent of requests the canary answered.
    pub canary_percent: f64,
    /// Requests counted (both revisions).
    pub requests: u64,
    /// Over this many milliseconds.
    pub window_ms: u64,
}

/// `POST /v1/apps/{ns}/{name}/rollout`: what a person does to a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum RolloutAction {
    /// Past the current step (or pause, or inconclusive analysis); `full`: to the end.
    Promote {
        #[serde(default)]
        full: bool,
    },
    Abort,
    Retry,
    Pause,
    Resume,
}

/// An analysis template applied on its own, in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalysisTemplateView {
    pub namespace: String,
    pub template: crate::analysis::AnalysisTemplate,
}

/// `POST /v1/apps/{ns}/{name}/undo`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UndoRequest {
    /// The revision to go back to (default: the stable one during a rollout, else the
    /// one before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_revision: Option<u64>,
}

/// `GET /v1/apps/{ns}/{name}`: an app and everything about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppDetail {
    pub app: App,
    pub revisions: Vec<Revision>,
    pub replica_sets: Vec<ReplicaSet>,
    pub pods: Vec<Pod>,
    pub events: Vec<EventView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler: Option<AutoscalerStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutView>,
    /// For an app placed across regions: the pods wanted in each region now, and the
    /// regions failed over, draining or restoring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<crate::regions::PlacementStatus>,
}

impl AppDetail {
    /// The pods the app's serving revision should run now: in all its regions for an
    /// app placed across regions.
    pub fn pods_wanted(&self) -> usize {
        match &self.placement {
            Some(p) => p.replicas.values().map(|n| *n as usize).sum(),
            None => self.app.spec.replicas as usize,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventView {
    pub at: u64,
    pub object: String,
    pub reason: String,
    pub message: String,
}

/// An app in a listing, with how many of its pods run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppSummary {
    pub namespace: String,
    pub name: String,
    pub route: Route,
    pub revision: u64,
    pub desired: u32,
    pub ready: u32,
    pub component: String,
    pub updated_at: u64,
    /// Present for autoscaled apps, when the leader has decided for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler: Option<AutoscalerStatus>,
}

/// `PUT /v1/blobs/{digest}`: whether the upload stored the component (`false`: the
/// cluster already had it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobStored {
    pub digest: crate::Digest,
    pub stored: bool,
}

/// `GET /v1/healthz`: this node serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub ok: bool,
}

/// The body of answers that carry nothing but their status (`{}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleRequest {
    pub replicas: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRequest {
    pub role: Role,
    #[serde(default)]
    pub namespace: Option<String>,
    pub label: String,
    /// How long the token works, in ms (none: until revoked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// With role `bound`: the role (the cluster's own, or built in) to bind the token
    /// to, in `namespace` or cluster-wide (`crate::rbac`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    pub token: String,
    /// What `dabba token list` shows for it, and `dabba token revoke` takes.
    #[serde(default)]
    pub id: String,
}

/// A token as `GET /v1/tokens` shows it: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenView {
    /// The first 16 hex digits of the secret's SHA-256.
    pub id: String,
    #[serde(flatten)]
    pub grant: Grant,
}

/// The answer to `POST /v1/hosts/register`: registered with the join token, the host's
/// own credential, which it keeps and uses from then on (it speaks for that host only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// `GET /v1/cluster`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The node that answered.
    pub node: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub members: Vec<Member>,
    /// The state version (bumped by every visible change).
    pub version: u64,
    /// Whether losing any one region keeps a quorum, by region (`spec/regions.md`).
    #[serde(default)]
    pub survives_region_loss: std::collections::BTreeMap<String, bool>,
    /// The region the leader is kept in while it is healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_leader_region: Option<String>,
    /// The components the cluster holds (outside the Raft log).
    #[serde(default)]
    pub components: ComponentsStatus,
}

/// The components a cluster holds, and how many of them the answering controller has in
/// its own store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ComponentsStatus {
    /// Committed components.
    pub count: u64,
    /// Their bytes, all together.
    pub bytes: u64,
    /// Of them, how many the answering controller holds.
    pub held_here: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    pub address: String,
    /// A voter, or a learner still catching up.
    pub voter: bool,
    /// Entries this member is behind the leader, as the leader sees it.
    pub lag: Option<u64>,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub zone: String,
    /// Round-trip time from the leader, in ms (the leader's last probe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddMember {
    pub id: u64,
    /// The member's controller URL, e.g. `http://10.0.0.2:7070`.
    pub address: String,
    #[serde(default = "default_region")]
    pub region: String,
    #[serde(default = "default_region")]
    pub zone: String,
}

fn default_region() -> String {
    "default".into()
}

/// `PUT /v1/cluster/preferred-leader-region`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PreferredLeaderRegion {
    pub region: Option<String>,
}

/// Where a controller runs: `PUT /v1/cluster/members/{id}/place` (by the controller
/// itself, with the peer token, when it starts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerPlace {
    pub region: String,
    pub zone: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerToken {
    pub token: String,
    /// The key that wraps the secrets' data keys, for a joining controller's
    /// `secrets.key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_key: Option<String>,
}

/// `GET /v1/watch?since=V`: the version once it is past `since` (or the wait ended).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchResponse {
    pub version: u64,
}

/// `POST /v1/hosts/{name}/heartbeat`: what the host is running and the load on it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub pods: Vec<PodReport>,
    /// Requests the host's activator holds for apps with no ready pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<HeldRequests>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodReport {
    /// `namespace/pod`.
    pub key: ResourceKey,
    pub phase: PodPhase,
    #[serde(default)]
    pub reason: Option<String>,
    /// The load since the previous heartbeat (Running pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<PodLoad>,
}

/// What one pod carried over one heartbeat interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PodLoad {
    /// Average requests in flight over the interval (or in flight now, if more).
    pub concurrency: f64,
    /// Requests in flight when the report was made.
    pub in_flight: u32,
    pub rps: f64,
    pub requests: u64,
    /// Responses with a 5xx status, and abandoned requests.
    pub errors: u64,
    /// Requests stopped by a limit (fuel, memory, time, body size, queue); they are
    /// errors too.
    #[serde(default)]
    pub limit_hits: u64,
    /// 95th percentile latency, as the upper bound of its power-of-two bucket.
    pub p95_ms: f64,
    /// The requests by latency bucket ([`crate::latency`]), for percentiles over any
    /// window.
    #[serde(default)]
    pub latency: crate::latency::Histogram,
    /// Fuel the pod's instances used.
    pub fuel: u64,
    /// The most linear memory one instance used, in bytes.
    pub peak_memory: u64,
}

/// Requests an activator holds for one app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldRequests {
    pub namespace: String,
    pub app: String,
    pub requests: u32,
}

/// `POST /v1/apps/{ns}/{name}/activate`: a host holds requests for an app with no ready
/// pod. The leader scales it from zero at once, with the first pod on that host when it
/// fits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivateRequest {
    pub host: String,
    pub held: u32,
}

/// The answer: the pod placed on the asking host, if one was, so the host can start it
/// without waiting for its assignments to change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivateResponse {
    pub replicas: u32,
    /// The state version that includes the activation.
    pub version: u64,
    pub assignment: Option<Assignment>,
}

/// The autoscaler's view of an app (kept by the leader, not replicated).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoscalerStatus {
    pub mode: crate::scale::AutoscalerMode,
    pub desired: u32,
    pub reason: String,
    /// Total demand the last decision saw: in flight (or requests/s for an rps target).
    pub demand: f64,
    pub at: u64,
}

/// What a reader asks of a log: the query of `GET /v1/apps/{ns}/{name}/logs`, of
/// `GET /v1/runs/{ns}/{run}/logs` and of a host's `/.dabba/logs/...`, which a
/// controller passes on as it got it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// The last N lines (per host, when following).
    pub tail: Option<usize>,
    /// Lines written at or after this Unix millisecond.
    pub since: Option<u64>,
    /// Only this pod's lines.
    pub pod: Option<String>,
    /// Keep the answer open and send each new line.
    pub follow: bool,
}

impl LogQuery {
    /// Reads a URL query (unknown names are ignored); says which value is wrong.
    pub fn parse(query: &str) -> Result<LogQuery, String> {
        let mut q = LogQuery::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "tail" => {
                    q.tail = Some(
                        v.parse()
                            .map_err(|_| format!("tail `{v}`: expected a number of lines"))?,
                    )
                }
                "since" => {
                    q.since = Some(
                        v.parse()
                            .map_err(|_| format!("since `{v}`: expected Unix milliseconds"))?,
                    )
                }
                "pod" if crate::resources::valid_segment(&v) => q.pod = Some(v.into_owned()),
                "pod" => return Err(format!("pod `{v}` is not a name")),
                "follow" => q.follow = v == "1" || v == "true",
                _ => {}
            }
        }
        Ok(q)
    }

    /// The URL query that [`LogQuery::parse`] reads back (empty when nothing is asked).
    pub fn to_query(&self) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        if let Some(t) = self.tail {
            s.append_pair("tail", &t.to_string());
        }
        if let Some(t) = self.since {
            s.append_pair("since", &t.to_string());
        }
        if let Some(p) = &self.pod {
            s.append_pair("pod", p);
        }
        if self.follow {
            s.append_pair("follow", "1");
        }
        s.finish()
    }
}

/// One line of a pod's (or a job run's) log, as `GET /v1/apps/{ns}/{name}/logs` and
/// `GET /v1/runs/{ns}/{run}/logs` stream it: one JSON object per line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// The host whose disk holds it.
    pub host: String,
    /// The pod, or the job run, that wrote it.
    pub pod: String,
    /// When it was written, in Unix milliseconds (the host's clock).
    pub t: u64,
    /// `stdout`, `stderr`, or `event` (what the platform did: started, stopped, ended).
    pub stream: String,
    pub line: String,
}

/// The header a controller or a host shows to read from a host (`GET /.dabba/logs/...`,
/// `GET /.dabba/blobs/...` on its ingress); its value is the cluster's
/// [`HostView::read_key`].
pub const READ_KEY_HEADER: &str = "x-dabba-read-key";

/// The header of a log answer that names the hosts that could not be asked (their
/// lines are missing), comma-separated.
pub const LOGS_UNREACHABLE_HEADER: &str = "x-dabba-logs-unreachable";

/// `GET /v1/hosts/{name}/assignments`: everything a host needs to converge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostView {
    pub version: u64,
    /// The host as the controller sees it (absent before it registered).
    pub host: Option<Host>,
    pub pods: Vec<Assignment>,
    pub routes: Vec<RouteEntry>,
    /// Cron job runs this host should execute now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<crate::cronjob::RunAssignment>,
    /// Rollout `job` checks this host should run now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckAssignment>,
    /// The region of every Ready host, by ingress address: a request proxied to another
    /// host goes to the nearest region that serves the app.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub host_regions: BTreeMap<String, String>,
    /// Regions an app placed across regions may not serve from now, by app (failed over
    /// or drained): this host's ingress sends it nothing there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub region_states: Vec<RegionStateView>,
    /// The secret a controller or another host shows to read this host's logs and cached
    /// components ([`READ_KEY_HEADER`]); the same on every host of the cluster, given
    /// only to hosts that authenticated.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub read_key: String,
}

/// `GET /v1/regions`: one region, its health and the placed apps there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionView {
    #[serde(flatten)]
    pub health: crate::regions::RegionHealth,
    pub apps: Vec<RegionAppView>,
}

/// One app placed in a region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionAppView {
    pub app: ResourceKey,
    /// Whether this region serves the app as its primary now.
    pub serving: bool,
    pub replicas: u32,
    pub running: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<crate::regions::RegionFailure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draining_to: Option<String>,
    /// Triggers firing now (with `failover = "manual"` they are only reported).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<String>,
}

/// `POST /v1/regions/{region}/failover` and `/drain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionMove {
    /// The region to move to (default: each app's next healthy region).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// Where an app placed across regions serves from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionStateView {
    pub app: ResourceKey,
    pub serving: Option<String>,
    pub failed: Vec<String>,
    /// The app's `[placement] degraded`.
    pub degraded: crate::regions::Degraded,
}

/// A rollout's `job` check for a host to run once, and report
/// (`POST /v1/apps/{ns}/{name}/checks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckAssignment {
    pub app: ResourceKey,
    /// The revision under analysis.
    pub canary: u64,
    /// The app's route (the check reaches the canary on it with the preview header).
    pub route: Route,
    pub run: crate::analysis::RunKind,
    pub started: u64,
    pub metric: u32,
    pub id: String,
    pub job: crate::analysis::JobCheck,
}

/// How a `job` check ended, as its host reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    pub canary: u64,
    pub run: crate::analysis::RunKind,
    pub started: u64,
    pub metric: u32,
    pub id: String,
    /// The component's exit code (-1: it could not be run; see `reason`).
    pub exit_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The end of its output.
    #[serde(default)]
    pub output: String,
    pub duration_ms: u64,
}

/// One pod this host should run, with the spec of its revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub pod: Pod,
    pub spec: AppSpec,
    /// The values of the secrets its spec lists, by config key (filled by the
    /// controller that answers, never stored).
    #[serde(default, skip_serializing_if = "crate::secret::Revealed::is_empty")]
    pub secrets: crate::secret::Revealed,
    /// Why the listed secrets could not be given (the pod must not start without them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unrevealed: Option<String>,
}

/// Where requests for one app go: the hosts running its pods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteEntry {
    pub namespace: String,
    pub app: String,
    pub route: Route,
    /// Ingress addresses of hosts with a Running pod of the serving revision (of any
    /// revision, for an app rolling over without a rollout).
    pub endpoints: Vec<String>,
    /// Whether the app scales from zero: requests are held while it has no pod.
    #[serde(default)]
    pub autoscaled: bool,
    /// The revision requests go to, for an app with a canary or blue-green rollout
    /// (`None`: any running pod, the newest revision first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<u64>,
    /// How requests are split while a canary (or a blue-green preview) is rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<Split>,
    /// The app's rate limit, and how many ingresses share it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<crate::ratelimit::RouteLimit>,
}

/// A rollout's split of one app's requests between its stable revision (`serving`)
/// and its canary. In order: a request proxied from another host keeps the revision
/// that host chose; a blue-green preview request (on the preview route, or with
/// [`crate::rollout::PREVIEW_HEADER`]) and a request matching the header route go to
/// the canary; a sticky request goes where its user went before; the rest are split
/// by `weight`, exactly (`spec/rollouts.md`, "Routing").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    pub canary: u64,
    /// Ingress addresses of hosts with a Running pod of the canary.
    pub canary_endpoints: Vec<String>,
    /// The percent of requests the canary takes.
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_route: Option<crate::rollout::HeaderRoute>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<crate::rollout::Sticky>,
    /// Blue-green: the route that reaches the canary (the preview).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<Route>,
}

impl RouteEntry {
    pub fn key(&self) -> ResourceKey {
        ResourceKey::new(&self.namespace, &self.app)
    }
}

/// `PUT /v1/cronjobs/{ns}/{name}`: a cron job with its component resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronJobApply {
    pub spec: crate::cronjob::CronSection,
    pub component: crate::Digest,
}

/// A cron job in a listing: the job, its next run times in its zone, and its runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronJobView {
    pub job: crate::cronjob::CronJob,
    /// The next schedule times, RFC 3339 in the job's zone.
    pub next: Vec<String>,
    pub runs: Vec<crate::cronjob::JobRun>,
}

/// `POST /v1/kv/write`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvWrite {
    pub bucket: String,
    pub write: Write,
    /// A unique id: a retry with the same id is applied at most once.
    #[serde(default)]
    pub id: Option<String>,
    /// The cron job attempt making the write: applied only while it is the run's
    /// attempt running now (a stopped or given-up attempt's late write is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<crate::cronjob::Fence>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvWriteResult {
    pub result: Result<Outcome, KvError>,
}

/// `POST /v1/kv/read`: linearizable reads of several keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvRead {
    pub bucket: String,
    pub keys: Vec<String>,
}

/// The answer to a [`KvRead`]: one value per key asked, in order (`None`: absent). JSON
/// (values in base64) unless the caller accepts [`KV_VALUES_BINARY`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvValues {
    #[serde(with = "opt_values")]
    pub values: Vec<Option<Vec<u8>>>,
}

/// The media type of [`KvValues`] in binary, which hosts ask for: a job reading a day's
/// ledger moves hundreds of KiB per read, and base64 inside JSON is a third more bytes
/// and a pass over each on both sides. The layout: the count of values (u32, little
/// endian), then per value a byte — 0 absent, 1 present — and for a present one its
/// length (u32, little endian) and its bytes.
pub const KV_VALUES_BINARY: &str = "application/vnd.dabba.kv-values";

impl KvValues {
    /// The binary form ([`KV_VALUES_BINARY`]).
    pub fn to_binary(&self) -> Vec<u8> {
        let size: usize = self
            .values
            .iter()
            .map(|v| 1 + v.as_ref().map_or(0, |v| 4 + v.len()))
            .sum();
        let mut out = Vec::with_capacity(4 + size);
        out.extend_from_slice(&binary_len(self.values.len()).to_le_bytes());
        for value in &self.values {
            match value {
                None => out.push(0),
                Some(v) => {
                    out.push(1);
                    out.extend_from_slice(&binary_len(v.len()).to_le_bytes());
                    out.extend_from_slice(v);
                }
            }
        }
        out
    }

    /// Reads the binary form back; a body cut short, with a bad marker or with bytes
    /// after its last value is refused, saying where.
    pub fn from_binary(bytes: &[u8]) -> Result<KvValues, String> {
        let mut rest = bytes;
        let mut take = |n: usize, what: &str| -> Result<&[u8], String> {
            if rest.len() < n {
                return Err(format!(
                    "binary key-value answer cut short at byte {} (reading {what})",
                    bytes.len() - rest.len()
                ));
            }
            let (head, tail) = rest.split_at(n);
            rest = tail;
            Ok(head)
        };
        let u32_at = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("four bytes")) as usize;
        let count = u32_at(take(4, "the count")?);
        let mut values = Vec::with_capacity(count.min(bytes.len()));
        for i in 0..count {
            let value = match take(1, "a marker")?[0] {
                0 => None,
                1 => {
                    let len = u32_at(take(4, "a length")?);
                    Some(take(len, "a value")?.to_vec())
                }
                other => {
                    return Err(format!(
                        "binary key-value answer: value {i} has marker {other}"
                    ));
                }
            };
            values.push(value);
        }
        if !rest.is_empty() {
            return Err(format!(
                "binary key-value answer: {} bytes after its {count} values",
                rest.len()
            ));
        }
        Ok(KvValues { values })
    }
}

/// A length in the binary form: values are bounded far below 4 GiB ([`crate::kv::MAX_VALUE_BYTES`]).
fn binary_len(n: usize) -> u32 {
    u32::try_from(n).expect("a key-value length fits in 32 bits")
}

/// `POST /v1/kv/list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvList {
    pub bucket: String,
    pub cursor: Option<String>,
    pub limit: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvKeys {
    pub keys: Vec<String>,
    pub cursor: Option<String>,
}

/// `POST /v1/hosts/register` answers with the host's name as registered.
pub type RegisterRequest = HostInfo;

mod opt_values {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::kv::b64;

    pub fn serialize<S: Serializer>(v: &[Option<Vec<u8>>], s: S) -> Result<S::Ok, S::Error> {
        let encoded: Vec<Option<String>> =
            v.iter().map(|o| o.as_deref().map(b64::encode)).collect();
        encoded.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Option<Vec<u8>>>, D::Error> {
        Vec::<Option<String>>::deserialize(d)?
            .into_iter()
            .map(|o| {
                o.map(|t| b64::decode(&t))
                    .transpose()
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{KvValues, LogQuery};

    #[test]
    fn binary_key_values_read_back_and_bad_ones_are_refused() {
        let v = KvValues {
            values: vec![
                Some(b"ledger".to_vec()),
                None,
                Some(Vec::new()),
                Some(vec![0, 255]),
            ],
        };
        let bytes = v.to_binary();
        assert_eq!(KvValues::from_binary(&bytes).unwrap(), v);
        assert_eq!(
            KvValues::from_binary(&KvValues { values: vec![] }.to_binary()).unwrap(),
            KvValues { values: vec![] }
        );
        for cut in 0..bytes.len() {
            let e = KvValues::from_binary(&bytes[..cut]).unwrap_err();
            assert!(e.contains("cut short"), "{cut}: {e}");
        }
        let mut longer = bytes.clone();
        longer.push(7);
        assert!(
            KvValues::from_binary(&longer)
                .unwrap_err()
                .contains("1 bytes after its 4 values")
        );
        let mut marked = bytes;
        marked[4] = 9;
        assert!(
            KvValues::from_binary(&marked)
                .unwrap_err()
                .contains("value 0 has marker 9")
        );
        // A count far beyond the body is refused, not allocated.
        let huge = [255u8, 255, 255, 255];
        assert!(
            KvValues::from_binary(&huge)
                .unwrap_err()
                .contains("cut short")
        );
    }

    #[test]
    fn a_log_query_reads_back_what_it_writes_and_refuses_bad_values() {
        let q = LogQuery {
            tail: Some(5),
            since: Some(17),
            pod: Some("pay-r1-1".into()),
            follow: true,
        };
        assert_eq!(q.to_query(), "tail=5&since=17&pod=pay-r1-1&follow=1");
        assert_eq!(LogQuery::parse(&q.to_query()), Ok(q));
        assert_eq!(LogQuery::default().to_query(), "");
        assert_eq!(LogQuery::parse("other=1"), Ok(LogQuery::default()));
        assert!(
            LogQuery::parse("since=yesterday")
                .unwrap_err()
                .contains("since")
        );
        assert!(LogQuery::parse("pod=../x").unwrap_err().contains("pod"));
        assert!(LogQuery::parse("tail=-1").unwrap_err().contains("tail"));
    }
}
