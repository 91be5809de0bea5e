//! An analysis as it runs: each metric's measurements, and the rules that turn them into
//! an outcome. Pure, so the state machine applies a measurement the same way on every
//! controller, and the rules are tested without a cluster.
//!
//! A measurement is judged by [`MetricSpec::judge`]: too few requests (or no value) is
//! Inconclusive — never a success with no data; a failure condition that holds, or a
//! success condition that does not, is Failed. A metric ([`MetricRun::record`]) fails
//! when its failures pass `failure_limit` or its errors in a row pass
//! `consecutive_error_limit`, is Inconclusive when its inconclusive measurements pass
//! `inconclusive_limit`, and succeeds when it has taken `count` measurements without
//! either. A run ([`AnalysisRun::phase`]) is Failed if any metric failed, else
//! Inconclusive if any is, else Successful when every metric is, else Running.

use serde::{Deserialize, Serialize};

use super::MetricSpec;
use crate::resources::Millis;

/// Measurements kept per metric (the counters keep the whole history).
pub const MEASUREMENTS_KEPT: usize = 20;

/// How a measurement, a metric or a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub enum AnalysisPhase {
    Running,
    Successful,
    Failed,
    Inconclusive,
    /// The measurement could not be taken (a check that did not answer).
    Error,
}

impl AnalysisPhase {
    pub fn is_done(self) -> bool {
        !matches!(self, AnalysisPhase::Running)
    }
}

/// One measurement of one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub at: Millis,
    /// The measured `result`, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Requests in the measured window (`measure` metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    pub phase: AnalysisPhase,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// One metric of a run, as it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRun {
    pub template: String,
    pub metric: String,
    pub phase: AnalysisPhase,
    /// The newest measurements, at most [`MEASUREMENTS_KEPT`].
    pub measurements: Vec<Measurement>,
    pub taken: u32,
    pub successes: u32,
    pub failures: u32,
    pub inconclusive: u32,
    pub errors: u32,
    pub consecutive_errors: u32,
}

/// Which analysis of a rollout a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum RunKind {
    /// A step's analysis (the step index).
    Step {
        step: u32,
    },
    Background,
    PrePromotion,
    PostPromotion,
}

impl RunKind {
    /// In words: `step 2 analysis`, `background analysis`, `pre-promotion analysis`.
    pub fn describe(self) -> String {
        match self {
            RunKind::Step { step } => format!("step {} analysis", step + 1),
            other => format!("{} analysis", other.label()),
        }
    }

    /// As a metric label: `step`, `background`, `pre-promotion`, `post-promotion`.
    pub fn label(self) -> &'static str {
        match self {
            RunKind::Step { .. } => "step",
            RunKind::Background => "background",
            RunKind::PrePromotion => "pre-promotion",
            RunKind::PostPromotion => "post-promotion",
        }
    }
}

/// One analysis run of a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisRun {
    pub kind: RunKind,
    /// The revision it measures.
    pub revision: u64,
    pub started: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Millis>,
    pub metrics: Vec<MetricRun>,
}

impl MetricSpec {
    /// Judges one measured value (`None`: no value could be computed, e.g. no latency
    /// with no requests) over `requests` requests (`None`: not a request metric).
    pub fn judge(&self, value: Option<f64>, requests: Option<u64>) -> (AnalysisPhase, String) {
        if let Some(n) = requests
            && n < self.min_requests
        {
            return (
                AnalysisPhase::Inconclusive,
                format!(
                    "{n} requests, fewer than min_requests = {}",
                    self.min_requests
                ),
            );
        }
        let Some(v) = value else {
            return (AnalysisPhase::Inconclusive, "no value measured".into());
        };
        if let Some(f) = &self.failure_condition
            && f.holds(v)
        {
            return (
                AnalysisPhase::Failed,
                format!("failure condition `{f}` holds for {v}"),
            );
        }
        if let Some(s) = &self.success_condition
            && !s.holds(v)
        {
            return (
                AnalysisPhase::Failed,
                format!("success condition `{s}` does not hold for {v}"),
            );
        }
        (AnalysisPhase::Successful, String::new())
    }

    /// Measurements this metric takes (`None`: until the rollout ends).
    pub fn measurements_wanted(&self, background: bool) -> Option<u32> {
        match (self.count, background) {
            (Some(n), _) => Some(n),
            (None, true) => None,
            (None, false) => Some(1),
        }
    }
}

