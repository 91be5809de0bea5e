//! The ingress every host runs: it routes a request by the app's route (path prefix and
//! optional host name) to a pod of the app — a local one first, otherwise it proxies the
//! request to another host's ingress that runs one.
//!
//! The routing table is rebuilt whole by the agent whenever the controller's view
//! changes, and swapped in; requests read it without waiting on the agent. A proxied
//! request carries [`HOP`] with the cluster's read key (a hop without it is a client's
//! forgery and is ignored), and a request that already hopped is never proxied again,
//! so stale tables on two hosts cannot bounce a request between them. A host whose
//! table is newer — the pod the sender chose has stopped — answers [`NOT_RUN`], and the
//! sender tries another host, or waits for a newer table of its own.
//!
//! The activator: a request for an app with no running pod anywhere (scaled to zero, or
//! not started yet) is held in a bounded per-app queue, the agent is told at once (it
//! asks the controller to scale the app from zero, with the first pod here), and every
//! held request goes on the moment a new table has a pod for it. A request that waits
//! longer than the activator's patience, or finds the queue full, gets 503 with
//! `Retry-After`; none is dropped silently.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use bytes::{Bytes, BytesMut};
use dabba_client::transport::{Body, BoxError, HttpClient, send_streamed, whole};
use dabba_spec::api::{RegionStateView, RouteEntry};
use dabba_spec::regions::Degraded;
use dabba_spec::resources::{ResourceKey, Route};
use dabba_spec::rollout::{PREVIEW_HEADER, Sticky};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::function::{HttpFunction, HttpResponse, error_response};
use crate::limiter::Limiter;
use crate::peer::PeerReads;
use crate::reachability::ControlPlane;
use crate::server::Handler;

/// Every ingress answers its region's health here (apps may not route under `/.dabba`).
pub const HEALTH_PATH: &str = "/.dabba/health";
/// Marks a request proxied from another host's ingress.
pub const HOP: &str = "x-dabba-hop";
/// On the answer to a proxied request: this host ran nothing for it — it runs no pod of
/// the app (the sender's table is older than this host's pods), has no route for it, or
/// is cut off and refuses — so the sender tries another host. A drain or a scale-in
/// stops pods before every other host's table says so; without this, requests proxied
/// in that window would fail although other hosts could serve them.
pub const NOT_RUN: &str = "x-dabba-not-run";
/// On a response: the revision that answered. On a proxied request: the revision the
/// first host chose, which the next one serves.
pub const REVISION: &str = "x-dabba-revision";
/// A request body up to this size is read before it is proxied, so an attempt that
/// fails can be made again with it; a larger one streams through.
pub const REPLAY_BUFFER: usize = 64 << 10;
/// How long a proxied request may take until its answer begins.
const PROXY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a host this ingress could not reach gets no proxied requests (as a service
/// mesh ejects an outlier): long enough to ride out the controllers noticing the host
/// is gone, short enough that a host back from a restart soon gets requests again.
const EJECT_FOR: Duration = Duration::from_secs(10);

/// At most this many hosts are tried for one request that none of them received.
const MAX_TRIES: usize = 4;

/// The first pause before asking again hosts that all answered [`NOT_RUN`] (doubling,
/// to 8 times this), unless this host's table changes first.
const NOT_RUN_PAUSE: Duration = Duration::from_millis(25);

/// A pod this host runs.
pub struct LocalPod {
    pub key: ResourceKey,
    pub revision: u64,
    pub function: HttpFunction,
}

/// Where requests go: every app's route (and preview route), and the pods of each app
/// on this host by revision.
#[derive(Default)]
pub struct RoutingTable {
    entries: Vec<RouteEntry>,
    /// Every route and preview route, most specific first: the route, its entry, and
    /// whether it is a preview.
    rules: Vec<(Route, usize, bool)>,
    by_app: HashMap<ResourceKey, usize>,
    /// By app, then revision: the local pods.
    local: HashMap<ResourceKey, BTreeMap<u64, Vec<Arc<LocalPod>>>>,
    /// By app with a canary: the weighted picker (kept across tables while the weight
    /// stays, so the split stays exact).
    pickers: HashMap<ResourceKey, Arc<Picker>>,
    /// The region of every Ready host, by ingress address.
    host_regions: HashMap<String, String>,
    /// Apps placed across regions: where they serve from, and what they do when this
    /// region is cut off.
    region_states: HashMap<ResourceKey, RegionStateView>,
}

impl RoutingTable {
    pub fn new(routes: Vec<RouteEntry>, pods: Vec<(ResourceKey, Arc<LocalPod>)>) -> RoutingTable {
        let mut rules = Vec::new();
        let mut by_app = HashMap::new();
        let mut pickers = HashMap::new();
        for (i, r) in routes.iter().enumerate() {
            rules.push((r.route.clone(), i, false));
            if let Some(p) = r.split.as_ref().and_then(|s| s.preview.clone()) {
                rules.push((p, i, true));
            }
            by_app.insert(r.key(), i);
            if let Some(split) = &r.split {
                pickers.insert(r.key(), Arc::new(Picker::new(split.canary, split.weight)));
            }
        }
        rules.sort_by_key(|(route, _, _)| std::cmp::Reverse(route.specificity()));
        let mut local: HashMap<ResourceKey, BTreeMap<u64, Vec<Arc<LocalPod>>>> = HashMap::new();
        for (app, pod) in pods {
            local
                .entry(app)
                .or_default()
                .entry(pod.revision)
                .or_default()
                .push(pod);
        }
        for list in local.values_mut().flat_map(|by_rev| by_rev.values_mut()) {
            list.sort_by(|a, b| a.key.cmp(&b.key));
        }
        RoutingTable {
            entries: routes,
            rules,
            by_app,
            local,
            pickers,
            host_regions: HashMap::new(),
            region_states: HashMap::new(),
        }
    }

    /// The table with the cluster's regions: where each host is, and where each app
    /// placed across regions serves from. This host's pods of an app that no longer
    /// serves from `own_region` take no requests.
    pub fn with_regions(
        mut self,
        own_region: &str,
        host_regions: BTreeMap<String, String>,
        states: Vec<RegionStateView>,
    ) -> RoutingTable {
        self.host_regions = host_regions
            .into_iter()
            .map(|(addr, region)| (addr.trim_end_matches('/').to_string(), region))
            .collect();
        self.region_states = states.into_iter().map(|v| (v.app.clone(), v)).collect();
        let failed_here: Vec<ResourceKey> = self
            .region_states
            .values()
            .filter(|v| v.failed.iter().any(|r| r == own_region))
            .map(|v| v.app.clone())
            .collect();
        for app in failed_here {
            self.local.remove(&app);
        }
        self
    }

    /// The route a request for `host` and `path` takes, and whether it came by the
    /// app's preview route.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<(&RouteEntry, bool)> {
        self.rules
            .iter()
            .find(|(r, _, _)| r.matches(host, path))
            .map(|(_, i, preview)| (&self.entries[*i], *preview))
    }

    /// The local pods of `app` of `revision` (`None`: of the newest revision here).
    pub fn local_pods(&self, app: &ResourceKey, revision: Option<u64>) -> &[Arc<LocalPod>] {
        let Some(by_rev) = self.local.get(app) else {
            return &[];
        };
        let pods = match revision {
            Some(r) => by_rev.get(&r),
            None => by_rev.values().next_back(),
        };
        pods.map_or(&[], Vec::as_slice)
    }

    /// The route entry of `app`.
    fn entry(&self, app: &ResourceKey) -> Option<&RouteEntry> {
        self.by_app.get(app).map(|i| &self.entries[*i])
    }

    /// Keeps the pickers of `old` whose canary and weight did not change.
    fn carry_pickers(&mut self, old: &RoutingTable) {
        for (app, picker) in self.pickers.iter_mut() {
            if let Some(p) = old.pickers.get(app)
                && (p.canary, p.weight) == (picker.canary, picker.weight)
            {
                *picker = p.clone();
            }
        }
    }
}

