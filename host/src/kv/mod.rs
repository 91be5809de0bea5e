//! Workload state: the storage behind `wasi:keyvalue`.
//!
//! Guests see buckets of key-value pairs. The host keeps them in a [`KvBackend`]:
//! [`MemoryKv`] (lost on exit, for tests and `dabba serve` without `--kv-dir`) or
//! [`RedbKv`] (an embedded store on local disk; a write is acknowledged only after the
//! transaction holding it is fsync'd) for a single host, and [`ReplicatedKv`] (buckets in
//! the controllers' Raft state machine) for hosts that belong to a cluster.
//!
//! Reads are answered directly. Writes go through [`KvBackend::write`]; a [`Write`] is
//! applied atomically, and a backend may commit many concurrent writes in one
//! transaction (group commit) so that durable writes are not limited by fsync latency.

mod memory;
mod redb_store;
mod replicated;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use dabba_spec::cronjob::Fence;

pub use memory::MemoryKv;
pub use redb_store::RedbKv;
pub use replicated::ReplicatedKv;

pub use dabba_spec::kv::{KvError, LIST_PAGE, MAX_KEY_BYTES, MAX_VALUE_BYTES, Outcome, Write};

/// The answer of a backend call, once it is ready (a replicated backend asks the
/// controller over the network).
pub type KvFuture<T> = Pin<Box<dyn Future<Output = Result<T, KvError>> + Send>>;
pub type WriteFuture = KvFuture<Outcome>;

/// A store of buckets. Bucket names are chosen by the host (already scoped to the app's
/// namespace); keys and values by the guest.
pub trait KvBackend: Send + Sync + 'static {
    fn get(&self, bucket: &str, key: &str) -> KvFuture<Option<Vec<u8>>>;

    fn get_many(&self, bucket: &str, keys: &[String]) -> KvFuture<Vec<Option<Vec<u8>>>>;

    /// Up to `limit` keys after `cursor`, in byte order, and the cursor of the next page.
    fn list_keys(
        &self,
        bucket: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> KvFuture<(Vec<String>, Option<String>)>;

    /// Applies `write` atomically. The future resolves once the write is durable.
    fn write(&self, bucket: &str, write: Write) -> WriteFuture;

    /// This store as cron job attempt `fence` writes to it: each write is applied only
    /// while that attempt is the run's attempt running now. `None` where no other host
    /// can run the attempt (a store on this host alone): the store as it is.
    fn fenced(&self, _fence: Fence) -> Option<Arc<dyn KvBackend>> {
        None
    }
}

/// A backend on this host (memory or local disk) that answers reads at once. Every
/// such backend is a [`KvBackend`] whose read futures are already resolved.
pub trait LocalKv: Send + Sync + 'static {
    fn read_one(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, KvError>;

    fn read_many(&self, bucket: &str, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        keys.iter().map(|k| self.read_one(bucket, k)).collect()
    }

    fn read_keys(
        &self,
        bucket: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<String>), KvError>;

    /// Applies `write` atomically; the future resolves once it is durable.
    fn write_local(&self, bucket: &str, write: Write) -> WriteFuture;
}

impl<T: LocalKv> KvBackend for T {
    fn get(&self, bucket: &str, key: &str) -> KvFuture<Option<Vec<u8>>> {
        ready(self.read_one(bucket, key))
    }

    fn get_many(&self, bucket: &str, keys: &[String]) -> KvFuture<Vec<Option<Vec<u8>>>> {
        ready(self.read_many(bucket, keys))
    }

    fn list_keys(
        &self,
        bucket: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> KvFuture<(Vec<String>, Option<String>)> {
        ready(self.read_keys(bucket, cursor, limit))
    }

    fn write(&self, bucket: &str, write: Write) -> WriteFuture {
        self.write_local(bucket, write)
    }
}

/// A future already resolved, for backends that answer from local memory or disk.
pub fn ready<T: Send + 'static>(r: Result<T, KvError>) -> KvFuture<T> {
    Box::pin(std::future::ready(r))
}

