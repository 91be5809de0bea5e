//! The rollout reconciler: what moves each canary or blue-green rollout on, as a pure
//! function of the committed state and the time. It proposes [`RolloutChange`]s; the
//! state machine applies them (`state/rollout.rs`).
//!
//! When a step is done (`spec/rollouts.md`, "Steps"):
//!
//! | step | done when |
//! |---|---|
//! | `set_weight`, `set_header_route`, `set_canary_scale` | the canary runs the pods it wants |
//! | `pause = "2m"` | the time has passed |
//! | `pause = {}` | a person promotes |
//! | `analysis` | its run is Successful (Failed aborts; Inconclusive pauses) |
//! | after the last step | the canary runs the app's full count: then it completes |
//!
//! A background analysis (or a blue-green pre- or post-promotion one) that fails
//! aborts; one that is inconclusive pauses. Blue-green: the preview is ready when its
//! pods run; it is switched to once its pre-promotion analysis succeeded (and
//! `auto_promotion_seconds` passed, when promotion is automatic); it completes when
//! its post-promotion analysis succeeded. Waiting for pods longer than the progress
//! deadline degrades the rollout (or aborts it, with `progress_deadline_abort`).
//!
//! Which measurements are due ([`due`]) is decided here too; taking them needs the
//! load the hosts report, which only the leader has (`node/analysis.rs`).

use std::collections::HashMap;

use dabba_spec::analysis::{AnalysisPhase, AnalysisRun, MetricSpec, RunKind};
use dabba_spec::resources::{Millis, PodPhase, ResourceKey};
use dabba_spec::rollout::{PauseReason, RolloutStatus, Step, Strategy};

pub mod measure;

use crate::command::RolloutChange;
use crate::state::{State, replica_set_key};

/// The rollout changes due now, at most one that moves each rollout (and its
/// scale-down).
pub fn plan(state: &State, now: Millis) -> Vec<RolloutChange> {
    let mut running: HashMap<(&str, &str, u64), u32> = HashMap::new();
    for p in state.pods.values().filter(|p| p.phase == PodPhase::Running) {
        *running
            .entry((p.namespace.as_str(), p.app.as_str(), p.revision))
            .or_default() += 1;
    }
    let mut changes = Vec::new();
    for (key, r) in &state.rollouts {
        if let Some(sd) = r.scale_down
            && now >= sd.at
        {
            changes.push(RolloutChange::ScaleDown {
                app: key.clone(),
                revision: sd.revision,
            });
        }
        let ready = |revision: u64| {
            let want = state
                .replica_sets
                .get(&replica_set_key(key.namespace(), key.name(), revision))
                .map_or(0, |rs| rs.replicas);
            running
                .get(&(key.namespace(), key.name(), revision))
                .copied()
                .unwrap_or(0)
                >= want
        };
        if let Some(c) = next(state, key, r, now, &ready) {
            changes.push(c);
        }
    }
    changes
}

