//! Raft RPCs between controllers: JSON over HTTP POST to `/raft/{append,vote,snapshot}`
//! on the peer's API address, authenticated with the cluster's peer token.
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

pub const PEER_TOKEN_HEADER: &str = "x-dabba-peer-token";

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
        let req = http::Request::post(format!("{}/raft/{path}", self.address))
            .header(http::header::CONTENT_TYPE, "application/json")
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
        self.call("append", &rpc, option.hard_ttl().max(APPEND_TIMEOUT_FLOOR))
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(
            "snapshot",
            &rpc,
            option.hard_ttl().max(SNAPSHOT_TIMEOUT_FLOOR),
        )
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