#[cfg(test)]
pub(crate) mod conformance {
    //! Behaviour every backend must share, run against each of them.

    use super::*;

    pub async fn check(kv: &dyn KvBackend) {
        let b = "ns/app";
        assert_eq!(kv.get(b, "a").await.unwrap(), None);
        kv.write(b, Write::Put(vec![("a".into(), Some(b"1".to_vec()))]))
            .await
            .unwrap();
        assert_eq!(kv.get(b, "a").await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(
            kv.get("ns/other", "a").await.unwrap(),
            None,
            "buckets are separate"
        );

        // Counters.
        let inc = |d| Write::Increment {
            key: "n".into(),
            delta: d,
        };
        assert_eq!(kv.write(b, inc(5)).await.unwrap(), Outcome::Counter(5));
        assert_eq!(kv.write(b, inc(-7)).await.unwrap(), Outcome::Counter(-2));
        assert_eq!(kv.get(b, "n").await.unwrap(), Some(b"-2".to_vec()));
        kv.write(
            b,
            Write::Put(vec![(
                "big".into(),
                Some(i64::MAX.to_string().into_bytes()),
            )]),
        )
        .await
        .unwrap();
        assert!(matches!(
            kv.write(
                b,
                Write::Increment {
                    key: "big".into(),
                    delta: 1
                }
            )
            .await,
            Err(KvError::Overflow { .. })
        ));
        kv.write(b, Write::Put(vec![("word".into(), Some(b"one".to_vec()))]))
            .await
            .unwrap();
        assert!(matches!(
            kv.write(
                b,
                Write::Increment {
                    key: "word".into(),
                    delta: 1
                }
            )
            .await,
            Err(KvError::NotACounter { .. })
        ));
        assert_eq!(
            kv.get(b, "word").await.unwrap(),
            Some(b"one".to_vec()),
            "a failed write changes nothing"
        );

        // Compare-and-swap.
        let swap = |expected: Option<&[u8]>, value: &[u8]| Write::Swap {
            key: "c".into(),
            expected: expected.map(<[u8]>::to_vec),
            value: value.to_vec(),
        };
        assert_eq!(
            kv.write(b, swap(None, b"x")).await.unwrap(),
            Outcome::Swapped
        );
        assert_eq!(
            kv.write(b, swap(None, b"y")).await.unwrap(),
            Outcome::Conflict(Some(b"x".to_vec()))
        );
        assert_eq!(
            kv.write(b, swap(Some(b"x"), b"z")).await.unwrap(),
            Outcome::Swapped
        );
        assert_eq!(kv.get(b, "c").await.unwrap(), Some(b"z".to_vec()));

        // Batches and deletes.
        kv.write(
            b,
            Write::Put(vec![
                ("k1".into(), Some(b"v1".to_vec())),
                ("k2".into(), Some(b"v2".to_vec())),
                ("a".into(), None),
            ]),
        )
        .await
        .unwrap();
        assert_eq!(
            kv.get_many(b, &["k1".into(), "zz".into(), "a".into(), "k2".into()])
                .await
                .unwrap(),
            vec![Some(b"v1".to_vec()), None, None, Some(b"v2".to_vec())]
        );

        // Listing pages through every key of one bucket, in order.
        let many: Vec<(String, Option<Vec<u8>>)> = (0..25)
            .map(|i| (format!("p{i:03}"), Some(vec![0])))
            .collect();
        kv.write("ns/list", Write::Put(many)).await.unwrap();
        kv.write("ns/lisu", Write::Put(vec![("zzz".into(), Some(vec![1]))]))
            .await
            .unwrap();
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let (keys, next) = kv
                .list_keys("ns/list", cursor.as_deref(), 10)
                .await
                .unwrap();
            assert!(keys.len() <= 10);
            seen.extend(keys);
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen.len(), 25);
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(seen[0], "p000");
    }
}
