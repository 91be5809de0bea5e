//! Components, by content: `PUT`, `GET` and `HEAD /v1/blobs/{digest}`.

use bytes::Bytes;
use dabba_spec::Digest;
use dabba_spec::api::BlobStored;
use dabba_spec::component;
use http::Method;
use http_body_util::Full;

use super::auth::Need;
use super::router::Router;
use super::{Answer, Api, Call, Failure, fail, json};
use crate::command::Command;

/// The largest component the cluster stores. A component travels in one Raft entry, and
/// openraft 0.9 bounds each AppendEntries RPC by the heartbeat interval; larger entries
/// than this cannot be replicated reliably (8 MiB lost the leader on a 2-core machine).
/// Raising it means replicating blobs outside the log (see spec/controller.md).
pub const MAX_COMPONENT: usize = 4 << 20;

pub(super) fn routes(r: &mut Router) {
    r.leader(Method::PUT, "/v1/blobs/{digest}", handler!(put));
    r.leader(Method::GET, "/v1/blobs/{digest}", handler!(get));
    r.leader(Method::HEAD, "/v1/blobs/{digest}", handler!(get));
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
    node.propose(Command::PutBlob {
        digest,
        bytes: body.to_vec(),
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
    node.linearize().await?;
    let bytes = node
        .shared
        .read(|s| s.blob(&digest).map(<[u8]>::to_vec))
        .ok_or_else(|| fail(404, "not_found", format!("no component {digest}")))?;
    let body = if call.parts.method == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from(bytes)
    };
    Ok(http::Response::builder()
        .header(http::header::CONTENT_TYPE, "application/wasm")
        .body(Full::new(body))
        .expect("valid response"))
}
