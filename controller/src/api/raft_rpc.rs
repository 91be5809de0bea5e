//! openraft's RPCs between controllers: `POST /raft/{append,vote,snapshot}`, answered
//! by the node that receives them (never forwarded), authenticated by the cluster's
//! peer token in `x-dabba-peer-token`.

use http::Method;

use super::auth::Access;
use super::router::Router;
use super::{Api, Call, Failure, fail, json, parse};
use crate::credentials::token_hash;
use crate::raft::network::{PEER_TOKEN_HEADER, decode_snapshot_chunk};

pub(super) fn routes(r: &mut Router) {
    r.local(Method::POST, "/raft/append", Access::Peer, |api, call| {
        Box::pin(async move { json(200, &api.node.raft.append_entries(parse(&call.body)?).await) })
    });
    r.local(Method::POST, "/raft/vote", Access::Peer, |api, call| {
        Box::pin(async move { json(200, &api.node.raft.vote(parse(&call.body)?).await) })
    });
    r.local(Method::POST, "/raft/snapshot", Access::Peer, |api, call| {
        Box::pin(async move {
            let chunk =
                decode_snapshot_chunk(&call.body).map_err(|e| fail(400, "invalid_body", e))?;
            json(200, &api.node.raft.install_snapshot(chunk).await)
        })
    });
}

/// Refuses an RPC without the cluster's peer token (compared by hash, so the time it
/// takes says nothing about the token).
pub(super) fn check_peer(api: &Api, call: &Call) -> Result<(), Failure> {
    let token = call
        .parts
        .headers
        .get(PEER_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if token_hash(token) != token_hash(api.node.peer_token()) {
        return Err(fail(
            401,
            "unauthenticated",
            "raft RPCs need the cluster's peer token",
        ));
    }
    Ok(())
}
