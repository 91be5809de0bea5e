//! The replicated state: everything the cluster knows that must survive the loss of any
//! minority of controllers. [`State::apply`] is the state machine: a pure, deterministic
//! function of the state and one command.

pub mod cron;

use std::collections::{BTreeMap, VecDeque};

use dabba_spec::Digest;
use dabba_spec::kv::{self, KvError};
use dabba_spec::resources::{
    App, AppSpec, Grant, Host, HostState, Millis, Pod, PodPhase, ReplicaSet, ResourceKey, Revision,
};
use serde::{Deserialize, Serialize};

use crate::command::{Command, PodChange, Rejection, Reply};
use cron::CronState;

/// Revisions kept per app, the serving one included.
pub const REVISION_HISTORY: usize = 10;
/// Events kept for `describe`.
pub const EVENT_HISTORY: usize = 1000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Bumped by every command that changes what clients can see; watches wait on it.
    pub version: u64,
    pub initialized: bool,
    /// Grants by SHA-256 (hex) of the token secret.
    pub tokens: BTreeMap<String, Grant>,
    /// Components by digest.
    #[serde(with = "bytes_map")]
    pub blobs: BTreeMap<String, Vec<u8>>,
    pub apps: BTreeMap<ResourceKey, App>,
    /// Revisions by app, oldest first.
    pub revisions: BTreeMap<ResourceKey, Vec<Revision>>,
    /// Replica sets by `namespace/name/revision`.
    pub replica_sets: BTreeMap<String, ReplicaSet>,
    pub pods: BTreeMap<ResourceKey, Pod>,
    pub hosts: BTreeMap<String, Host>,
    /// Workload buckets by scoped bucket name, then key.
    #[serde(with = "kv_map")]
    pub kv: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// Numbers pod names, so no name is used twice.
    pub pod_seq: u64,
    pub events: VecDeque<Event>,
    /// Outcomes of the most recent identified KV writes by id, so a retried write is
    /// answered instead of applied twice; `kv_write_order` says which to forget first.
    #[serde(default)]
    pub kv_writes: BTreeMap<String, Result<kv::Outcome, KvError>>,
    #[serde(default)]
    pub kv_write_order: VecDeque<String>,
    /// Cron jobs and their runs.
    #[serde(default)]
    pub cron: CronState,
}

/// How many identified KV writes are remembered for deduplication. A retry comes within
/// seconds; at 10,000 writes/s this covers the last ten.
pub const KV_WRITE_MEMORY: usize = 100_000;

/// Something that happened to an object, for `dabba describe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub at: Millis,
    /// `app/default/payment`, `host/h1`, `pod/default/payment-r1-3`.
    pub object: String,
    pub reason: String,
    pub message: String,
}

/// The replica count an applied spec runs with: as given, or for an autoscaled app that
/// already runs, the count it has now within the new `[min, max]`.
fn autoscaled_replicas(spec: &AppSpec, running: Option<&AppSpec>) -> u32 {
    match (&spec.scale, running) {
        (Some(scale), Some(old)) if old.scale.is_some() => scale.clamp(old.replicas),
        _ => spec.replicas,
    }
}

pub fn replica_set_key(namespace: &str, app: &str, revision: u64) -> String {
    format!("{namespace}/{app}/{revision}")
}

fn rejected(code: Rejection, message: impl Into<String>) -> Reply {
    Reply::Rejected {
        code,
        message: message.into(),
    }
}

