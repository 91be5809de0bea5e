//! The audit log: what is recorded, and how it reaches the replicated state.
//!
//! Recorded: every request that changes the cluster (PUT, POST, DELETE) other than the
//! hosts' own traffic (heartbeats, buckets, reports, activations: the data plane, many
//! thousands a second, audited by what they act for), and every request refused with
//! 401 or 403 — on any endpoint, on whichever controller refused it. A request a
//! follower forwards is recorded once, by the leader that answered it, with the source
//! address and request id the follower saw (passed on with the peer token, so a client
//! cannot make them up).
//!
//! How: the entry of a change that succeeded is committed (`Command::Audit`) before
//! the change is answered, so a crash cannot lose the entry of a change a client saw
//! succeed (unless the cluster commits nothing for 5 s: the answer then goes and the
//! entry follows when it can). A change that failed is recorded like a refusal.
//! Refusals are collected in memory and, every 200 ms, the leader proposes them as one
//! command; a follower sends its own to the leader (`POST /v1/audit`, peer token),
//! keeping them while there is none. Held entries
//! are bounded ([`HELD`]); refusals are recorded at most [`REFUSALS_PER_SECOND`] a second
//! per controller, so a flood of bad tokens cannot grow the log or the buffer without
//! bound; what is dropped is counted (`dabba_audit_entries_total{result="dropped"}`).
//!
//! `GET /v1/audit?since=MS` (admin) answers the entries since then with the hash before
//! them; `dabba audit` verifies the chain before it shows anything.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dabba_spec::audit::{AuditEntry, AuditLevel};
use http::Method;
use prometheus::IntCounterVec;

use super::auth::{Access, Rule};
use super::router::Router;
use super::{Answer, Api, Call, json, parse};
use crate::command::Command;
use crate::node::{Controller, now_millis};

pub(super) fn routes(r: &mut Router) {
    r.leader(
        Method::GET,
        "/v1/audit",
        Access::Token(Rule::Admin),
        handler!(list),
    );
    r.leader(Method::POST, "/v1/audit", Access::Peer, handler!(take));
    r.leader(
        Method::PUT,
        "/v1/audit/retention",
        Access::Token(Rule::Admin),
        handler!(retention),
    );
}

/// Sets how long entries are kept.
async fn retention(api: &Api, call: Call) -> Answer {
    let r: dabba_spec::audit::AuditRetention = parse(&call.body)?;
    if r.max_age_ms == Some(0) {
        return Err(super::fail(
            422,
            "invalid",
            "max_age_ms: keep entries for some time (null: by count only)",
        ));
    }
    super::reply(
        api.node
            .propose(Command::AuditRetention {
                max_age_ms: r.max_age_ms,
            })
            .await?,
    )
}

/// Entries a controller holds before they are committed; older ones are dropped.
pub const HELD: usize = 10_000;
/// Refusals recorded per second per controller.
pub const REFUSALS_PER_SECOND: u32 = 100;
/// Passes on, between controllers, the address a forwarded request came from.
pub const SOURCE_HEADER: &str = "x-dabba-source";
/// Vouches, with the peer token, for the source and request id a forwarding controller
/// passes on. Not the Raft RPCs' header: a forwarded request gets no peer's rights.
pub const FORWARDER_HEADER: &str = "x-dabba-forwarder";
/// The request id, answered to the client and passed on when forwarding.
pub const REQUEST_ID_HEADER: &str = "x-dabba-request-id";

async fn list(api: &Api, call: Call) -> Answer {
    api.node.linearize().await?;
    let since: u64 = call
        .query("since")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    json(200, &api.node.shared.read(|s| s.audit.since(since)))
}

/// A follower's entries, committed here.
async fn take(api: &Api, call: Call) -> Answer {
    let entries: Vec<AuditEntry> = parse(&call.body)?;
    super::reply(api.node.propose(Command::Audit { entries }).await?)
}

/// What one request was, as routing and admission found it.
#[derive(Debug, Default)]
pub(super) struct Seen {
    pub access: Option<Access>,
    pub pattern: Option<&'static str>,
    pub namespace: Option<String>,
    /// The token's label, once admission knows it.
    pub user: Option<String>,
    /// Sent on to the leader, which records it.
    pub forwarded: bool,
    pub source: String,
    pub request_id: String,
}

/// Collects entries and hands them to Raft.
pub(super) struct Recorder {
    level: AuditLevel,
    controller: u64,
    held: Mutex<Held>,
    counts: IntCounterVec,
}

#[derive(Default)]
struct Held {
    entries: VecDeque<AuditEntry>,
    /// Refusals recorded in the current second, and which second.
    refusals: (u64, u32),
}

impl Recorder {
    pub(super) fn new(level: AuditLevel, controller: u64, counts: IntCounterVec) -> Recorder {
        Recorder {
            level,
            controller,
            held: Mutex::new(Held::default()),
            counts,
        }
    }

