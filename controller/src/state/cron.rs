//! Cron jobs and their runs in the replicated state, and [`CronState::apply`]: how one
//! [`CronChange`] changes them — deterministic, as every Raft command is. What to change
//! is decided by the cron reconciler (`reconcile/cron.rs`).
//!
//! Exactly once: a run is named by its job and schedule time, and a claim is applied
//! only if that time is later than the job's `last_scheduled` high-water mark, which the
//! claim raises in the same step. So a leader that fails over and proposes the same
//! claim again (or a stale one) changes nothing. Changes to runs that are gone or
//! finished change nothing either; only the attempt running now may report.

use std::collections::BTreeMap;

use dabba_spec::Digest;
use dabba_spec::cronjob::{
    CronJob, CronSection, JobRun, MISSED_KEPT, OUTPUT_KEPT, RunPhase, retry_delay,
};
use dabba_spec::resources::{Millis, ResourceKey};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{State, rejected};
use crate::command::{CronChange, Rejection, Reply};

/// Cron jobs by `namespace/name` and their runs by `namespace/run`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronState {
    pub jobs: BTreeMap<ResourceKey, CronJob>,
    pub runs: BTreeMap<ResourceKey, JobRun>,
}

pub(crate) fn ts(ms: Millis) -> Timestamp {
    Timestamp::from_millisecond(ms as i64).unwrap_or(Timestamp::UNIX_EPOCH)
}

pub(crate) fn ms(t: Timestamp) -> Millis {
    t.as_millisecond().max(0) as Millis
}

impl CronState {
    /// Applies one change at time `at`; returns whether anything changed. Changes that no
    /// longer apply (a claim for a time already dealt with, a run already gone or
    /// finished) change nothing.
    pub fn apply(&mut self, change: &CronChange, at: Millis) -> bool {
        match change {
            CronChange::Claim {
                job,
                scheduled,
                missed,
            } => self.deal_with(job, *scheduled, missed, at, false),
            CronChange::Skip {
                job,
                scheduled,
                missed,
            } => self.deal_with(job, *scheduled, missed, at, true),
            CronChange::Missed { job, times } => {
                let Some((&last, older)) = times.split_last() else {
                    return false;
                };
                let mut all = older.to_vec();
                all.push(last);
                // Everything up to `last` is dealt with.
                self.advance(job, last, &all).is_some()
            }
            CronChange::AttemptFailed { run, reason } => {
                let Some(r) = self.runs.get(run) else {
                    return false;
                };
                if !r.phase.is_active() {
                    return false;
                }
                let limit = self
                    .jobs
                    .get(&r.job_key())
                    .map_or(0, |j| j.spec.backoff_limit);
                let r = self.runs.get_mut(run).expect("checked above");
                r.host = None;
                r.reason = Some(reason.clone());
                if r.attempt > limit {
                    r.phase = RunPhase::Failed;
                    r.finished = Some(at);
                    r.reason = Some(format!("{reason}; no retries left (backoff_limit {limit})"));
                } else {
                    r.not_before = at + retry_delay(r.attempt).as_millis() as Millis;
                    r.attempt += 1;
                    r.phase = RunPhase::Pending;
                }
                true
            }
            CronChange::Fail { run, reason } => match self.runs.get_mut(run) {
                Some(r) if r.phase.is_active() => {
                    r.phase = RunPhase::Failed;
                    r.finished = Some(at);
                    r.host = None;
                    r.reason = Some(reason.clone());
                    true
                }
                _ => false,
            },
            CronChange::RunNow { job } => {
                let Some(j) = self.jobs.get(job) else {
                    return false;
                };
                let stamp = ts(at).strftime("%Y%m%d%H%M%S");
                let name = format!("{}-manual-{stamp}", j.spec.name);
                let key = ResourceKey::new(&j.spec.namespace, &name);
                if self.runs.contains_key(&key) {
                    return false;
                }
                let mut run = JobRun::pending(&j.spec.namespace, &j.spec.name, name, at, at);
                run.manual = true;
                self.runs.insert(key, run);
                true
            }
            CronChange::Suspend { job, suspend } => match self.jobs.get_mut(job) {
                Some(j) if j.spec.suspend != *suspend => {
                    j.spec.suspend = *suspend;
                    true
                }
                _ => false,
            },
            CronChange::Place { run, host } => match self.runs.get_mut(run) {
                Some(r) if r.phase == RunPhase::Pending && r.host.is_none() => {
                    r.phase = RunPhase::Running;
                    r.host = Some(host.clone());
                    r.started = r.started.or(Some(at));
                    true
                }
                _ => false,
            },
            CronChange::Report { run, report } => {
                let Some(r) = self.runs.get(run) else {
                    return false;
                };
                // Only the attempt running now may report (a late report of an attempt
                // already given up on changes nothing).
                if r.phase != RunPhase::Running || r.attempt != report.attempt {
                    return false;
                }
                let r = self.runs.get_mut(run).expect("checked above");
                r.exit_code = Some(report.exit_code);
                r.fuel = report.fuel;
                r.duration_ms = Some(report.duration_ms);
                let cut = report.output.len().saturating_sub(OUTPUT_KEPT);
                let start = (cut..=report.output.len())
                    .find(|i| report.output.is_char_boundary(*i))
                    .unwrap_or(report.output.len());
                r.output = report.output[start..].to_string();
                match &report.reason {
                    None if report.exit_code == 0 => {
                        r.phase = RunPhase::Succeeded;
                        r.finished = Some(at);
                        r.reason = None;
                        true
                    }
                    reason => {
                        let reason = reason
                            .clone()
                            .unwrap_or_else(|| format!("exit code {}", report.exit_code));
                        self.apply(
                            &CronChange::AttemptFailed {
                                run: run.clone(),
                                reason,
                            },
                            at,
                        )
                    }
                }
            }
            CronChange::Prune { runs } => {
                let before = self.runs.len();
                for r in runs {
                    if self.runs.get(r).is_some_and(|r| !r.phase.is_active()) {
                        self.runs.remove(r);
                    }
                }
                self.runs.len() != before
            }
        }
    }

