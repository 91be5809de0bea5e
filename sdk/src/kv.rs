//! Key-value buckets over `wasi:keyvalue@0.2.0-draft2`.
//!
//! In a dabba pod a bucket is durable: a write returns only once it is on disk (or, in a
//! cluster, committed by a controller quorum). Compiled natively, the same API is backed
//! by an in-memory map, so business logic is tested with `cargo test` and the native
//! server for the container comparison runs without a dabba host.
//!
//! Counters written by [`Bucket::increment`] are stored as decimal ASCII text, so a
//! counter read with [`Bucket::get`] is human-readable (`b"42"`).

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a key-value operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("no bucket named `{0}` exists on this host")]
    NoSuchStore(String),
    #[error("this component was not granted access to bucket `{0}`")]
    AccessDenied(String),
    #[error("{0}")]
    Other(String),
    #[error("value under `{key}` is not valid JSON for this type: {message}")]
    Decode { key: String, message: String },
    #[error("compare-and-swap on `{0}` kept failing under contention")]
    Contention(String),
}

/// Keys with their values (`None` where a key holds nothing), as `get_many` answers.
pub type Entries = Vec<(String, Option<Vec<u8>>)>;

/// A handle to a named bucket.
pub struct Bucket {
    name: String,
    inner: imp::Bucket,
}

/// How many compare-and-swap rounds [`Bucket::insert_if_absent`] tries before giving up.
const CAS_ATTEMPTS: usize = 32;

impl Bucket {
    /// Opens a bucket the component was granted (see the manifest's `key_value_buckets`).
    pub fn open(name: &str) -> Result<Bucket, KvError> {
        Ok(Bucket {
            name: name.to_string(),
            inner: imp::Bucket::open(name)?,
        })
    }

    /// A fresh, empty, private in-memory bucket, for native tests.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn in_memory() -> Bucket {
        Bucket {
            name: "memory".into(),
            inner: imp::Bucket::fresh(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.inner.get(key)
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.inner.set(key, value)
    }

    pub fn delete(&self, key: &str) -> Result<(), KvError> {
        self.inner.delete(key)
    }

    pub fn exists(&self, key: &str) -> Result<bool, KvError> {
        self.inner.exists(key)
    }

    /// One page of keys after `cursor`, and the cursor of the next page.
    pub fn list_keys(
        &self,
        cursor: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>), KvError> {
        self.inner.list_keys(cursor)
    }

    /// Atomically adds `delta` to the counter under `key` (missing counts as 0) and
    /// returns the new value.
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        self.inner.increment(key, delta)
    }

    /// The value of each key, in order.
    pub fn get_many(&self, keys: &[String]) -> Result<Entries, KvError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.inner.get_many(keys)
    }

    /// Stores every pair in one atomic write.
    pub fn set_many(&self, pairs: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        if pairs.is_empty() {
            return Ok(());
        }
        self.inner.set_many(pairs)
    }

    pub fn delete_many(&self, keys: &[String]) -> Result<(), KvError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.inner.delete_many(keys)
    }

    /// Stores `value` under `key` only if the key holds nothing, atomically. Returns
    /// `None` when this call stored it, or the value that was already there.
    ///
    /// This is the building block for idempotency: of many concurrent callers with the
    /// same key, exactly one gets `None`.
    pub fn insert_if_absent(&self, key: &str, value: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        for _ in 0..CAS_ATTEMPTS {
            match self.inner.swap_if_absent(key, value)? {
                Swap::Stored => return Ok(None),
                Swap::Present(existing) => return Ok(Some(existing)),
                Swap::Raced => continue,
            }
        }
        Err(KvError::Contention(key.to_string()))
    }

    pub fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, KvError> {
        match self.get(key)? {
            None => Ok(None),
            Some(bytes) => decode(key, &bytes).map(Some),
        }
    }

    pub fn set_json<T: Serialize>(&self, key: &str, value: &T) -> Result<(), KvError> {
        self.set(key, &encode(value)?)
    }
}

/// Encodes a value as JSON for storage.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, KvError> {
    serde_json::to_vec(value).map_err(|e| KvError::Other(format!("encoding a value: {e}")))
}

/// Decodes a stored JSON value, naming the key on failure.
pub fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, KvError> {
    serde_json::from_slice(bytes).map_err(|e| KvError::Decode {
        key: key.to_string(),
        message: e.to_string(),
    })
}

