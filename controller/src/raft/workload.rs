//! Workload buckets on a controller's disk: a redb file next to the Raft log.
//!
//! Why not memory: a payment ledger grows every day, and a controller that holds it in
//! memory grows with it, restarts by reading all of it, and ships all of it in one
//! document to a follower that fell behind. Here the buckets are B-trees in one file
//! (`kv.redb`), read through a bounded cache, so memory use does not depend on how much
//! is stored, and a restart opens the file instead of loading it.
//!
//! Applies write to memory first (an overlay over the file, see [`WorkloadStore`]); a
//! flush writes the overlay into the file in key order with the log index it reaches,
//! in one transaction, so the file always says exactly which entries it holds; a log
//! entry replayed after a restart that the file already holds is not applied to it
//! again (an increment applied twice would be a wrong balance). The Raft log is what
//! makes a write durable: the store is flushed and made durable at every checkpoint and
//! before a snapshot lets the log before it go ([`WorkloadStore::sync`]). A crash loses
//! only what the log still holds.
//!
//! Snapshots carry the buckets as a stream of records read from one [`View`] — a read
//! transaction (redb's MVCC keeps it consistent while writes go on) and the overlay as
//! it was then — see [`dump`] and [`load`].

use std::cmp::Ordering;
use std::io::{BufRead, Read, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use dabba_spec::kv::KvError;
use imbl::OrdMap;
use redb::{
    Database, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, TableDefinition,
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

/// The cache redb keeps in memory. Reads beyond it go to the file (and the kernel's page
/// cache, which the kernel can take back), so this bounds the store's share of RSS.
const CACHE_BYTES: usize = 32 << 20;

/// Records per transaction while a snapshot is loaded: bounds memory during an install.
const LOAD_BATCH: u64 = 50_000;

/// Bytes held in memory past which an apply writes them into the file itself, without
/// waiting for the next checkpoint (which normally comes every 64 MiB written).
pub const BUFFERED_BOUND: u64 = 256 << 20;

pub fn storage(e: impl std::fmt::Display) -> KvError {
    KvError::storage(e)
}

/// A remembered write: its sequence number and its outcome (JSON).
type Remembrance = (u64, Arc<[u8]>);

/// What was applied since the last flush, in memory; each change replaces the key's
/// entry (`None`: removed). Clones share structure, so a reader's copy costs nothing
/// and the next apply copies only the paths it changes.
#[derive(Clone, Default)]
struct Overlay {
    entries: OrdMap<(String, String), Option<Arc<[u8]>>>,
    remembered: OrdMap<String, Option<Remembrance>>,
    order: OrdMap<u64, Option<String>>,
    /// The next sequence number of a remembered write, once one was remembered here.
    next: Option<u64>,
    /// The last log index applied, once one was applied here.
    applied: Option<u64>,
    /// Bytes of the buckets, keys and values held (those replaced since included).
    bytes: u64,
}

impl Overlay {
    /// What is left once `flushed` (an earlier copy of this one) is in the file: the
    /// changes made since it was taken.
    fn without(&self, flushed: &Overlay) -> Overlay {
        let mut left = self.clone();
        for (k, v) in flushed.entries.iter() {
            if left.entries.get(k) == Some(v) {
                left.entries.remove(k);
            }
        }
        for (k, v) in flushed.remembered.iter() {
            if left.remembered.get(k) == Some(v) {
                left.remembered.remove(k);
            }
        }
        for (k, v) in flushed.order.iter() {
            if left.order.get(k) == Some(v) {
                left.order.remove(k);
            }
        }
        left.bytes = left
            .entries
            .iter()
            .map(|((b, k), v)| (b.len() + k.len() + v.as_ref().map_or(0, |v| v.len())) as u64)
            .sum();
        left
    }
}

/// The workload store of one controller.
///
/// Applies change an in-memory [`Overlay`] over the file; a flush (every checkpoint
/// and snapshot, and whenever the overlay outgrows [`BUFFERED_BOUND`]) writes it into the
/// file in key order, as one transaction with the log index it reaches. Written per
/// apply instead, a 2,000-payment entry copied ~2,000 random B-tree leaves (8 MiB for
/// 0.8 MiB of records), which halved the settlement job's throughput.
pub struct WorkloadStore {
    path: PathBuf,
    /// Replaced whole when a snapshot is installed; readers hold the old file until done.
    db: RwLock<Arc<Database>>,
    /// Published by each apply; readers take it with a read of the file, as one pair.
    overlay: RwLock<Arc<Overlay>>,
    /// The one applier's; a flush takes it only to drop what it wrote.
    writer: Mutex<()>,
    /// One flush (or install) at a time.
    flushing: Mutex<()>,
}

fn open_db(path: &Path) -> Result<Database, KvError> {
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().expect("workload lock poisoned")
}

impl WorkloadStore {
    /// Opens (or creates) the store at `path`, a file.
    pub fn open(path: &Path) -> Result<WorkloadStore, KvError> {
        // A half-written install left by a crash is of no use: the snapshot comes again.
        let _ = std::fs::remove_file(installing(path));
        Ok(WorkloadStore {
            path: path.to_path_buf(),
            db: RwLock::new(Arc::new(open_db(path)?)),
            overlay: RwLock::default(),
            writer: Mutex::new(()),
            flushing: Mutex::new(()),
        })
    }

    fn db(&self) -> Arc<Database> {
        self.db.read().expect("workload lock poisoned").clone()
    }

    fn overlay(&self) -> Arc<Overlay> {
        self.overlay.read().expect("workload lock poisoned").clone()
    }

    /// The last log index whose workload writes the store holds.
    pub fn applied(&self) -> Result<Option<u64>, KvError> {
        Ok(self.view()?.applied())
    }

    /// Bytes applied and not yet flushed into the file.
    pub fn buffered(&self) -> u64 {
        self.overlay().bytes
    }

    /// The batch the next applies write to; nothing of it is seen until it is
    /// committed.
    pub fn begin(&self) -> Result<WriteBatch<'_>, KvError> {
        let writer = lock(&self.writer);
        let (overlay, file) = {
            let overlay = self.overlay.read().expect("workload lock poisoned");
            let tx = self.db().begin_read().map_err(storage)?;
            (Overlay::clone(&overlay), FileView::new(tx)?)
        };
        Ok(WriteBatch {
            store: self,
            _writer: writer,
            overlay,
            file,
            failed: std::cell::Cell::new(None),
            written: 0,
        })
    }

    /// Writes everything applied so far into the file and makes it durable (one
    /// fsync), with a quick-repair record so that opening the file after a crash does not
    /// walk all of it.
    pub fn sync(&self) -> Result<(), KvError> {
        self.flush(true)
    }

    /// Writes everything applied so far into the file, in key order, in one
    /// transaction (durable or not), then drops from memory what it wrote and was not
    /// changed since. Applies go on meanwhile.
    pub fn flush(&self, durable: bool) -> Result<(), KvError> {
        let _one = lock(&self.flushing);
        let flushed = self.overlay();
        let db = self.db();
        let mut tx = db.begin_write().map_err(storage)?;
        if durable {
            tx.set_quick_repair(true);
        } else {
            tx.set_durability(redb::Durability::None).map_err(storage)?;
        }
        {
            let mut entries = tx.open_table(ENTRIES).map_err(storage)?;
            for ((b, k), v) in flushed.entries.iter() {
                match v {
                    Some(v) => entries.insert((b.as_str(), k.as_str()), &v[..]).map(drop),
                    None => entries.remove((b.as_str(), k.as_str())).map(drop),
                }
                .map_err(storage)?;
            }
            let mut remembered = tx.open_table(REMEMBERED).map_err(storage)?;
            for (id, v) in flushed.remembered.iter() {
                match v {
                    Some((seq, outcome)) => remembered
                        .insert(id.as_str(), (*seq, &outcome[..]))
                        .map(drop),
                    None => remembered.remove(id.as_str()).map(drop),
                }
                .map_err(storage)?;
            }
            let mut order = tx.open_table(REMEMBERED_ORDER).map_err(storage)?;
            for (seq, id) in flushed.order.iter() {
                match id {
                    Some(id) => order.insert(*seq, id.as_str()).map(drop),
                    None => order.remove(*seq).map(drop),
                }
                .map_err(storage)?;
            }
            let mut meta = tx.open_table(META).map_err(storage)?;
            if let Some(next) = flushed.next {
                meta.insert("next", next).map_err(storage)?;
            }
            if let Some(applied) = flushed.applied {
                meta.insert("applied", applied).map_err(storage)?;
            }
        }
        tx.commit().map_err(storage)?;
        // Applies wait while what is left is worked out; readers go on with the overlay
        // as it is (it and the file now agree on everything it holds).
        let _writer = lock(&self.writer);
        let live = self.overlay();
        let left = if Arc::ptr_eq(&live, &flushed) {
            Overlay {
                next: live.next,
                applied: live.applied,
                ..Overlay::default()
            }
        } else {
            live.without(&flushed)
        };
        *self.overlay.write().expect("workload lock poisoned") = Arc::new(left);
        Ok(())
    }

    /// A consistent view for reads and snapshots.
    pub fn view(&self) -> Result<View, KvError> {
        let overlay = self.overlay.read().expect("workload lock poisoned");
        let tx = self.db().begin_read().map_err(storage)?;
        Ok(View {
            overlay: overlay.clone(),
            file: FileView::new(tx)?,
        })
    }

    /// Replaces the whole store with the records of a snapshot, which end at log index
    /// `applied`. The new file is written beside the old one and renamed over it, so a
    /// crash leaves one or the other, never a mix.
    pub fn replace(&self, records: &mut impl BufRead, applied: u64) -> Result<Counts, KvError> {
        let _one = lock(&self.flushing);
        let next = installing(&self.path);
        let _ = std::fs::remove_file(&next);
        let counts = {
            let db = open_db(&next)?;
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
        let _writer = lock(&self.writer);
        let mut overlay = self.overlay.write().expect("workload lock poisoned");
        let mut current = self.db.write().expect("workload lock poisoned");
        std::fs::rename(&next, &self.path).map_err(storage)?;
        if let Some(dir) = self.path.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        *current = Arc::new(open_db(&self.path)?);
        *overlay = Arc::default();
        Ok(counts)
    }
}

fn installing(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".installing");
    PathBuf::from(name)
}

/// The file's tables as of one read transaction.
struct FileView {
    entries: ReadOnlyTable<(&'static str, &'static str), &'static [u8]>,
    remembered: ReadOnlyTable<&'static str, (u64, &'static [u8])>,
    order: ReadOnlyTable<u64, &'static str>,
    applied: Option<u64>,
    next: Option<u64>,
}