    /// Records the request `seen` as answered with `status`, if it is audited. A
    /// refusal is held, to be committed with others within 200 ms; the entry of a
    /// change is returned, for the caller to commit before it answers (so no change is
    /// answered whose entry a crash could lose).
    pub(super) fn record(
        &self,
        seen: Seen,
        method: &Method,
        path: &str,
        status: u16,
        body: Option<&[u8]>,
    ) -> Option<AuditEntry> {
        if self.level == AuditLevel::None || seen.forwarded {
            return None;
        }
        let refused = status == 401 || status == 403;
        let changes = !matches!(*method, Method::GET | Method::HEAD);
        let data_plane = matches!(
            seen.access,
            Some(Access::Token(Rule::Host | Rule::HostAs) | Access::Peer | Access::Open)
        );
        if !(refused || (changes && !data_plane && seen.access.is_some())) {
            return None;
        }
        let now = now_millis();
        if refused {
            let mut held = self.held.lock().expect("audit lock");
            let second = now / 1000;
            if held.refusals.0 != second {
                held.refusals = (second, 0);
            }
            if held.refusals.1 >= REFUSALS_PER_SECOND {
                self.counts.with_label_values(&["dropped"]).inc();
                return None;
            }
            held.refusals.1 += 1;
        }
        let entry = AuditEntry {
            seq: 0,
            at: now,
            user: seen.user.unwrap_or_else(|| "anonymous".into()),
            verb: verb(method, seen.pattern),
            method: method.to_string(),
            path: path.to_string(),
            namespace: seen.namespace,
            status,
            source: seen.source,
            request_id: seen.request_id,
            controller: self.controller,
            body: match self.level {
                AuditLevel::Request if path.starts_with("/v1/secrets") => {
                    body.and_then(dabba_spec::audit::kept_secret_body)
                }
                AuditLevel::Request => body.and_then(dabba_spec::audit::kept_body),
                _ => None,
            },
            hash: String::new(),
        };
        if !refused {
            return Some(entry);
        }
        self.hold(entry);
        None
    }

    /// Keeps `entry` to be committed by the next flush.
    pub(super) fn hold(&self, entry: AuditEntry) {
        let mut held = self.held.lock().expect("audit lock");
        held.entries.push_back(entry);
        if held.entries.len() > HELD {
            held.entries.pop_front();
            self.counts.with_label_values(&["dropped"]).inc();
        }
    }

    /// Commits the entry of a change now; if that fails (leadership lost), it is held
    /// for the next flush.
    pub(super) async fn commit(&self, node: &Controller, entry: AuditEntry) {
        let committed = node
            .propose(Command::Audit {
                entries: vec![entry.clone()],
            })
            .await;
        match committed {
            Ok(_) => self.counts.with_label_values(&["recorded"]).inc(),
            Err(e) => {
                tracing::debug!(error = %e, "an audit entry not committed yet; keeping it");
                self.hold(entry);
            }
        }
    }

    /// Every 200 ms, commits what is held (on the leader) or sends it to the leader.
    pub(super) async fn flush_loop(self: Arc<Self>, node: Arc<Controller>) {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let entries: Vec<AuditEntry> = {
                let mut held = self.held.lock().expect("audit lock");
                held.entries.drain(..).collect()
            };
            if entries.is_empty() {
                continue;
            }
            let n = entries.len() as u64;
            let sent = if node.is_leader() {
                node.propose(Command::Audit {
                    entries: entries.clone(),
                })
                .await
                .map(drop)
                .map_err(|e| e.to_string())
            } else {
                send_to_leader(&node, &entries).await
            };
            match sent {
                Ok(()) => self.counts.with_label_values(&["recorded"]).inc_by(n),
                Err(e) => {
                    tracing::debug!(error = %e, "audit entries not committed yet; keeping them");
                    let mut held = self.held.lock().expect("audit lock");
                    for e in entries.into_iter().rev() {
                        held.entries.push_front(e);
                    }
                    while held.entries.len() > HELD {
                        held.entries.pop_front();
                        self.counts.with_label_values(&["dropped"]).inc();
                    }
                }
            }
        }
    }
}

/// Sends a follower's entries to the leader.
async fn send_to_leader(node: &Controller, entries: &[AuditEntry]) -> Result<(), String> {
    let leader = node.leader_address().ok_or("no leader")?;
    let body = serde_json::to_vec(entries).map_err(|e| e.to_string())?;
    let req = http::Request::post(format!("{leader}/v1/audit"))
        .header(crate::raft::network::PEER_TOKEN_HEADER, node.peer_token())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = dabba_client::transport::send(&node.client, req, Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("the leader answered {}", resp.status()))
    }
}

