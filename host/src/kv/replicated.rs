//! The replicated backend: buckets live in the controllers' state machine, so an
//! acknowledged write is on a quorum of controllers' disks and survives the loss of any
//! minority of them.
//!
//! Reads are linearizable reads answered by the leader. Every write carries an id unique
//! to this host process; when the answer to a write is lost (the leader died after
//! receiving it) the write is sent again with the same id, and the state machine answers
//! the retry with the first outcome instead of applying it twice. So an increment is
//! applied exactly once even across a leader failover. A cron job attempt's writes
//! also carry the attempt ([`Fence`]): the state machine refuses them once that attempt
//! is no longer the one running, so an attempt its host failed to stop cannot write
//! beside its retry.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dabba_client::{ApiClient, ApiError};
use dabba_spec::api::{KvList, KvRead, KvWrite};
use dabba_spec::cronjob::Fence;

use super::{KvBackend, KvError, KvFuture, Write, WriteFuture};
use crate::reachability::ControlPlane;

/// How long a write keeps being retried while its outcome is unknown.
const WRITE_RETRY: Duration = Duration::from_secs(15);

pub struct ReplicatedKv {
    api: Arc<ApiClient>,
    /// Whether a majority of controllers answers: when it does not, every call fails at
    /// once, saying so, instead of waiting out its retries.
    control_plane: Arc<ControlPlane>,
    /// Makes write ids unique to this process.
    prefix: Arc<str>,
    next: Arc<AtomicU64>,
    /// The cron job attempt this backend writes for ([`KvBackend::fenced`]).
    fence: Option<Fence>,
}

impl ReplicatedKv {
    pub fn new(api: Arc<ApiClient>, host: &str, control_plane: Arc<ControlPlane>) -> ReplicatedKv {
        let boot: u64 = rand::random();
        ReplicatedKv {
            api,
            control_plane,
            prefix: format!("{host}-{boot:016x}").into(),
            next: Arc::new(AtomicU64::new(0)),
            fence: None,
        }
    }
}

fn storage(e: ApiError) -> KvError {
    KvError::storage(format!("the controllers: {e}"))
}

impl ReplicatedKv {
    /// `Err` at once when this host reaches no majority of controllers.
    fn reachable(&self) -> Result<(), KvError> {
        self.control_plane.check().map_err(KvError::storage)
    }
}

impl KvBackend for ReplicatedKv {
    fn fenced(&self, fence: Fence) -> Option<Arc<dyn KvBackend>> {
        Some(Arc::new(ReplicatedKv {
            api: self.api.clone(),
            control_plane: self.control_plane.clone(),
            prefix: self.prefix.clone(),
            next: self.next.clone(),
            fence: Some(fence),
        }))
    }

    fn get(&self, bucket: &str, key: &str) -> KvFuture<Option<Vec<u8>>> {
        let fut = self.get_many(bucket, &[key.to_string()]);
        Box::pin(async move { Ok(fut.await?.into_iter().next().flatten()) })
    }

    fn get_many(&self, bucket: &str, keys: &[String]) -> KvFuture<Vec<Option<Vec<u8>>>> {
        if let Err(e) = self.reachable() {
            return super::ready(Err(e));
        }
        let api = self.api.clone();
        let body = KvRead {
            bucket: bucket.to_string(),
            keys: keys.to_vec(),
        };
        Box::pin(async move {
            let v = api.kv_read(&body).await.map_err(storage)?;
            Ok(v.values)
        })
    }

    fn list_keys(
        &self,
        bucket: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> KvFuture<(Vec<String>, Option<String>)> {
        if let Err(e) = self.reachable() {
            return super::ready(Err(e));
        }
        let api = self.api.clone();
        let body = KvList {
            bucket: bucket.to_string(),
            cursor: cursor.map(str::to_string),
            limit,
        };
        Box::pin(async move {
            let k = api.kv_list(&body).await.map_err(storage)?;
            Ok((k.keys, k.cursor))
        })
    }

    fn write(&self, bucket: &str, write: Write) -> WriteFuture {
        if let Err(e) = dabba_spec::kv::check_write(&write).and_then(|()| self.reachable()) {
            return super::ready(Err(e));
        }
        let api = self.api.clone();
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let body = KvWrite {
            bucket: bucket.to_string(),
            write,
            id: Some(format!("{}-{n}", self.prefix)),
            fence: self.fence.clone(),
        };
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + WRITE_RETRY;
            loop {
                match api.kv_write(&body).await {
                    Ok(r) => return r.result,
                    Err(ApiError::Unknown(e)) if tokio::time::Instant::now() < deadline => {
                        tracing::debug!(error = %e, "a write's answer was lost; sending it again");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => return Err(storage(e)),
                }
            }
        })
    }
}