impl FileView {
    fn new(tx: ReadTransaction) -> Result<FileView, KvError> {
        let meta = tx.open_table(META).map_err(storage)?;
        Ok(FileView {
            entries: tx.open_table(ENTRIES).map_err(storage)?,
            remembered: tx.open_table(REMEMBERED).map_err(storage)?,
            order: tx.open_table(REMEMBERED_ORDER).map_err(storage)?,
            applied: meta.get("applied").map_err(storage)?.map(|v| v.value()),
            next: meta.get("next").map_err(storage)?.map(|v| v.value()),
        })
    }

    fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.entries
            .get((bucket, key))
            .map(|v| v.map(|v| v.value().to_vec()))
            .map_err(storage)
    }

    fn remembered(&self, id: &str) -> Result<Option<Remembrance>, KvError> {
        Ok(self.remembered.get(id).map_err(storage)?.map(|v| {
            let (seq, outcome) = v.value();
            (seq, Arc::from(outcome))
        }))
    }

    fn order(&self, seq: u64) -> Result<Option<String>, KvError> {
        Ok(self
            .order
            .get(seq)
            .map_err(storage)?
            .map(|v| v.value().to_string()))
    }
}

/// The overlay's answer for a key if it has one, else the file's.
fn newest<T: Clone>(
    in_memory: Option<&Option<T>>,
    in_file: impl FnOnce() -> Result<Option<T>, KvError>,
) -> Result<Option<T>, KvError> {
    match in_memory {
        Some(v) => Ok(v.clone()),
        None => in_file(),
    }
}

