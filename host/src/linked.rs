//! What an HTTP function and a job share: an app's component loaded into this host with
//! its limits, grants and per-app metrics and log, and the making of one fresh, limited
//! instance store per request or run.

use std::sync::Arc;
use std::time::Instant;

use dabba_spec::{Capabilities, Digest, Limits};
use wasmtime::Store;
use wasmtime_wasi::WasiCtxBuilder;

use crate::app::{AppConfig, Prepared};
use crate::engine::Engines;
use crate::guest::{CapturedOutput, GuestState, StoreSpec, new_store};
use crate::interfaces::Grants;
use crate::logs::{AppLog, Stream};
use crate::metrics::AppMetrics;

pub(crate) struct LinkedApp {
    pub name: String,
    pub digest: Digest,
    pub limits: Limits,
    pub metrics: AppMetrics,
    pub log: Arc<AppLog>,
    engine: wasmtime::Engine,
    caps: Arc<Capabilities>,
    grants: Arc<Grants>,
    /// The app's granted environment, as the WASI context takes it.
    env: Vec<(String, String)>,
    /// Keeps the engines (and their epoch ticker) running while this app is loaded.
    _engines: Arc<Engines>,
}

/// One instance's store and the capture of its output.
pub(crate) struct Fresh {
    pub store: Store<GuestState>,
    pub stdout: CapturedOutput,
    pub stderr: CapturedOutput,
}

impl LinkedApp {
    /// Splits a prepared component into the shared part and its `InstancePre`.
    pub fn new(
        app: AppConfig,
        p: Prepared,
    ) -> (LinkedApp, wasmtime::component::InstancePre<GuestState>) {
        let loaded = LinkedApp {
            metrics: p.metrics,
            env: app
                .capabilities
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            caps: Arc::new(app.capabilities),
            name: app.name,
            digest: p.digest,
            limits: app.limits,
            log: p.log,
            engine: p.engine,
            grants: p.grants,
            _engines: p.engines,
        };
        (loaded, p.instance_pre)
    }

    /// A new store for one instance, with the app's limits, its environment plus
    /// `extra_env` (which overrides it), and `argv`.
    pub fn fresh(
        &self,
        argv: &[String],
        extra_env: &[(String, String)],
        deadline: Instant,
    ) -> wasmtime::Result<Fresh> {
        let cap = self.limits.max_output.as_usize();
        let stdout = CapturedOutput::teed(cap, self.log.clone(), Stream::Stdout);
        let stderr = CapturedOutput::teed(cap, self.log.clone(), Stream::Stderr);
        let mut wasi = WasiCtxBuilder::new();
        if extra_env.is_empty() {
            wasi.envs(&self.env);
        } else {
            let mut env = self.env.clone();
            for (k, v) in extra_env {
                env.retain(|(existing, _)| existing != k);
                env.push((k.clone(), v.clone()));
            }
            wasi.envs(&env);
        }
        let wasi = wasi
            .args(argv)
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build();
        let store = new_store(
            &self.engine,
            StoreSpec {
                caps: &self.caps,
                grants: &self.grants,
                wasi,
                memory_cap: self.limits.memory.as_usize(),
                fuel: self.limits.fuel,
                deadline,
            },
        )?;
        self.metrics.instantiations.inc();
        Ok(Fresh {
            store,
            stdout,
            stderr,
        })
    }

    /// Fuel the instance used, when the app has a budget.
    pub fn fuel_used(&self, store: &Store<GuestState>) -> Option<u64> {
        self.limits
            .fuel
            .map(|budget| budget.saturating_sub(store.get_fuel().unwrap_or(0)))
    }

    /// Accounts for a finished instance: fuel used, and the rest of its output into the
    /// app's log. Returns what it wrote on stdout and stderr, and the bytes dropped from
    /// each.
    pub fn settle(
        &self,
        fuel_used: Option<u64>,
        stdout: &CapturedOutput,
        stderr: &CapturedOutput,
    ) -> (Vec<u8>, Vec<u8>, (u64, u64)) {
        if let Some(fuel) = fuel_used {
            self.metrics.fuel.inc_by(fuel);
        }
        let (out, out_dropped) = stdout.take();
        let (err, err_dropped) = stderr.take();
        if out_dropped + err_dropped > 0 {
            self.metrics
                .output_dropped
                .inc_by(out_dropped + err_dropped);
        }
        (out, err, (out_dropped, err_dropped))
    }
}
