//! Moving components to and from the cluster in pieces, never as one request body.
//!
//! Components reach hundreds of MiB. An upload is streamed in pieces of [`PIECE`]
//! bytes, counting what has gone so the CLI can show progress; it is a `PUT` of
//! content-addressed bytes, so an attempt that failed in any way is simply repeated.
//! A host that loses its connection (or is restarted) half-way through a download
//! should not start over: the bytes go to a partial file as they arrive; the next
//! attempt — to the same controller or another — asks only for the rest
//! (`Range: bytes=N-`), and the whole is kept only once it hashes to its digest.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dabba_spec::Digest;
use dabba_spec::api::{BlobStored, READ_KEY_HEADER};
use http::StatusCode;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;

use crate::api::{ApiClient, ApiError};
use crate::paths;
use crate::transport::{send_streamed, streamed, whole};

/// Attempts (over the controllers in turn) before a transfer gives up.
const ATTEMPTS: usize = 6;
/// The longest a download may wait for the next bytes.
const STALL: Duration = Duration::from_secs(30);
/// An upload is sent this much at a time.
const PIECE: usize = 1 << 20;
/// The longest one upload attempt may take, answer included (the leader answers once a
/// majority of the controllers hold the component).
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// How an attempt ended short of the whole component.
enum Short {
    /// Try again (the next controller, resuming).
    Retry(String),
    /// Give up: the cluster answered for sure (404, 401, ...).
    Final(ApiError),
}

