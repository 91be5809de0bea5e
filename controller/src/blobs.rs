//! Components kept by content on every controller's disk, outside the Raft log.
//!
//! A component of tens of MiB in a Raft entry stalls replication (openraft bounds an
//! AppendEntries RPC by the heartbeat interval) and makes every snapshot carry it. So
//! the log carries only a component's digest and size; the bytes live here, one file per
//! digest, written whole to a temporary file, fsync'd and renamed, so a file under its
//! digest's name is complete. The leader commits a digest only once a majority of the
//! voters hold the file (the same majority that makes the entry durable), and a
//! controller that lacks a committed digest fetches it from a peer (`node::blobs`).
//!
//! Bytes are written ([`Incoming`]) and read ([`Reader`]) in pieces, so no component
//! is ever held whole in memory, and hashed as they are written. A file is checked
//! against its name before it is first served, and again whenever it changed on disk
//! ([`BlobStore::verify`]): a corrupted one is removed, so the controller fetches a
//! good copy instead of serving it.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use dabba_spec::Digest;
use dabba_spec::digest::Hasher;

use crate::background::Pacer;

/// Files being written start with this; a crash leaves them, and opening removes them.
const INCOMING: &str = ".incoming-";

/// A blob is written back to disk (and synced) this much at a time.
const WRITEBACK_CHUNK: usize = 1 << 20;

/// A blob is read this much at a time.
pub const PIECE: usize = 1 << 20;

#[derive(Debug)]
pub struct BlobStore {
    dir: PathBuf,
    /// Files known to hash to their names, by digest, with the size and modification
    /// time they had then: a file is hashed once, not on every read.
    verified: Mutex<HashMap<Digest, (u64, SystemTime)>>,
    /// What blobs written may take of the disk (reading, from the page cache as a rule,
    /// measured harmless to the log: not paced).
    writes: Arc<Pacer>,
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

/// A blob being received: its bytes go to a temporary file, and into its digest, as
/// they come. [`BlobStore::keep`] makes it a blob; dropped without that, it leaves
/// nothing behind.
#[derive(Debug)]
pub struct Incoming {
    tmp: PathBuf,
    file: std::fs::File,
    hasher: Hasher,
    len: u64,
    unsynced: usize,
    pacer: Arc<Pacer>,
}

impl Incoming {
    /// Appends `piece`.
    pub fn write(&mut self, piece: &[u8]) -> Result<(), BlobError> {
        let io = |source| BlobError::Io {
            path: self.tmp.clone(),
            source,
        };
        self.pacer.pace(piece.len() as u64);
        self.file.write_all(piece).map_err(io)?;
        self.hasher.update(piece);
        self.len += piece.len() as u64;
        self.unsynced += piece.len();
        // Written back as it goes: a burst of 100 MiB of dirty pages would make the Raft
        // log's own fsync on the same disk wait behind it.
        if self.unsynced >= WRITEBACK_CHUNK {
            self.file.sync_data().map_err(io)?;
            self.unsynced = 0;
        }
        Ok(())
    }

