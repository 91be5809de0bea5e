//! The `/v1` HTTP/JSON API, served by every controller (see `spec/api.md`).
//!
//! Requests that reach a follower are forwarded whole to the leader, so the leader
//! authenticates, proposes writes through Raft and answers reads after confirming it
//! still leads (linearizable reads). Raft RPCs (`/raft/*`), `/v1/healthz` and `/metrics`
//! are answered by the node itself.
//!
//! Authentication is a bearer token; the state holds each token's SHA-256 and its
//! [`Grant`]. No token: 401. A token whose role or namespace does not cover the request:
//! 403.

pub mod views;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dabba_spec::api::{
    ActivateRequest, AddMember, CronJobApply, ErrorBody, ErrorDetail, Heartbeat, KvKeys, KvList,
    KvRead, KvValues, KvWrite, KvWriteResult, PeerToken, ScaleRequest, TokenRequest, TokenResponse,
    WatchResponse,
};
use dabba_spec::resources::{AppSpec, Grant, HostInfo, Role, valid_name};
use dabba_spec::{Digest, WorkloadKind};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest as _, Sha256};

use crate::command::{Command, Reply};
use crate::node::{Controller, ProposeError, new_token, now_millis, token_hash};
use crate::raft::network::PEER_TOKEN_HEADER;
use dabba_spec::client as http_client;

pub type Response = http::Response<Full<Bytes>>;

/// The largest request body accepted.
pub const MAX_BODY: usize = 64 << 20;
/// The largest component the cluster stores. A component travels in one Raft entry, and
/// openraft 0.9 bounds each AppendEntries RPC by the heartbeat interval; larger entries
/// than this cannot be replicated reliably (8 MiB lost the leader on a 2-core machine).
/// Raising it means replicating blobs outside the log (see spec/controller.md).
pub const MAX_COMPONENT: usize = 4 << 20;
/// The longest a watch or an assignments long-poll waits.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// Marks a request already forwarded once, so it is never forwarded in circles.
const FORWARDED: &str = "x-dabba-forwarded";

pub struct Api {
    node: Arc<Controller>,
    registry: Registry,
    requests: IntCounterVec,
    raft_gauges: IntGaugeVec,
    lag: IntGaugeVec,
}

/// An API failure, answered as `{"error": {"code", "message"}}`.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    code: &'static str,
    message: String,
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
        .body(Full::new(Bytes::from(bytes)))
        .expect("valid response"))
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|e| fail(400, "bad_request", format!("request body: {e}")))
}

