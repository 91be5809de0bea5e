//! The paths of the `/v1` endpoints (the table in `spec/api.md`), built in one place.
//!
//! Path segments are percent-encoded and query strings are form-encoded, so a name or a
//! key with a `/`, `?`, `%` or space reaches the controller as the one value it is.
//! The controller's router decodes them (`controller/src/api/router.rs`).

use dabba_spec::Digest;
use dabba_spec::resources::ResourceKey;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

/// Bytes escaped in a path segment: everything but unreserved characters and the
/// sub-delimiters that are harmless in a segment.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// `/v1/` followed by each segment, percent-encoded.
fn v1(segments: &[&str]) -> String {
    let mut path = String::from("/v1");
    for s in segments {
        path.push('/');
        path.extend(utf8_percent_encode(s, SEGMENT));
    }
    path
}

/// `path?k=v&...` with the pairs whose value is present, form-encoded.
fn with_query(path: String, pairs: &[(&str, Option<&str>)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (k, v) in pairs {
        if let Some(v) = v {
            q.append_pair(k, v);
            any = true;
        }
    }
    if any {
        format!("{path}?{}", q.finish())
    } else {
        path
    }
}

pub const HEALTHZ: &str = "/v1/healthz";
pub const CLUSTER: &str = "/v1/cluster";
pub const PEER_TOKEN: &str = "/v1/cluster/peer-token";
pub const MEMBERS: &str = "/v1/cluster/members";
pub const PREFERRED_LEADER_REGION: &str = "/v1/cluster/preferred-leader-region";
pub const TOKENS: &str = "/v1/tokens";

/// `/v1/tokens/{id}`.
pub fn token(id: &str) -> String {
    v1(&["tokens", id])
}

pub const HOSTS: &str = "/v1/hosts";
pub const REGISTER_HOST: &str = "/v1/hosts/register";
pub const KV_WRITE: &str = "/v1/kv/write";
pub const KV_READ: &str = "/v1/kv/read";
pub const KV_LIST: &str = "/v1/kv/list";

/// `GET /v1/audit?since=MS`.
pub fn audit(since: u64) -> String {
    format!("/v1/audit?since={since}")
}

pub fn member(id: u64) -> String {
    v1(&["cluster", "members", &id.to_string()])
}

pub fn blob(digest: &Digest) -> String {
    v1(&["blobs", &digest.to_string()])
}

/// `/.dabba/blobs/{digest}` on a host's ingress: a component it has cached.
pub fn host_blob(digest: &Digest) -> String {
    format!("/.dabba/blobs/{digest}")
}

/// `/v1/apps`, `/v1/revisions`, `/v1/pods`, `/v1/cronjobs`, `/v1/rollouts` or
/// `/v1/analysistemplates`, optionally narrowed.
pub fn listing(resource: &str, namespace: Option<&str>, app: Option<&str>) -> String {
    with_query(v1(&[resource]), &[("namespace", namespace), ("app", app)])
}

pub fn app(key: &ResourceKey) -> String {
    v1(&["apps", key.namespace(), key.name()])
}

/// `/v1/apps/{ns}/{name}/{action}`: `scale`, `activate`, `logs`, `rollout`, `undo`.
pub fn app_action(key: &ResourceKey, action: &str) -> String {
    v1(&["apps", key.namespace(), key.name(), action])
}

/// `/v1/{apps|runs}/{ns}/{name}/logs` and the query.
pub fn logs(kind: &str, key: &ResourceKey, q: &dabba_spec::api::LogQuery) -> String {
    let path = v1(&[kind, key.namespace(), key.name(), "logs"]);
    match q.to_query() {
        query if query.is_empty() => path,
        query => format!("{path}?{query}"),
    }
}

pub const REGIONS: &str = "/v1/regions";

/// `/v1/regions/{region}/{action}`: `failover`, `drain`, `restore`.
pub fn region_action(region: &str, action: &str) -> String {
    v1(&["regions", region, action])
}

pub fn analysis_template(key: &ResourceKey) -> String {
    v1(&["analysistemplates", key.namespace(), key.name()])
}

/// `/v1/secrets/{ns}/{name}`.
pub fn secret(key: &ResourceKey) -> String {
    v1(&["secrets", key.namespace(), key.name()])
}

/// `/v1/namespaces/{ns}/policy`.
pub fn namespace_policy(ns: &str) -> String {
    v1(&["namespaces", ns, "policy"])
}

pub const ROLES: &str = "/v1/roles";
pub const ROLE_BINDINGS: &str = "/v1/rolebindings";

/// `/v1/roles/{name}` or `/v1/rolebindings/{name}`, with `?namespace=` when namespaced.
pub fn rbac_object(collection: &str, name: &str, namespace: Option<&str>) -> String {
    with_query(
        v1(&[collection.trim_start_matches("/v1/"), name]),
        &[("namespace", namespace)],
    )
}

/// `/v1/auth/can-i?verb=V&resource=R[&namespace=NS]`.
pub fn can_i(verb: &str, resource: &str, namespace: Option<&str>) -> String {
    with_query(
        v1(&["auth", "can-i"]),
        &[
            ("verb", Some(verb)),
            ("resource", Some(resource)),
            ("namespace", namespace),
        ],
    )
}

pub const ROTATE_SECRET_KEY: &str = "/v1/secrets/rotate-key";

pub fn cron_job(key: &ResourceKey) -> String {
    v1(&["cronjobs", key.namespace(), key.name()])
}

/// `/v1/cronjobs/{ns}/{name}/{action}`: `suspend`, `resume`, `run`.
pub fn cron_job_action(key: &ResourceKey, action: &str) -> String {
    v1(&["cronjobs", key.namespace(), key.name(), action])
}

pub fn run_report(run: &ResourceKey) -> String {
    v1(&["runs", run.namespace(), run.name(), "report"])
}

pub fn heartbeat(host: &str) -> String {
    v1(&["hosts", host, "heartbeat"])
}

pub fn assignments(host: &str, since: u64, wait_ms: u64) -> String {
    with_query(
        v1(&["hosts", host, "assignments"]),
        &[
            ("since", Some(&since.to_string())),
            ("wait_ms", Some(&wait_ms.to_string())),
        ],
    )
}

pub fn watch(since: u64, wait_ms: u64) -> String {
    with_query(
        v1(&["watch"]),
        &[
            ("since", Some(&since.to_string())),
            ("wait_ms", Some(&wait_ms.to_string())),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_and_query_values_are_encoded() {
        let key = ResourceKey::new("default", "a b");
        assert_eq!(app(&key), "/v1/apps/default/a%20b");
        assert_eq!(
            listing("pods", Some("a/b"), Some("x&y=z")),
            "/v1/pods?namespace=a%2Fb&app=x%26y%3Dz"
        );
        assert_eq!(listing("apps", None, None), "/v1/apps");
        assert_eq!(
            assignments("h1", 7, 10_000),
            "/v1/hosts/h1/assignments?since=7&wait_ms=10000"
        );
        assert_eq!(
            blob(&Digest::of(b"abc")),
            "/v1/blobs/sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
