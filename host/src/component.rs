//! Reading a component from bytes and deciding what it is, with errors that say what
//! was wrong and how to fix it.
//!
//! Three questions are answered before anything runs: is this WebAssembly at all; is it
//! a component (not a core module); and does it export what we are about to call
//! (`wasi:http/incoming-handler` for functions, `wasi:cli/run` for jobs).

use std::path::{Path, PathBuf};

use dabba_spec::{Digest, WorkloadKind};
use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The export an HTTP function must have (any 0.2.x version).
pub const HTTP_EXPORT: &str = "wasi:http/incoming-handler@0.2";
/// The export a job must have (any 0.2.x version).
pub const JOB_EXPORT: &str = "wasi:cli/run@0.2";

const WASM_MAGIC: &[u8; 4] = b"\0asm";
const CORE_VERSION: [u8; 4] = [1, 0, 0, 0];
const COMPONENT_VERSION: [u8; 4] = [0x0d, 0, 1, 0];

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin} is empty: expected a WebAssembly component")]
    Empty { origin: String },
    #[error(
        "{origin} is not WebAssembly: it starts with {head}, not the wasm magic bytes 00 61 73 6d (\"\\0asm\")"
    )]
    NotWasm { origin: String, head: String },
    #[error(
        "{origin} is a core WebAssembly module, not a component. Build a component instead: \
         `cargo build --target wasm32-wasip2` emits one directly, or wrap a module with \
         `wasm-tools component new`"
    )]
    CoreModule { origin: String },
    #[error(
        "{origin} has an unknown WebAssembly version/layer {version}: expected a component (0d 00 01 00)"
    )]
    UnknownVersion { origin: String, version: String },
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
        let digest = Digest::from_bytes(Sha256::digest(&bytes).into());
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

    /// Checks the header: wasm at all, and a component rather than a core module.
    pub fn check_header(&self) -> Result<(), LoadError> {
        let origin = || self.origin.clone();
        let b = &self.bytes;
        if b.is_empty() {
            return Err(LoadError::Empty { origin: origin() });
        }
        let head_len = b.len().min(4);
        if b[..head_len] != WASM_MAGIC[..head_len] {
            let head = b
                .iter()
                .take(8)
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(" ");
            return Err(LoadError::NotWasm {
                origin: origin(),
                head,
            });
        }
        if b.len() < 8 {
            return Err(LoadError::Truncated {
                origin: origin(),
                detail: format!("only {} bytes, shorter than the 8-byte header", b.len()),
            });
        }
        let version: [u8; 4] = b[4..8].try_into().expect("4 bytes");
        if version == CORE_VERSION {
            return Err(LoadError::CoreModule { origin: origin() });
        }
        if version != COMPONENT_VERSION {
            return Err(LoadError::UnknownVersion {
                origin: origin(),
                version: version
                    .iter()
                    .map(|x| format!("{x:02x}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            });
        }
        check_sections(&b[8..]).map_err(|detail| LoadError::Truncated {
            origin: origin(),
            detail,
        })
    }
}

/// Walks the top-level sections (an id byte, a LEB128 size, the contents) and reports a
/// section that runs past the end of the file: the sure sign of a truncated download.
fn check_sections(mut rest: &[u8]) -> Result<(), String> {
    let mut offset = 8usize;
    while !rest.is_empty() {
        let id = rest[0];
        let mut size: u64 = 0;
        let mut shift = 0;
        let mut i = 1;
        loop {
            let Some(&byte) = rest.get(i) else {
                return Err(format!(
                    "section {id} at byte {offset} has an incomplete size"
                ));
            };
            size |= u64::from(byte & 0x7f) << shift;
            i += 1;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 28 {
                return Err(format!(
                    "section {id} at byte {offset} has a malformed size"
                ));
            }
        }
        let available = (rest.len() - i) as u64;
        if size > available {
            return Err(format!(
                "section {id} at byte {offset} declares {size} bytes but only {available} remain"
            ));
        }
        let end = i + size as usize;
        rest = &rest[end..];
        offset += end;
    }
    Ok(())
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
    fn headers_are_classified() {
        assert!(matches!(
            bytes(b"").check_header(),
            Err(LoadError::Empty { .. })
        ));
        assert!(matches!(
            bytes(b"hello world").check_header(),
            Err(LoadError::NotWasm { .. })
        ));
        assert!(matches!(
            bytes(b"\0as").check_header(),
            Err(LoadError::Truncated { .. })
        ));
        assert!(matches!(
            bytes(b"\0asm\x01\0").check_header(),
            Err(LoadError::Truncated { .. })
        ));
        let module = wat::parse_str("(module)").unwrap();
        let err = bytes(&module).check_header().unwrap_err();
        assert!(matches!(err, LoadError::CoreModule { .. }));
        assert!(err.to_string().contains("wasm32-wasip2"), "{err}");
        let component = wat::parse_str("(component)").unwrap();
        assert!(bytes(&component).check_header().is_ok());
        let with_section = wat::parse_str("(component (core module))").unwrap();
        assert!(bytes(&with_section).check_header().is_ok());
        let cut = &with_section[..with_section.len() - 1];
        let err = bytes(cut).check_header().unwrap_err();
        assert!(matches!(err, LoadError::Truncated { .. }), "{err}");
        assert!(err.to_string().contains("declares"), "{err}");
        assert!(matches!(
            bytes(b"\0asm\x02\0\0\0").check_header(),
            Err(LoadError::UnknownVersion { .. })
        ));
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
