//! `GET /v1/apps/{ns}/{name}/logs` and `GET /v1/runs/{ns}/{name}/logs`: the lines of
//! an app's pods (a job run's attempts) from the hosts whose disks hold them.
//!
//! Logs stay where they are written (`dabba_host::logs`); this controller asks every
//! host for its part, showing the cluster's log key, and merges the answers: a
//! controller failover loses no line, and no line ever passes through Raft. A host that
//! cannot be reached is named in the [`LOGS_UNREACHABLE_HEADER`] of the answer, not
//! silently left out. `follow` keeps the answer open and relays each host's new lines
//! as they come; a run's ends once the run has ended.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dabba_client::transport::{self as http_client, Body, streamed, whole};
use dabba_spec::api::{LOGS_UNREACHABLE_HEADER, LogLine, LogQuery, READ_KEY_HEADER};
use dabba_spec::resources::{HostInfo, ResourceKey};
use http::Method;
use http_body_util::BodyExt;
use tokio::sync::{mpsc, watch};

use super::auth::{Access, Ns, Rule};
use super::router::Router;
use super::{Answer, Api, Call, fail};

pub(super) fn routes(r: &mut Router) {
    r.leader(
        Method::GET,
        "/v1/apps/{ns}/{name}/logs",
        Access::Token(Rule::View(Ns::Path)),
        handler!(app_logs),
    );
    r.leader(
        Method::GET,
        "/v1/runs/{ns}/{name}/logs",
        Access::Token(Rule::View(Ns::Path)),
        handler!(run_logs),
    );
}

/// How long a host may take to begin its answer.
const HOST_PATIENCE: Duration = Duration::from_secs(3);
/// The most one host's answer may hold, unfollowed.
const MAX_ANSWER: usize = 64 << 20;

/// What a request asks of the hosts (checked here, so a bad value is one 400 from the
/// controller, not one per host).
fn options(call: &Call) -> Result<LogQuery, super::Failure> {
    LogQuery::parse(call.parts.uri.query().unwrap_or(""))
        .map_err(|why| fail(400, "bad_request", why))
}

async fn app_logs(api: &Api, call: Call) -> Answer {
    let key = ResourceKey::new(call.param("ns"), call.param("name"));
    let opts = options(&call)?;
    let path = format!("apps/{}/{}", key.namespace(), key.name());
    gather(api, &path, opts, None).await
}

async fn run_logs(api: &Api, call: Call) -> Answer {
    let key = ResourceKey::new(call.param("ns"), call.param("name"));
    if api.node.shared.read(|s| !s.cron.runs.contains_key(&key)) {
        return Err(fail(
            404,
            "not_found",
            format!("no job run {key} (see `dabba get jobs`)"),
        ));
    }
    let opts = options(&call)?;
    let path = format!("runs/{}/{}", key.namespace(), key.name());
    gather(api, &path, opts, Some(key)).await
}

/// Asks every host for `path`'s lines and merges them; when following a run, until it
/// has ended.
async fn gather(api: &Api, path: &str, opts: LogQuery, run: Option<ResourceKey>) -> Answer {
    let hosts: Vec<HostInfo> = api
        .node
        .shared
        .read(|s| s.hosts.values().map(|h| h.info.clone()).collect());
    let key = api.node.read_key();
    let mut asks = tokio::task::JoinSet::new();
    for h in hosts {
        let url = format!(
            "{}/.dabba/logs/{path}?{}",
            h.address.trim_end_matches('/'),
            opts.to_query()
        );
        let (client, key) = (api.node.client.clone(), key.clone());
        asks.spawn(async move { (h.name, open(&client, &url, &key).await) });
    }
    let mut bodies = Vec::new();
    let mut unreachable = Vec::new();
    while let Some(done) = asks.join_next().await {
        let Ok((host, answer)) = done else { continue };
        match answer {
            Ok(body) => bodies.push((host, body)),
            Err(why) => {
                tracing::debug!(%host, %why, "a host's logs could not be read");
                unreachable.push(host);
            }
        }
    }
    unreachable.sort();
    let body = if opts.follow {
        follow(api, bodies, run)
    } else {
        whole(merged(bodies, opts.tail).await)
    };
    let mut resp = http::Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, "application/x-ndjson");
    if !unreachable.is_empty() {
        resp = resp.header(LOGS_UNREACHABLE_HEADER, unreachable.join(","));
    }
    resp.body(body)
        .map_err(|e| fail(500, "internal", e.to_string()))
}

