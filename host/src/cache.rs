//! Precompiled components on disk, keyed by content digest and engine compatibility.
//!
//! Compiling a component takes 100–400 ms; mapping a precompiled artifact takes well
//! under a millisecond. So a component is compiled once per digest and per engine
//! configuration, written to `DIR/<digest>-<engine>.cwasm`, and every later load maps
//! that file. The engine part of the name hashes wasmtime's
//! `precompile_compatibility_hash`, which changes with the wasmtime version and with
//! every setting that changes generated code (fuel, epochs, memory layout), so an
//! artifact is never loaded into an engine it was not made for.
//!
//! Files are written to a temporary name and renamed into place, and never modified
//! after: a mapped artifact must not change under a running instance. The directory is
//! created with mode 0700, because anyone who can write an artifact there can run
//! native code in this process.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::component::{ComponentBytes, LoadError, compile_error};
use crate::engine::Metering;

pub struct ArtifactCache {
    dir: Option<PathBuf>,
}

/// Where a load was served from, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadSource {
    /// Mapped from an artifact compiled earlier.
    Cached,
    /// Compiled now (and cached if the cache has a directory).
    Compiled,
}

impl ArtifactCache {
    /// A cache in `dir`, created if missing.
    pub fn on_disk(dir: &Path) -> Result<ArtifactCache, LoadError> {
        let err = |source| LoadError::Cache {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
        }
        Ok(ArtifactCache {
            dir: Some(dir.to_path_buf()),
        })
    }

    /// No disk cache: every load compiles.
    pub fn none() -> ArtifactCache {
        ArtifactCache { dir: None }
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The component for `wasm` on `engine`, from the cache when possible.
    pub fn load(
        &self,
        engine: &Engine,
        metering: Metering,
        wasm: &ComponentBytes,
    ) -> Result<(Component, LoadSource), LoadError> {
        wasm.check_header()?;
        let Some(dir) = &self.dir else {
            let c =
                Component::new(engine, &wasm.bytes).map_err(|e| compile_error(&wasm.origin, &e))?;
            return Ok((c, LoadSource::Compiled));
        };
        let path = dir.join(format!(
            "{}-{}-{}.cwasm",
            wasm.digest.hex(),
            match metering {
                Metering::Epoch => "epoch",
                Metering::Fuel => "fuel",
            },
            engine_key(engine)
        ));
        if path.exists() {
            match map(engine, &path) {
                Ok(c) => return Ok((c, LoadSource::Cached)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding an unusable precompiled artifact");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let artifact = engine
            .precompile_component(&wasm.bytes)
            .map_err(|e| compile_error(&wasm.origin, &e))?;
        let cache_err = |source| LoadError::Cache {
            path: path.clone(),
            source,
        };
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, &artifact).map_err(cache_err)?;
        std::fs::rename(&tmp, &path).map_err(cache_err)?;
        let c = map(engine, &path).map_err(|e| compile_error(&wasm.origin, &e))?;
        Ok((c, LoadSource::Compiled))
    }
}

/// A short, stable name for an engine's compilation settings.
fn engine_key(engine: &Engine) -> String {
    let mut h = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("{:016x}", h.finish())
}

#[expect(
    unsafe_code,
    reason = "mapping a precompiled artifact is unsafe by contract"
)]
fn map(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: `Component::deserialize_file` trusts its input to be an artifact produced
    // by `precompile_component` of a compatible engine and not to change while mapped.
    // This cache writes every file itself from `precompile_component` output, names it
    // by the engine's compatibility hash (and wasmtime re-checks compatibility on load),
    // publishes it by atomic rename and never writes to it again; the directory is
    // private to this user (0700).
    unsafe { Component::deserialize_file(engine, path) }
}