impl ApiClient {
    /// `PUT /v1/blobs/{digest}`: uploads a component (`bytes`, which hash to `digest`)
    /// in pieces, adding each piece's size to `sent` as it leaves (it restarts from 0
    /// when an attempt is repeated).
    pub async fn put_blob(
        &self,
        digest: &Digest,
        bytes: Bytes,
        sent: Arc<AtomicU64>,
    ) -> Result<BlobStored, ApiError> {
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            let server = self.server(attempt);
            let once = self.upload_once(server, digest, bytes.clone(), sent.clone());
            match tokio::time::timeout(UPLOAD_TIMEOUT, once).await {
                Ok(Ok(stored)) => return Ok(stored),
                Ok(Err(Short::Retry(why))) => last = why,
                Ok(Err(Short::Final(e))) => return Err(e),
                Err(_) => last = format!("{server}: no answer in {UPLOAD_TIMEOUT:?}"),
            }
            tokio::time::sleep(Duration::from_millis(50 << attempt.min(5))).await;
        }
        Err(ApiError::Unavailable(last))
    }

    async fn upload_once(
        &self,
        server: &str,
        digest: &Digest,
        bytes: Bytes,
        sent: Arc<AtomicU64>,
    ) -> Result<BlobStored, Short> {
        let (pieces, body) = streamed(Some(bytes.len() as u64), 2);
        let req = http::Request::put(format!("{server}{}", paths::blob(digest)))
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token()),
            )
            .header(http::header::CONTENT_TYPE, "application/wasm")
            .body(body)
            .map_err(|e| Short::Final(ApiError::Decode(e.to_string())))?;
        sent.store(0, Ordering::Relaxed);
        // The pieces go from a task of their own: the server may answer (a refusal)
        // before it has read them all, and then stops reading.
        let producer = tokio::spawn(async move {
            for from in (0..bytes.len()).step_by(PIECE) {
                let piece = bytes.slice(from..(from + PIECE).min(bytes.len()));
                let n = piece.len() as u64;
                if pieces.send(Ok(piece)).await.is_err() {
                    return;
                }
                sent.fetch_add(n, Ordering::Relaxed);
            }
        });
        let answer = async {
            let resp = send_streamed(self.http(), req)
                .await
                .map_err(|e| Short::Retry(e.to_string()))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| Short::Retry(format!("{server}: {e}")))?
                .to_bytes();
            if status.is_success() {
                return serde_json::from_slice(&body)
                    .map_err(|e| Short::Final(ApiError::Decode(e.to_string())));
            }
            let error = crate::api::status_error(status.as_u16(), &body);
            if status.is_server_error() {
                Err(Short::Retry(format!("{server}: {error}")))
            } else {
                Err(Short::Final(error))
            }
        }
        .await;
        producer.abort();
        answer
    }

    /// `GET /v1/blobs/{digest}`, resumably, through `partial` (a file the caller keeps
    /// across attempts and restarts; it is removed once the whole is read): the
    /// component's bytes, checked against `digest`.
    pub async fn download_blob(&self, digest: &Digest, partial: &Path) -> Result<Bytes, ApiError> {
        let mut last = String::new();
        let auth = format!("Bearer {}", self.token());
        for attempt in 0..ATTEMPTS {
            let url = format!("{}{}", self.server(attempt), paths::blob(digest));
            match self
                .download_once(&url, (http::header::AUTHORIZATION.as_str(), &auth), partial)
                .await
            {
                Ok(()) => match whole_download(digest, partial).await? {
                    Ok(bytes) => return Ok(bytes),
                    Err(why) => last = why,
                },
                Err(Short::Retry(why)) => last = why,
                Err(Short::Final(e)) => return Err(e),
            }
            tokio::time::sleep(Duration::from_millis(50 << attempt.min(5))).await;
        }
        Err(ApiError::Unavailable(last))
    }

    /// A component from the first of `peers` (hosts' ingress addresses, shown the
    /// cluster's read `key`) that holds it, else from the controllers
    /// ([`ApiClient::download_blob`]); a transfer a peer broke off resumes from the next
    /// source (the bytes are the same wherever they come from: the digest says so).
    /// Answers where the bytes came from: `true` for a peer.
    pub async fn download_blob_via_peers(
        &self,
        peers: &[String],
        key: &str,
        digest: &Digest,
        partial: &Path,
    ) -> Result<(Bytes, bool), ApiError> {
        if !key.is_empty() {
            for peer in peers {
                let url = format!("{}{}", peer.trim_end_matches('/'), paths::host_blob(digest));
                let done = self
                    .download_once(&url, (READ_KEY_HEADER, key), partial)
                    .await;
                match done {
                    Ok(()) => match whole_download(digest, partial).await? {
                        Ok(bytes) => return Ok((bytes, true)),
                        Err(why) => tracing::warn!(%peer, %why, "a peer's component was not it"),
                    },
                    // A peer that lacks it, or cannot be reached: the next source.
                    Err(Short::Retry(why)) => tracing::debug!(%peer, %why, "fetching from a peer"),
                    Err(Short::Final(e)) => {
                        tracing::debug!(%peer, error = %e, "fetching from a peer")
                    }
                }
            }
        }
        Ok((self.download_blob(digest, partial).await?, false))
    }

    /// One attempt: appends what `url` sends after what `partial` holds, showing the
    /// credential `auth` (a header and its value). `Ok` once the server sent the whole
    /// rest.
    async fn download_once(
        &self,
        url: &str,
        auth: (&str, &str),
        partial: &Path,
    ) -> Result<(), Short> {
        let server = url;
        let have = tokio::fs::metadata(partial).await.map_or(0, |m| m.len());
        let mut req = http::Request::get(url).header(auth.0, auth.1);
        if have > 0 {
            req = req.header(http::header::RANGE, format!("bytes={have}-"));
        }
        let req = req
            .body(whole(Bytes::new()))
            .map_err(|e| Short::Final(ApiError::Decode(e.to_string())))?;
        let resp = tokio::time::timeout(STALL, self.http().request(req))
            .await
            .map_err(|_| Short::Retry(format!("{server}: no answer in {STALL:?}")))?
            .map_err(|e| Short::Retry(format!("{server}: {e}")))?;
        let append = match resp.status() {
            StatusCode::PARTIAL_CONTENT => true,
            StatusCode::OK => false,
            // What is held is already the whole (or more): start again from nothing.
            StatusCode::RANGE_NOT_SATISFIABLE => {
                let _ = tokio::fs::remove_file(partial).await;
                return Err(Short::Retry(format!("{server}: range not satisfiable")));
            }
            status if status.is_server_error() => {
                return Err(Short::Retry(format!("{server}: {status}")));
            }
            status => {
                let body = resp.into_body().collect().await.map(|b| b.to_bytes());
                return Err(Short::Final(crate::api::status_error(
                    status.as_u16(),
                    &body.unwrap_or_default(),
                )));
            }
        };
        let file_error = |e: std::io::Error| {
            Short::Final(ApiError::Decode(format!("{}: {e}", partial.display())))
        };
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(partial)
            .await
            .map_err(file_error)?;
        let mut body = resp.into_body();
        loop {
            let frame = match tokio::time::timeout(STALL, body.frame()).await {
                Err(_) => return Err(Short::Retry(format!("{server}: stalled for {STALL:?}"))),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(Short::Retry(format!("{server}: {e}"))),
                Ok(Some(Ok(frame))) => frame,
            };
            if let Some(data) = frame.data_ref() {
                file.write_all(data).await.map_err(file_error)?;
            }
        }
        file.flush().await.map_err(file_error)?;
        Ok(())
    }
}