impl MetricRun {
    pub fn new(template: &str, metric: &str) -> MetricRun {
        MetricRun {
            template: template.to_string(),
            metric: metric.to_string(),
            phase: AnalysisPhase::Running,
            measurements: Vec::new(),
            taken: 0,
            successes: 0,
            failures: 0,
            inconclusive: 0,
            errors: 0,
            consecutive_errors: 0,
        }
    }

    /// Records one measurement and updates the metric's phase. A metric already done
    /// records nothing (a late measurement changes no outcome).
    pub fn record(&mut self, spec: &MetricSpec, m: Measurement, background: bool) {
        if self.phase.is_done() {
            return;
        }
        self.taken += 1;
        match m.phase {
            AnalysisPhase::Successful => {
                self.successes += 1;
                self.consecutive_errors = 0;
            }
            AnalysisPhase::Failed => {
                self.failures += 1;
                self.consecutive_errors = 0;
            }
            AnalysisPhase::Inconclusive => {
                self.inconclusive += 1;
                self.consecutive_errors = 0;
            }
            AnalysisPhase::Error => {
                self.errors += 1;
                self.consecutive_errors += 1;
            }
            AnalysisPhase::Running => {}
        }
        self.measurements.push(m);
        let extra = self.measurements.len().saturating_sub(MEASUREMENTS_KEPT);
        self.measurements.drain(..extra);
        self.phase = if self.failures > spec.failure_limit
            || self.consecutive_errors > spec.consecutive_error_limit
        {
            AnalysisPhase::Failed
        } else if self.inconclusive > spec.inconclusive_limit {
            AnalysisPhase::Inconclusive
        } else if spec
            .measurements_wanted(background)
            .is_some_and(|n| self.taken >= n)
        {
            AnalysisPhase::Successful
        } else {
            AnalysisPhase::Running
        };
    }

    /// When the next measurement is due, given the run's start.
    pub fn next_due(&self, spec: &MetricSpec, started: Millis) -> Option<Millis> {
        if self.phase.is_done() {
            return None;
        }
        let interval = spec.interval.get().as_millis() as Millis;
        let delay = spec
            .initial_delay
            .map_or(0, |d| d.get().as_millis() as Millis);
        Some(match self.measurements.last() {
            None => started + delay + interval,
            Some(last) => last.at + interval,
        })
    }
}

impl AnalysisRun {
    pub fn background(&self) -> bool {
        self.kind == RunKind::Background
    }

