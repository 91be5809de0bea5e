//! Buckets on local disk in [redb](https://docs.rs/redb), with group commit.
//!
//! Why redb: it is pure Rust (no C toolchain, no external process), transactional with
//! copy-on-write B-trees, and its default durability fsyncs on every commit, which is
//! exactly the acknowledgment rule we need. One file holds every bucket; keys are
//! `(bucket, key)` pairs so a bucket lists in key order with one range scan.
//!
//! Writes are handed to one writer thread. It takes every write that is waiting,
//! applies them in one transaction (each write all-or-nothing; a write that fails, like
//! an increment of a non-counter, changes nothing and does not disturb the others),
//! commits with one fsync, and only then answers each caller. Under load, many guests'
//! writes share one fsync; alone, a write pays one.

use std::path::Path;
use std::sync::{Arc, mpsc};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use dabba_spec::kv::{Bucket, apply, check_write, page};

use super::{KvError, LocalKv, Outcome, Write, WriteFuture};

const ENTRIES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("entries");

/// Writes committed together at most.
const MAX_GROUP: usize = 512;

struct Pending {
    bucket: String,
    write: Write,
    reply: oneshot::Sender<Result<Outcome, KvError>>,
}

pub struct RedbKv {
    db: Arc<Database>,
    writer: mpsc::Sender<Pending>,
}

fn storage(e: impl std::fmt::Display) -> KvError {
    KvError::storage(e)
}

impl RedbKv {
    /// Opens (or creates) the store at `path`, a file.
    pub fn open(path: &Path) -> Result<RedbKv, KvError> {
        let db = Database::create(path)
            .map_err(|e| KvError::storage(format!("opening {}: {e}", path.display())))?;
        let tx = db.begin_write().map_err(storage)?;
        tx.open_table(ENTRIES).map_err(storage)?;
        tx.commit().map_err(storage)?;
        let db = Arc::new(db);
        let (writer, inbox) = mpsc::channel::<Pending>();
        let thread_db = db.clone();
        std::thread::Builder::new()
            .name("dabba-kv-writer".into())
            .spawn(move || writer_loop(&thread_db, &inbox))
            .map_err(storage)?;
        Ok(RedbKv { db, writer })
    }
}

fn writer_loop(db: &Database, inbox: &mpsc::Receiver<Pending>) {
    while let Ok(first) = inbox.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match inbox.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        commit_group(db, group);
    }
}

fn commit_group(db: &Database, group: Vec<Pending>) {
    let mut outcomes: Vec<Result<Outcome, KvError>> = Vec::with_capacity(group.len());
    let committed = (|| -> Result<(), KvError> {
        let tx = db.begin_write().map_err(storage)?;
        {
            let mut table = tx.open_table(ENTRIES).map_err(storage)?;
            for p in &group {
                let mut bucket = TableBucket {
                    table: &mut table,
                    bucket: &p.bucket,
                };
                outcomes.push(apply(&mut bucket, &p.write));
            }
        }
        tx.commit().map_err(storage)
    })();
    match committed {
        Ok(()) => {
            for (p, outcome) in group.into_iter().zip(outcomes) {
                let _ = p.reply.send(outcome);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, writes = group.len(), "key-value commit failed");
            for p in group {
                let _ = p.reply.send(Err(e.clone()));
            }
        }
    }
}

/// One bucket inside an open write transaction.
struct TableBucket<'t, 'txn> {
    table: &'t mut redb::Table<'txn, (&'static str, &'static str), &'static [u8]>,
    bucket: &'t str,
}

impl Bucket for TableBucket<'_, '_> {
    fn read(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.table
            .get((self.bucket, key))
            .map(|v| v.map(|g| g.value().to_vec()))
            .map_err(KvError::storage)
    }
    fn store(&mut self, key: &str, value: Option<&[u8]>) -> Result<(), KvError> {
        match value {
            Some(v) => self.table.insert((self.bucket, key), v).map(drop),
            None => self.table.remove((self.bucket, key)).map(drop),
        }
        .map_err(KvError::storage)
    }
}

