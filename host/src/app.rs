//! An app as a host loads it: what it is apart from its component ([`AppConfig`]), and
//! its component compiled, checked and linked for it (`Prepared`) — what the
//! `Runtime` hands to an HTTP function or a job.

use std::sync::Arc;

use dabba_spec::{Capabilities, Digest, Limits};
use wasmtime::component::InstancePre;

use crate::engine::Engines;
use crate::guest::GuestState;
use crate::interfaces::Grants;
use crate::kv::KvBackend;
use crate::logs::{AppLog, LogPath};
use crate::metrics::AppMetrics;

/// Everything an app is, apart from its component.
#[derive(Clone)]
pub struct AppConfig {
    /// The app's name, used in metrics, logs and error bodies.
    pub name: String,
    /// The namespace that scopes its key-value buckets.
    pub scope: String,
    /// The revision it runs, when it runs as a pod of a cluster (a metrics label).
    pub revision: Option<u64>,
    pub limits: Limits,
    pub capabilities: Capabilities,
    /// The values of the secrets it lists, served by `wasi:config` beside
    /// `capabilities.config` (`Debug` shows their keys only).
    pub secrets: dabba_spec::secret::Revealed,
    /// Where its buckets live.
    pub kv: Arc<dyn KvBackend>,
    /// The log its output goes to, when it runs as a pod (or a job run) of a cluster.
    pub log: Option<LogPath>,
}

/// A component ready to instantiate for one app.
pub(crate) struct Prepared {
    pub engine: wasmtime::Engine,
    /// Keeps the engines (and their epoch ticker, which enforces time limits) running
    /// while an app of them is loaded.
    pub engines: Arc<Engines>,
    /// The app's metrics, resolved once.
    pub metrics: AppMetrics,
    pub instance_pre: InstancePre<GuestState>,
    pub digest: Digest,
    pub grants: Arc<Grants>,
    pub log: Arc<AppLog>,
}
