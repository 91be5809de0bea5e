//! The replicated state: everything the cluster knows that must survive the loss of any
//! minority of controllers. [`State::apply_with`] is the state machine: a deterministic
//! function of the state, one command and the workload buckets (kept apart, on disk:
//! see `workload_kv`).

mod apps;
pub mod audit;
pub mod cron;
mod quota;
pub mod rbac;
mod regions;
mod rollout;
pub mod secrets;
mod templates;
mod workload_kv;

pub use apps::replica_set_key;
pub use rollout::ANALYSIS_RUNS_KEPT;
pub use workload_kv::{
    AlreadyApplied, KV_WRITE_MEMORY, MemoryWorkload, Remembered, Workload, apply_kv,
};

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use dabba_spec::Digest;
use dabba_spec::analysis::AnalysisTemplate;
use dabba_spec::api::ControllerPlace;
use dabba_spec::regions::PlacementStatus;
use dabba_spec::resources::{
    App, Grant, Host, HostInfo, HostState, Millis, Pod, ReplicaSet, ResourceKey, Revision, Role,
};
use dabba_spec::rollout::RolloutStatus;
use serde::{Deserialize, Serialize};

use crate::command::{Command, Rejection, Reply};
use cron::CronState;

/// Revisions kept per app, the serving one included.
pub const REVISION_HISTORY: usize = 10;
/// Events kept for `describe`.
pub const EVENT_HISTORY: usize = 1000;

/// A component the cluster holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blob {
    pub size: u64,
    /// When its upload committed (a component not used yet is kept a grace period).
    pub stored_at: Millis,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Bumped by every command that changes what clients can see; watches wait on it.
    pub version: u64,
    pub initialized: bool,
    /// Grants by SHA-256 (hex) of the token secret.
    pub tokens: BTreeMap<String, Grant>,
    /// The components the cluster holds, by digest (the bytes are in every
    /// controller's blob store).
    pub blobs: BTreeMap<String, Blob>,
    pub apps: BTreeMap<ResourceKey, App>,
    /// Revisions by app, oldest first.
    pub revisions: BTreeMap<ResourceKey, Vec<Revision>>,
    /// Replica sets by `namespace/name/revision`.
    pub replica_sets: BTreeMap<String, ReplicaSet>,
    pub pods: BTreeMap<ResourceKey, Pod>,
    pub hosts: BTreeMap<String, Host>,
    /// Numbers pod names, so no name is used twice.
    pub pod_seq: u64,
    pub events: VecDeque<Event>,
    /// Cron jobs and their runs.
    #[serde(default)]
    pub cron: CronState,
    /// The rollout of each canary or blue-green app that has had one.
    #[serde(default)]
    pub rollouts: BTreeMap<ResourceKey, RolloutStatus>,
    /// Analysis templates applied on their own, by namespace and name.
    #[serde(default)]
    pub analysis_templates: BTreeMap<ResourceKey, AnalysisTemplate>,
    /// Who did what, and who was refused (spec/controller.md, "Audit").
    #[serde(default)]
    pub audit: audit::AuditTrail,
    /// Apps placed across regions: their pods per region and failovers.
    #[serde(default)]
    pub placements: BTreeMap<ResourceKey, PlacementStatus>,
    /// Where each controller runs, by Raft node id.
    #[serde(default)]
    pub controllers: BTreeMap<u64, ControllerPlace>,
    /// The region the leader is kept in while it is healthy.
    #[serde(default)]
    pub preferred_leader_region: Option<String>,
    /// Secrets, sealed (`crate::vault`).
    #[serde(default)]
    pub secrets: secrets::Secrets,
    /// Roles of the cluster's own, by `ns/name` (`*/name`: cluster-wide).
    #[serde(default)]
    pub roles: BTreeMap<String, dabba_spec::rbac::RoleSpec>,
    /// Role bindings, keyed as roles are.
    #[serde(default)]
    pub bindings: BTreeMap<String, dabba_spec::rbac::RoleBinding>,
    /// Quotas and limit ranges, by namespace.
    #[serde(default)]
    pub namespaces: BTreeMap<String, dabba_spec::quota::NamespacePolicy>,
}

/// Something that happened to an object, for `dabba describe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub at: Millis,
    /// `app/default/payment`, `host/h1`, `pod/default/payment-r1-3`.
    pub object: String,
    pub reason: String,
    pub message: String,
}

pub(super) fn rejected(code: Rejection, message: impl Into<String>) -> Reply {
    Reply::Rejected {
        code,
        message: message.into(),
    }
}

impl State {
    /// Applies a command that writes no workload keys (tests of everything else).
    #[cfg(test)]
    pub fn apply(&mut self, command: &Command) -> Reply {
        self.apply_with(command, &mut MemoryWorkload::default())
    }