/// Visits the union of `file` (in key order) and `memory` (in key order, newer; `None`:
/// removed) in key order — memory's entry where both have the key, none where memory
/// removed it — until `each` answers `false`.
fn merge<K: Ord, V>(
    file: impl Iterator<Item = Result<(K, V), KvError>>,
    memory: impl Iterator<Item = (K, Option<V>)>,
    mut each: impl FnMut(K, V) -> Result<bool, KvError>,
) -> Result<(), KvError> {
    enum Take {
        File,
        Memory,
        MemoryOverFile,
    }
    let (mut file, mut memory) = (file.peekable(), memory.peekable());
    loop {
        let take = match (file.peek(), memory.peek()) {
            (None, None) => return Ok(()),
            (Some(Err(_)), _) | (Some(Ok(_)), None) => Take::File,
            (None, Some(_)) => Take::Memory,
            (Some(Ok((f, _))), Some((m, _))) => match f.cmp(m) {
                Ordering::Less => Take::File,
                Ordering::Equal => Take::MemoryOverFile,
                Ordering::Greater => Take::Memory,
            },
        };
        let (k, v) = match take {
            Take::File => file.next().expect("peeked")?,
            Take::Memory | Take::MemoryOverFile => {
                if matches!(take, Take::MemoryOverFile) {
                    file.next();
                }
                match memory.next().expect("peeked") {
                    (k, Some(v)) => (k, v),
                    (_, None) => continue,
                }
            }
        };
        if !each(k, v)? {
            return Ok(());
        }
    }
}

