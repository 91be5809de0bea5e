//! The state machine as openraft sees it: committed entries applied to [`State`], plus
//! snapshots.
//!
//! The state lives in memory behind a lock shared with the API (reads) and the
//! reconcile driver. Snapshots are the JSON of the state, written to
//! `snapshot-<term>-<index>.json` by temporary file, fsync and rename, so a crash never
//! leaves a half-written snapshot; on start the newest snapshot is loaded and openraft
//! replays the log entries after it. Building a snapshot clones the state under the lock
//! and serializes it outside, so applying continues meanwhile.
//!
//! Components are not in the state (see `crate::blobs`). Snapshots and log entries
//! written before they left the log carry their bytes: reading one moves the bytes into
//! the blob store, so a controller upgraded in place keeps every component it had.

use std::io::{Cursor, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, EntryPayload, RaftSnapshotBuilder, SnapshotMeta, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{Entry, LogId, NodeId, StorageError, TypeConfig};
use crate::blobs::BlobStore;
use crate::command::{Command, Reply};
use crate::state::State;

/// What is applied: the state, and the Raft bookkeeping that goes with it.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Applied {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership<NodeId, BasicNode>,
    pub state: State,
}

/// A handle to the applied state, shared by the API and the driver.
#[derive(Clone)]
pub struct Shared {
    applied: Arc<RwLock<Applied>>,
    /// The state's `version` after each apply, for watches.
    version: watch::Sender<u64>,
}

impl Shared {
    /// Reads the state.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.applied.read().expect("state lock poisoned").state)
    }

    /// The last applied log id.
    pub fn last_applied(&self) -> Option<LogId> {
        self.applied
            .read()
            .expect("state lock poisoned")
            .last_applied
    }

    /// A receiver that changes whenever the state's version does.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

#[derive(Clone)]
pub struct StateMachine {
    shared: Shared,
    dir: PathBuf,
    blobs: Arc<BlobStore>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<NodeId, BasicNode>,
    applied: Applied,
}

fn sm_read(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::read_state_machine(&std::io::Error::other(e.to_string())).into()
}

fn snap_write(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_snapshot(None, &std::io::Error::other(e.to_string())).into()
}

impl StateMachine {
    /// Opens the state machine in `dir`, loading the newest snapshot there.
    pub fn open(dir: &Path, blobs: Arc<BlobStore>) -> Result<StateMachine, StorageError> {
        std::fs::create_dir_all(dir).map_err(snap_write)?;
        let applied = match latest_snapshot(dir, &blobs)? {
            Some((_, file)) => file.applied,
            None => Applied::default(),
        };
        let (version, _) = watch::channel(applied.state.version);
        Ok(StateMachine {
            shared: Shared {
                applied: Arc::new(RwLock::new(applied)),
                version,
            },
            dir: dir.to_path_buf(),
            blobs,
        })
    }

    pub fn shared(&self) -> Shared {
        self.shared.clone()
    }

    fn publish(&self, version: u64) {
        self.shared.version.send_if_modified(|v| {
            let changed = *v != version;
            *v = version;
            changed
        });
    }
}

/// The newest `snapshot-*.json` in `dir`, if any.
fn latest_snapshot(
    dir: &Path,
    blobs: &BlobStore,
) -> Result<Option<(PathBuf, SnapshotFile)>, StorageError> {
    let mut newest: Option<(u64, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).map_err(sm_read)? {
        let path = entry.map_err(sm_read)?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(index) = name
            .strip_prefix("snapshot-")
            .and_then(|r| r.strip_suffix(".json"))
            .and_then(|r| r.rsplit('-').next())
            .and_then(|i| i.parse::<u64>().ok())
        else {
            continue;
        };
        if newest.as_ref().is_none_or(|(i, _)| index > *i) {
            newest = Some((index, path));
        }
    }
    let Some((_, path)) = newest else {
        return Ok(None);
    };
    let bytes = std::fs::read(&path).map_err(sm_read)?;
    let file = read_snapshot(&bytes, blobs)
        .map_err(|e| sm_read(format!("snapshot {} is unreadable: {e}", path.display())))?;
    Ok(Some((path, file)))
}

