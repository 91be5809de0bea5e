//! Workload buckets in the replicated state: what a `Kv` command does. Writes follow the
//! semantics every backend shares (`dabba_spec::kv`); a write with an id is applied at
//! most once, its outcome remembered for [`KV_WRITE_MEMORY`] writes.

use std::collections::BTreeMap;

use dabba_spec::kv::{self, Write};

use super::State;
use crate::command::Reply;

/// How many identified KV writes are remembered for deduplication. A retry comes within
/// seconds; at 10,000 writes/s this covers the last ten.
pub const KV_WRITE_MEMORY: usize = 100_000;

impl State {
    pub(super) fn apply_kv(&mut self, bucket: &str, write: &Write, id: Option<&String>) -> Reply {
        if let Some(id) = id
            && let Some(first) = self.kv_writes.get(id)
        {
            return Reply::Kv {
                result: first.clone(),
            };
        }
        let map = self.kv.entry(bucket.to_string()).or_default();
        let result = kv::apply(map, write);
        if self.kv.get(bucket).is_some_and(BTreeMap::is_empty) {
            self.kv.remove(bucket);
        }
        if let Some(id) = id {
            if self.kv_write_order.len() == KV_WRITE_MEMORY
                && let Some(oldest) = self.kv_write_order.pop_front()
            {
                self.kv_writes.remove(&oldest);
            }
            self.kv_write_order.push_back(id.clone());
            self.kv_writes.insert(id.clone(), result.clone());
        }
        Reply::Kv { result }
    }
}
