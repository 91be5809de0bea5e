//! Replica sets: keep the desired number of pods of each revision, replace pods of lost
//! hosts, and roll an app from one revision to the next without a gap.
//!
//! Lifecycle of a pod, as this reconciler sees it:
//!
//! | pod | on a lost host | surplus in its replica set | otherwise |
//! |---|---|---|---|
//! | Pending (no host) | — | deleted first | placed when a host fits, else its reason is kept current |
//! | Scheduled / Running | deleted (and so replaced) | deleted, newest first | left alone |
//! | Failed | deleted (and so replaced) | deleted first | replaced after its back-off (`RestartBackoff`: 10 s doubling to 5 min over failures in a row), the replacement counting one more restart |
//!
//! Rolling forward: the new revision's replica set starts its pods (all at once by
//! default, or `max_surge` above the app's count in all); an old revision's pods go as
//! the new revision's run, never leaving fewer Running than the count less
//! `max_unavailable` (none by default), so an app keeps answering during an update. During a canary or blue-green rollout the
//! rollout sizes the stable and canary replica sets, and a revision waiting for its
//! scale-down keeps the pods it has.

use std::collections::{BTreeSet, HashMap};

use dabba_spec::resources::{Millis, Pod, PodPhase, ResourceKey};
use dabba_spec::rollout::Amount;

use super::Tuning;
use super::scheduler::{self, Usage};
use crate::command::PodChange;
use crate::state::State;

