//! One pooled HTTP/1.1 client for everything dabba sends between its processes: Raft
//! RPCs between controllers, requests a follower forwards to the leader, the ingress
//! proxying to another host, and the [`ApiClient`](crate::ApiClient).
//!
//! [`send`] tells apart the two ways a request can fail, because callers must: a
//! request that never reached its server certainly had no effect and may be retried
//! anywhere; a request whose answer was lost may have been applied.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

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
        let resp = client.request(req).await.map_err(|e| {
            let message = format!("{e:?}");
            if e.is_connect() {
                SendError::Unreachable {
                    url: url.clone(),
                    message,
                }
            } else {
                SendError::Broken {
                    url: url.clone(),
                    message,
                }
            }
        })?;
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