/// The exact weighted split: request number `n` of an app on this host goes to the
/// canary when `⌊(n+1)·w/100⌋ > ⌊n·w/100⌋`. Every 100 consecutive requests send exactly
/// `w` to the canary, spread evenly (for 5%: every 20th), so any 1,000 consecutive
/// requests are within one request of the weight.
pub struct Picker {
    canary: u64,
    weight: u32,
    n: AtomicU64,
}

impl Picker {
    fn new(canary: u64, weight: u32) -> Picker {
        Picker {
            canary,
            weight: weight.min(100),
            n: AtomicU64::new(0),
        }
    }

    /// Whether the next request goes to the canary.
    pub fn canary(&self) -> bool {
        let n = self.n.fetch_add(1, Ordering::Relaxed) % 100;
        let w = u64::from(self.weight);
        (n + 1) * w / 100 > n * w / 100
    }
}

/// Where one request goes: a revision (`None`: the newest running), and a cookie to set
/// when the request was made sticky by one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub revision: Option<u64>,
    pub set_cookie: Option<String>,
}

/// The revision a request for `route` goes to (`spec/rollouts.md`, "Routing");
/// `header` reads a request header by name, `preview` says the request came by the
/// preview route.
pub fn choose<'a>(
    route: &RouteEntry,
    picker: Option<&Picker>,
    preview: bool,
    header: impl Fn(&str) -> Option<&'a str>,
) -> Choice {
    let to = |revision| Choice {
        revision: Some(revision),
        set_cookie: None,
    };
    // A request another host proxied keeps the revision that host chose, if it is
    // one this route serves now.
    let proxied: Option<u64> = header(HOP)
        .and(header(REVISION))
        .and_then(|v| v.parse().ok());
    if let Some(r) = proxied
        && (Some(r) == route.serving || route.split.as_ref().is_some_and(|s| s.canary == r))
    {
        return to(r);
    }
    let (Some(split), Some(stable)) = (&route.split, route.serving) else {
        return Choice {
            revision: route.serving,
            set_cookie: None,
        };
    };
    let wants_preview = split.preview.is_some()
        && header(PREVIEW_HEADER).is_some_and(|v| !matches!(v.trim(), "" | "0" | "false"));
    if preview || wants_preview {
        return to(split.canary);
    }
    if split
        .header_route
        .as_ref()
        .is_some_and(|h| h.matches(&header))
    {
        return to(split.canary);
    }
    let by_weight = || {
        if picker.is_some_and(Picker::canary) {
            split.canary
        } else {
            stable
        }
    };
    match &split.sticky {
        Some(Sticky {
            header: Some(name), ..
        }) => match header(name) {
            // A user's bucket: below the weight, the canary. As the weight rises a user
            // moves once, to the canary, and never back (unless it is aborted).
            Some(user) if fnv1a(user.as_bytes()) % 100 < u64::from(split.weight) => {
                to(split.canary)
            }
            Some(_) => to(stable),
            None => to(by_weight()),
        },
        Some(Sticky {
            cookie: Some(name), ..
        }) => {
            let had = header("cookie")
                .and_then(|c| cookie(c, name))
                .and_then(|v| v.parse().ok());
            match had {
                Some(r) if r == stable || (r == split.canary && split.weight > 0) => to(r),
                _ => {
                    let revision = by_weight();
                    Choice {
                        revision: Some(revision),
                        set_cookie: Some(format!(
                            "{name}={revision}; Path=/; HttpOnly; SameSite=Lax"
                        )),
                    }
                }
            }
        }
        _ => to(by_weight()),
    }
}

/// `path` (with its query) moved from under prefix `from` to under prefix `to`:
/// `/search-preview/q?x=1` from `/search-preview` to `/search` is `/search/q?x=1`.
fn rewrite(path: &str, from: &str, to: &str) -> String {
    let rest = path
        .strip_prefix(from.trim_end_matches('/'))
        .unwrap_or(path);
    let to = to.trim_end_matches('/');
    let root = if to.is_empty() { "/" } else { to };
    match rest {
        "" => root.to_string(),
        r if r.starts_with('?') => format!("{root}{r}"),
        r => format!("{to}{r}"),
    }
}

/// The value of cookie `name` in a `Cookie` header.
fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// FNV-1a: a stable hash, the same on every host and in every version.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// An app the activator holds requests for, reported to the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demand {
    pub app: ResourceKey,
    /// Requests held for it when the demand was sent.
    pub held: u32,
}

/// How the activator holds requests.
#[derive(Debug, Clone, Copy)]
pub struct ActivatorOptions {
    /// Requests held per app; more get 503 at once.
    pub queue_depth: u32,
    /// How long a request is held before it gets 503.
    pub patience: Duration,
}

impl Default for ActivatorOptions {
    fn default() -> Self {
        ActivatorOptions {
            queue_depth: 1000,
            patience: Duration::from_secs(10),
        }
    }
}

struct Activator {
    options: ActivatorOptions,
    /// Requests held, by app.
    held: Mutex<HashMap<ResourceKey, u32>>,
    demand: mpsc::UnboundedSender<Demand>,
}

/// One held request; leaving the queue (any way) releases its place.
struct Place<'a> {
    activator: &'a Activator,
    app: ResourceKey,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let mut held = self.activator.held.lock().expect("activator lock");
        if let Some(n) = held.get_mut(&self.app) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.app);
            }
        }
    }
}

pub struct Ingress {
    table: RwLock<Arc<RoutingTable>>,
    /// Bumped with every new table, for held requests to wait on.
    generation: watch::Sender<u64>,
    activator: Activator,
    /// This host's own ingress address, never proxied to.
    own_address: String,
    client: HttpClient,
    turn: AtomicUsize,
    /// This host's region, and whether it reaches a majority of controllers.
    control_plane: Arc<ControlPlane>,
    /// Measured round trips to other regions, in ms (the agent probes them).
    region_rtts: RwLock<HashMap<String, f64>>,
    /// Hosts a proxied request failed to reach, and until when they are skipped.
    ejected: Mutex<HashMap<String, std::time::Instant>>,
    /// What this host answers its peers (logs, cached components), in a cluster.
    peer: Option<Arc<PeerReads>>,
    /// The apps' rate limits, this ingress's share.
    limiter: Limiter,
}

