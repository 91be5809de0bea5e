//! Cron job runs assigned to this host: each attempt runs once, with its scheduled
//! time in its environment, and how it ended is reported to the controllers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dabba_spec::WorkloadKind;
use dabba_spec::cronjob::{RunAssignment, RunReport};

use super::{Agent, StartError};
use crate::app::AppConfig;
use crate::job::RunInput;

impl Agent {
    /// Runs one attempt of a cron job run and reports how it ended (retrying the report
    /// for up to a minute; the controllers give the attempt up if the host is lost).
    pub(super) async fn execute(self: Arc<Self>, a: RunAssignment) {
        let started = Instant::now();
        let report = match self.run_job(&a).await {
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
        let api = self
            .api
            .with_bounds(Duration::from_secs(60), Duration::from_secs(5));
        if let Err(e) = api.report_run(&a.run.key(), &report).await {
            tracing::warn!(run = %a.run.name, error = %e, "reporting a run failed");
        }
    }

    async fn run_job(&self, a: &RunAssignment) -> Result<RunReport, StartError> {
        let bytes = self.component(&a.component).await?;
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
                allowed_outbound_hosts: Vec::new(),
                key_value_buckets: s.key_value_buckets.clone(),
            },
            kv: self.kv.clone(),
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
