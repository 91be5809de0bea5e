//! What a host answers on its ingress to the controllers and to other hosts, not to
//! clients: its logs (`GET /.dabba/logs/...`, `crate::logs`) and the components it has
//! cached (`GET /.dabba/blobs/{digest}`), so a host starting a pod can fetch the
//! component from a peer that runs it instead of from the controllers.
//!
//! Only a caller that shows the cluster's read key ([`READ_KEY_HEADER`], handed to
//! authenticated hosts in their assignments) is answered; any other gets `403`.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use dabba_client::transport::{range_start, ranged, streamed, whole};
use dabba_spec::Digest;
use dabba_spec::api::READ_KEY_HEADER;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::function::{HttpResponse, error_response};
use crate::logs::{self, LogService};

/// Where a component is asked for.
pub const BLOBS: &str = "/.dabba/blobs/";

/// A component is sent this much at a time.
const PIECE: usize = 1 << 20;

/// This host's answers to its peers.
pub struct PeerReads {
    key: RwLock<String>,
    logs: Arc<LogService>,
    /// Where fetched components are cached, as `<sha256 hex>.wasm`.
    components: PathBuf,
}

impl PeerReads {
    pub fn new(logs: LogService, components: PathBuf) -> PeerReads {
        PeerReads {
            key: RwLock::new(String::new()),
            logs: Arc::new(logs),
            components,
        }
    }

    pub fn logs(&self) -> &LogService {
        &self.logs
    }

    /// The cluster's read key (from the host's assignments).
    pub fn set_key(&self, key: &str) {
        let mut k = self.key.write().expect("read key lock");
        if *k != key {
            *k = key.to_string();
        }
    }

    pub fn key(&self) -> String {
        self.key.read().expect("read key lock").clone()
    }

    /// Whether a request is for this module (it answers it, whoever asks).
    pub fn handles(path: &str) -> bool {
        path.starts_with(logs::PREFIX) || path.starts_with(BLOBS)
    }

    /// Whether `headers` show the cluster's read key: the request comes from a
    /// controller or another host.
    pub fn vouches(&self, headers: &http::HeaderMap) -> bool {
        let shown = headers
            .get(READ_KEY_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let key = self.key();
        !key.is_empty() && same(shown.as_bytes(), key.as_bytes())
    }

    /// Answers a request [`PeerReads::handles`].
    pub async fn answer(&self, parts: &http::request::Parts) -> HttpResponse {
        if !self.vouches(&parts.headers) {
            return error_response(
                403,
                "forbidden",
                "answered to the cluster's controllers and hosts only",
                None,
            );
        }
        let path = parts.uri.path();
        match path.strip_prefix(BLOBS) {
            Some(digest) => self.blob(digest, range_start(&parts.headers)).await,
            None => self.logs.answer(parts).await,
        }
    }

    /// A cached component, whole or from byte `from` on (`206`).
    async fn blob(&self, digest: &str, from: Option<u64>) -> HttpResponse {
        let Ok(digest) = digest.parse::<Digest>() else {
            return error_response(
                404,
                "not_found",
                &format!("`{digest}` is not a digest"),
                None,
            );
        };
        let path = self.components.join(format!("{}.wasm", digest.hex()));
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(_) => {
                return error_response(
                    404,
                    "not_found",
                    &format!("this host holds no component {digest}"),
                    None,
                );
            }
        };
        let len = match file.metadata().await {
            Ok(m) => m.len(),
            Err(e) => return error_response(500, "internal", &e.to_string(), None),
        };
        let start = from.unwrap_or(0);
        if start >= len && from.is_some() {
            return ranged(from, len, whole(Bytes::new()));
        }
        if file.seek(std::io::SeekFrom::Start(start)).await.is_err() {
            return error_response(500, "internal", "cannot seek the component", None);
        }
        let (tx, body) = streamed(Some(len - start), 4);
        tokio::spawn(async move {
            loop {
                let mut buf = vec![0u8; PIECE];
                match file.read(&mut buf).await {
                    Ok(0) => return,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.send(Ok(Bytes::from(buf))).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                }
            }
        });
        ranged(from, len, body)
    }
}

/// Compares without stopping at the first difference (the key is a secret).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
