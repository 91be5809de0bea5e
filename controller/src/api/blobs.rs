//! Components, by content: `PUT`, `GET` and `HEAD /v1/blobs/{digest}` for clients and
//! hosts, and `PUT`/`GET /raft/blobs/{digest}` between controllers (see `crate::blobs`).
//!
//! An upload goes to the leader, which commits the digest once a majority of the voters
//! hold the bytes. Any controller answers a download of a committed digest from its own
//! store (fetching it from a peer first if it lacks it), so hosts need not all ask the
//! leader; one that has not yet seen the digest commit asks the leader.

use dabba_client::transport::{Body, range_start, ranged, whole};
use dabba_spec::Digest;
use dabba_spec::api::{BlobStored, Empty};
use http::Method;

use super::auth::{Access, Rule};
use super::router::Router;
use super::{Answer, Api, Call, Failure, fail, json};
use crate::blobs::BlobError;
use crate::command::Command;
use crate::node::{ReceiveError, SpreadError};

/// The largest component the cluster stores.
pub const MAX_COMPONENT: u64 = 256 << 20;

pub(super) fn routes(r: &mut Router) {
    r.leader(
        Method::PUT,
        "/v1/blobs/{digest}",
        Access::Token(Rule::Upload),
        handler!(put),
    );
    r.local(
        Method::GET,
        "/v1/blobs/{digest}",
        Access::Token(Rule::Download),
        handler!(get),
    );
    r.local(
        Method::HEAD,
        "/v1/blobs/{digest}",
        Access::Token(Rule::Download),
        handler!(get),
    );
    r.local(
        Method::PUT,
        "/raft/blobs/{digest}",
        Access::Peer,
        handler!(take),
    );
    r.local(
        Method::GET,
        "/raft/blobs/{digest}",
        Access::Peer,
        handler!(give),
    );
}

/// Whether a request's body is a component, streamed to disk by its handler.
pub(super) fn carries_component(method: &Method, path: &str) -> bool {
    method == Method::PUT && (path.starts_with("/v1/blobs/") || path.starts_with("/raft/blobs/"))
}

fn digest(call: &Call) -> Result<Digest, Failure> {
    call.param("digest")
        .parse()
        .map_err(|e| fail(400, "bad_request", format!("{e}")))
}

/// The component a request carries, unread — refused at once if it announces more
/// bytes than the cluster stores.
fn upload(call: &mut Call) -> Result<Body, Failure> {
    let announced = call
        .parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = announced.filter(|n| *n > MAX_COMPONENT) {
        return Err(too_large(Some(n)));
    }
    Ok(call
        .stream
        .take()
        .unwrap_or_else(|| whole(std::mem::take(&mut call.body))))
}

fn too_large(size: Option<u64>) -> Failure {
    let size = size.map_or_else(|| "larger".to_string(), |n| format!("{n} bytes"));
    fail(
        413,
        "too_large",
        format!(
            "the component is {size}; the cluster stores components of at most {} MiB",
            MAX_COMPONENT >> 20
        ),
    )
}

/// The answer to a component that could not be received.
fn not_received(digest: &Digest, e: ReceiveError) -> Failure {
    match e {
        ReceiveError::TooLarge { .. } => too_large(None),
        ReceiveError::NotComponent(e) => fail(422, "not_a_component", e.to_string()),
        ReceiveError::Broken { .. } => fail(400, "bad_request", format!("component {digest}: {e}")),
        ReceiveError::Store(e @ BlobError::Mismatch { .. }) => {
            fail(400, "digest_mismatch", format!("the body {e}"))
        }
        ReceiveError::Store(e) => fail(500, "internal", format!("component {digest}: {e}")),
    }
}

async fn put(api: &Api, mut call: Call) -> Answer {
    let digest = digest(&call)?;
    let body = upload(&mut call)?;
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
    let size = node
        .spread_blob(digest, body, MAX_COMPONENT)
        .await
        .map_err(|e| match e {
            SpreadError::NoMajority { .. } => {
                fail(503, "not_replicated", format!("component {digest}: {e}"))
            }
            SpreadError::Receive(e) => not_received(&digest, e),
        })?;
    node.propose(Command::PutBlob {
        digest,
        size,
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
    let digest = digest(&call)?;
    let node = &api.node;
    if node.shared.read(|s| s.blob(&digest).is_none()) {
        // Not committed as far as this controller knows: the leader knows for sure.
        if !node.is_leader() {
            return api.forward(call).await;
        }
        node.linearize().await?;
        if node.shared.read(|s| s.blob(&digest).is_none()) {
            return Err(fail(404, "not_found", format!("no component {digest}")));
        }
    }
    if call.parts.method == Method::HEAD {
        return Ok(http::Response::builder()
            .header(http::header::CONTENT_TYPE, "application/wasm")
            .body(whole(bytes::Bytes::new()))
            .expect("valid response"));
    }
    let unavailable = || {
        fail(
            503,
            "unavailable",
            format!("no reachable controller holds a good copy of component {digest}; retry"),
        )
    };
    let internal = |e: BlobError| fail(500, "internal", format!("component {digest}: {e}"));
    if !node.fetch_blob(digest).await.map_err(internal)? {
        return Err(unavailable());
    }
    let from = range_start(&call.parts.headers);
    let (len, body) = node
        .blob_body(digest, from.unwrap_or(0))
        .await
        .map_err(internal)?
        .ok_or_else(unavailable)?;
    Ok(ranged(from, len, body))
}

/// A peer gives this controller a component.
async fn take(api: &Api, mut call: Call) -> Answer {
    let digest = digest(&call)?;
    let body = upload(&mut call)?;
    api.node
        .receive_blob(digest, body, MAX_COMPONENT)
        .await
        .map_err(|e| not_received(&digest, e))?;
    json(201, &Empty {})
}

/// A peer asks for a component this controller holds.
async fn give(api: &Api, call: Call) -> Answer {
    let digest = digest(&call)?;
    let internal = |e: BlobError| fail(500, "internal", e.to_string());
    let held = api.node.verify_blob(digest).await.map_err(internal)?;
    let (_, body) = if held {
        api.node.blob_body(digest, 0).await.map_err(internal)?
    } else {
        None
    }
    .ok_or_else(|| {
        fail(
            404,
            "not_found",
            format!("this controller holds no component {digest}"),
        )
    })?;
    Ok(http::Response::builder()
        .header(http::header::CONTENT_TYPE, "application/wasm")
        .body(body)
        .expect("valid response"))
}
