//! Components onto a majority before their digest commits, and onto every controller
//! after (see `crate::blobs` for why they are kept outside the log).
//!
//! The leader stores an upload and sends it to every other controller at once; it
//! proposes the digest as soon as a majority of the voters hold it (itself included),
//! so a committed digest survives the loss of any minority, as a committed entry does.
//! A controller that missed it — down during the upload, added later, restored from a
//! snapshot, or holding a corrupted copy — fetches it from a peer: at once when asked
//! for it, and in the background for every committed digest it lacks.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dabba_client::transport::send;
use dabba_spec::Digest;
use dabba_spec::api::ComponentsStatus;
use http_body_util::Full;

use super::Controller;
use crate::blobs::BlobError;
use crate::raft::NodeId;
use crate::raft::network::PEER_TOKEN_HEADER;

/// How long one controller may take to take or give a component.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(120);

/// How often a controller looks for committed components it lacks, besides whenever the
/// state changes.
const SYNC_EVERY: Duration = Duration::from_secs(5);

/// Why a component could not be stored on a majority.
#[derive(Debug, thiserror::Error)]
pub enum SpreadError {
    #[error(transparent)]
    Store(#[from] BlobError),
    #[error("only {held} of {voters} voting controllers hold the component, {need} must")]
    NoMajority {
        held: usize,
        voters: usize,
        need: usize,
    },
}

/// The path of a component on the controllers' peer API.
pub fn peer_path(digest: &Digest) -> String {
    format!("/raft/blobs/{digest}")
}

impl Controller {
    /// The other members, with their API addresses, and whether each votes.
    fn peers(&self) -> (Vec<(NodeId, String, bool)>, usize, bool) {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let peers = membership
            .nodes()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, n)| (*id, n.addr.clone(), voters.contains(id)))
            .collect();
        (peers, voters.len(), voters.contains(&self.id))
    }

    /// Stores `bytes` (which the caller checked hash to `digest`) here and on the other
    /// controllers; returns once a majority of the voters hold them. The rest keep
    /// receiving them.
    pub async fn spread_blob(
        self: &Arc<Self>,
        digest: Digest,
        bytes: Bytes,
    ) -> Result<(), SpreadError> {
        let store = self.blobs.clone();
        let local = bytes.clone();
        tokio::task::spawn_blocking(move || store.put_checked(&digest, &local))
            .await
            .expect("blob write task")?;
        let (peers, voters, self_votes) = self.peers();
        let need = voters / 2 + 1;
        let mut held = usize::from(self_votes);
        let (done, mut results) = tokio::sync::mpsc::unbounded_channel();
        for (id, address, votes) in peers {
            let (node, bytes, done) = (self.clone(), bytes.clone(), done.clone());
            tokio::spawn(async move {
                let ok = node.give_blob(&address, &digest, bytes).await;
                if let Err(e) = &ok {
                    tracing::warn!(peer = id, %digest, error = %e, "component not stored on a controller");
                }
                let _ = done.send(votes && ok.is_ok());
            });
        }
        drop(done);
        while held < need {
            match results.recv().await {
                Some(true) => held += 1,
                Some(false) => {}
                None => {
                    return Err(SpreadError::NoMajority { held, voters, need });
                }
            }
        }
        Ok(())
    }

    async fn give_blob(&self, address: &str, digest: &Digest, bytes: Bytes) -> Result<(), String> {
        let req = http::Request::put(format!("{address}{}", peer_path(digest)))
            .header(PEER_TOKEN_HEADER, &self.peer_token)
            .header(http::header::CONTENT_TYPE, "application/wasm")
            .body(Full::new(bytes))
            .map_err(|e| e.to_string())?;
        let resp = send(&self.client, req, TRANSFER_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!(
                "{}: {}",
                resp.status(),
                String::from_utf8_lossy(resp.body())
            ))
        }
    }

    /// Stores bytes a peer gave (checked against `digest`).
    pub async fn take_blob(&self, digest: Digest, bytes: Bytes) -> Result<(), BlobError> {
        let store = self.blobs.clone();
        tokio::task::spawn_blocking(move || store.put(&digest, &bytes))
            .await
            .expect("blob write task")
    }

    /// The bytes of `digest` from this controller's store, checked (`None` when it has
    /// none, or a corrupted copy).
    pub async fn local_blob(&self, digest: Digest) -> Result<Option<Bytes>, BlobError> {
        let store = self.blobs.clone();
        tokio::task::spawn_blocking(move || store.get(&digest))
            .await
            .expect("blob read task")
            .map(|b| b.map(Bytes::from))
    }

    /// The bytes of `digest`: from this controller's store, or else fetched from a peer
    /// (and kept). `None` when no reachable controller holds a good copy.
    pub async fn blob_bytes(&self, digest: Digest) -> Result<Option<Bytes>, BlobError> {
        if let Some(b) = self.local_blob(digest).await? {
            return Ok(Some(b));
        }
        let (peers, _, _) = self.peers();
        for (id, address, _) in peers {
            let req = http::Request::get(format!("{address}{}", peer_path(&digest)))
                .header(PEER_TOKEN_HEADER, &self.peer_token)
                .body(Full::new(Bytes::new()))
                .expect("valid request");
            match send(&self.client, req, TRANSFER_TIMEOUT).await {
                Ok(resp) if resp.status().is_success() => {
                    let bytes = resp.into_body();
                    match self.take_blob(digest, bytes.clone()).await {
                        Ok(()) => {
                            tracing::info!(peer = id, %digest, "component fetched from a peer");
                            return Ok(Some(bytes));
                        }
                        Err(BlobError::Mismatch { actual, .. }) => {
                            tracing::warn!(peer = id, %digest, %actual, "a peer gave a corrupted component");
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(resp) => {
                    tracing::debug!(peer = id, %digest, status = %resp.status(), "peer lacks the component");
                }
                Err(e) => tracing::debug!(peer = id, %digest, error = %e, "peer unreachable"),
            }
        }
        Ok(None)
    }

    /// Removes files of components the cluster no longer holds. A file younger than the
    /// grace period stays: it may be an upload whose digest has not committed yet.
    fn forget_unused(&self, wanted: &[Digest]) {
        let grace = Duration::from_millis(self.tuning.component_grace);
        for (digest, _) in self.blobs.list() {
            if wanted.contains(&digest) {
                continue;
            }
            if self.blobs.age(&digest).is_some_and(|age| age >= grace) {
                match self.blobs.remove(&digest) {
                    Ok(()) => tracing::info!(%digest, "unused component deleted"),
                    Err(e) => tracing::warn!(%digest, error = %e, "cannot delete a component"),
                }
            }
        }
    }

    /// The committed components, and how many of them this controller holds.
    pub fn components(&self) -> ComponentsStatus {
        let held: std::collections::BTreeSet<String> = self
            .blobs
            .list()
            .into_iter()
            .map(|(d, _)| d.to_string())
            .collect();
        self.shared.read(|s| ComponentsStatus {
            count: s.blobs.len() as u64,
            bytes: s.blobs.values().map(|b| b.size).sum(),
            held_here: s.blobs.keys().filter(|d| held.contains(*d)).count() as u64,
        })
    }

    /// Fetches, in the background, every committed component this controller lacks.
    pub(super) fn spawn_blob_sync(self: Arc<Self>) {
        tokio::spawn(async move {
            let mut version = self.shared.watch();
            loop {
                let wanted: Vec<Digest> = self
                    .shared
                    .read(|s| s.blobs.keys().filter_map(|d| d.parse().ok()).collect());
                self.forget_unused(&wanted);
                for digest in wanted {
                    if self.blobs.size(&digest).is_some() {
                        continue;
                    }
                    match self.blob_bytes(digest).await {
                        Ok(Some(_)) => {}
                        Ok(None) => {
                            tracing::debug!(%digest, "no peer holds a committed component yet")
                        }
                        Err(e) => tracing::warn!(%digest, error = %e, "cannot store a component"),
                    }
                }
                if let Ok(Err(_)) = tokio::time::timeout(SYNC_EVERY, version.changed()).await {
                    tokio::time::sleep(SYNC_EVERY).await;
                }
            }
        });
    }
}
