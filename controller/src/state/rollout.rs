//! Rollouts in the replicated state: starting one when a canary or blue-green app gets a
//! new revision, what each [`RolloutChange`] does to it, undo, and the pods each
//! revision gets — deterministic, as every Raft command is. When to propose which
//! change is the rollout reconciler's (`reconcile/rollout.rs`); measurements come from
//! the leader's analysis.
//!
//! Every change names its canary; one for a canary that is not (or no longer) the one
//! being rolled out changes nothing. A step is entered only from the step before it,
//! so a change proposed twice (a leader that failed over, a reconciler on an old view)
//! moves the rollout once.
//!
//! The rollout's settings and analysis templates are read from the app's spec as it is
//! now (changing them is not a new revision), as Argo reads its Rollout object.

use dabba_spec::analysis::{AnalysisRef, AnalysisRun, Measurement, MetricRun, RunKind};
use dabba_spec::resources::{AppSpec, Millis, PodPhase, ResourceKey};
use dabba_spec::rollout::{
    Pause, PauseReason, Paused, PendingCheck, Rollout, RolloutPhase, RolloutStatus, ScaleDown,
    Step, Strategy,
};

use super::apps::replica_set_key;
use super::{State, rejected};
use crate::command::{Rejection, Reply, RolloutChange};

fn ms(d: dabba_spec::HumanDuration) -> Millis {
    d.get().as_millis() as Millis
}

impl State {
    /// The app's rollout settings now.
    fn rollout_of(&self, key: &ResourceKey) -> Rollout {
        self.apps
            .get(key)
            .and_then(|a| a.spec.rollout.clone())
            .unwrap_or_default()
    }

    /// Starts rolling `canary` out over what serves now, if the app's strategy is canary
    /// or blue-green and something serves; returns whether it did. A rollout already
    /// in progress is replaced: its canary stops taking traffic at once (and keeps its
    /// pods for the abort delay), its stable revision stays stable.
    pub(super) fn begin_rollout(
        &mut self,
        key: &ResourceKey,
        serving: Option<u64>,
        canary: u64,
        spec: &AppSpec,
        at: Millis,
    ) -> bool {
        let strategy = spec.strategy();
        let stable = match self.rollouts.get(key) {
            Some(r) if r.in_progress() => Some(r.stable),
            Some(r) => Some(r.stable),
            None => serving,
        };
        let (Some(stable), Some(rollout)) = (stable, spec.rollout.as_ref()) else {
            self.rollouts.remove(key);
            return false;
        };
        if strategy == Strategy::Rolling || stable == canary {
            self.rollouts.remove(key);
            return false;
        }
        let mut status = RolloutStatus::begin(strategy, stable, canary, at);
        let replaced = self
            .rollouts
            .get(key)
            .and_then(|r| r.canary)
            .filter(|c| *c != canary);
        status.scale_down = match replaced {
            Some(old) => Some(ScaleDown {
                revision: old,
                at: at + ms(rollout.abort_scale_down_delay()),
            }),
            None => self.rollouts.get(key).and_then(|r| r.scale_down),
        };
        self.rollouts.insert(key.clone(), status);
        self.event(
            at,
            format!("app/{key}"),
            "RolloutStarted",
            format!("{strategy:?} of revision {canary} over revision {stable}"),
        );
        if strategy == Strategy::Canary {
            // An undo to a revision seen recently skips the steps (`rollback_window`).
            let recent = self.within_rollback_window(key, canary, rollout);
            let first = if recent {
                rollout.steps.len() as u32
            } else {
                0
            };
            if recent {
                self.event(
                    at,
                    format!("app/{key}"),
                    "RolloutStep",
                    "a rollback within rollback_window: no steps",
                );
            }
            self.enter_step(key, first, at);
        }
        true
    }

