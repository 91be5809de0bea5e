//! The `/v1` HTTP/JSON API, served by every controller (see `spec/api.md`).
//!
//! A request is matched by the `router` to one endpoint. Raft RPCs (and components
//! between controllers), `/v1/healthz`, `/metrics` and downloads of committed components
//! are answered by the node itself; every other request that reaches a
//! follower is forwarded whole to the leader, which proposes writes through Raft and
//! answers reads after confirming it still leads (linearizable reads). Whichever
//! controller a request reaches admits it first (`auth`): who may call each endpoint is
//! declared with its route.
//!
//! One module per resource, each registering its endpoints with the router: a new
//! resource is one new file and one line in `router::routes`. `auth` decides what a
//! token may do; [`views`] holds the read-only queries of the state.

/// An endpoint handler that runs the async fn `f(api, call)`: `handler!(list)`.
macro_rules! handler {
    ($f:expr) => {
        |api, call| Box::pin($f(api, call))
    };
}

mod apps;
mod audit;
mod auth;
mod blobs;
mod cluster;
mod cronjobs;
mod hosts;
mod kv;
mod logs;
mod metrics;
mod namespaces;
mod pods;
mod raft_rpc;
mod rbac;
mod regions;
mod rollouts;
mod router;
mod secrets;
mod tokens;
pub mod views;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dabba_client::transport as http_client;
use dabba_client::transport::{Body, whole};
use dabba_spec::api::{Empty, ErrorBody, ErrorDetail, KvWriteResult};
use http::StatusCode;
use http_body_util::{BodyExt, Limited};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::command::Reply;
use crate::credentials;
use crate::node::{Controller, ProposeError};

pub use auth::{Access, Ns, Rule};
pub use router::Call;

/// Every endpoint of the API: method, route and who may call it (what a test of every
/// endpoint × every role walks).
pub fn route_table() -> Vec<(http::Method, &'static str, Access)> {
    router::routes().all().to_vec()
}

pub type Response = http::Response<Body>;

/// The largest request body accepted.
pub const MAX_BODY: usize = 64 << 20;
/// The longest a watch or an assignments long-poll waits.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// The longest a change's answer waits for its audit entry to commit.
const AUDIT_WAIT: Duration = Duration::from_secs(5);
/// Marks a request already forwarded once, so it is never forwarded in circles.
const FORWARDED: &str = "x-dabba-forwarded";

pub struct Api {
    node: Arc<Controller>,
    router: router::Router,
    metrics: metrics::ApiMetrics,
    buckets: std::sync::Mutex<kv::BucketGrants>,
    audit: Arc<audit::Recorder>,
}

/// An API failure, answered as `{"error": {"code", "message"}}`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

type Answer = Result<Response, Failure>;

fn fail(status: u16, code: &'static str, message: impl Into<String>) -> Failure {
    Failure {
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        code,
        message: message.into(),
    }
}

fn json<T: Serialize>(status: u16, body: &T) -> Answer {
    let bytes = serde_json::to_vec(body).map_err(|e| fail(500, "internal", e.to_string()))?;
    Ok(http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(whole(bytes))
        .expect("valid response"))
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|e| fail(400, "bad_request", format!("request body: {e}")))
}

impl From<ProposeError> for Failure {
    fn from(e: ProposeError) -> Failure {
        match e {
            ProposeError::NotLeader { .. } => {
                fail(503, "no_leader", "leadership is changing; retry")
            }
            ProposeError::Raft(m) => fail(503, "unavailable", m),
        }
    }
}

/// Answers a command's reply: the app it returned, or the reason it was refused.
fn reply(reply: Reply) -> Answer {
    match reply {
        Reply::Ok => json(200, &Empty {}),
        Reply::App { app } => json(200, &app),
        Reply::Kv { result } => json(200, &KvWriteResult { result }),
        Reply::Batch { .. } | Reply::Activated { .. } => {
            Err(fail(500, "internal", "unexpected reply"))
        }
        Reply::Rejected { code, message } => Err(fail(code.status(), code.code(), message)),
    }
}