    /// The run's outcome from its metrics.
    pub fn phase(&self) -> AnalysisPhase {
        let any = |p: AnalysisPhase| self.metrics.iter().any(|m| m.phase == p);
        if any(AnalysisPhase::Failed) {
            AnalysisPhase::Failed
        } else if any(AnalysisPhase::Inconclusive) {
            AnalysisPhase::Inconclusive
        } else if self
            .metrics
            .iter()
            .all(|m| m.phase == AnalysisPhase::Successful)
        {
            AnalysisPhase::Successful
        } else {
            AnalysisPhase::Running
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(extra: &str) -> MetricSpec {
        toml::from_str(&format!(
            "name = \"rate\"\nmeasure = \"success_rate\"\nsuccess_condition = \"result >= 0.95\"\n{extra}"
        ))
        .unwrap()
    }

    fn measured(spec: &MetricSpec, at: Millis, value: f64, requests: u64) -> Measurement {
        let (phase, message) = spec.judge(Some(value), Some(requests));
        Measurement {
            at,
            value: Some(value),
            requests: Some(requests),
            phase,
            message,
        }
    }

    #[test]
    fn too_few_requests_is_inconclusive_never_a_success() {
        let spec = metric("min_requests = 20");
        assert_eq!(
            spec.judge(Some(1.0), Some(19)).0,
            AnalysisPhase::Inconclusive
        );
        assert_eq!(spec.judge(Some(1.0), Some(20)).0, AnalysisPhase::Successful);
        assert_eq!(spec.judge(None, Some(50)).0, AnalysisPhase::Inconclusive);
        assert_eq!(spec.judge(Some(0.9), Some(50)).0, AnalysisPhase::Failed);
        let mut run = MetricRun::new("t", "rate");
        run.record(&spec, measured(&spec, 1, 1.0, 0), false);
        assert_eq!(run.phase, AnalysisPhase::Inconclusive, "{run:?}");
    }

    #[test]
    fn failure_limit_tolerates_that_many_failures() {
        let spec = metric("count = 5\nfailure_limit = 1");
        let mut run = MetricRun::new("t", "rate");
        run.record(&spec, measured(&spec, 1, 0.5, 100), false);
        assert_eq!(
            run.phase,
            AnalysisPhase::Running,
            "one failure is tolerated"
        );
        run.record(&spec, measured(&spec, 2, 0.99, 100), false);
        run.record(&spec, measured(&spec, 3, 0.5, 100), false);
        assert_eq!(run.phase, AnalysisPhase::Failed, "the second is not");
        // A late measurement changes nothing.
        run.record(&spec, measured(&spec, 4, 0.99, 100), false);
        assert_eq!((run.phase, run.taken), (AnalysisPhase::Failed, 3));
    }

    #[test]
    fn count_successes_complete_a_metric_and_background_runs_on() {
        let spec = metric("count = 2");
        let mut run = MetricRun::new("t", "rate");
        run.record(&spec, measured(&spec, 1, 0.99, 100), false);
        assert_eq!(run.phase, AnalysisPhase::Running);
        run.record(&spec, measured(&spec, 2, 0.99, 100), false);
        assert_eq!(run.phase, AnalysisPhase::Successful);
        let forever = metric("");
        let mut bg = MetricRun::new("t", "rate");
        for at in 0..30 {
            bg.record(&forever, measured(&forever, at, 0.99, 100), true);
        }
        assert_eq!(
            bg.phase,
            AnalysisPhase::Running,
            "a background metric never ends"
        );
        assert_eq!(bg.measurements.len(), MEASUREMENTS_KEPT);
        assert_eq!(bg.taken, 30);
        // Without count, a step's metric takes one measurement.
        let mut once = MetricRun::new("t", "rate");
        once.record(&forever, measured(&forever, 1, 0.99, 100), false);
        assert_eq!(once.phase, AnalysisPhase::Successful);
    }

    #[test]
    fn errors_in_a_row_fail_but_a_good_measurement_resets_them() {
        let spec = metric("count = 10\nconsecutive_error_limit = 2");
        let error = |at| Measurement {
            at,
            value: None,
            requests: None,
            phase: AnalysisPhase::Error,
            message: "no answer".into(),
        };
        let mut run = MetricRun::new("t", "rate");
        run.record(&spec, error(1), false);
        run.record(&spec, error(2), false);
        run.record(&spec, measured(&spec, 3, 0.99, 100), false);
        run.record(&spec, error(4), false);
        run.record(&spec, error(5), false);
        assert_eq!(run.phase, AnalysisPhase::Running);
        run.record(&spec, error(6), false);
        assert_eq!(run.phase, AnalysisPhase::Failed);
        assert_eq!((run.errors, run.consecutive_errors), (5, 3));
    }

    #[test]
    fn inconclusive_past_its_limit_pauses_and_a_run_takes_the_worst_metric() {
        let spec = metric("count = 3\ninconclusive_limit = 1");
        let mut a = MetricRun::new("t", "rate");
        a.record(&spec, measured(&spec, 1, 1.0, 0), false);
        assert_eq!(a.phase, AnalysisPhase::Running);
        a.record(&spec, measured(&spec, 2, 1.0, 0), false);
        assert_eq!(a.phase, AnalysisPhase::Inconclusive);
        let mut run = AnalysisRun {
            kind: RunKind::Step { step: 2 },
            revision: 2,
            started: 0,
            finished: None,
            metrics: vec![a, MetricRun::new("t", "p95")],
        };
        assert_eq!(run.phase(), AnalysisPhase::Inconclusive);
        run.metrics[1].phase = AnalysisPhase::Failed;
        assert_eq!(run.phase(), AnalysisPhase::Failed);
        run.metrics
            .iter_mut()
            .for_each(|m| m.phase = AnalysisPhase::Successful);
        assert_eq!(run.phase(), AnalysisPhase::Successful);
    }

    #[test]
    fn measurements_fall_due_after_the_delay_then_every_interval() {
        let spec = metric("interval = \"10s\"\ninitial_delay = \"5s\"\ncount = 3");
        let mut run = MetricRun::new("t", "rate");
        assert_eq!(run.next_due(&spec, 1_000), Some(16_000));
        run.record(&spec, measured(&spec, 16_500, 0.99, 100), false);
        assert_eq!(run.next_due(&spec, 1_000), Some(26_500));
    }
}
