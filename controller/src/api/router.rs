//! Which endpoint answers a request: a `matchit` tree per method, built once from every
//! resource module's `routes` function.
//!
//! Path parameters and query values are percent-decoded here, once, so a handler sees
//! `a/b` for `a%2Fb` whether it came in the path or the query (clients encode them:
//! `dabba_client::paths`). A path that matches no endpoint is answered 404 at once, on
//! any controller.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use dabba_client::transport::Body;
use http::Method;

use super::auth::Access;
use super::{Answer, Api, Failure, fail};
use dabba_spec::resources::Grant;

/// What a handler returns: its answer, to come.
pub type Handled<'a> = Pin<Box<dyn Future<Output = Answer> + Send + 'a>>;

/// An endpoint's handler.
pub type Handler = for<'a> fn(&'a Api, Call) -> Handled<'a>;

/// One request, as a handler gets it: the head, the decoded path parameters and query,
/// and the whole body — or, for a request that carries a component, the body unread,
/// to be streamed (`body` is then empty).
#[derive(Debug)]
pub struct Call {
    pub parts: http::request::Parts,
    params: Vec<(String, String)>,
    query: HashMap<String, String>,
    pub body: Bytes,
    pub stream: Option<Body>,
    /// The grant the request was admitted with, for endpoints that need a token.
    pub(super) grant: Option<Grant>,
    /// Where the request came from and its id (passed on when it is forwarded).
    pub(super) origin: (String, String),
}

impl Call {
    /// A path parameter the route names (a route without it is a programming error).
    pub fn param(&self, name: &str) -> &str {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("the route has no parameter `{name}`"))
    }

    /// The grant the request was admitted with (an endpoint without a token rule
    /// asking is a programming error).
    pub fn grant(&self) -> &Grant {
        self.grant
            .as_ref()
            .expect("the endpoint is declared with a token rule")
    }

    /// A query value, decoded (the last one when a name repeats).
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }
}

/// An endpoint: its handler, who may call it, and whether only the leader may answer
/// it (everything but health, metrics and Raft's own RPCs).
pub struct Endpoint {
    /// The route as registered, e.g. `/v1/apps/{ns}/{name}`.
    pub pattern: &'static str,
    pub handler: Handler,
    pub access: Access,
    pub leader_only: bool,
}

/// Every endpoint, by method.
#[derive(Default)]
pub struct Router {
    methods: HashMap<Method, matchit::Router<Endpoint>>,
    /// Every route, in the order registered: what tests walk.
    all: Vec<(Method, &'static str, Access)>,
}

impl Router {
    /// Adds an endpoint the leader answers (followers forward it).
    pub fn leader(
        &mut self,
        method: Method,
        pattern: &'static str,
        access: Access,
        handler: Handler,
    ) {
        self.add(method, pattern, access, handler, true);
    }

    /// Adds an endpoint every node answers itself.
    pub fn local(
        &mut self,
        method: Method,
        pattern: &'static str,
        access: Access,
        handler: Handler,
    ) {
        self.add(method, pattern, access, handler, false);
    }

    fn add(
        &mut self,
        method: Method,
        pattern: &'static str,
        access: Access,
        handler: Handler,
        leader_only: bool,
    ) {
        self.methods
            .entry(method.clone())
            .or_default()
            .insert(
                pattern,
                Endpoint {
                    pattern,
                    handler,
                    access,
                    leader_only,
                },
            )
            .unwrap_or_else(|e| panic!("route {method} {pattern}: {e}"));
        self.all.push((method, pattern, access));
    }

    /// Every route: method, pattern and who may call it.
    pub fn all(&self) -> &[(Method, &'static str, Access)] {
        &self.all
    }

    /// The endpoint for a request, and the request as its handler takes it.
    pub fn find(
        &self,
        parts: http::request::Parts,
        body: Bytes,
        stream: Option<Body>,
    ) -> Result<(&Endpoint, Call), Failure> {
        let not_found = || {
            fail(
                404,
                "not_found",
                format!("no endpoint {} {}", parts.method, parts.uri.path()),
            )
        };
        let (endpoint, params) = {
            let matched = self
                .methods
                .get(&parts.method)
                .and_then(|r| r.at(parts.uri.path()).ok())
                .ok_or_else(not_found)?;
            let params = matched
                .params
                .iter()
                .map(|(k, v)| Ok((k.to_string(), decode(v)?)))
                .collect::<Result<Vec<_>, Failure>>()?;
            (matched.value, params)
        };
        let query = parts
            .uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let call = Call {
            parts,
            params,
            query,
            body,
            stream,
            grant: None,
            origin: Default::default(),
        };
        Ok((endpoint, call))
    }
}

/// A percent-decoded path segment.
fn decode(segment: &str) -> Result<String, Failure> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| {
            fail(
                400,
                "bad_request",
                format!("path segment `{segment}` is not UTF-8 once decoded"),
            )
        })
}

