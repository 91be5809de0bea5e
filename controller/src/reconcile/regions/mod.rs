//! The regions reconciler: region health from the committed state, the failover
//! triggers of apps placed across regions, and the moves they make — as pure functions
//! of the state, the leader's soft measurements and the time (`spec/regions.md`).
//!
//! - A region's **availability** is its Ready hosts over its hosts (committed: a host is
//!   NotReady once it missed heartbeats for the failure timeout, so this trigger needs
//!   no window of its own).
//! - An app's **success rate** in a region is over the requests its pods there answered
//!   in the last `for` (soft: from heartbeats), judged only once the leader has watched
//!   a whole window and with at least [`MIN_REQUESTS`] requests.
//! - When a trigger fires for the region serving an app with `failover = "automatic"`,
//!   the next region in its order that is healthy takes over (one [`RegionChange`]);
//!   with `failover = "manual"` the trigger is only reported.
//! - A drain completes when its target runs the pods it wants; a restore when the
//!   restored region does.

use std::collections::{BTreeMap, HashMap};

use dabba_spec::regions::{FailoverKind, FailoverMode, RegionHealth, RegionPlacement};
use dabba_spec::resources::{HostState, Millis, PodPhase, ResourceKey};
use serde::{Deserialize, Serialize};

use crate::command::RegionChange;
use crate::state::State;

/// Fewer requests than this in a window judge no success rate.
pub const MIN_REQUESTS: u64 = 20;

/// Every region the cluster knows (from its hosts, controllers and placements), with
/// its hosts and voters.
pub fn health(state: &State, voters: &[u64]) -> BTreeMap<String, RegionHealth> {
    let mut out: BTreeMap<String, RegionHealth> = BTreeMap::new();
    let entry = |out: &mut BTreeMap<String, RegionHealth>, r: &str| {
        out.entry(r.to_string())
            .or_insert_with(|| RegionHealth {
                region: r.to_string(),
                hosts: 0,
                ready: 0,
                availability: 0,
                voters: 0,
            })
            .region
            .clone()
    };
    for h in state.hosts.values() {
        let r = entry(&mut out, &h.info.region);
        let e = out.get_mut(&r).expect("just added");
        e.hosts += 1;
        e.ready += u32::from(h.state == HostState::Ready);
    }
    for id in voters {
        if let Some(p) = state.controllers.get(id) {
            let r = entry(&mut out, &p.region);
            out.get_mut(&r).expect("just added").voters += 1;
        }
    }
    for a in state.apps.values() {
        for r in a.spec.regions.iter().flat_map(|p| &p.regions) {
            entry(&mut out, r);
        }
    }
    for h in out.values_mut() {
        h.availability = (h.ready * 100).checked_div(h.hosts).unwrap_or(0);
    }
    out
}

/// What the leader measured of one app in one region over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Served {
    pub requests: u64,
    pub errors: u64,
}

impl Served {
    /// Percent of requests answered without a 5xx.
    pub fn success_rate(&self) -> Option<f64> {
        (self.requests >= MIN_REQUESTS).then(|| {
            (self.requests - self.errors.min(self.requests)) as f64 * 100.0 / self.requests as f64
        })
    }
}

/// The leader's measurements: by app and region, what was served over each app's
/// window (`None` until the leader has watched a whole window).
pub type Measured = HashMap<(ResourceKey, String), Served>;

/// Why a region should stop serving an app, if it should.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    pub region: String,
    pub reason: String,
}

/// The trigger that fires for `region` of an app placed as `placement`, if one does.
pub fn trigger(
    placement: &RegionPlacement,
    region: &str,
    health: &BTreeMap<String, RegionHealth>,
    served: Option<&Served>,
) -> Option<Trigger> {
    let h = health.get(region);
    let availability = h.map_or(0, |h| h.availability);
    if availability < placement.region_availability_below {
        return Some(Trigger {
            region: region.to_string(),
            reason: format!(
                "region availability {availability}% ({} of {} hosts Ready) is below {}%",
                h.map_or(0, |h| h.ready),
                h.map_or(0, |h| h.hosts),
                placement.region_availability_below
            ),
        });
    }
    if let Some(rate) = served.and_then(Served::success_rate)
        && rate < f64::from(placement.success_rate_below)
    {
        let s = served.expect("a rate has requests");
        return Some(Trigger {
            region: region.to_string(),
            reason: format!(
                "success rate {rate:.1}% ({} errors of {} requests over {}) is below {}%",
                s.errors, s.requests, placement.window, placement.success_rate_below
            ),
        });
    }
    None
}

