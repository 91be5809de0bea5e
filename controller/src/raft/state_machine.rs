//! The state machine as openraft sees it: committed entries applied to [`State`] and
//! to the workload store, plus snapshots.
//!
//! The state lives in memory behind a lock shared with the API (reads) and the
//! reconcile driver; workload buckets live on disk in the [`WorkloadStore`], written in
//! the same apply, under the same lock, so a reader holding the lock sees both at one
//! log index.
//!
//! A snapshot is one file, `snapshot-<term>-<index>.snap`: a header (the Raft metadata
//! and the state, as JSON), then the workload records streamed from one read
//! transaction (see [`workload::dump`]). It is written by temporary file, fsync and
//! rename, so a crash never leaves half of one, and it is sent to a follower in chunks
//! straight from the file and received into a file: no snapshot is ever whole in memory.
//! A restart reads only the header — the workload store on disk already holds the
//! records (it is made durable before the snapshot is) — and openraft replays the log
//! after it; log entries the workload store already holds are not applied to it again.
//!
//! Snapshots come every few thousand entries, and an entry can carry a megabyte of
//! workload writes: replaying gigabytes of log after a restart would make restart time
//! grow with the data after all. So between snapshots the state alone (small: no
//! workload keys) is written as a checkpoint, `state-<term>-<index>.json`, after every
//! [`CHECKPOINT_BYTES`] of workload writes or [`CHECKPOINT_ENTRIES`] entries, with the
//! workload store made durable first; a restart starts from the newest of checkpoint
//! and snapshot, and replays at most that much log.
//!
//! Components are not in the state (see `crate::blobs`). Snapshots (JSON, before the
//! workload store) and log entries written before they left the log carry their bytes:
//! reading one moves the bytes into the blob store, so a controller upgraded in place
//! keeps every component it had, and every workload key.

use std::io::{BufRead, BufReader, BufWriter, Read, Seek, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use dabba_spec::kv::KvError;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, EntryPayload, RaftSnapshotBuilder, SnapshotMeta, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::workload::{self, Tables, View, WorkloadStore};
use super::{Entry, LogId, NodeId, StorageError, TypeConfig};
use crate::blobs::BlobStore;
use crate::command::{Command, Reply};
use crate::state::{AlreadyApplied, State};

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
    workload: Arc<WorkloadStore>,
    /// The state's `version` after each apply, for watches.
    version: watch::Sender<u64>,
    /// Snapshots installed from the leader since this process started.
    installed: Arc<std::sync::atomic::AtomicU64>,
}

impl Shared {
    /// Reads the state.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.applied.read().expect("state lock poisoned").state)
    }

    /// A consistent view of the workload buckets, as applied so far.
    pub fn workload(&self) -> Result<View, KvError> {
        self.workload.view()
    }

    /// Snapshots installed from the leader since this process started.
    pub fn snapshots_installed(&self) -> u64 {
        self.installed.load(std::sync::atomic::Ordering::Relaxed)
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
    /// The file a snapshot is being received into.
    receiving: Option<PathBuf>,
    /// Workload bytes written and entries applied since the last checkpoint began.
    since_checkpoint: (u64, u64),
    /// Set while a checkpoint is being written.
    checkpointing: Arc<std::sync::atomic::AtomicBool>,
}

/// The head of a snapshot file: everything but the workload records.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<NodeId, BasicNode>,
    applied: Applied,
}

/// Workload bytes written between checkpoints at most (see the module docs).
pub const CHECKPOINT_BYTES: u64 = 64 << 20;
/// Entries applied between checkpoints at most.
pub const CHECKPOINT_ENTRIES: u64 = 1_000;

/// The first bytes of a snapshot file, so a file of another kind is refused by name.
const MAGIC: &[u8] = b"dabba-snapshot 2\n";

fn sm_read(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::read_state_machine(&std::io::Error::other(e.to_string())).into()
}

fn sm_write(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_state_machine(&std::io::Error::other(e.to_string())).into()
}

fn snap_write(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_snapshot(None, &std::io::Error::other(e.to_string())).into()
}

fn snap_read(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::read_snapshot(None, &std::io::Error::other(e.to_string())).into()
}

