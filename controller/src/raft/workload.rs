//! Workload buckets on a controller's disk: a redb file next to the Raft log.
//!
//! Why not memory: a payment ledger grows every day, and a controller that holds it in
//! memory grows with it, restarts by reading all of it, and ships all of it in one
//! document to a follower that fell behind. Here the buckets are B-trees in one file
//! (`kv.redb`), read through a bounded cache, so memory use does not depend on how much
//! is stored, and a restart opens the file instead of loading it.
//!
//! Every apply writes its workload changes and the log index it has applied in one
//! transaction, so the file always says exactly which entries it holds; a log entry
//! replayed after a restart that the file already holds is not applied to it again (an
//! increment applied twice would be a wrong balance). Those commits are not fsync'd —
//! the Raft log is — and the store is made durable before a snapshot lets the log
//! before it go ([`WorkloadStore::sync`]). A crash loses only commits the log still holds.
//!
//! Snapshots carry the buckets as a stream of records read from one read transaction
//! (redb's MVCC keeps it consistent while writes go on), see [`dump`] and [`load`].

use std::io::{BufRead, Read, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use dabba_spec::kv::KvError;
use redb::{
    Database, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, Table, TableDefinition, WriteTransaction,
};

use crate::state::{KV_WRITE_MEMORY, Remembered, Workload};

/// Values by (bucket, key): a bucket lists in key order with one range scan.
const ENTRIES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("entries");
/// Identified writes: id → (sequence number, outcome as JSON).
const REMEMBERED: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("remembered");
/// Sequence number → id, to forget the oldest first.
const REMEMBERED_ORDER: TableDefinition<u64, &str> = TableDefinition::new("remembered_order");
/// `applied`: the last log index applied; `next`: the next sequence number.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The cache redb keeps in memory unless told otherwise (`--kv-cache`). Reads beyond it
/// go to the file (and the kernel's page cache, which the kernel can take back), so it
/// bounds the store's share of RSS. Why this much: each read that misses it is a system
/// call and a fresh page in the cache; a settlement job reading a day's ledger ran
/// 1.3x faster with 256 MiB than with 32 (spec/benchmarks.md).
pub const DEFAULT_CACHE: u64 = 256 << 20;

/// Records per transaction while a snapshot is loaded: bounds memory during an install.
const LOAD_BATCH: u64 = 50_000;

pub fn storage(e: impl std::fmt::Display) -> KvError {
    KvError::storage(e)
}

/// How long writes must pause before the store makes them durable on its own.
pub const SYNC_WHEN_IDLE: Duration = Duration::from_secs(1);

/// The workload store of one controller.
pub struct WorkloadStore {
    path: PathBuf,
    /// Replaced whole when a snapshot is installed; readers hold the old file until done.
    db: RwLock<Arc<Database>>,
    /// Bytes of redb's cache.
    cache: u64,
    /// Commits made through [`WorkloadStore::commit`], and how many of them the last
    /// durable commit covers.
    committed: AtomicU64,
    synced: AtomicU64,
}

fn open_db(path: &Path, cache: u64) -> Result<Database, KvError> {
    let db = Database::builder()
        .set_cache_size(usize::try_from(cache).unwrap_or(usize::MAX))
        .create(path)
        .map_err(|e| storage(format!("opening {}: {e}", path.display())))?;
    let tx = db.begin_write().map_err(storage)?;
    tx.open_table(ENTRIES).map_err(storage)?;
    tx.open_table(REMEMBERED).map_err(storage)?;
    tx.open_table(REMEMBERED_ORDER).map_err(storage)?;
    tx.open_table(META).map_err(storage)?;
    tx.commit().map_err(storage)?;
    Ok(db)
}

impl WorkloadStore {
    /// Opens (or creates) the store at `path`, a file, with `cache` bytes of redb's cache.
    pub fn open(path: &Path, cache: u64) -> Result<WorkloadStore, KvError> {
        // A half-written install left by a crash is of no use: the snapshot comes again.
        let _ = std::fs::remove_file(installing(path));
        Ok(WorkloadStore {
            path: path.to_path_buf(),
            db: RwLock::new(Arc::new(open_db(path, cache)?)),
            cache,
            committed: AtomicU64::new(0),
            synced: AtomicU64::new(0),
        })
    }

    /// Makes the store durable whenever its writes have paused for [`SYNC_WHEN_IDLE`],
    /// on a thread of its own that ends with the store.
    ///
    /// Why, besides durability: redb keeps the pages of non-durable commits in its
    /// write buffer, and until a durable commit empties it, every read that misses
    /// redb's cache first walks all the buffer's stripes looking for a page to write
    /// back — a third of a read-heavy job's time once the buffer is drained (measured
    /// with the settlement job). Commits keep coming while writes go on; the reads of
    /// a quiet spell are fast.
    pub fn sync_when_idle(self: &Arc<Self>) -> std::io::Result<()> {
        let store = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("dabba-kv-sync".into())
            .spawn(move || {
                let mut seen = 0;
                loop {
                    std::thread::sleep(SYNC_WHEN_IDLE);
                    let Some(store) = store.upgrade() else {
                        return;
                    };
                    let committed = store.committed.load(Ordering::Acquire);
                    if committed == seen
                        && store.unsynced()
                        && let Err(e) = store.sync(None)
                    {
                        tracing::warn!(error = %e, "making the workload store durable");
                    }
                    seen = committed;
                }
            })
            .map(drop)
    }

    /// Whether commits were made since the last durable one.
    pub fn unsynced(&self) -> bool {
        self.synced.load(Ordering::Acquire) < self.committed.load(Ordering::Acquire)
    }

    fn db(&self) -> Arc<Database> {
        self.db.read().expect("workload lock poisoned").clone()
    }

    /// The last log index whose workload writes the store holds.
    pub fn applied(&self) -> Result<Option<u64>, KvError> {
        let tx = self.db().begin_read().map_err(storage)?;
        let meta = tx.open_table(META).map_err(storage)?;
        Ok(meta.get("applied").map_err(storage)?.map(|v| v.value()))
    }

    /// A write transaction (not fsync'd on commit: the Raft log is).
    pub fn begin(&self) -> Result<WriteTransaction, KvError> {
        let mut tx = self.db().begin_write().map_err(storage)?;
        tx.set_durability(redb::Durability::None).map_err(storage)?;
        Ok(tx)
    }

    /// Commits a transaction of [`WorkloadStore::begin`].
    pub fn commit(&self, tx: WriteTransaction) -> Result<(), KvError> {
        tx.commit().map_err(storage)?;
        self.committed.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Makes every commit so far durable (one fsync), with a quick-repair record so that
    /// opening the file after a crash does not walk all of it.
    ///
    /// `held`: a log index whose entries the caller knows are all applied (their
    /// workload writes committed). The store then says it holds at least that much: an
    /// apply that writes nothing to the workload does not commit to the store (see
    /// `apply_entries`), so its own record can lag behind the state's.
    pub fn sync(&self, held: Option<u64>) -> Result<(), KvError> {
        let mut tx = self.db().begin_write().map_err(storage)?;
        // Taken with the writer: every transaction begun before is committed or gone.
        let covered = self.committed.load(Ordering::Acquire);
        tx.set_quick_repair(true);
        if let Some(held) = held {
            let mut meta = tx.open_table(META).map_err(storage)?;
            let applied = meta.get("applied").map_err(storage)?.map(|v| v.value());
            if applied < Some(held) {
                meta.insert("applied", held).map_err(storage)?;
            }
        }
        tx.commit().map_err(storage)?;
        self.synced.fetch_max(covered, Ordering::AcqRel);
        Ok(())
    }

    /// A consistent view for reads and snapshots.
    pub fn view(&self) -> Result<View, KvError> {
        let tx = self.db().begin_read().map_err(storage)?;
        View::new(tx)
    }

    /// Replaces the whole store with the records of a snapshot, which end at log index
    /// `applied`. The new file is written beside the old one and renamed over it, so a
    /// crash leaves one or the other, never a mix.
    pub fn replace(&self, records: &mut impl BufRead, applied: u64) -> Result<Counts, KvError> {
        let next = installing(&self.path);
        let _ = std::fs::remove_file(&next);
        let counts = {
            let db = open_db(&next, self.cache)?;
            let counts = load(&db, records)?;
            let mut tx = db.begin_write().map_err(storage)?;
            tx.set_quick_repair(true);
            tx.open_table(META)
                .map_err(storage)?
                .insert("applied", applied)
                .map_err(storage)?;
            tx.commit().map_err(storage)?;
            counts
        };
        let mut current = self.db.write().expect("workload lock poisoned");
        std::fs::rename(&next, &self.path).map_err(storage)?;
        if let Some(dir) = self.path.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        *current = Arc::new(open_db(&self.path, self.cache)?);
        Ok(counts)
    }
}

fn installing(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".installing");
    PathBuf::from(name)
}

/// The store's tables inside one write transaction: what the state machine applies
/// workload writes to. The first storage error is kept, for the state machine to stop on.
pub struct Tables<'txn> {
    entries: Table<'txn, (&'static str, &'static str), &'static [u8]>,
    remembered: Table<'txn, &'static str, (u64, &'static [u8])>,
    order: Table<'txn, u64, &'static str>,
    meta: Table<'txn, &'static str, u64>,
    failed: std::cell::Cell<Option<KvError>>,
    /// Bytes of keys and values stored through these tables.
    pub written: u64,
    /// Whether anything was stored or remembered through these tables.
    pub touched: bool,
}

impl<'txn> Tables<'txn> {
    pub fn open(tx: &'txn WriteTransaction) -> Result<Tables<'txn>, KvError> {
        Ok(Tables {
            entries: tx.open_table(ENTRIES).map_err(storage)?,
            remembered: tx.open_table(REMEMBERED).map_err(storage)?,
            order: tx.open_table(REMEMBERED_ORDER).map_err(storage)?,
            meta: tx.open_table(META).map_err(storage)?,
            failed: std::cell::Cell::new(None),
            written: 0,
            touched: false,
        })
    }

    /// The last log index the store held when the transaction began.
    pub fn applied(&self) -> Result<Option<u64>, KvError> {
        Ok(self
            .meta
            .get("applied")
            .map_err(storage)?
            .map(|v| v.value()))
    }

    pub fn set_applied(&mut self, index: u64) -> Result<(), KvError> {
        self.meta.insert("applied", index).map_err(storage)?;
        Ok(())
    }

    /// The first storage error met since the tables were opened.
    pub fn failed(&self) -> Option<KvError> {
        let first = self.failed.take();
        self.failed.set(first.clone());
        first
    }

    fn noted<T>(&self, r: Result<T, KvError>) -> Result<T, KvError> {
        if let Err(e) = &r {
            let first = self.failed.take();
            self.failed.set(Some(first.unwrap_or_else(|| e.clone())));
        }
        r
    }
}

impl Workload for Tables<'_> {
    fn read(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let r = self
            .entries
            .get((bucket, key))
            .map(|v| v.map(|g| g.value().to_vec()))
            .map_err(storage);
        self.noted(r)
    }

    fn store(&mut self, bucket: &str, key: &str, value: Option<&[u8]>) -> Result<(), KvError> {
        self.written += (key.len() + value.map_or(0, <[u8]>::len)) as u64;
        self.touched = true;
        let r = match value {
            Some(v) => self.entries.insert((bucket, key), v).map(drop),
            None => self.entries.remove((bucket, key)).map(drop),
        }
        .map_err(storage);
        self.noted(r)
    }

    fn remembered(&self, id: &str) -> Result<Option<Remembered>, KvError> {
        let r = (|| {
            let Some(found) = self.remembered.get(id).map_err(storage)? else {
                return Ok(None);
            };
            let (_, outcome) = found.value();
            serde_json::from_slice(outcome).map(Some).map_err(storage)
        })();
        self.noted(r)
    }

    fn remember(&mut self, id: &str, outcome: &Remembered) -> Result<(), KvError> {
        self.touched = true;
        let r = (|| {
            let seq = self
                .meta
                .get("next")
                .map_err(storage)?
                .map_or(0, |v| v.value());
            let json = serde_json::to_vec(outcome).map_err(storage)?;
            self.remembered
                .insert(id, (seq, json.as_slice()))
                .map_err(storage)?;
            self.order.insert(seq, id).map_err(storage)?;
            self.meta.insert("next", seq + 1).map_err(storage)?;
            if let Some(old_seq) = seq.checked_sub(KV_WRITE_MEMORY as u64)
                && let Some(old) = self.order.remove(old_seq).map_err(storage)?
            {
                let old = old.value().to_string();
                // The id may have been forgotten and written again since: only its
                // old remembrance goes.
                let stale = self
                    .remembered
                    .get(old.as_str())
                    .map_err(storage)?
                    .is_some_and(|v| v.value().0 == old_seq);
                if stale {
                    self.remembered.remove(old.as_str()).map_err(storage)?;
                }
            }
            Ok(())
        })();
        self.noted(r)
    }
}

/// A read transaction: what the API reads and what a snapshot is built from.
pub struct View {
    entries: ReadOnlyTable<(&'static str, &'static str), &'static [u8]>,
    remembered: ReadOnlyTable<&'static str, (u64, &'static [u8])>,
    order: ReadOnlyTable<u64, &'static str>,
    applied: Option<u64>,
}