pub fn reconcile<'s>(
    state: &'s State,
    ready: &BTreeSet<&str>,
    now: Millis,
    tuning: &Tuning,
) -> Vec<PodChange> {
    let mut changes = Vec::new();
    let mut usage = Usage::of(state, ready);
    let mut next_seq = state.pod_seq + 1;
    // Pods on hosts that are gone, and Failed pods past their restart back-off, are
    // deleted; their replica sets replace them below.
    let lost = |p: &Pod| {
        p.host.as_deref().is_some_and(|h| !ready.contains(h))
            || (p.phase == PodPhase::Failed && now >= tuning.restart.restart_at(p))
    };
    for pod in state.pods.values().filter(|p| lost(p)) {
        changes.push(PodChange::Delete { key: pod.key() });
    }

    // Pods by replica set and region (for an app placed across regions; `None`
    // otherwise), in one pass: ten thousand apps at zero must not cost ten thousand
    // scans of every pod.
    let group = |p: &'s Pod| -> Option<&'s str> {
        state
            .placements
            .contains_key(&p.app_key())
            .then(|| {
                p.region
                    .as_deref()
                    .or_else(|| p.host.as_deref().and_then(|h| state.host_region(h)))
            })
            .flatten()
    };
    type Group<'a> = (&'a str, &'a str, u64, Option<&'a str>);
    let mut by_set: HashMap<Group, Vec<&Pod>> = HashMap::new();
    let mut live_by_app: HashMap<(&str, &str, Option<&str>), usize> = HashMap::new();
    for p in state.pods.values() {
        let region = group(p);
        by_set
            .entry((p.namespace.as_str(), p.app.as_str(), p.revision, region))
            .or_default()
            .push(p);
        if !lost(p) {
            *live_by_app
                .entry((p.namespace.as_str(), p.app.as_str(), region))
                .or_default() += 1;
        }
    }
    let running = |namespace: &str, app: &str, revision: u64, region: Option<&str>| {
        by_set
            .get(&(namespace, app, revision, region))
            .map_or(0, |ps| {
                ps.iter().filter(|p| p.phase == PodPhase::Running).count()
            })
    };
    for rs in state.replica_sets.values() {
        let app_id = ResourceKey::new(&rs.namespace, &rs.app);
        let (Some(app), Some(revision)) = (
            state.apps.get(&app_id),
            state.revision(&rs.namespace, &rs.app, rs.revision),
        ) else {
            continue;
        };
        let placement = state.placements.get(&app_id);
        // The regions this replica set has pods in or wants pods in.
        let regions: Vec<Option<&str>> = match placement {
            None => vec![None],
            Some(p) => {
                let mut rs_regions: BTreeSet<&str> =
                    p.replicas.keys().map(String::as_str).collect();
                rs_regions.extend(
                    by_set
                        .keys()
                        .filter(|(ns, a, rev, _)| {
                            *ns == rs.namespace && *a == rs.app && *rev == rs.revision
                        })
                        .filter_map(|(_, _, _, r)| *r),
                );
                rs_regions.into_iter().map(Some).collect()
            }
        };
        for region in regions {
            let n = match (placement, region) {
                (Some(p), Some(r)) => p.replicas.get(r).copied().unwrap_or(0),
                _ => app.spec.replicas,
            };
            let mut live: Vec<&Pod> = by_set
                .get(&(rs.namespace.as_str(), rs.app.as_str(), rs.revision, region))
                .map(|ps| ps.iter().copied().filter(|p| !lost(p)).collect())
                .unwrap_or_default();
            // A region that just stopped serving keeps its pods a little while, for the
            // requests routed there before every ingress learned it.
            let in_grace = placement
                .zip(region)
                .and_then(|(p, r)| p.failed.get(r))
                .is_some_and(|f| now < f.since + REGION_GRACE);
            let desired = match state.rollouts.get(&app_id) {
                _ if in_grace => live.len(),
                // A revision that stopped taking traffic keeps the pods it has until its
                // scale-down delay is over (so an undo or a retry is instant).
                Some(r)
                    if r.scale_down.is_some_and(|s| s.revision == rs.revision)
                        && rs.revision != r.stable =>
                {
                    live.len()
                }
                // A rollout sizes its stable and canary revisions
                // (`RolloutStatus::sizes`), in each region of its own.
                Some(r) if rs.revision == r.stable || Some(rs.revision) == r.canary => {
                    if region.is_none() {
                        rs.replicas as usize
                    } else {
                        let rollout = app.spec.rollout.clone().unwrap_or_default();
                        let sizes = r.sizes(n, &rollout, app.spec.scale.is_some());
                        if rs.revision == r.stable {
                            sizes.stable as usize
                        } else {
                            sizes.canary as usize
                        }
                    }
                }
                Some(_) => 0,
                // Rolling: at most `max_surge` pods above the count in all, and at most
                // `max_unavailable` below it running.
                None => {
                    let pace = Pace::of(app);
                    let n = n as usize;
                    let all = live_by_app
                        .get(&(rs.namespace.as_str(), rs.app.as_str(), region))
                        .copied()
                        .unwrap_or(0);
                    if rs.revision == app.revision {
                        let old = all - live.len();
                        let room = (n + pace.surge).saturating_sub(old);
                        let want = if region.is_none() {
                            rs.replicas as usize
                        } else {
                            n
                        };
                        want.min(room.max(live.len()))
                    } else {
                        let serving = running(&rs.namespace, &rs.app, app.revision, region);
                        live.len().min(n.saturating_sub(pace.unavailable + serving))
                    }
                }
            };

            if live.len() > desired {
                // Surplus: unplaced pods first, then the newest.
                live.sort_by_key(|p| {
                    (
                        phase_rank(p.phase),
                        std::cmp::Reverse(p.created_at),
                        p.name.clone(),
                    )
                });
                for pod in &live[desired..] {
                    changes.push(PodChange::Delete { key: pod.key() });
                    if let Some(h) = &pod.host {
                        usage.remove(state, &revision.spec, h);
                    }
                }
                continue;
            }

            // A replacement for a Failed pod carries on its count (and its back-off,
            // should it fail too): the worst first.
            let mut failed: Vec<&Pod> = by_set
                .get(&(rs.namespace.as_str(), rs.app.as_str(), rs.revision, region))
                .map(|ps| {
                    ps.iter()
                        .copied()
                        .filter(|p| p.phase == PodPhase::Failed && lost(p))
                        .collect()
                })
                .unwrap_or_default();
            failed.sort_by_key(|p| (p.backoff, p.restarts, p.name.clone()));
            for _ in live.len()..desired {
                let (restarts, backoff) = failed
                    .pop()
                    .map_or((0, 0), |f| (f.restarts + 1, f.backoff + 1));
                let name = format!("{}-r{}-{}", rs.app, rs.revision, next_seq);
                next_seq += 1;
                let placed = scheduler::place(state, ready, &usage, &revision.spec, region);
                if let Ok(h) = &placed {
                    usage.add(state, &revision.spec, h);
                }
                let (host, phase, reason) = match placed {
                    Ok(h) => (Some(h), PodPhase::Scheduled, None),
                    Err(why) => (None, PodPhase::Pending, Some(why.to_string())),
                };
                changes.push(PodChange::Create {
                    pod: Pod {
                        name,
                        namespace: rs.namespace.clone(),
                        app: rs.app.clone(),
                        revision: rs.revision,
                        host,
                        phase,
                        reason,
                        created_at: now,
                        region: region.map(str::to_string),
                        phase_since: now,
                        restarts,
                        backoff,
                    },
                });
            }

            // Pods still waiting for a host get one if it now fits.
            for pod in live.iter().filter(|p| p.host.is_none()) {
                match scheduler::place(state, ready, &usage, &revision.spec, region) {
                    Ok(h) => {
                        usage.add(state, &revision.spec, &h);
                        changes.push(PodChange::Place {
                            key: pod.key(),
                            host: Some(h),
                            reason: None,
                        });
                    }
                    Err(why) => {
                        let reason = why.to_string();
                        if pod.reason.as_deref() != Some(reason.as_str()) {
                            changes.push(PodChange::Place {
                                key: pod.key(),
                                host: None,
                                reason: Some(reason),
                            });
                        }
                    }
                }
            }
        }
    }
    changes
}

/// How long pods stay in a region an app stopped serving from (routes moved at once).
pub const REGION_GRACE: Millis = 10_000;

/// How fast a rolling update goes: pods it may start above the app's count, and pods it
/// may have fewer than the count running (`[rollout] max_surge`, `max_unavailable`).
struct Pace {
    surge: usize,
    unavailable: usize,
}

impl Pace {
    /// By default every new pod at once (a Wasm pod starts in milliseconds) and none
    /// unavailable.
    fn of(app: &dabba_spec::resources::App) -> Pace {
        let n = app.spec.replicas;
        let r = app.spec.rollout.as_ref();
        let amount = |a: Option<Amount>, default: Amount| a.unwrap_or(default).of(n) as usize;
        Pace {
            surge: amount(r.and_then(|r| r.max_surge), Amount::Percent(100)),
            unavailable: amount(r.and_then(|r| r.max_unavailable), Amount::Count(0)),
        }
    }
}

/// Which pods go first when a replica set shrinks.
fn phase_rank(phase: PodPhase) -> u8 {
    match phase {
        PodPhase::Pending => 0,
        PodPhase::Failed => 1,
        PodPhase::Scheduled => 2,
        PodPhase::Running => 3,
    }
}
