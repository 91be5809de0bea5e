//! Jobs: a `wasi:cli/command` component run to completion once, with arguments, an
//! environment, captured stdout and stderr, and an exit code.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dabba_spec::{Digest, LimitKind};
use wasmtime_wasi::p2::bindings::CommandPre;

use crate::app::{AppConfig, Prepared};
use crate::component::LoadError;
use crate::guest::GuestState;
use crate::linked::{Fresh, LinkedApp};
use crate::logs::AppLog;
use crate::outcome::{Failure, describe};

/// Exit code reported when a limit stopped the job (as `timeout(1)` does).
pub const EXIT_LIMIT: i32 = 124;
/// Exit code reported when the job trapped or the host failed.
pub const EXIT_TRAP: i32 = 125;

pub struct Job {
    app: LinkedApp,
    pre: CommandPre<GuestState>,
}

/// What one run is given beyond the app's configuration.
#[derive(Debug, Clone, Default)]
pub struct RunInput {
    pub args: Vec<String>,
    /// Added to (and overriding) the app's environment, e.g. `DABBA_SCHEDULED_TIME`.
    pub env: Vec<(String, String)>,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The guest's exit code, or [`EXIT_LIMIT`] / [`EXIT_TRAP`].
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Output bytes dropped past the cap, per stream.
    pub dropped: (u64, u64),
    pub fuel_used: Option<u64>,
    pub duration: Duration,
    /// Why the run did not end by itself, in words; `None` if it exited.
    pub failure: Option<(Failure, String)>,
}

impl Job {
    pub(crate) fn new(app: AppConfig, p: Prepared) -> Result<Self, LoadError> {
        let (app, instance_pre) = LinkedApp::new(app, p);
        let pre = CommandPre::new(instance_pre).map_err(|e| LoadError::Invalid {
            origin: app.name.clone(),
            detail: format!("{e:#}"),
        })?;
        Ok(Job { app, pre })
    }

    pub fn name(&self) -> &str {
        &self.app.name
    }

    pub fn digest(&self) -> Digest {
        self.app.digest
    }

    pub fn log(&self) -> &Arc<AppLog> {
        &self.app.log
    }

    /// Runs the job once, to completion or to a limit.
    pub async fn run(&self, input: RunInput) -> RunReport {
        let started = Instant::now();
        let deadline = started + self.app.limits.timeout.get();
        let mut argv = vec![self.app.name.clone()];
        argv.extend(input.args);
        let fresh = match self.app.fresh(&argv, &input.env, deadline) {
            Ok(f) => f,
            Err(e) => {
                return self.report(
                    started,
                    EXIT_TRAP,
                    Some(Failure::Host(format!("{e:#}"))),
                    None,
                    (Vec::new(), Vec::new(), (0, 0)),
                );
            }
        };
        let Fresh {
            mut store,
            stdout,
            stderr,
        } = fresh;
        let call = async {
            let command = self.pre.instantiate_async(&mut store).await?;
            command.wasi_cli_run().call_run(&mut store).await
        };
        let result = tokio::time::timeout_at(deadline.into(), call).await;
        let fuel_used = self.app.fuel_used(&store);
        let memory_hit = store.data().limiter().hit();
        drop(store);
        let (exit_code, failure) = match result {
            Err(_elapsed) => (EXIT_LIMIT, Some(Failure::Limit(LimitKind::Timeout))),
            Ok(Ok(Ok(()))) => (0, None),
            Ok(Ok(Err(()))) => (1, None),
            Ok(Err(e)) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                Some(exit) => (exit.0, None),
                None => {
                    let f = Failure::classify(&e, memory_hit);
                    let code = if f.limit().is_some() {
                        EXIT_LIMIT
                    } else {
                        EXIT_TRAP
                    };
                    (code, Some(f))
                }
            },
        };
        let output = self.app.settle(fuel_used, &stdout, &stderr);
        self.report(started, exit_code, failure, fuel_used, output)
    }

    fn report(
        &self,
        started: Instant,
        exit_code: i32,
        failure: Option<Failure>,
        fuel_used: Option<u64>,
        (stdout, stderr, dropped): (Vec<u8>, Vec<u8>, (u64, u64)),
    ) -> RunReport {
        if let Some(kind) = failure.as_ref().and_then(Failure::limit) {
            self.app.metrics.limit_hit(kind);
        }
        self.app.metrics.job_run(exit_code == 0);
        RunReport {
            exit_code,
            stdout,
            stderr,
            dropped,
            fuel_used,
            duration: started.elapsed(),
            failure: failure.map(|f| {
                let text = describe(&f, &self.app.limits);
                (f, text)
            }),
        }
    }
}