impl View {
    fn new(tx: ReadTransaction) -> Result<View, KvError> {
        let meta = tx.open_table(META).map_err(storage)?;
        Ok(View {
            entries: tx.open_table(ENTRIES).map_err(storage)?,
            remembered: tx.open_table(REMEMBERED).map_err(storage)?,
            order: tx.open_table(REMEMBERED_ORDER).map_err(storage)?,
            applied: meta.get("applied").map_err(storage)?.map(|v| v.value()),
        })
    }

    /// The last log index this view holds.
    pub fn applied(&self) -> Option<u64> {
        self.applied
    }

    /// The values of `keys` in `bucket` (`None`: absent), in the order asked, all from
    /// this view's one version of the store.
    pub fn read_many(
        &self,
        bucket: &str,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        keys.iter()
            .map(|k| {
                self.entries
                    .get((bucket, k.as_str()))
                    .map(|v| v.map(|v| v.value().to_vec()))
                    .map_err(storage)
            })
            .collect()
    }

    /// Up to `limit` keys of `bucket` after `cursor`, in order.
    pub fn keys(
        &self,
        bucket: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, KvError> {
        let start = match cursor {
            Some(c) => Bound::Excluded((bucket, c)),
            None => Bound::Included((bucket, "")),
        };
        let mut keys = Vec::new();
        for entry in self
            .entries
            .range::<(&str, &str)>((start, Bound::Unbounded))
            .map_err(storage)?
        {
            let (k, _) = entry.map_err(storage)?;
            let (b, key) = k.value();
            if b != bucket || keys.len() == limit {
                break;
            }
            keys.push(key.to_string());
        }
        Ok(keys)
    }

    /// How many keys the store holds, over all buckets.
    pub fn keys_held(&self) -> Result<u64, KvError> {
        self.entries.len().map_err(storage)
    }
}

/// How many records a snapshot carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub entries: u64,
    pub remembered: u64,
}