/// The region changes due now.
pub fn plan(state: &State, voters: &[u64], measured: &Measured) -> Vec<RegionChange> {
    let health = health(state, voters);
    let mut running: HashMap<(ResourceKey, &str), u32> = HashMap::new();
    for p in state.pods.values().filter(|p| p.phase == PodPhase::Running) {
        if let Some(r) = p
            .region
            .as_deref()
            .or_else(|| p.host.as_deref().and_then(|h| state.host_region(h)))
        {
            *running.entry((p.app_key(), r)).or_default() += 1;
        }
    }
    let runs_all = |key: &ResourceKey, region: &str, wanted: u32| {
        running.get(&(key.clone(), region)).copied().unwrap_or(0) >= wanted
    };
    let mut changes = Vec::new();
    for (key, status) in &state.placements {
        let Some(placement) = state.apps.get(key).and_then(|a| a.spec.regions.as_ref()) else {
            continue;
        };
        for (from, to) in &status.draining {
            if runs_all(key, to, status.replicas.get(to).copied().unwrap_or(0)) {
                changes.push(RegionChange::Drained {
                    app: key.clone(),
                    region: from.clone(),
                });
            }
        }
        for region in status.restoring.keys() {
            if runs_all(
                key,
                region,
                status.replicas.get(region).copied().unwrap_or(0),
            ) {
                changes.push(RegionChange::Restored {
                    app: key.clone(),
                    region: region.clone(),
                });
            }
        }
        if placement.failover == FailoverMode::Manual {
            continue;
        }
        let Some(serving) = status.serving(placement) else {
            continue;
        };
        let fired = |r: &str| {
            trigger(
                placement,
                r,
                &health,
                measured.get(&(key.clone(), r.to_string())),
            )
        };
        let Some(t) = fired(serving) else {
            continue;
        };
        let target = placement
            .in_order()
            .into_iter()
            .filter(|r| *r != serving && status.routes_to(r))
            .find(|r| fired(r).is_none());
        if let Some(to) = target {
            changes.push(RegionChange::Failover {
                app: key.clone(),
                from: serving.to_string(),
                to: to.to_string(),
                kind: FailoverKind::Automatic,
                reason: t.reason,
            });
        }
    }
    changes
}

/// Every region an app is placed in, with the triggers firing there now (for
/// `GET /v1/regions`).
pub fn triggers(state: &State, voters: &[u64], measured: &Measured) -> Vec<(ResourceKey, Trigger)> {
    let health = health(state, voters);
    let mut out = Vec::new();
    for (key, status) in &state.placements {
        let Some(placement) = state.apps.get(key).and_then(|a| a.spec.regions.as_ref()) else {
            continue;
        };
        for r in placement.regions.iter().filter(|r| status.routes_to(r)) {
            if let Some(t) = trigger(
                placement,
                r,
                &health,
                measured.get(&(key.clone(), r.clone())),
            ) {
                out.push((key.clone(), t));
            }
        }
    }
    out
}

/// A controller as the leader sees it, for leader placement.
#[derive(Debug, Clone, PartialEq)]
pub struct Voter {
    pub id: u64,
    pub region: String,
    /// Entries behind the leader (`None`: unknown).
    pub lag: Option<u64>,
    /// Whether the leader's last probe of it was answered.
    pub reachable: bool,
}

/// The voter the leader should hand leadership to, if any: with a preferred region set
/// and the leader outside it, a reachable, caught-up voter in that region (the lowest
/// id). Nothing while no such voter is healthy: the preference never costs availability.
pub fn leader_handoff(leader: u64, preferred: Option<&str>, voters: &[Voter]) -> Option<u64> {
    let preferred = preferred?;
    let me = voters.iter().find(|v| v.id == leader)?;
    if me.region == preferred {
        return None;
    }
    voters
        .iter()
        .filter(|v| v.id != leader && v.region == preferred && v.reachable && v.lag == Some(0))
        .map(|v| v.id)
        .min()
}

/// When the leader measures an app's success rate: over the last `for` of reports,
/// from when it began watching.
pub fn window(placement: &RegionPlacement) -> Millis {
    placement.window.get().as_millis() as Millis
}

#[cfg(test)]
mod tests;
