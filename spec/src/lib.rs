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

pub mod api;
pub mod capabilities;
#[cfg(feature = "client")]
pub mod client;
pub mod cron;
pub mod cronjob;
pub mod digest;
pub mod kv;
pub mod limits;
pub mod manifest;
pub mod resources;
pub mod scale;
pub mod units;

pub use capabilities::{Capabilities, OutboundRule, OutboundRuleError};
pub use digest::{Digest, DigestError};
pub use limits::{LimitError, LimitKind, LimitOverrides, Limits, WorkloadKind};
pub use manifest::{Manifest, ManifestError};
pub use units::{ByteSize, HumanDuration, UnitError};

/// The directory holding the WIT packages dabba implements beyond the standard WASI
/// 0.2 worlds (`wasi:keyvalue@0.2.0-draft2` and `wasi:config@0.2.0-rc.1`).
pub const WIT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/wit");

/// The first 8 bytes of every WebAssembly component: the magic and the component
/// version/layer (`0d 00 01 00`). A core module has `01 00 00 00` instead.
pub const COMPONENT_PREAMBLE: [u8; 8] = [0, b'a', b's', b'm', 0x0d, 0, 1, 0];

/// Whether `bytes` start like a WebAssembly component (a cheap check made before a
/// component is stored; hosts validate it fully when they load it).
pub fn looks_like_component(bytes: &[u8]) -> bool {
    bytes.starts_with(&COMPONENT_PREAMBLE)
}
