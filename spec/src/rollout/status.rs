//! A rollout as the control plane holds it (in the replicated state, so a new leader
//! continues from the committed step) and the API shows it.

use serde::{Deserialize, Serialize};

use super::{CanaryScale, HeaderRoute, Rollout, Strategy};
use crate::analysis::{AnalysisRun, RunKind};
use crate::resources::Millis;

/// Where a rollout stands (Argo's phases).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub enum RolloutPhase {
    /// Moving through its steps (or waiting for a preview to be ready).
    Progressing,
    /// Waiting: for a pause's time, for a person to promote, or after an inconclusive
    /// analysis.
    Paused,
    /// Done: the new revision serves everything.
    Healthy,
    /// Aborted (by analysis, a person, or the progress deadline): the stable revision
    /// serves everything; `retry` starts again.
    Degraded,
}

/// Why a rollout is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PauseReason {
    /// A `pause` step.
    Step,
    /// `dabba rollout pause`.
    User,
    /// An analysis was inconclusive: a person decides.
    Inconclusive,
    /// A blue-green preview waits to be promoted.
    Promotion,
}

/// A pause in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paused {
    pub reason: PauseReason,
    pub since: Millis,
    /// When it ends by itself (`None`: when a person promotes or resumes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Millis>,
}

/// A revision keeping its pods for a while after it stopped taking traffic (after a
/// promotion, the old stable; after an abort, the canary), so an undo or a retry is
/// instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleDown {
    pub revision: u64,
    pub at: Millis,
}

/// One app's rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutStatus {
    pub strategy: Strategy,
    /// The revision serving: the stable (canary) or active (blue-green) one.
    pub stable: u64,
    /// The revision being rolled out: the canary, or the blue-green preview.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<u64>,
    pub phase: RolloutPhase,
    /// Why it is Paused or Degraded, or what it waits for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The canary step now (0-based); the number of steps once all are done.
    pub step: u32,
    /// The percent of requests the canary takes (blue-green: 0, then 100 on promotion).
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_route: Option<HeaderRoute>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_scale: Option<CanaryScale>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<Paused>,
    pub started: Millis,
    pub step_started: Millis,
    /// The last time it moved forward (the progress deadline counts from it).
    pub progressed: Millis,
    /// Whether it was aborted (it is then Degraded until a retry or a new revision).
    #[serde(default)]
    pub aborted: bool,
    /// Blue-green: the preview was promoted (post-promotion analysis may still run).
    #[serde(default)]
    pub promoted: bool,
    /// Blue-green: when the preview first had all its pods running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_ready: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<ScaleDown>,
    /// Autoscaled apps: the percent of the app's demand the canary carried when the
    /// autoscaler last looked (its pods follow its own demand, not the weight).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_share: Option<u32>,
    /// Analysis runs of this rollout, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analysis: Vec<AnalysisRun>,
    /// `job` checks a host is running now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<PendingCheck>,
}

/// A `job` check given to a host, until its measurement is recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCheck {
    pub run: RunKind,
    /// When its run started (with `run`, names the run).
    pub started: Millis,
    /// The metric's index in the run.
    pub metric: u32,
    pub host: String,
    pub since: Millis,
    /// Unique to this measurement (the check sees it as `DABBA_CHECK`).
    pub id: String,
}

/// The pods each revision of a rolling-out app runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    pub stable: u32,
    pub canary: u32,
}

impl RolloutStatus {
    /// A rollout of `canary` over `stable`, starting at `at`.
    pub fn begin(strategy: Strategy, stable: u64, canary: u64, at: Millis) -> RolloutStatus {
        RolloutStatus {
            strategy,
            stable,
            canary: Some(canary),
            phase: RolloutPhase::Progressing,
            message: String::new(),
            step: 0,
            weight: 0,
            header_route: None,
            canary_scale: None,
            paused: None,
            started: at,
            step_started: at,
            progressed: at,
            aborted: false,
            promoted: false,
            preview_ready: None,
            scale_down: None,
            canary_share: None,
            analysis: Vec::new(),
            checks: Vec::new(),
        }
    }

    /// The pods of each revision for an app of `replicas` pods (`spec/rollouts.md`,
    /// "Pods"). Weights do not size pods: a fixed-size app keeps its stable revision
    /// whole (an abort needs no pods to start) and gives the canary its share of the
    /// count, or what `set_canary_scale` says; an autoscaled app's count is split by
    /// the demand each revision carried. A revision that takes traffic (a weight, a
    /// header route, a preview) has a pod whenever the app has any.
    pub fn sizes(&self, replicas: u32, rollout: &Rollout, autoscaled: bool) -> Sizes {
        let n = replicas;
        let whole = Sizes {
            stable: n,
            canary: 0,
        };
        if self.canary.is_none() || self.aborted {
            return whole;
        }
        let percent = |p: u32| (u64::from(n) * u64::from(p)).div_ceil(100) as u32;
        match self.strategy {
            Strategy::Rolling => whole,
            Strategy::BlueGreen if self.promoted => Sizes {
                stable: n,
                canary: n.max(1),
            },
            Strategy::BlueGreen => Sizes {
                stable: n,
                canary: rollout.preview_replicas.unwrap_or(n.max(1)),
            },
            Strategy::Canary => {
                let share = match self.canary_share {
                    Some(s) if autoscaled && self.weight > 0 && self.weight < 100 => s,
                    _ => self.weight,
                };
                let mut canary = match self.canary_scale {
                    Some(CanaryScale {
                        replicas: Some(r), ..
                    }) => r,
                    Some(CanaryScale {
                        weight: Some(p), ..
                    }) => percent(p),
                    _ => percent(share),
                };
                let takes_traffic = self.weight > 0 || self.header_route.is_some();
                if takes_traffic && n > 0 {
                    canary = canary.max(1);
                }
                let stable = if autoscaled {
                    let rest = n.saturating_sub(canary);
                    if self.weight < 100 && n > 0 {
                        rest.max(1)
                    } else {
                        rest
                    }
                } else {
                    n
                };
                Sizes { stable, canary }
            }
        }
    }