    /// Applies one command, its workload key-value writes to `kv`. A rejected command
    /// changes nothing.
    pub fn apply_with(&mut self, command: &Command, kv: &mut impl Workload) -> Reply {
        match command {
            Command::Batch { commands } => Reply::Batch {
                replies: commands.iter().map(|c| self.apply_with(c, kv)).collect(),
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
                let lasting_admin = |g: &Grant| {
                    g.role == Role::Admin && g.namespace.is_none() && g.expires.is_none()
                };
                if self.tokens.get(hash).is_some_and(lasting_admin)
                    && self.tokens.values().filter(|g| lasting_admin(g)).count() == 1
                {
                    return rejected(
                        Rejection::Conflict,
                        "this is the cluster's last admin token that does not expire: \
                         create another first (`dabba token create --role admin`)",
                    );
                }
                if self.tokens.remove(hash).is_none() {
                    return rejected(Rejection::NotFound, "no such token");
                }
                // Its bindings forget it (one left with no token goes).
                let id: String = hash.chars().take(16).collect();
                for b in self.bindings.values_mut() {
                    b.tokens.retain(|t| *t != id);
                }
                self.bindings.retain(|_, b| !b.tokens.is_empty());
                self.version += 1;
                Reply::Ok
            }
            Command::PutBlob {
                digest,
                size,
                at,
                bytes,
            } => {
                if let std::collections::btree_map::Entry::Vacant(e) =
                    self.blobs.entry(digest.to_string())
                {
                    e.insert(Blob {
                        size: bytes.as_ref().map_or(*size, |b| b.len() as u64),
                        stored_at: *at,
                    });
                    self.version += 1;
                }
                Reply::Ok
            }
            Command::DeleteBlobs { digests, at } => {
                let in_use = self.components_in_use();
                for digest in digests.iter().filter(|d| !in_use.contains(d)) {
                    if self.blobs.remove(&digest.to_string()).is_some() {
                        self.event(
                            *at,
                            format!("component/{}", digest.short()),
                            "Deleted",
                            "no revision or cron job uses it",
                        );
                        self.version += 1;
                    }
                }
                Reply::Ok
            }
            Command::ApplyApp { spec, at } => self.apply_app(spec, *at),
            Command::DeleteApp {
                namespace,
                name,
                at,
            } => self.delete_app(namespace, name, *at),
            Command::ScaleApp {
                namespace,
                name,
                replicas,
                at,
                reason,
            } => self.scale_app(namespace, name, *replicas, *at, reason.as_deref()),
            Command::Activate {
                namespace,
                name,
                host,
                at,
            } => self.activate(namespace, name, host.as_deref(), *at),
            Command::Pods { changes, at } => {
                if self.apply_pods(changes, *at) {
                    self.version += 1;
                }
                Reply::Ok
            }
            Command::RegisterHost {
                info,
                at,
                credential,
            } => self.register_host(info, *at, credential.as_deref()),
            Command::SetHostState { name, state, at } => self.set_host_state(name, *state, *at),
            Command::ApplyCronJob {
                spec,
                component,
                at,
            } => self.apply_cron_job(spec, *component, *at),
            Command::DeleteCronJob {
                namespace,
                name,
                at,
            } => self.delete_cron_job(namespace, name, *at),
            Command::Cron { changes, at } => {
                if self.apply_cron_changes(changes, *at) {
                    self.version += 1;
                }
                Reply::Ok
            }
            Command::Rollout { changes, at } => {
                let mut changed = false;
                for change in changes {
                    changed |= self.apply_rollout(change, *at);
                }
                if changed {
                    self.version += 1;
                }
                Reply::Ok
            }
            Command::ApplyAnalysisTemplate {
                namespace,
                template,
                at,
            } => self.apply_analysis_template(namespace, template, *at),
            Command::DeleteAnalysisTemplate {
                namespace,
                name,
                at,
            } => self.delete_analysis_template(namespace, name, *at),
            Command::Regions { changes, at } => {
                let mut changed = false;
                for change in changes {
                    changed |= self.apply_region_change(change, *at);
                }
                if changed {
                    self.version += 1;
                }
                Reply::Ok
            }
            Command::PlaceController { id, place } => {
                if self.controllers.get(id) == Some(place) {
                    return Reply::Ok;
                }
                self.controllers.insert(*id, place.clone());
                self.version += 1;
                Reply::Ok
            }
            Command::PreferLeaderRegion { region } => {
                self.preferred_leader_region = region.clone();
                self.version += 1;
                Reply::Ok
            }
            Command::UndoApp {
                namespace,
                name,
                to,
                at,
            } => self.undo(namespace, name, *to, *at),
            Command::PutSecret {
                key,
                data,
                data_key,
                expect,
                at,
            } => self.put_secret(key, data, *data_key, *expect, *at),
            Command::DeleteSecret { key, at } => self.delete_secret(key, *at),
            Command::PutRole { role, at } => self.put_role(role, *at),
            Command::DeleteRole { key, at } => self.delete_role(key, *at),
            Command::PutRoleBinding { binding, at } => self.put_binding(binding, *at),
            Command::DeleteRoleBinding { key, at } => self.delete_binding(key, *at),
            Command::SetNamespacePolicy {
                namespace,
                policy,
                at,
            } => {
                if let Some(p) = policy
                    && let Err(e) = p.validate()
                {
                    return rejected(Rejection::Invalid, e.to_string());
                }
                match policy {
                    Some(p) => self.namespaces.insert(namespace.clone(), (**p).clone()),
                    None => self.namespaces.remove(namespace),
                };
                self.event(
                    *at,
                    format!("namespace/{namespace}"),
                    "PolicySet",
                    if policy.is_some() {
                        "quota and limit range set"
                    } else {
                        "quota and limit range removed"
                    },
                );
                self.version += 1;
                Reply::Ok
            }
            Command::RotateDataKey {
                id,
                wrapped,
                resealed,
                at,
            } => self.rotate_data_key(*id, wrapped, resealed, *at),
            Command::AuditRetention { max_age_ms } => {
                self.audit.set_max_age(*max_age_ms);
                self.version += 1;
                Reply::Ok
            }
            Command::Audit { entries } => {
                for e in entries {
                    self.audit.append(e.clone());
                }
                Reply::Ok
            }
            Command::Kv {
                bucket,
                write,
                id,
                fence,
            } => Reply::Kv {
                result: match fence
                    .as_ref()
                    .and_then(|f| f.refuses(self.cron.runs.get(&f.run)))
                {
                    Some(refused) => Err(refused),
                    None => workload_kv::apply_kv(kv, bucket, write, id.as_deref()),
                },
            },
        }
    }

