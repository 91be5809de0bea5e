//! One HTTP/1.1 client (keep-alive, pooled) for everything a controller sends: Raft RPCs
//! to peers and API requests forwarded to the leader.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

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
    #[error("cannot reach {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("{url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
}

/// Sends `req` and reads the whole answer, within `timeout`.
pub async fn send(
    client: &HttpClient,
    req: http::Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<http::Response<Bytes>, SendError> {
    let url = req.uri().to_string();
    let call = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| SendError::Unreachable {
                url: url.clone(),
                message: e.to_string(),
            })?;
        let (parts, body) = resp.into_parts();
        let bytes = body
            .collect()
            .await
            .map_err(|e| SendError::Unreachable {
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