impl Ingress {
    /// An ingress, and the stream of demand its activator reports (for the agent).
    pub fn new(
        own_address: &str,
        activator: ActivatorOptions,
        control_plane: Arc<ControlPlane>,
    ) -> (Ingress, mpsc::UnboundedReceiver<Demand>) {
        let (demand, demands) = mpsc::unbounded_channel();
        let ingress = Ingress {
            table: RwLock::new(Arc::new(RoutingTable::default())),
            generation: watch::Sender::new(0),
            activator: Activator {
                options: activator,
                held: Mutex::new(HashMap::new()),
                demand,
            },
            own_address: own_address.trim_end_matches('/').to_string(),
            client: dabba_client::transport::client(),
            turn: AtomicUsize::new(0),
            control_plane,
            region_rtts: RwLock::new(HashMap::new()),
            ejected: Mutex::new(HashMap::new()),
            limiter: Limiter::new(),
            peer: None,
        };
        (ingress, demands)
    }

    /// Answers this host's logs and cached components to the controllers and hosts
    /// that show the read key.
    pub fn with_peer_reads(mut self, peer: Arc<PeerReads>) -> Ingress {
        self.peer = Some(peer);
        self
    }

    pub fn replace_table(&self, mut table: RoutingTable) {
        if tracing::enabled!(tracing::Level::DEBUG) {
            let local: Vec<String> = table
                .local
                .iter()
                .map(|(app, by_rev)| {
                    format!("{app}: {}", by_rev.values().map(Vec::len).sum::<usize>())
                })
                .collect();
            let endpoints: Vec<String> = table
                .entries
                .iter()
                .map(|r| format!("{}: {:?}", r.key(), r.endpoints))
                .collect();
            tracing::debug!(?local, ?endpoints, "new routing table");
        }
        let mut current = self.table.write().expect("routing table lock");
        table.carry_pickers(&current);
        *current = Arc::new(table);
        drop(current);
        self.generation.send_modify(|g| *g += 1);
    }

    /// The round trip to `region` the agent measured.
    pub fn set_region_rtt(&self, region: &str, rtt: Option<Duration>) {
        let mut rtts = self.region_rtts.write().expect("rtt lock");
        match rtt {
            Some(d) => rtts.insert(region.to_string(), d.as_secs_f64() * 1000.0),
            None => rtts.remove(region),
        };
    }

    pub fn region(&self) -> &str {
        self.control_plane.region()
    }

    pub fn control_plane(&self) -> &Arc<ControlPlane> {
        &self.control_plane
    }

    /// Of the hosts `candidates`, the one to proxy to: in this region if one is, else in
    /// the region with the shortest measured round trip (one not measured comes last),
    /// round robin among them.
    fn nearest<'a>(&self, table: &RoutingTable, candidates: &[&'a String]) -> &'a String {
        let region_of = |e: &str| {
            table
                .host_regions
                .get(e.trim_end_matches('/'))
                .map_or("", String::as_str)
        };
        let own = self.region();
        let rtts = self.region_rtts.read().expect("rtt lock");
        let rank = |r: &str| -> (u8, u64) {
            if r == own {
                (0, 0)
            } else {
                match rtts.get(r) {
                    Some(ms) => (1, (ms * 1000.0) as u64),
                    None => (2, 0),
                }
            }
        };
        let best = candidates
            .iter()
            .map(|e| (rank(region_of(e)), region_of(e)))
            .min()
            .map(|(_, r)| r.to_string())
            .unwrap_or_default();
        let same: Vec<&&String> = candidates.iter().filter(|e| region_of(e) == best).collect();
        same[self.next_turn() % same.len()]
    }

    /// `GET /.dabba/health` (or `?app=ns/name`): whether this host's region serves — for
    /// a GSLB or DNS health check to steer clients by (`spec/regions.md`).
    fn health(&self, req: &http::Request<Incoming>) -> HttpResponse {
        let table = self.table();
        let app = req
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("app=")))
            .map(|a| {
                let (ns, name) = a.split_once('/').unwrap_or(("default", a));
                ResourceKey::new(ns, name)
            });
        let region = self.region();
        let reached = self.control_plane.check();
        let (serves, why) = match (&reached, &app) {
            (Err(e), _) => (false, e.clone()),
            (Ok(()), None) => (true, String::new()),
            (Ok(()), Some(a)) => match table.region_states.get(a) {
                Some(v) if v.failed.iter().any(|r| r == region) => (
                    false,
                    format!(
                        "{a} failed over from {region} to {}",
                        v.serving.as_deref().unwrap_or("no region")
                    ),
                ),
                _ if table.entry(a).is_none() => (false, format!("no app {a}")),
                _ => (true, String::new()),
            },
        };
        let body = serde_json::json!({
            "region": region,
            "host": self.own_address,
            "control_plane": reached.is_ok(),
            "serves": serves,
            "reason": why,
        });
        http::Response::builder()
            .status(if serves { 200 } else { 503 })
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(whole(body.to_string()))
            .expect("a valid response")
    }

    /// Requests held now, by app.
    pub fn held(&self) -> Vec<Demand> {
        let held = self.activator.held.lock().expect("activator lock");
        held.iter()
            .map(|(app, n)| Demand {
                app: app.clone(),
                held: *n,
            })
            .collect()
    }

    /// Holds a request for an app with no pod until a table has one, or the patience
    /// runs out. Returns the table to serve it from, or the answer to give.
    async fn hold(
        &self,
        key: &ResourceKey,
        revision: Option<u64>,
    ) -> Result<Arc<RoutingTable>, HttpResponse> {
        let mut generation = self.generation.subscribe();
        let first = {
            let mut held = self.activator.held.lock().expect("activator lock");
            let n = held.entry(key.clone()).or_insert(0);
            if *n >= self.activator.options.queue_depth {
                return Err(unavailable(
                    key,
                    "no_ready_pod",
                    "is starting and its activation queue is full",
                ));
            }
            *n += 1;
            *n == 1
        };
        let _place = Place {
            activator: &self.activator,
            app: key.clone(),
        };
        if first {
            let _ = self.activator.demand.send(Demand {
                app: key.clone(),
                held: 1,
            });
        }
        let deadline = tokio::time::Instant::now() + self.activator.options.patience;
        loop {
            let table = self.table();
            if !table.local_pods(key, revision).is_empty() || self.remote(&table, key, revision) {
                return Ok(table);
            }
            match tokio::time::timeout_at(deadline, generation.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    return Err(unavailable(
                        key,
                        "no_ready_pod",
                        "did not get a running pod in time",
                    ));
                }
            }
        }
    }

    /// Whether another host runs a pod of the app (of `revision`, if given).
    fn remote(&self, table: &RoutingTable, app: &ResourceKey, revision: Option<u64>) -> bool {
        table
            .entry(app)
            .is_some_and(|r| !self.others(r, revision).is_empty())
    }

    /// The other hosts running a pod of the route's app (of `revision`, if given).
    fn others<'a>(&self, route: &'a RouteEntry, revision: Option<u64>) -> Vec<&'a String> {
        let endpoints = match (&route.split, revision) {
            (Some(split), Some(r)) if r == split.canary => &split.canary_endpoints,
            _ => &route.endpoints,
        };
        let now = std::time::Instant::now();
        let ejected = self.ejected.lock().expect("ejected lock");
        endpoints
            .iter()
            .filter(|e| e.trim_end_matches('/') != self.own_address)
            .filter(|e| ejected.get(e.as_str()).is_none_or(|until| *until <= now))
            .collect()
    }

    /// Skips `endpoint` for [`EJECT_FOR`] (it could not be reached).
    fn eject(&self, endpoint: &str) {
        let now = std::time::Instant::now();
        let mut ejected = self.ejected.lock().expect("ejected lock");
        ejected.retain(|_, until| *until > now);
        ejected.insert(endpoint.to_string(), now + EJECT_FOR);
    }

    pub fn table(&self) -> Arc<RoutingTable> {
        self.table.read().expect("routing table lock").clone()
    }

    fn next_turn(&self) -> usize {
        self.turn.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends a request to another host's ingress; the answer streams back.
    async fn proxy(
        &self,
        endpoint: &str,
        revision: Option<u64>,
        parts: &http::request::Parts,
        body: Body,
    ) -> Result<HttpResponse, dabba_client::transport::SendError> {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut out = http::Request::builder()
            .method(parts.method.clone())
            .uri(format!("{endpoint}{path}"));
        for (k, v) in &parts.headers {
            if k != http::header::CONTENT_LENGTH
                && k != http::header::TRANSFER_ENCODING
                && k != http::header::CONNECTION
                && k != REVISION
            {
                out = out.header(k, v);
            }
        }
        if let Some(r) = revision {
            out = out.header(REVISION, r);
        }
        out = out.header(HOP, "1");
        if let Some(peer) = &self.peer {
            out = out.header(dabba_spec::api::READ_KEY_HEADER, peer.key());
        }
        let Ok(out) = out.body(body) else {
            return Ok(error_response(
                400,
                "bad_request",
                "the request cannot be proxied",
                None,
            ));
        };
        let url = out.uri().to_string();
        let resp = tokio::time::timeout(PROXY_TIMEOUT, send_streamed(&self.client, out))
            .await
            .map_err(|_| dabba_client::transport::SendError::Timeout {
                url,
                timeout: PROXY_TIMEOUT,
            })??;
        Ok(resp.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed()))
    }
}

