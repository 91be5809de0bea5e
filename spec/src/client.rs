//! The HTTP client side of the contract: one pooled HTTP/1.1 client for everything dabba
//! sends between its processes (Raft RPCs between controllers, requests forwarded to the
//! leader, hosts' agents and the CLI calling the `/v1` API), and [`ApiClient`], which
//! speaks the API to a list of controllers and fails over between them.
//!
//! Retries are only ever made when the request certainly had no effect: the connection
//! could not be made, or a controller answered 503 (`no_leader`, `unavailable`). A
//! request whose answer was lost after it was sent has an unknown outcome; that is
//! reported, never retried here, because a write may have been committed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::ErrorBody;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Set by a follower on an answer it relayed from the leader: the leader's URL.
pub const LEADER_HEADER: &str = "x-dabba-leader";

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

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The API answered with an error.
    #[error("{message} ({status} {code})")]
    Status {
        status: u16,
        code: String,
        message: String,
    },
    /// No controller could be reached (or every one said it could not serve now).
    #[error("no controller answered: {0}")]
    Unavailable(String),
    /// A controller may have received the request, but its answer was lost: a write
    /// may or may not have happened.
    #[error("the outcome is unknown: {0}")]
    Unknown(String),
    #[error("unexpected answer from the API: {0}")]
    Decode(String),
}

impl ApiError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A client of the `/v1` API of a cluster: a list of controller URLs and a token.
pub struct ApiClient {
    http: HttpClient,
    servers: Vec<String>,
    token: String,
    /// The server that answered last; tried first next time.
    preferred: AtomicUsize,
    /// How long to keep trying while no controller can serve (an election).
    pub retry_for: Duration,
    /// The longest one request may take.
    pub timeout: Duration,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("servers", &self.servers)
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    pub fn new(servers: Vec<String>, token: String) -> ApiClient {
        ApiClient {
            http: client(),
            servers: servers
                .into_iter()
                .map(|s| s.trim_end_matches('/').to_string())
                .collect(),
            token,
            preferred: AtomicUsize::new(0),
            retry_for: Duration::from_secs(10),
            timeout: Duration::from_secs(40),
        }
    }

    /// A client of the same cluster with other retry and timeout bounds (sharing the
    /// connection pool), e.g. for periodic calls where the next call replaces a retry.
    pub fn with_bounds(&self, retry_for: Duration, timeout: Duration) -> ApiClient {
        ApiClient {
            http: self.http.clone(),
            servers: self.servers.clone(),
            token: self.token.clone(),
            preferred: AtomicUsize::new(self.preferred.load(Ordering::Relaxed)),
            retry_for,
            timeout,
        }
    }

    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// Sends one request, trying each controller in turn while none can serve it.
    pub async fn request(
        &self,
        method: http::Method,
        path: &str,
        body: Bytes,
        content_type: &str,
    ) -> Result<Bytes, ApiError> {
        let deadline = tokio::time::Instant::now() + self.retry_for;
        let mut pause = Duration::from_millis(10);
        let mut last = String::from("no controller URL configured");
        loop {
            let first = self.preferred.load(Ordering::Relaxed);
            for i in 0..self.servers.len() {
                let idx = (first + i) % self.servers.len();
                let url = format!("{}{path}", self.servers[idx]);
                let req = http::Request::builder()
                    .method(method.clone())
                    .uri(&url)
                    .header(
                        http::header::AUTHORIZATION,
                        format!("Bearer {}", self.token),
                    )
                    .header(http::header::CONTENT_TYPE, content_type)
                    .body(Full::new(body.clone()))
                    .map_err(|e| ApiError::Decode(e.to_string()))?;
                match send(&self.http, req, self.timeout).await {
                    Ok(resp) if resp.status() == http::StatusCode::SERVICE_UNAVAILABLE => {
                        last = describe_error(resp.status().as_u16(), resp.body());
                    }
                    Ok(resp) => {
                        let leader = resp
                            .headers()
                            .get(LEADER_HEADER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|l| {
                                let l = l.trim_end_matches('/');
                                self.servers.iter().position(|s| s == l)
                            });
                        self.preferred
                            .store(leader.unwrap_or(idx), Ordering::Relaxed);
                        let status = resp.status().as_u16();
                        if resp.status().is_success() {
                            return Ok(resp.into_body());
                        }
                        return Err(status_error(status, resp.body()));
                    }
                    Err(e) if e.never_sent() => last = e.to_string(),
                    Err(e) => return Err(ApiError::Unknown(e.to_string())),
                }
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Err(ApiError::Unavailable(last));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        let bytes = self
            .request(http::Method::GET, path, Bytes::new(), "application/json")
            .await?;
        decode(&bytes)
    }

    pub async fn send_json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: http::Method,
        path: &str,
        body: &B,
    ) -> Result<T, ApiError> {
        let body = serde_json::to_vec(body).map_err(|e| ApiError::Decode(e.to_string()))?;
        let bytes = self
            .request(method, path, Bytes::from(body), "application/json")
            .await?;
        decode(&bytes)
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::Decode(e.to_string()))
}

fn status_error(status: u16, body: &[u8]) -> ApiError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => ApiError::Status {
            status,
            code: b.error.code,
            message: b.error.message,
        },
        Err(_) => ApiError::Status {
            status,
            code: "http".into(),
            message: String::from_utf8_lossy(body).chars().take(200).collect(),
        },
    }
}

fn describe_error(status: u16, body: &[u8]) -> String {
    status_error(status, body).to_string()
}