    /// Claims (or, `skipped`, records as skipped) job `key`'s run for `scheduled`, if no
    /// time at or after it was dealt with yet.
    fn deal_with(
        &mut self,
        key: &ResourceKey,
        scheduled: Millis,
        missed: &[Millis],
        at: Millis,
        skipped: bool,
    ) -> bool {
        let Some(j) = self.advance(key, scheduled, missed) else {
            return false;
        };
        let name = j.spec.run_name(scheduled);
        let mut run = JobRun::pending(&j.spec.namespace, &j.spec.name, name, scheduled, at);
        if skipped {
            run.phase = RunPhase::Skipped;
            run.attempt = 0;
            run.finished = Some(at);
            run.reason =
                Some("the previous run was still active (concurrency_policy = forbid)".into());
        }
        self.runs.entry(run.key()).or_insert(run);
        true
    }

    /// Raises job `key`'s high-water mark to `scheduled` and records `missed`, if
    /// `scheduled` is newer than any time it dealt with; the job, if so.
    fn advance(
        &mut self,
        key: &ResourceKey,
        scheduled: Millis,
        missed: &[Millis],
    ) -> Option<&CronJob> {
        let j = self.jobs.get_mut(key)?;
        if j.last_scheduled.is_some_and(|l| l >= scheduled) {
            return None;
        }
        j.last_scheduled = Some(scheduled);
        j.missed_total += missed.len() as u64;
        j.missed.extend_from_slice(missed);
        let extra = j.missed.len().saturating_sub(MISSED_KEPT);
        j.missed.drain(..extra);
        Some(j)
    }
}

/// What the cron commands (`ApplyCronJob`, `DeleteCronJob`, `Cron`) do to the state.
impl State {
    pub(super) fn apply_cron_job(
        &mut self,
        spec: &CronSection,
        component: Digest,
        at: Millis,
    ) -> Reply {
        if let Err(e) = spec.validate() {
            return rejected(Rejection::Invalid, e.to_string());
        }
        let spec = &match self.admit_cron_job(spec) {
            Ok(admitted) => admitted,
            Err(refused) => return refused,
        };
        if !self.blobs.contains_key(&component.to_string()) {
            return rejected(
                Rejection::MissingComponent,
                format!("component {component} has not been uploaded"),
            );
        }
        if let Some(missing) = self.missing_secret(&spec.namespace, &spec.secrets) {
            return missing;
        }
        let key = ResourceKey::new(&spec.namespace, &spec.name);
        let reason = match self.cron.jobs.get_mut(&key) {
            Some(job) => {
                job.spec = spec.clone();
                job.component = component;
                "Updated"
            }
            None => {
                self.cron.jobs.insert(
                    key.clone(),
                    CronJob {
                        spec: spec.clone(),
                        component,
                        created_at: at,
                        last_scheduled: None,
                        missed: Vec::new(),
                        missed_total: 0,
                    },
                );
                "Created"
            }
        };
        self.event(
            at,
            format!("cronjob/{key}"),
            reason,
            format!(
                "{} ({}) running {}",
                spec.schedule,
                spec.timezone,
                component.short()
            ),
        );
        self.version += 1;
        Reply::Ok
    }

    pub(super) fn delete_cron_job(&mut self, namespace: &str, name: &str, at: Millis) -> Reply {
        let key = ResourceKey::new(namespace, name);
        if self.cron.jobs.remove(&key).is_none() {
            return rejected(Rejection::NotFound, format!("no cron job {key}"));
        }
        self.cron
            .runs
            .retain(|_, r| !(r.namespace == namespace && r.job == name));
        self.event(
            at,
            format!("cronjob/{key}"),
            "Deleted",
            "cron job deleted with its runs",
        );
        self.version += 1;
        Reply::Ok
    }

    /// Applies the cron reconciler's (or a user's) changes; returns whether anything
    /// changed.
    pub(super) fn apply_cron_changes(&mut self, changes: &[CronChange], at: Millis) -> bool {
        let mut changed = false;
        for c in changes {
            changed |= self.cron.apply(c, at);
        }
        changed
    }
}