/// A request body on its way to another host. One of at most [`REPLAY_BUFFER`] bytes is
/// held whole, so every attempt sends it again. A larger one streams from the client to
/// the host, never held: an attempt that failed before it read any of it (the host
/// could not be reached) leaves it for the next; once an attempt has started on it,
/// there is no other.
enum Outgoing {
    Whole(Bytes),
    Streamed(Arc<Mutex<Unsent>>),
}

/// A streamed body: what was read to see it is large, the rest, and whether an attempt
/// has begun reading it.
struct Unsent {
    head: Option<Bytes>,
    rest: Incoming,
    started: bool,
}

/// The body of one attempt: the whole, or reading from the shared [`Unsent`].
enum Attempt {
    Whole(Option<Bytes>),
    Streamed(Arc<Mutex<Unsent>>),
}

impl http_body::Body for Attempt {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let unsent = match self.get_mut() {
            Attempt::Whole(bytes) => {
                return std::task::Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b))));
            }
            Attempt::Streamed(unsent) => unsent,
        };
        let mut unsent = unsent.lock().unwrap_or_else(|e| e.into_inner());
        unsent.started = true;
        if let Some(head) = unsent.head.take() {
            return std::task::Poll::Ready(Some(Ok(Frame::data(head))));
        }
        std::pin::Pin::new(&mut unsent.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Attempt::Whole(None))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Attempt::Whole(b) => {
                http_body::SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
            }
            Attempt::Streamed(_) => http_body::SizeHint::default(),
        }
    }
}

impl Outgoing {
    /// Reads up to [`REPLAY_BUFFER`] bytes of `body`: all of it, or enough to know it is
    /// larger (then it streams).
    async fn read(mut body: Incoming) -> Result<Outgoing, hyper::Error> {
        let mut head = BytesMut::new();
        loop {
            match body.frame().await {
                None => return Ok(Outgoing::Whole(head.freeze())),
                Some(Err(e)) => return Err(e),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        head.extend_from_slice(&data);
                    }
                }
            }
            if head.len() > REPLAY_BUFFER {
                return Ok(Outgoing::Streamed(Arc::new(Mutex::new(Unsent {
                    head: Some(head.freeze()),
                    rest: body,
                    started: false,
                }))));
            }
        }
    }

    /// The body for the next attempt; `None` once a streamed body has been (partly)
    /// sent.
    fn attempt(&self) -> Option<Attempt> {
        match self {
            Outgoing::Whole(b) => Some(Attempt::Whole(Some(b.clone()))),
            Outgoing::Streamed(unsent) => {
                let started = unsent.lock().unwrap_or_else(|e| e.into_inner()).started;
                (!started).then(|| Attempt::Streamed(unsent.clone()))
            }
        }
    }
}

/// The answer when a streamed body went to a host that did not serve it: it is gone.
fn body_spent(app: &ResourceKey) -> HttpResponse {
    let mut resp = error_response(
        503,
        "upstream_unavailable",
        &format!(
            "app {app}: the host this request was sent to could not serve it, and its body \
             (over {REPLAY_BUFFER} bytes, streamed) cannot be sent again; retry"
        ),
        None,
    );
    resp.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
    resp
}

/// Marks an answer to a proxied request as [`NOT_RUN`].
fn not_run(mut resp: HttpResponse) -> HttpResponse {
    resp.headers_mut()
        .insert(NOT_RUN, http::HeaderValue::from_static("1"));
    resp
}

fn unavailable(app: &ResourceKey, code: &str, why: &str) -> HttpResponse {
    let mut resp = error_response(503, code, &format!("app {app} {why}; retry shortly"), None);
    resp.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
    resp
}

