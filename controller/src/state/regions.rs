//! Apps placed across regions in the replicated state: the pods each region wants, and
//! failover, drain and restore — deterministic, as every Raft command is. When to fail
//! over is the regions reconciler's (`reconcile/regions.rs`); an operator's commands
//! come through the API.
//!
//! A region an app failed over from (or was drained from) takes none of its requests
//! and wants none of its pods; the region that took over wants at least what the failed
//! one wanted. A drain moves requests only once the target runs its pods; a restore
//! keeps the stand-in's pods until the restored region runs its own.

use dabba_spec::regions::{FailoverKind, PlacementStatus, RegionFailure, RegionPlacement};
use dabba_spec::resources::{Millis, ResourceKey};

use super::{State, rejected};
use crate::command::{RegionChange, Rejection, Reply};

impl State {
    /// Sizes a placed app's regions after it was applied or scaled (`serving`: the count
    /// its serving region should have), or forgets the placement of an app that has
    /// none now.
    pub(super) fn place_app(&mut self, key: &ResourceKey, serving: Option<u32>) {
        let Some(app) = self.apps.get(key) else {
            self.placements.remove(key);
            return;
        };
        let Some(placement) = app.spec.regions.clone() else {
            self.placements.remove(key);
            return;
        };
        let (min, max) = app
            .spec
            .scale
            .as_ref()
            .map_or((0, u32::MAX), |s| (s.min, s.max));
        let mut current = self.placements.get(key).cloned().unwrap_or_default();
        if app.spec.scale.is_none() {
            // No autoscaler sizes the other regions by their demand: they hold their
            // min (an activation there lasts until the manifest or scale changes).
            let serving = current.serving(&placement).map(str::to_string);
            current.replicas.retain(|r, _| Some(r) == serving.as_ref());
        }
        let count = serving.unwrap_or_else(|| {
            current
                .serving(&placement)
                .and_then(|r| current.replicas.get(r).copied())
                .unwrap_or(app.spec.replicas)
        });
        let sized = current.sized(&placement, count, min, max);
        self.placements.insert(key.clone(), sized);
    }

    /// Activates a placed app in the asking host's region (or, if it may not serve
    /// there, its serving region) when that region wants no pod: one pod, on the host
    /// if it is in the region.
    pub(super) fn activate_in_region(
        &mut self,
        key: &ResourceKey,
        host: Option<&str>,
        at: Millis,
    ) -> Reply {
        let Some(app) = self.apps.get(key) else {
            return rejected(Rejection::NotFound, format!("no app {key}"));
        };
        let (Some(placement), Some(status)) = (app.spec.regions.clone(), self.placements.get(key))
        else {
            return rejected(Rejection::NotFound, format!("no placement for {key}"));
        };
        let asking = host.and_then(|h| self.host_region(h)).map(str::to_string);
        let region = match asking {
            Some(r) if placement.regions.contains(&r) && status.routes_to(&r) => r,
            _ => match status.serving(&placement) {
                Some(r) => r.to_string(),
                None => {
                    return rejected(Rejection::Invalid, format!("{key} serves from no region"));
                }
            },
        };
        let total: u32 = status.replicas.values().sum();
        if status.replicas.get(&region).copied().unwrap_or(0) > 0 {
            return Reply::Activated {
                replicas: total,
                pod: None,
            };
        }
        let revision = self.rollouts.get(key).map_or(app.revision, |r| r.stable);
        let name = app.spec.name.clone();
        let namespace = app.spec.namespace.clone();
        let status = self.placements.get_mut(key).expect("checked above");
        status.replicas.insert(region.clone(), 1);
        let on_host = host.filter(|h| self.hosts.get(*h).is_some_and(|x| x.info.region == region));
        let pod = self.activated_pod(&namespace, &name, revision, on_host, Some(&region), at);
        self.pods.insert(pod.key(), pod.clone());
        self.event(
            at,
            format!("app/{key}"),
            "Scaled",
            format!("{region}: replicas 0 → 1 (activated: requests are waiting)"),
        );
        self.version += 1;
        Reply::Activated {
            replicas: total + 1,
            pod: Some(Box::new(pod)),
        }
    }

    /// The region a host is in.
    pub fn host_region(&self, host: &str) -> Option<&str> {
        self.hosts.get(host).map(|h| h.info.region.as_str())
    }