    /// The bytes received so far.
    pub fn size(&self) -> u64 {
        self.len
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        // Gone already once kept (renamed).
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// A blob being read, in pieces of [`PIECE`] bytes.
#[derive(Debug)]
pub struct Reader {
    path: PathBuf,
    file: std::fs::File,
    len: u64,
    read: u64,
}

impl Reader {
    /// The blob's size.
    pub fn size(&self) -> u64 {
        self.len
    }

    /// The next piece; `None` after the last.
    pub fn next_piece(&mut self) -> Result<Option<Bytes>, BlobError> {
        let want = (self.len - self.read).min(PIECE as u64) as usize;
        let mut piece = BytesMut::zeroed(want);
        let mut filled = 0;
        while filled < want {
            match self.file.read(&mut piece[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(BlobError::Io {
                        path: self.path.clone(),
                        source,
                    });
                }
            }
        }
        if filled < want {
            return Err(BlobError::Io {
                path: self.path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file shrank while it was read",
                ),
            });
        }
        piece.truncate(filled);
        self.read += filled as u64;
        Ok((filled > 0).then(|| piece.freeze()))
    }
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
            verified: Mutex::default(),
            writes: Arc::new(Pacer::new(0)),
        })
    }

    /// The store, its blobs written at most `bandwidth` bytes a second, all together
    /// (0: as fast as they go).
    pub fn paced(self, bandwidth: u64) -> BlobStore {
        BlobStore {
            writes: Arc::new(Pacer::new(bandwidth)),
            ..self
        }
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    /// The size of the file held for `digest`, if there is one (not checked).
    pub fn size(&self, digest: &Digest) -> Option<u64> {
        std::fs::metadata(self.path(digest)).ok().map(|m| m.len())
    }

    /// A new blob, to be received piece by piece.
    pub fn incoming(&self) -> Result<Incoming, BlobError> {
        let tmp = self
            .dir
            .join(format!("{INCOMING}{:016x}", rand::random::<u64>()));
        let file = std::fs::File::create(&tmp).map_err(|source| BlobError::Io {
            path: tmp.clone(),
            source,
        })?;
        Ok(Incoming {
            tmp,
            file,
            hasher: Digest::hasher(),
            len: 0,
            unsynced: 0,
            pacer: self.writes.clone(),
        })
    }

    /// Keeps what `incoming` received as the blob `digest`, durably — if it hashes to
    /// `digest` (otherwise it is dropped, and nothing is kept).
    pub fn keep(&self, incoming: Incoming, digest: &Digest) -> Result<(), BlobError> {
        let actual = incoming.hasher.clone().finish();
        if actual != *digest {
            return Err(BlobError::Mismatch {
                expected: *digest,
                actual,
            });
        }
        incoming.file.sync_all().map_err(|source| BlobError::Io {
            path: incoming.tmp.clone(),
            source,
        })?;
        let path = self.path(digest);
        std::fs::rename(&incoming.tmp, &path).map_err(|source| BlobError::Io {
            path: path.clone(),
            source,
        })?;
        // The rename is durable once the directory is.
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| BlobError::Io {
                path: self.dir.clone(),
                source,
            })?;
        // Hashed as it was written.
        if let Some(stamp) = self.stamp(digest) {
            self.verified_files().insert(*digest, stamp);
        }
        Ok(())
    }

    fn verified_files(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, (u64, SystemTime)>> {
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The size and modification time of the file held for `digest`.
    fn stamp(&self, digest: &Digest) -> Option<(u64, SystemTime)> {
        let m = std::fs::metadata(self.path(digest)).ok()?;
        Some((m.len(), m.modified().ok()?))
    }

    /// Whether a good copy of `digest` is held: its file hashes to its name. A file is
    /// hashed when first asked about, and again only if it changed since (size or
    /// modification time); a corrupt one is removed, so a good copy can take its place.
    pub fn verify(&self, digest: &Digest) -> Result<bool, BlobError> {
        let Some(stamp) = self.stamp(digest) else {
            return Ok(false);
        };
        if self.verified_files().get(digest) == Some(&stamp) {
            return Ok(true);
        }
        let Some(mut reader) = self.read(digest)? else {
            return Ok(false);
        };
        let mut hasher = Digest::hasher();
        while let Some(piece) = reader.next_piece()? {
            hasher.update(&piece);
        }
        let actual = hasher.finish();
        if actual != *digest {
            let path = self.path(digest);
            tracing::warn!(%digest, %actual, path = %path.display(), "corrupt blob removed");
            self.remove(digest)?;
            return Ok(false);
        }
        self.verified_files().insert(*digest, stamp);
        Ok(true)
    }

    /// Stores `bytes` under `digest` durably, after checking they hash to it.
    pub fn put(&self, digest: &Digest, bytes: &[u8]) -> Result<(), BlobError> {
        let mut incoming = self.incoming()?;
        incoming.write(bytes)?;
        self.keep(incoming, digest)
    }

    /// The blob held for `digest`, to read in pieces (see [`BlobStore::verify`] for
    /// whether it is good); `None` if none is held.
    pub fn read(&self, digest: &Digest) -> Result<Option<Reader>, BlobError> {
        let path = self.path(digest);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(BlobError::Io { path, source }),
        };
        let len = file
            .metadata()
            .map_err(|source| BlobError::Io {
                path: path.clone(),
                source,
            })?
            .len();
        Ok(Some(Reader {
            path,
            file,
            len,
            read: 0,
        }))
    }

    /// The whole of the blob held for `digest`, checked: `None` if none is held, or the
    /// copy was corrupt (it is removed, so a good copy can take its place).
    pub fn get(&self, digest: &Digest) -> Result<Option<Vec<u8>>, BlobError> {
        if !self.verify(digest)? {
            return Ok(None);
        }
        let Some(mut reader) = self.read(digest)? else {
            return Ok(None);
        };
        let mut bytes = Vec::with_capacity(reader.size() as usize);
        while let Some(piece) = reader.next_piece()? {
            bytes.extend_from_slice(&piece);
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
        self.verified_files().remove(digest);
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
    fn a_blob_is_read_in_pieces_and_hashed_again_only_when_its_file_changed() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        // Two and a half pieces, received in odd-sized pieces.
        let bytes: Vec<u8> = (0..PIECE * 5 / 2).map(|i| (i % 249) as u8).collect();
        let digest = Digest::of(&bytes);
        let mut incoming = store.incoming().unwrap();
        for piece in bytes.chunks(100_003) {
            incoming.write(piece).unwrap();
        }
        assert_eq!(incoming.size(), bytes.len() as u64);
        store.keep(incoming, &digest).unwrap();

        let mut r = store.read(&digest).unwrap().unwrap();
        assert_eq!(r.size(), bytes.len() as u64);
        let mut pieces = Vec::new();
        while let Some(p) = r.next_piece().unwrap() {
            pieces.push(p);
        }
        assert_eq!(pieces.len(), 3);
        assert_eq!(pieces.concat(), bytes);
        assert!(store.verify(&digest).unwrap());

        // Corrupted behind the store's back: the file changed, so it is hashed again,
        // found corrupt and removed.
        let path = store.path(&digest);
        let mut on_disk = std::fs::read(&path).unwrap();
        on_disk[PIECE + 7] ^= 1;
        std::fs::write(&path, &on_disk).unwrap();
        assert!(!store.verify(&digest).unwrap());
        assert!(!path.exists());
        assert!(store.read(&digest).unwrap().is_none());
        assert!(!store.verify(&digest).unwrap());

        // A file cut short is corrupt too; and one that shrinks under a reader is an
        // error, never a short blob.
        store.put(&digest, &bytes).unwrap();
        let mut r = store.read(&digest).unwrap().unwrap();
        std::fs::write(&path, &bytes[..PIECE + 1]).unwrap();
        assert!(r.next_piece().unwrap().is_some());
        assert!(r.next_piece().is_err());
        assert!(!store.verify(&digest).unwrap());
    }

    #[test]
    fn an_upload_that_does_not_hash_to_its_name_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut incoming = store.incoming().unwrap();
        incoming.write(b"\0asm\x0d\0\x01\0").unwrap();
        let err = store.keep(incoming, &Digest::of(b"else")).unwrap_err();
        assert!(matches!(err, BlobError::Mismatch { .. }), "{err}");
        // Nor does one abandoned half-way (a broken connection).
        let mut incoming = store.incoming().unwrap();
        incoming.write(b"half").unwrap();
        drop(incoming);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
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
