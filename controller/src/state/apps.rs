//! Apps, their revisions and replica sets, and their pods: what `ApplyApp`, `DeleteApp`,
//! `ScaleApp`, `Activate` and `Pods` do to the state.

use dabba_spec::quota::Usage;
use dabba_spec::resources::{
    App, AppSpec, Millis, Pod, PodPhase, ReplicaSet, ResourceKey, RestartBackoff, Revision,
};

use super::{REVISION_HISTORY, State, rejected};
use crate::command::{PodChange, Rejection, Reply};

/// The replica count an applied spec runs with: as given, or for an autoscaled app that
/// already runs, the count it has now within the new `[min, max]`.
fn autoscaled_replicas(spec: &AppSpec, running: Option<&AppSpec>) -> u32 {
    match (&spec.scale, running) {
        (Some(scale), Some(old)) if old.scale.is_some() => scale.clamp(old.replicas),
        _ => spec.replicas,
    }
}

/// `namespace/app/revision`: the key of a replica set.
pub fn replica_set_key(namespace: &str, app: &str, revision: u64) -> String {
    format!("{namespace}/{app}/{revision}")
}

impl State {
    pub(super) fn apply_app(&mut self, spec: &AppSpec, at: Millis) -> Reply {
        if let Err(e) = spec.validate() {
            return rejected(Rejection::Invalid, e.to_string());
        }
        let spec = &match self.admit_app(spec) {
            Ok(admitted) => admitted,
            Err(refused) => return refused,
        };
        let key = spec.key();
        if !self.blobs.contains_key(&spec.component.to_string()) {
            return rejected(
                Rejection::MissingComponent,
                format!("component {} has not been uploaded", spec.component),
            );
        }
        if let Some(conflict) = self.route_conflict(&key, spec) {
            return conflict;
        }
        if let Some(missing) = self.missing_secret(&spec.namespace, &spec.capabilities.secrets) {
            return missing;
        }
        if let Err(e) = spec.check_templates(|name| {
            self.analysis_templates
                .contains_key(&ResourceKey::new(&spec.namespace, name))
        }) {
            return rejected(Rejection::Invalid, e.to_string());
        }
        let existing = self.apps.get(&key).cloned();
        if let Some(mut app) = existing.clone()
            && app.spec.same_revision(spec)
        {
            // Only the replica count, the scaling rules or the rollout settings differ:
            // no new revision. An autoscaled app keeps the count the autoscaler chose,
            // within the new bounds.
            let replicas = autoscaled_replicas(spec, Some(&app.spec));
            app.spec = spec.clone();
            app.spec.replicas = replicas;
            app.updated_at = at;
            self.apps.insert(key.clone(), app.clone());
            self.place_app(&key, spec.scale.is_none().then_some(replicas));
            if self.rollouts.contains_key(&key) {
                self.resize(&key);
            } else if let Some(rs) = self.replica_sets.get_mut(&replica_set_key(
                &spec.namespace,
                &spec.name,
                app.revision,
            )) {
                rs.replicas = replicas;
            }
            self.version += 1;
            return Reply::App { app: Box::new(app) };
        }
        if let Some(stable) = self
            .rollouts
            .get(&key)
            .filter(|r| r.in_progress())
            .map(|r| r.stable)
            && self
                .revision(spec.namespace.as_str(), spec.name.as_str(), stable)
                .is_some_and(|r| r.spec.same_revision(spec))
        {
            // The stable revision's manifest again, mid-rollout: back to it at once (as
            // Argo does), with no new revision.
            return self.undo(&spec.namespace, &spec.name, Some(stable), at);
        }
        let mut spec = spec.clone();
        spec.replicas = autoscaled_replicas(&spec, existing.as_ref().map(|a| &a.spec));
        let in_use: Vec<u64> = self.rollouts.get(&key).map_or(Vec::new(), |r| {
            [Some(r.stable), r.canary, r.scale_down.map(|s| s.revision)]
                .into_iter()
                .flatten()
                .collect()
        });
        let revisions = self.revisions.entry(key.clone()).or_default();
        let number = revisions.last().map_or(1, |r| r.number + 1);
        revisions.push(Revision {
            number,
            spec: spec.clone(),
            created_at: at,
        });
        // History is bounded, but the revisions a rollout uses are kept.
        while revisions.len() > REVISION_HISTORY {
            match revisions.iter().position(|r| !in_use.contains(&r.number)) {
                Some(i) => {
                    revisions.remove(i);
                }
                None => break,
            }
        }
        // Rolling: the new revision's replica set takes all replicas; older ones go to
        // zero (their pods stop once the new ones run: see the replica-set reconciler).
        // A canary or blue-green rollout sizes them itself (`resize`).
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
        self.event(
            at,
            format!("app/{key}"),
            "NewRevision",
            format!("revision {number} ({})", spec.component.short()),
        );
        let app = App {
            spec: spec.clone(),
            revision: number,
            created_at: existing.as_ref().map_or(at, |a| a.created_at),
            updated_at: at,
        };
        self.apps.insert(key.clone(), app.clone());
        self.place_app(
            &key,
            (existing.is_none() || spec.scale.is_none()).then_some(spec.replicas),
        );
        let serving = existing.map(|a| a.revision);
        if self.begin_rollout(&key, serving, number, &spec, at) {
            self.resize(&key);
        }
        self.version += 1;
        Reply::App { app: Box::new(app) }
    }