impl Handler for Ingress {
    async fn call(&self, req: http::Request<Incoming>) -> HttpResponse {
        let table = self.table();
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string);
        if req.uri().path() == HEALTH_PATH {
            return self.health(&req);
        }
        if let Some(peer) = &self.peer
            && PeerReads::handles(req.uri().path())
        {
            let (parts, _) = req.into_parts();
            return peer.answer(&parts).await;
        }
        // A hop is believed only with the cluster's read key: a client cannot make a
        // request look proxied (to pick a revision, or to skip the activator). What
        // marks hops never reaches a guest.
        let hopped = req.headers().contains_key(HOP)
            && self.peer.as_ref().is_some_and(|p| p.vouches(req.headers()));
        let mut req = req;
        let headers = req.headers_mut();
        headers.remove(dabba_spec::api::READ_KEY_HEADER);
        if !hopped {
            headers.remove(HOP);
            headers.remove(REVISION);
        }
        let Some((route, preview)) = table.route(host.as_deref(), req.uri().path()) else {
            if hopped {
                return not_run(error_response(
                    503,
                    "no_route",
                    &format!("no app serves {} on this host", req.uri().path()),
                    None,
                ));
            }
            return error_response(
                404,
                "no_route",
                &format!("no app serves {}", req.uri().path()),
                None,
            );
        };
        let app = route.key();
        // Over the app's rate limit: refused before anything is done for it. (Counted
        // where the client came in: a proxied request was counted by the first host.)
        if !hopped
            && let Some(limit) = &route.limit
            && let Err(wait) = self.limiter.admit(&app, limit, req.headers())
        {
            let mut resp = error_response(
                429,
                "rate_limited",
                &format!(
                    "{app} takes at most {} requests a second; retry later",
                    limit.app.requests_per_second
                ),
                None,
            );
            resp.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from(crate::limiter::retry_after(wait)),
            );
            return resp;
        }
        if let Some(v) = table.region_states.get(&app)
            && v.degraded == Degraded::Refuse
            && let Err(why) = self.control_plane.check()
        {
            // Cut off from the majority: refuse now, so the client goes elsewhere.
            tracing::debug!(%app, %why, hopped, "refused: cut off from the controllers");
            let refused = unavailable(&app, "region_isolated", &format!("is refused here: {why}"));
            return if hopped { not_run(refused) } else { refused };
        }
        let choice = choose(
            route,
            table.pickers.get(&app).map(|p| &**p),
            preview,
            |name| req.headers().get(name).and_then(|v| v.to_str().ok()),
        );
        let mut req = req;
        if preview && let Some(p) = route.split.as_ref().and_then(|s| s.preview.as_ref()) {
            // The preview answers as the app: under the app's own route.
            let from = req.uri().path_and_query().map_or("/", |p| p.as_str());
            if let Ok(uri) = rewrite(from, &p.prefix, &route.route.prefix).parse() {
                *req.uri_mut() = uri;
            }
        }
        let mut resp = self
            .serve(table.clone(), &app, choice.revision, hopped, req)
            .await;
        if let Some(c) = choice.set_cookie
            && let Ok(v) = http::HeaderValue::from_str(&c)
        {
            resp.headers_mut().append(http::header::SET_COOKIE, v);
        }
        resp
    }
}

impl Ingress {
    /// Serves a request for `app` with a pod of `revision` (`None`: the newest running):
    /// a local one, else another host's, else — for an app that scales from zero — it
    /// is held until one runs.
    async fn serve(
        &self,
        mut table: Arc<RoutingTable>,
        app: &ResourceKey,
        revision: Option<u64>,
        hopped: bool,
        req: http::Request<Incoming>,
    ) -> HttpResponse {
        if table.local_pods(app, revision).is_empty()
            && (hopped || !self.remote(&table, app, revision))
        {
            let autoscaled = table.entry(app).is_some_and(|r| r.autoscaled);
            if hopped {
                // The other host thought a pod runs here; it does not (any more).
                tracing::debug!(%app, ?revision, "proxied here, but no pod of it runs here");
                return not_run(unavailable(app, "no_ready_pod", "has no running pod here"));
            }
            if !autoscaled {
                return unavailable(app, "no_ready_pod", "has no running pod");
            }
            table = match self.hold(app, revision).await {
                Ok(t) => t,
                Err(resp) => return resp,
            };
        }
        let pods = table.local_pods(app, revision);
        if !pods.is_empty() {
            return self.run_on(pods, req).await;
        }
        // To another host: a small body is read first, so a request that host never
        // received can go to the next (a host that cannot be reached is skipped for a
        // while, and when none is left the request is held for a pod here); a large one
        // streams through.
        let (parts, body) = req.into_parts();
        let body = match Outgoing::read(body).await {
            Ok(b) => b,
            Err(e) => {
                return error_response(
                    400,
                    "bad_request",
                    &format!("reading the request body: {e}"),
                    None,
                );
            }
        };
        // Hosts that answered they run no pod of the app: one of the two tables is
        // behind — ours (the pod stopped; a newer table will say who runs it now) or
        // theirs (the pod started and the controllers listed it before that host's
        // table had it). So once every host named has answered so, they are asked again
        // when our table changes or after a short pause, until the patience runs out.
        let mut not_running: Vec<String> = Vec::new();
        let mut generation = self.generation.subscribe();
        let deadline = tokio::time::Instant::now() + self.activator.options.patience;
        let mut pause = NOT_RUN_PAUSE;
        // Hosts that could not be reached (a host that answered is not counted).
        let mut tries = 0;
        while tries < MAX_TRIES {
            let Some(route) = table.entry(app) else {
                return unavailable(app, "no_route", "was removed");
            };
            let mut others = self.others(route, revision);
            others.retain(|e| !not_running.contains(e));
            if others.is_empty() {
                if !not_running.is_empty() {
                    let now = tokio::time::Instant::now();
                    if now >= deadline {
                        return unavailable(app, "no_ready_pod", "has no running pod");
                    }
                    let wake = (now + pause).min(deadline);
                    if !matches!(
                        tokio::time::timeout_at(wake, generation.changed()).await,
                        Ok(Ok(()))
                    ) {
                        tokio::time::sleep_until(wake).await;
                    }
                    pause = (pause * 2).min(NOT_RUN_PAUSE * 8);
                    not_running.clear();
                    table = self.table();
                    let pods = table.local_pods(app, revision);
                    if !pods.is_empty() {
                        let Some(body) = body.attempt() else {
                            return body_spent(app);
                        };
                        let req = http::Request::from_parts(parts, body);
                        return self.run_on(pods, req).await;
                    }
                    continue;
                }
                if hopped || !route.autoscaled {
                    return unavailable(app, "no_ready_pod", "has no running pod");
                }
                table = match self.hold(app, revision).await {
                    Ok(t) => t,
                    Err(resp) => return resp,
                };
                let pods = table.local_pods(app, revision);
                if !pods.is_empty() {
                    let Some(body) = body.attempt() else {
                        return body_spent(app);
                    };
                    let req = http::Request::from_parts(parts, body);
                    return self.run_on(pods, req).await;
                }
                continue;
            }
            let endpoint = self.nearest(&table, &others).clone();
            let Some(attempt) = body.attempt() else {
                return body_spent(app);
            };
            let attempt = attempt.map_err(|e| Box::new(e) as BoxError).boxed();
            match self.proxy(&endpoint, revision, &parts, attempt).await {
                Ok(resp) if resp.headers().contains_key(NOT_RUN) => {
                    tracing::debug!(%endpoint, "host runs no pod of {app}: trying another");
                    not_running.push(endpoint);
                    table = self.table();
                }
                Ok(resp) => return resp,
                Err(e) => {
                    self.eject(&endpoint);
                    tries += 1;
                    if !e.never_sent() {
                        return error_response(
                            502,
                            "upstream_unreachable",
                            &format!("the host running this app did not answer: {e}"),
                            None,
                        );
                    }
                    tracing::debug!(%endpoint, error = %e, "host unreachable: trying another");
                    table = self.table();
                }
            }
        }
        unavailable(
            app,
            "upstream_unreachable",
            &format!("none of the {MAX_TRIES} hosts tried could be reached"),
        )
    }