    /// Whether a canary (or preview) is being rolled out: it and the stable revision
    /// both keep pods, and traffic is split by [`RolloutStatus::weight`].
    pub fn in_progress(&self) -> bool {
        self.canary.is_some()
    }

    /// Ends every run still measuring (and forgets the checks given to hosts).
    pub fn finish_runs(&mut self, at: Millis) {
        for run in self
            .analysis
            .iter_mut()
            .filter(|run| run.finished.is_none())
        {
            run.finished = Some(at);
        }
        self.checks.clear();
    }

    /// The rollout is over: `stable` serves everything, nothing is rolled out, nothing
    /// pauses or measures; the phase and message say how it ended.
    pub fn settle(&mut self, stable: u64, phase: RolloutPhase, message: String, at: Millis) {
        self.stable = stable;
        self.canary = None;
        self.weight = 0;
        self.header_route = None;
        self.canary_scale = None;
        self.canary_share = None;
        self.paused = None;
        self.aborted = false;
        self.promoted = false;
        self.phase = phase;
        self.message = message;
        self.progressed = at;
        self.finish_runs(at);
    }

    /// The runs still measuring.
    pub fn running_analysis(&self) -> impl Iterator<Item = &AnalysisRun> {
        self.analysis.iter().filter(|r| r.finished.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::CanaryScale;

    fn canary(weight: u32) -> RolloutStatus {
        let mut s = RolloutStatus::begin(Strategy::Canary, 1, 2, 0);
        s.weight = weight;
        s
    }

    fn sizes(s: &RolloutStatus, n: u32, autoscaled: bool) -> (u32, u32) {
        let z = s.sizes(n, &Rollout::default(), autoscaled);
        (z.stable, z.canary)
    }

    #[test]
    fn a_fixed_app_keeps_its_stable_whole_and_sizes_the_canary_by_weight() {
        assert_eq!(sizes(&canary(0), 10, false), (10, 0));
        assert_eq!(sizes(&canary(5), 10, false), (10, 1), "5% of 10 rounds up");
        assert_eq!(sizes(&canary(25), 10, false), (10, 3));
        assert_eq!(sizes(&canary(100), 10, false), (10, 10));
        let mut scaled = canary(5);
        scaled.canary_scale = Some(CanaryScale {
            replicas: Some(4),
            ..Default::default()
        });
        assert_eq!(sizes(&scaled, 10, false), (10, 4));
        scaled.canary_scale = Some(CanaryScale {
            weight: Some(50),
            ..Default::default()
        });
        assert_eq!(sizes(&scaled, 10, false), (10, 5));
        // A header route needs a canary pod even at weight 0.
        let mut header = canary(0);
        header.header_route = Some(crate::rollout::HeaderRoute {
            name: "beta".into(),
            matches: vec![],
        });
        assert_eq!(sizes(&header, 10, false), (10, 1));
        // Aborted: the canary gets nothing (its pods stay for the abort delay).
        let mut aborted = canary(50);
        aborted.aborted = true;
        assert_eq!(sizes(&aborted, 10, false), (10, 0));
    }

    #[test]
    fn an_autoscaled_app_splits_its_count_by_demand() {
        assert_eq!(
            sizes(&canary(20), 10, true),
            (8, 2),
            "by weight before any demand"
        );
        let mut s = canary(20);
        s.canary_share = Some(50);
        assert_eq!(sizes(&s, 10, true), (5, 5), "by the demand it carried");
        assert_eq!(sizes(&s, 0, true), (0, 0), "at zero: nothing");
        assert_eq!(sizes(&s, 1, true), (1, 1), "both revisions take traffic");
        s.weight = 100;
        assert_eq!(
            sizes(&s, 6, true),
            (0, 6),
            "all steps done: the canary takes all"
        );
    }

    #[test]
    fn a_preview_has_its_own_count_until_promoted() {
        let mut s = RolloutStatus::begin(Strategy::BlueGreen, 1, 2, 0);
        let rollout = Rollout {
            preview_replicas: Some(1),
            ..Rollout::default()
        };
        let z = s.sizes(4, &rollout, false);
        assert_eq!((z.stable, z.canary), (4, 1));
        s.promoted = true;
        let z = s.sizes(4, &rollout, false);
        assert_eq!(
            (z.stable, z.canary),
            (4, 4),
            "the old active keeps its pods"
        );
    }
}
