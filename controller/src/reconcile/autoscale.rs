//! The autoscaler: how many pods an app should have, as a pure function of its scaling
//! spec, a window of demand samples, what it decided before, and the time.
//!
//! It combines Knative's KPA (demand as in-flight requests or requests/s against a
//! per-pod target at a utilization, a stable and a panic window, scale to zero after a
//! grace period) with Kubernetes HPA behaviour (a 10% tolerance, stabilization windows
//! as rolling extremes of past recommendations, and rate-limiting policies of type
//! Pods or Percent per period with a Max/Min/Disabled selection). Nothing here does I/O
//! or reads a clock; the driver feeds it samples and `now`.

use std::collections::{HashMap, VecDeque};

use dabba_spec::api::{AutoscalerStatus, PodLoad};
use dabba_spec::resources::ResourceKey;

use crate::command::Command;
use crate::state::State;

use dabba_spec::resources::Millis;
use dabba_spec::scale::{self, AutoscalerMode as Mode, Scale};

/// What the autoscaler measures demand by, and the target per pod.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric {
    /// In-flight requests per pod.
    Concurrency(f64),
    /// Requests per second per pod.
    Rps(f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    Pods,
    Percent,
}

/// May change the replica count by `value` (pods or percent) per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub kind: PolicyKind,
    pub value: u32,
    pub period: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// The policy allowing the largest change.
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No change in this direction.
    Disabled,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub stabilization_window: Millis,
    pub policies: Vec<Policy>,
    pub select: Select,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScaleSpec {
    pub min: u32,
    pub max: u32,
    pub target: Metric,
    /// Fraction of the target to aim for (Knative's default 70%).
    pub utilization: f64,
    pub stable_window: Millis,
    pub panic_window: Millis,
    /// Panic when the panic window wants this multiple of the current pods (2.0 = 200%).
    pub panic_threshold: f64,
    /// How long demand must be zero before the last pod goes.
    pub scale_to_zero_after: Millis,
    pub up: Rules,
    pub down: Rules,
}

impl Default for ScaleSpec {
    /// Knative's KPA defaults with Kubernetes HPA's default policies. Scaling down is
    /// not stabilized by default (Knative's `scale-down-delay` of 0): the 60 s stable
    /// window already smooths demand, and HPA's 300 s would keep an idle app from
    /// reaching zero for five minutes more than its grace period.
    fn default() -> Self {
        ScaleSpec {
            min: 0,
            max: 100,
            target: Metric::Concurrency(100.0),
            utilization: 0.7,
            stable_window: 60_000,
            panic_window: 6_000,
            panic_threshold: 2.0,
            scale_to_zero_after: 30_000,
            up: Rules {
                stabilization_window: 0,
                policies: vec![
                    Policy {
                        kind: PolicyKind::Percent,
                        value: 100,
                        period: 15_000,
                    },
                    Policy {
                        kind: PolicyKind::Pods,
                        value: 4,
                        period: 15_000,
                    },
                ],
                select: Select::Max,
            },
            down: Rules {
                stabilization_window: 0,
                policies: vec![Policy {
                    kind: PolicyKind::Percent,
                    value: 100,
                    period: 15_000,
                }],
                select: Select::Max,
            },
        }
    }
}

impl From<&Scale> for ScaleSpec {
    /// The `[scale]` section as the autoscaler computes with it; rules left out take the
    /// defaults of their direction.
    fn from(s: &Scale) -> Self {
        let defaults = ScaleSpec::default();
        let ms = |d: dabba_spec::HumanDuration| d.get().as_millis() as Millis;
        let rules = |given: &Option<scale::Rules>, default: Rules| {
            let Some(given) = given else { return default };
            Rules {
                stabilization_window: given
                    .stabilization_window
                    .map_or(default.stabilization_window, ms),
                policies: given.policies.as_ref().map_or(default.policies, |ps| {
                    ps.iter()
                        .map(|p| Policy {
                            kind: match p.kind {
                                scale::PolicyKind::Pods => PolicyKind::Pods,
                                scale::PolicyKind::Percent => PolicyKind::Percent,
                            },
                            value: p.value,
                            period: ms(p.period),
                        })
                        .collect()
                }),
                select: given.select.map_or(default.select, |sel| match sel {
                    scale::Select::Max => Select::Max,
                    scale::Select::Min => Select::Min,
                    scale::Select::Disabled => Select::Disabled,
                }),
            }
        };
        ScaleSpec {
            min: s.min,
            max: s.max,
            target: match (s.target_rps, s.target_concurrency) {
                (Some(rps), _) => Metric::Rps(f64::from(rps)),
                (None, c) => {
                    Metric::Concurrency(f64::from(c.unwrap_or(scale::DEFAULT_TARGET_CONCURRENCY)))
                }
            },
            utilization: f64::from(s.target_utilization) / 100.0,
            stable_window: ms(s.stable_window),
            panic_window: ms(s.panic_window),
            panic_threshold: f64::from(s.panic_threshold) / 100.0,
            scale_to_zero_after: ms(s.scale_to_zero_after),
            up: rules(&s.behavior.up, defaults.up),
            down: rules(&s.behavior.down, defaults.down),
        }
    }
}