/// The outcome of one compare-and-swap round for an absent key.
enum Swap {
    Stored,
    Present(Vec<u8>),
    #[cfg_attr(
        not(target_arch = "wasm32"),
        expect(dead_code, reason = "only the wasm backend can lose a race")
    )]
    Raced,
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    //! The native backend: a map shared by every handle with the same name in this
    //! process (so a native server sees one bucket), or a private one for tests.

    use std::collections::{BTreeMap, HashMap};
    use std::sync::{Arc, Mutex, OnceLock};

    use super::{Entries, KvError, Swap};

    type Map = Arc<Mutex<BTreeMap<String, Vec<u8>>>>;

    pub struct Bucket(Map);

    /// Keys returned per `list_keys` page, as a host would page them.
    const PAGE: usize = 1000;

    fn registry() -> &'static Mutex<HashMap<String, Map>> {
        static R: OnceLock<Mutex<HashMap<String, Map>>> = OnceLock::new();
        R.get_or_init(Default::default)
    }

    impl Bucket {
        pub fn open(name: &str) -> Result<Bucket, KvError> {
            let mut reg = registry().lock().expect("kv registry poisoned");
            Ok(Bucket(reg.entry(name.to_string()).or_default().clone()))
        }

        pub fn fresh() -> Bucket {
            Bucket(Map::default())
        }

        fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
            self.0.lock().expect("kv bucket poisoned")
        }

        pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
            Ok(self.map().get(key).cloned())
        }
        pub fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
            self.map().insert(key.to_string(), value.to_vec());
            Ok(())
        }
        pub fn delete(&self, key: &str) -> Result<(), KvError> {
            self.map().remove(key);
            Ok(())
        }
        pub fn exists(&self, key: &str) -> Result<bool, KvError> {
            Ok(self.map().contains_key(key))
        }
        pub fn list_keys(
            &self,
            cursor: Option<&str>,
        ) -> Result<(Vec<String>, Option<String>), KvError> {
            use std::ops::Bound;
            let map = self.map();
            let start = match cursor {
                Some(c) => Bound::Excluded(c.to_string()),
                None => Bound::Unbounded,
            };
            let keys: Vec<String> = map
                .range((start, Bound::Unbounded))
                .take(PAGE + 1)
                .map(|(k, _)| k.clone())
                .collect();
            if keys.len() > PAGE {
                let page = keys[..PAGE].to_vec();
                let next = page.last().cloned();
                Ok((page, next))
            } else {
                Ok((keys, None))
            }
        }
        pub fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
            let mut map = self.map();
            let current = match map.get(key) {
                None => 0,
                Some(v) => std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .ok_or_else(|| KvError::Other(format!("`{key}` does not hold a counter")))?,
            };
            let next = current
                .checked_add(delta)
                .ok_or_else(|| KvError::Other(format!("counter `{key}` would overflow")))?;
            map.insert(key.to_string(), next.to_string().into_bytes());
            Ok(next)
        }
        pub fn get_many(&self, keys: &[String]) -> Result<Entries, KvError> {
            let map = self.map();
            Ok(keys
                .iter()
                .map(|k| (k.clone(), map.get(k).cloned()))
                .collect())
        }
        pub fn set_many(&self, pairs: &[(String, Vec<u8>)]) -> Result<(), KvError> {
            let mut map = self.map();
            for (k, v) in pairs {
                map.insert(k.clone(), v.clone());
            }
            Ok(())
        }
        pub fn delete_many(&self, keys: &[String]) -> Result<(), KvError> {
            let mut map = self.map();
            for k in keys {
                map.remove(k);
            }
            Ok(())
        }
        pub(super) fn swap_if_absent(&self, key: &str, value: &[u8]) -> Result<Swap, KvError> {
            let mut map = self.map();
            match map.get(key) {
                Some(existing) => Ok(Swap::Present(existing.clone())),
                None => {
                    map.insert(key.to_string(), value.to_vec());
                    Ok(Swap::Stored)
                }
            }
        }
    }
}

#[cfg(target_arch = "wasm32")]
mod imp {
    //! The pod backend: `wasi:keyvalue@0.2.0-draft2` as imported from the host.

    use super::{Entries, KvError, Swap};
    use crate::bindings::wasi::keyvalue::{atomics, batch, store};

    pub struct Bucket(store::Bucket, String);