    /// Whether `revision` is among the last `rollback_window.revisions` revisions before
    /// the newest.
    fn within_rollback_window(&self, key: &ResourceKey, revision: u64, rollout: &Rollout) -> bool {
        let Some(w) = rollout.rollback_window else {
            return false;
        };
        let Some(revs) = self.revisions.get(key) else {
            return false;
        };
        let Some(target) = revs.iter().find(|r| r.number == revision) else {
            return false;
        };
        // The revisions before the newest, newest first; the target is one of them, or
        // (a re-applied old manifest) runs what one of them ran.
        revs.iter()
            .rev()
            .filter(|r| r.number != revision)
            .take(w.revisions as usize)
            .any(|r| r.spec.same_revision(&target.spec))
            || revs
                .iter()
                .rev()
                .skip(1)
                .take(w.revisions as usize)
                .any(|r| r.number == revision)
    }

    /// Applies one rollout change; returns whether anything changed.
    pub(super) fn apply_rollout(&mut self, change: &RolloutChange, at: Millis) -> bool {
        let key = change.app().clone();
        let changed = self.apply_rollout_change(&key, change, at);
        if changed {
            self.resize(&key);
        }
        changed
    }

    fn apply_rollout_change(
        &mut self,
        key: &ResourceKey,
        change: &RolloutChange,
        at: Millis,
    ) -> bool {
        let key = key.clone();
        let Some(r) = self.rollouts.get(&key) else {
            return false;
        };
        if let RolloutChange::ScaleDown { revision, .. } = change {
            if r.scale_down.is_none_or(|s| s.revision != *revision) {
                return false;
            }
            self.rollouts.get_mut(&key).expect("checked").scale_down = None;
            self.event(
                at,
                format!("app/{key}"),
                "ScaledDown",
                format!("revision {revision} keeps no pods"),
            );
            return true;
        }
        if let RolloutChange::Share { share, canary, .. } = change {
            let r = self.rollouts.get_mut(&key).expect("checked");
            if r.canary != Some(*canary) || r.canary_share == Some(*share) {
                return false;
            }
            r.canary_share = Some(*share);
            return true;
        }
        let canary = change
            .canary()
            .expect("every other change names its canary");
        if r.canary != Some(canary) {
            return false;
        }
        let aborted = r.aborted;
        match change {
            RolloutChange::Step { step, .. } => {
                if aborted || *step != r.step + 1 {
                    return false;
                }
                self.enter_step(&key, *step, at);
                true
            }
            RolloutChange::Measured {
                run,
                started,
                metric,
                measurement,
                ..
            } => self.record_measurement(&key, (*run, *started), *metric, measurement.clone(), at),
            RolloutChange::CheckStarted {
                run,
                started,
                metric,
                host,
                id,
                ..
            } => {
                let r = self.rollouts.get_mut(&key).expect("checked above");
                let running = r
                    .analysis
                    .iter()
                    .any(|x| (x.kind, x.started) == (*run, *started) && x.finished.is_none());
                let pending = r
                    .checks
                    .iter()
                    .any(|c| (c.run, c.started, c.metric) == (*run, *started, *metric));
                if aborted || !running || pending {
                    return false;
                }
                r.checks.push(PendingCheck {
                    run: *run,
                    started: *started,
                    metric: *metric,
                    host: host.clone(),
                    since: at,
                    id: id.clone(),
                });
                true
            }
            RolloutChange::Complete { .. } => {
                if aborted {
                    return false;
                }
                self.complete(&key, canary, at);
                true
            }
            RolloutChange::PreviewReady { .. } => {
                let rollout = self.rollout_of(&key);
                let r = self.rollouts.get_mut(&key).expect("checked above");
                if r.preview_ready.is_some() || aborted || r.strategy != Strategy::BlueGreen {
                    return false;
                }
                r.preview_ready = Some(at);
                r.progressed = at;
                self.event(
                    at,
                    format!("app/{key}"),
                    "PreviewReady",
                    format!("revision {canary} runs its preview pods"),
                );
                if let Some(a) = &rollout.pre_promotion_analysis {
                    self.start_run(&key, RunKind::PrePromotion, a, at);
                }
                if !rollout.auto_promotion_enabled() {
                    self.pause(&key, PauseReason::Promotion, "waiting to be promoted", at);
                }
                true
            }
            RolloutChange::Switch { .. } => {
                if aborted || self.rollouts[&key].promoted {
                    return false;
                }
                self.switch(&key, canary, at);
                true
            }
            RolloutChange::Abort { reason, .. } => {
                if aborted {
                    return false;
                }
                self.abort(&key, canary, reason, at);
                true
            }
            RolloutChange::Degrade { reason, .. } => {
                let r = self.rollouts.get_mut(&key).expect("checked above");
                if r.phase == RolloutPhase::Degraded {
                    return false;
                }
                r.phase = RolloutPhase::Degraded;
                r.message = reason.clone();
                self.event(at, format!("app/{key}"), "Degraded", reason.clone());
                true
            }
            RolloutChange::Pause {
                reason, message, ..
            } => {
                if aborted || self.rollouts[&key].paused.is_some() {
                    return false;
                }
                self.pause(&key, *reason, message, at);
                true
            }
            RolloutChange::Resume { .. } => {
                let r = self.rollouts.get_mut(&key).expect("checked above");
                let Some(p) = r.paused else {
                    return false;
                };
                match p.reason {
                    PauseReason::User => {
                        r.paused = None;
                        r.phase = RolloutPhase::Progressing;
                        r.progressed = at;
                        r.message.clear();
                    }
                    // An inconclusive analysis: run its step again.
                    PauseReason::Inconclusive => {
                        let step = r.step;
                        let kind = r
                            .analysis
                            .iter()
                            .rev()
                            .find(|run| {
                                run.phase() == dabba_spec::analysis::AnalysisPhase::Inconclusive
                            })
                            .map(|run| run.kind);
                        match kind {
                            Some(RunKind::Step { .. }) | None => self.enter_step(&key, step, at),
                            Some(kind) => {
                                let r = self.rollouts.get_mut(&key).expect("checked above");
                                r.paused = None;
                                r.phase = RolloutPhase::Progressing;
                                r.progressed = at;
                                r.message.clear();
                                let rollout = self.rollout_of(&key);
                                let again = match kind {
                                    RunKind::Background => rollout.analysis.map(|b| b.analysis),
                                    RunKind::PrePromotion => rollout.pre_promotion_analysis,
                                    RunKind::PostPromotion => rollout.post_promotion_analysis,
                                    RunKind::Step { .. } => None,
                                };
                                if let Some(a) = again {
                                    self.start_run(&key, kind, &a, at);
                                }
                            }
                        }
                    }
                    // A step's pause and a promotion wait end with a promote.
                    PauseReason::Step | PauseReason::Promotion => return false,
                }
                self.event(at, format!("app/{key}"), "Resumed", "resumed");
                true
            }
            RolloutChange::Promote { full, .. } => {
                if aborted {
                    return false;
                }
                self.promote(&key, canary, *full, at);
                true
            }
            RolloutChange::Retry { .. } => {
                if !aborted {
                    return false;
                }
                let r = self.rollouts.get_mut(&key).expect("checked above");
                let (strategy, stable) = (r.strategy, r.stable);
                let mut fresh = RolloutStatus::begin(strategy, stable, canary, at);
                fresh.analysis = std::mem::take(&mut r.analysis);
                fresh.scale_down = r.scale_down.filter(|s| s.revision != canary);
                *r = fresh;
                self.event(
                    at,
                    format!("app/{key}"),
                    "Retried",
                    format!("revision {canary} from the first step"),
                );
                if strategy == Strategy::Canary {
                    self.enter_step(&key, 0, at);
                }
                true
            }
            RolloutChange::ScaleDown { .. } | RolloutChange::Share { .. } => {
                unreachable!("handled above")
            }
        }
    }