/// Demand observed at one moment, summed over the app's pods.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at: Millis,
    pub concurrency: f64,
    pub rps: f64,
}

/// What the autoscaler remembers between decisions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Memory {
    /// Past recommendations (before rate limits), for stabilization.
    pub recommendations: VecDeque<(Millis, u32)>,
    /// Past changes of the replica count (+ up, − down), for policy periods.
    pub changes: VecDeque<(Millis, i64)>,
    /// Panic mode lasts until this time.
    pub panic_until: Option<Millis>,
    /// When demand was last above zero.
    pub last_demand: Option<Millis>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub desired: u32,
    pub mode: Mode,
    pub reason: String,
}

/// The HPA tolerance: a ratio within 10% of 1 changes nothing.
pub const TOLERANCE: f64 = 0.1;

fn average(samples: &[Sample], now: Millis, window: Millis, target: Metric) -> Option<f64> {
    let from = now.saturating_sub(window);
    let values: Vec<f64> = samples
        .iter()
        .filter(|s| s.at > from && s.at <= now)
        .map(|s| match target {
            Metric::Concurrency(_) => s.concurrency,
            Metric::Rps(_) => s.rps,
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// The demand one pod should carry: the target at the utilization.
fn per_pod(spec: &ScaleSpec) -> f64 {
    match spec.target {
        Metric::Concurrency(c) | Metric::Rps(c) => c * spec.utilization,
    }
}

fn pods_for(demand: f64, spec: &ScaleSpec) -> u32 {
    let per_pod = per_pod(spec);
    if demand <= 0.0 || per_pod <= 0.0 {
        return 0;
    }
    (demand / per_pod).ceil().min(u32::MAX as f64) as u32
}

/// The most the rules allow the count to rise to (`up`) or fall to (`down`) now.
fn limit(
    rules: &Rules,
    current: u32,
    changes: &VecDeque<(Millis, i64)>,
    now: Millis,
    up: bool,
) -> u32 {
    if rules.select == Select::Disabled {
        return current;
    }
    let proposals = rules.policies.iter().map(|p| {
        // The count at the start of the policy's period.
        let moved: i64 = changes
            .iter()
            .filter(|(at, _)| *at > now.saturating_sub(p.period))
            .map(|(_, d)| *d)
            .filter(|d| if up { *d > 0 } else { *d < 0 })
            .sum();
        // Scaling up counts from at least one pod, so an app at zero can leave it and
        // percent policies have a base.
        let start = (i64::from(current) - moved).max(i64::from(up)) as f64;
        let v = f64::from(p.value);
        let proposed = match (p.kind, up) {
            (PolicyKind::Pods, true) => start + v,
            (PolicyKind::Pods, false) => start - v,
            // Percent up rounds up (as HPA does); percent down truncates the count
            // kept, so the amount removed rounds up.
            (PolicyKind::Percent, true) => (start * (1.0 + v / 100.0)).ceil(),
            (PolicyKind::Percent, false) => (start * (1.0 - v / 100.0)).trunc(),
        };
        proposed.max(0.0) as u32
    });
    let pick = match (rules.select, up) {
        (Select::Max, true) | (Select::Min, false) => proposals.max(),
        _ => proposals.min(),
    };
    pick.unwrap_or(current)
}

/// Decides the replica count. `current` is the count now; `memory` is updated.
pub fn decide(
    spec: &ScaleSpec,
    samples: &[Sample],
    current: u32,
    memory: &mut Memory,
    now: Millis,
) -> Decision {
    let stable = average(samples, now, spec.stable_window, spec.target).unwrap_or(0.0);
    let panic = average(samples, now, spec.panic_window, spec.target).unwrap_or(0.0);
    let latest_demand = samples
        .iter()
        .filter(|s| s.at <= now && (s.concurrency > 0.0 || s.rps > 0.0))
        .map(|s| s.at)
        .max();
    memory.last_demand = memory.last_demand.max(latest_demand);
    let want_stable = pods_for(stable, spec);
    let want_panic = pods_for(panic, spec);

    // Panic: the short window wants at least `panic_threshold` times the pods there
    // are. It lasts a stable window after the last trigger and never scales down.
    let base = current.max(1);
    if f64::from(want_panic) / f64::from(base) >= spec.panic_threshold && want_panic > current {
        memory.panic_until = Some(now + spec.stable_window);
    }
    let panicking = memory.panic_until.is_some_and(|u| now < u);
    if !panicking {
        memory.panic_until = None;
    }
    let mut reason;
    let mut recommendation = if panicking {
        reason = format!(
            "panic: {panic:.1} in the last {} s",
            spec.panic_window / 1000
        );
        want_panic.max(want_stable).max(current)
    } else {
        reason = format!("stable: {stable:.1} over {} s", spec.stable_window / 1000);
        want_stable
    };

    // Tolerance (HPA): when demand per pod is within 10% of the target, keep the count.
    if current > 0 && !panicking {
        let ratio = stable / (f64::from(current) * per_pod(spec));
        if (ratio - 1.0).abs() <= TOLERANCE + 1e-9 {
            recommendation = current;
        }
    }

    // Scale to zero only after the grace period without demand.
    if recommendation == 0 && spec.min == 0 && current > 0 {
        let idle_since = memory.last_demand.unwrap_or(0);
        if now.saturating_sub(idle_since) < spec.scale_to_zero_after {
            recommendation = 1;
            reason = format!(
                "idle; scale to zero after {} s without requests",
                spec.scale_to_zero_after / 1000
            );
        } else {
            reason = format!(
                "no requests in the last {} s: scale to zero",
                now.saturating_sub(idle_since) / 1000
            );
        }
    }
    let recommendation = recommendation.clamp(spec.min, spec.max);

    // Stabilization: a rolling max of recommendations for scaling down, a rolling min
    // for scaling up.
    memory.recommendations.push_back((now, recommendation));
    let keep = spec
        .up
        .stabilization_window
        .max(spec.down.stabilization_window);
    while memory
        .recommendations
        .front()
        .is_some_and(|(at, _)| *at + keep < now)
    {
        memory.recommendations.pop_front();
    }
    let within = |w: Millis| {
        memory
            .recommendations
            .iter()
            .filter(move |(at, _)| *at + w >= now)
            .map(|(_, r)| *r)
    };
    let mut desired = recommendation;
    if recommendation < current && !panicking {
        desired = within(spec.down.stabilization_window)
            .max()
            .unwrap_or(recommendation)
            .min(current);
    } else if recommendation > current {
        desired = within(spec.up.stabilization_window)
            .min()
            .unwrap_or(recommendation)
            .max(current);
    }
    if panicking {
        desired = desired.max(current);
    }

    // Rate limits.
    if desired > current {
        let cap = limit(&spec.up, current, &memory.changes, now, true);
        if desired > cap {
            reason = format!("{reason}; scale-up limited to {cap} by policy");
        }
        desired = desired.min(cap.max(current));
    } else if desired < current {
        let floor = limit(&spec.down, current, &memory.changes, now, false);
        if desired < floor {
            reason = format!("{reason}; scale-down limited to {floor} by policy");
        }
        desired = desired.max(floor.min(current));
    }
    let desired = desired.clamp(spec.min, spec.max);
    if desired != current {
        memory
            .changes
            .push_back((now, i64::from(desired) - i64::from(current)));
    }
    let longest = spec
        .up
        .policies
        .iter()
        .chain(&spec.down.policies)
        .map(|p| p.period)
        .max()
        .unwrap_or(0);
    while memory
        .changes
        .front()
        .is_some_and(|(at, _)| *at + longest < now)
    {
        memory.changes.pop_front();
    }
    let mode = if desired == 0 {
        Mode::ScaledToZero
    } else if panicking {
        Mode::Panic
    } else {
        Mode::Stable
    };
    Decision {
        desired,
        mode,
        reason,
    }
}

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

/// Reports older than this are not counted.
pub const REPORT_FRESHNESS: Millis = 2_000;

/// One round of autoscaling: samples every autoscaled app's demand from `reports`,
/// decides, and returns the scale commands for the apps whose count should change.
/// `scalers` keeps what each app's autoscaler remembers; an app seen for the first
/// time starts with a full grace period, so a new leader never scales to zero at once.
pub fn drive(
    state: &State,
    reports: &LoadReports,
    scalers: &mut HashMap<ResourceKey, AppScaler>,
    now: Millis,
) -> Vec<Command> {
    let fresh = |at: Millis| now.saturating_sub(at) <= REPORT_FRESHNESS;
    let mut demand: HashMap<ResourceKey, (f64, f64)> = HashMap::new();
    for (key, (at, load)) in &reports.pods {
        if let Some(pod) = state.pods.get(key).filter(|_| fresh(*at)) {
            let d = demand.entry(pod.app_key()).or_default();
            d.0 += load.concurrency;
            d.1 += load.rps;
        }
    }
    for ((_, app), (at, held)) in &reports.held {
        if fresh(*at) {
            demand.entry(app.clone()).or_default().0 += f64::from(*held);
        }
    }
    scalers.retain(|key, _| state.apps.get(key).is_some_and(|a| a.spec.scale.is_some()));
    let mut commands = Vec::new();
    for (key, app) in &state.apps {
        let Some(scale) = &app.spec.scale else {
            continue;
        };
        let spec = ScaleSpec::from(scale);
        let scaler = scalers.entry(key.clone()).or_insert_with(|| AppScaler {
            memory: Memory {
                last_demand: Some(now),
                ..Memory::default()
            },
            ..AppScaler::default()
        });
        let (concurrency, rps) = demand.get(key).copied().unwrap_or_default();
        if app.spec.replicas == 0 && concurrency == 0.0 && rps == 0.0 && spec.min == 0 {
            // At zero with no demand there is nothing to decide: ten thousand idle apps
            // cost no samples.
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
        let current = app.spec.replicas;
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
        if decision.desired != current {
            commands.push(Command::ScaleApp {
                namespace: app.spec.namespace.clone(),
                name: app.spec.name.clone(),
                replicas: decision.desired,
                at: now,
                reason: Some(format!("autoscaler, {}", decision.reason)),
            });
        }
    }
    commands
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(concurrency: f64, from: Millis, to: Millis) -> Vec<Sample> {
        (from..=to)
            .step_by(1000)
            .map(|at| Sample {
                at,
                concurrency,
                rps: 0.0,
            })
            .collect()
    }

    /// One Percent policy per period, no stabilization, select Max.
    fn percent_per(value: u32, period: Millis) -> Rules {
        Rules {
            stabilization_window: 0,
            policies: vec![Policy {
                kind: PolicyKind::Percent,
                value,
                period,
            }],
            select: Select::Max,
        }
    }

    fn spec(target: f64) -> ScaleSpec {
        ScaleSpec {
            target: Metric::Concurrency(target),
            utilization: 1.0,
            ..ScaleSpec::default()
        }
    }

    #[test]
    fn desired_replicas_is_demand_over_target_rounded_up() {
        let s = spec(10.0);
        let mut m = Memory::default();
        let d = decide(&s, &flat(45.0, 1000, 60_000), 5, &mut m, 60_000);
        assert_eq!(d.desired, 5, "4.5 → 5, and 5 is what there is");
        let mut m = Memory::default();
        let d = decide(&s, &flat(75.0, 1000, 60_000), 5, &mut m, 60_000);
        assert_eq!(d.desired, 8, "7.5 → 8 (+60%, within the +100% policy)");
    }

    #[test]
    fn utilization_lowers_the_per_pod_target() {
        let s = ScaleSpec {
            target: Metric::Concurrency(10.0),
            utilization: 0.7,
            ..ScaleSpec::default()
        };
        let mut m = Memory::default();
        // 70 in flight at 7 per pod (70% of 10): 10 pods.
        let d = decide(&s, &flat(70.0, 1000, 60_000), 8, &mut m, 60_000);
        assert_eq!(d.desired, 10);
    }

    #[test]
    fn a_change_within_ten_percent_is_ignored() {
        let s = spec(10.0);
        let mut m = Memory::default();
        let d = decide(&s, &flat(105.0, 1000, 60_000), 10, &mut m, 60_000);
        assert_eq!(d.desired, 10, "10.5 per pod is within 10% of the target 10");
        let mut m = Memory::default();
        let d = decide(&s, &flat(125.0, 1000, 60_000), 10, &mut m, 60_000);
        assert_eq!(d.desired, 13, "12.5 per pod is 25% over: ceil(12.5) pods");
    }

    #[test]
    fn scale_down_is_stabilized_as_a_rolling_max() {
        let mut s = spec(10.0);
        s.down.stabilization_window = 300_000; // HPA's default
        let mut m = Memory::default();
        // High demand a minute ago, low now: the earlier recommendation holds.
        decide(&s, &flat(100.0, 1000, 60_000), 10, &mut m, 60_000);
        let mut low = flat(100.0, 1000, 60_000);
        low.extend(flat(10.0, 61_000, 180_000));
        let d = decide(&s, &low, 10, &mut m, 180_000);
        assert_eq!(d.desired, 10, "within 300 s of recommending 10");
        // After the window the low recommendations are all that remain.
        let mut later = low.clone();
        later.extend(flat(10.0, 181_000, 480_000));
        for t in (190_000..=480_000).step_by(10_000) {
            decide(&s, &later, 10, &mut m, t);
        }
        let d = decide(&s, &later, 10, &mut m, 490_000);
        assert_eq!(d.desired, 1);
    }

    #[test]
    fn panic_mode_scales_up_fast_and_never_down() {
        let s = ScaleSpec {
            up: percent_per(1000, 1000),
            ..spec(10.0)
        };
        let mut samples = flat(20.0, 1000, 54_000);
        samples.extend(flat(200.0, 55_000, 60_000)); // a spike in the last 6 s
        let mut m = Memory::default();
        let d = decide(&s, &samples, 2, &mut m, 60_000);
        assert_eq!(d.mode, Mode::Panic);
        assert_eq!(d.desired, 20, "the panic window wants 20");
        // The spike ends; during panic the count does not drop.
        let mut after = samples.clone();
        after.extend(flat(0.0, 61_000, 90_000));
        let d = decide(&s, &after, 20, &mut m, 90_000);
        assert_eq!(d.mode, Mode::Panic);
        assert_eq!(d.desired, 20);
    }

    #[test]
    fn scales_to_zero_only_after_the_grace_period() {
        let s = ScaleSpec {
            down: percent_per(100, 1000),
            ..spec(10.0)
        };
        let mut samples = flat(5.0, 1000, 10_000);
        samples.extend(flat(0.0, 11_000, 100_000));
        let mut m = Memory::default();
        let d = decide(&s, &samples, 1, &mut m, 30_000);
        assert_eq!(d.desired, 1, "idle for 20 s of a 30 s grace");
        let d = decide(&s, &samples, 1, &mut m, 100_000);
        assert_eq!(d.desired, 0);
        assert_eq!(d.mode, Mode::ScaledToZero);
    }

    #[test]
    fn min_and_max_bound_everything() {
        let s = ScaleSpec {
            min: 2,
            max: 5,
            ..spec(10.0)
        };
        let mut m = Memory::default();
        assert_eq!(
            decide(&s, &flat(0.0, 1000, 60_000), 2, &mut m, 60_000).desired,
            2
        );
        let mut m = Memory::default();
        assert_eq!(
            decide(&s, &flat(1000.0, 1000, 60_000), 4, &mut m, 60_000).desired,
            5
        );
    }

    /// A railway Tatkal-rush HPA: +200% per 30 s up, −5% per 600 s down.
    fn tatkal() -> ScaleSpec {
        ScaleSpec {
            min: 1,
            max: 1000,
            up: percent_per(200, 30_000),
            down: percent_per(5, 600_000),
            ..spec(10.0)
        }
    }

    #[test]
    fn tatkal_rush_triples_per_thirty_seconds_and_sheds_five_percent_per_ten_minutes() {
        let s = ScaleSpec {
            panic_threshold: f64::INFINITY, // the HPA has no panic mode
            ..tatkal()
        };
        let demand = flat(10_000.0, 0, 200_000); // wants 1000 pods
        let mut m = Memory::default();
        let mut n = 10;
        let mut trajectory = vec![];
        for t in (60_000..=150_000).step_by(30_000) {
            n = decide(&s, &demand, n, &mut m, t).desired;
            trajectory.push(n);
        }
        assert_eq!(trajectory, [30, 90, 270, 810], "+200% per 30 s period");
        // Demand collapses: −5% of 100 = 95, then nothing more for 600 s.
        let mut m = Memory::default();
        let quiet = flat(10.0, 0, 2_000_000);
        assert_eq!(decide(&s, &quiet, 100, &mut m, 1_000_000).desired, 95);
        assert_eq!(decide(&s, &quiet, 95, &mut m, 1_300_000).desired, 95);
        assert_eq!(
            decide(&s, &quiet, 95, &mut m, 1_600_001).desired,
            90,
            "95 × 0.95 = 90.25 keeps 90: the amount removed rounds up"
        );
    }

    #[test]
    fn festival_sale_doubles_per_minute_and_sheds_ten_percent_per_minute() {
        let s = ScaleSpec {
            panic_threshold: f64::INFINITY,
            min: 1,
            max: 1000,
            up: percent_per(100, 60_000),
            down: percent_per(10, 60_000),
            ..spec(10.0)
        };
        let rush = flat(2_000.0, 0, 1_000_000); // wants 200
        let mut m = Memory::default();
        let mut n = 5;
        let mut up = vec![];
        for t in (60_000..=360_000).step_by(60_000) {
            n = decide(&s, &rush, n, &mut m, t).desired;
            up.push(n);
        }
        assert_eq!(up, [10, 20, 40, 80, 160, 200]);
        let calm = flat(10.0, 0, 2_000_000); // wants 1
        let mut m = Memory::default();
        let mut down = vec![];
        let mut n = 100;
        for t in (1_000_000..=1_240_000).step_by(60_000) {
            n = decide(&s, &calm, n, &mut m, t).desired;
            down.push(n);
        }
        assert_eq!(
            down,
            [90, 81, 72, 64, 57],
            "−10% a minute, kept count truncated"
        );
    }

    /// A day in the life: ramp, hold, spike, back, then idle, with pods ready at once.
    /// Scaling down is stabilized over HPA's 300 s: without it, the end of the panic a
    /// steep ramp triggers drops the count to the (lagging) stable window's answer, as
    /// Knative's KPA does.
    #[test]
    fn a_synthetic_load_curve_gives_the_expected_trajectory() {
        let mut s = ScaleSpec {
            target: Metric::Concurrency(10.0), // 7 per pod at 70%
            max: 200,
            ..ScaleSpec::default()
        };
        s.down.stabilization_window = 300_000;
        let demand = |t: Millis| -> f64 {
            match t {
                0..120_000 => 200.0 * t as f64 / 120_000.0, // ramp to 200 over 2 min
                120_000..300_000 => 200.0,                  // hold 3 min
                300_000..330_000 => 1000.0,                 // a 30 s spike
                330_000..450_000 => 200.0,                  // back for 2 min
                _ => 0.0,                                   // then idle
            }
        };
        let step = 2000;
        let mut samples = Vec::new();
        let mut m = Memory::default();
        let mut n = 0u32;
        let mut trajectory = Vec::new();
        for t in (step..=1_500_000).step_by(step as usize) {
            samples.push(Sample {
                at: t,
                concurrency: demand(t),
                rps: 0.0,
            });
            let d = decide(&s, &samples, n, &mut m, t);
            n = d.desired;
            trajectory.push((t, n, d.mode));
        }
        let at = |t: Millis| trajectory.iter().find(|(at, ..)| *at >= t).unwrap();

        // Ramp: never down while demand rises.
        let ramp: Vec<u32> = trajectory
            .iter()
            .filter(|(t, ..)| *t < 120_000)
            .map(|(_, n, _)| *n)
            .collect();
        assert!(ramp.windows(2).all(|w| w[1] >= w[0]), "{ramp:?}");
        // Hold: 200 / 7 → 29 pods, or a count the 10% tolerance accepts (≥ 200/7/1.1).
        let hold = at(290_000).1;
        assert!((26..=29).contains(&hold), "{:?}", at(290_000));
        // Spike: panic, and well over the stable count within the spike.
        let spike = at(328_000);
        assert_eq!(spike.2, Mode::Panic, "{spike:?}");
        assert!(spike.1 >= 100, "{spike:?}");
        // After the spike: panic holds the count for a stable window.
        assert!(at(380_000).1 >= spike.1, "{:?}", at(380_000));
        // Idle: not before the grace period, but eventually zero.
        let first_zero = trajectory
            .iter()
            .filter(|(t, ..)| *t > 450_000)
            .find(|(_, n, _)| *n == 0)
            .expect("scaled to zero by the end");
        assert!(
            first_zero.0 >= 450_000 + s.scale_to_zero_after,
            "zero only after the grace period: {first_zero:?}"
        );
        assert_eq!(trajectory.last().unwrap().1, 0);
        assert_eq!(trajectory.last().unwrap().2, Mode::ScaledToZero);
        // And the count never exceeded max.
        assert!(trajectory.iter().all(|(_, n, _)| *n <= s.max));
    }
}