const ENTRY: u8 = 1;
const REMEMBERED_WRITE: u8 = 2;
const END: u8 = 0;

fn field(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(std::io::Error::other)?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(bytes)
}

/// Writes every record of `view` to `out`: entries, then remembered writes (oldest
/// first), then an end record with both counts, so a cut-off stream is detected.
pub fn dump(view: &View, out: &mut impl Write) -> Result<Counts, KvError> {
    let mut counts = Counts::default();
    for entry in view.entries.iter().map_err(storage)? {
        let (k, v) = entry.map_err(storage)?;
        let (bucket, key) = k.value();
        (|| {
            out.write_all(&[ENTRY])?;
            field(out, bucket.as_bytes())?;
            field(out, key.as_bytes())?;
            field(out, v.value())
        })()
        .map_err(storage)?;
        counts.entries += 1;
    }
    for entry in view.order.iter().map_err(storage)? {
        let (seq, id) = entry.map_err(storage)?;
        let (seq, id) = (seq.value(), id.value());
        let Some(found) = view.remembered.get(id).map_err(storage)? else {
            continue;
        };
        let (remembered_seq, outcome) = found.value();
        if remembered_seq != seq {
            continue;
        }
        (|| {
            out.write_all(&[REMEMBERED_WRITE])?;
            field(out, id.as_bytes())?;
            out.write_all(&seq.to_le_bytes())?;
            field(out, outcome)
        })()
        .map_err(storage)?;
        counts.remembered += 1;
    }
    (|| {
        out.write_all(&[END])?;
        out.write_all(&counts.entries.to_le_bytes())?;
        out.write_all(&counts.remembered.to_le_bytes())
    })()
    .map_err(storage)?;
    Ok(counts)
}

