//! Cron job runs and rollout `job` checks assigned to this host: each attempt (each
//! check) runs once, and how it ended is reported to the controllers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dabba_spec::WorkloadKind;
use dabba_spec::api::{CheckAssignment, CheckReport};
use dabba_spec::cronjob::{Fence, RunAssignment, RunReport};
use dabba_spec::resources::ResourceKey;

use super::attempts::Attempt;
use super::{Agent, StartError};
use crate::app::AppConfig;
use crate::job::RunInput;
use crate::logs::LogPath;

impl Agent {
    /// Runs one attempt of a cron job run and reports how it ended.
    pub(super) async fn execute(self: Arc<Self>, a: RunAssignment) {
        let started = Instant::now();
        let log = self.run_log(&a.run.key());
        log.event(format!("attempt {} started", a.run.attempt));
        let report = match self.run_job(&a, log.clone()).await {
            Ok(r) => r,
            Err(reason) => RunReport {
                attempt: a.run.attempt,
                exit_code: -1,
                fuel: None,
                duration_ms: started.elapsed().as_millis() as u64,
                reason: Some(reason.to_string()),
                output: String::new(),
            },
        };
        // Ended: nothing left to stop once the controllers hear of it.
        let attempt = (a.run.key(), a.run.attempt);
        self.running.lock().expect("running lock").remove(&attempt);
        self.ended(attempt, &log, report).await;
    }

    /// Reports an attempt that did not finish, saying `why`: this host stopped it, cut
    /// off from the controllers. The controllers retry it as a new attempt, as they
    /// would had the host been lost (a report of an attempt they already gave up
    /// changes nothing); it is never run again here.
    pub(super) async fn cut_short(self: Arc<Self>, attempt: Attempt, why: String) {
        let log = self.run_log(&attempt.0);
        let report = super::attempts::cut_short(attempt.1, why);
        self.ended(attempt, &log, report).await;
    }

    /// Logs how an attempt ended, writes its report down (so it is sent again while
    /// the attempt stays assigned here, by this process or the next) and sends it.
    async fn ended(&self, attempt: Attempt, log: &LogPath, report: RunReport) {
        log.event(ended_line(&report));
        let recorded = self.attempts.lock().expect("attempts lock").end(
            &attempt,
            report.clone(),
            Instant::now(),
        );
        if let Err(e) = recorded {
            // Sent anyway; only a restart before it is applied loses it (the attempt is
            // then reported cut short).
            tracing::warn!(run = %attempt.0, error = %e, "writing down how an attempt ended");
        }
        self.send_report(attempt, report).await;
    }

    /// Logs, in each run's log, the attempts an earlier process of this host started
    /// and never saw end (they are reported cut short as the controllers ask).
    pub(super) fn log_restarted(&self) {
        let restarted = self
            .attempts
            .lock()
            .expect("attempts lock")
            .take_restarted();
        for ((run, _), report) in restarted {
            self.run_log(&run).event(ended_line(&report));
        }
    }

    /// Sends the report of an ended attempt (retrying for up to a minute; while the
    /// attempt stays assigned here, the next view of the assignments sends it again).
    pub(super) async fn send_report(&self, attempt: Attempt, report: RunReport) {
        let api = self
            .api
            .with_bounds(Duration::from_secs(60), Duration::from_secs(5));
        if let Err(e) = api.report_run(&attempt.0, &report).await {
            tracing::warn!(run = %attempt.0, error = %e, "reporting a run failed");
        }
        self.attempts.lock().expect("attempts lock").sent(&attempt);
    }

    /// Stops the attempts running here that `keep` rejects, logging `why`: the
    /// guest is interrupted at its next epoch tick. The stopped attempts.
    pub(super) fn stop_attempts(&self, keep: impl Fn(&Attempt) -> bool, why: &str) -> Vec<Attempt> {
        let stopped: Vec<Attempt> = {
            let mut running = self.running.lock().expect("running lock");
            let gone: Vec<Attempt> = running.keys().filter(|a| !keep(a)).cloned().collect();
            for a in &gone {
                if let Some(task) = running.remove(a) {
                    task.abort();
                }
            }
            gone
        };
        for (run, attempt) in &stopped {
            self.run_log(run)
                .event(format!("attempt {attempt} stopped: {why}"));
        }
        stopped
    }

    fn run_log(&self, run: &ResourceKey) -> LogPath {
        let dir = self.opts.reads.logs().dir();
        dir.log(dir.run_path(run.namespace(), run.name()))
    }

