//! The state of one guest instance (the `T` in `Store<T>`), and the per-instance parts
//! of isolation: the memory limiter, captured output and the outbound HTTP policy.
//!
//! A store lives for exactly one request or one job run and is dropped after it, so
//! nothing a guest does can leak into the next request.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use dabba_spec::Capabilities;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::interfaces::{Grants, InterfacesView};
use crate::logs::{AppLog, Stream};

/// Bytes of table growth charged per table element against the memory cap.
const TABLE_ELEMENT_BYTES: usize = 8;

/// Caps the sum of all linear memories and tables of one instance.
///
/// wasmtime's `StoreLimits` caps each memory on its own; a guest with several memories
/// could exceed a per-app budget that way, so this limiter keeps one running total.
/// A denied growth fails the way wasm specifies (`memory.grow` returns -1) and sets
/// [`MemoryLimiter::hit`], so a guest that then aborts is reported as having hit its
/// memory limit rather than as a generic trap.
pub struct MemoryLimiter {
    cap: usize,
    used: usize,
    hit: bool,
    counts: StoreLimits,
}

impl MemoryLimiter {
    pub fn new(cap: usize) -> Self {
        MemoryLimiter {
            cap,
            used: 0,
            hit: false,
            // Bounds on how many instances, tables and memories one component may
            // create; generous for real components, fatal for pathological ones.
            counts: StoreLimitsBuilder::new()
                .instances(64)
                .tables(64)
                .memories(16)
                .build(),
        }
    }

    pub fn hit(&self) -> bool {
        self.hit
    }

    /// Bytes currently charged: memories plus tables.
    pub fn used(&self) -> usize {
        self.used
    }

    fn grow(&mut self, delta: usize) -> bool {
        match self.used.checked_add(delta) {
            Some(total) if total <= self.cap => {
                self.used = total;
                true
            }
            _ => {
                self.hit = true;
                false
            }
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(desired.saturating_sub(current)))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(
            desired
                .saturating_sub(current)
                .saturating_mul(TABLE_ELEMENT_BYTES),
        ))
    }

    fn instances(&self) -> usize {
        self.counts.instances()
    }
    fn tables(&self) -> usize {
        self.counts.tables()
    }
    fn memories(&self) -> usize {
        self.counts.memories()
    }
}

/// A bounded capture of a guest's stdout or stderr. Output past the cap is dropped
/// (and counted) instead of failing the guest: logging too much is not a reason to fail
/// a payment. A capture can be teed into the pod's log, a line as soon as it is
/// complete (a job's output is readable while it runs).
#[derive(Clone)]
pub struct CapturedOutput {
    inner: Arc<Mutex<Captured>>,
}

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    cap: usize,
    dropped: u64,
    tee: Option<(Arc<AppLog>, Stream)>,
    /// The last line captured, not yet complete (so not yet in the log).
    partial: Vec<u8>,
}

impl CapturedOutput {
    pub fn new(cap: usize) -> Self {
        CapturedOutput {
            inner: Arc::new(Mutex::new(Captured {
                cap,
                ..Default::default()
            })),
        }
    }

    /// A capture whose lines also go to `log`, as `stream`.
    pub fn teed(cap: usize, log: Arc<AppLog>, stream: Stream) -> Self {
        CapturedOutput {
            inner: Arc::new(Mutex::new(Captured {
                cap,
                tee: Some((log, stream)),
                ..Default::default()
            })),
        }
    }

    fn push(&self, data: &[u8]) {
        let mut c = self.inner.lock().expect("output lock poisoned");
        let room = c.cap.saturating_sub(c.bytes.len());
        let take = room.min(data.len());
        c.bytes.extend_from_slice(&data[..take]);
        c.dropped += (data.len() - take) as u64;
        if let Some((log, stream)) = c.tee.clone() {
            let kept = &data[..take];
            match kept.iter().rposition(|b| *b == b'\n') {
                Some(end) => {
                    let mut lines = std::mem::take(&mut c.partial);
                    lines.extend_from_slice(&kept[..end]);
                    log.record(stream, &lines);
                    c.partial.extend_from_slice(&kept[end + 1..]);
                }
                None => c.partial.extend_from_slice(kept),
            }
        }
    }

