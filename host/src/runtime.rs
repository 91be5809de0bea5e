//! The runtime of a host: engines, the artifact cache, linkers and metrics, shared by
//! every app the host runs. Loading an app yields an [`HttpFunction`] or a [`Job`]
//! holding a pre-instantiated component, ready to create a fresh instance per request.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use dabba_spec::{Digest, Limits, WorkloadKind};
use wasmtime::component::{InstancePre, Linker};

use crate::app::{AppConfig, Prepared};
use crate::cache::{ArtifactCache, LoadSource};
use crate::component::{ComponentBytes, LoadError, check_world};
use crate::engine::{EngineOptions, Engines, Metering};
use crate::function::HttpFunction;
use crate::guest::GuestState;
use crate::interfaces::{self, Grants};
use crate::job::Job;
use crate::logs::{AppLog, LogPath};
use crate::metrics::Metrics;

/// How a host runtime is set up.
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    pub engine: EngineOptions,
    /// Where precompiled artifacts are kept; `None` compiles on every load.
    pub cache_dir: Option<PathBuf>,
    /// Echo guest stdout/stderr lines to this process's stderr.
    pub echo_guest_output: bool,
}

pub struct Runtime {
    engines: Arc<Engines>,
    cache: ArtifactCache,
    linkers: HashMap<Metering, Linker<GuestState>>,
    /// Components linked and ready to instantiate, by digest, engine and kind.
    linked: Mutex<HashMap<(Digest, Metering, WorkloadKind), InstancePre<GuestState>>>,
    metrics: Arc<Metrics>,
    echo: bool,
}

impl Runtime {
    pub fn new(options: &RuntimeOptions) -> anyhow::Result<Arc<Runtime>> {
        let engines = Arc::new(Engines::new(&options.engine)?);
        let cache = match &options.cache_dir {
            Some(dir) => ArtifactCache::on_disk(dir)?,
            None => ArtifactCache::none(),
        };
        let mut linkers = HashMap::new();
        for m in [Metering::Epoch, Metering::Fuel] {
            let mut linker = Linker::new(engines.get(m));
            // The whole of WASI 0.2 (Rust std guests import wasi:cli even when they
            // serve HTTP), the HTTP interfaces, and the dabba platform interfaces.
            wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
            wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
            interfaces::add_to_linker(&mut linker, GuestState::platform)?;
            linkers.insert(m, linker);
        }
        Ok(Arc::new(Runtime {
            engines,
            cache,
            linkers,
            linked: Mutex::new(HashMap::new()),
            metrics: Arc::new(Metrics::new()),
            echo: options.echo_guest_output,
        }))
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn engines(&self) -> &Engines {
        &self.engines
    }

    /// Loads `wasm` as an HTTP function.
    pub fn load_http(
        self: &Arc<Self>,
        app: AppConfig,
        wasm: &ComponentBytes,
    ) -> Result<HttpFunction, LoadError> {
        let prepared = self.prepare(&app, wasm, WorkloadKind::Http)?;
        HttpFunction::new(app, prepared)
    }

    /// Whether loading `digest` for an app with these limits needs no compiling or
    /// linking (it was loaded before): then loading takes microseconds and need not
    /// leave the calling thread.
    pub fn is_linked(&self, digest: &Digest, limits: &Limits, kind: WorkloadKind) -> bool {
        let key = (*digest, metering_for(limits), kind);
        self.linked.lock().expect("lock").contains_key(&key)
    }

    /// Loads `wasm` as a job.
    pub fn load_job(
        self: &Arc<Self>,
        app: AppConfig,
        wasm: &ComponentBytes,
    ) -> Result<Job, LoadError> {
        let prepared = self.prepare(&app, wasm, WorkloadKind::Job)?;
        Job::new(app, prepared)
    }

    fn prepare(
        &self,
        app: &AppConfig,
        wasm: &ComponentBytes,
        kind: WorkloadKind,
    ) -> Result<Prepared, LoadError> {
        app.limits.validate().map_err(|e| LoadError::Invalid {
            origin: wasm.origin.clone(),
            detail: e.to_string(),
        })?;
        let metering = metering_for(&app.limits);
        let engine = self.engines.get(metering);
        let key = (wasm.digest, metering, kind);
        // A component is compiled (or mapped), checked and linked once per digest; every
        // later pod of it on this host starts from the same `InstancePre`.
        let cached = self.linked.lock().expect("lock").get(&key).cloned();
        let instance_pre = match cached {
            Some(pre) => pre,
            None => {
                let (component, source) = self.cache.load(engine, metering, wasm)?;
                self.metrics.component_loaded(source == LoadSource::Cached);
                check_world(engine, &component, kind, &wasm.origin)?;
                let pre = self.linkers[&metering]
                    .instantiate_pre(&component)
                    .map_err(|e| LoadError::MissingImport {
                        origin: wasm.origin.clone(),
                        detail: format!("{e:#}"),
                    })?;
                self.linked.lock().expect("lock").insert(key, pre.clone());
                pre
            }
        };
        let grants = Arc::new(Grants {
            backend: app.kv.clone(),
            scope: app.scope.clone(),
            buckets: app.capabilities.key_value_buckets.clone(),
            config: app
                .capabilities
                .config
                .iter()
                .chain(app.secrets.0.iter())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        });
        Ok(Prepared {
            engine: engine.clone(),
            engines: self.engines.clone(),
            metrics: self.metrics.app(
                &app.name,
                &app.revision.map(|n| n.to_string()).unwrap_or_default(),
            ),
            instance_pre,
            digest: wasm.digest,
            grants,
            log: Arc::new(AppLog::new(
                &app.name,
                app.log.as_ref().and_then(LogPath::open),
                self.echo,
            )),
        })
    }
}

/// Fuel metering needs code compiled for it; everything else uses epochs.
fn metering_for(limits: &Limits) -> Metering {
    if limits.fuel.is_some() {
        Metering::Fuel
    } else {
        Metering::Epoch
    }
}
