//! Reading a component from bytes and deciding what it is, with errors that say what
//! was wrong and how to fix it.
//!
//! Three questions are answered before anything runs: is this WebAssembly at all; is it
//! a component (not a core module); and does it export what we are about to call
//! (`wasi:http/incoming-handler` for functions, `wasi:cli/run` for jobs).

use std::path::{Path, PathBuf};

use dabba_spec::{Digest, WorkloadKind};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The export an HTTP function must have (any 0.2.x version).
pub const HTTP_EXPORT: &str = "wasi:http/incoming-handler@0.2";
/// The export a job must have (any 0.2.x version).
pub const JOB_EXPORT: &str = "wasi:cli/run@0.2";

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not the bytes of a component at all (see `dabba_spec::component`).
    #[error("{origin} {reason}")]
    Header {
        origin: String,
        reason: dabba_spec::component::HeaderError,
    },
    #[error("{origin} ends early: the file is truncated or incomplete ({detail})")]
    Truncated { origin: String, detail: String },
    #[error("{origin} is not a valid component: {detail}")]
    Invalid { origin: String, detail: String },
    #[error(
        "{origin} does not export `{expected}x`, so it cannot run as {kind}.\n  it exports: {exports}{hint}"
    )]
    WrongWorld {
        origin: String,
        kind: &'static str,
        expected: &'static str,
        exports: String,
        hint: &'static str,
    },
    #[error(
        "{origin} needs an import this host does not provide: {detail}\n  dabba provides WASI 0.2 (cli, clocks, random, io, http), wasi:keyvalue@0.2.0-draft2 and wasi:config@0.2.0-rc.1"
    )]
    MissingImport { origin: String, detail: String },
    #[error("precompiled-artifact cache at {path}: {source}")]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A component's bytes and their digest.
pub struct ComponentBytes {
    pub bytes: Vec<u8>,
    pub digest: Digest,
    /// Where it came from, for messages: a path or a digest.
    pub origin: String,
}

impl ComponentBytes {
    pub fn read(path: &Path) -> Result<ComponentBytes, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(ComponentBytes::new(bytes, path.display().to_string()))
    }

    pub fn new(bytes: Vec<u8>, origin: String) -> ComponentBytes {
        let digest = Digest::of(&bytes);
        ComponentBytes {
            bytes,
            digest,
            origin,
        }
    }

    /// Bytes whose digest the caller has already verified (a component fetched by
    /// digest and checked), so they are not hashed again.
    pub fn verified(bytes: Vec<u8>, digest: Digest, origin: String) -> ComponentBytes {
        ComponentBytes {
            bytes,
            digest,
            origin,
        }
    }

    /// Checks the header: wasm at all, a component rather than a core module, and
    /// sections that fit in the file.
    pub fn check_header(&self) -> Result<(), LoadError> {
        dabba_spec::component::check(&self.bytes).map_err(|reason| LoadError::Header {
            origin: self.origin.clone(),
            reason,
        })
    }
}

/// Turns a compilation failure into a load error, recognizing truncation.
pub fn compile_error(origin: &str, e: &wasmtime::Error) -> LoadError {
    let detail = format!("{e:#}");
    if detail.contains("unexpected end") || detail.contains("end of file") {
        LoadError::Truncated {
            origin: origin.to_string(),
            detail,
        }
    } else {
        LoadError::Invalid {
            origin: origin.to_string(),
            detail,
        }
    }
}

/// The names a component exports.
pub fn export_names(engine: &Engine, component: &Component) -> Vec<String> {
    component
        .component_type()
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect()
}

/// Checks that `component` exports what `kind` calls.
pub fn check_world(
    engine: &Engine,
    component: &Component,
    kind: WorkloadKind,
    origin: &str,
) -> Result<(), LoadError> {
    let exports = export_names(engine, component);
    let (expected, kind_name, hint) = match kind {
        WorkloadKind::Http => (
            HTTP_EXPORT,
            "an HTTP function",
            if exports.iter().any(|e| e.starts_with(JOB_EXPORT)) {
                "\n  it is a wasi:cli command: run it as a job with `dabba run`"
            } else {
                "\n  build it against the wasi:http/proxy world (for example with dabba-sdk's http_component!)"
            },
        ),
        WorkloadKind::Job => (
            JOB_EXPORT,
            "a job",
            if exports.iter().any(|e| e.starts_with(HTTP_EXPORT)) {
                "\n  it is an HTTP function: serve it with `dabba serve`"
            } else {
                "\n  build it as a binary (fn main) for wasm32-wasip2"
            },
        ),
    };
    if exports.iter().any(|e| e.starts_with(expected)) {
        return Ok(());
    }
    Err(LoadError::WrongWorld {
        origin: origin.to_string(),
        kind: kind_name,
        expected,
        exports: if exports.is_empty() {
            "nothing".into()
        } else {
            exports.join(", ")
        },
        hint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(b: &[u8]) -> ComponentBytes {
        ComponentBytes::new(b.to_vec(), "test.wasm".into())
    }

    #[test]
    fn header_errors_name_the_file() {
        let err = bytes(b"hello world").check_header().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("test.wasm is not WebAssembly: it starts with 68 65"),
            "{err}"
        );
        let component = wat::parse_str("(component (core module))").unwrap();
        assert!(bytes(&component).check_header().is_ok());
        let cut = &component[..component.len() - 1];
        let err = bytes(cut).check_header().unwrap_err();
        assert!(err.to_string().starts_with("test.wasm ends early"), "{err}");
    }

    #[test]
    fn digests_are_sha256_of_the_bytes() {
        let a = bytes(b"abc");
        assert_eq!(
            a.digest.to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
