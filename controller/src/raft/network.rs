//! Raft RPCs between controllers: HTTP POST to `/raft/{append,vote,snapshot}` on the
//! peer's API address, authenticated with the cluster's peer token. Appends and votes
//! are JSON; a snapshot chunk is its metadata as JSON followed by its bytes as they are
//! (JSON would write each byte as a number, and snapshots run to gigabytes), see
//! [`encode_snapshot_chunk`].
//!
//! A peer that cannot be reached is reported as `Unreachable`, so openraft backs off
//! instead of retrying in a tight loop.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{NodeId, TypeConfig};
use dabba_client::transport::{HttpClient, SendError, send};

/// The header carrying the peer token on Raft RPCs.
/// openraft bounds an RPC by the heartbeat interval (30 ms here), which a busy machine
/// or a large entry (a component upload) can exceed without anything being wrong. An
/// append that timed out is sent again whole, so a bound shorter than the time to send
/// and store the largest entry would keep a follower from ever catching up.
const APPEND_TIMEOUT_FLOOR: Duration = Duration::from_secs(5);
const VOTE_TIMEOUT_FLOOR: Duration = Duration::from_millis(500);
const SNAPSHOT_TIMEOUT_FLOOR: Duration = Duration::from_secs(30);
/// How long the last chunk of a snapshot may take to be answered (see `install_snapshot`).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(3600);

pub const PEER_TOKEN_HEADER: &str = "x-dabba-peer-token";

/// The most bytes one AppendEntries should carry. openraft bounds an append by a count
/// of entries, and a workload write can make an entry of a megabyte or more: 32 of them
/// could never be sent and stored within the heartbeat interval that bounds the RPC, and
/// a follower behind by that much would never catch up.
const APPEND_BYTES: usize = 1 << 20;

/// How many entries to send instead, when `entries` entries made a body of `bytes`:
/// as many as fit in [`APPEND_BYTES`] at their average size, at least one (which goes
/// whatever its size). `None` when the body is fine as it is.
fn fewer_entries(entries: usize, bytes: usize) -> Option<u64> {
    (entries > 1 && bytes > APPEND_BYTES).then(|| {
        let fit = APPEND_BYTES as u128 * entries as u128 / bytes as u128;
        (fit as u64).clamp(1, entries as u64 - 1)
    })
}

#[derive(Clone)]
pub struct Network {
    pub client: HttpClient,
    pub peer_token: String,
}