impl State {
    /// Applies one command. A rejected command changes nothing.
    pub fn apply(&mut self, command: &Command) -> Reply {
        match command {
            Command::Batch { commands } => Reply::Batch {
                replies: commands.iter().map(|c| self.apply(c)).collect(),
            },
            Command::Init { tokens } => {
                if self.initialized {
                    return rejected(
                        Rejection::AlreadyInitialized,
                        "the cluster is already initialized",
                    );
                }
                self.initialized = true;
                for (hash, grant) in tokens {
                    self.tokens.insert(hash.clone(), grant.clone());
                }
                self.version += 1;
                Reply::Ok
            }
            Command::CreateToken { hash, grant } => {
                self.tokens.insert(hash.clone(), grant.clone());
                self.version += 1;
                Reply::Ok
            }
            Command::RevokeToken { hash } => {
                if self.tokens.remove(hash).is_none() {
                    return rejected(Rejection::NotFound, "no such token");
                }
                self.version += 1;
                Reply::Ok
            }
            Command::PutBlob { digest, bytes } => {
                self.blobs
                    .entry(digest.to_string())
                    .or_insert_with(|| bytes.clone());
                Reply::Ok
            }
            Command::ApplyApp { spec, at } => self.apply_app(spec, *at),
            Command::Activate {
                namespace,
                name,
                host,
                at,
            } => self.activate(namespace, name, host.as_deref(), *at),
            Command::ApplyCronJob {
                spec,
                component,
                at,
            } => self.apply_cron_job(spec, *component, *at),
            Command::DeleteCronJob {
                namespace,
                name,
                at,
            } => {
                let key = ResourceKey::new(namespace, name);
                if self.cron.jobs.remove(&key).is_none() {
                    return rejected(Rejection::NotFound, format!("no cron job {key}"));
                }
                self.cron
                    .runs
                    .retain(|_, r| !(r.namespace == *namespace && r.job == *name));
                self.event(
                    *at,
                    format!("cronjob/{key}"),
                    "Deleted",
                    "cron job deleted with its runs",
                );
                self.version += 1;
                Reply::Ok
            }
            Command::Cron { changes, at } => {
                let mut changed = false;
                for c in changes {
                    changed |= self.cron.apply(c, *at);
                }
                if changed {
                    self.version += 1;
                }
                Reply::Ok
            }
            Command::DeleteApp {
                namespace,
                name,
                at,
            } => {
                let key = ResourceKey::new(namespace, name);
                if self.apps.remove(&key).is_none() {
                    return rejected(Rejection::NotFound, format!("no app {key}"));
                }
                self.revisions.remove(&key);
                self.replica_sets
                    .retain(|_, rs| !(rs.namespace == *namespace && rs.app == *name));
                self.pods
                    .retain(|_, p| !(p.namespace == *namespace && p.app == *name));
                self.event(
                    *at,
                    format!("app/{key}"),
                    "Deleted",
                    "app deleted with its pods",
                );
                self.version += 1;
                Reply::Ok
            }
            Command::ScaleApp {
                namespace,
                name,
                replicas,
                at,
                reason,
            } => {
                let key = ResourceKey::new(namespace, name);
                let Some(app) = self.apps.get_mut(&key) else {
                    return rejected(Rejection::NotFound, format!("no app {key}"));
                };
                let from = app.spec.replicas;
                app.spec.replicas = *replicas;
                app.updated_at = *at;
                let revision = app.revision;
                let app = app.clone();
                if let Some(rs) = self
                    .replica_sets
                    .get_mut(&replica_set_key(namespace, name, revision))
                {
                    rs.replicas = *replicas;
                }
                let why = reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                self.event(
                    *at,
                    format!("app/{key}"),
                    "Scaled",
                    format!("replicas {from} → {replicas}{why}"),
                );
                self.version += 1;
                Reply::App { app: Box::new(app) }
            }
            Command::RegisterHost { info, at } => {
                let name = info.name.clone();
                let known = self.hosts.contains_key(&name);
                self.hosts.insert(
                    name.clone(),
                    Host {
                        info: info.clone(),
                        state: HostState::Ready,
                        since: *at,
                    },
                );
                let what = if known { "re-registered" } else { "registered" };
                self.event(
                    *at,
                    format!("host/{name}"),
                    "Registered",
                    format!("host {what} at {}", info.address),
                );
                self.version += 1;
                Reply::Ok
            }
            Command::SetHostState { name, state, at } => {
                let Some(host) = self.hosts.get_mut(name) else {
                    return rejected(Rejection::NotFound, format!("no host {name}"));
                };
                if host.state == *state {
                    return Reply::Ok;
                }
                host.state = *state;
                host.since = *at;
                self.event(
                    *at,
                    format!("host/{name}"),
                    "StateChanged",
                    format!("host is {state:?}"),
                );
                self.version += 1;
                Reply::Ok
            }
            Command::Pods { changes, at } => {
                let mut changed = false;
                for change in changes {
                    changed |= self.apply_pod_change(change, *at);
                }
                if changed {
                    self.version += 1;
                }
                Reply::Ok
            }
            Command::Kv { bucket, write, id } => {
                if let Some(id) = id
                    && let Some(first) = self.kv_writes.get(id)
                {
                    return Reply::Kv {
                        result: first.clone(),
                    };
                }
                let map = self.kv.entry(bucket.clone()).or_default();
                let result = kv::apply(map, write);
                if self.kv.get(bucket).is_some_and(BTreeMap::is_empty) {
                    self.kv.remove(bucket);
                }
                if let Some(id) = id {
                    if self.kv_write_order.len() == KV_WRITE_MEMORY
                        && let Some(oldest) = self.kv_write_order.pop_front()
                    {
                        self.kv_writes.remove(&oldest);
                    }
                    self.kv_write_order.push_back(id.clone());
                    self.kv_writes.insert(id.clone(), result.clone());
                }
                Reply::Kv { result }
            }
        }
    }

