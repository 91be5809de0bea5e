//! Workload buckets: what a `Kv` command does. Writes follow the semantics every backend
//! shares (`dabba_spec::kv`); a write with an id is applied at most once, its outcome
//! remembered for [`KV_WRITE_MEMORY`] writes.
//!
//! The buckets are not part of [`State`](super::State): a payment ledger grows every
//! day, and the state is held in memory and copied whole into every snapshot. They live
//! in a [`Workload`] store instead, handed to [`State::apply_with`](super::State::apply_with):
//! on a controller a redb file (`crate::raft::workload`), written in the same
//! transaction as the log index it has applied; in tests, [`MemoryWorkload`]. The
//! outcomes of identified writes live with the buckets, so "applied" and "remembered"
//! can never disagree after a restart.

use std::collections::{BTreeMap, VecDeque};

use dabba_spec::kv::{self, Bucket, KvError, Outcome, Write};

/// How many identified KV writes are remembered for deduplication. A retry comes within
/// seconds; at 10,000 writes/s this covers the last ten.
pub const KV_WRITE_MEMORY: usize = 100_000;

/// What an identified write answered the first time.
pub type Remembered = Result<Outcome, KvError>;

/// Where the state machine keeps workload buckets and the outcomes of identified writes.
///
/// A storage failure inside these calls is not an answer to give a client (another
/// controller would not have failed the same way): implementations return it as
/// `KvError::Storage`, and the state machine stops applying when it sees one.
pub trait Workload {
    fn read(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    fn store(&mut self, bucket: &str, key: &str, value: Option<&[u8]>) -> Result<(), KvError>;
    /// The outcome of the identified write `id`, if it is still remembered.
    fn remembered(&self, id: &str) -> Result<Option<Remembered>, KvError>;
    /// Remembers the outcome of `id`, forgetting the oldest beyond [`KV_WRITE_MEMORY`].
    fn remember(&mut self, id: &str, outcome: &Remembered) -> Result<(), KvError>;
}

/// Applies a `Kv` command to `store`.
pub fn apply_kv(
    store: &mut impl Workload,
    bucket: &str,
    write: &Write,
    id: Option<&str>,
) -> Result<Outcome, KvError> {
    if let Some(id) = id
        && let Some(first) = store.remembered(id)?
    {
        return first;
    }
    let result = kv::apply(&mut InBucket { store, bucket }, write);
    if let Err(KvError::Storage { .. }) = &result {
        return result;
    }
    if let Some(id) = id {
        store.remember(id, &result)?;
    }
    result
}

/// One bucket of a [`Workload`], as `kv::apply` writes it.
struct InBucket<'a, W> {
    store: &'a mut W,
    bucket: &'a str,
}

impl<W: Workload> Bucket for InBucket<'_, W> {
    fn read(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.store.read(self.bucket, key)
    }
    fn store(&mut self, key: &str, value: Option<&[u8]>) -> Result<(), KvError> {
        self.store.store(self.bucket, key, value)
    }
}

/// Workload buckets in memory: for tests of the state machine, and the reference the
/// on-disk store is checked against.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryWorkload {
    pub buckets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    pub remembered: BTreeMap<String, Remembered>,
    order: VecDeque<String>,
}

impl Workload for MemoryWorkload {
    fn read(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.buckets.get(bucket).and_then(|b| b.get(key)).cloned())
    }

    fn store(&mut self, bucket: &str, key: &str, value: Option<&[u8]>) -> Result<(), KvError> {
        match value {
            Some(v) => {
                self.buckets
                    .entry(bucket.to_string())
                    .or_default()
                    .insert(key.to_string(), v.to_vec());
            }
            None => {
                if let Some(b) = self.buckets.get_mut(bucket) {
                    b.remove(key);
                    if b.is_empty() {
                        self.buckets.remove(bucket);
                    }
                }
            }
        }
        Ok(())
    }

    fn remembered(&self, id: &str) -> Result<Option<Remembered>, KvError> {
        Ok(self.remembered.get(id).cloned())
    }

    fn remember(&mut self, id: &str, outcome: &Remembered) -> Result<(), KvError> {
        if self.order.len() == KV_WRITE_MEMORY
            && let Some(oldest) = self.order.pop_front()
        {
            self.remembered.remove(&oldest);
        }
        self.order.push_back(id.to_string());
        self.remembered.insert(id.to_string(), outcome.clone());
        Ok(())
    }
}

/// A store for entries that are already in the real one: a log entry replayed after a
/// restart, whose workload writes the on-disk store applied before the process stopped.
/// Applying them again would apply an increment twice.
pub struct AlreadyApplied;

impl Workload for AlreadyApplied {
    fn read(&self, _: &str, _: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(None)
    }
    fn store(&mut self, _: &str, _: &str, _: Option<&[u8]>) -> Result<(), KvError> {
        Ok(())
    }
    fn remembered(&self, _: &str) -> Result<Option<Remembered>, KvError> {
        Ok(None)
    }
    fn remember(&mut self, _: &str, _: &Remembered) -> Result<(), KvError> {
        Ok(())
    }
}