/// One batch of applies: they read through it and write to it, and [`WriteBatch::commit`]
/// makes them what readers see. The first storage error is kept, for the state machine
/// to stop on.
pub struct WriteBatch<'s> {
    store: &'s WorkloadStore,
    _writer: MutexGuard<'s, ()>,
    overlay: Overlay,
    file: FileView,
    failed: std::cell::Cell<Option<KvError>>,
    /// Bytes of keys and values stored through this batch.
    pub written: u64,
}

impl WriteBatch<'_> {
    /// The last log index the store held when the batch began.
    pub fn applied(&self) -> Result<Option<u64>, KvError> {
        Ok(self.overlay.applied.or(self.file.applied))
    }

    pub fn set_applied(&mut self, index: u64) -> Result<(), KvError> {
        self.overlay.applied = Some(index);
        Ok(())
    }

    /// The first storage error met since the batch began.
    pub fn failed(&self) -> Option<KvError> {
        let first = self.failed.take();
        self.failed.set(first.clone());
        first
    }

    /// Makes the batch what readers (and the next batch) see.
    pub fn commit(self) -> Result<(), KvError> {
        *self.store.overlay.write().expect("workload lock poisoned") = Arc::new(self.overlay);
        Ok(())
    }

    fn noted<T>(&self, r: Result<T, KvError>) -> Result<T, KvError> {
        if let Err(e) = &r {
            let first = self.failed.take();
            self.failed.set(Some(first.unwrap_or_else(|| e.clone())));
        }
        r
    }

    fn remembered_raw(&self, id: &str) -> Result<Option<Remembrance>, KvError> {
        newest(self.overlay.remembered.get(id), || self.file.remembered(id))
    }
}

impl Workload for WriteBatch<'_> {
    fn read(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let in_memory = self
            .overlay
            .entries
            .get(&(bucket.to_string(), key.to_string()));
        let r = match in_memory {
            Some(v) => Ok(v.as_ref().map(|v| v.to_vec())),
            None => self.file.get(bucket, key),
        };
        self.noted(r)
    }

    fn store(&mut self, bucket: &str, key: &str, value: Option<&[u8]>) -> Result<(), KvError> {
        let len = value.map_or(0, <[u8]>::len);
        self.written += (key.len() + len) as u64;
        self.overlay.bytes += (bucket.len() + key.len() + len) as u64;
        self.overlay
            .entries
            .insert((bucket.to_string(), key.to_string()), value.map(Arc::from));
        Ok(())
    }

    fn remembered(&self, id: &str) -> Result<Option<Remembered>, KvError> {
        let r = self.remembered_raw(id).and_then(|found| match found {
            Some((_, outcome)) => serde_json::from_slice(&outcome).map(Some).map_err(storage),
            None => Ok(None),
        });
        self.noted(r)
    }

    fn remember(&mut self, id: &str, outcome: &Remembered) -> Result<(), KvError> {
        let r = (|| {
            let seq = self.overlay.next.or(self.file.next).unwrap_or(0);
            let json = serde_json::to_vec(outcome).map_err(storage)?;
            self.overlay
                .remembered
                .insert(id.to_string(), Some((seq, Arc::from(json))));
            self.overlay.order.insert(seq, Some(id.to_string()));
            self.overlay.next = Some(seq + 1);
            if let Some(old_seq) = seq.checked_sub(KV_WRITE_MEMORY as u64)
                && let Some(old) = newest(self.overlay.order.get(&old_seq), || {
                    self.file.order(old_seq)
                })?
            {
                self.overlay.order.insert(old_seq, None);
                // The id may have been forgotten and written again since: only its
                // old remembrance goes.
                let stale = self
                    .remembered_raw(&old)?
                    .is_some_and(|(seq, _)| seq == old_seq);
                if stale {
                    self.overlay.remembered.insert(old, None);
                }
            }
            Ok(())
        })();
        self.noted(r)
    }
}

