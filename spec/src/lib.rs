//! `dabba-spec` is dabba's written contract in code: the types that manifests, the API and
//! the command line share, their validation, and the WIT worlds that guests build against.
//!
//! It does no I/O and links no runtime: the host, the controller, the CLI and tests all
//! depend on it, so it stays small. Parsing and validation happen here; resolving a
//! manifest against the filesystem (reading components, hashing them) happens at the
//! edges that own the I/O.
//!
//! The prose contract lives beside this crate in `spec/*.md`; the WIT files the host
//! implements and the SDK imports live in `spec/wit/`.

pub mod analysis;
pub mod api;
pub mod audit;
pub mod capabilities;
pub mod component;
pub mod condition;
pub mod cron;
pub mod cronjob;
pub mod digest;
pub mod fuzzing;
pub mod kv;
pub mod latency;
pub mod limits;
mod locate;
pub mod manifest;
pub mod quota;
pub mod ratelimit;
pub mod rbac;
pub mod regions;
pub mod resources;
pub mod rollout;
pub mod scale;
pub mod secret;
pub mod units;
pub mod validate;

pub use capabilities::{Capabilities, OutboundRule, OutboundRuleError};
pub use digest::{Digest, DigestError};
pub use limits::{LimitError, LimitKind, LimitOverrides, Limits, WorkloadKind};
pub use manifest::{Manifest, ManifestError};
pub use units::{ByteSize, HumanDuration, UnitError};
pub use validate::Invalid;

/// The directory holding the WIT packages dabba implements beyond the standard WASI
/// 0.2 worlds (`wasi:keyvalue@0.2.0-draft2` and `wasi:config@0.2.0-rc.1`).
pub const WIT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/wit");