    impl Bucket {
        pub fn open(name: &str) -> Result<Bucket, KvError> {
            store::open(name)
                .map(|b| Bucket(b, name.to_string()))
                .map_err(|e| convert(e, name))
        }

        fn err(&self, e: store::Error) -> KvError {
            convert(e, &self.1)
        }

        pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
            self.0.get(key).map_err(|e| self.err(e))
        }
        pub fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
            self.0.set(key, value).map_err(|e| self.err(e))
        }
        pub fn delete(&self, key: &str) -> Result<(), KvError> {
            self.0.delete(key).map_err(|e| self.err(e))
        }
        pub fn exists(&self, key: &str) -> Result<bool, KvError> {
            self.0.exists(key).map_err(|e| self.err(e))
        }
        pub fn list_keys(
            &self,
            cursor: Option<&str>,
        ) -> Result<(Vec<String>, Option<String>), KvError> {
            let r = self.0.list_keys(cursor).map_err(|e| self.err(e))?;
            Ok((r.keys, r.cursor))
        }
        pub fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
            atomics::increment(&self.0, key, delta).map_err(|e| self.err(e))
        }
        pub fn get_many(&self, keys: &[String]) -> Result<Entries, KvError> {
            batch::get_many(&self.0, keys).map_err(|e| self.err(e))
        }
        pub fn set_many(&self, pairs: &[(String, Vec<u8>)]) -> Result<(), KvError> {
            batch::set_many(&self.0, pairs).map_err(|e| self.err(e))
        }
        pub fn delete_many(&self, keys: &[String]) -> Result<(), KvError> {
            batch::delete_many(&self.0, keys).map_err(|e| self.err(e))
        }
        pub(super) fn swap_if_absent(&self, key: &str, value: &[u8]) -> Result<Swap, KvError> {
            let cas = atomics::Cas::new(&self.0, key).map_err(|e| self.err(e))?;
            if let Some(existing) = cas.current().map_err(|e| self.err(e))? {
                return Ok(Swap::Present(existing));
            }
            match atomics::swap(cas, value) {
                Ok(()) => Ok(Swap::Stored),
                Err(atomics::CasError::StoreError(e)) => Err(self.err(e)),
                Err(atomics::CasError::CasFailed(newer)) => {
                    match newer.current().map_err(|e| self.err(e))? {
                        Some(existing) => Ok(Swap::Present(existing)),
                        None => Ok(Swap::Raced),
                    }
                }
            }
        }
    }

    fn convert(e: store::Error, bucket: &str) -> KvError {
        match e {
            store::Error::NoSuchStore => KvError::NoSuchStore(bucket.to_string()),
            store::Error::AccessDenied => KvError::AccessDenied(bucket.to_string()),
            store::Error::Other(m) => KvError::Other(m),
        }
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn counters_are_decimal_text() {
        let b = Bucket::in_memory();
        assert_eq!(b.increment("n", 5).unwrap(), 5);
        assert_eq!(b.increment("n", -2).unwrap(), 3);
        assert_eq!(b.get("n").unwrap().unwrap(), b"3");
        b.set("s", b"x").unwrap();
        assert!(b.increment("s", 1).is_err());
    }

    #[test]
    fn insert_if_absent_stores_once() {
        let b = Bucket::in_memory();
        assert_eq!(b.insert_if_absent("k", b"first").unwrap(), None);
        assert_eq!(
            b.insert_if_absent("k", b"second").unwrap(),
            Some(b"first".to_vec())
        );
        assert_eq!(b.get("k").unwrap().unwrap(), b"first");
    }

    #[test]
    fn list_keys_pages_in_order() {
        let b = Bucket::in_memory();
        let pairs: Vec<(String, Vec<u8>)> =
            (0..2500).map(|i| (format!("k{i:05}"), vec![1])).collect();
        b.set_many(&pairs).unwrap();
        let mut all = Vec::new();
        let mut cursor = None;
        loop {
            let (keys, next) = b.list_keys(cursor.as_deref()).unwrap();
            all.extend(keys);
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(all.len(), 2500);
        assert!(all.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn named_buckets_are_shared_and_fresh_ones_private() {
        let a = Bucket::open("sdk-test-shared").unwrap();
        let b = Bucket::open("sdk-test-shared").unwrap();
        a.set("x", b"1").unwrap();
        assert_eq!(b.get("x").unwrap().unwrap(), b"1");
        assert_eq!(Bucket::in_memory().get("x").unwrap(), None);
    }
}
