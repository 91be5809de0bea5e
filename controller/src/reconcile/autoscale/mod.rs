//! The autoscaler: how many pods an app should have, as a pure function of its scaling
//! spec, a window of demand samples, what it decided before, and the time.
//!
//! It combines Knative's KPA (demand as in-flight requests or requests/s against a
//! per-pod target at a utilization, a stable and a panic window, scale to zero after a
//! grace period) with Kubernetes HPA behaviour (a 10% tolerance, stabilization windows
//! as rolling extremes of past recommendations, and rate-limiting policies of type
//! Pods or Percent per period with a Max/Min/Disabled selection). Nothing here does I/O
//! or reads a clock; the driver (`drive.rs`) feeds it samples and `now`.

use std::collections::VecDeque;

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

mod drive;
pub use drive::{AppScaler, LoadReports, REPORT_FRESHNESS, ScalerKey, drive};

#[cfg(test)]
mod tests;