impl StateMachine {
    /// Opens the state machine: snapshots in `dir`, workload buckets in the file
    /// `workload` read through `cache` bytes of cache. The state comes from the newest snapshot's header; the workload
    /// store is refilled from the snapshot only if it holds less than the snapshot (a
    /// new or replaced file).
    pub fn open(
        dir: &Path,
        workload: &Path,
        cache: u64,
        blobs: Arc<BlobStore>,
    ) -> Result<StateMachine, StorageError> {
        std::fs::create_dir_all(dir).map_err(snap_write)?;
        for entry in std::fs::read_dir(dir).map_err(sm_read)?.flatten() {
            // A snapshot being received, or a file being written, when the process stopped.
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("receiving-") || name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let store = Arc::new(WorkloadStore::open(workload, cache).map_err(sm_read)?);
        store.sync_when_idle().map_err(sm_read)?;
        let applied = match newest_snapshot(dir).map_err(sm_read)? {
            None => Applied::default(),
            Some(Found::Legacy(path)) => upgrade(dir, &path, &blobs, &store)?,
            Some(Found::Current(path)) => {
                let mut reader = BufReader::new(std::fs::File::open(&path).map_err(sm_read)?);
                let file = read_header(&mut reader)
                    .map_err(|e| sm_read(format!("snapshot {}: {e}", path.display())))?;
                let index = file.meta.last_log_id.map(|l| l.index);
                if let Some(index) = index
                    && store.applied().map_err(sm_read)? < Some(index)
                {
                    tracing::info!(snapshot = %path.display(), "refilling the workload store from the snapshot");
                    store
                        .replace(&mut reader, index)
                        .map_err(|e| sm_read(format!("snapshot {}: {e}", path.display())))?;
                }
                file.applied
            }
        };
        // A checkpoint newer than the snapshot counts only if the store holds what it
        // says (a store refilled from the snapshot above does not).
        let held = store.applied().map_err(sm_read)?;
        let index = |a: &Applied| a.last_applied.map(|l| l.index);
        let applied = match newest_checkpoint(dir)? {
            Some(c) if index(&c) > index(&applied) && index(&c) <= held => c,
            _ => applied,
        };
        let (version, _) = watch::channel(applied.state.version);
        Ok(StateMachine {
            shared: Shared {
                applied: Arc::new(RwLock::new(applied)),
                workload: store,
                version,
                installed: Arc::default(),
            },
            dir: dir.to_path_buf(),
            blobs,
            receiving: None,
            since_checkpoint: (0, 0),
            checkpointing: Arc::default(),
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

enum Found {
    Current(PathBuf),
    /// A JSON snapshot, written before the workload store existed.
    Legacy(PathBuf),
}

/// The newest snapshot in `dir`, if any.
fn newest_snapshot(dir: &Path) -> std::io::Result<Option<Found>> {
    let mut newest: Option<(u64, Found)> = None;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(rest) = name.strip_prefix("snapshot-") else {
            continue;
        };
        let (rest, legacy) = match (rest.strip_suffix(".snap"), rest.strip_suffix(".json")) {
            (Some(r), _) => (r, false),
            (_, Some(r)) => (r, true),
            _ => continue,
        };
        let Some(index) = rest.rsplit('-').next().and_then(|i| i.parse::<u64>().ok()) else {
            continue;
        };
        if newest.as_ref().is_none_or(|(i, _)| index > *i) {
            let found = if legacy {
                Found::Legacy(path)
            } else {
                Found::Current(path)
            };
            newest = Some((index, found));
        }
    }
    Ok(newest.map(|(_, f)| f))
}

/// The newest checkpoint in `dir`, if any.
fn newest_checkpoint(dir: &Path) -> Result<Option<Applied>, StorageError> {
    let Some((_, path)) = checkpoints(dir).map_err(sm_read)?.pop() else {
        return Ok(None);
    };
    let bytes = std::fs::read(&path).map_err(sm_read)?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| sm_read(format!("checkpoint {} is unreadable: {e}", path.display())))
}

/// The checkpoints in `dir`, oldest first.
fn checkpoints(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let index = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("state-")?.strip_suffix(".json"))
            .and_then(|r| r.rsplit('-').next()?.parse::<u64>().ok());
        if let Some(index) = index {
            found.push((index, path));
        }
    }
    found.sort();
    Ok(found)
}

/// What one batch of entries did.
struct Batch {
    replies: Vec<Reply>,
    /// Workload bytes written.
    written: u64,
    /// The state's version after it.
    version: u64,
}

/// Applies `entries` to the state and, in one transaction, to the workload store.
/// Entries that write nothing to the workload (heartbeats, most of the log) leave the
/// store alone: a commit, even an empty one, leaves pages in redb's write buffer, and
/// while any are there every read that misses redb's cache pays for a walk of that
/// buffer (see [`WorkloadStore::sync_when_idle`]). The store's own record of what it
/// holds then lags behind the state's, which is safe: replaying an entry that writes
/// nothing changes nothing. Blocking. The store's writer is taken before the state's lock: a durable commit in
/// progress (a checkpoint's, a snapshot's) holds the writer through its fsync, and the
/// state's readers must not wait for that.
fn apply_entries(
    shared: &Shared,
    blobs: &BlobStore,
    entries: Vec<Entry>,
) -> Result<Batch, StorageError> {
    let tx = shared.workload.begin().map_err(sm_write)?;
    let mut a = shared.applied.write().expect("state lock poisoned");
    let mut replies = Vec::with_capacity(entries.len());
    let written = {
        let mut tables = Tables::open(&tx).map_err(sm_write)?;
        let held = tables.applied().map_err(sm_read)?;
        let mut last = held;
        for entry in entries {
            a.last_applied = Some(entry.log_id);
            let index = entry.log_id.index;
            let reply = match entry.payload {
                EntryPayload::Blank => Reply::Ok,
                EntryPayload::Normal(command) => {
                    if let Command::PutBlob {
                        digest,
                        bytes: Some(bytes),
                        ..
                    } = &command
                    {
                        blobs.put(digest, bytes).map_err(sm_write)?;
                    }
                    if held.is_some_and(|h| index <= h) {
                        a.state.apply_with(&command, &mut AlreadyApplied)
                    } else {
                        a.state.apply_with(&command, &mut tables)
                    }
                }
                EntryPayload::Membership(m) => {
                    a.membership = StoredMembership::new(Some(entry.log_id), m);
                    Reply::Ok
                }
            };
            if let Some(e) = tables.failed() {
                return Err(sm_write(format!(
                    "the workload store failed applying log index {index}: {e}"
                )));
            }
            last = last.max(Some(index));
            replies.push(reply);
        }
        if !tables.touched {
            None
        } else {
            if let Some(last) = last {
                tables.set_applied(last).map_err(sm_write)?;
            }
            Some(tables.written)
        }
    };
    let written = match written {
        Some(written) => {
            shared.workload.commit(tx).map_err(sm_write)?;
            written
        }
        None => {
            tx.abort().map_err(sm_write)?;
            0
        }
    };
    Ok(Batch {
        replies,
        written,
        version: a.state.version,
    })
}

/// Writes a checkpoint of `applied`: first the workload store is made durable (it holds
/// at least what `applied` has applied), then the file, by temporary file, fsync and
/// rename; older checkpoints go.
fn write_checkpoint(dir: &Path, store: &WorkloadStore, applied: &Applied) -> Result<(), String> {
    let (term, index) = applied
        .last_applied
        .map_or((0, 0), |l| (l.leader_id.term, l.index));
    store
        .sync(applied.last_applied.map(|l| l.index))
        .map_err(|e| e.to_string())?;
    let name = format!("state-{term}-{index}.json");
    let tmp = dir.join(format!("{name}.tmp"));
    let mut out = BufWriter::new(std::fs::File::create(&tmp).map_err(|e| e.to_string())?);
    serde_json::to_writer(&mut out, applied).map_err(|e| e.to_string())?;
    let file = out.into_inner().map_err(|e| e.to_string())?;
    file.sync_all().map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, dir.join(&name)).map_err(|e| e.to_string())?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    for (older, path) in checkpoints(dir).map_err(|e| e.to_string())? {
        if older < index {
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(())
}

/// Reads a snapshot file's header, leaving `reader` at the first workload record.
fn read_header(reader: &mut impl Read) -> Result<SnapshotFile, String> {
    let mut magic = vec![0; MAGIC.len()];
    reader
        .read_exact(&mut magic)
        .map_err(|e| format!("too short for a snapshot: {e}"))?;
    if magic != MAGIC {
        return Err("not a dabba snapshot (its first bytes are wrong)".into());
    }
    let mut len = [0; 8];
    reader
        .read_exact(&mut len)
        .map_err(|e| format!("header cut short: {e}"))?;
    let len = u64::from_le_bytes(len);
    let mut header = Vec::new();
    reader
        .take(len)
        .read_to_end(&mut header)
        .map_err(|e| format!("header cut short: {e}"))?;
    if header.len() as u64 != len {
        return Err(format!("header cut short: {} of {len} bytes", header.len()));
    }
    serde_json::from_slice(&header).map_err(|e| format!("header is unreadable: {e}"))
}

/// Writes a snapshot file: the header, then the workload records of `view`.
fn write_snapshot(
    out: &mut impl std::io::Write,
    file: &SnapshotFile,
    view: &View,
) -> Result<workload::Counts, String> {
    let header = serde_json::to_vec(file).map_err(|e| e.to_string())?;
    out.write_all(MAGIC).map_err(|e| e.to_string())?;
    out.write_all(&(header.len() as u64).to_le_bytes())
        .map_err(|e| e.to_string())?;
    out.write_all(&header).map_err(|e| e.to_string())?;
    workload::dump(view, out).map_err(|e| e.to_string())
}

fn snapshot_name(meta: &SnapshotMeta<NodeId, BasicNode>) -> String {
    let (term, index) = meta
        .last_log_id
        .map_or((0, 0), |l| (l.leader_id.term, l.index));
    format!("snapshot-{term}-{index}.snap")
}

/// Bytes a background file write may leave unsynced. Written all at once, a snapshot of
/// gigabytes fills the page cache with dirty pages; when the kernel writes them back,
/// the Raft log's fsyncs queue behind them for seconds, heartbeats go unanswered and
/// the controllers start electing. Synced as it goes, the backlog stays this small.
const PACE_BYTES: u64 = 8 << 20;

/// A file written in the background, synced every [`PACE_BYTES`].
struct Paced {
    file: std::fs::File,
    unsynced: u64,
}

impl Paced {
    fn new(file: std::fs::File) -> Paced {
        Paced { file, unsynced: 0 }
    }
}

impl std::io::Write for Paced {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.unsynced += n as u64;
        if self.unsynced >= PACE_BYTES {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Makes the written file `tmp` the snapshot `name`: fsync, rename, fsync the directory,
/// and remove every older snapshot.
fn persist(dir: &Path, tmp: &Path, name: &str) -> Result<(), StorageError> {
    std::fs::File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(snap_write)?;
    std::fs::rename(tmp, dir.join(name)).map_err(snap_write)?;
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

/// Moves a JSON snapshot written before the workload store into the current form: its
/// components into the blob store, its buckets and remembered writes into the
/// workload store, and the rest into a snapshot file of the current kind.
fn upgrade(
    dir: &Path,
    path: &Path,
    blobs: &BlobStore,
    store: &WorkloadStore,
) -> Result<Applied, StorageError> {
    let unreadable = |e: String| sm_read(format!("snapshot {} is unreadable: {e}", path.display()));
    let bytes = std::fs::read(path).map_err(sm_read)?;
    let mut value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| unreadable(e.to_string()))?;
    if let Some(map) = value
        .pointer_mut("/applied/state/blobs")
        .and_then(|b| b.as_object_mut())
    {
        for (digest, blob) in map.iter_mut() {
            let Some(encoded) = blob.as_str() else {
                continue;
            };
            let bytes = dabba_spec::kv::b64::decode(encoded).map_err(&unreadable)?;
            let parsed: dabba_spec::Digest =
                digest.parse().map_err(|e| unreadable(format!("{e}")))?;
            blobs.put(&parsed, &bytes).map_err(sm_write)?;
            *blob = serde_json::json!({"size": bytes.len(), "stored_at": 0});
        }
    }
    let legacy = value
        .pointer_mut("/applied/state")
        .and_then(|s| s.as_object_mut())
        .map(|state| LegacyWorkload {
            buckets: state.remove("kv"),
            remembered: state.remove("kv_writes"),
            order: state.remove("kv_write_order"),
        });
    let file: SnapshotFile =
        serde_json::from_value(value).map_err(|e| unreadable(e.to_string()))?;
    if let (Some(legacy), Some(index)) = (legacy, file.meta.last_log_id.map(|l| l.index))
        && store.applied().map_err(sm_read)? < Some(index)
    {
        legacy.move_into(store, index).map_err(&unreadable)?;
    }
    let tmp = dir.join("snapshot.upgrading");
    let view = store.view().map_err(sm_read)?;
    let mut out = BufWriter::new(std::fs::File::create(&tmp).map_err(snap_write)?);
    write_snapshot(&mut out, &file, &view).map_err(snap_write)?;
    out.flush().map_err(snap_write)?;
    drop(out);
    persist(dir, &tmp, &snapshot_name(&file.meta))?;
    Ok(file.applied)
}

/// The workload parts of a JSON snapshot: buckets (base64 values) and remembered writes.
struct LegacyWorkload {
    buckets: Option<serde_json::Value>,
    remembered: Option<serde_json::Value>,
    order: Option<serde_json::Value>,
}

impl LegacyWorkload {
    fn move_into(self, store: &WorkloadStore, index: u64) -> Result<(), String> {
        use crate::state::Workload as _;
        type Buckets =
            std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>;
        let buckets: Buckets = match self.buckets {
            Some(v) => serde_json::from_value(v).map_err(|e| format!("kv: {e}"))?,
            None => Buckets::new(),
        };
        let mut remembered: std::collections::BTreeMap<String, crate::state::Remembered> =
            match self.remembered {
                Some(v) => serde_json::from_value(v).map_err(|e| format!("kv_writes: {e}"))?,
                None => Default::default(),
            };
        let order: Vec<String> = match self.order {
            Some(v) => serde_json::from_value(v).map_err(|e| format!("kv_write_order: {e}"))?,
            None => Vec::new(),
        };
        let tx = store.begin().map_err(|e| e.to_string())?;
        {
            let mut tables = Tables::open(&tx).map_err(|e| e.to_string())?;
            for (bucket, keys) in &buckets {
                for (key, value) in keys {
                    let value = dabba_spec::kv::b64::decode(value)?;
                    tables
                        .store(bucket, key, Some(&value))
                        .map_err(|e| e.to_string())?;
                }
            }
            for id in order {
                if let Some(outcome) = remembered.remove(&id) {
                    tables.remember(&id, &outcome).map_err(|e| e.to_string())?;
                }
            }
            tables.set_applied(index).map_err(|e| e.to_string())?;
        }
        store.commit(tx).map_err(|e| e.to_string())?;
        store.sync(None).map_err(|e| e.to_string())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // The state and a view of the workload store at one log index. Right after a
        // restart the store can be ahead of the state (it kept entries the state is
        // still replaying): wait for the state to catch up.
        let (applied, view) = loop {
            {
                let a = self.shared.applied.read().expect("state lock poisoned");
                let view = self.shared.workload.view().map_err(snap_read)?;
                if view.applied() <= a.last_applied.map(|l| l.index) {
                    break (a.clone(), view);
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
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
        // The log before this snapshot may go once it is written: what the store holds
        // must not depend on that log any more. (At normal priority: it holds the
        // store's one writer, which the next apply waits for.)
        let store = self.shared.workload.clone();
        let held = meta.last_log_id.map(|l| l.index);
        tokio::task::spawn_blocking(move || store.sync(held))
            .await
            .map_err(snap_write)?
            .map_err(snap_write)?;
        let dir = self.dir.clone();
        let path = crate::background::at_low_priority("dabba-snapshot", move || {
            let name = snapshot_name(&file.meta);
            let tmp = dir.join(format!("{name}.tmp"));
            let paced = Paced::new(std::fs::File::create(&tmp).map_err(snap_write)?);
            let mut out = BufWriter::with_capacity(1 << 20, paced);
            let counts = write_snapshot(&mut out, &file, &view).map_err(snap_write)?;
            out.flush().map_err(snap_write)?;
            drop(out);
            persist(&dir, &tmp, &name)?;
            tracing::debug!(snapshot = %name, entries = counts.entries, "snapshot written");
            Ok::<_, StorageError>(dir.join(name))
        })
        .await?;
        let data = tokio::fs::File::open(&path).await.map_err(snap_read)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(data),
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
        // The store's writes and fsyncs block: they run off the async workers, so a
        // slow disk delays the applies and nothing else (heartbeats, the API).
        let entries: Vec<Entry> = entries.into_iter().collect();
        let (shared, blobs) = (self.shared.clone(), self.blobs.clone());
        let applied = tokio::task::spawn_blocking(move || apply_entries(&shared, &blobs, entries))
            .await
            .map_err(sm_write)??;
        self.since_checkpoint.0 += applied.written;
        self.since_checkpoint.1 += applied.replies.len() as u64;
        let (bytes, entries) = self.since_checkpoint;
        let due = bytes >= CHECKPOINT_BYTES || entries >= CHECKPOINT_ENTRIES;
        if due
            && !self
                .checkpointing
                .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            self.since_checkpoint = (0, 0);
            // The applies are sequential: this is the state the last one left.
            let state = self
                .shared
                .applied
                .read()
                .expect("state lock poisoned")
                .clone();
            let (dir, store, busy) = (
                self.dir.clone(),
                self.shared.workload.clone(),
                self.checkpointing.clone(),
            );
            std::thread::Builder::new()
                .name("dabba-checkpoint".into())
                .spawn(move || {
                    if let Err(e) = write_checkpoint(&dir, &store, &state) {
                        tracing::warn!(error = %e, "writing a state checkpoint");
                    }
                    busy.store(false, std::sync::atomic::Ordering::Release);
                })
                .map_err(sm_write)?;
        }
        self.publish(applied.version);
        Ok(applied.replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = self.dir.join(format!("receiving-{nanos}"));
        if let Some(abandoned) = self.receiving.take() {
            let _ = tokio::fs::remove_file(abandoned).await;
        }
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(snap_write)?;
        self.receiving = Some(path);
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let mut file = snapshot.into_std().await;
        let (dir, store, meta) = (self.dir.clone(), self.shared.workload.clone(), meta.clone());
        let received = self.receiving.take();
        let leftover = received.clone();
        let installed = tokio::task::spawn_blocking(move || {
            file.flush().map_err(snap_write)?;
            file.rewind().map_err(snap_read)?;
            let mut reader = BufReader::with_capacity(1 << 20, file);
            let header = read_header(&mut reader).map_err(snap_read)?;
            // Keep the received file as this controller's own snapshot (a follower that
            // becomes leader sends it on) if it is the file we received into; a
            // snapshot handed over another way is written anew from the store.
            let received = match received {
                Some(path) if same_file(&path, reader.get_ref()) => Some(path),
                Some(other) => {
                    let _ = std::fs::remove_file(other);
                    None
                }
                None => None,
            };
            let index = meta.last_log_id.map_or(0, |l| l.index);
            let counts = store
                .replace(&mut reader, index)
                .map_err(|e| snap_read(format!("installing snapshot {}: {e}", meta.snapshot_id)))?;
            ensure_consumed(&mut reader).map_err(snap_read)?;
            let applied = Applied {
                last_applied: meta.last_log_id,
                membership: meta.last_membership.clone(),
                state: header.applied.state,
            };
            let name = snapshot_name(&meta);
            match received {
                Some(path) => persist(&dir, &path, &name)?,
                None => {
                    let tmp = dir.join(format!("{name}.tmp"));
                    let view = store.view().map_err(snap_read)?;
                    let mut out = BufWriter::new(std::fs::File::create(&tmp).map_err(snap_write)?);
                    let file = SnapshotFile {
                        meta: meta.clone(),
                        applied: applied.clone(),
                    };
                    write_snapshot(&mut out, &file, &view).map_err(snap_write)?;
                    out.flush().map_err(snap_write)?;
                    drop(out);
                    persist(&dir, &tmp, &name)?;
                }
            }
            tracing::info!(snapshot = %name, entries = counts.entries, "snapshot installed");
            Ok::<_, StorageError>(applied)
        })
        .await
        .map_err(snap_write)
        .flatten()
        .inspect_err(|_| {
            // A snapshot that did not install is of no use: it comes again.
            if let Some(path) = leftover {
                let _ = std::fs::remove_file(path);
            }
        })?;
        let version = installed.state.version;
        *self.shared.applied.write().expect("state lock poisoned") = installed;
        self.shared
            .installed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.publish(version);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let dir = self.dir.clone();
        let found = tokio::task::spawn_blocking(move || {
            let Some(Found::Current(path)) = newest_snapshot(&dir).map_err(sm_read)? else {
                return Ok(None);
            };
            let mut reader = BufReader::new(std::fs::File::open(&path).map_err(sm_read)?);
            let file = read_header(&mut reader)
                .map_err(|e| sm_read(format!("snapshot {}: {e}", path.display())))?;
            Ok::<_, StorageError>(Some((path, file.meta)))
        })
        .await
        .map_err(sm_read)??;
        Ok(match found {
            None => None,
            Some((path, meta)) => Some(Snapshot {
                meta,
                snapshot: Box::new(tokio::fs::File::open(&path).await.map_err(sm_read)?),
            }),
        })
    }
}

/// Whether `file` is the file at `path`.
fn same_file(path: &Path, file: &std::fs::File) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (std::fs::metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Refuses a snapshot with bytes after its end record (not one this code wrote).
fn ensure_consumed(reader: &mut impl BufRead) -> Result<(), String> {
    if reader.fill_buf().map_err(|e| e.to_string())?.is_empty() {
        Ok(())
    } else {
        Err("the snapshot has bytes after its last record".into())
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, LogId as RaftLogId};

    use super::*;

    /// A paced file holds exactly what went in, across several syncs and writes that
    /// straddle them.
    #[test]
    fn a_paced_file_holds_every_byte_written_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("paced");
        let data: Vec<u8> = (0..(2 * PACE_BYTES + 12_345))
            .map(|i| (i % 251) as u8)
            .collect();
        let mut out = Paced::new(std::fs::File::create(&path).unwrap());
        for piece in data.chunks(3 << 20) {
            out.write_all(piece).unwrap();
        }
        out.flush().unwrap();
        assert!(out.unsynced < PACE_BYTES, "synced as it went");
        drop(out);
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    fn component(n: u8) -> (dabba_spec::Digest, Vec<u8>) {
        let bytes = [b"\0asm\x0d\0\x01\0".as_slice(), &[n; 100]].concat();
        (dabba_spec::Digest::of(&bytes), bytes)
    }

    /// A controller upgraded in place keeps the components its old snapshot and log
    /// carried inside (they move into the blob store as they are read), and the
    /// workload keys and remembered writes its JSON snapshot held (they move into the
    /// workload store).
    #[tokio::test]
    async fn components_and_keys_inside_an_old_snapshot_or_log_entry_move_to_their_stores() {
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
        old["applied"]["state"]["kv"] = serde_json::json!({
            "default/ledger": {"n": dabba_spec::kv::b64::encode(b"41"), "bin": "AJ//"}
        });
        old["applied"]["state"]["kv_writes"] = serde_json::json!({
            "pay-1": {"Ok": {"counter": 41}}
        });
        old["applied"]["state"]["kv_write_order"] = serde_json::json!(["pay-1"]);
        std::fs::write(
            snapshots.join("snapshot-1-5.json"),
            serde_json::to_vec(&old).unwrap(),
        )
        .unwrap();
        let mut sm = StateMachine::open(
            &snapshots,
            &dir.path().join("kv.redb"),
            workload::DEFAULT_CACHE,
            blobs.clone(),
        )
        .unwrap();
        assert_eq!(
            sm.shared().read(|s| s.blob(&in_snapshot)),
            Some(snapshot_bytes.len() as u64)
        );
        assert_eq!(blobs.get(&in_snapshot).unwrap(), Some(snapshot_bytes));
        let view = sm.shared().workload().unwrap();
        assert_eq!(
            view.read_many("default/ledger", &["n".into(), "bin".into()])
                .unwrap(),
            vec![Some(b"41".to_vec()), Some(vec![0, 159, 255])]
        );
        assert_eq!(view.applied(), Some(5));
        // The JSON snapshot is replaced by one of the current kind.
        let names: Vec<String> = std::fs::read_dir(&snapshots)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["snapshot-1-5.snap"]);
        // The remembered write is still answered, not applied again.
        let retry = Entry {
            log_id: RaftLogId::new(CommittedLeaderId::new(1, 1), 6),
            payload: EntryPayload::Normal(increment("default/ledger", "n", Some("pay-1"))),
        };
        assert_eq!(
            sm.apply([retry]).await.unwrap(),
            [Reply::Kv {
                result: Ok(dabba_spec::kv::Outcome::Counter(41))
            }]
        );

        // A log entry as it was written then, applied after the snapshot.
        let (in_log, log_bytes) = component(2);
        let old_entry = format!(
            r#"{{"op":"put_blob","digest":"{in_log}","bytes":"{}"}}"#,
            dabba_spec::kv::b64::encode(&log_bytes)
        );
        let command: Command = serde_json::from_str(&old_entry).unwrap();
        let entry = Entry {
            log_id: RaftLogId::new(CommittedLeaderId::new(1, 1), 7),
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

    fn increment(bucket: &str, key: &str, id: Option<&str>) -> Command {
        Command::Kv {
            bucket: bucket.into(),
            write: dabba_spec::kv::Write::Increment {
                key: key.into(),
                delta: 1,
            },
            id: id.map(String::from),
            fence: None,
        }
    }

    fn entries(from: u64, to: u64) -> Vec<Entry> {
        (from..=to)
            .map(|i| Entry {
                log_id: RaftLogId::new(CommittedLeaderId::new(1, 1), i),
                payload: EntryPayload::Normal(Command::Batch {
                    commands: vec![
                        increment("b", "n", None),
                        increment("b", "m", Some(&format!("w{i}"))),
                    ],
                }),
            })
            .collect()
    }

    fn counter(sm: &StateMachine, key: &str) -> i64 {
        let v = sm
            .shared()
            .workload()
            .unwrap()
            .read_many("b", &[key.into()])
            .unwrap();
        String::from_utf8(v[0].clone().unwrap())
            .unwrap()
            .parse()
            .unwrap()
    }

    fn open(dir: &Path) -> StateMachine {
        let blobs = Arc::new(BlobStore::open(&dir.join("blobs")).unwrap());
        StateMachine::open(
            &dir.join("snapshots"),
            &dir.join("kv.redb"),
            workload::DEFAULT_CACHE,
            blobs,
        )
        .unwrap()
    }

    /// After a restart openraft replays the log after the last snapshot; entries the
    /// workload store already held are not applied to it twice (an increment applied
    /// twice is a wrong balance), and those it lacks are.
    #[tokio::test]
    async fn a_replayed_entry_is_applied_to_the_workload_store_once() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut sm = open(dir.path());
            sm.apply(entries(1, 10)).await.unwrap();
            sm.get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .unwrap();
            sm.apply(entries(11, 25)).await.unwrap();
            assert_eq!(counter(&sm, "n"), 25);
        }
        let mut sm = open(dir.path());
        // The state restarts at the snapshot; the store holds at least that much.
        assert_eq!(sm.shared().last_applied().map(|l| l.index), Some(10));
        let held = sm.shared().workload().unwrap().applied().unwrap();
        assert!(held >= 10, "the store holds {held}");
        sm.apply(entries(11, 30)).await.unwrap();
        assert_eq!(counter(&sm, "n"), 30);
        assert_eq!(counter(&sm, "m"), 30);
        assert_eq!(sm.shared().workload().unwrap().applied(), Some(30));
    }

    /// A snapshot of `n` entries built by one controller, and another that applied 3.
    async fn snapshot_and_receiver(
        n: u64,
    ) -> (Snapshot<TypeConfig>, (tempfile::TempDir, StateMachine)) {
        let a_dir = tempfile::tempdir().unwrap();
        let mut a = open(a_dir.path());
        a.apply(entries(1, n)).await.unwrap();
        let snapshot = a
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let b_dir = tempfile::tempdir().unwrap();
        let mut b = open(b_dir.path());
        b.apply(entries(1, 3)).await.unwrap();
        // The snapshot is an open file: it reads on after `a`'s directory is gone.
        (snapshot, (b_dir, b))
    }

    /// A snapshot streams from one controller's file into another's and installs there:
    /// the same keys and remembered writes, and the receiver keeps the file to send on.
    #[tokio::test]
    async fn a_snapshot_streams_to_another_controller_and_installs() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        let (mut snapshot, (b_dir, mut b)) = snapshot_and_receiver(2_000).await;
        let mut into = b.begin_receiving_snapshot().await.unwrap();
        // In chunks, as openraft sends it.
        let mut chunk = vec![0; 4096];
        loop {
            let n = snapshot.snapshot.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            into.write_all(&chunk[..n]).await.unwrap();
        }
        b.install_snapshot(&snapshot.meta, into).await.unwrap();
        assert_eq!(counter(&b, "n"), 2_000);
        assert_eq!(b.shared().last_applied().map(|l| l.index), Some(2_000));
        // The retried write `w7` is answered, not applied.
        let retry = Entry {
            log_id: RaftLogId::new(CommittedLeaderId::new(1, 1), 2_001),
            payload: EntryPayload::Normal(increment("b", "m", Some("w7"))),
        };
        assert_eq!(
            b.apply([retry]).await.unwrap(),
            [Reply::Kv {
                result: Ok(dabba_spec::kv::Outcome::Counter(7))
            }]
        );
        let current = b.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, snapshot.meta);
        // After a restart, b still has it all.
        drop(b);
        let b = open(b_dir.path());
        assert_eq!(counter(&b, "n"), 2_000);
    }

    /// A snapshot cut short in transfer is refused, and what the receiver had stays.
    #[tokio::test]
    async fn a_snapshot_cut_short_is_refused_and_changes_nothing() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        let (mut snapshot, (_b_dir, mut b)) = snapshot_and_receiver(500).await;
        let mut bytes = Vec::new();
        snapshot.snapshot.read_to_end(&mut bytes).await.unwrap();
        let mut into = b.begin_receiving_snapshot().await.unwrap();
        into.write_all(&bytes[..bytes.len() - 10]).await.unwrap();
        let err = b.install_snapshot(&snapshot.meta, into).await.unwrap_err();
        assert!(err.to_string().contains("end early"), "{err}");
        assert_eq!(counter(&b, "n"), 3);
        assert_eq!(b.shared().last_applied().map(|l| l.index), Some(3));
    }

    /// Between snapshots the state is checkpointed, so a restart replays a bounded
    /// stretch of log; a checkpoint the workload store does not back is not used.
    #[tokio::test]
    async fn a_restart_starts_from_the_newest_checkpoint_the_store_backs() {
        let dir = tempfile::tempdir().unwrap();
        let snapshots = dir.path().join("snapshots");
        {
            let mut sm = open(dir.path());
            sm.apply(entries(1, CHECKPOINT_ENTRIES + 5)).await.unwrap();
            a_checkpoint_in(&snapshots).await;
        }
        let sm = open(dir.path());
        restarted_at_a_checkpoint(&sm);
        assert_eq!(counter(&sm, "n"), (CHECKPOINT_ENTRIES + 5) as i64);
        drop(sm);

        // The store lost (a wiped file): the checkpoint says more than the store holds,
        // so the state starts from scratch and the log is replayed onto both.
        std::fs::remove_file(dir.path().join("kv.redb")).unwrap();
        let sm = open(dir.path());
        assert_eq!(sm.shared().last_applied(), None);
    }

    /// Waits (up to 10 s) for a checkpoint to be written in `snapshots`.
    async fn a_checkpoint_in(snapshots: &Path) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while checkpoints(snapshots).unwrap().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "no checkpoint written"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Where `sm`, just opened, restarted: at a checkpoint, not from the beginning.
    fn restarted_at_a_checkpoint(sm: &StateMachine) -> Option<u64> {
        let at = sm.shared().last_applied().map(|l| l.index);
        assert!(
            at.is_some_and(|i| i >= CHECKPOINT_ENTRIES),
            "restarted at {at:?}"
        );
        at
    }

    fn blanks(from: u64, to: u64) -> Vec<Entry> {
        (from..=to)
            .map(|i| Entry {
                log_id: RaftLogId::new(CommittedLeaderId::new(1, 1), i),
                payload: EntryPayload::Blank,
            })
            .collect()
    }

    /// Entries that write nothing to the workload do not commit to the store (its
    /// record of what it holds stays behind); a checkpoint after them says the store
    /// holds them all, so a restart starts from it instead of replaying everything.
    #[tokio::test]
    async fn entries_without_workload_writes_leave_the_store_alone_and_checkpoints_still_count() {
        let dir = tempfile::tempdir().unwrap();
        let snapshots = dir.path().join("snapshots");
        let last = CHECKPOINT_ENTRIES + 10;
        {
            let mut sm = open(dir.path());
            sm.apply(entries(1, 5)).await.unwrap();
            sm.apply(blanks(6, 10)).await.unwrap();
            assert_eq!(sm.shared().workload().unwrap().applied(), Some(5));
            assert_eq!(sm.shared().last_applied().map(|l| l.index), Some(10));
            sm.apply(blanks(11, last)).await.unwrap();
            a_checkpoint_in(&snapshots).await;
        }
        let sm = open(dir.path());
        let at = restarted_at_a_checkpoint(&sm);
        let held = sm.shared().workload().unwrap().applied();
        assert!(
            held >= at,
            "the store says it holds {held:?}, the state {at:?}"
        );
        assert_eq!(counter(&sm, "n"), 5);
        assert_eq!(counter(&sm, "m"), 5);
    }

    /// Writes that pause are made durable without waiting for the next checkpoint.
    #[tokio::test]
    async fn the_store_is_made_durable_when_writes_pause() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open(dir.path());
        sm.apply(entries(1, 3)).await.unwrap();
        let store = sm.shared.workload.clone();
        assert!(store.unsynced());
        let deadline = std::time::Instant::now() + 10 * workload::SYNC_WHEN_IDLE;
        while store.unsynced() {
            assert!(
                std::time::Instant::now() < deadline,
                "still not durable after {:?}",
                10 * workload::SYNC_WHEN_IDLE
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(counter(&sm, "n"), 3);
    }
}