    /// Applies one region change; returns whether anything changed.
    pub(super) fn apply_region_change(&mut self, change: &RegionChange, at: Millis) -> bool {
        let key = change.app().clone();
        let Some(placement) = self.apps.get(&key).and_then(|a| a.spec.regions.clone()) else {
            return false;
        };
        let (lo, hi) = self
            .apps
            .get(&key)
            .and_then(|a| a.spec.scale.as_ref())
            .map_or((0, u32::MAX), |s| (s.min, s.max));
        let Some(status) = self.placements.get_mut(&key) else {
            return false;
        };
        let event = match change {
            RegionChange::Scale {
                region,
                replicas,
                reason,
                ..
            } => {
                if !status.routes_to(region) {
                    return false;
                }
                let Some(now) = status.replicas.get_mut(region) else {
                    return false;
                };
                if *now == *replicas {
                    return false;
                }
                let from = std::mem::replace(now, *replicas);
                Some((
                    "Scaled",
                    format!("{region}: replicas {from} → {replicas} ({reason})"),
                ))
            }
            RegionChange::Failover {
                from,
                to,
                kind,
                reason,
                ..
            } => {
                if !fail_over(status, &placement, from, to, *kind, reason, at) {
                    return false;
                }
                Some(("FailedOver", format!("{from} → {to} ({kind:?}): {reason}")))
            }
            RegionChange::Drain { from, to, .. } => {
                if status.failed.contains_key(from)
                    || status.draining.contains_key(from)
                    || !status.routes_to(to)
                    || from == to
                {
                    return false;
                }
                status.draining.insert(from.clone(), to.clone());
                let wanted = status.replicas.get(from).copied().unwrap_or(0);
                let target = status.replicas.entry(to.clone()).or_default();
                *target = (*target).max(wanted);
                Some((
                    "Draining",
                    format!("{from} → {to}: moving once {to} runs {wanted} pods"),
                ))
            }
            RegionChange::Drained { region, .. } => {
                let Some(to) = status.draining.remove(region) else {
                    return false;
                };
                fail_over(
                    status,
                    &placement,
                    region,
                    &to,
                    FailoverKind::Drained,
                    "drained",
                    at,
                );
                Some(("Drained", format!("{region} → {to}: requests moved")))
            }
            RegionChange::Restore { region, .. } if status.draining.contains_key(region) => {
                // A drain not finished: called off, its target stands by again.
                let to = status.draining.remove(region).expect("checked");
                let min = placement
                    .bounds(&to, lo, hi, status.serves(&placement, &to))
                    .0;
                if let Some(n) = status.replicas.get_mut(&to) {
                    *n = min;
                }
                Some((
                    "DrainCancelled",
                    format!("{region} keeps serving; {to} back to {min} pods"),
                ))
            }
            RegionChange::Restore { region, .. } => {
                let Some(failure) = status.failed.remove(region) else {
                    return false;
                };
                status
                    .replicas
                    .insert(region.clone(), failure.replicas_before.max(1));
                status.restoring.insert(region.clone(), failure.to.clone());
                Some((
                    "Restoring",
                    format!(
                        "{region}: back with {} pods; {} keeps its pods until they run",
                        failure.replicas_before.max(1),
                        failure.to
                    ),
                ))
            }
            RegionChange::Restored { region, .. } => {
                let Some(stand_in) = status.restoring.remove(region) else {
                    return false;
                };
                // Every region but the one serving again goes back to its min: the
                // stand-in, and any region activated from zero during the outage.
                for (r, n) in status
                    .replicas
                    .iter_mut()
                    .filter(|(r, _)| r.as_str() != region)
                {
                    if !status.failed.contains_key(r) {
                        *n = placement.bounds(r, lo, hi, false).0;
                    }
                }
                let min = status.replicas.get(&stand_in).copied().unwrap_or(0);
                Some((
                    "Restored",
                    format!("{region} serves again; {stand_in} back to {min} pods"),
                ))
            }
        };
        if let Some((reason, message)) = event {
            self.event(at, format!("app/{key}"), reason, message);
        }
        true
    }
}

/// Marks `from` failed for the app, `to` taking over with at least the pods `from`
/// wanted; returns whether anything changed.
fn fail_over(
    status: &mut PlacementStatus,
    placement: &RegionPlacement,
    from: &str,
    to: &str,
    kind: FailoverKind,
    reason: &str,
    at: Millis,
) -> bool {
    if status.failed.contains_key(from)
        || from == to
        || !placement.regions.iter().any(|r| r == to)
        || !status.routes_to(to)
    {
        return false;
    }
    let before = status.replicas.get(from).copied().unwrap_or(0);
    status.failed.insert(
        from.to_string(),
        RegionFailure {
            since: at,
            kind,
            reason: reason.to_string(),
            to: to.to_string(),
            replicas_before: before,
        },
    );
    status.draining.remove(from);
    status.restoring.remove(from);
    status.replicas.insert(from.to_string(), 0);
    let target = status.replicas.entry(to.to_string()).or_default();
    *target = (*target).max(before);
    true
}
