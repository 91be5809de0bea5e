//! Components kept by content on every controller's disk, outside the Raft log.
//!
//! A component of tens of MiB in a Raft entry stalls replication (openraft bounds an
//! AppendEntries RPC by the heartbeat interval) and makes every snapshot carry it. So
//! the log carries only a component's digest and size; the bytes live here, one file per
//! digest, written whole to a temporary file, fsync'd and renamed, so a file under its
//! digest's name is complete. The leader commits a digest only once a majority of the
//! voters hold the file (the same majority that makes the entry durable), and a
//! controller that lacks a committed digest fetches it from a peer (`node::blob_sync`).
//!
//! A file is checked against its name whenever it is read: a corrupted one is removed
//! and reported missing, so the controller fetches a good copy instead of serving it.

use std::io::Write;
use std::path::{Path, PathBuf};

use dabba_spec::Digest;

/// Files being written start with this; a crash leaves them, and opening removes them.
const INCOMING: &str = ".incoming-";

/// A blob is written and synced this much at a time.
const WRITEBACK_CHUNK: usize = 4 << 20;

#[derive(Debug)]
pub struct BlobStore {
    dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("the bytes hash to {actual}, not {expected}")]
    Mismatch { expected: Digest, actual: Digest },
    #[error("blob store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl BlobStore {
    /// The store in `dir` (created if missing); leftovers of interrupted writes go.
    pub fn open(dir: &Path) -> Result<BlobStore, BlobError> {
        let io = |source| BlobError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            if entry.file_name().to_string_lossy().starts_with(INCOMING) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(BlobStore {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    /// The size of the file held for `digest`, if there is one (not checked).
    pub fn size(&self, digest: &Digest) -> Option<u64> {
        std::fs::metadata(self.path(digest)).ok().map(|m| m.len())
    }

    /// Stores `bytes` under `digest` durably, after checking they hash to it. Storing a
    /// digest already held rewrites nothing.
    pub fn put(&self, digest: &Digest, bytes: &[u8]) -> Result<(), BlobError> {
        let actual = Digest::of(bytes);
        if actual != *digest {
            return Err(BlobError::Mismatch {
                expected: *digest,
                actual,
            });
        }
        self.put_checked(digest, bytes)
    }

    /// [`BlobStore::put`] of bytes the caller has just checked against `digest` (hashing
    /// 100 MiB again costs a core a third of a second).
    pub fn put_checked(&self, digest: &Digest, bytes: &[u8]) -> Result<(), BlobError> {
        let path = self.path(digest);
        if self.size(digest) == Some(bytes.len() as u64) {
            return Ok(());
        }
        let tmp = self.dir.join(format!(
            "{INCOMING}{}-{}",
            rand::random::<u64>(),
            path.file_name().unwrap_or_default().to_string_lossy()
        ));
        let io = |source| BlobError::Io {
            path: tmp.clone(),
            source,
        };
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        // Written back as it goes: a burst of 100 MiB of dirty pages would make the Raft
        // log's own fsync on the same disk wait behind it.
        for chunk in bytes.chunks(WRITEBACK_CHUNK) {
            file.write_all(chunk).map_err(io)?;
            file.sync_data().map_err(io)?;
        }
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            BlobError::Io {
                path: path.clone(),
                source,
            }
        })?;
        // The rename is durable once the directory is.
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| BlobError::Io {
                path: self.dir.clone(),
                source,
            })
    }

    /// The bytes held for `digest`, checked against it: `None` if none are held, or the
    /// file was corrupt (it is removed, so a good copy can take its place).
    pub fn get(&self, digest: &Digest) -> Result<Option<Vec<u8>>, BlobError> {
        let path = self.path(digest);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(BlobError::Io { path, source }),
        };
        let actual = Digest::of(&bytes);
        if actual != *digest {
            tracing::warn!(%digest, %actual, path = %path.display(), "corrupt blob removed");
            std::fs::remove_file(&path).map_err(|source| BlobError::Io {
                path: path.clone(),
                source,
            })?;
            return Ok(None);
        }
        Ok(Some(bytes))
    }

    /// How long ago the file held for `digest` was written.
    pub fn age(&self, digest: &Digest) -> Option<std::time::Duration> {
        let written = std::fs::metadata(self.path(digest)).ok()?.modified().ok()?;
        Some(written.elapsed().unwrap_or_default())
    }

    /// Deletes the file held for `digest` (none held is no error).
    pub fn remove(&self, digest: &Digest) -> Result<(), BlobError> {
        let path = self.path(digest);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(BlobError::Io { path, source: e })
            }
            _ => Ok(()),
        }
    }

    /// Every digest held, with its file's size.
    pub fn list(&self) -> Vec<(Digest, u64)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let digest: Digest = format!("sha256:{name}").parse().ok()?;
                Some((digest, e.metadata().ok()?.len()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_is_kept_under_its_digest_and_a_corrupt_copy_is_never_served() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let bytes = b"\0asm\x0d\0\x01\0 a component".to_vec();
        let digest = Digest::of(&bytes);
        assert_eq!(store.get(&digest).unwrap(), None);
        assert_eq!(store.size(&digest), None);

        // Bytes that do not hash to the name are refused, and nothing is left behind.
        let other = Digest::of(b"other");
        assert!(matches!(
            store.put(&other, &bytes),
            Err(BlobError::Mismatch { .. })
        ));
        assert!(store.list().is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        store.put(&digest, &bytes).unwrap();
        store.put(&digest, &bytes).unwrap();
        assert_eq!(store.get(&digest).unwrap().as_deref(), Some(&bytes[..]));
        assert_eq!(store.list(), vec![(digest, bytes.len() as u64)]);

        // A flipped byte on disk: detected on read, the file removed, reported missing.
        let path = store.path(&digest);
        let mut on_disk = std::fs::read(&path).unwrap();
        on_disk[9] ^= 0xff;
        std::fs::write(&path, &on_disk).unwrap();
        assert_eq!(store.get(&digest).unwrap(), None);
        assert!(!path.exists());
        store.put(&digest, &bytes).unwrap();
        assert_eq!(store.get(&digest).unwrap().as_deref(), Some(&bytes[..]));
    }

    #[test]
    fn an_interrupted_write_leaves_nothing_that_counts_as_held() {
        let dir = tempfile::tempdir().unwrap();
        let half = dir.path().join(format!("{INCOMING}1-00"));
        std::fs::write(&half, b"half a component").unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        assert!(!half.exists());
        assert!(store.list().is_empty());
    }
}
