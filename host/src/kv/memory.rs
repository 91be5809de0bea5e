//! Buckets in memory: for tests, and for `dabba serve` without a `--kv-dir`.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Mutex;

use dabba_spec::kv::{apply, page};

use super::{KvError, LocalKv, Write, WriteFuture};

#[derive(Default)]
pub struct MemoryKv {
    buckets: Mutex<HashMap<String, BTreeMap<String, Vec<u8>>>>,
}

impl MemoryKv {
    pub fn new() -> Self {
        Self::default()
    }
}

impl LocalKv for MemoryKv {
    fn read_one(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let all = self.buckets.lock().expect("kv lock poisoned");
        Ok(all.get(bucket).and_then(|m| m.get(key)).cloned())
    }

    fn read_keys(
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

    fn write_local(&self, bucket: &str, write: Write) -> WriteFuture {
        let mut all = self.buckets.lock().expect("kv lock poisoned");
        let map = all.entry(bucket.to_string()).or_default();
        let result = apply(map, &write);
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