fn query(parts: &http::request::Parts) -> HashMap<String, String> {
    parts
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
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

/// What a request needs of its token.
#[derive(Clone, Copy)]
enum Need<'a> {
    /// Read in a namespace (`None`: any namespace the token covers).
    View(Option<&'a str>),
    /// Change apps in a namespace.
    Deploy(&'a str),
    /// Upload components (any deployer).
    Upload,
    Admin,
    Host,
}

impl Api {
    pub fn new(node: Arc<Controller>) -> Api {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "dabba_api_requests_total",
                "API requests, by method and status code.",
            ),
            &["method", "code"],
        )
        .expect("valid metric");
        let raft_gauges = IntGaugeVec::new(
            Opts::new(
                "dabba_raft_state",
                "Raft state of this controller: term, leader id, last log, commit and applied index.",
            ),
            &["field"],
        )
        .expect("valid metric");
        let lag = IntGaugeVec::new(
            Opts::new(
                "dabba_raft_follower_lag_entries",
                "Entries each member is behind the leader.",
            ),
            &["member"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(requests.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(raft_gauges.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(lag.clone()))
            .expect("unique metric");
        Api {
            node,
            registry,
            requests,
            raft_gauges,
            lag,
        }
    }

    pub fn node(&self) -> &Arc<Controller> {
        &self.node
    }

    /// Answers one request.
    pub async fn handle<B>(&self, req: http::Request<B>) -> Response
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let method = req.method().clone();
        let (parts, body) = req.into_parts();
        let answer = match Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => self.route(parts, b.to_bytes()).await,
            Err(e) => Err(fail(413, "too_large", format!("request body: {e}"))),
        };
        let resp = answer.unwrap_or_else(|f| {
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
        });
        self.requests
            .with_label_values(&[method.as_str(), resp.status().as_str()])
            .inc();
        resp
    }

    async fn route(&self, parts: http::request::Parts, body: Bytes) -> Answer {
        let path = parts.uri.path().to_string();
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (&parts.method, segs.as_slice()) {
            (&Method::POST, ["raft", rpc]) => return self.raft_rpc(&parts, rpc, &body).await,
            (&Method::GET, ["v1", "healthz"]) => {
                return json(200, &serde_json::json!({"ok": true}));
            }
            (&Method::GET, ["metrics"]) => return Ok(self.metrics()),
            _ => {}
        }
        if !self.node.is_leader() {
            return self.forward(parts, body).await;
        }
        self.dispatch(parts, &segs, body).await
    }

    /// Sends a request received by a follower to the leader, and relays its answer.
    async fn forward(&self, parts: http::request::Parts, body: Bytes) -> Answer {
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
            if k != http::header::HOST && k != http::header::CONTENT_LENGTH {
                req = req.header(k, v);
            }
        }
        let req = req
            .header(FORWARDED, self.node.id.to_string())
            .body(Full::new(body))
            .map_err(|e| fail(500, "internal", e.to_string()))?;
        let resp = http_client::send(&self.node.client, req, MAX_WAIT + Duration::from_secs(5))
            .await
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
        let (mut parts, bytes) = resp.into_parts();
        // Tell the client who leads, so its next request can go there directly.
        if let Ok(v) = http::HeaderValue::from_str(&leader) {
            parts.headers.insert(dabba_spec::client::LEADER_HEADER, v);
        }
        Ok(http::Response::from_parts(parts, Full::new(bytes)))
    }

    fn grant(&self, parts: &http::request::Parts) -> Result<Grant, Failure> {
        let token = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                fail(
                    401,
                    "unauthenticated",
                    "send `Authorization: Bearer <token>`",
                )
            })?;
        let hash = token_hash(token);
        self.node
            .shared
            .read(|s| s.tokens.get(&hash).cloned())
            .ok_or_else(|| {
                fail(
                    401,
                    "unauthenticated",
                    "the token is not valid for this cluster",
                )
            })
    }

    fn authorize(&self, parts: &http::request::Parts, need: Need<'_>) -> Result<Grant, Failure> {
        let g = self.grant(parts)?;
        let in_scope = |ns: &str| g.namespace.as_deref().is_none_or(|own| own == ns);
        let ok = match need {
            Need::View(ns) => {
                matches!(g.role, Role::Viewer | Role::Deployer | Role::Admin)
                    && ns.is_none_or(in_scope)
            }
            Need::Deploy(ns) => matches!(g.role, Role::Deployer | Role::Admin) && in_scope(ns),
            Need::Upload => matches!(g.role, Role::Deployer | Role::Admin),
            Need::Admin => g.role == Role::Admin && g.namespace.is_none(),
            Need::Host => matches!(g.role, Role::Host | Role::Admin),
        };
        if ok {
            Ok(g)
        } else {
            let scope = g
                .namespace
                .as_deref()
                .map(|n| format!(" in namespace {n}"))
                .unwrap_or_default();
            Err(fail(
                403,
                "forbidden",
                format!("token `{}` ({:?}{scope}) may not do this", g.label, g.role),
            ))
        }
    }

    async fn dispatch(&self, parts: http::request::Parts, segs: &[&str], body: Bytes) -> Answer {
        let q = query(&parts);
        let node = &self.node;
        match (&parts.method, segs) {
            // --- components ---------------------------------------------------------
            (&Method::PUT, ["v1", "blobs", digest]) => {
                self.authorize(&parts, Need::Upload)?;
                let digest: Digest = digest
                    .parse()
                    .map_err(|e| fail(400, "bad_request", format!("{e}")))?;
                let actual = Digest::from_bytes(Sha256::digest(&body).into());
                if actual != digest {
                    return Err(fail(
                        400,
                        "digest_mismatch",
                        format!("the body hashes to {actual}, not {digest}"),
                    ));
                }
                if body.len() > MAX_COMPONENT {
                    return Err(fail(
                        413,
                        "too_large",
                        format!(
                            "the component is {} bytes; the cluster stores components of at most {} MiB",
                            body.len(),
                            MAX_COMPONENT >> 20
                        ),
                    ));
                }
                if !dabba_spec::looks_like_component(&body) {
                    return Err(fail(
                        422,
                        "not_a_component",
                        "the body is not a WebAssembly component (it must start with \\0asm and version 0d 00 01 00)",
                    ));
                }
                if node.shared.read(|s| s.blob(&digest).is_some()) {
                    return json(200, &serde_json::json!({"digest": digest, "stored": false}));
                }
                node.propose(Command::PutBlob {
                    digest,
                    bytes: body.to_vec(),
                })
                .await?;
                json(201, &serde_json::json!({"digest": digest, "stored": true}))
            }
            (m @ (&Method::GET | &Method::HEAD), ["v1", "blobs", digest]) => {
                let g = self.grant(&parts)?;
                if !matches!(g.role, Role::Host | Role::Admin | Role::Deployer) {
                    return Err(fail(
                        403,
                        "forbidden",
                        "only hosts and deployers read components",
                    ));
                }
                let digest: Digest = digest
                    .parse()
                    .map_err(|e| fail(400, "bad_request", format!("{e}")))?;
                node.linearize().await?;
                let bytes = node
                    .shared
                    .read(|s| s.blob(&digest).map(<[u8]>::to_vec))
                    .ok_or_else(|| fail(404, "not_found", format!("no component {digest}")))?;
                let body = if m == Method::HEAD {
                    Bytes::new()
                } else {
                    Bytes::from(bytes)
                };
                Ok(http::Response::builder()
                    .header(http::header::CONTENT_TYPE, "application/wasm")
                    .body(Full::new(body))
                    .expect("valid response"))
            }
            // --- apps ---------------------------------------------------------------
            (&Method::GET, ["v1", "apps"]) => {
                let g =
                    self.authorize(&parts, Need::View(q.get("namespace").map(String::as_str)))?;
                node.linearize().await?;
                let ns = q.get("namespace").cloned().or(g.namespace);
                let mut apps = node.shared.read(|s| views::app_summaries(s, ns.as_deref()));
                for a in &mut apps {
                    a.autoscaler = node.autoscaler(&format!("{}/{}", a.namespace, a.name));
                }
                json(200, &apps)
            }
            (&Method::PUT, ["v1", "apps", ns, name]) => {
                self.authorize(&parts, Need::Deploy(ns))?;
                let spec: AppSpec = parse(&body)?;
                validate_spec(&spec, ns, name)?;
                self.reply(
                    node.propose(Command::ApplyApp {
                        spec: Box::new(spec),
                        at: now_millis(),
                    })
                    .await?,
                )
            }
            (&Method::GET, ["v1", "apps", ns, name]) => {
                self.authorize(&parts, Need::View(Some(ns)))?;
                node.linearize().await?;
                let mut detail = node
                    .shared
                    .read(|s| views::app_detail(s, ns, name))
                    .ok_or_else(|| fail(404, "not_found", format!("no app {ns}/{name}")))?;
                detail.autoscaler = node.autoscaler(&format!("{ns}/{name}"));
                json(200, &detail)
            }
            (&Method::DELETE, ["v1", "apps", ns, name]) => {
                self.authorize(&parts, Need::Deploy(ns))?;
                self.reply(
                    node.propose(Command::DeleteApp {
                        namespace: ns.to_string(),
                        name: name.to_string(),
                        at: now_millis(),
                    })
                    .await?,
                )
            }
            (&Method::POST, ["v1", "apps", ns, name, "scale"]) => {
                self.authorize(&parts, Need::Deploy(ns))?;
                let req: ScaleRequest = parse(&body)?;
                if req.replicas > dabba_spec::manifest::MAX_REPLICAS {
                    return Err(fail(
                        422,
                        "invalid",
                        format!("at most {} replicas", dabba_spec::manifest::MAX_REPLICAS),
                    ));
                }
                self.reply(
                    node.propose(Command::ScaleApp {
                        namespace: ns.to_string(),
                        name: name.to_string(),
                        replicas: req.replicas,
                        at: now_millis(),
                        reason: None,
                    })
                    .await?,
                )
            }
            (&Method::POST, ["v1", "apps", ns, name, "activate"]) => {
                self.authorize(&parts, Need::Host)?;
                let req: ActivateRequest = parse(&body)?;
                let answer = node.activate(ns, name, &req.host, req.held).await?;
                json(200, &answer)
            }
            (&Method::GET, ["v1", "apps", ns, name, "logs"]) => {
                self.authorize(&parts, Need::View(Some(ns)))?;
                let tail = q.get("tail").and_then(|t| t.parse().ok()).unwrap_or(100);
                json(200, &node.logs(&format!("{ns}/{name}"), tail))
            }
            (&Method::GET, ["v1", what @ ("revisions" | "pods")]) => {
                let g =
                    self.authorize(&parts, Need::View(q.get("namespace").map(String::as_str)))?;
                node.linearize().await?;
                let ns = q.get("namespace").cloned().or(g.namespace);
                let app = q.get("app").cloned();
                let keep = |n: &str, a: &str| {
                    ns.as_deref().is_none_or(|x| x == n) && app.as_deref().is_none_or(|x| x == a)
                };
                if *what == "pods" {
                    let pods: Vec<_> = node.shared.read(|s| {
                        s.pods
                            .values()
                            .filter(|p| keep(&p.namespace, &p.app))
                            .cloned()
                            .collect()
                    });
                    json(200, &pods)
                } else {
                    let revs: Vec<_> = node.shared.read(|s| {
                        s.revisions
                            .values()
                            .flatten()
                            .filter(|r| keep(&r.spec.namespace, &r.spec.name))
                            .cloned()
                            .collect()
                    });
                    json(200, &revs)
                }
            }
            // --- cron jobs ------------------------------------------------------------
            (&Method::PUT, ["v1", "cronjobs", ns, name]) => {
                self.authorize(&parts, Need::Deploy(ns))?;
                let req: CronJobApply = parse(&body)?;
                if req.spec.namespace != *ns || req.spec.name != *name {
                    return Err(fail(
                        422,
                        "invalid",
                        format!(
                            "the body describes {}/{}, not {ns}/{name}",
                            req.spec.namespace, req.spec.name
                        ),
                    ));
                }
                self.reply(
                    node.propose(Command::ApplyCronJob {
                        spec: Box::new(req.spec),
                        component: req.component,
                        at: now_millis(),
                    })
                    .await?,
                )
            }
            (&Method::DELETE, ["v1", "cronjobs", ns, name]) => {
                self.authorize(&parts, Need::Deploy(ns))?;
                self.reply(
                    node.propose(Command::DeleteCronJob {
                        namespace: ns.to_string(),
                        name: name.to_string(),
                        at: now_millis(),
                    })
                    .await?,
                )
            }
            (
                &Method::POST,
                [
                    "v1",
                    "cronjobs",
                    ns,
                    name,
                    action @ ("suspend" | "resume" | "run"),
                ],
            ) => {
                self.authorize(&parts, Need::Deploy(ns))?;
                let job = dabba_spec::resources::app_key(ns, name);
                if !node.shared.read(|s| s.cron.jobs.contains_key(&job)) {
                    return Err(fail(404, "not_found", format!("no cron job {job}")));
                }
                let change = match *action {
                    "run" => crate::reconcile::cron::CronChange::RunNow { job },
                    a => crate::reconcile::cron::CronChange::Suspend {
                        job,
                        suspend: a == "suspend",
                    },
                };
                self.reply(
                    node.propose(Command::Cron {
                        changes: vec![change],
                        at: now_millis(),
                    })
                    .await?,
                )
            }
            (&Method::GET, ["v1", "cronjobs"]) => {
                let g =
                    self.authorize(&parts, Need::View(q.get("namespace").map(String::as_str)))?;
                node.linearize().await?;
                let ns = q.get("namespace").cloned().or(g.namespace);
                let now = now_millis();
                json(
                    200,
                    &node
                        .shared
                        .read(|s| views::cron_jobs(s, ns.as_deref(), now)),
                )
            }
            (&Method::POST, ["v1", "runs", ns, run, "report"]) => {
                self.authorize(&parts, Need::Host)?;
                let report: dabba_spec::cronjob::RunReport = parse(&body)?;
                self.reply(
                    node.propose(Command::Cron {
                        changes: vec![crate::reconcile::cron::CronChange::Report {
                            run: dabba_spec::resources::app_key(ns, run),
                            report,
                        }],
                        at: now_millis(),
                    })
                    .await?,
                )
            }
            (&Method::GET, ["v1", "hosts"]) => {
                self.authorize(&parts, Need::View(None))?;
                node.linearize().await?;
                let hosts: Vec<_> = node.shared.read(|s| s.hosts.values().cloned().collect());
                json(200, &hosts)
            }
            (&Method::GET, ["v1", "watch"]) => {
                self.authorize(&parts, Need::View(None))?;
                let since: u64 = q.get("since").and_then(|s| s.parse().ok()).unwrap_or(0);
                let version = self.wait_past(since, wait_of(&q)).await;
                json(200, &WatchResponse { version })
            }
            // --- tokens and cluster ---------------------------------------------------
            (&Method::POST, ["v1", "tokens"]) => {
                self.authorize(&parts, Need::Admin)?;
                let req: TokenRequest = parse(&body)?;
                if let Some(ns) = &req.namespace
                    && !valid_name(ns)
                {
                    return Err(fail(
                        422,
                        "invalid",
                        format!("`{ns}` is not a namespace name"),
                    ));
                }
                let token = new_token();
                node.propose(Command::CreateToken {
                    hash: token_hash(&token),
                    grant: Grant {
                        role: req.role,
                        namespace: req.namespace,
                        label: req.label,
                    },
                })
                .await?;
                json(201, &TokenResponse { token })
            }
            (&Method::GET, ["v1", "cluster"]) => {
                self.authorize(&parts, Need::View(None))?;
                json(200, &node.status())
            }
            (&Method::GET, ["v1", "cluster", "peer-token"]) => {
                self.authorize(&parts, Need::Admin)?;
                json(
                    200,
                    &PeerToken {
                        token: node.peer_token().to_string(),
                    },
                )
            }
            (&Method::POST, ["v1", "cluster", "members"]) => {
                self.authorize(&parts, Need::Admin)?;
                let req: AddMember = parse(&body)?;
                node.add_member(req.id, &req.address).await?;
                json(200, &node.status())
            }
            (&Method::DELETE, ["v1", "cluster", "members", id]) => {
                self.authorize(&parts, Need::Admin)?;
                let id: u64 = id
                    .parse()
                    .map_err(|_| fail(400, "bad_request", "member id must be a number"))?;
                node.remove_member(id).await?;
                json(200, &node.status())
            }
            // --- hosts ----------------------------------------------------------------
            (&Method::POST, ["v1", "hosts", "register"]) => {
                self.authorize(&parts, Need::Host)?;
                let info: HostInfo = parse(&body)?;
                if !valid_name(&info.name) {
                    return Err(fail(
                        422,
                        "invalid",
                        format!("`{}` is not a valid host name", info.name),
                    ));
                }
                node.heartbeat(&info.name, &[], &[], Vec::new()).await;
                self.reply(
                    node.propose(Command::RegisterHost {
                        info,
                        at: now_millis(),
                    })
                    .await?,
                )
            }
            (&Method::POST, ["v1", "hosts", name, "heartbeat"]) => {
                self.authorize(&parts, Need::Host)?;
                let hb: Heartbeat = parse(&body)?;
                let logs = hb
                    .logs
                    .into_iter()
                    .map(|l| (format!("{}/{}", l.namespace, l.app), l.lines))
                    .collect();
                node.heartbeat(name, &hb.pods, &hb.held, logs).await;
                json(200, &serde_json::json!({}))
            }
            (&Method::GET, ["v1", "hosts", name, "assignments"]) => {
                self.authorize(&parts, Need::Host)?;
                let since: u64 = q.get("since").and_then(|s| s.parse().ok()).unwrap_or(0);
                self.wait_past(since, wait_of(&q)).await;
                node.linearize().await?;
                json(200, &node.shared.read(|s| views::host_view(s, name)))
            }
            // --- workload state --------------------------------------------------------
            (&Method::POST, ["v1", "kv", "write"]) => {
                self.authorize(&parts, Need::Host)?;
                let w: KvWrite = parse(&body)?;
                match node
                    .propose(Command::Kv {
                        bucket: w.bucket,
                        write: w.write,
                        id: w.id,
                    })
                    .await?
                {
                    Reply::Kv { result } => json(200, &KvWriteResult { result }),
                    other => Err(fail(500, "internal", format!("unexpected reply {other:?}"))),
                }
            }
            (&Method::POST, ["v1", "kv", "read"]) => {
                self.authorize(&parts, Need::Host)?;
                let r: KvRead = parse(&body)?;
                node.linearize().await?;
                let values = node.shared.read(|s| {
                    let bucket = s.kv.get(&r.bucket);
                    r.keys
                        .iter()
                        .map(|k| bucket.and_then(|b| b.get(k)).cloned())
                        .collect()
                });
                json(200, &KvValues { values })
            }
            (&Method::POST, ["v1", "kv", "list"]) => {
                self.authorize(&parts, Need::Host)?;
                let r: KvList = parse(&body)?;
                node.linearize().await?;
                let limit = r.limit.clamp(1, dabba_spec::kv::LIST_PAGE);
                let keys: Vec<String> = node.shared.read(|s| {
                    let Some(bucket) = s.kv.get(&r.bucket) else {
                        return Vec::new();
                    };
                    let start = match &r.cursor {
                        Some(c) => std::ops::Bound::Excluded(c.clone()),
                        None => std::ops::Bound::Unbounded,
                    };
                    bucket
                        .range((start, std::ops::Bound::Unbounded))
                        .take(limit + 1)
                        .map(|(k, _)| k.clone())
                        .collect()
                });
                let (keys, cursor) = dabba_spec::kv::page(keys, limit);
                json(200, &KvKeys { keys, cursor })
            }
            _ => Err(fail(
                404,
                "not_found",
                format!("no endpoint {} {}", parts.method, parts.uri.path()),
            )),
        }
    }

    /// Answers a command's reply: the app it returned, or the reason it was refused.
    fn reply(&self, reply: Reply) -> Answer {
        match reply {
            Reply::Ok => json(200, &serde_json::json!({})),
            Reply::App { app } => json(200, &app),
            Reply::Kv { result } => json(200, &KvWriteResult { result }),
            Reply::Batch { .. } | Reply::Activated { .. } => {
                Err(fail(500, "internal", "unexpected reply"))
            }
            Reply::Rejected { code, message } => {
                let name = match code {
                    crate::command::Rejection::AlreadyInitialized => "already_initialized",
                    crate::command::Rejection::NotFound => "not_found",
                    crate::command::Rejection::RouteConflict => "route_conflict",
                    crate::command::Rejection::MissingComponent => "missing_component",
                    crate::command::Rejection::Invalid => "invalid",
                };
                Err(fail(code.status(), name, message))
            }
        }
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

    async fn raft_rpc(&self, parts: &http::request::Parts, rpc: &str, body: &[u8]) -> Answer {
        let token = parts
            .headers
            .get(PEER_TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if token_hash(token) != token_hash(self.node.peer_token()) {
            return Err(fail(
                401,
                "unauthenticated",
                "raft RPCs need the cluster's peer token",
            ));
        }
        let raft = &self.node.raft;
        match rpc {
            "append" => json(200, &raft.append_entries(parse(body)?).await),
            "vote" => json(200, &raft.vote(parse(body)?).await),
            "snapshot" => json(200, &raft.install_snapshot(parse(body)?).await),
            other => Err(fail(404, "not_found", format!("no raft rpc {other}"))),
        }
    }

    fn metrics(&self) -> Response {
        let m = self.node.raft.metrics().borrow().clone();
        let set = |f: &str, v: u64| self.raft_gauges.with_label_values(&[f]).set(v as i64);
        set("term", m.current_term);
        set("leader", m.current_leader.unwrap_or(0));
        set("last_log_index", m.last_log_index.unwrap_or(0));
        set("applied_index", m.last_applied.map_or(0, |l| l.index));
        set(
            "is_leader",
            u64::from(m.current_leader == Some(self.node.id)),
        );
        for member in self.node.status().members {
            if let Some(lag) = member.lag {
                self.lag
                    .with_label_values(&[&member.id.to_string()])
                    .set(lag as i64);
            }
        }
        let mut out = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &self.registry.gather(),
            &mut out,
        )
        .expect("encoding to a Vec");
        http::Response::builder()
            .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")
            .body(Full::new(Bytes::from(out)))
            .expect("valid response")
    }
}