/// Parses a snapshot; components it carries inside (written before they left the log)
/// go to the blob store, and the state keeps their sizes.
fn read_snapshot(bytes: &[u8], blobs: &BlobStore) -> Result<SnapshotFile, String> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if let Some(map) = value
        .pointer_mut("/applied/state/blobs")
        .and_then(|b| b.as_object_mut())
    {
        for (digest, blob) in map.iter_mut() {
            let Some(encoded) = blob.as_str() else {
                continue;
            };
            let bytes = dabba_spec::kv::b64::decode(encoded)?;
            let parsed: dabba_spec::Digest = digest.parse().map_err(|e| format!("{e}"))?;
            blobs.put(&parsed, &bytes).map_err(|e| e.to_string())?;
            *blob = serde_json::json!({"size": bytes.len(), "stored_at": 0});
        }
    }
    serde_json::from_value(value).map_err(|e| e.to_string())
}

/// Writes a snapshot durably and removes older ones.
fn persist(dir: &Path, file: &SnapshotFile, bytes: &[u8]) -> Result<(), StorageError> {
    let (term, index) = file
        .meta
        .last_log_id
        .map_or((0, 0), |l| (l.leader_id.term, l.index));
    let name = format!("snapshot-{term}-{index}.json");
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(snap_write)?;
    f.write_all(bytes).map_err(snap_write)?;
    f.sync_all().map_err(snap_write)?;
    std::fs::rename(&tmp, dir.join(&name)).map_err(snap_write)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    for entry in std::fs::read_dir(dir).map_err(snap_write)?.flatten() {
        let n = entry.file_name();
        let n = n.to_string_lossy();
        if n.starts_with("snapshot-") && n != name {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let applied = self
            .shared
            .applied
            .read()
            .expect("state lock poisoned")
            .clone();
        let dir = self.dir.clone();
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership.clone(),
            snapshot_id: format!(
                "{}-{}",
                applied.last_applied.map_or(0, |l| l.leader_id.term),
                applied.last_applied.map_or(0, |l| l.index)
            ),
        };
        let file = SnapshotFile {
            meta: meta.clone(),
            applied,
        };
        let bytes = tokio::task::spawn_blocking(move || {
            let bytes = serde_json::to_vec(&file).map_err(snap_write)?;
            persist(&dir, &file, &bytes)?;
            Ok::<_, StorageError>(bytes)
        })
        .await
        .map_err(snap_write)??;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<NodeId, BasicNode>), StorageError> {
        let a = self.shared.applied.read().expect("state lock poisoned");
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Reply>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut replies = Vec::new();
        let version = {
            let mut a = self.shared.applied.write().expect("state lock poisoned");
            for entry in entries {
                a.last_applied = Some(entry.log_id);
                let reply = match entry.payload {
                    EntryPayload::Blank => Reply::Ok,
                    EntryPayload::Normal(command) => {
                        if let Command::PutBlob {
                            digest,
                            bytes: Some(bytes),
                            ..
                        } = &command
                        {
                            self.blobs.put(digest, bytes).map_err(sm_read)?;
                        }
                        a.state.apply(&command)
                    }
                    EntryPayload::Membership(m) => {
                        a.membership = StoredMembership::new(Some(entry.log_id), m);
                        Reply::Ok
                    }
                };
                replies.push(reply);
            }
            a.state.version
        };
        self.publish(version);
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let file = read_snapshot(&bytes, &self.blobs).map_err(sm_read)?;
        let dir = self.dir.clone();
        let installed = SnapshotFile {
            meta: meta.clone(),
            applied: Applied {
                last_applied: meta.last_log_id,
                membership: meta.last_membership.clone(),
                state: file.applied.state,
            },
        };
        let bytes = serde_json::to_vec(&installed).map_err(snap_write)?;
        let to_disk = SnapshotFile {
            meta: installed.meta.clone(),
            applied: installed.applied.clone(),
        };
        tokio::task::spawn_blocking(move || persist(&dir, &to_disk, &bytes))
            .await
            .map_err(snap_write)??;
        let version = installed.applied.state.version;
        *self.shared.applied.write().expect("state lock poisoned") = installed.applied;
        self.publish(version);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let (dir, blobs) = (self.dir.clone(), self.blobs.clone());
        let found = tokio::task::spawn_blocking(move || latest_snapshot(&dir, &blobs))
            .await
            .map_err(sm_read)??;
        Ok(match found {
            None => None,
            Some((path, file)) => {
                let bytes = std::fs::read(&path).map_err(sm_read)?;
                Some(Snapshot {
                    meta: file.meta,
                    snapshot: Box::new(Cursor::new(bytes)),
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, LogId as RaftLogId};

    use super::*;

    fn component(n: u8) -> (dabba_spec::Digest, Vec<u8>) {
        let bytes = [b"\0asm\x0d\0\x01\0".as_slice(), &[n; 100]].concat();
        (dabba_spec::Digest::of(&bytes), bytes)
    }

    /// A controller upgraded in place keeps the components its old snapshot and log
    /// carried inside: they move into the blob store as they are read.
    #[tokio::test]
    async fn components_inside_an_old_snapshot_or_log_entry_move_to_the_blob_store() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Arc::new(BlobStore::open(&dir.path().join("blobs")).unwrap());
        let snapshots = dir.path().join("snapshots");
        std::fs::create_dir_all(&snapshots).unwrap();

        // A snapshot as dabba wrote it while components rode in the log.
        let (in_snapshot, snapshot_bytes) = component(1);
        let log_id = RaftLogId::new(CommittedLeaderId::new(1, 1), 5);
        let meta = SnapshotMeta {
            last_log_id: Some(log_id),
            last_membership: StoredMembership::default(),
            snapshot_id: "1-5".into(),
        };
        let mut old = serde_json::to_value(SnapshotFile {
            meta,
            applied: Applied {
                last_applied: Some(log_id),
                ..Applied::default()
            },
        })
        .unwrap();
        old["applied"]["state"]["blobs"] = serde_json::json!({
            in_snapshot.to_string(): dabba_spec::kv::b64::encode(&snapshot_bytes)
        });
        std::fs::write(
            snapshots.join("snapshot-1-5.json"),
            serde_json::to_vec(&old).unwrap(),
        )
        .unwrap();
        let mut sm = StateMachine::open(&snapshots, blobs.clone()).unwrap();
        assert_eq!(
            sm.shared().read(|s| s.blob(&in_snapshot)),
            Some(snapshot_bytes.len() as u64)
        );
        assert_eq!(blobs.get(&in_snapshot).unwrap(), Some(snapshot_bytes));

        // A log entry as it was written then, applied after the snapshot.
        let (in_log, log_bytes) = component(2);
        let old_entry = format!(
            r#"{{"op":"put_blob","digest":"{in_log}","bytes":"{}"}}"#,
            dabba_spec::kv::b64::encode(&log_bytes)
        );
        let command: Command = serde_json::from_str(&old_entry).unwrap();
        let entry = Entry {
            log_id: RaftLogId::new(CommittedLeaderId::new(1, 1), 6),
            payload: EntryPayload::Normal(command),
        };
        sm.apply([entry]).await.unwrap();
        assert_eq!(
            sm.shared().read(|s| s.blob(&in_log)),
            Some(log_bytes.len() as u64)
        );
        assert_eq!(blobs.get(&in_log).unwrap(), Some(log_bytes));
        // What is written now carries no bytes.
        let now = serde_json::to_string(&Command::PutBlob {
            digest: in_log,
            size: 108,
            at: 1,
            bytes: None,
        })
        .unwrap();
        assert!(!now.contains("bytes"), "{now}");
    }
}