/// The one change that moves this rollout on now, if any.
fn next(
    state: &State,
    key: &ResourceKey,
    r: &RolloutStatus,
    now: Millis,
    ready: &dyn Fn(u64) -> bool,
) -> Option<RolloutChange> {
    let canary = r.canary?;
    if r.aborted {
        return None;
    }
    let app = key.clone();
    let rollout = state
        .apps
        .get(key)?
        .spec
        .rollout
        .clone()
        .unwrap_or_default();
    // Analysis outcomes come first: a failure aborts whatever the step.
    for run in relevant_runs(r, canary) {
        match run.phase() {
            AnalysisPhase::Failed => {
                return Some(RolloutChange::Abort {
                    app,
                    canary,
                    reason: failure(run),
                });
            }
            AnalysisPhase::Inconclusive if r.paused.is_none() => {
                return Some(RolloutChange::Pause {
                    app,
                    canary,
                    reason: PauseReason::Inconclusive,
                    message: format!(
                        "the {} was inconclusive: a person decides (resume re-runs it, promote skips it, abort stops)",
                        run.kind.describe()
                    ),
                });
            }
            _ => {}
        }
    }
    if let Some(p) = r.paused {
        return match (p.reason, p.until) {
            (PauseReason::Step, Some(until)) if now >= until => Some(RolloutChange::Step {
                app,
                canary,
                step: r.step + 1,
            }),
            _ => None,
        };
    }
    let waiting_for_pods = match r.strategy {
        Strategy::Rolling => return None,
        Strategy::Canary => {
            let steps = rollout.steps.len() as u32;
            if r.step >= steps {
                if ready(canary) {
                    return Some(RolloutChange::Complete { app, canary });
                }
                true
            } else {
                let done = match &rollout.steps[r.step as usize] {
                    Step::SetWeight(_) | Step::SetHeaderRoute(_) | Step::SetCanaryScale(_) => {
                        ready(canary)
                    }
                    Step::Analysis(_) => step_run(r, canary)
                        .is_some_and(|run| run.phase() == AnalysisPhase::Successful),
                    // A pause step's pause was lifted: by a promote, which moved on.
                    Step::Pause(_) => false,
                };
                if done {
                    return Some(RolloutChange::Step {
                        app,
                        canary,
                        step: r.step + 1,
                    });
                }
                !ready(canary)
            }
        }
        Strategy::BlueGreen => {
            if r.preview_ready.is_none() {
                if ready(canary) {
                    return Some(RolloutChange::PreviewReady { app, canary });
                }
                true
            } else if !r.promoted {
                let pre_done = rollout.pre_promotion_analysis.is_none()
                    || latest(r, canary, RunKind::PrePromotion)
                        .is_some_and(|run| run.phase() == AnalysisPhase::Successful);
                let waited = r.preview_ready.unwrap_or(now)
                    + rollout.auto_promotion_seconds.unwrap_or(0) * 1000
                    <= now;
                if pre_done && waited && rollout.auto_promotion_enabled() {
                    return Some(RolloutChange::Switch { app, canary });
                }
                false
            } else {
                let post_done = rollout.post_promotion_analysis.is_none()
                    || latest(r, canary, RunKind::PostPromotion)
                        .is_some_and(|run| run.phase() == AnalysisPhase::Successful);
                if post_done && ready(canary) {
                    return Some(RolloutChange::Complete { app, canary });
                }
                !ready(canary)
            }
        }
    };
    let deadline = rollout.progress_deadline().get().as_millis() as Millis;
    if waiting_for_pods
        && now.saturating_sub(r.progressed) > deadline
        && r.phase != dabba_spec::rollout::RolloutPhase::Degraded
    {
        let reason = format!(
            "revision {canary} made no progress for {} (progress_deadline): its pods are not running",
            rollout.progress_deadline()
        );
        return Some(if rollout.progress_deadline_abort {
            RolloutChange::Abort {
                app,
                canary,
                reason,
            }
        } else {
            RolloutChange::Degrade {
                app,
                canary,
                reason,
            }
        });
    }
    None
}

/// The runs whose outcome decides something now: the current step's, and the newest
/// background, pre- and post-promotion runs of this attempt.
fn relevant_runs(r: &RolloutStatus, canary: u64) -> impl Iterator<Item = &AnalysisRun> {
    [
        step_run(r, canary),
        latest(r, canary, RunKind::Background),
        latest(r, canary, RunKind::PrePromotion),
        latest(r, canary, RunKind::PostPromotion),
    ]
    .into_iter()
    .flatten()
}

/// The current step's analysis run.
fn step_run(r: &RolloutStatus, canary: u64) -> Option<&AnalysisRun> {
    r.analysis.iter().rev().find(|run| {
        run.revision == canary
            && run.kind == RunKind::Step { step: r.step }
            && run.started >= r.step_started
    })
}

/// The newest run of `kind` in this attempt.
fn latest(r: &RolloutStatus, canary: u64, kind: RunKind) -> Option<&AnalysisRun> {
    r.analysis
        .iter()
        .rev()
        .find(|run| run.revision == canary && run.kind == kind && run.started >= r.started)
}

/// Why a run failed, from its failed metrics' last measurements.
fn failure(run: &AnalysisRun) -> String {
    let metrics: Vec<String> = run
        .metrics
        .iter()
        .filter(|m| m.phase == AnalysisPhase::Failed)
        .map(|m| {
            let last = m.measurements.last();
            let value = last
                .and_then(|x| x.value)
                .map_or_else(|| "no value".to_string(), |v| format!("{v:.4}"));
            let why = last.map(|x| x.message.as_str()).unwrap_or_default();
            format!(
                "{}/{} = {value} ({} failed, {} errors of {} measurements{}{why})",
                m.template,
                m.metric,
                m.failures,
                m.errors,
                m.taken,
                if why.is_empty() { "" } else { ": " }
            )
        })
        .collect();
    format!("the {} failed: {}", run.kind.describe(), metrics.join("; "))
}