    fn apply_app(&mut self, spec: &AppSpec, at: Millis) -> Reply {
        if let Err(e) = spec.validate() {
            return rejected(Rejection::Invalid, e.to_string());
        }
        let key = spec.key();
        if !self.blobs.contains_key(&spec.component.to_string()) {
            return rejected(
                Rejection::MissingComponent,
                format!("component {} has not been uploaded", spec.component),
            );
        }
        if let Some((other, _)) = self
            .apps
            .iter()
            .find(|(k, a)| **k != key && a.spec.route.conflicts_with(&spec.route))
        {
            let host = spec
                .route
                .host
                .as_deref()
                .map(|h| format!(" on host {h}"))
                .unwrap_or_default();
            return rejected(
                Rejection::RouteConflict,
                format!(
                    "route {}{host} is already served by {other}",
                    spec.route.prefix
                ),
            );
        }
        let revisions = self.revisions.entry(key.clone()).or_default();
        let existing = self.apps.get(&key).cloned();
        let app = match existing {
            Some(mut app) if app.spec.same_revision(spec) => {
                // Only the replica count or the scaling rules differ: no new revision.
                // An autoscaled app keeps the count the autoscaler chose, within the
                // new bounds.
                let replicas = autoscaled_replicas(spec, Some(&app.spec));
                app.spec = spec.clone();
                app.spec.replicas = replicas;
                app.updated_at = at;
                if let Some(rs) = self.replica_sets.get_mut(&replica_set_key(
                    &spec.namespace,
                    &spec.name,
                    app.revision,
                )) {
                    rs.replicas = replicas;
                }
                app
            }
            existing => {
                let mut spec = spec.clone();
                spec.replicas = autoscaled_replicas(&spec, existing.as_ref().map(|a| &a.spec));
                let spec = &spec;
                let number = revisions.last().map_or(1, |r| r.number + 1);
                revisions.push(Revision {
                    number,
                    spec: spec.clone(),
                    created_at: at,
                });
                if revisions.len() > REVISION_HISTORY {
                    let drop = revisions.len() - REVISION_HISTORY;
                    revisions.drain(..drop);
                }
                // The new revision's replica set takes all replicas; older ones go to
                // zero (their pods stop once the new ones run: see the replica-set
                // reconciler).
                for rs in self.replica_sets.values_mut() {
                    if rs.namespace == spec.namespace && rs.app == spec.name {
                        rs.replicas = 0;
                    }
                }
                self.replica_sets.insert(
                    replica_set_key(&spec.namespace, &spec.name, number),
                    ReplicaSet {
                        namespace: spec.namespace.clone(),
                        app: spec.name.clone(),
                        revision: number,
                        replicas: spec.replicas,
                    },
                );
                let created_at = existing.as_ref().map_or(at, |a| a.created_at);
                self.event(
                    at,
                    format!("app/{key}"),
                    "NewRevision",
                    format!("revision {number} ({})", spec.component.short()),
                );
                App {
                    spec: spec.clone(),
                    revision: number,
                    created_at,
                    updated_at: at,
                }
            }
        };
        self.apps.insert(key, app.clone());
        self.version += 1;
        Reply::App { app: Box::new(app) }
    }

