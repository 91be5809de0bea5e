//! Components onto a majority before their digest commits, and onto every controller
//! after (see `crate::blobs` for why they are kept outside the log).
//!
//! The leader stores an upload and sends it on to every other controller as it arrives,
//! piece by piece (a controller too slow to take the next piece is left to fetch it
//! later); it proposes the digest as soon as a majority of the voters hold it (itself
//! included),
//! so a committed digest survives the loss of any minority, as a committed entry does.
//! A controller that missed it — down during the upload, added later, restored from a
//! snapshot, or holding a corrupted copy — fetches it from a peer: at once when asked
//! for it, and in the background for every committed digest it lacks.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dabba_client::transport::{Body, send_streamed, streamed, whole};
use dabba_spec::Digest;
use dabba_spec::api::ComponentsStatus;
use dabba_spec::component::{Checker, HeaderError};
use http_body_util::BodyExt;

use super::Controller;
use crate::blobs::{BlobError, PIECE};
use crate::raft::NodeId;
use crate::raft::network::PEER_TOKEN_HEADER;

/// How long one controller may take to take or give a component.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(120);

/// How often a controller looks for committed components it lacks, besides whenever the
/// state changes.
const SYNC_EVERY: Duration = Duration::from_secs(5);

/// Pieces in flight between the network and the disk, each way.
const DEPTH: usize = 4;

/// How long a copy of an upload to another controller may refuse the next piece before
/// it is dropped.
const COPY_PATIENCE: Duration = Duration::from_secs(2);

/// The sending end of a copy of an upload.
type Copy = tokio::sync::mpsc::Sender<Result<Bytes, dabba_client::transport::BoxError>>;

/// Sends `data` to every copy that still takes it within [`COPY_PATIENCE`].
async fn send_copies(copies: &mut Vec<Copy>, data: &Bytes) {
    let mut i = 0;
    while i < copies.len() {
        match copies[i]
            .send_timeout(Ok(data.clone()), COPY_PATIENCE)
            .await
        {
            Ok(()) => i += 1,
            Err(_) => {
                tracing::warn!(
                    "a controller took no piece of an upload for {COPY_PATIENCE:?}; it fetches the component later"
                );
                copies.swap_remove(i);
            }
        }
    }
}