/// Every endpoint of the API, one line per resource (the table in `spec/api.md`).
pub fn routes() -> Router {
    let mut r = Router::default();
    super::raft_rpc::routes(&mut r);
    super::metrics::routes(&mut r);
    super::blobs::routes(&mut r);
    super::apps::routes(&mut r);
    super::rollouts::routes(&mut r);
    super::regions::routes(&mut r);
    super::pods::routes(&mut r);
    super::cronjobs::routes(&mut r);
    super::hosts::routes(&mut r);
    super::kv::routes(&mut r);
    super::logs::routes(&mut r);
    super::tokens::routes(&mut r);
    super::secrets::routes(&mut r);
    super::namespaces::routes(&mut r);
    super::rbac::routes(&mut r);
    super::audit::routes(&mut r);
    super::cluster::routes(&mut r);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(method: Method, uri: &str) -> Result<(&'static str, bool, Call), Failure> {
        let router = Box::leak(Box::new(routes()));
        let (parts, ()) = http::Request::builder()
            .method(method)
            .uri(uri)
            .body(())
            .unwrap()
            .into_parts();
        let (e, call) = router.find(parts, Bytes::new(), None)?;
        Ok((e.pattern, e.leader_only, call))
    }

    #[test]
    fn every_endpoint_of_the_api_table_is_routed() {
        for (method, uri, pattern) in [
            (Method::GET, "/v1/healthz", "/v1/healthz"),
            (Method::GET, "/metrics", "/metrics"),
            (Method::POST, "/raft/append", "/raft/append"),
            (Method::POST, "/raft/vote", "/raft/vote"),
            (Method::POST, "/raft/snapshot", "/raft/snapshot"),
            (Method::PUT, "/v1/blobs/sha256:ab", "/v1/blobs/{digest}"),
            (Method::GET, "/v1/blobs/sha256:ab", "/v1/blobs/{digest}"),
            (Method::HEAD, "/v1/blobs/sha256:ab", "/v1/blobs/{digest}"),
            (Method::PUT, "/raft/blobs/sha256:ab", "/raft/blobs/{digest}"),
            (Method::GET, "/raft/blobs/sha256:ab", "/raft/blobs/{digest}"),
            (Method::GET, "/v1/apps", "/v1/apps"),
            (Method::PUT, "/v1/apps/default/pay", "/v1/apps/{ns}/{name}"),
            (Method::GET, "/v1/apps/default/pay", "/v1/apps/{ns}/{name}"),
            (
                Method::DELETE,
                "/v1/apps/default/pay",
                "/v1/apps/{ns}/{name}",
            ),
            (
                Method::POST,
                "/v1/apps/d/p/scale",
                "/v1/apps/{ns}/{name}/scale",
            ),
            (
                Method::POST,
                "/v1/apps/d/p/activate",
                "/v1/apps/{ns}/{name}/activate",
            ),
            (
                Method::GET,
                "/v1/apps/d/p/logs",
                "/v1/apps/{ns}/{name}/logs",
            ),
            (Method::GET, "/v1/revisions", "/v1/revisions"),
            (Method::GET, "/v1/pods", "/v1/pods"),
            (Method::PUT, "/v1/cronjobs/d/s", "/v1/cronjobs/{ns}/{name}"),
            (Method::GET, "/v1/cronjobs", "/v1/cronjobs"),
            (
                Method::DELETE,
                "/v1/cronjobs/d/s",
                "/v1/cronjobs/{ns}/{name}",
            ),
            (
                Method::POST,
                "/v1/cronjobs/d/s/suspend",
                "/v1/cronjobs/{ns}/{name}/suspend",
            ),
            (
                Method::POST,
                "/v1/cronjobs/d/s/resume",
                "/v1/cronjobs/{ns}/{name}/resume",
            ),
            (
                Method::POST,
                "/v1/cronjobs/d/s/run",
                "/v1/cronjobs/{ns}/{name}/run",
            ),
            (
                Method::POST,
                "/v1/runs/d/s-1/report",
                "/v1/runs/{ns}/{run}/report",
            ),
            (Method::GET, "/v1/hosts", "/v1/hosts"),
            (Method::GET, "/v1/watch", "/v1/watch"),
            (Method::POST, "/v1/tokens", "/v1/tokens"),
            (Method::GET, "/v1/cluster", "/v1/cluster"),
            (
                Method::GET,
                "/v1/cluster/peer-token",
                "/v1/cluster/peer-token",
            ),
            (Method::POST, "/v1/cluster/members", "/v1/cluster/members"),
            (
                Method::DELETE,
                "/v1/cluster/members/3",
                "/v1/cluster/members/{id}",
            ),
            (Method::POST, "/v1/hosts/register", "/v1/hosts/register"),
            (
                Method::POST,
                "/v1/hosts/h1/heartbeat",
                "/v1/hosts/{name}/heartbeat",
            ),
            (
                Method::GET,
                "/v1/hosts/h1/assignments",
                "/v1/hosts/{name}/assignments",
            ),
            (Method::POST, "/v1/kv/write", "/v1/kv/write"),
            (Method::POST, "/v1/kv/read", "/v1/kv/read"),
            (Method::POST, "/v1/kv/list", "/v1/kv/list"),
        ] {
            let (p, _, _) = find(method.clone(), uri)
                .unwrap_or_else(|e| panic!("{method} {uri}: {}", e.message));
            assert_eq!(p, pattern, "{method} {uri}");
        }
    }

    #[test]
    fn only_health_metrics_raft_and_component_downloads_are_answered_without_the_leader() {
        let local = |m, uri| find(m, uri).map(|(_, leader, _)| !leader).unwrap();
        assert!(local(Method::GET, "/v1/healthz"));
        assert!(local(Method::GET, "/metrics"));
        assert!(local(Method::POST, "/raft/vote"));
        assert!(local(Method::PUT, "/raft/blobs/sha256:ab"));
        // A controller that has seen the digest commit answers from its own store.
        assert!(local(Method::GET, "/v1/blobs/sha256:ab"));
        assert!(!local(Method::PUT, "/v1/blobs/sha256:ab"));
        assert!(!local(Method::GET, "/v1/cluster"));
        assert!(!local(Method::POST, "/v1/kv/write"));
        assert!(!local(Method::GET, "/v1/apps"));
    }

    #[test]
    fn encoded_parameters_and_query_values_are_decoded_once() {
        let (_, _, call) = find(
            Method::GET,
            "/v1/apps/def%61ult/pay%2Fx?namespace=a%2Fb&key=k%20%25&wait_ms=5&key=last",
        )
        .unwrap();
        assert_eq!(call.param("ns"), "default");
        assert_eq!(call.param("name"), "pay/x");
        assert_eq!(call.query("namespace"), Some("a/b"));
        // The last of a repeated name, as before; `+` is a space in a form.
        assert_eq!(call.query("key"), Some("last"));
        assert_eq!(call.query("wait_ms"), Some("5"));
        assert_eq!(call.query("missing"), None);
        let (_, _, call) = find(Method::GET, "/v1/pods?app=a+b&namespace=%2F").unwrap();
        assert_eq!(
            (call.query("app"), call.query("namespace")),
            (Some("a b"), Some("/"))
        );
    }

    #[test]
    fn unknown_paths_and_methods_are_not_found_and_bad_encoding_is_a_bad_request() {
        for (m, uri) in [
            (Method::GET, "/v1/nothing"),
            (Method::PATCH, "/v1/apps/d/p"),
            (Method::GET, "/v1/apps/a/b/c"),
            (Method::POST, "/raft/elect"),
            (Method::GET, "/"),
        ] {
            let e = find(m.clone(), uri)
                .err()
                .unwrap_or_else(|| panic!("{m} {uri}"));
            assert_eq!((e.status.as_u16(), e.code), (404, "not_found"), "{m} {uri}");
            assert!(
                e.message.contains(uri.split('?').next().unwrap()),
                "{}",
                e.message
            );
        }
        let e = find(Method::GET, "/v1/apps/d/%FF").err().unwrap();
        assert_eq!((e.status.as_u16(), e.code), (400, "bad_request"));
    }
}
