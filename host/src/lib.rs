//! `dabba-host` is the node: it runs Wasm components as pods.
//!
//! A host owns one [`runtime::Runtime`] — two shared wasmtime engines (epoch-only and
//! fuel-metered), a disk cache of precompiled components keyed by content digest, and
//! the linkers for WASI 0.2, `wasi:http` and the dabba platform interfaces. Loading a
//! component for an app yields an [`function::HttpFunction`] (a fresh instance per request)
//! or a [`job::Job`] (an instance per run), each enforcing the app's
//! [`dabba_spec::Limits`] and granting only its [`dabba_spec::Capabilities`].
//!
//! What it is not: a scheduler or a store of desired state. Which apps run where is
//! decided by the controller; the [`agent`] converges the host to what it is told and
//! the [`ingress`] routes requests to local pods or to other hosts. `dabba serve` and
//! `dabba run` drive a host runtime directly, without a controller.
//!
//! Invariants:
//! - only this crate links wasmtime;
//! - a guest instance never outlives its request or run;
//! - every guest runs under finite limits (see `spec/limits.md`).

pub mod agent;
pub mod app;
pub mod cache;
pub mod component;
pub mod engine;
pub mod function;
pub mod guest;
pub mod ingress;
pub mod interfaces;
pub mod job;
pub mod kv;
pub mod limiter;
mod linked;
pub mod logs;
pub mod metrics;
pub mod outcome;
pub mod peer;
pub mod pod_load;
pub mod reachability;
pub mod runtime;
pub mod server;

pub use app::AppConfig;
pub use component::{ComponentBytes, LoadError};
pub use runtime::{Runtime, RuntimeOptions};