    /// What was captured, and how many bytes were dropped past the cap (a last line
    /// without its newline goes to the log now).
    pub fn take(&self) -> (Vec<u8>, u64) {
        let mut c = self.inner.lock().expect("output lock poisoned");
        if let Some((log, stream)) = c.tee.clone() {
            let rest = std::mem::take(&mut c.partial);
            log.record(stream, &rest);
        }
        (std::mem::take(&mut c.bytes), c.dropped)
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

/// Outbound HTTP: allowed only to destinations the app was granted.
pub struct OutboundPolicy {
    caps: Arc<Capabilities>,
}

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                )>,
            > + Send,
    > {
        drop(fut);
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or("https").to_string();
        let host = uri
            .host()
            .unwrap_or("")
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "http" { 80 } else { 443 });
        if !self.caps.allows_outbound(&scheme, &host, port) {
            tracing::info!(%scheme, %host, port, "outbound request denied: not in allowed_outbound_hosts");
            return Box::new(std::future::ready(Err(
                wasmtime_wasi_http::Error::HttpRequestDenied,
            )));
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (resp, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                resp.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// Everything one instance owns.
pub struct GuestState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    outbound: OutboundPolicy,
    limiter: MemoryLimiter,
    grants: Arc<Grants>,
    /// When the request or run must be finished; checked on every epoch tick.
    deadline: Instant,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for GuestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

impl GuestState {
    pub fn platform(&mut self) -> InterfacesView<'_> {
        InterfacesView {
            grants: &self.grants,
            table: &mut self.table,
        }
    }

    pub fn limiter(&self) -> &MemoryLimiter {
        &self.limiter
    }
}

/// What a new store needs.
pub struct StoreSpec<'a> {
    pub caps: &'a Arc<Capabilities>,
    pub grants: &'a Arc<Grants>,
    pub wasi: WasiCtx,
    pub memory_cap: usize,
    pub fuel: Option<u64>,
    pub deadline: Instant,
}

/// Builds a store for one request or run, with its limits installed.
pub fn new_store(
    engine: &wasmtime::Engine,
    spec: StoreSpec<'_>,
) -> wasmtime::Result<Store<GuestState>> {
    let state = GuestState {
        wasi: spec.wasi,
        http: WasiHttpCtx::new(),
        table: ResourceTable::new(),
        outbound: OutboundPolicy {
            caps: spec.caps.clone(),
        },
        limiter: MemoryLimiter::new(spec.memory_cap),
        grants: spec.grants.clone(),
        deadline: spec.deadline,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    if let Some(fuel) = spec.fuel {
        store.set_fuel(fuel)?;
    }
    // On every epoch tick: yield to the executor so other guests keep running, and stop
    // the guest once its deadline has passed.
    store.epoch_deadline_callback(|ctx| {
        if Instant::now() >= ctx.data().deadline {
            Ok(wasmtime::UpdateDeadline::Interrupt)
        } else {
            Ok(wasmtime::UpdateDeadline::Yield(1))
        }
    });
    store.set_epoch_deadline(1);
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_teed_capture_logs_each_line_once_it_is_complete_and_within_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.log");
        let file = crate::logs::LogFile::open(path.clone(), 1 << 20).unwrap();
        let log = Arc::new(AppLog::new("a", Some(file), false));
        let out = CapturedOutput::teed(20, log, Stream::Stdout);
        let logged = || -> Vec<String> {
            crate::logs::read_log(&path)
                .0
                .into_iter()
                .map(|e| e.l)
                .collect()
        };
        out.push(b"hel");
        assert!(logged().is_empty(), "half a line is not logged yet");
        out.push(b"lo\nwor");
        assert_eq!(logged(), ["hello"]);
        out.push(b"ld\nthis is past the cap\n");
        let (bytes, dropped) = out.take();
        assert_eq!(bytes.len(), 20);
        assert!(dropped > 0);
        assert_eq!(
            logged(),
            ["hello", "world", "this is "],
            "only what was captured"
        );
    }

    #[test]
    fn the_limiter_charges_memories_and_tables_together() {
        let mut l = MemoryLimiter::new(1000);
        assert!(l.memory_growing(0, 600, None).unwrap());
        assert!(l.table_growing(0, 50, None).unwrap()); // 400 bytes
        assert_eq!(l.used(), 1000);
        assert!(!l.hit());
        assert!(!l.memory_growing(600, 601, None).unwrap());
        assert!(l.hit());
        assert_eq!(l.used(), 1000, "a denied growth charges nothing");
    }

    #[test]
    fn captured_output_drops_past_the_cap_without_failing() {
        let mut out = CapturedOutput::new(5);
        out.write(Bytes::from_static(b"hello world")).unwrap();
        out.write(Bytes::from_static(b"!")).unwrap();
        let (bytes, dropped) = out.take();
        assert_eq!(bytes, b"hello");
        assert_eq!(dropped, 7);
    }
}