    /// Sets the replica sets of the stable and canary revisions from the app's count and
    /// the rollout ([`RolloutStatus::sizes`]); other revisions want none (the replica-set
    /// reconciler keeps a revision waiting for its scale-down as it is).
    pub(super) fn resize(&mut self, key: &ResourceKey) {
        let (Some(app), Some(r)) = (self.apps.get(key), self.rollouts.get(key)) else {
            return;
        };
        let rollout = app.spec.rollout.clone().unwrap_or_default();
        let sizes = r.sizes(app.spec.replicas, &rollout, app.spec.scale.is_some());
        let (stable, canary) = (r.stable, r.canary);
        for rs in self.replica_sets.values_mut() {
            if rs.namespace != key.namespace() || rs.app != key.name() {
                continue;
            }
            rs.replicas = if rs.revision == stable {
                sizes.stable
            } else if Some(rs.revision) == canary {
                sizes.canary
            } else {
                0
            };
        }
    }

    /// Enters `step`: the step index moves, and the step's effect applies. Past the last
    /// step the canary takes all traffic (the reconciler completes the rollout once it
    /// has all its pods).
    fn enter_step(&mut self, key: &ResourceKey, step: u32, at: Millis) {
        let Some(canary) = self.rollouts.get(key).and_then(|r| r.canary) else {
            return;
        };
        let rollout = self.rollout_of(key);
        let r = self.rollouts.get_mut(key).expect("a rollout");
        r.step = step;
        r.step_started = at;
        r.progressed = at;
        r.paused = None;
        r.phase = RolloutPhase::Progressing;
        r.message.clear();
        // A step's analysis that is still running ends with its step.
        for run in r.analysis.iter_mut() {
            if matches!(run.kind, RunKind::Step { .. }) && run.finished.is_none() {
                run.finished = Some(at);
            }
        }
        r.checks.retain(|c| !matches!(c.run, RunKind::Step { .. }));
        let n = rollout.steps.len();
        let message = match rollout.steps.get(step as usize) {
            Some(Step::SetWeight(w)) => {
                r.weight = *w;
                format!("step {}/{n}: weight {w}%", step + 1)
            }
            Some(Step::Pause(p)) => {
                let until = match p {
                    Pause::For(d) => Some(at + ms(*d)),
                    Pause::UntilPromoted(_) => None,
                };
                r.paused = Some(Paused {
                    reason: PauseReason::Step,
                    since: at,
                    until,
                });
                r.phase = RolloutPhase::Paused;
                match p {
                    Pause::For(d) => format!("step {}/{n}: pause for {d}", step + 1),
                    Pause::UntilPromoted(_) => {
                        r.message = "paused until promoted".into();
                        format!("step {}/{n}: pause until promoted", step + 1)
                    }
                }
            }
            Some(Step::Analysis(a)) => {
                let a = a.clone();
                self.start_run(key, RunKind::Step { step }, &a, at);
                format!("step {}/{n}: analysis {}", step + 1, a.templates.join(", "))
            }
            Some(Step::SetHeaderRoute(h)) => {
                r.header_route = Some(h.clone());
                format!("step {}/{n}: header route {}", step + 1, h.name)
            }
            Some(Step::SetCanaryScale(s)) => {
                r.canary_scale = Some(*s);
                format!("step {}/{n}: canary scale {}", step + 1, describe_scale(s))
            }
            None => {
                r.weight = 100;
                r.canary_scale = None;
                r.header_route = None;
                format!("all {n} steps done: revision {canary} takes all traffic")
            }
        };
        // The background analysis starts with its starting step.
        if let Some(b) = &rollout.analysis
            && step >= b.starting_step
            && (step as usize) < n
            && !self.rollouts[key].analysis.iter().any(|run| {
                run.kind == RunKind::Background && run.revision == canary && run.finished.is_none()
            })
        {
            self.start_run(key, RunKind::Background, &b.analysis, at);
        }
        self.event(at, format!("app/{key}"), "RolloutStep", message);
    }