fn read_u64(input: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0; 8];
    input.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn read_field(input: &mut impl Read, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut b = [0; 4];
    input.read_exact(&mut b)?;
    buf.resize(u32::from_le_bytes(b) as usize, 0);
    input.read_exact(buf)
}

fn read_str<'a>(input: &mut impl Read, buf: &'a mut Vec<u8>) -> Result<&'a str, KvError> {
    read_field(input, buf).map_err(cut)?;
    std::str::from_utf8(buf).map_err(|e| storage(format!("snapshot record is not UTF-8: {e}")))
}

fn cut(e: std::io::Error) -> KvError {
    storage(format!("snapshot records end early or cannot be read: {e}"))
}

/// Loads records written by [`dump`] into `db` (empty), in transactions of
/// `LOAD_BATCH` records; fails, naming the record, on anything that is not a whole
/// stream.
pub fn load(db: &Database, input: &mut impl BufRead) -> Result<Counts, KvError> {
    let mut counts = Counts::default();
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    let mut next_seq = 0u64;
    loop {
        let mut tx = db.begin_write().map_err(storage)?;
        tx.set_durability(redb::Durability::None).map_err(storage)?;
        let mut in_batch = 0;
        let ended = {
            let mut entries = tx.open_table(ENTRIES).map_err(storage)?;
            let mut remembered = tx.open_table(REMEMBERED).map_err(storage)?;
            let mut order = tx.open_table(REMEMBERED_ORDER).map_err(storage)?;
            let mut meta = tx.open_table(META).map_err(storage)?;
            loop {
                if in_batch == LOAD_BATCH {
                    break false;
                }
                let mut tag = [0u8];
                input.read_exact(&mut tag).map_err(cut)?;
                match tag[0] {
                    ENTRY => {
                        let bucket = read_str(input, &mut a)?;
                        let key = read_str(input, &mut b)?;
                        read_field(input, &mut c).map_err(cut)?;
                        entries
                            .insert((bucket, key), c.as_slice())
                            .map_err(storage)?;
                        counts.entries += 1;
                    }
                    REMEMBERED_WRITE => {
                        let id = read_str(input, &mut a)?;
                        let seq = read_u64(input).map_err(cut)?;
                        read_field(input, &mut c).map_err(cut)?;
                        remembered
                            .insert(id, (seq, c.as_slice()))
                            .map_err(storage)?;
                        order.insert(seq, id).map_err(storage)?;
                        next_seq = next_seq.max(seq + 1);
                        counts.remembered += 1;
                    }
                    END => {
                        let entries_said = read_u64(input).map_err(cut)?;
                        let remembered_said = read_u64(input).map_err(cut)?;
                        if (entries_said, remembered_said) != (counts.entries, counts.remembered) {
                            return Err(storage(format!(
                                "snapshot says {entries_said} entries and {remembered_said} \
                                 remembered writes, but carried {} and {}",
                                counts.entries, counts.remembered
                            )));
                        }
                        meta.insert("next", next_seq).map_err(storage)?;
                        break true;
                    }
                    other => {
                        return Err(storage(format!(
                            "snapshot record {} has unknown kind {other}",
                            counts.entries + counts.remembered
                        )));
                    }
                }
                in_batch += 1;
            }
        };
        tx.commit().map_err(storage)?;
        if ended {
            return Ok(counts);
        }
    }
}

