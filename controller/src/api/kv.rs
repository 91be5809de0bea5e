//! Workload state: the hosts' `wasi:keyvalue` calls, `POST /v1/kv/{write,read,list}`.
//! Writes go through Raft (a write with an id is applied at most once); reads are
//! linearizable. A host reaches only the buckets granted to what runs on it — its
//! pods, its cron job runs, its rollout checks — so a stolen host credential opens one
//! host's tenants, not every namespace's ledger.

use dabba_spec::api::{KV_VALUES_BINARY, KvKeys, KvList, KvRead, KvValues, KvWrite, KvWriteResult};
use std::collections::{HashMap, HashSet};

use http::Method;

use super::auth::{Access, Rule};
use super::router::Router;
use super::{Answer, Api, Call, fail, json, parse};
use crate::command::{Command, Reply};

pub(super) fn routes(r: &mut Router) {
    r.leader(
        Method::POST,
        "/v1/kv/write",
        Access::Token(Rule::Host),
        handler!(write),
    );
    r.leader(
        Method::POST,
        "/v1/kv/read",
        Access::Token(Rule::Host),
        handler!(read),
    );
    r.leader(
        Method::POST,
        "/v1/kv/list",
        Access::Token(Rule::Host),
        handler!(list),
    );
}

async fn write(api: &Api, call: Call) -> Answer {
    let w: KvWrite = parse(&call.body)?;
    api.reaches(&call, &w.bucket)?;
    let fenced = w.fence.is_some();
    match api
        .node
        .propose(Command::Kv {
            bucket: w.bucket,
            write: w.write,
            id: w.id,
            fence: w.fence,
        })
        .await?
    {
        Reply::Kv { result } => {
            if fenced {
                let refused = matches!(result, Err(dabba_spec::kv::KvError::Fenced { .. }));
                api.metrics
                    .fenced_writes
                    .with_label_values(&[if refused { "refused" } else { "applied" }])
                    .inc();
            }
            json(200, &KvWriteResult { result })
        }
        other => Err(fail(500, "internal", format!("unexpected reply {other:?}"))),
    }
}

async fn read(api: &Api, call: Call) -> Answer {
    let r: KvRead = parse(&call.body)?;
    api.reaches(&call, &r.bucket)?;
    api.node.linearize().await?;
    let values = api
        .node
        .shared
        .workload()
        .and_then(|view| view.read_many(&r.bucket, &r.keys))
        .map_err(unavailable)?;
    let values = KvValues { values };
    let binary = call
        .parts
        .headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim() == KV_VALUES_BINARY));
    if !binary {
        return json(200, &values);
    }
    Ok(http::Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, KV_VALUES_BINARY)
        .body(dabba_client::transport::whole(values.to_binary()))
        .expect("valid response"))
}

async fn list(api: &Api, call: Call) -> Answer {
    let r: KvList = parse(&call.body)?;
    api.reaches(&call, &r.bucket)?;
    api.node.linearize().await?;
    let limit = r.limit.clamp(1, dabba_spec::kv::LIST_PAGE);
    let keys = api
        .node
        .shared
        .workload()
        .and_then(|view| view.keys(&r.bucket, r.cursor.as_deref(), limit + 1))
        .map_err(unavailable)?;
    let (keys, cursor) = dabba_spec::kv::page(keys, limit);
    json(200, &KvKeys { keys, cursor })
}

/// The workload store could not be read: this controller cannot answer, another may.
fn unavailable(e: dabba_spec::kv::KvError) -> super::Failure {
    fail(
        503,
        "storage_unavailable",
        format!("reading the workload store: {e}"),
    )
}

/// Which buckets each host may reach, as of one state version: worked out again only
/// when the state changed, not on every call (a settlement reads thousands of times a
/// second).
#[derive(Default)]
pub(super) struct BucketGrants {
    version: Option<u64>,
    by_host: HashMap<String, HashSet<String>>,
}

impl Api {
    /// Refuses a call on `bucket` from a host that runs nothing granted it (admins
    /// reach every bucket).
    fn reaches(&self, call: &Call, bucket: &str) -> Result<(), super::Failure> {
        let grant = call.grant();
        let Some(host) = grant.host.as_deref() else {
            return Ok(());
        };
        let allowed = {
            let mut cache = self.buckets.lock().expect("bucket grants lock");
            let version = self.node.shared.read(|s| s.version);
            if cache.version != Some(version) {
                cache.by_host = self.node.shared.read(super::views::host_buckets);
                cache.version = Some(version);
            }
            cache
                .by_host
                .get(host)
                .is_some_and(|set| set.contains(bucket))
        };
        if allowed {
            return Ok(());
        }
        Err(fail(
            403,
            "forbidden",
            format!("host {host} runs nothing granted bucket {bucket}"),
        ))
    }
}