    fn apply_cron_job(
        &mut self,
        spec: &dabba_spec::cronjob::CronSection,
        component: Digest,
        at: Millis,
    ) -> Reply {
        if let Err(e) = spec.validate() {
            return rejected(Rejection::Invalid, e.to_string());
        }
        if !self.blobs.contains_key(&component.to_string()) {
            return rejected(
                Rejection::MissingComponent,
                format!("component {component} has not been uploaded"),
            );
        }
        let key = ResourceKey::new(&spec.namespace, &spec.name);
        let reason = match self.cron.jobs.get_mut(&key) {
            Some(job) => {
                job.spec = spec.clone();
                job.component = component;
                "Updated"
            }
            None => {
                self.cron.jobs.insert(
                    key.clone(),
                    dabba_spec::cronjob::CronJob {
                        spec: spec.clone(),
                        component,
                        created_at: at,
                        last_scheduled: None,
                        missed: Vec::new(),
                        missed_total: 0,
                    },
                );
                "Created"
            }
        };
        self.event(
            at,
            format!("cronjob/{key}"),
            reason,
            format!(
                "{} ({}) running {}",
                spec.schedule,
                spec.timezone,
                component.short()
            ),
        );
        self.version += 1;
        Reply::Ok
    }

    fn activate(&mut self, namespace: &str, name: &str, host: Option<&str>, at: Millis) -> Reply {
        let key = ResourceKey::new(namespace, name);
        let Some(app) = self.apps.get_mut(&key) else {
            return rejected(Rejection::NotFound, format!("no app {key}"));
        };
        if app.spec.scale.is_none() || app.spec.replicas > 0 {
            return Reply::Activated {
                replicas: app.spec.replicas,
                pod: None,
            };
        }
        app.spec.replicas = 1;
        app.updated_at = at;
        let revision = app.revision;
        let Some(rs) = self
            .replica_sets
            .get_mut(&replica_set_key(namespace, name, revision))
        else {
            return rejected(Rejection::NotFound, format!("no replica set for {key}"));
        };
        rs.replicas = 1;
        self.pod_seq += 1;
        let pod = Pod {
            name: format!("{name}-r{revision}-{}", self.pod_seq),
            namespace: namespace.into(),
            app: name.into(),
            revision,
            host: host.map(Into::into),
            phase: if host.is_some() {
                PodPhase::Scheduled
            } else {
                PodPhase::Pending
            },
            reason: None,
            created_at: at,
        };
        self.pods.insert(pod.key(), pod.clone());
        let on = host.map(|h| format!(" on {h}")).unwrap_or_default();
        self.event(
            at,
            format!("app/{key}"),
            "Scaled",
            format!("replicas 0 → 1 (activated: requests are waiting{on})"),
        );
        self.version += 1;
        Reply::Activated {
            replicas: 1,
            pod: Some(Box::new(pod)),
        }
    }

