//! The state machine as openraft sees it: committed entries applied to [`State`], plus
//! snapshots.
//!
//! The state lives in memory behind a lock shared with the API (reads) and the
//! reconcile driver. Snapshots are the JSON of the state, written to
//! `snapshot-<term>-<index>.json` by temporary file, fsync and rename, so a crash never
//! leaves a half-written snapshot; on start the newest snapshot is loaded and openraft
//! replays the log entries after it. Building a snapshot clones the state under the lock
//! and serializes it outside, so applying continues meanwhile.

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
use crate::command::Reply;
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
    pub fn open(dir: &Path) -> Result<StateMachine, StorageError> {
        std::fs::create_dir_all(dir).map_err(snap_write)?;
        let applied = match latest_snapshot(dir)? {
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
fn latest_snapshot(dir: &Path) -> Result<Option<(PathBuf, SnapshotFile)>, StorageError> {
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
    let file: SnapshotFile = serde_json::from_slice(&bytes)
        .map_err(|e| sm_read(format!("snapshot {} is unreadable: {e}", path.display())))?;
    Ok(Some((path, file)))
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
                    EntryPayload::Normal(command) => a.state.apply(&command),
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
        let file: SnapshotFile = serde_json::from_slice(&bytes).map_err(sm_read)?;
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
        let dir = self.dir.clone();
        let found = tokio::task::spawn_blocking(move || latest_snapshot(&dir))
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