    /// Runs the request on one of `pods` (this host's, of one app), in turn.
    async fn run_on<B>(&self, pods: &[Arc<LocalPod>], mut req: http::Request<B>) -> HttpResponse
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // What hosts tell each other stays between them.
        for internal in [HOP, REVISION] {
            req.headers_mut().remove(internal);
        }
        let pod = pods[self.next_turn() % pods.len()].clone();
        let mut resp = pod.function.handle(req).await;
        resp.headers_mut()
            .insert(REVISION, http::HeaderValue::from(pod.revision));
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dabba_spec::api::Split;
    use dabba_spec::rollout::{HeaderMatch, HeaderRoute};

    fn entry(app: &str, prefix: &str, host: Option<&str>) -> RouteEntry {
        RouteEntry {
            namespace: "default".into(),
            app: app.into(),
            route: Route {
                prefix: prefix.into(),
                host: host.map(str::to_string),
            },
            endpoints: vec![],
            autoscaled: false,
            serving: None,
            split: None,
            limit: None,
        }
    }

    /// `search` rolling revision 2 out over revision 1 at `weight`.
    fn canary(weight: u32) -> RouteEntry {
        let mut e = entry("search", "/search", None);
        e.serving = Some(1);
        e.split = Some(Split {
            canary: 2,
            canary_endpoints: vec!["http://h2:8080".into()],
            weight,
            header_route: None,
            sticky: None,
            preview: None,
        });
        e
    }

    fn no_headers(_: &str) -> Option<&'static str> {
        None
    }

    #[test]
    fn the_most_specific_route_wins() {
        let t = RoutingTable::new(
            vec![
                entry("root", "/", None),
                entry("pay", "/payments", None),
                entry("pay-eu", "/payments", Some("eu.example.com")),
                entry("refunds", "/payments/refunds", None),
            ],
            vec![],
        );
        let app = |host: Option<&str>, path: &str| t.route(host, path).map(|(r, _)| r.app.clone());
        assert_eq!(app(None, "/payments/p1").as_deref(), Some("pay"));
        assert_eq!(app(None, "/payments/refunds/1").as_deref(), Some("refunds"));
        assert_eq!(
            app(Some("eu.example.com:8080"), "/payments").as_deref(),
            Some("pay-eu")
        );
        assert_eq!(app(None, "/paymentsx").as_deref(), Some("root"));
        assert_eq!(app(None, "/").as_deref(), Some("root"));
    }

    #[test]
    fn no_route_matches_nothing() {
        let t = RoutingTable::new(vec![entry("pay", "/payments", None)], vec![]);
        assert!(t.route(None, "/search").is_none());
        assert!(
            t.local_pods(&ResourceKey::new("default", "pay"), None)
                .is_empty()
        );
    }

    #[test]
    fn the_weighted_split_is_exact_over_any_thousand_requests() {
        for weight in [0, 1, 5, 10, 25, 33, 50, 75, 99, 100] {
            let route = canary(weight);
            let picker = Picker::new(2, weight);
            let picks: Vec<bool> = (0..10_000)
                .map(|_| choose(&route, Some(&picker), false, no_headers).revision == Some(2))
                .collect();
            let total = picks.iter().filter(|c| **c).count();
            assert_eq!(total, weight as usize * 100, "weight {weight}");
            // Every window of 1,000 consecutive requests: within one request of it.
            let mut in_window = picks[..1000].iter().filter(|c| **c).count() as i64;
            for start in 1..=(picks.len() - 1000) {
                in_window += i64::from(picks[start + 999]) - i64::from(picks[start - 1]);
                let off = (in_window - i64::from(weight) * 10).abs();
                assert!(
                    off <= 1,
                    "weight {weight}: {in_window} of 1000 from {start}"
                );
            }
        }
    }

    #[test]
    fn a_picker_survives_a_new_table_unless_its_weight_changed() {
        let mut old = RoutingTable::new(vec![canary(50)], vec![]);
        let app = ResourceKey::new("default", "search");
        old.pickers[&app].canary();
        let mut same = RoutingTable::new(vec![canary(50)], vec![]);
        same.carry_pickers(&old);
        assert!(Arc::ptr_eq(&same.pickers[&app], &old.pickers[&app]));
        let mut other = RoutingTable::new(vec![canary(75)], vec![]);
        other.carry_pickers(&old);
        assert!(!Arc::ptr_eq(&other.pickers[&app], &old.pickers[&app]));
        old = other;
        assert_eq!(old.pickers[&app].weight, 75);
    }

    #[test]
    fn header_routes_and_previews_go_to_the_canary_whatever_the_weight() {
        let mut route = canary(0);
        route.split.as_mut().unwrap().header_route = Some(HeaderRoute {
            name: "beta".into(),
            matches: vec![HeaderMatch {
                header: "x-beta".into(),
                exact: Some("yes".into()),
                prefix: None,
                regex: None,
            }],
        });
        let picker = Picker::new(2, 0);
        let beta = |n: &str| (n == "x-beta").then_some("yes");
        assert_eq!(choose(&route, Some(&picker), false, beta).revision, Some(2));
        assert_eq!(
            choose(&route, Some(&picker), false, no_headers).revision,
            Some(1)
        );
        // The preview header counts only for a blue-green preview.
        let preview = |n: &str| (n == PREVIEW_HEADER).then_some("1");
        assert_eq!(
            choose(&route, Some(&picker), false, preview).revision,
            Some(1)
        );
        route.split.as_mut().unwrap().preview = Some(Route {
            prefix: "/search-preview".into(),
            host: None,
        });
        assert_eq!(
            choose(&route, Some(&picker), false, preview).revision,
            Some(2)
        );
        assert_eq!(
            choose(&route, Some(&picker), true, no_headers).revision,
            Some(2)
        );
        let t = RoutingTable::new(vec![route], vec![]);
        assert!(matches!(
            t.route(None, "/search-preview/q"),
            Some((_, true))
        ));
        assert!(matches!(t.route(None, "/search/q"), Some((_, false))));
    }

    #[test]
    fn a_preview_path_answers_under_the_apps_route() {
        let r = |p, from, to| rewrite(p, from, to);
        assert_eq!(
            r("/search-preview/q?x=1", "/search-preview", "/search"),
            "/search/q?x=1"
        );
        assert_eq!(
            r("/search-preview", "/search-preview", "/search"),
            "/search"
        );
        assert_eq!(
            r("/search-preview?q=1", "/search-preview", "/search"),
            "/search?q=1"
        );
        assert_eq!(r("/preview/x", "/preview", "/"), "/x");
        assert_eq!(r("/preview", "/preview/", "/"), "/");
    }

    #[test]
    fn a_proxied_request_keeps_its_revision_only_if_the_route_serves_it() {
        let route = canary(0);
        let picker = Picker::new(2, 0);
        let proxied = |rev: &'static str| {
            move |n: &str| match n {
                HOP => Some("1"),
                REVISION => Some(rev),
                _ => None,
            }
        };
        assert_eq!(
            choose(&route, Some(&picker), false, proxied("2")).revision,
            Some(2)
        );
        assert_eq!(
            choose(&route, Some(&picker), false, proxied("1")).revision,
            Some(1)
        );
        // An old revision (an aborted canary, a forged header): the route decides.
        assert_eq!(
            choose(&route, Some(&picker), false, proxied("7")).revision,
            Some(1)
        );
        // Without a hop the header means nothing.
        let forged = |n: &str| (n == REVISION).then_some("2");
        assert_eq!(
            choose(&route, Some(&picker), false, forged).revision,
            Some(1)
        );
    }

    #[test]
    fn a_sticky_user_stays_and_moves_at_most_once_as_the_weight_rises() {
        let users: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
        let mut before: Vec<Option<u64>> = vec![None; users.len()];
        let mut moved_back = 0;
        for weight in [5, 25, 50, 75] {
            let mut route = canary(weight);
            route.split.as_mut().unwrap().sticky = Some(Sticky {
                header: Some("x-user-id".into()),
                cookie: None,
            });
            let picker = Picker::new(2, weight);
            let mut on_canary = 0;
            for (i, user) in users.iter().enumerate() {
                let h = |n: &str| (n == "x-user-id").then_some(user.as_str());
                let first = choose(&route, Some(&picker), false, h).revision;
                // The same user, again and again: the same revision.
                for _ in 0..3 {
                    assert_eq!(choose(&route, Some(&picker), false, h).revision, first);
                }
                if before[i] == Some(2) && first == Some(1) {
                    moved_back += 1;
                }
                before[i] = first;
                on_canary += usize::from(first == Some(2));
            }
            // Users spread by hash: near the weight, not exact.
            let share = on_canary as f64 / users.len() as f64 * 100.0;
            assert!(
                (share - f64::from(weight)).abs() < 6.0,
                "{weight}%: {share}"
            );
        }
        assert_eq!(moved_back, 0);
    }

    #[test]
    fn a_sticky_cookie_is_set_once_and_then_followed() {
        let mut route = canary(50);
        route.split.as_mut().unwrap().sticky = Some(Sticky {
            header: None,
            cookie: Some("dabba-rev".into()),
        });
        let picker = Picker::new(2, 50);
        let first = choose(&route, Some(&picker), false, no_headers);
        let set = first.set_cookie.clone().expect("a cookie for a new user");
        let value = set.split(';').next().unwrap().to_string();
        let again = |c: &str| {
            let c = c.to_string();
            (0..10)
                .map(|_| {
                    choose(&route, Some(&picker), false, |n| {
                        (n == "cookie").then_some(c.as_str())
                    })
                })
                .collect::<Vec<_>>()
        };
        for c in again(&format!("theme=dark; {value}")) {
            assert_eq!(c.revision, first.revision);
            assert_eq!(c.set_cookie, None);
        }
        // A cookie naming a revision no longer rolled out is replaced.
        for c in again("dabba-rev=9") {
            assert!(c.set_cookie.is_some());
        }
    }
}