    /// The refusal of `spec` if one of its routes (its own, a preview) is another app's.
    fn route_conflict(&self, key: &ResourceKey, spec: &AppSpec) -> Option<Reply> {
        let wanted = spec.routes();
        for (other, a) in self.apps.iter().filter(|(k, _)| *k != key) {
            for theirs in a.spec.routes() {
                if let Some(mine) = wanted.iter().find(|m| m.conflicts_with(&theirs)) {
                    let host = mine
                        .host
                        .as_deref()
                        .map(|h| format!(" on host {h}"))
                        .unwrap_or_default();
                    return Some(rejected(
                        Rejection::RouteConflict,
                        format!("route {}{host} is already served by {other}", mine.prefix),
                    ));
                }
            }
        }
        None
    }

    pub(super) fn delete_app(&mut self, namespace: &str, name: &str, at: Millis) -> Reply {
        let key = ResourceKey::new(namespace, name);
        if self.apps.remove(&key).is_none() {
            return rejected(Rejection::NotFound, format!("no app {key}"));
        }
        self.revisions.remove(&key);
        self.rollouts.remove(&key);
        self.placements.remove(&key);
        self.replica_sets
            .retain(|_, rs| !(rs.namespace == namespace && rs.app == name));
        self.pods
            .retain(|_, p| !(p.namespace == namespace && p.app == name));
        self.event(
            at,
            format!("app/{key}"),
            "Deleted",
            "app deleted with its pods",
        );
        self.version += 1;
        Reply::Ok
    }

    pub(super) fn scale_app(
        &mut self,
        namespace: &str,
        name: &str,
        replicas: u32,
        at: Millis,
        reason: Option<&str>,
    ) -> Reply {
        let key = ResourceKey::new(namespace, name);
        let Some(app) = self.apps.get(&key) else {
            return rejected(Rejection::NotFound, format!("no app {key}"));
        };
        // The quota only: the limits were admitted with the revision (a limit range
        // set since does not stop an app from scaling).
        let scaled = AppSpec {
            replicas,
            ..app.spec.clone()
        };
        let (old, new) = (Usage::of_app(&app.spec), Usage::of_app(&scaled));
        if let Err(refused) = self.admit_quota(namespace, &key, old, new) {
            return refused;
        }
        let app = self.apps.get_mut(&key).expect("looked up above");
        let from = app.spec.replicas;
        app.spec.replicas = replicas;
        app.updated_at = at;
        let revision = app.revision;
        let app = app.clone();
        self.place_app(&key, Some(replicas));
        if self.rollouts.contains_key(&key) {
            self.resize(&key);
        } else if let Some(rs) = self
            .replica_sets
            .get_mut(&replica_set_key(namespace, name, revision))
        {
            rs.replicas = replicas;
        }
        let why = reason.map(|r| format!(" ({r})")).unwrap_or_default();
        self.event(
            at,
            format!("app/{key}"),
            "Scaled",
            format!("replicas {from} → {replicas}{why}"),
        );
        self.version += 1;
        Reply::App { app: Box::new(app) }
    }

    pub(super) fn activate(
        &mut self,
        namespace: &str,
        name: &str,
        host: Option<&str>,
        at: Millis,
    ) -> Reply {
        let key = ResourceKey::new(namespace, name);
        if self.placements.contains_key(&key) {
            return self.activate_in_region(&key, host, at);
        }
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
        // The first pod is the serving revision's; a canary's follows from the resize.
        let revision = self.rollouts.get(&key).map_or(app.revision, |r| r.stable);
        let Some(rs) = self
            .replica_sets
            .get_mut(&replica_set_key(namespace, name, revision))
        else {
            return rejected(Rejection::NotFound, format!("no replica set for {key}"));
        };
        rs.replicas = 1;
        self.resize(&key);
        let pod = self.activated_pod(namespace, name, revision, host, None, at);
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

    /// Applies pod changes; returns whether anything changed.
    pub(super) fn apply_pods(&mut self, changes: &[PodChange], at: Millis) -> bool {
        let mut changed = false;
        for change in changes {
            changed |= self.apply_pod_change(change, at);
        }
        changed
    }

    /// The one pod an activation starts (the next pod name): Scheduled on `host`, or
    /// Pending without one; in `region` for an app placed across regions.
    pub(super) fn activated_pod(
        &mut self,
        namespace: &str,
        name: &str,
        revision: u64,
        host: Option<&str>,
        region: Option<&str>,
        at: Millis,
    ) -> Pod {
        self.pod_seq += 1;
        Pod {
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
            region: region.map(Into::into),
            phase_since: at,
            restarts: 0,
            backoff: 0,
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
                let mut pod = pod.clone();
                pod.phase_since = at;
                self.pods.insert(key, pod);
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
                if pod.phase != phase {
                    pod.phase_since = at;
                }
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
                if pod.phase != *phase {
                    // A long healthy run ends a crash loop: this failure is a first one.
                    if *phase == PodPhase::Failed
                        && pod.phase == PodPhase::Running
                        && at.saturating_sub(pod.phase_since.max(pod.created_at))
                            >= RestartBackoff::RESET_AFTER
                    {
                        pod.backoff = 0;
                    }
                    pod.phase_since = at;
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
}
