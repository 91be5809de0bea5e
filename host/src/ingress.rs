//! The ingress every host runs: it routes a request by the app's route (path prefix and
//! optional host name) to a pod of the app — a local one first, otherwise it proxies the
//! request to another host's ingress that runs one.
//!
//! The routing table is rebuilt whole by the agent whenever the controller's view
//! changes, and swapped in; requests read it without waiting on the agent. A proxied
//! request carries [`HOP`], and a request that already hopped is never proxied again,
//! so stale tables on two hosts cannot bounce a request between them.
//!
//! The activator: a request for an app with no running pod anywhere (scaled to zero, or
//! not started yet) is held in a bounded per-app queue, the agent is told at once (it
//! asks the controller to scale the app from zero, with the first pod here), and every
//! held request goes on the moment a new table has a pod for it. A request that waits
//! longer than the activator's patience, or finds the queue full, gets 503 with
//! `Retry-After`; none is dropped silently.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use dabba_client::transport::{HttpClient, send};
use dabba_spec::api::RouteEntry;
use dabba_spec::resources::ResourceKey;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::function::{HttpFunction, HttpResponse, error_response};
use crate::server::Handler;

/// Marks a request proxied from another host's ingress.
pub const HOP: &str = "x-dabba-hop";
/// The largest request body the ingress proxies to another host.
pub const MAX_PROXIED_BODY: usize = 16 << 20;
/// How long a proxied request may take.
const PROXY_TIMEOUT: Duration = Duration::from_secs(60);

/// A pod this host runs.
pub struct LocalPod {
    pub key: ResourceKey,
    pub revision: u64,
    pub function: HttpFunction,
}

/// Where requests go: every app's route, and the pods of each app on this host.
#[derive(Default)]
pub struct RoutingTable {
    /// Most specific first.
    routes: Vec<RouteEntry>,
    /// By app: the local pods of the newest revision running here.
    local: HashMap<ResourceKey, Vec<Arc<LocalPod>>>,
}

impl RoutingTable {
    pub fn new(
        mut routes: Vec<RouteEntry>,
        pods: Vec<(ResourceKey, Arc<LocalPod>)>,
    ) -> RoutingTable {
        routes.sort_by_key(|r| std::cmp::Reverse(r.route.specificity()));
        let mut local: HashMap<ResourceKey, Vec<Arc<LocalPod>>> = HashMap::new();
        for (app, pod) in pods {
            let list = local.entry(app).or_default();
            match list.first().map(|p| p.revision) {
                Some(r) if r > pod.revision => continue,
                Some(r) if r < pod.revision => list.clear(),
                _ => {}
            }
            list.push(pod);
        }
        for list in local.values_mut() {
            list.sort_by(|a, b| a.key.cmp(&b.key));
        }
        RoutingTable { routes, local }
    }

    /// The route a request for `host` and `path` takes.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<&RouteEntry> {
        self.routes.iter().find(|r| r.route.matches(host, path))
    }

    pub fn local_pods(&self, app: &ResourceKey) -> &[Arc<LocalPod>] {
        self.local.get(app).map_or(&[], Vec::as_slice)
    }

    /// The route entry of `app`.
    fn entry(&self, app: &ResourceKey) -> Option<&RouteEntry> {
        self.routes.iter().find(|r| r.key() == *app)
    }
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
}

impl Ingress {
    /// An ingress, and the stream of demand its activator reports (for the agent).
    pub fn new(
        own_address: &str,
        activator: ActivatorOptions,
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
        };
        (ingress, demands)
    }

    pub fn replace_table(&self, table: RoutingTable) {
        *self.table.write().expect("routing table lock") = Arc::new(table);
        self.generation.send_modify(|g| *g += 1);
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
    async fn hold(&self, key: &ResourceKey) -> Result<Arc<RoutingTable>, HttpResponse> {
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
            if !table.local_pods(key).is_empty() || self.remote(&table, key) {
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

    /// Whether another host runs a pod of the app.
    fn remote(&self, table: &RoutingTable, app: &ResourceKey) -> bool {
        table.entry(app).is_some_and(|r| !self.others(r).is_empty())
    }

    fn others<'a>(&self, route: &'a RouteEntry) -> Vec<&'a String> {
        route
            .endpoints
            .iter()
            .filter(|e| e.trim_end_matches('/') != self.own_address)
            .collect()
    }

    pub fn table(&self) -> Arc<RoutingTable> {
        self.table.read().expect("routing table lock").clone()
    }

    fn next_turn(&self) -> usize {
        self.turn.fetch_add(1, Ordering::Relaxed)
    }

    async fn proxy(&self, endpoint: &str, req: http::Request<Incoming>) -> HttpResponse {
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, MAX_PROXIED_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return error_response(
                    413,
                    "body_too_large",
                    &format!(
                        "request body: {e} (the ingress proxies at most {MAX_PROXIED_BODY} bytes)"
                    ),
                    None,
                );
            }
        };
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut out = http::Request::builder()
            .method(parts.method)
            .uri(format!("{endpoint}{path}"));
        for (k, v) in &parts.headers {
            if k != http::header::CONTENT_LENGTH && k != http::header::CONNECTION {
                out = out.header(k, v);
            }
        }
        let Ok(out) = out.header(HOP, "1").body(Full::new(body)) else {
            return error_response(400, "bad_request", "the request cannot be proxied", None);
        };
        match send(&self.client, out, PROXY_TIMEOUT).await {
            Ok(resp) => {
                let (parts, bytes) = resp.into_parts();
                http::Response::from_parts(parts, Full::new(bytes))
            }
            Err(e) => error_response(
                502,
                "upstream_unreachable",
                &format!("the host running this app did not answer: {e}"),
                None,
            ),
        }
    }
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
        let Some(route) = table.route(host.as_deref(), req.uri().path()) else {
            return error_response(
                404,
                "no_route",
                &format!("no app serves {}", req.uri().path()),
                None,
            );
        };
        let app = route.key();
        let pods = table.local_pods(&app);
        if !pods.is_empty() {
            let pod = pods[self.next_turn() % pods.len()].clone();
            return pod.function.handle(req).await;
        }
        let hopped = req.headers().contains_key(HOP);
        let mut table = table.clone();
        let no_pod = table.local_pods(&app).is_empty() && (hopped || !self.remote(&table, &app));
        if no_pod {
            if hopped || !route.autoscaled {
                // The other host thought a pod runs here; it does not (any more).
                return unavailable(&app, "no_ready_pod", "has no running pod here");
            }
            table = match self.hold(&app).await {
                Ok(t) => t,
                Err(resp) => return resp,
            };
        }
        let pods = table.local_pods(&app);
        if !pods.is_empty() {
            let pod = pods[self.next_turn() % pods.len()].clone();
            return pod.function.handle(req).await;
        }
        let Some(route) = table.entry(&app) else {
            return unavailable(&app, "no_route", "was removed");
        };
        let others = self.others(route);
        if others.is_empty() {
            return unavailable(&app, "no_ready_pod", "has no running pod");
        }
        let endpoint = others[self.next_turn() % others.len()].clone();
        self.proxy(&endpoint, req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dabba_spec::resources::Route;

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
        }
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
        let app = |host: Option<&str>, path: &str| t.route(host, path).map(|r| r.app.clone());
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
        assert!(t.local_pods(&ResourceKey::new("default", "pay")).is_empty());
    }
}