pub struct Peer {
    client: HttpClient,
    peer_token: String,
    target: NodeId,
    address: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            client: self.client.clone(),
            peer_token: self.peer_token.clone(),
            target,
            address: node.addr.trim_end_matches('/').to_string(),
        }
    }
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl Peer {
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        rpc: &Req,
        timeout: Duration,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = serde_json::to_vec(rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.send(path, body, "application/json", timeout).await
    }

    async fn send<Resp, E>(
        &self,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
        timeout: Duration,
    ) -> RpcResult<Resp, E>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let req = http::Request::post(format!("{}/raft/{path}", self.address))
            .header(http::header::CONTENT_TYPE, content_type)
            .header(PEER_TOKEN_HEADER, &self.peer_token)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let resp = send(&self.client, req, timeout)
            .await
            .map_err(|e| match e {
                SendError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
                SendError::Broken { .. } | SendError::Timeout { .. } => {
                    RPCError::Network(NetworkError::new(&e))
                }
            })?;
        if !resp.status().is_success() {
            let e = std::io::Error::other(format!(
                "peer {} answered {}: {}",
                self.target,
                resp.status(),
                String::from_utf8_lossy(resp.body())
            ));
            return Err(RPCError::Network(NetworkError::new(&e)));
        }
        let result: Result<Resp, RaftError<NodeId, E>> = serde_json::from_slice(resp.body())
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        let body =
            serde_json::to_vec(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if let Some(fewer) = fewer_entries(rpc.entries.len(), body.len()) {
            return Err(RPCError::PayloadTooLarge(
                openraft::error::PayloadTooLarge::new_entries_hint(fewer),
            ));
        }
        self.send(
            "append",
            body,
            "application/json",
            option.hard_ttl().max(APPEND_TIMEOUT_FLOOR),
        )
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        // The last chunk is answered after the follower has installed the whole
        // snapshot, which takes as long as the snapshot is large: a timeout would make
        // the leader start sending it again from the beginning, for ever.
        let timeout = if rpc.done {
            INSTALL_TIMEOUT
        } else {
            option.hard_ttl().max(SNAPSHOT_TIMEOUT_FLOOR)
        };
        let body =
            encode_snapshot_chunk(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.send("snapshot", body, "application/octet-stream", timeout)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.call("vote", &rpc, option.hard_ttl().max(VOTE_TIMEOUT_FLOOR))
            .await
    }
}

/// A snapshot chunk's metadata: the request without its bytes.
#[derive(Serialize, serde::Deserialize)]
struct ChunkHead {
    vote: openraft::Vote<NodeId>,
    meta: openraft::SnapshotMeta<NodeId, BasicNode>,
    offset: u64,
    done: bool,
}

/// A snapshot chunk on the wire: the length of its metadata (8 bytes, little-endian),
/// the metadata as JSON, then the chunk's bytes.
pub fn encode_snapshot_chunk(
    rpc: &InstallSnapshotRequest<TypeConfig>,
) -> serde_json::Result<Vec<u8>> {
    let head = serde_json::to_vec(&ChunkHead {
        vote: rpc.vote,
        meta: rpc.meta.clone(),
        offset: rpc.offset,
        done: rpc.done,
    })?;
    let mut body = Vec::with_capacity(8 + head.len() + rpc.data.len());
    body.extend_from_slice(&(head.len() as u64).to_le_bytes());
    body.extend_from_slice(&head);
    body.extend_from_slice(&rpc.data);
    Ok(body)
}

/// Reads a chunk written by [`encode_snapshot_chunk`].
pub fn decode_snapshot_chunk(body: &[u8]) -> Result<InstallSnapshotRequest<TypeConfig>, String> {
    let (len, rest) = body
        .split_first_chunk::<8>()
        .ok_or("a snapshot chunk starts with the 8-byte length of its metadata")?;
    let len = usize::try_from(u64::from_le_bytes(*len)).map_err(|e| e.to_string())?;
    if rest.len() < len {
        return Err(format!(
            "a snapshot chunk announces {len} bytes of metadata but has {}",
            rest.len()
        ));
    }
    let (head, data) = rest.split_at(len);
    let head: ChunkHead =
        serde_json::from_slice(head).map_err(|e| format!("snapshot chunk metadata: {e}"))?;
    Ok(InstallSnapshotRequest {
        vote: head.vote,
        meta: head.meta,
        offset: head.offset,
        data: data.to_vec(),
        done: head.done,
    })
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, LogId, SnapshotMeta, Vote};

    use super::*;

    #[test]
    fn an_append_larger_than_the_bound_asks_for_fewer_entries() {
        assert_eq!(fewer_entries(32, 1 << 20), None, "small enough");
        assert_eq!(
            fewer_entries(1, 50 << 20),
            None,
            "one entry goes whatever its size"
        );
        assert_eq!(
            fewer_entries(32, 16 << 20),
            Some(2),
            "512 KiB entries: two fit"
        );
        assert_eq!(fewer_entries(2, 40 << 20), Some(1));
        assert_eq!(
            fewer_entries(4, (1 << 20) + 1),
            Some(3),
            "always fewer than sent"
        );
    }

    #[test]
    fn a_snapshot_chunk_round_trips_and_a_cut_one_is_refused() {
        let rpc = InstallSnapshotRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            meta: SnapshotMeta {
                last_log_id: Some(LogId::new(CommittedLeaderId::new(3, 1), 40)),
                last_membership: Default::default(),
                snapshot_id: "3-40".into(),
            },
            offset: 1 << 22,
            data: (0..=255u8).cycle().take(10_000).collect(),
            done: true,
        };
        let body = encode_snapshot_chunk(&rpc).unwrap();
        assert!(
            body.len() < rpc.data.len() + 400,
            "the bytes travel as they are"
        );
        assert_eq!(decode_snapshot_chunk(&body).unwrap(), rpc);
        let err = decode_snapshot_chunk(&body[..20]).unwrap_err();
        assert!(err.contains("announces"), "{err}");
        assert!(decode_snapshot_chunk(&body[..5]).is_err());
    }
}
