//! Components, by content: `PUT`, `GET` and `HEAD /v1/blobs/{digest}` for clients and
//! hosts, and `PUT`/`GET /raft/blobs/{digest}` between controllers (see `crate::blobs`).
//!
//! An upload goes to the leader, which commits the digest once a majority of the voters
//! hold the bytes. Any controller answers a download of a committed digest from its own
//! store (fetching it from a peer first if it lacks it), so hosts need not all ask the
//! leader; one that has not yet seen the digest commit asks the leader.

use bytes::Bytes;
use dabba_spec::Digest;
use dabba_spec::api::{BlobStored, Empty};
use dabba_spec::component;
use http::Method;
use http_body_util::Full;

use super::auth::Need;
use super::raft_rpc::check_peer;
use super::router::Router;
use super::{Answer, Api, Call, Failure, fail, json};
use crate::blobs::BlobError;
use crate::command::Command;
use crate::node::SpreadError;

/// The largest component the cluster stores (an upload is held in the leader's memory
/// while it is sent to the other controllers).
pub const MAX_COMPONENT: usize = 256 << 20;

pub(super) fn routes(r: &mut Router) {
    r.leader(Method::PUT, "/v1/blobs/{digest}", handler!(put));
    r.local(Method::GET, "/v1/blobs/{digest}", handler!(get));
    r.local(Method::HEAD, "/v1/blobs/{digest}", handler!(get));
    r.local(Method::PUT, "/raft/blobs/{digest}", handler!(take));
    r.local(Method::GET, "/raft/blobs/{digest}", handler!(give));
}

/// Whether a request's body may be as large as a component.
pub(super) fn carries_component(method: &Method, path: &str) -> bool {
    method == Method::PUT && (path.starts_with("/v1/blobs/") || path.starts_with("/raft/blobs/"))
}

fn digest(call: &Call) -> Result<Digest, Failure> {
    call.param("digest")
        .parse()
        .map_err(|e| fail(400, "bad_request", format!("{e}")))
}

async fn put(api: &Api, call: Call) -> Answer {
    api.authorize(&call, Need::Upload)?;
    let digest = digest(&call)?;
    let body = &call.body;
    let actual = Digest::of(body);
    if actual != digest {
        return Err(fail(
            400,
            "digest_mismatch",
            format!("the body hashes to {actual}, not {digest}"),
        ));
    }
    if body.len() > MAX_COMPONENT {
        return Err(fail(
            413,
            "too_large",
            format!(
                "the component is {} bytes; the cluster stores components of at most {} MiB",
                body.len(),
                MAX_COMPONENT >> 20
            ),
        ));
    }
    if let Err(e) = component::check(body) {
        return Err(fail(422, "not_a_component", format!("the body {e}")));
    }
    let node = &api.node;
    if node.shared.read(|s| s.blob(&digest).is_some()) {
        return json(
            200,
            &BlobStored {
                digest,
                stored: false,
            },
        );
    }
    node.spread_blob(digest, body.clone())
        .await
        .map_err(|e| match e {
            SpreadError::NoMajority { .. } => {
                fail(503, "not_replicated", format!("component {digest}: {e}"))
            }
            SpreadError::Store(e) => fail(500, "internal", format!("component {digest}: {e}")),
        })?;
    node.propose(Command::PutBlob {
        digest,
        size: body.len() as u64,
        at: crate::node::now_millis(),
        bytes: None,
    })
    .await?;
    json(
        201,
        &BlobStored {
            digest,
            stored: true,
        },
    )
}

async fn get(api: &Api, call: Call) -> Answer {
    api.authorize(&call, Need::Download)?;
    let digest = digest(&call)?;
    let node = &api.node;
    if node.shared.read(|s| s.blob(&digest).is_none()) {
        // Not committed as far as this controller knows: the leader knows for sure.
        if !node.is_leader() {
            return api.forward(call.parts, call.body).await;
        }
        node.linearize().await?;
        if node.shared.read(|s| s.blob(&digest).is_none()) {
            return Err(fail(404, "not_found", format!("no component {digest}")));
        }
    }
    if call.parts.method == Method::HEAD {
        return Ok(http::Response::builder()
            .header(http::header::CONTENT_TYPE, "application/wasm")
            .body(Full::new(Bytes::new()))
            .expect("valid response"));
    }
    let body = node
        .blob_bytes(digest)
        .await
        .map_err(|e| fail(500, "internal", format!("component {digest}: {e}")))?
        .ok_or_else(|| {
            fail(
                503,
                "unavailable",
                format!("no reachable controller holds a good copy of component {digest}; retry"),
            )
        })?;
    Ok(ranged(&call, body))
}

/// The answer to a download: the whole, or — for `Range: bytes=N-`, which a host sends
/// to resume an interrupted download — the rest from byte N (`416` when N is past the
/// end). Other ranges are answered whole (a server may ignore a range it does not
/// serve).
fn ranged(call: &Call, body: Bytes) -> super::Response {
    let from = call
        .parts
        .headers
        .get(http::header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    let len = body.len();
    let resp = http::Response::builder().header(http::header::CONTENT_TYPE, "application/wasm");
    match from {
        None => resp.body(Full::new(body)),
        Some(n) if n >= len => resp
            .status(416)
            .header(http::header::CONTENT_RANGE, format!("bytes */{len}"))
            .body(Full::new(Bytes::new())),
        Some(n) => resp
            .status(206)
            .header(
                http::header::CONTENT_RANGE,
                format!("bytes {n}-{}/{len}", len - 1),
            )
            .body(Full::new(body.slice(n..))),
    }
    .expect("valid response")
}

/// A peer gives this controller a component.
async fn take(api: &Api, call: Call) -> Answer {
    check_peer(api, &call)?;
    let digest = digest(&call)?;
    match api.node.take_blob(digest, call.body).await {
        Ok(()) => json(201, &Empty {}),
        Err(e @ BlobError::Mismatch { .. }) => Err(fail(400, "digest_mismatch", e.to_string())),
        Err(e) => Err(fail(500, "internal", e.to_string())),
    }
}

/// A peer asks for a component this controller holds.
async fn give(api: &Api, call: Call) -> Answer {
    check_peer(api, &call)?;
    let digest = digest(&call)?;
    let bytes = api
        .node
        .local_blob(digest)
        .await
        .map_err(|e| fail(500, "internal", e.to_string()))?
        .ok_or_else(|| {
            fail(
                404,
                "not_found",
                format!("this controller holds no component {digest}"),
            )
        })?;
    Ok(http::Response::builder()
        .header(http::header::CONTENT_TYPE, "application/wasm")
        .body(Full::new(bytes))
        .expect("valid response"))
}
