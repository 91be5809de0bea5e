//! Buckets in memory: for tests, and for `dabba serve` without a `--kv-dir`.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Mutex;

use super::{KvBackend, KvError, Outcome, Write, WriteFuture, check_write, incremented, page};

#[derive(Default)]
pub struct MemoryKv {
    buckets: Mutex<HashMap<String, BTreeMap<String, Vec<u8>>>>,
}

impl MemoryKv {
    pub fn new() -> Self {
        Self::default()
    }

    fn apply(&self, bucket: &str, write: Write) -> Result<Outcome, KvError> {
        check_write(&write)?;
        let mut all = self.buckets.lock().expect("kv lock poisoned");
        let map = all.entry(bucket.to_string()).or_default();
        Ok(match write {
            Write::Put(pairs) => {
                for (k, v) in pairs {
                    match v {
                        Some(v) => map.insert(k, v),
                        None => map.remove(&k),
                    };
                }
                Outcome::Done
            }
            Write::Increment { key, delta } => {
                let next = incremented(&key, map.get(&key).map(Vec::as_slice), delta)?;
                map.insert(key, next.to_string().into_bytes());
                Outcome::Counter(next)
            }
            Write::Swap {
                key,
                expected,
                value,
            } => {
                let current = map.get(&key);
                if current == expected.as_ref() {
                    map.insert(key, value);
                    Outcome::Swapped(Ok(()))
                } else {
                    Outcome::Swapped(Err(current.cloned()))
                }
            }
        })
    }
}

impl KvBackend for MemoryKv {
    fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let all = self.buckets.lock().expect("kv lock poisoned");
        Ok(all.get(bucket).and_then(|m| m.get(key)).cloned())
    }

    fn list_keys(
        &self,
        bucket: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<String>), KvError> {
        let all = self.buckets.lock().expect("kv lock poisoned");
        let Some(map) = all.get(bucket) else {
            return Ok((Vec::new(), None));
        };
        let start = cursor.map_or(Bound::Unbounded, |c| Bound::Excluded(c.to_string()));
        let keys: Vec<String> = map
            .range((start, Bound::Unbounded))
            .take(limit + 1)
            .map(|(k, _)| k.clone())
            .collect();
        Ok(page(keys, limit))
    }

    fn write(&self, bucket: &str, write: Write) -> WriteFuture {
        let result = self.apply(bucket, write);
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn conforms() {
        super::super::conformance::check(&super::MemoryKv::new()).await;
    }
}