/// What a rollout waits for now, in words (for `dabba rollout status`).
pub fn waiting_for(state: &State, key: &ResourceKey, r: &RolloutStatus, now: Millis) -> String {
    let Some(canary) = r.canary else {
        return format!("nothing: revision {} serves everything", r.stable);
    };
    if r.aborted {
        return "a person: `dabba rollout retry` starts again, `undo` or a new revision replaces it".into();
    }
    let pods = |revision: u64| {
        let want = state
            .replica_sets
            .get(&replica_set_key(key.namespace(), key.name(), revision))
            .map_or(0, |rs| rs.replicas);
        let running = state
            .pods
            .values()
            .filter(|p| {
                p.app_key() == *key && p.revision == revision && p.phase == PodPhase::Running
            })
            .count();
        format!("revision {revision} to run {want} pods ({running} running)")
    };
    let run = |run: Option<&AnalysisRun>| match run {
        Some(run) => {
            let taken: u32 = run.metrics.iter().map(|m| m.taken).sum();
            format!(
                "the {} ({:?}, {taken} measurements so far)",
                run.kind.describe(),
                run.phase()
            )
        }
        None => "an analysis to start".into(),
    };
    if let Some(p) = r.paused {
        return match (p.reason, p.until) {
            (PauseReason::Step, Some(until)) => {
                format!("a pause: {} s left", until.saturating_sub(now).div_ceil(1000))
            }
            (PauseReason::Step, None) | (PauseReason::Promotion, _) => {
                "a person: `dabba rollout promote`".into()
            }
            (PauseReason::User, _) => "a person: `dabba rollout resume`".into(),
            (PauseReason::Inconclusive, _) => {
                "a person: `resume` re-runs the inconclusive analysis, `promote` skips it, `abort` stops".into()
            }
        };
    }
    let Some(rollout) = state.apps.get(key).and_then(|a| a.spec.rollout.clone()) else {
        return String::new();
    };
    match r.strategy {
        Strategy::Rolling => String::new(),
        Strategy::Canary => match rollout.steps.get(r.step as usize) {
            None => pods(canary),
            Some(Step::Analysis(_)) => run(step_run(r, canary)),
            Some(_) => pods(canary),
        },
        Strategy::BlueGreen if r.preview_ready.is_none() => pods(canary),
        Strategy::BlueGreen if !r.promoted => {
            if rollout.pre_promotion_analysis.is_some()
                && latest(r, canary, RunKind::PrePromotion)
                    .is_none_or(|run| run.phase() != AnalysisPhase::Successful)
            {
                run(latest(r, canary, RunKind::PrePromotion))
            } else if !rollout.auto_promotion_enabled() {
                "a person: `dabba rollout promote`".into()
            } else {
                let at = r.preview_ready.unwrap_or(now)
                    + rollout.auto_promotion_seconds.unwrap_or(0) * 1000;
                format!("the switch, in {} s", at.saturating_sub(now).div_ceil(1000))
            }
        }
        Strategy::BlueGreen => {
            if rollout.post_promotion_analysis.is_some()
                && latest(r, canary, RunKind::PostPromotion)
                    .is_none_or(|run| run.phase() != AnalysisPhase::Successful)
            {
                run(latest(r, canary, RunKind::PostPromotion))
            } else {
                pods(canary)
            }
        }
    }
}

/// One measurement the analysis should take now.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    pub app: ResourceKey,
    pub canary: u64,
    pub run: RunKind,
    pub started: Millis,
    pub metric: u32,
    pub spec: MetricSpec,
    /// Requests reported after this time and up to now are the measurement's.
    pub window_from: Millis,
}

/// The measurements due at `now`. A leader that has not seen a whole window of load
/// since it became leader (`observing_since`) waits until it has, so a measurement
/// never counts a window it saw only part of.
pub fn due(state: &State, now: Millis, observing_since: Millis) -> Vec<Due> {
    let mut out = Vec::new();
    for (key, r) in &state.rollouts {
        let (Some(canary), false) = (r.canary, r.aborted) else {
            continue;
        };
        for run in r
            .analysis
            .iter()
            .filter(|run| run.finished.is_none() && run.revision == canary)
        {
            for (i, m) in run.metrics.iter().enumerate() {
                let Some(spec) = state.metric_spec(key, &m.template, &m.metric) else {
                    continue;
                };
                let Some(at) = m.next_due(spec, run.started) else {
                    continue;
                };
                let interval = spec.interval.get().as_millis() as Millis;
                let from = at.saturating_sub(interval);
                let at = at.max(observing_since + interval);
                if now >= at {
                    out.push(Due {
                        app: key.clone(),
                        canary,
                        run: run.kind,
                        started: run.started,
                        metric: i as u32,
                        spec: spec.clone(),
                        window_from: from.max(observing_since),
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
