//! The ingress every host runs: it routes a request by the app's route (path prefix and
//! optional host name) to a pod of the app — a local one first, otherwise it proxies the
//! request to another host's ingress that runs one.
//!
//! The routing table is rebuilt whole by the agent whenever the controller's view
//! changes, and swapped in; requests read it without waiting on the agent. A proxied
//! request carries [`HOP`], and a request that already hopped is never proxied again,
//! so stale tables on two hosts cannot bounce a request between them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use dabba_spec::api::RouteEntry;
use dabba_spec::client::{HttpClient, send};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::http::{HttpFunction, HttpResponse, error_response};
use crate::server::Handler;

/// Marks a request proxied from another host's ingress.
pub const HOP: &str = "x-dabba-hop";
/// The largest request body the ingress proxies to another host.
pub const MAX_PROXIED_BODY: usize = 16 << 20;
/// How long a proxied request may take.
const PROXY_TIMEOUT: Duration = Duration::from_secs(60);

/// A pod this host runs.
pub struct LocalPod {
    /// `namespace/pod`.
    pub key: String,
    pub revision: u64,
    pub function: HttpFunction,
}

/// Where requests go: every app's route, and the pods of each app on this host.
#[derive(Default)]
pub struct RoutingTable {
    /// Most specific first.
    routes: Vec<RouteEntry>,
    /// By `namespace/app`: the local pods of the newest revision running here.
    local: HashMap<String, Vec<Arc<LocalPod>>>,
}

impl RoutingTable {
    pub fn new(mut routes: Vec<RouteEntry>, pods: Vec<(String, Arc<LocalPod>)>) -> RoutingTable {
        routes.sort_by_key(|r| std::cmp::Reverse(r.route.specificity()));
        let mut local: HashMap<String, Vec<Arc<LocalPod>>> = HashMap::new();
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

    pub fn local_pods(&self, namespace: &str, app: &str) -> &[Arc<LocalPod>] {
        self.local
            .get(&format!("{namespace}/{app}"))
            .map_or(&[], Vec::as_slice)
    }
}

pub struct Ingress {
    table: RwLock<Arc<RoutingTable>>,
    /// This host's own ingress address, never proxied to.
    own_address: String,
    client: HttpClient,
    turn: AtomicUsize,
}

impl Ingress {
    pub fn new(own_address: &str) -> Ingress {
        Ingress {
            table: RwLock::new(Arc::new(RoutingTable::default())),
            own_address: own_address.trim_end_matches('/').to_string(),
            client: dabba_spec::client::client(),
            turn: AtomicUsize::new(0),
        }
    }

    pub fn replace_table(&self, table: RoutingTable) {
        *self.table.write().expect("routing table lock") = Arc::new(table);
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

fn unavailable(app: &str) -> HttpResponse {
    let mut resp = error_response(
        503,
        "no_ready_pod",
        &format!("app {app} has no running pod right now; retry shortly"),
        None,
    );
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
        let pods = table.local_pods(&route.namespace, &route.app);
        if !pods.is_empty() {
            let pod = pods[self.next_turn() % pods.len()].clone();
            return pod.function.handle(req).await;
        }
        let app = format!("{}/{}", route.namespace, route.app);
        if req.headers().contains_key(HOP) {
            return unavailable(&app);
        }
        let others: Vec<&String> = route
            .endpoints
            .iter()
            .filter(|e| e.trim_end_matches('/') != self.own_address)
            .collect();
        if others.is_empty() {
            return unavailable(&app);
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
        assert!(t.local_pods("default", "pay").is_empty());
    }
}
