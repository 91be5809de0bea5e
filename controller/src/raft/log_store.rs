//! The Raft log, vote and commit index, durable in one redb file.
//!
//! Why redb: pure Rust, transactional, and every commit is fsync'd by default — the
//! acknowledgment rule Raft needs (an append or a vote is reported done only once it is
//! on disk). Entries are stored as JSON by index; the vote, the committed log id and the
//! last purged log id live in a small metadata table.
//!
//! Appends are group-committed: `append` keeps the entries in memory (readable at
//! once, as openraft requires) and queues them for a writer thread, which writes every
//! queued batch in one transaction, commits (fsync) and only then tells openraft the
//! entries are flushed. openraft hands the store one append per client write, so under
//! load many writes share one fsync, and the Raft core never waits on the disk. Other
//! blocking I/O runs on tokio's blocking pool; operations that must see every earlier
//! append on disk (truncate, purge, reading the log state) first drain the queue.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{RaftLogReader, StorageIOError, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Entry, LogId, NodeId, StorageError, TypeConfig};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// Entries appended but not yet committed to the file, and the most recent
    /// committed ones: a contiguous tail of the log, so the replication of new entries
    /// to followers reads memory, not the file.
    pending: Arc<Mutex<Tail>>,
    writer: mpsc::Sender<Queued>,
}

/// Committed entries kept in memory behind the unflushed ones, at most this many...
const RECENT: usize = 4096;
/// ...and of at most this many bytes (as written): an entry of workload writes can be a
/// megabyte, and a tail bounded only by count would hold gigabytes.
const RECENT_BYTES: usize = 64 << 20;

/// The tail of the log held in memory, by index, with each entry's encoded size.
#[derive(Default)]
struct Tail {
    entries: BTreeMap<u64, (Entry, usize)>,
    bytes: usize,
}

impl Tail {
    fn insert(&mut self, entry: Entry, size: usize) {
        self.bytes += size;
        if let Some((_, old)) = self.entries.insert(entry.log_id.index, (entry, size)) {
            self.bytes -= old;
        }
    }

    fn retain(&mut self, keep: impl Fn(u64) -> bool) {
        self.entries.retain(|i, _| keep(*i));
        self.bytes = self.entries.values().map(|(_, size)| size).sum();
    }

    /// Drops the oldest entries beyond the bounds, never one not yet on disk.
    fn trim(&mut self, on_disk: Option<u64>) {
        while self.entries.len() > RECENT || self.bytes > RECENT_BYTES {
            match self.entries.first_key_value() {
                Some((&first, _)) if on_disk.is_some_and(|f| first <= f) => {
                    if let Some((_, size)) = self.entries.remove(&first) {
                        self.bytes -= size;
                    }
                }
                _ => break,
            }
        }
    }
}

/// Work for the writer thread, in the order openraft asked for it.
enum Queued {
    Append {
        entries: Vec<(LogId, Vec<u8>)>,
        callback: LogFlushed<TypeConfig>,
    },
    /// Answered once everything queued before it is on disk.
    Barrier(tokio::sync::oneshot::Sender<()>),
    /// The latest committed log id, written with the next transaction.
    Committed(Option<LogId>),
}

/// Writes queued appends, many per transaction, until every sender is gone. The
/// committed log id rides along in the same transaction, never ahead of the entries on
/// disk; alone, it is written without an fsync.
fn writer_loop(
    db: &Database,
    pending: &Mutex<Tail>,
    inbox: &mpsc::Receiver<Queued>,
    mut on_disk: Option<u64>,
) {
    while let Ok(first) = inbox.recv() {
        let mut batch = vec![first];
        while let Ok(more) = inbox.try_recv() {
            batch.push(more);
        }
        let mut appends = Vec::new();
        let mut barriers = Vec::new();
        let mut committed = None;
        for q in batch {
            match q {
                Queued::Append { entries, callback } => appends.push((entries, callback)),
                Queued::Barrier(done) => barriers.push(done),
                Queued::Committed(c) => committed = Some(c),
            }
        }
        let flushed = appends
            .iter()
            .flat_map(|(entries, _)| entries.iter().map(|(id, _)| id.index))
            .max()
            .max(on_disk);
        let committed = committed.map(|c| c.filter(|id| flushed.is_some_and(|f| id.index <= f)));
        if appends.is_empty() {
            if let Some(c) = committed
                && let Err(e) = LogStore::put_meta(db, COMMITTED, &c, false)
            {
                tracing::warn!(error = %e, "saving the committed index failed");
            }
        } else {
            let written = (|| -> Result<(), StorageError> {
                let tx = db.begin_write().map_err(io_write)?;
                {
                    let mut table = tx.open_table(LOG).map_err(io_write)?;
                    for (entries, _) in &appends {
                        for (log_id, bytes) in entries {
                            table
                                .insert(log_id.index, bytes.as_slice())
                                .map_err(io_write)?;
                        }
                    }
                }
                if let Some(c) = committed {
                    let bytes = serde_json::to_vec(&c).map_err(io_write)?;
                    tx.open_table(META)
                        .map_err(io_write)?
                        .insert(COMMITTED, bytes.as_slice())
                        .map_err(io_write)?;
                }
                // The commit is the fsync: only after it may openraft count these entries.
                tx.commit().map_err(io_write)
            })();
            if written.is_ok() {
                on_disk = flushed;
            }
            {
                // Keep a bounded tail in memory; never drop an entry not yet on disk.
                if written.is_ok() {
                    pending.lock().expect("pending log lock").trim(flushed);
                }
            }
            for (_, callback) in appends {
                match &written {
                    Ok(()) => callback.log_io_completed(Ok(())),
                    Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
                }
            }
        }
        for done in barriers {
            let _ = done.send(());
        }
    }
}

