//! The autoscaler's driver on the leader: one round samples every autoscaled app's
//! demand from the load the hosts reported (soft state), runs [`super::decide`] with
//! what the app's autoscaler remembers, and returns the scale commands to commit.
//!
//! During a canary rollout the decision is for the app's total (so `min` and `max`
//! bound the sum of both revisions); the canary's share of the demand is committed
//! too, and the pods are split by it (`RolloutStatus::sizes`): each revision is sized
//! by its own demand, so the stable does not balloon and the canary is not starved.

use std::collections::{HashMap, VecDeque};

use dabba_spec::api::{AutoscalerStatus, PodLoad};
use dabba_spec::resources::{Millis, ResourceKey};
use dabba_spec::scale::AutoscalerMode as Mode;

use super::{Memory, Metric, Sample, ScaleSpec, decide};
use crate::command::{Command, RegionChange, RolloutChange};
use crate::state::State;

/// What one autoscaler sizes: an app, or an app in one region (an app placed across
/// regions is sized in each by that region's own demand).
pub type ScalerKey = (ResourceKey, Option<String>);

/// The leader's memory of one autoscaled app.
#[derive(Debug, Clone, Default)]
pub struct AppScaler {
    pub memory: Memory,
    pub samples: VecDeque<Sample>,
    pub status: Option<AutoscalerStatus>,
}

/// The load the leader has heard of from the hosts' heartbeats (soft state).
#[derive(Debug, Clone, Default)]
pub struct LoadReports {
    /// By pod: when it was reported, and the load.
    pub pods: HashMap<ResourceKey, (Millis, PodLoad)>,
    /// Requests held by activators, by (host, app).
    pub held: HashMap<(String, ResourceKey), (Millis, u32)>,
}

/// A canary's share of the demand is committed again when it moved this many points.
pub const SHARE_HYSTERESIS: u32 = 5;

/// Reports older than this are not counted.
pub const REPORT_FRESHNESS: Millis = 2_000;