    async fn run_job(&self, a: &RunAssignment, log: LogPath) -> Result<RunReport, StartError> {
        if let Some(why) = &a.unrevealed {
            return Err(StartError::Secrets(why.clone()));
        }
        let bytes = self.component(&a.component, &[]).await?;
        let s = &a.spec;
        let limits = s.limits.resolve(WorkloadKind::Job)?;
        let config = AppConfig {
            name: s.key().to_string(),
            scope: s.namespace.clone(),
            revision: None,
            limits,
            capabilities: dabba_spec::Capabilities {
                env: s.env.clone(),
                config: s.config.clone(),
                secrets: s.secrets.clone(),
                allowed_outbound_hosts: Vec::new(),
                key_value_buckets: s.key_value_buckets.clone(),
            },
            secrets: a.secrets.clone(),
            kv: self
                .kv
                .fenced(Fence {
                    run: a.run.key(),
                    attempt: a.run.attempt,
                })
                .unwrap_or_else(|| self.kv.clone()),
            log: Some(log),
        };
        let runtime = self.runtime.clone();
        let job = tokio::task::spawn_blocking(move || runtime.load_job(config, &bytes))
            .await
            .map_err(|e| StartError::Panicked(e.to_string()))??;
        let tz = dabba_spec::cron::time_zone(&s.timezone).map_err(StartError::Schedule)?;
        let scheduled = jiff::Timestamp::from_millisecond(a.run.scheduled as i64)
            .map_err(|e| StartError::Schedule(format!("scheduled time: {e}")))?;
        let input = RunInput {
            args: s.args.clone(),
            env: vec![
                (
                    "DABBA_SCHEDULED_TIME".into(),
                    dabba_spec::cron::rfc3339_in(scheduled, &tz),
                ),
                ("DABBA_RUN".into(), a.run.name.clone()),
            ],
        };
        let r = job.run(input).await;
        let mut output = String::from_utf8_lossy(&r.stdout).into_owned();
        output.push_str(&String::from_utf8_lossy(&r.stderr));
        Ok(RunReport {
            attempt: a.run.attempt,
            exit_code: r.exit_code,
            fuel: r.fuel_used,
            duration_ms: r.duration.as_millis() as u64,
            reason: r.failure.map(|(_, why)| why),
            output,
        })
    }
}

/// What a run's log says when an attempt ends.
fn ended_line(report: &RunReport) -> String {
    match &report.reason {
        Some(why) => format!(
            "attempt {} ended: exit code {}, {why}",
            report.attempt, report.exit_code
        ),
        None => format!(
            "attempt {} ended: exit code {} after {} ms",
            report.attempt, report.exit_code, report.duration_ms
        ),
    }
}

/// The output a check reports: its last bytes.
const CHECK_OUTPUT: usize = 2048;

impl Agent {
    /// Runs a rollout's `job` check once and reports how it ended. The check sees the
    /// app's route, the revision under test, this host's ingress (the only place it may
    /// reach, besides what its own buckets hold) and the preview header.
    pub(super) async fn check(self: Arc<Self>, a: CheckAssignment) {
        let started = Instant::now();
        let report = match self.run_check(&a).await {
            Ok(r) => r,
            Err(reason) => CheckReport {
                canary: a.canary,
                run: a.run,
                started: a.started,
                metric: a.metric,
                id: a.id.clone(),
                exit_code: -1,
                reason: Some(reason.to_string()),
                output: String::new(),
                duration_ms: started.elapsed().as_millis() as u64,
            },
        };
        let api = self
            .api
            .with_bounds(Duration::from_secs(60), Duration::from_secs(5));
        if let Err(e) = api.report_check(&a.app, &report).await {
            tracing::warn!(check = %a.id, error = %e, "reporting a check failed");
        }
    }

    async fn run_check(&self, a: &CheckAssignment) -> Result<CheckReport, StartError> {
        let digest = a.job.digest.ok_or_else(|| {
            StartError::Check(
                "the check's component was never uploaded (apply the manifest with `dabba apply`)"
                    .into(),
            )
        })?;
        let bytes = self.component(&digest, &[]).await?;
        let limits = dabba_spec::LimitOverrides::default().resolve(WorkloadKind::Job)?;
        let ingress = self.opts.info.address.trim_end_matches('/').to_string();
        let outbound = ingress
            .parse()
            .map_err(|e: dabba_spec::OutboundRuleError| StartError::Check(e.to_string()))?;
        let config = AppConfig {
            name: format!("{}-check", a.app),
            scope: a.app.namespace().to_string(),
            revision: None,
            limits,
            capabilities: dabba_spec::Capabilities {
                env: a.job.env.clone(),
                config: Default::default(),
                secrets: Default::default(),
                allowed_outbound_hosts: vec![outbound],
                key_value_buckets: a.job.key_value_buckets.clone(),
            },
            secrets: Default::default(),
            kv: self.kv.clone(),
            log: None,
        };
        let runtime = self.runtime.clone();
        let job = tokio::task::spawn_blocking(move || runtime.load_job(config, &bytes))
            .await
            .map_err(|e| StartError::Panicked(e.to_string()))??;
        let input = RunInput {
            args: a.job.args.clone(),
            env: vec![
                ("DABBA_APP".into(), a.app.to_string()),
                ("DABBA_INGRESS".into(), ingress),
                ("DABBA_ROUTE".into(), a.route.prefix.clone()),
                ("DABBA_REVISION".into(), a.canary.to_string()),
                (
                    "DABBA_PREVIEW_HEADER".into(),
                    dabba_spec::rollout::PREVIEW_HEADER.into(),
                ),
                ("DABBA_CHECK".into(), a.id.clone()),
            ],
        };
        let r = job.run(input).await;
        let mut output = String::from_utf8_lossy(&r.stdout).into_owned();
        output.push_str(&String::from_utf8_lossy(&r.stderr));
        let cut = output.len().saturating_sub(CHECK_OUTPUT);
        let cut = (cut..output.len())
            .find(|i| output.is_char_boundary(*i))
            .unwrap_or(0);
        Ok(CheckReport {
            canary: a.canary,
            run: a.run,
            started: a.started,
            metric: a.metric,
            id: a.id.clone(),
            exit_code: r.exit_code,
            reason: r.failure.map(|(_, why)| why),
            output: output[cut..].to_string(),
            duration_ms: r.duration.as_millis() as u64,
        })
    }
}
