//! The cron reconciler: which schedule times to claim, skip or record as missed, which
//! runs have overrun or lost their host, which old runs to forget, and where runs due
//! to start go — a pure function of the jobs, their runs and the time. The changes it
//! proposes are applied by [`CronState::apply`] (`state/cron.rs`), which is where
//! exactly-once is kept: a claim is committed through Raft before any host starts the
//! run, and a claim for a time already dealt with changes nothing.
//!
//! Missed times (the controller was down, or the job suspended): only the most recent due
//! time may start — if it is within `starting_deadline` — and every older one is recorded
//! as missed; there is never a burst of catch-up runs.
//!
//! Runs due to start are placed on the Ready host running the fewest; a host reports
//! how each attempt ended, and only the attempt running now may report.

use std::collections::BTreeMap;

use dabba_spec::cron::{Schedule, time_zone};
use dabba_spec::cronjob::{ConcurrencyPolicy, JobRun, RunPhase};
use dabba_spec::resources::{Millis, ResourceKey};

use crate::command::CronChange;
use crate::state::cron::{CronState, ms, ts};

/// Due schedule times looked at per job and round, at most (a job down for longer has
/// its older times recorded in bulk as missed on later rounds).
const MAX_DUE: usize = 10_000;

/// What should change now.
pub fn plan(state: &CronState, now: Millis, ready_hosts: &[&str]) -> Vec<CronChange> {
    plan_placed(state, now, ready_hosts, &|_| None)
}