    /// Starts an analysis run of the canary with the metrics of `analysis`'s templates.
    fn start_run(&mut self, key: &ResourceKey, kind: RunKind, analysis: &AnalysisRef, at: Millis) {
        let Some(canary) = self.rollouts.get(key).and_then(|r| r.canary) else {
            return;
        };
        let metrics = analysis
            .templates
            .iter()
            .filter_map(|name| self.analysis_template(key, name))
            .flat_map(|t| t.metrics.iter().map(|m| MetricRun::new(&t.name, &m.name)))
            .collect();
        let r = self.rollouts.get_mut(key).expect("a rollout");
        r.analysis.push(AnalysisRun {
            kind,
            revision: canary,
            started: at,
            finished: None,
            metrics,
        });
        let excess = r.analysis.len().saturating_sub(ANALYSIS_RUNS_KEPT);
        if excess > 0 {
            // Forget the oldest finished runs (a measurement names its run by kind and
            // start, never by position).
            let mut dropped = 0;
            r.analysis.retain(|run| {
                let drop = dropped < excess && run.finished.is_some();
                dropped += usize::from(drop);
                !drop
            });
        }
        self.event(
            at,
            format!("app/{key}"),
            "AnalysisStarted",
            format!(
                "{} of revision {canary}: {}",
                kind.describe(),
                analysis.templates.join(", ")
            ),
        );
    }

