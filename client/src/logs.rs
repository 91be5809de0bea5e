//! Reading logs: `GET /v1/apps/{ns}/{name}/logs` and `GET /v1/runs/{ns}/{name}/logs`,
//! one [`LogLine`] per line of the answer, read as it arrives (a followed log's answer
//! stays open).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
pub use dabba_spec::api::LogQuery;
use dabba_spec::api::{LOGS_UNREACHABLE_HEADER, LogLine};
use dabba_spec::resources::ResourceKey;
use http::StatusCode;
use http_body_util::BodyExt;

use crate::api::{ApiClient, ApiError};
use crate::paths;
use crate::transport::whole;

/// Whose logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSource {
    /// An app's pods.
    App,
    /// A cron job run's attempts.
    Run,
}

/// An answer being read, line by line.
pub struct LogStream {
    body: hyper::body::Incoming,
    pending: BytesMut,
    /// Hosts whose lines are missing: they could not be asked.
    pub unreachable: Vec<String>,
}

impl LogStream {
    /// The next line; `None` once the answer ended (an `Err` if it broke off).
    pub async fn next(&mut self) -> Option<Result<LogLine, ApiError>> {
        loop {
            if let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
                let line = self.pending.split_to(end + 1);
                match serde_json::from_slice::<LogLine>(&line[..end]) {
                    Ok(l) => return Some(Ok(l)),
                    Err(e) => return Some(Err(ApiError::Decode(format!("a log line: {e}")))),
                }
            }
            match self.body.frame().await {
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        self.pending.extend_from_slice(&d);
                    }
                }
                Some(Err(e)) => {
                    return Some(Err(ApiError::Unavailable(format!(
                        "the log broke off: {e}"
                    ))));
                }
                None => return None,
            }
        }
    }
}

/// How long a controller may take to begin its answer.
const OPEN: Duration = Duration::from_secs(15);

impl ApiClient {
    /// Opens the logs of `key`, trying each controller in turn.
    pub async fn logs(
        &self,
        source: LogSource,
        key: &ResourceKey,
        query: &LogQuery,
    ) -> Result<LogStream, ApiError> {
        let path = paths::logs(
            match source {
                LogSource::App => "apps",
                LogSource::Run => "runs",
            },
            key,
            query,
        );
        let mut last = String::new();
        for attempt in 0..self.servers().len().max(1) * 2 {
            let server = self.server(attempt);
            let req = http::Request::get(format!("{server}{path}"))
                .header(
                    http::header::AUTHORIZATION,
                    format!("Bearer {}", self.token()),
                )
                .body(whole(Bytes::new()))
                .map_err(|e| ApiError::Decode(e.to_string()))?;
            let resp = match tokio::time::timeout(OPEN, self.http().request(req)).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    last = format!("{server}: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Err(_) => {
                    last = format!("{server}: no answer in {OPEN:?}");
                    continue;
                }
            };
            let status = resp.status();
            if status == StatusCode::OK {
                let unreachable = resp
                    .headers()
                    .get(LOGS_UNREACHABLE_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.split(',').map(str::to_string).collect())
                    .unwrap_or_default();
                return Ok(LogStream {
                    body: resp.into_body(),
                    pending: BytesMut::new(),
                    unreachable,
                });
            }
            let body = resp.into_body().collect().await.map(|b| b.to_bytes());
            let err = crate::api::status_error(status.as_u16(), &body.unwrap_or_default());
            if status.is_server_error() {
                last = format!("{server}: {err}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            return Err(err);
        }
        Err(ApiError::Unavailable(last))
    }
}