    fn register_host(&mut self, info: &HostInfo, at: Millis, credential: Option<&str>) -> Reply {
        let name = info.name.clone();
        let known = self.hosts.contains_key(&name);
        if let Some(hash) = credential {
            if self
                .hosts
                .get(&name)
                .is_some_and(|h| h.state == HostState::Ready)
            {
                return rejected(
                    Rejection::Conflict,
                    format!(
                        "host {name} is registered and Ready: it re-registers with its own \
                         credential (host.token in its data directory); the join token may \
                         register it again once it is judged NotReady"
                    ),
                );
            }
            // The host's earlier credentials (a reinstalled machine's) stop working.
            self.tokens
                .retain(|_, g| g.host.as_deref() != Some(name.as_str()));
            self.tokens.insert(
                hash.to_string(),
                Grant {
                    role: Role::Host,
                    namespace: None,
                    label: format!("host/{name}"),
                    host: Some(name.clone()),
                    expires: None,
                },
            );
        }
        self.hosts.insert(
            name.clone(),
            Host {
                info: info.clone(),
                state: HostState::Ready,
                since: at,
            },
        );
        let what = if known { "re-registered" } else { "registered" };
        self.event(
            at,
            format!("host/{name}"),
            "Registered",
            format!("host {what} at {}", info.address),
        );
        self.version += 1;
        Reply::Ok
    }

    fn set_host_state(&mut self, name: &str, state: HostState, at: Millis) -> Reply {
        let Some(host) = self.hosts.get_mut(name) else {
            return rejected(Rejection::NotFound, format!("no host {name}"));
        };
        if host.state == state {
            return Reply::Ok;
        }
        host.state = state;
        host.since = at;
        self.event(
            at,
            format!("host/{name}"),
            "StateChanged",
            format!("host is {state:?}"),
        );
        self.version += 1;
        Reply::Ok
    }

    pub(super) fn event(
        &mut self,
        at: Millis,
        object: String,
        reason: &str,
        message: impl Into<String>,
    ) {
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

    /// The size of a component the cluster holds.
    pub fn blob(&self, digest: &Digest) -> Option<u64> {
        self.blobs.get(&digest.to_string()).map(|b| b.size)
    }

    /// The components a kept revision of an app or a cron job names.
    pub fn components_in_use(&self) -> BTreeSet<Digest> {
        self.revisions
            .values()
            .flatten()
            .map(|r| r.spec.component)
            .chain(self.cron.jobs.values().map(|j| j.component))
            .collect()
    }

    /// The revision `number` of an app.
    pub fn revision(&self, namespace: &str, app: &str, number: u64) -> Option<&Revision> {
        self.revisions
            .get(&ResourceKey::new(namespace, app))?
            .iter()
            .find(|r| r.number == number)
    }
}

#[cfg(test)]
pub(crate) mod tests;