fn wait_of(q: &HashMap<String, String>) -> Duration {
    q.get("wait_ms")
        .and_then(|w| w.parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or(MAX_WAIT)
        .min(MAX_WAIT)
}

/// Checks an app spec sent to `PUT /v1/apps/{ns}/{name}`.
fn validate_spec(spec: &AppSpec, ns: &str, name: &str) -> Result<(), Failure> {
    if spec.namespace != ns || spec.name != name {
        return Err(fail(
            422,
            "invalid",
            format!(
                "the body describes {}/{}, not {ns}/{name}",
                spec.namespace, spec.name
            ),
        ));
    }
    if !valid_name(ns) || !valid_name(name) {
        return Err(fail(
            422,
            "invalid",
            "names are 1-63 lower-case letters, digits and '-'",
        ));
    }
    if !spec.route.prefix.starts_with('/') {
        return Err(fail(422, "invalid", "route must start with '/'"));
    }
    spec.limits
        .resolve(WorkloadKind::Http)
        .map_err(|e| fail(422, "invalid", format!("limits: {e}")))?;
    if let Some(scale) = &spec.scale {
        scale
            .validate()
            .map_err(|e| fail(422, "invalid", format!("scale.{}: {}", e.field, e.message)))?;
    }
    if spec.replicas > dabba_spec::manifest::MAX_REPLICAS {
        return Err(fail(
            422,
            "invalid",
            format!("at most {} replicas", dabba_spec::manifest::MAX_REPLICAS),
        ));
    }
    Ok(())
}