fn io_read(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_logs(&e).into()
}

fn io_write(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

/// Runs blocking storage work off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageIOError::write_logs(&e).into())
        .and_then(|r| r)
}

/// The cache redb keeps of the log (its default is 1 GiB, which a busy log fills: the
/// controller's memory would grow with the write rate). Replication reads the newest
/// entries, which are in it.
const CACHE_BYTES: usize = 32 << 20;

impl LogStore {
    pub fn open(path: &Path) -> Result<LogStore, StorageError> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(io_write)?;
        let tx = db.begin_write().map_err(io_write)?;
        tx.open_table(LOG).map_err(io_write)?;
        tx.open_table(META).map_err(io_write)?;
        tx.commit().map_err(io_write)?;
        let last_on_disk = {
            let tx = db.begin_read().map_err(io_read)?;
            let table = tx.open_table(LOG).map_err(io_read)?;
            table.last().map_err(io_read)?.map(|(k, _)| k.value())
        };
        let db = Arc::new(db);
        let pending = Arc::new(Mutex::new(Tail::default()));
        let (writer, inbox) = mpsc::channel();
        {
            let (db, pending) = (db.clone(), pending.clone());
            std::thread::Builder::new()
                .name("dabba-raft-log".into())
                .spawn(move || writer_loop(&db, &pending, &inbox, last_on_disk))
                .map_err(io_write)?;
        }
        Ok(LogStore {
            db,
            pending,
            writer,
        })
    }

    /// Waits until every append queued so far is on disk.
    async fn drain(&self) -> Result<(), StorageError> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.writer
            .send(Queued::Barrier(done))
            .map_err(|e| io_write(std::io::Error::other(e.to_string())))?;
        wait.await
            .map_err(|e| io_write(std::io::Error::other(e.to_string())))
    }

    fn meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError> {
        let tx = self.db.begin_read().map_err(io_read)?;
        let table = tx.open_table(META).map_err(io_read)?;
        match table.get(key).map_err(io_read)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(v.value()).map(Some).map_err(io_read),
        }
    }

    fn put_meta<T: serde::Serialize>(
        db: &Database,
        key: &str,
        value: &T,
        durable: bool,
    ) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(value).map_err(io_write)?;
        let mut tx = db.begin_write().map_err(io_write)?;
        if !durable {
            tx.set_durability(redb::Durability::None)
                .map_err(io_write)?;
        }
        tx.open_table(META)
            .map_err(io_write)?
            .insert(key, bytes.as_slice())
            .map_err(io_write)?;
        tx.commit().map_err(io_write)
    }

    fn read_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<Vec<Entry>, StorageError> {
        let tx = self.db.begin_read().map_err(io_read)?;
        let table = tx.open_table(LOG).map_err(io_read)?;
        let mut out = Vec::new();
        for item in table.range::<u64>((start, end)).map_err(io_read)? {
            let (_, v) = item.map_err(io_read)?;
            out.push(serde_json::from_slice(v.value()).map_err(io_read)?);
        }
        Ok(out)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let store = self.clone();
        let (start, end) = (range.start_bound().cloned(), range.end_bound().cloned());
        // Memory first: an entry leaves it only after it is in the file, so whatever
        // is not in this copy is in the file by the time it is read. When memory holds
        // the start of the range it holds all of it (it is a contiguous tail).
        let first_wanted = match start {
            Bound::Included(i) => i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let (unflushed, covered): (Vec<Entry>, bool) = {
            let mem = self.pending.lock().expect("pending log lock");
            let covered = mem
                .entries
                .first_key_value()
                .is_some_and(|(f, _)| *f <= first_wanted);
            (
                mem.entries
                    .range((start, end))
                    .map(|(_, (e, _))| e.clone())
                    .collect(),
                covered,
            )
        };
        if covered {
            return Ok(unflushed);
        }
        let mut entries: BTreeMap<u64, Entry> = blocking(move || store.read_range(start, end))
            .await?
            .into_iter()
            .map(|e| (e.log_id.index, e))
            .collect();
        for e in unflushed {
            entries.insert(e.log_id.index, e);
        }
        Ok(entries.into_values().collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        self.drain().await?;
        let store = self.clone();
        blocking(move || {
            let last_purged: Option<LogId> = store.meta(LAST_PURGED)?;
            let tx = store.db.begin_read().map_err(io_read)?;
            let table = tx.open_table(LOG).map_err(io_read)?;
            let last = match table.last().map_err(io_read)? {
                Some((_, v)) => {
                    let e: Entry = serde_json::from_slice(v.value()).map_err(io_read)?;
                    Some(e.log_id)
                }
                None => last_purged,
            };
            Ok(LogState {
                last_purged_log_id: last_purged,
                last_log_id: last,
            })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let db = self.db.clone();
        let vote = *vote;
        blocking(move || Self::put_meta(&db, VOTE, &vote, true)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        let store = self.clone();
        blocking(move || store.meta(VOTE)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // The committed index only saves re-applying entries after a restart: Raft
        // learns it again from a quorum, so it need not be fsync'd, nor waited for. The
        // writer thread stores it with its next transaction (the next durable commit of
        // the log persists it), so a commit costs the Raft core no extra disk write.
        self.writer
            .send(Queued::Committed(committed))
            .map_err(|e| io_write(std::io::Error::other(e.to_string())))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let store = self.clone();
        blocking(move || Ok(store.meta::<Option<LogId>>(COMMITTED)?.flatten())).await
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let encoded: Vec<(LogId, Vec<u8>)> = entries
            .iter()
            .map(|e| Ok((e.log_id, serde_json::to_vec(e).map_err(io_write)?)))
            .collect::<Result<_, StorageError>>()?;
        {
            let mut mem = self.pending.lock().expect("pending log lock");
            for (e, (_, bytes)) in entries.into_iter().zip(&encoded) {
                mem.insert(e, bytes.len());
            }
        }
        self.writer
            .send(Queued::Append {
                entries: encoded,
                callback,
            })
            .map_err(|e| io_write(std::io::Error::other(e.to_string())))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.drain().await?;
        self.pending
            .lock()
            .expect("pending log lock")
            .retain(|i| i < log_id.index);
        let db = self.db.clone();
        blocking(move || {
            let tx = db.begin_write().map_err(io_write)?;
            tx.open_table(LOG)
                .map_err(io_write)?
                .retain_in(log_id.index.., |_, _| false)
                .map_err(io_write)?;
            tx.commit().map_err(io_write)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.drain().await?;
        self.pending
            .lock()
            .expect("pending log lock")
            .retain(|i| i > log_id.index);
        let db = self.db.clone();
        blocking(move || {
            let bytes = serde_json::to_vec(&Some(log_id)).map_err(io_write)?;
            let tx = db.begin_write().map_err(io_write)?;
            tx.open_table(META)
                .map_err(io_write)?
                .insert(LAST_PURGED, bytes.as_slice())
                .map_err(io_write)?;
            tx.open_table(LOG)
                .map_err(io_write)?
                .retain_in(..=log_id.index, |_, _| false)
                .map_err(io_write)?;
            tx.commit().map_err(io_write)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    /// The tail in memory is bounded by bytes as well as by count, and never loses an
    /// entry that is not on disk yet.
    #[test]
    fn the_tail_in_memory_is_bounded_by_bytes_and_keeps_what_is_not_on_disk() {
        let mut tail = Tail::default();
        let big = 1 << 20;
        for i in 1..=200 {
            tail.insert(entry(i), big);
        }
        tail.trim(Some(100));
        // Only entries on disk go: 1..=100 could, and enough of them did.
        assert_eq!(tail.entries.first_key_value().map(|(i, _)| *i), Some(101));
        assert_eq!(tail.bytes, 100 * big);
        tail.trim(Some(200));
        assert_eq!(tail.bytes, RECENT_BYTES);
        assert_eq!(tail.entries.len(), RECENT_BYTES / big);
        assert_eq!(tail.entries.last_key_value().map(|(i, _)| *i), Some(200));
        // Small entries: the count bounds it.
        let mut tail = Tail::default();
        for i in 1..=(RECENT as u64 + 50) {
            tail.insert(entry(i), 100);
        }
        tail.trim(Some(RECENT as u64 + 50));
        assert_eq!(tail.entries.len(), RECENT);
        // A replaced entry is counted once.
        tail.insert(entry(RECENT as u64 + 50), 300);
        assert_eq!(tail.bytes, (RECENT - 1) * 100 + 300);
        tail.retain(|i| i <= 100);
        assert_eq!(tail.bytes, tail.entries.len() * 100);
    }
}