/// Proxying over real sockets: a host that cannot be reached is skipped.
#[cfg(test)]
mod proxy_tests {
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicUsize;

    use dabba_client::transport::send;
    use http_body_util::Full;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A stand-in for another host's ingress: answers every request `200 ok`, counting.
    async fn answering_host(count: Arc<AtomicUsize>) -> String {
        host_serving_from(std::time::Instant::now(), count, Arc::default()).await
    }

    /// A stand-in for a host whose pod enters its table at `ready`: until then it
    /// answers [`NOT_RUN`] (counted in `refused`), then `200 ok` (counted in `served`).
    async fn host_serving_from(
        ready: std::time::Instant,
        served: Arc<AtomicUsize>,
        refused: Arc<AtomicUsize>,
    ) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let (served, refused) = (served.clone(), refused.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut seen = Vec::new();
                    loop {
                        let Ok(n) = conn.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        // One request per read of a whole head (these have no body).
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            let reply: &[u8] = if std::time::Instant::now() < ready {
                                refused.fetch_add(1, Ordering::Relaxed);
                                b"HTTP/1.1 503 Service Unavailable\r\nx-dabba-not-run: 1\r\ncontent-length: 2\r\n\r\nno"
                            } else {
                                served.fetch_add(1, Ordering::Relaxed);
                                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                            };
                            if conn.write_all(reply).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        format!("http://{addr}")
    }

    /// An address nothing listens on.
    async fn dead_host() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        format!("http://{addr}")
    }

    /// The route of app `pay` at `/pay`, to `endpoints`.
    fn pay_route(endpoints: Vec<String>) -> RouteEntry {
        RouteEntry {
            namespace: "default".into(),
            app: "pay".into(),
            route: Route {
                prefix: "/pay".into(),
                host: None,
            },
            endpoints,
            autoscaled: false,
            serving: None,
            split: None,
            limit: None,
        }
    }

    /// A real ingress with no pods and `route` in its table, serving on a socket.
    async fn ingress_at(route: &RouteEntry, patience: Duration) -> (Arc<Ingress>, SocketAddr) {
        let (ingress, _demand) = Ingress::new(
            "http://127.0.0.1:1",
            ActivatorOptions {
                queue_depth: 10,
                patience,
            },
            Arc::new(ControlPlane::new("local", Duration::from_secs(60))),
        );
        ingress.replace_table(RoutingTable::new(vec![route.clone()], vec![]));
        // Every test ingress knows the same read key: their hops are believed.
        let dir = std::env::temp_dir().join("dabba-ingress-tests");
        let reads = PeerReads::new(
            crate::logs::LogService::new(crate::logs::LogDir::new(dir.clone(), 1 << 20), "h"),
            dir,
        );
        reads.set_key("test-read-key");
        let ingress = Arc::new(ingress.with_peer_reads(Arc::new(reads)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(crate::server::serve(
            listener,
            ingress.clone(),
            std::future::pending(),
        ));
        (ingress, addr)
    }

    /// `GET /pay` from the ingress at `front`.
    async fn get(front: SocketAddr) -> http::Response<Bytes> {
        post(front, Bytes::new()).await
    }

    /// A request to `/pay` at the ingress at `front`, with `body` (none: a `GET`).
    async fn post(front: SocketAddr, body: Bytes) -> http::Response<Bytes> {
        let method = if body.is_empty() { "GET" } else { "POST" };
        let req = http::Request::builder()
            .method(method)
            .uri(format!("http://{front}/pay"))
            .body(Full::new(body))
            .unwrap();
        send(
            &dabba_client::transport::client(),
            req,
            Duration::from_secs(30),
        )
        .await
        .unwrap()
    }

    /// A stand-in for another host's ingress that reads each request's body as it
    /// comes and answers its size and digest.
    struct Digesting;

    impl Handler for Digesting {
        async fn call(&self, req: http::Request<Incoming>) -> HttpResponse {
            let mut body = req.into_body();
            let (mut hasher, mut size) = (dabba_spec::Digest::hasher(), 0);
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    size += data.len();
                    hasher.update(&data);
                }
            }
            http::Response::new(whole(format!("{size} {}", hasher.finish())))
        }
    }