/// Why a component could not be stored on a majority.
#[derive(Debug, thiserror::Error)]
pub enum SpreadError {
    #[error(transparent)]
    Receive(#[from] ReceiveError),
    #[error("only {held} of {voters} voting controllers hold the component, {need} must")]
    NoMajority {
        held: usize,
        voters: usize,
        need: usize,
    },
}

/// Why a component that was being received is not stored.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("the component is larger than the {max} bytes the cluster stores")]
    TooLarge { max: u64 },
    #[error("the body {0}")]
    NotComponent(HeaderError),
    #[error("the transfer broke off after {after} bytes: {message}")]
    Broken { after: u64, message: String },
    #[error(transparent)]
    Store(#[from] BlobError),
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

    /// Receives `body` into this controller's store as the component `digest`: written
    /// to disk and hashed as it comes (never held whole), checked to be a component of
    /// at most `max` bytes that hashes to `digest`, then kept durably. Returns its size.
    pub async fn receive_blob(
        &self,
        digest: Digest,
        body: Body,
        max: u64,
    ) -> Result<u64, ReceiveError> {
        self.receive_blob_copying(digest, body, max, Vec::new())
            .await
    }

    /// [`Controller::receive_blob`], sending each piece on to `copies` as it arrives
    /// (the bodies of transfers to other controllers, which check it themselves). A copy
    /// that takes no piece for [`COPY_PATIENCE`] is dropped (its controller fetches the
    /// component later), so one stalled peer never stalls the upload; a receive that
    /// fails before its end breaks every copy off (bytes that end whole but do not hash
    /// to `digest` are refused by each copy's controller as they are here).
    async fn receive_blob_copying(
        &self,
        digest: Digest,
        mut body: Body,
        max: u64,
        mut copies: Vec<Copy>,
    ) -> Result<u64, ReceiveError> {
        let store = self.blobs.clone();
        let mut incoming = tokio::task::spawn_blocking(move || store.incoming())
            .await
            .expect("blob task")?;
        let (pieces, mut to_disk) = tokio::sync::mpsc::channel::<Bytes>(DEPTH);
        let writer = crate::background::at_low_priority("dabba-blob-io", move || {
            while let Some(piece) = to_disk.blocking_recv() {
                incoming.write(&piece)?;
            }
            Ok::<_, BlobError>(incoming)
        });
        let mut checker = Checker::default();
        let mut len = 0u64;
        let mut pending = BytesMut::new();
        let received = loop {
            let data = match body.frame().await {
                None => break Ok(()),
                Some(Err(e)) => {
                    break Err(ReceiveError::Broken {
                        after: len,
                        message: e.to_string(),
                    });
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue,
                },
            };
            len += data.len() as u64;
            if len > max {
                break Err(ReceiveError::TooLarge { max });
            }
            if let Err(e) = checker.feed(&data) {
                break Err(ReceiveError::NotComponent(e));
            }
            pending.extend_from_slice(&data);
            // The disk (and the copies) get pieces, not the network's small frames.
            if pending.len() >= PIECE {
                let piece = pending.split().freeze();
                send_copies(&mut copies, &piece).await;
                if pieces.send(piece).await.is_err() {
                    break Ok(()); // the writer failed: its error is below
                }
            }
        };
        if received.is_ok() && !pending.is_empty() {
            let piece = pending.freeze();
            send_copies(&mut copies, &piece).await;
            let _ = pieces.send(piece).await;
        }
        drop(pieces);
        let incoming = writer.await;
        let checked = match (incoming, received) {
            (Ok(incoming), Ok(())) => checker
                .finish()
                .map(|()| incoming)
                .map_err(ReceiveError::NotComponent),
            (Err(e), _) => Err(e.into()),
            (_, Err(e)) => Err(e),
        };
        let incoming = match checked {
            Ok(incoming) => incoming,
            Err(e) => {
                for c in copies {
                    let _ = c.try_send(Err("the upload failed".into()));
                }
                return Err(e);
            }
        };
        drop(copies);
        let store = self.blobs.clone();
        tokio::task::spawn_blocking(move || store.keep(incoming, &digest))
            .await
            .expect("blob task")?;
        Ok(len)
    }

    /// The component `digest` from this controller's store as a body, from byte `from`
    /// on: its size and the body, or `None` if it holds none. It is read from disk as
    /// it is sent; a read error breaks the body off.
    pub async fn blob_body(
        &self,
        digest: Digest,
        from: u64,
    ) -> Result<Option<(u64, Body)>, BlobError> {
        let store = self.blobs.clone();
        let reader = tokio::task::spawn_blocking(move || store.read(&digest))
            .await
            .expect("blob task")?;
        let Some(mut reader) = reader else {
            return Ok(None);
        };
        let len = reader.size();
        let (tx, body) = streamed(Some(len.saturating_sub(from)), DEPTH);
        drop(crate::background::at_low_priority(
            "dabba-blob-io",
            move || {
                let mut at = 0u64;
                loop {
                    let piece = match reader.next_piece() {
                        Ok(Some(piece)) => piece,
                        Ok(None) => return,
                        Err(e) => {
                            let _ = tx.blocking_send(Err(e.into()));
                            return;
                        }
                    };
                    let end = at + piece.len() as u64;
                    if end > from {
                        let skip = from.saturating_sub(at) as usize;
                        if tx.blocking_send(Ok(piece.slice(skip..))).is_err() {
                            return; // the receiver went away
                        }
                    }
                    at = end;
                }
            },
        ));
        Ok(Some((len, body)))
    }

    /// Whether this controller holds a good copy of `digest` (hashed once per file).
    pub async fn verify_blob(&self, digest: Digest) -> Result<bool, BlobError> {
        let store = self.blobs.clone();
        crate::background::at_low_priority("dabba-blob-io", move || store.verify(&digest)).await
    }

    /// Stores an upload (`body`, which must hash to `digest`) here and on the other
    /// controllers; returns its size once a majority of the voters hold it. The rest
    /// keep receiving it.
    pub async fn spread_blob(
        self: &Arc<Self>,
        digest: Digest,
        body: Body,
        max: u64,
    ) -> Result<u64, SpreadError> {
        let (peers, voters, self_votes) = self.peers();
        let need = voters / 2 + 1;
        let mut held = usize::from(self_votes);
        let (done, mut results) = tokio::sync::mpsc::unbounded_channel();
        // Every controller receives the upload as this one does, not after it: the
        // transfers are paced, and one after the other they took twice as long.
        let mut copies = Vec::new();
        for (id, address, votes) in peers {
            let (node, done) = (self.clone(), done.clone());
            let (copy, body) = streamed(None, DEPTH);
            copies.push(copy);
            tokio::spawn(async move {
                let ok = node.put_blob(&address, &digest, body).await;
                if let Err(e) = &ok {
                    tracing::warn!(peer = id, %digest, error = %e, "component not stored on a controller");
                }
                let _ = done.send(votes && ok.is_ok());
            });
        }
        drop(done);
        let size = self.receive_blob_copying(digest, body, max, copies).await?;
        while held < need {
            match results.recv().await {
                Some(true) => held += 1,
                Some(false) => {}
                None => return Err(SpreadError::NoMajority { held, voters, need }),
            }
        }
        Ok(size)
    }

    /// Sends the component `digest`, as `body` brings it, to the controller at
    /// `address` (which checks it as it receives it).
    async fn put_blob(&self, address: &str, digest: &Digest, body: Body) -> Result<(), String> {
        let req = http::Request::put(format!("{address}{}", peer_path(digest)))
            .header(PEER_TOKEN_HEADER, &self.peer_token)
            .header(http::header::CONTENT_TYPE, "application/wasm")
            .body(body)
            .map_err(|e| e.to_string())?;
        let call = async {
            let resp = send_streamed(&self.client, req)
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status();
            let answer = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("{status}: {}", String::from_utf8_lossy(&answer)))
            }
        };
        tokio::time::timeout(TRANSFER_TIMEOUT, call)
            .await
            .map_err(|_| format!("not stored within {TRANSFER_TIMEOUT:?}"))?
    }

    /// Makes sure this controller holds a good copy of the component `digest`
    /// ([`crate::blobs::BlobStore::verify`]), fetching one from a peer if it does not.
    /// `false` when no reachable controller holds a good copy.
    pub async fn fetch_blob(&self, digest: Digest) -> Result<bool, BlobError> {
        if self.verify_blob(digest).await? {
            return Ok(true);
        }
        let (peers, _, _) = self.peers();
        for (id, address, _) in peers {
            let req = http::Request::get(format!("{address}{}", peer_path(&digest)))
                .header(PEER_TOKEN_HEADER, &self.peer_token)
                .body(whole(Bytes::new()))
                .expect("valid request");
            let fetched = async {
                let resp =
                    send_streamed(&self.client, req)
                        .await
                        .map_err(|e| ReceiveError::Broken {
                            after: 0,
                            message: e.to_string(),
                        })?;
                if !resp.status().is_success() {
                    return Err(ReceiveError::Broken {
                        after: 0,
                        message: format!("answered {}", resp.status()),
                    });
                }
                let body = resp.into_body().map_err(Into::into).boxed();
                self.receive_blob(digest, body, u64::MAX).await
            };
            match tokio::time::timeout(TRANSFER_TIMEOUT, fetched).await {
                Ok(Ok(_)) => {
                    tracing::info!(peer = id, %digest, "component fetched from a peer");
                    return Ok(true);
                }
                Ok(Err(ReceiveError::Store(BlobError::Mismatch { actual, .. }))) => {
                    tracing::warn!(peer = id, %digest, %actual, "a peer gave a corrupted component");
                }
                Ok(Err(ReceiveError::Store(e))) => return Err(e),
                Ok(Err(e)) => tracing::debug!(peer = id, %digest, error = %e, "not fetched"),
                Err(_) => tracing::debug!(peer = id, %digest, "fetch timed out"),
            }
        }
        Ok(false)
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
                    match self.fetch_blob(digest).await {
                        Ok(true) => {}
                        Ok(false) => {
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