    /// Applies one pod change; returns whether anything changed.
    fn apply_pod_change(&mut self, change: &PodChange, at: Millis) -> bool {
        match change {
            PodChange::Create { pod } => {
                // Pod names end in a sequence number proposed from `pod_seq`; keeping
                // the highest one seen means the next proposal never reuses a name,
                // even after a stale proposal was skipped.
                if let Some(n) = pod
                    .name
                    .rsplit('-')
                    .next()
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    self.pod_seq = self.pod_seq.max(n);
                }
                let key = pod.key();
                let rs = replica_set_key(&pod.namespace, &pod.app, pod.revision);
                if self.pods.contains_key(&key) || !self.replica_sets.contains_key(&rs) {
                    return false;
                }
                self.pods.insert(key, pod.clone());
                true
            }
            PodChange::Delete { key } => {
                let removed = self.pods.remove(key).is_some();
                if removed {
                    self.event(at, format!("pod/{key}"), "Deleted", "pod removed");
                }
                removed
            }
            PodChange::Place { key, host, reason } => {
                let Some(pod) = self.pods.get_mut(key) else {
                    return false;
                };
                let (phase, reason) = match host {
                    Some(_) => (PodPhase::Scheduled, None),
                    None => (PodPhase::Pending, reason.clone()),
                };
                if pod.host == *host && pod.phase == phase && pod.reason == reason {
                    return false;
                }
                pod.host = host.clone();
                pod.phase = phase;
                pod.reason = reason;
                let message = match host {
                    Some(h) => format!("scheduled on {h}"),
                    None => format!("pending: {}", pod.reason.as_deref().unwrap_or("no host")),
                };
                self.event(at, format!("pod/{key}"), "Scheduling", message);
                true
            }
            PodChange::Phase { key, phase, reason } => {
                let Some(pod) = self.pods.get_mut(key) else {
                    return false;
                };
                if pod.phase == *phase && pod.reason == *reason {
                    return false;
                }
                pod.phase = *phase;
                pod.reason = reason.clone();
                let message = format!(
                    "{phase:?}{}",
                    reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                );
                self.event(at, format!("pod/{key}"), "Phase", message);
                true
            }
        }
    }

    fn event(&mut self, at: Millis, object: String, reason: &str, message: impl Into<String>) {
        if self.events.len() == EVENT_HISTORY {
            self.events.pop_front();
        }
        self.events.push_back(Event {
            at,
            object,
            reason: reason.to_string(),
            message: message.into(),
        });
    }

    /// The component bytes for a digest.
    pub fn blob(&self, digest: &Digest) -> Option<&[u8]> {
        self.blobs.get(&digest.to_string()).map(Vec::as_slice)
    }

    /// The revision `number` of an app.
    pub fn revision(&self, namespace: &str, app: &str, number: u64) -> Option<&Revision> {
        self.revisions
            .get(&ResourceKey::new(namespace, app))?
            .iter()
            .find(|r| r.number == number)
    }
}

/// A map of byte strings, serialized with base64 values.
mod bytes_map {
    use std::collections::BTreeMap;

    use dabba_spec::kv::b64;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        m: &BTreeMap<String, Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let encoded: BTreeMap<&String, String> =
            m.iter().map(|(k, v)| (k, b64::encode(v))).collect();
        encoded.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Vec<u8>>, D::Error> {
        BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| Ok((k, b64::decode(&v).map_err(serde::de::Error::custom)?)))
            .collect()
    }
}

/// Buckets of byte strings, serialized with base64 values.
mod kv_map {
    use std::collections::BTreeMap;

    use dabba_spec::kv::b64;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    type Buckets = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

    pub fn serialize<S: Serializer>(m: &Buckets, s: S) -> Result<S::Ok, S::Error> {
        let encoded: BTreeMap<&String, BTreeMap<&String, String>> = m
            .iter()
            .map(|(b, keys)| (b, keys.iter().map(|(k, v)| (k, b64::encode(v))).collect()))
            .collect();
        encoded.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Buckets, D::Error> {
        BTreeMap::<String, BTreeMap<String, String>>::deserialize(d)?
            .into_iter()
            .map(|(b, keys)| {
                let keys = keys
                    .into_iter()
                    .map(|(k, v)| Ok((k, b64::decode(&v).map_err(serde::de::Error::custom)?)))
                    .collect::<Result<_, D::Error>>()?;
                Ok((b, keys))
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests;