/// Opens one host's answer: its body, or why not.
async fn open(
    client: &http_client::HttpClient,
    url: &str,
    key: &str,
) -> Result<hyper::body::Incoming, String> {
    let req = http::Request::get(url)
        .header(READ_KEY_HEADER, key)
        .body(whole(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(HOST_PATIENCE, http_client::send_streamed(client, req))
        .await
        .map_err(|_| format!("no answer within {HOST_PATIENCE:?}"))?
        .map_err(|e| e.to_string())?;
    if resp.status() != http::StatusCode::OK {
        return Err(format!("answered {}", resp.status()));
    }
    Ok(resp.into_body())
}

/// Every host's lines, in time order, the last `tail` of them.
async fn merged(bodies: Vec<(String, hyper::body::Incoming)>, tail: Option<usize>) -> Vec<u8> {
    let mut lines: Vec<LogLine> = Vec::new();
    for (host, body) in bodies {
        let bytes = match http_body_util::Limited::new(body, MAX_ANSWER)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                tracing::warn!(%host, error = %e, "a host's logs were cut off");
                continue;
            }
        };
        lines.extend(
            bytes
                .split(|b| *b == b'\n')
                .filter_map(|l| serde_json::from_slice::<LogLine>(l).ok()),
        );
    }
    lines.sort_by_key(|l| l.t);
    if let Some(n) = tail {
        lines.drain(..lines.len().saturating_sub(n));
    }
    let mut out = Vec::new();
    for l in &lines {
        serde_json::to_writer(&mut out, l).expect("a log line serializes");
        out.push(b'\n');
    }
    out
}

/// Relays each host's lines as they come (whole lines, never a piece of one), until the
/// reader goes away, every host's answer ends, or — for a run — the run has ended.
fn follow(
    api: &Api,
    bodies: Vec<(String, hyper::body::Incoming)>,
    run: Option<ResourceKey>,
) -> Body {
    let (tx, body) = streamed(None, 64);
    let (stop_tx, stop) = watch::channel(false);
    for (host, incoming) in bodies {
        tokio::spawn(relay(host, incoming, tx.clone(), stop.clone()));
    }
    if let Some(run) = run {
        let shared = api.node.shared.clone();
        tokio::spawn(async move {
            loop {
                let active =
                    shared.read(|s| s.cron.runs.get(&run).is_some_and(|r| r.phase.is_active()));
                if !active {
                    // The hosts look at their logs every 200 ms: let the last lines come.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let _ = stop_tx.send(true);
                    return;
                }
                if stop_tx.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
    }
    body
}

async fn relay(
    host: String,
    mut incoming: hyper::body::Incoming,
    tx: mpsc::Sender<Result<Bytes, http_client::BoxError>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut pending = BytesMut::new();
    // Stopped when told; never, when no one will tell (an app's logs).
    let stopped = async move {
        if stop.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let mut stopped = std::pin::pin!(stopped);
    loop {
        let frame = tokio::select! {
            f = incoming.frame() => f,
            () = tx.closed() => return,
            () = &mut stopped => return,
        };
        let data = match frame {
            Some(Ok(f)) => match f.into_data() {
                Ok(d) => d,
                Err(_) => continue,
            },
            Some(Err(e)) => {
                tracing::debug!(%host, error = %e, "a host's log stream broke");
                return;
            }
            None => return,
        };
        pending.extend_from_slice(&data);
        if let Some(end) = pending.iter().rposition(|b| *b == b'\n') {
            let lines = pending.split_to(end + 1).freeze();
            if tx.send(Ok(lines)).await.is_err() {
                return;
            }
        }
    }
}