#[cfg(test)]
mod tests {
    use dabba_spec::kv::{Outcome, Write as KvWrite};

    use super::*;
    use crate::state::MemoryWorkload;

    fn increment(key: &str) -> KvWrite {
        KvWrite::Increment {
            key: key.into(),
            delta: 3,
        }
    }

    /// The same writes give the same answers and the same contents on disk as in
    /// memory, remembered writes and their forgetting included.
    #[test]
    fn the_store_on_disk_answers_as_the_one_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let store = WorkloadStore::open(&dir.path().join("kv.redb"), DEFAULT_CACHE).unwrap();
        let mut memory = MemoryWorkload::default();
        let writes: Vec<(String, KvWrite, Option<String>)> = (0..300)
            .map(|i| {
                let bucket = format!("b{}", i % 3);
                let write = match i % 4 {
                    0 => increment(&format!("n{}", i % 5)),
                    1 => KvWrite::Put(vec![(format!("k{i}"), Some(vec![i as u8; 3]))]),
                    2 => KvWrite::Swap {
                        key: "claim".into(),
                        expected: None,
                        value: vec![i as u8],
                    },
                    _ => KvWrite::Put(vec![(format!("k{}", i - 2), None)]),
                };
                // Ids repeat: a retry gets the first answer.
                let id = (i % 2 == 0).then(|| format!("w{}", i % 40));
                (bucket, write, id)
            })
            .collect();
        let tx = store.begin().unwrap();
        let mut on_disk = Vec::new();
        {
            let mut tables = Tables::open(&tx).unwrap();
            for (bucket, write, id) in &writes {
                on_disk.push(crate::state::apply_kv(
                    &mut tables,
                    bucket,
                    write,
                    id.as_deref(),
                ));
            }
            tables.set_applied(7).unwrap();
            assert!(tables.failed().is_none());
        }
        tx.commit().unwrap();
        let in_memory: Vec<_> = writes
            .iter()
            .map(|(b, w, id)| crate::state::apply_kv(&mut memory, b, w, id.as_deref()))
            .collect();
        assert_eq!(on_disk, in_memory);