/// One round of autoscaling: samples every autoscaled app's demand from `reports`,
/// decides, and returns the scale commands for the apps whose count should change.
/// `scalers` keeps what each app's autoscaler remembers; an app seen for the first
/// time starts with a full grace period, so a new leader never scales to zero at once.
pub fn drive(
    state: &State,
    reports: &LoadReports,
    scalers: &mut HashMap<ScalerKey, AppScaler>,
    now: Millis,
) -> Vec<Command> {
    let fresh = |at: Millis| now.saturating_sub(at) <= REPORT_FRESHNESS;
    // Demand by app, and by app and region for apps placed across regions.
    let mut demand: HashMap<ScalerKey, (f64, f64)> = HashMap::new();
    // The demand on each rolling-out app's canary, for its share of the pods.
    let mut canary_demand: HashMap<ResourceKey, (f64, f64)> = HashMap::new();
    let unit = |app: &ResourceKey, host: Option<&str>| -> ScalerKey {
        let region = state
            .placements
            .contains_key(app)
            .then(|| host.and_then(|h| state.host_region(h)).map(str::to_string))
            .flatten();
        (app.clone(), region)
    };
    for (key, (at, load)) in &reports.pods {
        if let Some(pod) = state.pods.get(key).filter(|_| fresh(*at)) {
            let app = pod.app_key();
            let d = demand.entry(unit(&app, pod.host.as_deref())).or_default();
            d.0 += load.concurrency;
            d.1 += load.rps;
            if state
                .rollouts
                .get(&app)
                .is_some_and(|r| r.canary == Some(pod.revision))
            {
                let c = canary_demand.entry(app).or_default();
                c.0 += load.concurrency;
                c.1 += load.rps;
            }
        }
    }
    for ((host, app), (at, held)) in &reports.held {
        if fresh(*at) {
            demand.entry(unit(app, Some(host))).or_default().0 += f64::from(*held);
        }
    }
    scalers.retain(|(key, _), _| state.apps.get(key).is_some_and(|a| a.spec.scale.is_some()));
    let mut commands = Vec::new();
    for (key, app) in &state.apps {
        let Some(scale) = &app.spec.scale else {
            continue;
        };
        let spec = ScaleSpec::from(scale);
        // The units this app is sized in: the app, or each region it may serve from.
        let units: Vec<(Option<String>, ScaleSpec, u32)> =
            match (state.placements.get(key), app.spec.regions.as_ref()) {
                (Some(status), Some(placement)) => placement
                    .regions
                    .iter()
                    .filter(|r| status.routes_to(r))
                    .map(|r| {
                        let (min, max) =
                            placement.bounds(r, scale.min, scale.max, status.serves(placement, r));
                        let current = status.replicas.get(r).copied().unwrap_or(0);
                        (
                            Some(r.clone()),
                            ScaleSpec {
                                min,
                                max,
                                ..spec.clone()
                            },
                            current,
                        )
                    })
                    .collect(),
                _ => vec![(None, spec.clone(), app.spec.replicas)],
            };
        for (region, spec, current) in units {
            let id: ScalerKey = (key.clone(), region.clone());
            let (concurrency, rps) = demand.get(&id).copied().unwrap_or_default();
            let scaler = scalers.entry(id).or_insert_with(|| AppScaler {
                memory: Memory {
                    last_demand: Some(now),
                    ..Memory::default()
                },
                ..AppScaler::default()
            });
            if current == 0 && concurrency == 0.0 && rps == 0.0 && spec.min == 0 {
                // At zero with no demand there is nothing to decide: ten thousand idle
                // apps cost no samples.
                scaler.samples.clear();
                if scaler
                    .status
                    .as_ref()
                    .is_none_or(|s| s.mode != Mode::ScaledToZero)
                {
                    scaler.status = Some(AutoscalerStatus {
                        mode: Mode::ScaledToZero,
                        desired: 0,
                        reason: "no demand".into(),
                        demand: 0.0,
                        at: now,
                    });
                }
                continue;
            }
            scaler.samples.push_back(Sample {
                at: now,
                concurrency,
                rps,
            });
            while scaler
                .samples
                .front()
                .is_some_and(|s| s.at + spec.stable_window < now)
            {
                scaler.samples.pop_front();
            }
            let samples: Vec<Sample> = scaler.samples.iter().copied().collect();
            let decision = decide(&spec, &samples, current, &mut scaler.memory, now);
            scaler.status = Some(AutoscalerStatus {
                mode: decision.mode,
                desired: decision.desired,
                reason: decision.reason.clone(),
                demand: match spec.target {
                    Metric::Concurrency(_) => concurrency,
                    Metric::Rps(_) => rps,
                },
                at: now,
            });
            if region.is_none() {
                commands.extend(canary_share(
                    state,
                    key,
                    &spec,
                    (concurrency, rps),
                    &canary_demand,
                    now,
                ));
            }
            if decision.desired == current {
                continue;
            }
            let reason = format!("autoscaler, {}", decision.reason);
            commands.push(match region {
                None => Command::ScaleApp {
                    namespace: app.spec.namespace.clone(),
                    name: app.spec.name.clone(),
                    replicas: decision.desired,
                    at: now,
                    reason: Some(reason),
                },
                Some(region) => Command::Regions {
                    changes: vec![RegionChange::Scale {
                        app: key.clone(),
                        region,
                        replicas: decision.desired,
                        reason,
                    }],
                    at: now,
                },
            });
        }
    }
    commands
}

/// The canary's share of a rolling-out autoscaled app's demand, committed when it
/// moved by [`SHARE_HYSTERESIS`] points or more.
fn canary_share(
    state: &State,
    key: &ResourceKey,
    spec: &ScaleSpec,
    (concurrency, rps): (f64, f64),
    canary_demand: &HashMap<ResourceKey, (f64, f64)>,
    now: Millis,
) -> Option<Command> {
    let r = state.rollouts.get(key)?;
    let (Some(canary), false) = (r.canary, r.aborted) else {
        return None;
    };
    let (all, on_canary) = match spec.target {
        Metric::Concurrency(_) => (concurrency, canary_demand.get(key).map_or(0.0, |c| c.0)),
        Metric::Rps(_) => (rps, canary_demand.get(key).map_or(0.0, |c| c.1)),
    };
    if all <= 0.0 {
        return None;
    }
    let share = (on_canary * 100.0 / all).round().clamp(0.0, 100.0) as u32;
    let known = r.canary_share.unwrap_or(r.weight);
    (share.abs_diff(known) >= SHARE_HYSTERESIS).then(|| Command::Rollout {
        changes: vec![RolloutChange::Share {
            app: key.clone(),
            canary,
            share,
        }],
        at: now,
    })
}