impl Api {
    /// The API of `node`; its audit entries are committed from a task of the current
    /// Tokio runtime.
    pub fn new(node: Arc<Controller>) -> Api {
        let metrics = metrics::ApiMetrics::new();
        let audit = Arc::new(audit::Recorder::new(
            node.audit_level,
            node.id,
            metrics.audit_entries.clone(),
        ));
        tokio::spawn(audit.clone().flush_loop(node.clone()));
        Api {
            node,
            router: router::routes(),
            metrics,
            buckets: Default::default(),
            audit,
        }
    }

    pub fn node(&self) -> &Arc<Controller> {
        &self.node
    }

    /// Answers one request.
    pub async fn handle<B>(&self, req: http::Request<B>) -> Response
    where
        B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let (parts, body) = req.into_parts();
        let mut seen = self.origin(&parts);
        let request_id = seen.request_id.clone();
        let mut kept = None;
        let answer = if blobs::carries_component(&parts.method, parts.uri.path()) {
            // Streamed to disk by its handler, never collected here.
            let stream = body.map_err(Into::into).boxed();
            self.route(parts, Bytes::new(), Some(stream), &mut seen)
                .await
        } else {
            match Limited::new(body, MAX_BODY).collect().await {
                Ok(b) => {
                    let b = b.to_bytes();
                    kept = Some(b.clone());
                    self.route(parts, b, None, &mut seen).await
                }
                Err(e) => Err(fail(
                    413,
                    "too_large",
                    format!("request body: {e} (at most {} MiB here)", MAX_BODY >> 20),
                )),
            }
        };
        let mut resp = answer.unwrap_or_else(error_response);
        self.metrics.count(&method, resp.status());
        if let Some(entry) = self.audit.record(
            seen,
            &method,
            &path,
            resp.status().as_u16(),
            kept.as_deref(),
        ) {
            if resp.status().is_success() {
                // A change that took effect is answered once its entry is committed —
                // or after AUDIT_WAIT, when the cluster commits nothing (the entry's
                // proposal goes on, and is held again if it fails).
                let (audit, node) = (self.audit.clone(), self.node.clone());
                let commit = tokio::spawn(async move { audit.commit(&node, entry).await });
                let _ = tokio::time::timeout(AUDIT_WAIT, commit).await;
            } else {
                self.audit.hold(entry);
            }
        }
        if let Ok(v) = http::HeaderValue::from_str(&request_id) {
            resp.headers_mut().insert(audit::REQUEST_ID_HEADER, v);
        }
        resp
    }

    /// Where a request came from and its id: as this controller sees it, or — for a
    /// request another controller forwarded, with the peer token — as that one saw it.
    fn origin(&self, parts: &http::request::Parts) -> audit::Seen {
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let from_peer = parts.headers.contains_key(FORWARDED)
            && header(audit::FORWARDER_HEADER).is_some_and(|t| {
                credentials::token_hash(&t) == credentials::token_hash(self.node.peer_token())
            });
        let (source, request_id) = match (
            from_peer,
            header(audit::SOURCE_HEADER),
            header(audit::REQUEST_ID_HEADER),
        ) {
            (true, Some(source), Some(id)) => (source, id),
            _ => (
                parts
                    .extensions
                    .get::<http_client::PeerAddr>()
                    .map_or_else(String::new, |p| p.0.to_string()),
                format!("{:016x}", rand::random::<u64>()),
            ),
        };
        audit::Seen {
            source,
            request_id,
            ..Default::default()
        }
    }

    async fn route(
        &self,
        parts: http::request::Parts,
        body: Bytes,
        stream: Option<Body>,
        seen: &mut audit::Seen,
    ) -> Answer {
        let (endpoint, mut call) = self.router.find(parts, body, stream)?;
        tracing::trace!(endpoint = endpoint.pattern, method = %call.parts.method, "routed");
        call.origin = (seen.source.clone(), seen.request_id.clone());
        seen.access = Some(endpoint.access);
        seen.pattern = Some(endpoint.pattern);
        seen.namespace = endpoint
            .pattern
            .contains("{ns}")
            .then(|| call.param("ns").to_string())
            .or_else(|| call.query("namespace").map(str::to_string));
        match self.admit(endpoint.access, &call, seen)? {
            auth::Admitted::Anyone => {}
            auth::Admitted::Grant(grant) => call.grant = Some(grant),
            auth::Admitted::ByTheLeader => {
                seen.forwarded = true;
                return self.forward(call).await;
            }
        }
        if endpoint.leader_only && !self.node.is_leader() {
            seen.forwarded = true;
            return self.forward(call).await;
        }
        (endpoint.handler)(self, call).await
    }

    /// Sends a request received by a follower to the leader, and relays its answer.
    /// Both bodies stream through (a component is never held here whole).
    async fn forward(&self, call: Call) -> Answer {
        let parts = call.parts;
        if parts.headers.contains_key(FORWARDED) {
            return Err(fail(503, "no_leader", "leadership is changing; retry"));
        }
        let leader = match self.node.leader_address() {
            Some(l) => l,
            None => {
                // An election may be under way: wait for it, briefly.
                let _ = self.node.wait_for_leader(Duration::from_secs(1)).await;
                self.node.leader_address().ok_or_else(|| {
                    fail(
                        503,
                        "no_leader",
                        "no controller leads the cluster right now; retry",
                    )
                })?
            }
        };
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut req = http::Request::builder()
            .method(parts.method.clone())
            .uri(format!("{leader}{path}"));
        for (k, v) in &parts.headers {
            // What is passed on between controllers is set here, never taken from the
            // client.
            if k != http::header::HOST
                && k != audit::SOURCE_HEADER
                && k != audit::REQUEST_ID_HEADER
                && k != audit::FORWARDER_HEADER
            {
                req = req.header(k, v);
            }
        }
        let (source, request_id) = &call.origin;
        req = req
            .header(audit::SOURCE_HEADER, source)
            .header(audit::REQUEST_ID_HEADER, request_id)
            .header(audit::FORWARDER_HEADER, self.node.peer_token());
        let body = call.stream.unwrap_or_else(|| whole(call.body));
        let req = req
            .header(FORWARDED, self.node.id.to_string())
            .body(body)
            .map_err(|e| fail(500, "internal", e.to_string()))?;
        let timeout = MAX_WAIT + Duration::from_secs(5);
        let resp =
            tokio::time::timeout(timeout, http_client::send_streamed(&self.node.client, req))
                .await
                .map_err(|_| {
                    fail(
                        504,
                        "outcome_unknown",
                        format!("forwarding to the leader: no answer within {timeout:?}"),
                    )
                })?
                .map_err(|e| {
                    if e.never_sent() {
                        fail(503, "no_leader", format!("forwarding to the leader: {e}"))
                    } else {
                        // The leader may have committed the request before it went away.
                        fail(
                            504,
                            "outcome_unknown",
                            format!("forwarding to the leader: {e}"),
                        )
                    }
                })?;
        let (mut parts, body) = resp.into_parts();
        // Tell the client who leads, so its next request can go there directly.
        if let Ok(v) = http::HeaderValue::from_str(&leader) {
            parts.headers.insert(http_client::LEADER_HEADER, v);
        }
        Ok(http::Response::from_parts(
            parts,
            body.map_err(Into::into).boxed(),
        ))
    }

    /// Waits until the state's version passes `since`, or `wait` elapses.
    async fn wait_past(&self, since: u64, wait: Duration) -> u64 {
        let mut rx = self.node.shared.watch();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let v = *rx.borrow_and_update();
            if v > since {
                return v;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return *rx.borrow(),
            }
        }
    }
}

/// The `{"error": ...}` answer of a failure.
fn error_response(f: Failure) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: f.code.into(),
            message: f.message,
        },
    };
    let mut r = json(f.status.as_u16(), &body).expect("an error body serializes");
    if f.status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
    }
    r
}

/// The `wait_ms` of a long-poll, at most [`MAX_WAIT`].
fn wait_of(call: &Call) -> Duration {
    call.query("wait_ms")
        .and_then(|w| w.parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or(MAX_WAIT)
        .min(MAX_WAIT)
}

/// The `since` of a long-poll (0 when absent).
fn since_of(call: &Call) -> u64 {
    call.query("since")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