/// What a request asked, in a word: `get`/`list` for reads, `apply` for PUT, `delete`,
/// and for POST the endpoint's last fixed segment (`scale`, `rollout`, `run`, `tokens`,
/// `members`, ...).
fn verb(method: &Method, pattern: Option<&str>) -> String {
    let pattern = pattern.unwrap_or("");
    let last = pattern
        .rsplit('/')
        .find(|s| !s.starts_with('{') && !s.is_empty())
        .unwrap_or("");
    match *method {
        Method::GET | Method::HEAD if pattern.ends_with('}') => "get".into(),
        Method::GET | Method::HEAD => "list".into(),
        Method::PUT => "apply".into(),
        Method::DELETE => "delete".into(),
        _ => last.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_name_what_was_asked() {
        for (m, p, v) in [
            (Method::GET, "/v1/apps/{ns}/{name}", "get"),
            (Method::GET, "/v1/apps", "list"),
            (Method::PUT, "/v1/apps/{ns}/{name}", "apply"),
            (Method::DELETE, "/v1/cluster/members/{id}", "delete"),
            (Method::POST, "/v1/apps/{ns}/{name}/scale", "scale"),
            (Method::POST, "/v1/tokens", "tokens"),
            (Method::POST, "/v1/regions/{region}/drain", "drain"),
        ] {
            assert_eq!(verb(&m, Some(p)), v, "{m} {p}");
        }
    }

    fn recorder(level: AuditLevel) -> Recorder {
        let counts = IntCounterVec::new(prometheus::Opts::new("t", "t"), &["result"]).unwrap();
        Recorder::new(level, 1, counts)
    }

    fn seen(access: Access) -> Seen {
        Seen {
            access: Some(access),
            pattern: Some("/v1/apps/{ns}/{name}/scale"),
            namespace: Some("shop".into()),
            user: Some("ci".into()),
            forwarded: false,
            source: "127.0.0.1:9".into(),
            request_id: "r".into(),
        }
    }

    fn held(r: &Recorder) -> Vec<AuditEntry> {
        r.held.lock().unwrap().entries.iter().cloned().collect()
    }

    #[test]
    fn changes_and_refusals_are_recorded_reads_and_host_traffic_are_not() {
        let r = recorder(AuditLevel::Metadata);
        let path = "/v1/apps/shop/pay/scale";
        let deploy = || seen(Access::Token(Rule::Deploy));
        let change = r
            .record(deploy(), &Method::POST, path, 200, None)
            .expect("a change is recorded, to commit at once");
        assert_eq!(
            (change.user.as_str(), change.verb.as_str()),
            ("ci", "scale")
        );
        assert_eq!(change.body, None, "no bodies at the metadata level");
        let view = seen(Access::Token(Rule::View(super::super::auth::Ns::Path)));
        assert_eq!(r.record(view, &Method::GET, path, 200, None), None);
        let host = || seen(Access::Token(Rule::Host));
        assert_eq!(
            r.record(host(), &Method::POST, "/v1/kv/write", 200, None),
            None
        );
        assert_eq!(
            r.record(host(), &Method::POST, "/v1/kv/read", 403, None),
            None
        );
        assert_eq!(r.record(deploy(), &Method::GET, path, 401, None), None);
        let mut forwarded = deploy();
        forwarded.forwarded = true;
        assert_eq!(
            r.record(forwarded, &Method::POST, path, 200, Some(b"{}")),
            None
        );
        // The refusals are held for the next flush.
        let got: Vec<(String, u16)> = held(&r).into_iter().map(|e| (e.path, e.status)).collect();
        assert_eq!(
            got,
            [("/v1/kv/read".to_string(), 403), (path.to_string(), 401)]
        );

        let none = recorder(AuditLevel::None);
        assert_eq!(none.record(deploy(), &Method::POST, path, 200, None), None);
        none.record(deploy(), &Method::POST, path, 403, None);
        assert!(held(&none).is_empty());
        let request = recorder(AuditLevel::Request);
        let e = request
            .record(
                deploy(),
                &Method::POST,
                path,
                200,
                Some(br#"{"replicas":3}"#),
            )
            .unwrap();
        assert_eq!(e.body.as_deref(), Some(r#"{"replicas":3}"#));
    }

    #[test]
    fn refusals_are_recorded_at_a_bounded_rate() {
        let r = recorder(AuditLevel::Metadata);
        for _ in 0..(REFUSALS_PER_SECOND + 50) {
            r.record(
                seen(Access::Token(Rule::Admin)),
                &Method::POST,
                "/v1/tokens",
                401,
                None,
            );
        }
        let n = held(&r).len() as u32;
        // A second boundary may fall inside the loop: at most two seconds' worth.
        assert!(
            (REFUSALS_PER_SECOND..=2 * REFUSALS_PER_SECOND).contains(&n),
            "{n}"
        );
        assert!(r.counts.with_label_values(&["dropped"]).get() > 0 || n > REFUSALS_PER_SECOND);
    }
}
