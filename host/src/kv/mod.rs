//! Workload state: the storage behind `wasi:keyvalue`.
//!
//! Guests see buckets of key-value pairs. The host keeps them in a [`KvBackend`]:
//! [`MemoryKv`] (lost on exit, for tests and `dabba serve` without `--kv-dir`) or
//! [`RedbKv`] (an embedded store on local disk; a write is acknowledged only after the
//! transaction holding it is fsync'd). The controller will add a replicated backend
//! whose writes are committed through Raft.
//!
//! Reads are answered directly. Writes go through [`KvBackend::write`]; a [`Write`] is
//! applied atomically, and a backend may commit many concurrent writes in one
//! transaction (group commit) so that durable writes are not limited by fsync latency.

mod memory;
mod redb_store;

use std::future::Future;
use std::pin::Pin;

pub use memory::MemoryKv;
pub use redb_store::RedbKv;

/// Keys returned by one `list-keys` call.
pub const LIST_PAGE: usize = 1000;
/// The largest key a guest may write.
pub const MAX_KEY_BYTES: usize = 1024;
/// The largest value a guest may write.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

/// Why a storage operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("`{key}` does not hold a counter")]
    NotACounter { key: String },
    #[error("counter `{key}` would overflow")]
    Overflow { key: String },
    #[error("key of {len} bytes is longer than the {max}-byte limit")]
    KeyTooLong { len: usize, max: usize },
    #[error("value of {len} bytes under `{key}` is larger than the {max}-byte limit")]
    ValueTooLarge { key: String, len: usize, max: usize },
    #[error("storage failed: {0}")]
    Storage(String),
}

/// One atomic write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Set (`Some`) or delete (`None`) each key, all or none.
    Put(Vec<(String, Option<Vec<u8>>)>),
    /// Add `delta` to the decimal counter under `key` (missing counts as 0).
    Increment { key: String, delta: i64 },
    /// Store `value` if `key` currently holds exactly `expected` (`None`: absent).
    Swap {
        key: String,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
    },
}

/// What a [`Write`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Counter(i64),
    /// The swap happened (`Ok`), or the key held this instead (`Err`).
    Swapped(Result<(), Option<Vec<u8>>>),
}

pub type WriteFuture = Pin<Box<dyn Future<Output = Result<Outcome, KvError>> + Send>>;

/// A store of buckets. Bucket names are chosen by the host (already scoped to the app's
/// namespace); keys and values by the guest.
pub trait KvBackend: Send + Sync + 'static {
    fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, KvError>;

    fn get_many(&self, bucket: &str, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        keys.iter().map(|k| self.get(bucket, k)).collect()
    }

    /// Up to `limit` keys after `cursor`, in byte order, and the cursor of the next page.
    fn list_keys(
        &self,
        bucket: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<String>), KvError>;

    /// Applies `write` atomically. The future resolves once the write is durable.
    fn write(&self, bucket: &str, write: Write) -> WriteFuture;
}

/// Checks the sizes in a write before it reaches storage.
pub fn check_write(write: &Write) -> Result<(), KvError> {
    let key_ok = |k: &str| {
        if k.len() > MAX_KEY_BYTES {
            Err(KvError::KeyTooLong {
                len: k.len(),
                max: MAX_KEY_BYTES,
            })
        } else {
            Ok(())
        }
    };
    let value_ok = |k: &str, v: &[u8]| {
        if v.len() > MAX_VALUE_BYTES {
            Err(KvError::ValueTooLarge {
                key: k.to_string(),
                len: v.len(),
                max: MAX_VALUE_BYTES,
            })
        } else {
            Ok(())
        }
    };
    match write {
        Write::Put(pairs) => {
            for (k, v) in pairs {
                key_ok(k)?;
                if let Some(v) = v {
                    value_ok(k, v)?;
                }
            }
            Ok(())
        }
        Write::Increment { key, .. } => key_ok(key),
        Write::Swap { key, value, .. } => {
            key_ok(key)?;
            value_ok(key, value)
        }
    }
}

/// Cuts a listing of up to `limit + 1` keys into a page of `limit` and the cursor of the
/// next page (the page's last key), or `None` when nothing follows.
fn page(mut keys: Vec<String>, limit: usize) -> (Vec<String>, Option<String>) {
    if keys.len() > limit {
        keys.truncate(limit);
        let next = keys.last().cloned();
        (keys, next)
    } else {
        (keys, None)
    }
}

/// Parses a stored counter.
fn counter(key: &str, stored: Option<&[u8]>) -> Result<i64, KvError> {
    match stored {
        None => Ok(0),
        Some(v) => std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| KvError::NotACounter {
                key: key.to_string(),
            }),
    }
}

/// The new value of a counter, or why it cannot change.
fn incremented(key: &str, stored: Option<&[u8]>, delta: i64) -> Result<i64, KvError> {
    counter(key, stored)?
        .checked_add(delta)
        .ok_or_else(|| KvError::Overflow {
            key: key.to_string(),
        })
}

#[cfg(test)]
pub(crate) mod conformance {
    //! Behaviour every backend must share, run against each of them.

    use super::*;

    pub async fn check(kv: &dyn KvBackend) {
        let b = "ns/app";
        assert_eq!(kv.get(b, "a").unwrap(), None);
        kv.write(b, Write::Put(vec![("a".into(), Some(b"1".to_vec()))]))
            .await
            .unwrap();
        assert_eq!(kv.get(b, "a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(
            kv.get("ns/other", "a").unwrap(),
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
        assert_eq!(kv.get(b, "n").unwrap(), Some(b"-2".to_vec()));
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
            kv.get(b, "word").unwrap(),
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
            Outcome::Swapped(Ok(()))
        );
        assert_eq!(
            kv.write(b, swap(None, b"y")).await.unwrap(),
            Outcome::Swapped(Err(Some(b"x".to_vec())))
        );
        assert_eq!(
            kv.write(b, swap(Some(b"x"), b"z")).await.unwrap(),
            Outcome::Swapped(Ok(()))
        );
        assert_eq!(kv.get(b, "c").unwrap(), Some(b"z".to_vec()));

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
            let (keys, next) = kv.list_keys("ns/list", cursor.as_deref(), 10).unwrap();
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

    #[test]
    fn oversized_keys_and_values_are_refused() {
        let long_key = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(matches!(
            check_write(&Write::Increment {
                key: long_key,
                delta: 1
            }),
            Err(KvError::KeyTooLong { .. })
        ));
        let big = vec![0u8; MAX_VALUE_BYTES + 1];
        assert!(matches!(
            check_write(&Write::Put(vec![("k".into(), Some(big))])),
            Err(KvError::ValueTooLarge { .. })
        ));
        assert!(check_write(&Write::Put(vec![("k".into(), None)])).is_ok());
    }
}
