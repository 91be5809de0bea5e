//! Placement: which Ready host runs a new pod.
//!
//! A pod reserves one instance slot and its app's per-instance memory cap. A host is a
//! candidate if it is Ready, has every label of the app's node selector, and has that
//! much memory and a slot free. Among candidates the scheduler spreads an app across
//! zones first, then across hosts, then prefers the host with the most free memory;
//! ties go to the lexically first host name, so placement is deterministic.

use std::collections::{BTreeMap, BTreeSet};

use dabba_spec::resources::{AppSpec, Capacity, Host, HostState, ResourceKey};
use dabba_spec::{ByteSize, WorkloadKind};

use crate::state::State;

/// What one pod of `spec` reserves on its host.
pub fn request(spec: &AppSpec) -> Capacity {
    let memory = spec
        .limits
        .resolve(WorkloadKind::Http)
        .map(|l| l.memory)
        .unwrap_or(ByteSize::mib(128));
    Capacity {
        memory: memory.as_u64(),
        instances: 1,
    }
}

/// What is already reserved, kept up to date as the reconciler places pods in one pass.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    used: BTreeMap<String, Capacity>,
    /// Pods per (app, zone) and per (app, host).
    per_zone: BTreeMap<(ResourceKey, String), u32>,
    per_host: BTreeMap<(ResourceKey, String), u32>,
}

impl Usage {
    /// The reservations of every pod placed on a host in `ready`.
    pub fn of(state: &State, ready: &BTreeSet<&str>) -> Usage {
        let mut usage = Usage::default();
        for pod in state.pods.values() {
            let Some(host) = pod.host.as_deref().filter(|h| ready.contains(h)) else {
                continue;
            };
            let Some(rev) = state.revision(&pod.namespace, &pod.app, pod.revision) else {
                continue;
            };
            usage.add(state, &rev.spec, host);
        }
        usage
    }

    /// What `h` has left.
    pub fn free(&self, h: &Host) -> Capacity {
        let used = self.used.get(&h.info.name).copied().unwrap_or_default();
        Capacity {
            memory: h.info.capacity.memory.saturating_sub(used.memory),
            instances: h.info.capacity.instances.saturating_sub(used.instances),
        }
    }

    pub fn add(&mut self, state: &State, spec: &AppSpec, host: &str) {
        let r = request(spec);
        let u = self.used.entry(host.to_string()).or_default();
        u.memory += r.memory;
        u.instances += r.instances;
        let app = spec.key();
        if let Some(h) = state.hosts.get(host) {
            *self
                .per_zone
                .entry((app.clone(), h.info.zone.clone()))
                .or_default() += 1;
        }
        *self.per_host.entry((app, host.to_string())).or_default() += 1;
    }

    pub fn remove(&mut self, state: &State, spec: &AppSpec, host: &str) {
        let r = request(spec);
        if let Some(u) = self.used.get_mut(host) {
            u.memory = u.memory.saturating_sub(r.memory);
            u.instances = u.instances.saturating_sub(r.instances);
        }
        let app = spec.key();
        if let Some(h) = state.hosts.get(host)
            && let Some(n) = self.per_zone.get_mut(&(app.clone(), h.info.zone.clone()))
        {
            *n = n.saturating_sub(1);
        }
        if let Some(n) = self.per_host.get_mut(&(app, host.to_string())) {
            *n = n.saturating_sub(1);
        }
    }
}

/// Whether host `name` is Ready, has the labels `spec` selects, and has room for one
/// more of its pods.
pub fn fits(
    state: &State,
    ready: &BTreeSet<&str>,
    usage: &Usage,
    spec: &AppSpec,
    name: &str,
) -> bool {
    state.hosts.get(name).is_some_and(|h| {
        ready.contains(name) && selects(spec, h) && has_room(usage, h, request(spec))
    })
}

/// Where the first pod of `app`, scaled from zero because `asking` holds requests for
/// it, should go: on `asking` if that host can run it (the requests are already there,
/// and a Wasm pod starts in about a millisecond), else nowhere yet — the replica-set
/// reconciler places it as any other pod.
pub fn activation_host(state: &State, app: &ResourceKey, asking: &str) -> Option<String> {
    let spec = &state.apps.get(app)?.spec;
    let ready: BTreeSet<&str> = state
        .hosts
        .iter()
        .filter(|(_, h)| h.state == HostState::Ready)
        .map(|(n, _)| n.as_str())
        .collect();
    let usage = Usage::of(state, &ready);
    fits(state, &ready, &usage, spec, asking).then(|| asking.to_string())
}

fn selects(spec: &AppSpec, h: &Host) -> bool {
    spec.node_selector
        .iter()
        .all(|(k, v)| h.info.labels.get(k) == Some(v))
}

fn has_room(usage: &Usage, h: &Host, want: Capacity) -> bool {
    let f = usage.free(h);
    f.memory >= want.memory && f.instances >= want.instances
}

/// Why no host can take a new pod now (the pod stays Pending with this as its reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unplaceable {
    #[error("no Ready host")]
    NoReadyHost,
    #[error("no Ready host in region {0} matches")]
    NoReadyHostInRegion(String),
    #[error("no Ready host has labels {}", .0.join(", "))]
    NoHostWithLabels(Vec<String>),
    #[error(
        "no host has {} of memory and an instance slot free ({selected} Ready host{} match)",
        ByteSize::bytes(*.memory),
        if *.selected == 1 { "" } else { "s" }
    )]
    NoRoom { memory: u64, selected: usize },
}

/// The host for a new pod of `spec` (in `region`, if given), or why there is none.
pub fn place(
    state: &State,
    ready: &BTreeSet<&str>,
    usage: &Usage,
    spec: &AppSpec,
    region: Option<&str>,
) -> Result<String, Unplaceable> {
    let want = request(spec);
    let app = spec.key();
    let selected: Vec<_> = state
        .hosts
        .values()
        .filter(|h| ready.contains(h.info.name.as_str()) && selects(spec, h))
        .filter(|h| region.is_none_or(|r| h.info.region == r))
        .collect();
    if selected.is_empty() {
        return Err(if let Some(r) = region {
            Unplaceable::NoReadyHostInRegion(r.to_string())
        } else if spec.node_selector.is_empty() {
            Unplaceable::NoReadyHost
        } else {
            Unplaceable::NoHostWithLabels(
                spec.node_selector
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect(),
            )
        });
    }
    let free = |h: &Host| usage.free(h);
    let best = selected
        .iter()
        .filter(|h| has_room(usage, h, want))
        .min_by_key(|h| {
            let zone = usage
                .per_zone
                .get(&(app.clone(), h.info.zone.clone()))
                .copied()
                .unwrap_or(0);
            let on_host = usage
                .per_host
                .get(&(app.clone(), h.info.name.clone()))
                .copied()
                .unwrap_or(0);
            let f = free(h);
            (
                zone,
                on_host,
                std::cmp::Reverse(f.memory),
                h.info.name.clone(),
            )
        });
    match best {
        Some(h) => Ok(h.info.name.clone()),
        None => Err(Unplaceable::NoRoom {
            memory: want.memory,
            selected: selected.len(),
        }),
    }
}