    fn record_measurement(
        &mut self,
        key: &ResourceKey,
        run: (RunKind, Millis),
        metric: u32,
        m: Measurement,
        at: Millis,
    ) -> bool {
        // The metric's spec, from the run as committed (before borrowing it to change).
        let spec = self
            .rollouts
            .get(key)
            .and_then(|r| r.analysis.iter().find(|x| (x.kind, x.started) == run))
            .and_then(|x| x.metrics.get(metric as usize))
            .and_then(|m| self.metric_spec(key, &m.template, &m.metric))
            .cloned();
        let r = self.rollouts.get_mut(key).expect("a rollout");
        r.checks
            .retain(|c| (c.run, c.started, c.metric) != (run.0, run.1, metric));
        let Some(run) = r
            .analysis
            .iter_mut()
            .find(|r| (r.kind, r.started) == run && r.finished.is_none())
        else {
            return false;
        };
        let background = run.background();
        let kind = run.kind;
        let Some(mr) = run.metrics.get_mut(metric as usize) else {
            return false;
        };
        let Some(spec) = spec else {
            return false;
        };
        let value = m
            .value
            .map_or_else(|| "no value".to_string(), |v| format!("{v:.4}"));
        let requests = m
            .requests
            .map(|n| format!(" over {n} requests"))
            .unwrap_or_default();
        let why = if m.message.is_empty() {
            String::new()
        } else {
            format!(": {}", m.message)
        };
        let message = format!(
            "{} {}/{}: {value}{requests} ({:?}{why})",
            kind.describe(),
            mr.template,
            mr.metric,
            m.phase
        );
        mr.record(&spec, m, background);
        if run.phase().is_done() {
            run.finished = Some(at);
        }
        self.event(at, format!("app/{key}"), "Measured", message);
        true
    }

    fn pause(&mut self, key: &ResourceKey, reason: PauseReason, message: &str, at: Millis) {
        let r = self.rollouts.get_mut(key).expect("a rollout");
        r.paused = Some(Paused {
            reason,
            since: at,
            until: None,
        });
        r.phase = RolloutPhase::Paused;
        r.message = message.to_string();
        self.event(at, format!("app/{key}"), "Paused", message.to_string());
    }