/// Reads a download `partial` holds whole: its bytes if they hash to `digest`, else
/// why not (the partial file is gone either way).
async fn whole_download(
    digest: &Digest,
    partial: &Path,
) -> Result<Result<Bytes, String>, ApiError> {
    let bytes = tokio::fs::read(partial)
        .await
        .map_err(|e| ApiError::Decode(format!("{}: {e}", partial.display())))?;
    let _ = tokio::fs::remove_file(partial).await;
    let actual = Digest::of(&bytes);
    if actual == *digest {
        Ok(Ok(Bytes::from(bytes)))
    } else {
        Ok(Err(format!(
            "the download hashed to {actual}, not {digest}"
        )))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// The head of the request on `conn`, lowercased.
    pub(crate) async fn read_head(conn: &mut tokio::net::TcpStream) -> String {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if conn.read(&mut byte).await.unwrap_or(0) == 0 {
                break;
            }
            head.push(byte[0]);
        }
        String::from_utf8_lossy(&head).to_lowercase()
    }

    /// A stand-in controller serving `blob` with ranges, that breaks off its first
    /// answer half-way (a lost connection). Records each request's `Range`.
    async fn flaky_controller(blob: Vec<u8>, ranges: Arc<Mutex<Vec<Option<String>>>>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                let head = read_head(&mut conn).await;
                let range = head
                    .lines()
                    .find_map(|l| l.strip_prefix("range: bytes="))
                    .map(|r| r.trim().to_string());
                let first = {
                    let mut r = ranges.lock().unwrap();
                    r.push(range.clone());
                    r.len() == 1
                };
                let from: usize = range
                    .as_deref()
                    .and_then(|r| r.trim_end_matches('-').parse().ok())
                    .unwrap_or(0);
                let rest = &blob[from..];
                let status = if from > 0 {
                    "206 Partial Content"
                } else {
                    "200 OK"
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    rest.len()
                );
                conn.write_all(reply.as_bytes()).await.unwrap();
                let send = if first { &rest[..rest.len() / 2] } else { rest };
                conn.write_all(send).await.unwrap();
                // Dropping the connection: the first answer ends short.
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn an_interrupted_download_resumes_where_it_stopped_and_is_checked() {
        let blob: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let digest = Digest::of(&blob);
        let ranges = Arc::new(Mutex::new(Vec::new()));
        let server = flaky_controller(blob.clone(), ranges.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("c.partial");
        let api = ApiClient::new(vec![server.clone()], "t".into());
        let got = api.download_blob(&digest, &partial).await.unwrap();
        assert_eq!(&got[..], &blob[..]);
        assert_eq!(
            *ranges.lock().unwrap(),
            vec![None, Some(format!("{}-", blob.len() / 2))],
            "the second request asked only for the rest"
        );
        assert!(!partial.exists(), "the partial file is gone once whole");

        // Bytes that do not hash to the digest are never returned.
        let other = Digest::of(b"something else");
        let err = api.download_blob(&other, &partial).await.unwrap_err();
        assert!(err.to_string().contains("hashed to"), "{err}");
        assert!(!partial.exists());
    }

    /// A stand-in host that answers every request with `status` and `body`, and counts
    /// the requests that showed the read key `key`.
    async fn stand_in_peer(
        status: &'static str,
        body: Vec<u8>,
        key: &'static str,
    ) -> (String, Arc<Mutex<usize>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let keyed = Arc::new(Mutex::new(0));
        let count = keyed.clone();
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                let head = read_head(&mut conn).await;
                if head.contains(&format!("x-dabba-read-key: {key}")) {
                    *count.lock().unwrap() += 1;
                }
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                conn.write_all(reply.as_bytes()).await.unwrap();
                conn.write_all(&body).await.unwrap();
            }
        });
        (format!("http://{addr}"), keyed)
    }

    #[tokio::test]
    async fn a_component_comes_from_a_peer_that_has_it_else_from_the_controllers() {
        let blob: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
        let digest = Digest::of(&blob);
        let ranges = Arc::new(Mutex::new(Vec::new()));
        let controller = flaky_controller(blob.clone(), ranges.clone()).await;
        let api = ApiClient::new(vec![controller], "t".into());
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("c.partial");

        // A peer that has it: the controllers are not asked.
        let (good, asked) = stand_in_peer("200 OK", blob.clone(), "k").await;
        let (bytes, from_peer) = api
            .download_blob_via_peers(&[good], "k", &digest, &partial)
            .await
            .unwrap();
        assert_eq!((&bytes[..], from_peer), (&blob[..], true));
        assert_eq!(*asked.lock().unwrap(), 1, "shown the read key");
        assert!(ranges.lock().unwrap().is_empty());

        // Peers that lack it or send other bytes are passed over; the controller serves.
        let (missing, _) = stand_in_peer("404 Not Found", b"{}".to_vec(), "k").await;
        let (wrong, _) = stand_in_peer("200 OK", vec![7u8; blob.len()], "k").await;
        let (bytes, from_peer) = api
            .download_blob_via_peers(&[missing, wrong], "k", &digest, &partial)
            .await
            .unwrap();
        assert_eq!((&bytes[..], from_peer), (&blob[..], false));
        assert!(!partial.exists());
    }
}
