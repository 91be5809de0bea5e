//! Jobs: a `wasi:cli/command` component run to completion once, with arguments, an
//! environment, captured stdout and stderr, and an exit code.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dabba_spec::{Capabilities, Digest, LimitKind, Limits};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::bindings::CommandPre;

use crate::component::LoadError;
use crate::guest::{CapturedOutput, GuestState, StoreSpec, new_store};
use crate::logs::{AppLog, Stream};
use crate::metrics::AppMetrics;
use crate::outcome::{Failure, describe};
use crate::runtime::{AppConfig, Prepared, Runtime};

/// Exit code reported when a limit stopped the job (as `timeout(1)` does).
pub const EXIT_LIMIT: i32 = 124;
/// Exit code reported when the job trapped or the host failed.
pub const EXIT_TRAP: i32 = 125;

pub struct Job {
    name: String,
    digest: Digest,
    engine: wasmtime::Engine,
    pre: CommandPre<GuestState>,
    limits: Limits,
    caps: Arc<Capabilities>,
    grants: Arc<crate::platform::PlatformGrants>,
    metrics: AppMetrics,
    log: Arc<AppLog>,
    _runtime: Arc<Runtime>,
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
    pub(crate) fn new(
        runtime: Arc<Runtime>,
        app: AppConfig,
        p: Prepared,
    ) -> Result<Self, LoadError> {
        let pre = CommandPre::new(p.instance_pre).map_err(|e| LoadError::Invalid {
            origin: app.name.clone(),
            detail: format!("{e:#}"),
        })?;
        Ok(Job {
            metrics: runtime.metrics().app(&app.name),
            caps: Arc::new(app.capabilities),
            name: app.name,
            digest: p.digest,
            engine: p.engine,
            pre,
            limits: app.limits,
            grants: p.grants,
            log: p.log,
            _runtime: runtime,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn digest(&self) -> Digest {
        self.digest
    }

    pub fn log(&self) -> &Arc<AppLog> {
        &self.log
    }

    /// Runs the job once, to completion or to a limit.
    pub async fn run(&self, input: RunInput) -> RunReport {
        let started = Instant::now();
        let deadline = started + self.limits.timeout.get();
        let stdout = CapturedOutput::new(self.limits.max_output.as_usize());
        let stderr = CapturedOutput::new(self.limits.max_output.as_usize());
        let mut env: Vec<(String, String)> = self
            .caps
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in input.env {
            env.retain(|(existing, _)| *existing != k);
            env.push((k, v));
        }
        let mut argv = vec![self.name.clone()];
        argv.extend(input.args);
        let wasi = WasiCtxBuilder::new()
            .args(&argv)
            .envs(&env)
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build();
        let spec = StoreSpec {
            caps: &self.caps,
            grants: &self.grants,
            wasi,
            memory_cap: self.limits.memory.as_usize(),
            fuel: self.limits.fuel,
            deadline,
        };
        self.metrics.instantiations.inc();
        let (exit_code, failure, fuel_used) = match new_store(&self.engine, spec) {
            Err(e) => (EXIT_TRAP, Some(Failure::Host(format!("{e:#}"))), None),
            Ok(mut store) => {
                let call = async {
                    let command = self.pre.instantiate_async(&mut store).await?;
                    command.wasi_cli_run().call_run(&mut store).await
                };
                let result = tokio::time::timeout_at(deadline.into(), call).await;
                let fuel_used = self
                    .limits
                    .fuel
                    .map(|b| b.saturating_sub(store.get_fuel().unwrap_or(0)));
                let memory_hit = store.data().limiter().hit();
                let (code, failure) = match result {
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
                (code, failure, fuel_used)
            }
        };
        if let Some(f) = &failure
            && let Some(kind) = f.limit()
        {
            self.metrics.limit_hit(kind);
        }
        if let Some(fuel) = fuel_used {
            self.metrics.fuel.inc_by(fuel);
        }
        self.metrics.job_run(exit_code == 0);
        let (out, out_dropped) = stdout.take();
        let (err, err_dropped) = stderr.take();
        self.log.record(Stream::Stdout, &out);
        self.log.record(Stream::Stderr, &err);
        self.metrics
            .output_dropped
            .inc_by(out_dropped + err_dropped);
        RunReport {
            exit_code,
            stdout: out,
            stderr: err,
            dropped: (out_dropped, err_dropped),
            fuel_used,
            duration: started.elapsed(),
            failure: failure.map(|f| {
                let text = describe(&f, &self.limits);
                (f, text)
            }),
        }
    }
}
