//! One pooled HTTP/1.1 client for everything dabba sends between its processes: Raft
//! RPCs between controllers, requests a follower forwards to the leader, the ingress
//! proxying to another host, and the [`ApiClient`](crate::ApiClient).
//!
//! [`send`] tells apart the two ways a request can fail, because callers must: a
//! request that never reached its server certainly had no effect and may be retried
//! anywhere; a request whose answer was lost may have been applied.

use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;

/// The address a request came from, put in the request's extensions by the server
/// that accepted it (for the audit log's `source`).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body dabba sends or answers with: [`whole`] bytes, or [`streamed`] as they are
/// produced (a component read from disk, a proxied body), never all held at once.
pub type Body = BoxBody<Bytes, BoxError>;

pub type HttpClient = Client<HttpConnector, Body>;

/// The `N` of a `Range: bytes=N-` header, which a client sends to resume an
/// interrupted download (other ranges are answered whole: a server may ignore a range
/// it does not serve).
pub fn range_start(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<u64>().ok())
}

/// The answer to a download of a component of `len` bytes: `body` whole, or (asked
/// with [`range_start`] `from`) from byte `from` on as `206`, or `416` when `from` is
/// past the end (`body` unused).
pub fn ranged(from: Option<u64>, len: u64, body: Body) -> http::Response<Body> {
    let resp = http::Response::builder().header(http::header::CONTENT_TYPE, "application/wasm");
    match from {
        None => resp.body(body),
        Some(n) if n >= len => resp
            .status(416)
            .header(http::header::CONTENT_RANGE, format!("bytes */{len}"))
            .body(whole(Bytes::new())),
        Some(n) => resp
            .status(206)
            .header(
                http::header::CONTENT_RANGE,
                format!("bytes {n}-{}/{len}", len - 1),
            )
            .body(body),
    }
    .expect("valid response")
}

/// A body of bytes already at hand.
pub fn whole(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A body streamed from a channel: the producer sends pieces in order, and an `Err`
/// to break the body off (the receiver sees a broken transfer, never a short one
/// taken as whole). `size`, when known, is announced as the content length. The
/// channel holds `depth` pieces, so a slow receiver slows the producer.
pub fn streamed(size: Option<u64>, depth: usize) -> (mpsc::Sender<Result<Bytes, BoxError>>, Body) {
    let (tx, rx) = mpsc::channel(depth);
    (tx, Streamed { rx, size }.boxed())
}

struct Streamed {
    rx: mpsc::Receiver<Result<Bytes, BoxError>>,
    size: Option<u64>,
}

impl http_body::Body for Streamed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|piece| piece.map(|r| r.map(Frame::data)))
    }

    fn size_hint(&self) -> SizeHint {
        self.size
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

/// Set by a follower on an answer it relayed from the leader: the leader's URL.
pub const LEADER_HEADER: &str = "x-dabba-leader";

/// A new pooled client: no Nagle delay, 2 s to connect, idle connections kept 30 s.
pub fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

/// Why a request got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection was made: the request certainly had no effect.
    #[error("cannot reach {url}: {message}")]
    Unreachable { url: String, message: String },
    /// The request may have been received, but its answer was lost.
    #[error("the connection to {url} broke before it answered: {message}")]
    Broken { url: String, message: String },
    #[error("{url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
}

impl SendError {
    /// Whether the request certainly had no effect.
    pub fn never_sent(&self) -> bool {
        matches!(self, SendError::Unreachable { .. })
    }
}

/// Sends `req` and reads the whole answer, within `timeout`.
///
/// # Cancel safety
/// Dropping the future abandons the request; whether the server received it is then
/// unknown, as with [`SendError::Broken`].
pub async fn send(
    client: &HttpClient,
    req: http::Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<http::Response<Bytes>, SendError> {
    let url = req.uri().to_string();
    let call = async {
        let resp = send_streamed(
            client,
            req.map(|b| b.map_err(|never| match never {}).boxed()),
        )
        .await?;
        let (parts, body) = resp.into_parts();
        let bytes = body
            .collect()
            .await
            .map_err(|e| SendError::Broken {
                url: url.clone(),
                message: e.to_string(),
            })?
            .to_bytes();
        Ok(http::Response::from_parts(parts, bytes))
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(r) => r,
        Err(_) => Err(SendError::Timeout { url, timeout }),
    }
}

/// Sends `req` (its body may be [`streamed`]) and returns as soon as the head of the
/// answer is in; the caller reads the body, bounding the wait as it sees fit.
pub async fn send_streamed(
    client: &HttpClient,
    req: http::Request<Body>,
) -> Result<http::Response<hyper::body::Incoming>, SendError> {
    let url = req.uri().to_string();
    client.request(req).await.map_err(|e| {
        let message = format!("{e:?}");
        if e.is_connect() {
            SendError::Unreachable { url, message }
        } else {
            SendError::Broken { url, message }
        }
    })
}