    /// A person's promote: past the current step (canary) or to the switch (blue-green);
    /// `full` skips every remaining step and analysis.
    fn promote(&mut self, key: &ResourceKey, canary: u64, full: bool, at: Millis) {
        let steps = self.rollout_of(key).steps.len() as u32;
        let r = &self.rollouts[key];
        let (strategy, promoted, step) = (r.strategy, r.promoted, r.step);
        self.event(
            at,
            format!("app/{key}"),
            "Promoted",
            if full { "promoted fully" } else { "promoted" },
        );
        match strategy {
            Strategy::BlueGreen => {
                if !promoted {
                    self.switch(key, canary, at);
                }
                if promoted || full {
                    self.complete(key, canary, at);
                }
            }
            _ => {
                let next = if full { steps } else { (step + 1).min(steps) };
                if next != step || self.rollouts[key].paused.is_some() {
                    self.enter_step(key, next, at);
                }
            }
        }
    }

    /// Blue-green: all traffic goes to the preview; the old active keeps its pods.
    fn switch(&mut self, key: &ResourceKey, canary: u64, at: Millis) {
        let post = self.rollout_of(key).post_promotion_analysis;
        let r = self.rollouts.get_mut(key).expect("a rollout");
        r.promoted = true;
        r.weight = 100;
        r.paused = None;
        r.phase = RolloutPhase::Progressing;
        r.progressed = at;
        r.message.clear();
        r.finish_runs(at);
        self.event(
            at,
            format!("app/{key}"),
            "Switched",
            format!("all traffic to revision {canary}"),
        );
        if let Some(a) = &post {
            self.start_run(key, RunKind::PostPromotion, a, at);
        }
    }

    /// The canary takes over: it is the stable revision now, and the old one keeps its
    /// pods for the scale-down delay.
    fn complete(&mut self, key: &ResourceKey, canary: u64, at: Millis) {
        let delay = ms(self.rollout_of(key).scale_down_delay());
        let r = self.rollouts.get_mut(key).expect("a rollout");
        let old = r.stable;
        r.settle(
            canary,
            RolloutPhase::Healthy,
            format!("revision {canary} serves everything"),
            at,
        );
        r.scale_down = Some(ScaleDown {
            revision: old,
            at: at + delay,
        });
        self.event(
            at,
            format!("app/{key}"),
            "RolloutCompleted",
            format!("revision {canary} is stable; revision {old} keeps its pods for {delay} ms"),
        );
    }

    fn abort(&mut self, key: &ResourceKey, canary: u64, reason: &str, at: Millis) {
        let delay = ms(self.rollout_of(key).abort_scale_down_delay());
        let r = self.rollouts.get_mut(key).expect("a rollout");
        r.weight = 0;
        r.header_route = None;
        r.promoted = false;
        r.paused = None;
        r.aborted = true;
        r.phase = RolloutPhase::Degraded;
        r.message = format!("aborted: {reason}");
        r.scale_down = Some(ScaleDown {
            revision: canary,
            at: at + delay,
        });
        r.finish_runs(at);
        self.event(
            at,
            format!("app/{key}"),
            "RolloutAborted",
            format!("revision {canary}: {reason}"),
        );
    }