        let view = store.view().unwrap();
        assert_eq!(view.applied(), Some(7));
        // A durable commit that vouches for less than the store holds lowers nothing;
        // one that vouches for more raises it.
        store.sync(Some(3)).unwrap();
        assert_eq!(store.applied().unwrap(), Some(7));
        store.sync(Some(9)).unwrap();
        assert_eq!(store.applied().unwrap(), Some(9));
        assert!(!store.unsynced());
        let mut on_disk_buckets = std::collections::BTreeMap::new();
        for (bucket, keys) in &memory.buckets {
            let listed = view.keys(bucket, None, 1000).unwrap();
            assert_eq!(listed, keys.keys().cloned().collect::<Vec<_>>());
            let values = view.read_many(bucket, &listed).unwrap();
            on_disk_buckets.insert(
                bucket.clone(),
                listed
                    .into_iter()
                    .zip(values.into_iter().map(Option::unwrap))
                    .collect(),
            );
        }
        assert_eq!(on_disk_buckets, memory.buckets);
        let keys: u64 = memory.buckets.values().map(|b| b.len() as u64).sum();
        assert_eq!(view.keys_held().unwrap(), keys);
    }

    /// A snapshot's records rebuild the same store elsewhere, and one cut short is
    /// refused rather than installed half.
    #[test]
    fn records_rebuild_the_store_and_a_cut_stream_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = WorkloadStore::open(&dir.path().join("a.redb"), DEFAULT_CACHE).unwrap();
        let tx = store.begin().unwrap();
        {
            let mut tables = Tables::open(&tx).unwrap();
            for i in 0..120_000u32 {
                let id = format!("id-{i}");
                crate::state::apply_kv(
                    &mut tables,
                    "ledger",
                    &KvWrite::Put(vec![(format!("p{i:07}"), Some(i.to_le_bytes().to_vec()))]),
                    (i % 3 == 0).then_some(id.as_str()),
                )
                .unwrap();
            }
            tables.set_applied(99).unwrap();
        }
        tx.commit().unwrap();
        let mut bytes = Vec::new();
        let counts = dump(&store.view().unwrap(), &mut bytes).unwrap();
        assert_eq!(
            counts,
            Counts {
                entries: 120_000,
                remembered: 40_000
            }
        );

        let other = WorkloadStore::open(&dir.path().join("b.redb"), DEFAULT_CACHE).unwrap();
        let loaded = other.replace(&mut bytes.as_slice(), 99).unwrap();
        assert_eq!(loaded, counts);
        let view = other.view().unwrap();
        assert_eq!(view.applied(), Some(99));
        assert_eq!(view.keys_held().unwrap(), 120_000);
        assert_eq!(
            view.read_many("ledger", &["p0119999".into()]).unwrap(),
            vec![Some(119_999u32.to_le_bytes().to_vec())]
        );
        // A remembered write is still answered, not applied again.
        let tx = other.begin().unwrap();
        {
            let mut tables = Tables::open(&tx).unwrap();
            let again = crate::state::apply_kv(
                &mut tables,
                "ledger",
                &KvWrite::Put(vec![("p0000003".into(), None)]),
                Some("id-3"),
            );
            assert_eq!(again, Ok(Outcome::Done));
            assert!(tables.read("ledger", "p0000003").unwrap().is_some());
        }
        drop(tx);

        let cut = &bytes[..bytes.len() / 2];
        let third = WorkloadStore::open(&dir.path().join("c.redb"), DEFAULT_CACHE).unwrap();
        let err = third.replace(&mut &cut[..], 99).unwrap_err();
        assert!(err.to_string().contains("end early"), "{err}");
        // What was there is still there (nothing), and still answers.
        assert_eq!(third.view().unwrap().keys_held().unwrap(), 0);
        assert_eq!(third.applied().unwrap(), None);
    }

    /// Reading many keys at once answers as reading each does: keys in order with
    /// absent ones among them, spread thin, out of order, repeated, beyond the last key,
    /// and in a bucket with neighbours.
    #[test]
    fn reading_many_keys_answers_as_reading_each() {
        let dir = tempfile::tempdir().unwrap();
        let store = WorkloadStore::open(&dir.path().join("kv.redb"), DEFAULT_CACHE).unwrap();
        let key = |i: u32| format!("k{i:05}");
        let mut model = std::collections::BTreeMap::new();
        let tx = store.begin().unwrap();
        {
            let mut tables = Tables::open(&tx).unwrap();
            for i in (0..10_000).step_by(2) {
                tables.store("b", &key(i), Some(&i.to_le_bytes())).unwrap();
                model.insert(key(i), i.to_le_bytes().to_vec());
            }
            tables.store("a", "k00001", Some(b"before")).unwrap();
            tables.store("c", "k00001", Some(b"after")).unwrap();
        }
        tx.commit().unwrap();
        let view = store.view().unwrap();
        let cases: Vec<(&str, Vec<String>)> = vec![
            ("in order, half absent", (0..2_000).map(key).collect()),
            ("spread thin", (0..10_000).step_by(97).map(key).collect()),
            ("out of order", (0..300).rev().map(key).collect()),
            ("repeated", [10, 10, 11, 12, 12, 12].map(key).to_vec()),
            (
                "beyond the last",
                [9_998, 9_999, 20_000, 30_000].map(key).to_vec(),
            ),
            ("absent, between neighbours", [1, 1].map(key).to_vec()),
            ("one", vec![key(4)]),
            ("none", vec![]),
        ];
        for (case, keys) in cases {
            let expected: Vec<Option<Vec<u8>>> =
                keys.iter().map(|k| model.get(k).cloned()).collect();
            assert_eq!(view.read_many("b", &keys).unwrap(), expected, "{case}");
        }
    }
}