/// [`plan`], with the region of each host: a job with `regions` runs in the first of
/// them that has a Ready host (its primary while it is up).
pub fn plan_placed(
    state: &CronState,
    now: Millis,
    ready_hosts: &[&str],
    region_of: &dyn Fn(&str) -> Option<String>,
) -> Vec<CronChange> {
    let mut out = Vec::new();
    for (key, job) in &state.jobs {
        let s = &job.spec;
        let runs: Vec<(&ResourceKey, &JobRun)> = state
            .runs
            .iter()
            .filter(|(_, r)| r.namespace == s.namespace && r.job == s.name)
            .collect();

        // Active runs that overran their deadline, or whose host is gone.
        for (rk, r) in runs.iter().filter(|(_, r)| r.phase.is_active()) {
            if let (Some(deadline), Some(started)) = (s.active_deadline, r.started)
                && now.saturating_sub(started) > deadline.get().as_millis() as Millis
            {
                out.push(CronChange::Fail {
                    run: (*rk).clone(),
                    reason: format!("active deadline of {deadline} passed"),
                });
                continue;
            }
            if r.phase == RunPhase::Running
                && r.host.as_deref().is_some_and(|h| !ready_hosts.contains(&h))
            {
                out.push(CronChange::AttemptFailed {
                    run: (*rk).clone(),
                    reason: format!(
                        "host {} was lost during the run",
                        r.host.as_deref().unwrap_or("?")
                    ),
                });
            }
        }

        // Schedule times now due.
        if !s.suspend
            && let (Ok(schedule), Ok(tz)) = (s.schedule.parse::<Schedule>(), time_zone(&s.timezone))
        {
            let from = job.last_scheduled.unwrap_or(job.created_at);
            let due: Vec<Millis> = schedule
                .between(ts(from), ts(now), &tz, MAX_DUE)
                .into_iter()
                .map(ms)
                .collect();
            if due.len() == MAX_DUE {
                // More due times than one round looks at: these are all older than the
                // latest, so missed; later rounds reach the latest.
                out.push(CronChange::Missed {
                    job: key.clone(),
                    times: due,
                });
            } else if let Some((&latest, older)) = due.split_last() {
                let missed = older.to_vec();
                let late = s
                    .starting_deadline
                    .is_some_and(|d| now.saturating_sub(latest) > d.get().as_millis() as Millis);
                let active: Vec<&ResourceKey> = runs
                    .iter()
                    .filter(|(_, r)| r.phase.is_active())
                    .map(|(k, _)| *k)
                    .collect();
                if late {
                    out.push(CronChange::Missed {
                        job: key.clone(),
                        times: due.clone(),
                    });
                } else if active.is_empty() || s.concurrency_policy == ConcurrencyPolicy::Allow {
                    out.push(CronChange::Claim {
                        job: key.clone(),
                        scheduled: latest,
                        missed,
                    });
                } else if s.concurrency_policy == ConcurrencyPolicy::Forbid {
                    out.push(CronChange::Skip {
                        job: key.clone(),
                        scheduled: latest,
                        missed,
                    });
                } else {
                    let new = s.run_name(latest);
                    for rk in active {
                        out.push(CronChange::Fail {
                            run: rk.clone(),
                            reason: format!("replaced by run {new}"),
                        });
                    }
                    out.push(CronChange::Claim {
                        job: key.clone(),
                        scheduled: latest,
                        missed,
                    });
                }
            }
        }

        // History: the newest `successful_history` successes and `failed_history`
        // failures (and as many skips) stay.
        let mut prune = Vec::new();
        for (phase, keep) in [
            (RunPhase::Succeeded, s.successful_history),
            (RunPhase::Failed, s.failed_history),
            (RunPhase::Skipped, s.failed_history),
        ] {
            let mut done: Vec<&(&ResourceKey, &JobRun)> =
                runs.iter().filter(|(_, r)| r.phase == phase).collect();
            done.sort_by_key(|(k, r)| (std::cmp::Reverse(r.scheduled), (*k).clone()));
            prune.extend(done.iter().skip(keep as usize).map(|(k, _)| (*k).clone()));
        }
        if !prune.is_empty() {
            prune.sort();
            out.push(CronChange::Prune { runs: prune });
        }
    }

    // Runs due to start go to the Ready host running the fewest runs (ties: by name).
    let mut load: BTreeMap<&str, usize> = ready_hosts.iter().map(|h| (*h, 0)).collect();
    for r in state.runs.values().filter(|r| r.phase == RunPhase::Running) {
        if let Some(n) = r.host.as_deref().and_then(|h| load.get_mut(h)) {
            *n += 1;
        }
    }
    for (key, r) in &state.runs {
        let due = r.phase == RunPhase::Pending && r.host.is_none() && r.not_before <= now;
        let claimed_now = out.iter().any(
            |c| matches!(c, CronChange::Fail { run, .. } | CronChange::AttemptFailed { run, .. } if run == key),
        );
        if !due || claimed_now {
            continue;
        }
        let region = state.jobs.get(&r.job_key()).and_then(|j| {
            j.spec.regions.iter().find(|want| {
                ready_hosts
                    .iter()
                    .any(|h| region_of(h).as_ref() == Some(*want))
            })
        });
        let Some((host, n)) = load
            .iter_mut()
            .filter(|(h, _)| region.is_none_or(|want| region_of(h).as_ref() == Some(want)))
            .min_by_key(|(h, n)| (**n, **h))
        else {
            continue;
        };
        *n += 1;
        out.push(CronChange::Place {
            run: key.clone(),
            host: host.to_string(),
        });
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use dabba_spec::cronjob::{CronJob, CronManifest, RunReport};

    use super::*;

    fn key(text: &str) -> ResourceKey {
        text.parse().unwrap()
    }

    const MIN: Millis = 60_000;

    fn at(text: &str) -> Millis {
        ms(text.parse().unwrap())
    }

    /// A state with one job from a `[[cron]]` table body, created at `created`.
    pub(crate) fn with_job(body: &str, created: Millis) -> CronState {
        let text = format!("[[cron]]\ncomponent = \"job.wasm\"\n{body}");
        let spec = CronManifest::parse("t.toml", &text).unwrap().cron.remove(0);
        let key = ResourceKey::new(&spec.namespace, &spec.name);
        let mut s = CronState::default();
        s.jobs.insert(
            key,
            CronJob {
                spec,
                component: dabba_spec::Digest::from_bytes([7; 32]),
                created_at: created,
                last_scheduled: None,
                missed: Vec::new(),
                missed_total: 0,
            },
        );
        s
    }

    /// Runs the reconciler and applies what it proposes, as the leader would.
    fn tick(s: &mut CronState, now: Millis) -> Vec<CronChange> {
        let changes = plan(s, now, &["h1"]);
        for c in &changes {
            s.apply(c, now);
        }
        changes
    }

    fn finish(s: &mut CronState, phase: RunPhase) {
        for r in s.runs.values_mut().filter(|r| r.phase.is_active()) {
            r.phase = phase;
            r.finished = Some(r.not_before);
        }
    }

    const SETTLEMENT: &str = "name = \"settlement\"\nschedule = \"0 1 * * *\"\ntimezone = \"Asia/Kolkata\"\nconcurrency_policy = \"forbid\"\nbackoff_limit = 2\nsuccessful_history = 5\nfailed_history = 3\n";

    #[test]
    fn a_schedule_time_is_claimed_once_however_often_the_reconciler_runs() {
        let created = at("2026-11-25T12:00:00Z");
        let mut s = with_job(SETTLEMENT, created);
        assert!(
            tick(&mut s, at("2026-11-25T19:29:00Z")).is_empty(),
            "not yet"
        );
        let due = at("2026-11-25T19:30:00Z"); // 01:00 IST on the 26th
        let changes = tick(&mut s, due + 1000);
        assert_eq!(
            changes,
            [CronChange::Claim {
                job: key("default/settlement"),
                scheduled: due,
                missed: vec![]
            }]
        );
        assert!(s.runs.contains_key("default/settlement-202611251930"));
        // Every later round, and a new leader replaying the same claim: nothing more.
        for later in [due + 2000, due + 60_000, due + 3_600_000] {
            let changes = tick(&mut s, later);
            assert!(
                !changes
                    .iter()
                    .any(|c| matches!(c, CronChange::Claim { .. })),
                "{changes:?}"
            );
        }
        assert!(
            !s.apply(&changes[0], due + 5000),
            "a replayed claim changes nothing"
        );
        assert_eq!(s.runs.len(), 1);
    }

    #[test]
    fn after_an_outage_only_the_latest_time_runs_and_the_rest_are_missed() {
        let created = at("2026-11-20T00:00:00Z");
        let mut s = with_job(SETTLEMENT, created);
        // Down from before the 21st's run until after the 24th's.
        let now = at("2026-11-23T20:00:00Z"); // 01:30 IST on the 24th
        let changes = tick(&mut s, now);
        let [
            CronChange::Claim {
                scheduled, missed, ..
            },
        ] = changes.as_slice()
        else {
            panic!("{changes:?}");
        };
        assert_eq!(*scheduled, at("2026-11-23T19:30:00Z"));
        assert_eq!(missed.len(), 3, "the 21st, 22nd and 23rd");
        let job = &s.jobs["default/settlement"];
        assert_eq!((job.missed_total, job.missed.len()), (3, 3));
        assert_eq!(s.runs.len(), 1, "never a burst");
    }

    #[test]
    fn a_day_long_outage_of_an_every_second_job_starts_only_the_latest_time() {
        let created = at("2026-11-25T00:00:00Z");
        let mut s = with_job("name = \"tick\"\nschedule = \"* * * * * *\"\n", created);
        let now = at("2026-11-26T00:00:00Z") + 500;
        let mut claims = Vec::new();
        for _ in 0..20 {
            for c in tick(&mut s, now) {
                if let CronChange::Claim { scheduled, .. } = c {
                    claims.push(scheduled);
                }
            }
        }
        assert_eq!(claims, [at("2026-11-26T00:00:00Z")], "one run, the latest");
        assert!(s.runs.contains_key("default/tick-20261126000000"));
        assert_eq!(s.jobs["default/tick"].missed_total, 86_399);
    }

    #[test]
    fn a_time_later_than_the_starting_deadline_is_missed_not_run() {
        let body = format!("{SETTLEMENT}starting_deadline = \"10m\"\n");
        let mut s = with_job(&body, at("2026-11-25T00:00:00Z"));
        let due = at("2026-11-25T19:30:00Z");
        let changes = tick(&mut s, due + 11 * MIN);
        assert!(
            matches!(changes.as_slice(), [CronChange::Missed { times, .. }] if times == &[due])
        );
        assert!(s.runs.is_empty());
        assert_eq!(s.jobs["default/settlement"].missed, [due]);
        assert!(
            tick(&mut s, due + 12 * MIN).is_empty(),
            "missed once, not again"
        );
        // Within the deadline it would have run.
        let mut s = with_job(&body, at("2026-11-25T00:00:00Z"));
        assert!(matches!(
            tick(&mut s, due + 9 * MIN).as_slice(),
            [CronChange::Claim { .. }]
        ));
    }

    #[test]
    fn concurrency_policies_allow_forbid_and_replace() {
        let every_minute = |policy: &str| {
            format!(
                "name = \"tick\"\nschedule = \"* * * * *\"\nconcurrency_policy = \"{policy}\"\n"
            )
        };
        let t0 = at("2026-11-26T10:00:00Z");
        for (policy, expect_active, expect_skipped, expect_failed) in [
            ("allow", 2, 0, 0),
            ("forbid", 1, 1, 0),
            ("replace", 1, 0, 1),
        ] {
            let mut s = with_job(&every_minute(policy), t0 - 1);
            tick(&mut s, t0 + 1000);
            // The first run is still going when the next minute comes.
            s.runs.values_mut().for_each(|r| {
                r.phase = RunPhase::Running;
                r.started = Some(t0 + 1000);
                r.host = Some("h1".into());
            });
            tick(&mut s, t0 + MIN + 1000);
            let count = |p: RunPhase| s.runs.values().filter(|r| r.phase == p).count();
            let active = count(RunPhase::Pending) + count(RunPhase::Running);
            assert_eq!(
                (active, count(RunPhase::Skipped), count(RunPhase::Failed)),
                (expect_active, expect_skipped, expect_failed),
                "{policy}: {:?}",
                s.runs
            );
        }
    }

    #[test]
    fn a_failed_attempt_is_retried_with_back_off_until_the_limit() {
        let mut s = with_job(SETTLEMENT, at("2026-11-25T00:00:00Z"));
        let due = at("2026-11-25T19:30:00Z");
        tick(&mut s, due);
        let key = key("default/settlement-202611251930");
        let fail = |s: &mut CronState, now| {
            s.apply(
                &CronChange::AttemptFailed {
                    run: key.clone(),
                    reason: "exit code 1".into(),
                },
                now,
            )
        };
        assert!(fail(&mut s, due + 5000));
        let r = &s.runs[&key];
        assert_eq!(
            (r.phase, r.attempt, r.not_before),
            (RunPhase::Pending, 2, due + 15_000)
        );
        assert!(fail(&mut s, due + 20_000));
        let r = &s.runs[&key];
        assert_eq!(
            (r.attempt, r.not_before),
            (3, due + 40_000),
            "20 s after the second"
        );
        assert!(fail(&mut s, due + 60_000));
        let r = &s.runs[&key];
        assert_eq!(
            r.phase,
            RunPhase::Failed,
            "backoff_limit 2: three attempts in all"
        );
        assert!(r.reason.as_deref().unwrap().contains("no retries left"));
        assert!(!fail(&mut s, due + 70_000), "a finished run stays finished");
    }

    #[test]
    fn a_lost_host_fails_the_attempt_and_an_overrun_fails_the_run() {
        let body = format!("{SETTLEMENT}active_deadline = \"30m\"\n");
        let mut s = with_job(&body, at("2026-11-25T00:00:00Z"));
        let due = at("2026-11-25T19:30:00Z");
        tick(&mut s, due);
        let key = key("default/settlement-202611251930");
        let r = s.runs.get_mut(&key).unwrap();
        r.phase = RunPhase::Running;
        r.started = Some(due);
        r.host = Some("h9".into());
        let changes = tick(&mut s, due + MIN);
        assert!(
            matches!(&changes[..], [CronChange::AttemptFailed { reason, .. }] if reason.contains("h9")),
            "{changes:?}"
        );
        assert_eq!(
            (s.runs[&key].phase, s.runs[&key].attempt),
            (RunPhase::Pending, 2)
        );
        // Running again on a live host, but past the active deadline: failed for good.
        let r = s.runs.get_mut(&key).unwrap();
        r.phase = RunPhase::Running;
        r.host = Some("h1".into());
        tick(&mut s, due + 31 * MIN);
        assert_eq!(s.runs[&key].phase, RunPhase::Failed);
    }

    #[test]
    fn suspended_jobs_start_nothing_and_resume_without_a_burst() {
        let body = SETTLEMENT.replace("backoff_limit", "suspend = true\nbackoff_limit");
        let mut s = with_job(&body, at("2026-11-20T00:00:00Z"));
        assert!(tick(&mut s, at("2026-11-24T00:00:00Z")).is_empty());
        s.jobs.values_mut().for_each(|j| j.spec.suspend = false);
        let changes = tick(&mut s, at("2026-11-24T00:00:00Z"));
        assert!(
            matches!(&changes[..], [CronChange::Claim { missed, .. }] if missed.len() == 3),
            "{changes:?}"
        );
        assert_eq!(s.runs.len(), 1);
    }

    #[test]
    fn history_keeps_the_newest_successes_and_failures() {
        let body = "name = \"tick\"\nschedule = \"* * * * *\"\nsuccessful_history = 2\nfailed_history = 1\n";
        let t0 = at("2026-11-26T10:00:00Z");
        let mut s = with_job(body, t0 - 1);
        for i in 0..6 {
            tick(&mut s, t0 + i * MIN + 1000);
            finish(
                &mut s,
                if i % 3 == 2 {
                    RunPhase::Failed
                } else {
                    RunPhase::Succeeded
                },
            );
        }
        tick(&mut s, t0 + 5 * MIN + 2000);
        let mut kept: Vec<(String, RunPhase)> =
            s.runs.values().map(|r| (r.name.clone(), r.phase)).collect();
        kept.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            kept,
            [
                ("tick-202611261003".to_string(), RunPhase::Succeeded),
                ("tick-202611261004".to_string(), RunPhase::Succeeded),
                ("tick-202611261005".to_string(), RunPhase::Failed),
            ]
        );
    }

    #[test]
    fn due_runs_are_placed_and_only_the_current_attempt_may_report() {
        let mut s = with_job(SETTLEMENT, at("2026-11-25T00:00:00Z"));
        let due = at("2026-11-25T19:30:00Z");
        let key = key("default/settlement-202611251930");
        // Claimed and placed in consecutive rounds, on the least busy Ready host.
        tick(&mut s, due);
        let changes = plan(&s, due + 1000, &["h2", "h1"]);
        assert_eq!(
            changes,
            [CronChange::Place {
                run: key.clone(),
                host: "h1".into()
            }]
        );
        s.apply(&changes[0], due + 1000);
        assert_eq!(s.runs[&key].phase, RunPhase::Running);
        let report = |attempt, exit_code| CronChange::Report {
            run: key.clone(),
            report: RunReport {
                attempt,
                exit_code,
                fuel: Some(42),
                duration_ms: 1200,
                reason: None,
                output: "settled 2026-11-25".into(),
            },
        };
        // A failed attempt goes back to Pending with its back-off, then a stale report of
        // that attempt changes nothing.
        assert!(s.apply(&report(1, 1), due + 3000));
        assert_eq!(
            (s.runs[&key].phase, s.runs[&key].attempt),
            (RunPhase::Pending, 2)
        );
        assert!(!s.apply(&report(1, 0), due + 3500));
        // Not placed before its back-off ends.
        assert!(plan(&s, due + 5000, &["h1"]).is_empty());
        for c in plan(&s, due + 13_001, &["h1"]) {
            s.apply(&c, due + 13_001);
        }
        assert!(s.apply(&report(2, 0), due + 20_000));
        let r = &s.runs[&key];
        assert_eq!(
            (r.phase, r.exit_code, r.fuel),
            (RunPhase::Succeeded, Some(0), Some(42))
        );
        assert_eq!(r.output, "settled 2026-11-25");
    }

    #[test]
    fn a_job_with_regions_runs_in_the_first_with_a_ready_host() {
        let body = "name = \"settlement\"\nschedule = \"0 1 * * *\"\nregions = [\"mumbai\", \"singapore\"]\n";
        let mut s = with_job(body, at("2026-11-25T00:00:00Z"));
        let due = at("2026-11-26T01:00:00Z");
        // Claimed: a run waits for a host.
        for c in plan(&s, due, &[]) {
            s.apply(&c, due);
        }
        let region_of = |h: &str| {
            Some(
                if h.starts_with('m') {
                    "mumbai"
                } else {
                    "singapore"
                }
                .to_string(),
            )
        };
        let placed = |hosts: &[&str]| -> Vec<String> {
            plan_placed(&s, due + 1000, hosts, &region_of)
                .into_iter()
                .filter_map(|c| match c {
                    CronChange::Place { host, .. } => Some(host),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(
            placed(&["s1", "m1"]),
            ["m1"],
            "the primary while it has a host"
        );
        assert_eq!(placed(&["s1", "s2"]), ["s1"], "mumbai lost: singapore");
    }
}