/// A consistent read of the store — memory and file as of one moment: what the API
/// reads and what a snapshot is built from.
pub struct View {
    overlay: Arc<Overlay>,
    file: FileView,
}

impl View {
    /// The last log index this view holds.
    pub fn applied(&self) -> Option<u64> {
        self.overlay.applied.or(self.file.applied)
    }

    pub fn read_many(
        &self,
        bucket: &str,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        let mut probe = (bucket.to_string(), String::new());
        keys.iter()
            .map(|k| {
                if self.overlay.entries.is_empty() {
                    return self.file.get(bucket, k);
                }
                k.clone_into(&mut probe.1);
                match self.overlay.entries.get(&probe) {
                    Some(v) => Ok(v.as_ref().map(|v| v.to_vec())),
                    None => self.file.get(bucket, k),
                }
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
        let file = self
            .file
            .entries
            .range::<(&str, &str)>((start, Bound::Unbounded))
            .map_err(storage)?
            .map(|entry| {
                let (k, _) = entry.map_err(storage)?;
                let (b, key) = k.value();
                Ok((b == bucket).then(|| key.to_string()))
            })
            .map_while(|r: Result<Option<String>, KvError>| r.transpose())
            .map(|r| r.map(|k| (k, ())));
        let owned_start = match cursor {
            Some(c) => Bound::Excluded((bucket.to_string(), c.to_string())),
            None => Bound::Included((bucket.to_string(), String::new())),
        };
        let memory = self
            .overlay
            .entries
            .range((owned_start, Bound::Unbounded))
            .take_while(|((b, _), _)| b == bucket)
            .map(|((_, k), v)| (k.clone(), v.as_ref().map(|_| ())));
        let mut keys = Vec::new();
        if limit > 0 {
            merge(file, memory, |k, ()| {
                keys.push(k);
                Ok(keys.len() < limit)
            })?;
        }
        Ok(keys)
    }

    /// How many keys the store holds, over all buckets.
    pub fn keys_held(&self) -> Result<u64, KvError> {
        let mut held = self.file.entries.len().map_err(storage)?;
        for ((b, k), v) in self.overlay.entries.iter() {
            match (self.file.get(b, k)?.is_some(), v.is_some()) {
                (false, true) => held += 1,
                (true, false) => held -= 1,
                _ => {}
            }
        }
        Ok(held)
    }

    fn remembered(&self, id: &str) -> Result<Option<Remembrance>, KvError> {
        newest(self.overlay.remembered.get(id), || self.file.remembered(id))
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
    let file = view.file.entries.iter().map_err(storage)?.map(|entry| {
        let (k, v) = entry.map_err(storage)?;
        let (bucket, key) = k.value();
        Ok(((bucket.to_string(), key.to_string()), v.value().to_vec()))
    });
    let memory = view
        .overlay
        .entries
        .iter()
        .map(|(k, v)| (k.clone(), v.as_ref().map(|v| v.to_vec())));
    merge(file, memory, |(bucket, key), value| {
        (|| {
            out.write_all(&[ENTRY])?;
            field(out, bucket.as_bytes())?;
            field(out, key.as_bytes())?;
            field(out, &value)
        })()
        .map_err(storage)?;
        counts.entries += 1;
        Ok(true)
    })?;
    let file = view.file.order.iter().map_err(storage)?.map(|entry| {
        let (seq, id) = entry.map_err(storage)?;
        Ok((seq.value(), id.value().to_string()))
    });
    let memory = view
        .overlay
        .order
        .iter()
        .map(|(seq, id)| (*seq, id.clone()));
    merge(file, memory, |seq, id| {
        let Some((remembered_seq, outcome)) = view.remembered(&id)? else {
            return Ok(true);
        };
        if remembered_seq != seq {
            return Ok(true);
        }
        (|| {
            out.write_all(&[REMEMBERED_WRITE])?;
            field(out, id.as_bytes())?;
            out.write_all(&seq.to_le_bytes())?;
            field(out, &outcome)
        })()
        .map_err(storage)?;
        counts.remembered += 1;
        Ok(true)
    })?;
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
    use std::collections::BTreeMap;

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
        let store = WorkloadStore::open(&dir.path().join("kv.redb")).unwrap();
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
        let mut on_disk = Vec::new();
        {
            let mut tables = store.begin().unwrap();
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
            tables.commit().unwrap();
        }
        let in_memory: Vec<_> = writes
            .iter()
            .map(|(b, w, id)| crate::state::apply_kv(&mut memory, b, w, id.as_deref()))
            .collect();
        assert_eq!(on_disk, in_memory);

        let view = store.view().unwrap();
        assert_eq!(view.applied(), Some(7));
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
        let store = WorkloadStore::open(&dir.path().join("a.redb")).unwrap();
        {
            let mut tables = store.begin().unwrap();
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
            tables.commit().unwrap();
        }
        let mut bytes = Vec::new();
        let counts = dump(&store.view().unwrap(), &mut bytes).unwrap();
        assert_eq!(
            counts,
            Counts {
                entries: 120_000,
                remembered: 40_000
            }
        );

        let other = WorkloadStore::open(&dir.path().join("b.redb")).unwrap();
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
        {
            let mut tables = other.begin().unwrap();
            let again = crate::state::apply_kv(
                &mut tables,
                "ledger",
                &KvWrite::Put(vec![("p0000003".into(), None)]),
                Some("id-3"),
            );
            assert_eq!(again, Ok(Outcome::Done));
            assert!(tables.read("ledger", "p0000003").unwrap().is_some());
        }

        let cut = &bytes[..bytes.len() / 2];
        let third = WorkloadStore::open(&dir.path().join("c.redb")).unwrap();
        let err = third.replace(&mut &cut[..], 99).unwrap_err();
        assert!(err.to_string().contains("end early"), "{err}");
        // What was there is still there (nothing), and still answers.
        assert_eq!(third.view().unwrap().keys_held().unwrap(), 0);
        assert_eq!(third.applied().unwrap(), None);
    }

    /// Every key of every bucket `view` holds, listed a page at a time (so the cursor
    /// crosses from memory to file and back), with its value.
    fn contents(view: &View, buckets: &[&str]) -> BTreeMap<String, BTreeMap<String, Vec<u8>>> {
        let mut out = BTreeMap::new();
        for bucket in buckets {
            let mut keys: Vec<String> = Vec::new();
            loop {
                let page = view
                    .keys(bucket, keys.last().map(String::as_str), 333)
                    .unwrap();
                if page.is_empty() {
                    break;
                }
                keys.extend(page);
            }
            let values = view.read_many(bucket, &keys).unwrap();
            let listed: BTreeMap<String, Vec<u8>> = keys
                .into_iter()
                .zip(
                    values
                        .into_iter()
                        .map(|v| v.expect("a listed key has a value")),
                )
                .collect();
            if !listed.is_empty() {
                out.insert(bucket.to_string(), listed);
            }
        }
        out
    }

    const BUCKETS: [&str; 3] = ["b0", "b1", "b2"];

    fn snapshot_bytes(view: &View) -> Vec<u8> {
        let mut bytes = Vec::new();
        dump(view, &mut bytes).unwrap();
        bytes
    }

    /// Applied in batches with flushes between them (durable, not durable, none), the
    /// store answers as one in memory does: keys listed across memory and file, keys
    /// removed after they reached the file, remembered writes forgotten after they
    /// reached it. A flush changes no byte of a snapshot; what was not flushed is not
    /// in the file when it is opened again, which says where it stops.
    #[test]
    fn flushes_between_batches_change_no_answer_and_no_snapshot_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.redb");
        let store = WorkloadStore::open(&path).unwrap();
        let mut memory = MemoryWorkload::default();
        // More identified writes than are remembered: the first are forgotten.
        let n = KV_WRITE_MEMORY as u32 + 5_000;
        let write = |i: u32| -> (String, KvWrite, Option<String>) {
            let bucket = format!("b{}", i % 3);
            let w = match i % 5 {
                0 => increment(&format!("n{}", i % 7)),
                1 | 2 => KvWrite::Put(vec![(
                    format!("k{}", i % 20_000),
                    Some(i.to_le_bytes().to_vec()),
                )]),
                3 => KvWrite::Put(vec![(format!("k{}", (i * 7) % 20_000), None)]),
                _ => KvWrite::Swap {
                    key: "claim".into(),
                    expected: None,
                    value: vec![i as u8],
                },
            };
            // Every 11th is a retry of an earlier write.
            let id = if i.is_multiple_of(11) {
                i.saturating_sub(5)
            } else {
                i
            };
            (bucket, w, Some(format!("w{id}")))
        };
        let mut writes: Vec<_> = (0..n).map(write).collect();
        // At the end, retries of the oldest (forgotten: applied again) and the newest.
        writes.extend((0..10).chain(n - 10..n).map(write));
        let (mut on_disk, mut in_memory) = (Vec::new(), Vec::new());
        for (batch, chunk) in writes.chunks(7_500).enumerate() {
            {
                let mut tables = store.begin().unwrap();
                for (bucket, w, id) in chunk {
                    on_disk.push(crate::state::apply_kv(
                        &mut tables,
                        bucket,
                        w,
                        id.as_deref(),
                    ));
                }
                tables.set_applied(batch as u64 + 1).unwrap();
                assert!(tables.failed().is_none());
                tables.commit().unwrap();
            }
            for (bucket, w, id) in chunk {
                in_memory.push(crate::state::apply_kv(
                    &mut memory,
                    bucket,
                    w,
                    id.as_deref(),
                ));
            }
            let view = store.view().unwrap();
            assert_eq!(contents(&view, &BUCKETS), memory.buckets, "batch {batch}");
            let keys: u64 = memory.buckets.values().map(|b| b.len() as u64).sum();
            assert_eq!(view.keys_held().unwrap(), keys, "batch {batch}");
            let before = snapshot_bytes(&view);
            drop(view);
            match batch % 3 {
                0 => store.sync().unwrap(),
                1 => store.flush(false).unwrap(),
                _ => continue,
            }
            assert_eq!(store.buffered(), 0, "batch {batch}");
            assert!(
                snapshot_bytes(&store.view().unwrap()) == before,
                "batch {batch}: a flush changed the snapshot"
            );
        }
        assert_eq!(on_disk.len(), in_memory.len());
        for (i, (d, m)) in on_disk.iter().zip(&in_memory).enumerate() {
            assert_eq!(d, m, "write {i}: {:?}", writes[i]);
        }
        let view = store.view().unwrap();
        assert_eq!(view.applied(), Some(15));

        // Reopened: the file holds what the last flush wrote (to 15), not what came after.
        store.sync().unwrap();
        let flushed = contents(&store.view().unwrap(), &BUCKETS);
        {
            let mut tables = store.begin().unwrap();
            tables.store("b0", "late", Some(b"x")).unwrap();
            tables.set_applied(16).unwrap();
            tables.commit().unwrap();
        }
        drop(view);
        drop(store);
        let store = WorkloadStore::open(&path).unwrap();
        assert_eq!(store.applied().unwrap(), Some(15));
        assert_eq!(contents(&store.view().unwrap(), &BUCKETS), flushed);
    }

    /// What a flush leaves in memory: the changes made after its copy was taken, and
    /// nothing it wrote.
    #[test]
    fn a_flush_keeps_in_memory_only_what_changed_after_it_began() {
        let mut flushed = Overlay::default();
        let key = |k: &str| ("b".to_string(), k.to_string());
        let value = |v: &[u8]| Some(Arc::<[u8]>::from(v));
        flushed.entries.insert(key("same"), value(b"1"));
        flushed.entries.insert(key("changed"), value(b"1"));
        flushed.entries.insert(key("removed"), value(b"1"));
        flushed.order.insert(1, Some("w1".into()));
        flushed
            .remembered
            .insert("w1".into(), Some((1, Arc::from(&b"{}"[..]))));
        let mut live = flushed.clone();
        live.entries.insert(key("changed"), value(b"22"));
        live.entries.insert(key("removed"), None);
        live.entries.insert(key("new"), value(b"333"));
        live.order.insert(2, Some("w2".into()));
        let left = live.without(&flushed);
        let entries: Vec<_> = left
            .entries
            .iter()
            .map(|(k, v)| (k.1.clone(), v.clone()))
            .collect();
        assert_eq!(
            entries,
            [
                ("changed".to_string(), value(b"22")),
                ("new".to_string(), value(b"333")),
                ("removed".to_string(), None),
            ]
        );
        assert!(left.remembered.is_empty());
        assert_eq!(left.order.keys().copied().collect::<Vec<_>>(), [2]);
        assert_eq!(left.bytes, (1 + 7 + 2) + (1 + 3 + 3) + (1 + 7));
    }
}