    async fn digesting_host() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(crate::server::serve(
            listener,
            Arc::new(Digesting),
            std::future::pending(),
        ));
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_body_larger_than_any_buffer_streams_through_and_outlives_a_host_that_cannot_be_reached()
     {
        let live = digesting_host().await;
        let dead = dead_host().await;
        let route = pay_route(vec![dead.clone(), live]);
        let (ingress, front) = ingress_at(&route, Duration::from_secs(10)).await;
        // 20 MiB: more than the ingress ever held for a proxied body (16 MiB).
        let big: Bytes = (0..20u32 << 20).map(|i| (i % 251) as u8).collect();
        let small = big.slice(..1000);
        for (i, body) in [&big, &big, &small, &big, &small].into_iter().enumerate() {
            let resp = post(front, body.clone()).await;
            assert_eq!(resp.status(), 200, "request {i}: {:?}", resp.body());
            assert_eq!(
                String::from_utf8_lossy(resp.body()),
                format!("{} {}", body.len(), dabba_spec::Digest::of(body)),
                "request {i}: every byte arrived, in order"
            );
        }
        assert!(
            ingress.ejected.lock().unwrap().contains_key(&dead),
            "the unreachable host was tried (and the body it never read went on)"
        );
    }

    #[tokio::test]
    async fn a_host_that_refuses_is_skipped_and_no_request_fails_for_it() {
        let served = Arc::new(AtomicUsize::new(0));
        let (live, dead) = (answering_host(served.clone()).await, dead_host().await);
        let mut route = pay_route(vec![dead.clone(), live.clone()]);
        let (ingress, front) = ingress_at(&route, Duration::from_secs(10)).await;
        for i in 0..10 {
            let resp = get(front).await;
            assert_eq!(resp.status(), 200, "request {i}: {:?}", resp.body());
        }
        assert_eq!(
            served.load(Ordering::Relaxed),
            10,
            "every request reached the live host"
        );
        assert!(
            ingress.ejected.lock().unwrap().contains_key(&dead),
            "the dead host is skipped for a while"
        );
        // More unreachable hosts than it tries: a clear 503 naming the cause.
        let mut many = Vec::new();
        for _ in 0..MAX_TRIES + 1 {
            many.push(dead_host().await);
        }
        route.endpoints = many;
        ingress.replace_table(RoutingTable::new(vec![route.clone()], vec![]));
        let resp = get(front).await;
        assert_eq!(resp.status(), 503);
        let body = String::from_utf8_lossy(resp.body());
        assert!(
            body.contains("upstream_unreachable") && body.contains("4 hosts"),
            "{body}"
        );
        // With only the dead host listed, the request fails clearly, not with a hang.
        route.endpoints = vec![dead];
        ingress.replace_table(RoutingTable::new(vec![route], vec![]));
        let resp = get(front).await;
        assert_eq!(resp.status(), 503);
        let body = String::from_utf8_lossy(resp.body());
        assert!(body.contains("no_ready_pod"), "{body}");
    }

    #[tokio::test]
    async fn a_host_whose_pod_stopped_sends_the_request_back_to_be_served_elsewhere() {
        let served = Arc::new(AtomicUsize::new(0));
        let live = answering_host(served.clone()).await;
        // The host the front's table names has stopped its pod (its own table has none).
        let (_, stopped) = ingress_at(&pay_route(vec![]), Duration::from_secs(10)).await;
        let stopped = format!("http://{stopped}");
        let mut route = pay_route(vec![stopped.clone(), live.clone()]);
        let (ingress, front) = ingress_at(&route, Duration::from_millis(500)).await;
        for i in 0..10 {
            let resp = get(front).await;
            assert_eq!(resp.status(), 200, "request {i}: {:?}", resp.body());
            assert!(!resp.headers().contains_key(NOT_RUN));
        }
        assert_eq!(served.load(Ordering::Relaxed), 10);
        assert!(
            !ingress.ejected.lock().unwrap().contains_key(&stopped),
            "a host that answers is not ejected: it may serve other apps"
        );

        // Only the stopped host listed: the request waits for a newer table, and is
        // served by the host that one names.
        route.endpoints = vec![stopped.clone()];
        ingress.replace_table(RoutingTable::new(vec![route.clone()], vec![]));
        let newer = {
            let ingress = ingress.clone();
            let route = pay_route(vec![live.clone()]);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                ingress.replace_table(RoutingTable::new(vec![route], vec![]));
            })
        };
        let resp = get(front).await;
        assert_eq!(resp.status(), 200, "{:?}", resp.body());
        assert_eq!(served.load(Ordering::Relaxed), 11);
        newer.await.unwrap();

        // No newer table within the patience: a clear 503, from the front.
        ingress.replace_table(RoutingTable::new(vec![route], vec![]));
        let resp = get(front).await;
        assert_eq!(resp.status(), 503);
        assert!(!resp.headers().contains_key(NOT_RUN));
        let body = String::from_utf8_lossy(resp.body());
        assert!(
            body.contains("no_ready_pod") && !body.contains("here"),
            "{body}"
        );
        assert_eq!(served.load(Ordering::Relaxed), 11);
    }

    #[tokio::test]
    async fn a_host_listed_before_its_own_table_has_the_pod_is_asked_again_until_it_serves() {
        // The controllers list a host as running the pod (it told them so) while that
        // host's table does not have it yet: it answers NOT_RUN for 300 ms. This host's
        // table never changes, so only asking that host again serves the request.
        let (served, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let ready = std::time::Instant::now() + Duration::from_millis(300);
        let late = host_serving_from(ready, served.clone(), refused.clone()).await;
        let (_, front) = ingress_at(&pay_route(vec![late]), Duration::from_secs(5)).await;
        let resp = get(front).await;
        assert_eq!(resp.status(), 200, "{:?}", resp.body());
        assert!(!resp.headers().contains_key(NOT_RUN));
        assert_eq!(served.load(Ordering::Relaxed), 1);
        let asked = refused.load(Ordering::Relaxed);
        // Paused 25, 50, 100, 200 ms between askings: 300 ms take a handful, not a flood.
        assert!((2..=8).contains(&asked), "refused {asked} times");
    }
}