impl LocalKv for RedbKv {
    fn read_one(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let tx = self.db.begin_read().map_err(storage)?;
        let table = tx.open_table(ENTRIES).map_err(storage)?;
        let value = table.get((bucket, key)).map_err(storage)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn read_many(&self, bucket: &str, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        let tx = self.db.begin_read().map_err(storage)?;
        let table = tx.open_table(ENTRIES).map_err(storage)?;
        keys.iter()
            .map(|k| {
                table
                    .get((bucket, k.as_str()))
                    .map(|v| v.map(|v| v.value().to_vec()))
                    .map_err(storage)
            })
            .collect()
    }

    fn read_keys(
        &self,
        bucket: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<String>), KvError> {
        use std::ops::Bound;
        let tx = self.db.begin_read().map_err(storage)?;
        let table = tx.open_table(ENTRIES).map_err(storage)?;
        let start = match cursor {
            Some(c) => Bound::Excluded((bucket, c)),
            None => Bound::Included((bucket, "")),
        };
        let mut keys = Vec::new();
        for entry in table
            .range::<(&str, &str)>((start, Bound::Unbounded))
            .map_err(storage)?
        {
            let (k, _) = entry.map_err(storage)?;
            let (b, key) = k.value();
            if b != bucket || keys.len() > limit {
                break;
            }
            keys.push(key.to_string());
        }
        Ok(page(keys, limit))
    }
    fn write_local(&self, bucket: &str, write: Write) -> WriteFuture {
        if let Err(e) = check_write(&write) {
            return Box::pin(std::future::ready(Err(e)));
        }
        let (reply, answer) = oneshot::channel();
        let sent = self.writer.send(Pending {
            bucket: bucket.to_string(),
            write,
            reply,
        });
        Box::pin(async move {
            if sent.is_err() {
                return Err(KvError::storage("the key-value writer has stopped"));
            }
            answer
                .await
                .unwrap_or_else(|_| Err(KvError::storage("the key-value writer has stopped")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::KvBackend as _;

    #[tokio::test]
    async fn conforms() {
        let dir = tempfile::tempdir().unwrap();
        let kv = RedbKv::open(&dir.path().join("kv.redb")).unwrap();
        super::super::conformance::check(&kv).await;
    }

    #[tokio::test]
    async fn acknowledged_writes_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.redb");
        {
            let kv = RedbKv::open(&path).unwrap();
            let writes: Vec<_> = (0..200)
                .map(|i| {
                    kv.write(
                        "b",
                        Write::Increment {
                            key: format!("n{}", i % 7),
                            delta: 1,
                        },
                    )
                })
                .collect();
            for w in writes {
                w.await.unwrap();
            }
        }
        // The writer thread ends when the store is dropped; give it a moment to release
        // the file before reopening.
        let kv = loop {
            match RedbKv::open(&path) {
                Ok(kv) => break kv,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        };
        let total: i64 = (0..7)
            .map(|i| {
                let v = kv.read_one("b", &format!("n{i}")).unwrap().unwrap();
                String::from_utf8(v).unwrap().parse::<i64>().unwrap()
            })
            .sum();
        assert_eq!(total, 200);
    }

    #[tokio::test]
    async fn concurrent_swaps_let_exactly_one_win() {
        let dir = tempfile::tempdir().unwrap();
        let kv = Arc::new(RedbKv::open(&dir.path().join("kv.redb")).unwrap());
        let racers: Vec<_> = (0..32)
            .map(|i| {
                kv.write(
                    "b",
                    Write::Swap {
                        key: "claim".into(),
                        expected: None,
                        value: format!("racer {i}").into_bytes(),
                    },
                )
            })
            .collect();
        let mut wins = 0;
        for r in racers {
            if r.await.unwrap() == Outcome::Swapped {
                wins += 1;
            }
        }
        assert_eq!(wins, 1);
    }
}