    /// `dabba rollout undo`: revision `to` (by default the stable one during a rollout,
    /// else the one before) serves again, under its own number. Its pods are reused
    /// while it still has them: back to the stable revision during a rollout, or to a
    /// revision waiting for its scale-down, takes effect with this entry. Otherwise a
    /// canary or blue-green app rolls it out (without steps within `rollback_window`),
    /// and a rolling app rolls over to it.
    pub(super) fn undo(
        &mut self,
        namespace: &str,
        name: &str,
        to: Option<u64>,
        at: Millis,
    ) -> Reply {
        let key = ResourceKey::new(namespace, name);
        let Some(app) = self.apps.get(&key).cloned() else {
            return rejected(Rejection::NotFound, format!("no app {key}"));
        };
        let status = self.rollouts.get(&key).cloned();
        let current = status
            .as_ref()
            .map_or(app.revision, |r| r.canary.unwrap_or(r.stable));
        let serving = status.as_ref().map_or(app.revision, |r| r.stable);
        let revisions = self.revisions.get(&key).cloned().unwrap_or_default();
        let to = match to {
            Some(n) => n,
            None if status.as_ref().is_some_and(|r| r.in_progress()) => serving,
            None => match revisions.iter().rev().find(|r| r.number != current) {
                Some(r) => r.number,
                None => {
                    return rejected(
                        Rejection::Invalid,
                        format!("app {key} has no earlier revision to go back to"),
                    );
                }
            },
        };
        let Some(target) = revisions.iter().find(|r| r.number == to).cloned() else {
            let kept: Vec<String> = revisions.iter().map(|r| r.number.to_string()).collect();
            return rejected(
                Rejection::NotFound,
                format!(
                    "app {key} has no revision {to} (revisions kept: {})",
                    kept.join(", ")
                ),
            );
        };
        if to == current && status.as_ref().is_none_or(|r| !r.aborted) {
            return rejected(
                Rejection::Invalid,
                format!("revision {to} of {key} is already the one rolled out"),
            );
        }
        // The app runs the target's spec again, with its count and scaling as now.
        let mut spec = target.spec.clone();
        spec.replicas = app.spec.replicas;
        spec.scale = app.spec.scale.clone();
        spec.rollout = app.spec.rollout.clone();
        spec.analysis = app.spec.analysis.clone();
        let app_mut = self.apps.get_mut(&key).expect("checked");
        app_mut.spec = spec.clone();
        app_mut.revision = to;
        app_mut.updated_at = at;
        self.event(
            at,
            format!("app/{key}"),
            "Undo",
            format!("back to revision {to} (from revision {current})"),
        );
        let running = self
            .pods
            .values()
            .filter(|p| p.namespace == namespace && p.app == name && p.revision == to)
            .filter(|p| p.phase == PodPhase::Running)
            .count() as u32;
        let rollout = spec.rollout.clone().unwrap_or_default();
        match status {
            Some(mut r) if spec.strategy() != Strategy::Rolling => {
                let delay = ms(rollout.abort_scale_down_delay());
                let kept_pods = to == r.stable
                    || (r.scale_down.is_some_and(|s| s.revision == to)
                        && running >= app.spec.replicas.max(1));
                if kept_pods {
                    // Instant: the target still runs; what was rolled out keeps its pods
                    // for the abort delay.
                    let from = r.canary.unwrap_or(r.stable);
                    r.settle(
                        to,
                        RolloutPhase::Healthy,
                        format!("undone to revision {to}"),
                        at,
                    );
                    r.scale_down = (from != to).then_some(ScaleDown {
                        revision: from,
                        at: at + delay,
                    });
                    self.rollouts.insert(key.clone(), r);
                } else {
                    self.ensure_replica_set(&key, to);
                    self.begin_rollout(&key, Some(serving), to, &spec, at);
                }
                self.resize(&key);
            }
            _ => {
                self.rollouts.remove(&key);
                self.ensure_replica_set(&key, to);
                for rs in self.replica_sets.values_mut() {
                    if rs.namespace == namespace && rs.app == name {
                        rs.replicas = if rs.revision == to { spec.replicas } else { 0 };
                    }
                }
            }
        }
        self.version += 1;
        Reply::App {
            app: Box::new(self.apps[&key].clone()),
        }
    }

    fn ensure_replica_set(&mut self, key: &ResourceKey, revision: u64) {
        self.replica_sets
            .entry(replica_set_key(key.namespace(), key.name(), revision))
            .or_insert_with(|| dabba_spec::resources::ReplicaSet {
                namespace: key.namespace().into(),
                app: key.name().into(),
                revision,
                replicas: 0,
            });
    }
}

/// Analysis runs kept per rollout (the oldest finished ones go first).
pub const ANALYSIS_RUNS_KEPT: usize = 50;

fn describe_scale(s: &dabba_spec::rollout::CanaryScale) -> String {
    match (s.replicas, s.weight) {
        (Some(r), _) => format!("{r} pods"),
        (_, Some(w)) => format!("{w}% of the pods"),
        _ => "as its traffic weight".into(),
    }
}
