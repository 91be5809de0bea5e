//! HTTP functions: one fresh, isolated instance of a `wasi:http` component per request.
//!
//! A request passes a concurrency gate (at most `max_concurrency` instances run at
//! once; a bounded queue waits behind them), its body is read up to
//! `max_request_body`, a new store gets the app's limits, the pre-instantiated
//! component is instantiated, and its `incoming-handler` is called. The response body
//! is collected up to `max_response_body` while the guest runs, so a guest that goes
//! over a limit at any point gets a clean 5xx naming the limit, never half a response.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use dabba_client::transport::whole;
use dabba_spec::{Digest, LimitKind, Limits};
use http_body_util::{BodyExt, Full, Limited};
use tokio::sync::{Semaphore, SemaphorePermit, oneshot};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use crate::app::{AppConfig, Prepared};
use crate::component::LoadError;
use crate::guest::{CapturedOutput, GuestState};
use crate::linked::{Fresh, LinkedApp};
use crate::logs::AppLog;
use crate::outcome::{Failure, describe};
use crate::pod_load::LoadCounters;

/// The response type of an HTTP function: always a complete body.
pub type HttpResponse = http::Response<dabba_client::transport::Body>;

pub struct HttpFunction {
    app: LinkedApp,
    pre: ProxyPre<GuestState>,
    gate: Gate,
    load: LoadCounters,
}

/// Bounds how many instances run at once and how many requests wait for one.
struct Gate {
    slots: Semaphore,
    waiting: AtomicU32,
    depth: u32,
    patience: Duration,
}

impl Gate {
    async fn enter(&self) -> Result<SemaphorePermit<'_>, LimitKind> {
        if let Ok(p) = self.slots.try_acquire() {
            return Ok(p);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.depth {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(LimitKind::QueueFull);
        }
        let waited = tokio::time::timeout(self.patience, self.slots.acquire()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match waited {
            Ok(Ok(p)) => Ok(p),
            _ => Err(LimitKind::QueueTimeout),
        }
    }
}

/// What the guest's instance reported when it finished.
struct Finished {
    result: wasmtime::Result<()>,
    /// The instance's store, still holding its memory slot until it is dropped.
    store: Option<wasmtime::Store<GuestState>>,
    memory_hit: bool,
    /// Bytes of memory (and tables) the instance held at its peak.
    memory_used: usize,
    fuel_used: Option<u64>,
    stdout: CapturedOutput,
    stderr: CapturedOutput,
}

impl HttpFunction {
    pub(crate) fn new(app: AppConfig, p: Prepared) -> Result<Self, LoadError> {
        let (app, instance_pre) = LinkedApp::new(app, p);
        let pre = ProxyPre::new(instance_pre).map_err(|e| LoadError::Invalid {
            origin: app.name.clone(),
            detail: format!("{e:#}"),
        })?;
        let limits = &app.limits;
        let gate = Gate {
            slots: Semaphore::new(limits.max_concurrency as usize),
            waiting: AtomicU32::new(0),
            depth: limits.queue_depth,
            patience: limits.queue_timeout.get(),
        };
        Ok(HttpFunction {
            app,
            pre,
            gate,
            load: LoadCounters::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.app.name
    }

    pub fn digest(&self) -> Digest {
        self.app.digest
    }

    pub fn limits(&self) -> &Limits {
        &self.app.limits
    }

    pub fn log(&self) -> &Arc<AppLog> {
        &self.app.log
    }

    /// The load on this function, for the autoscaler.
    pub fn load(&self) -> &LoadCounters {
        &self.load
    }

    /// Answers one request with a fresh instance.
    pub async fn handle<B>(&self, req: http::Request<B>) -> HttpResponse
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let flight = self.load.begin();
        let resp = match self.gate.enter().await {
            Err(kind) => self.failure(&Failure::Limit(kind)),
            Ok(_permit) => self.run(req, started).await,
        };
        flight.finish(
            resp.status().as_u16(),
            resp.headers().contains_key(LIMIT_HEADER),
        );
        self.app.metrics.request(resp.status().as_u16());
        self.app
            .metrics
            .duration
            .observe(started.elapsed().as_secs_f64());
        resp
    }

    async fn run<B>(&self, req: http::Request<B>, started: Instant) -> HttpResponse
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let max_body = self.app.limits.max_request_body.as_usize();
        let too_large = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > max_body as u64);
        if too_large {
            return self.failure(&Failure::Limit(LimitKind::RequestBody));
        }
        let (mut parts, body) = req.into_parts();
        let body = match Limited::new(body, max_body).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                return self.failure(&Failure::Limit(LimitKind::RequestBody));
            }
            Err(e) => {
                return error_response(
                    400,
                    "bad_request",
                    &format!("reading the request body: {e}"),
                    None,
                );
            }
        };
        if !parts.headers.contains_key(http::header::HOST) && parts.uri.authority().is_none() {
            parts.headers.insert(
                http::header::HOST,
                http::HeaderValue::from_static("localhost"),
            );
        }
        let req = http::Request::from_parts(parts, Full::new(body));

        let deadline = started + self.app.limits.timeout.get();
        let outcome = tokio::time::timeout_at(deadline.into(), self.call(req, deadline)).await;
        let (response, finished) = match outcome {
            Ok(r) => r,
            Err(_elapsed) => (Err(Failure::Limit(LimitKind::Timeout)), None),
        };
        if let Some(f) = &finished {
            self.app.settle(f.fuel_used, &f.stdout, &f.stderr);
            self.load.instance(f.fuel_used, f.memory_used);
        }
        match response {
            Ok(resp) => resp,
            Err(failure) => self.failure(&failure),
        }
    }

    /// Instantiates, calls the handler, and collects the response; the guest and the
    /// collector run side by side in this task.
    async fn call(
        &self,
        req: http::Request<Full<Bytes>>,
        deadline: Instant,
    ) -> (Result<HttpResponse, Failure>, Option<Finished>) {
        let Fresh {
            mut store,
            stdout,
            stderr,
        } = match self.app.fresh(&[], &[], deadline) {
            Ok(f) => f,
            Err(e) => return (Err(Failure::Host(format!("{e:#}"))), None),
        };
        let (tx, rx) = oneshot::channel();
        let resources = (|| -> wasmtime::Result<_> {
            let view = store.data_mut();
            let out = view.http().new_response_outparam(tx)?;
            let incoming = view.http().new_incoming_request(Scheme::Http, req)?;
            Ok((incoming, out))
        })();
        let (incoming, out) = match resources {
            Ok(r) => r,
            Err(e) => return (Err(Failure::Host(format!("{e:#}"))), None),
        };
        let app = &self.app;

        // The guest owns the store and hands it back when it returns.
        let guest = async move {
            let result = async {
                let proxy = self.pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, incoming, out)
                    .await
            }
            .await;
            let fuel_used = app.fuel_used(&store);
            Finished {
                result,
                memory_hit: store.data().limiter().hit(),
                memory_used: store.data().limiter().used(),
                fuel_used,
                store: Some(store),
                stdout,
                stderr,
            }
        };
        let max_response = self.app.limits.max_response_body.as_usize();
        let collector = async move {
            let resp = rx
                .await
                .map_err(|_| None)?
                .map_err(|code| Some(format!("{code:?}")))?;
            let (parts, mut body) = resp.into_parts();
            let mut bytes = BytesMut::new();
            while let Some(frame) = body.frame().await {
                let frame =
                    frame.map_err(|code| Some(format!("response body failed: {code:?}")))?;
                if let Ok(data) = frame.into_data() {
                    if bytes.len() + data.len() > max_response {
                        return Err(Some("response-body-limit".to_string()));
                    }
                    bytes.extend_from_slice(&data);
                }
            }
            Ok::<_, Option<String>>(http::Response::from_parts(parts, whole(bytes.freeze())))
        };

        let mut guest = pin!(guest);
        let mut collector = pin!(collector);
        let mut collected = None;
        let mut finished = loop {
            tokio::select! {
                f = &mut guest => break f,
                r = &mut collector, if collected.is_none() => collected = Some(r),
            }
        };
        let store = finished.store.take();
        if let Err(e) = &finished.result {
            let failure = Failure::classify(e, finished.memory_hit);
            return (Err(failure), Some(finished));
        }
        let collected = match collected {
            Some(r) => {
                // Resetting the instance's memory slot takes a few microseconds; do it
                // after this response is on its way rather than before.
                tokio::spawn(async move { drop(store) });
                r
            }
            None => {
                // The guest returned with its response body still open: dropping the
                // store ends the body, so the collector can finish.
                drop(store);
                collector.await
            }
        };
        let response = match collected {
            Ok(resp) => Ok(resp),
            Err(Some(reason)) if reason == "response-body-limit" => {
                Err(Failure::Limit(LimitKind::ResponseBody))
            }
            Err(Some(reason)) => Err(Failure::Trap(format!(
                "the guest answered with an error: {reason}"
            ))),
            Err(None) => Err(Failure::Trap(
                "the guest returned without sending a response".into(),
            )),
        };
        (response, Some(finished))
    }

    fn failure(&self, f: &Failure) -> HttpResponse {
        if let Some(kind) = f.limit() {
            self.app.metrics.limit_hit(kind);
        }
        let message = describe(f, &self.app.limits);
        tracing::info!(app = %self.app.name, %message, "request failed");
        let mut resp = error_response(f.status(), f.code(), &message, f.limit());
        if matches!(
            f.limit(),
            Some(LimitKind::QueueFull | LimitKind::QueueTimeout)
        ) {
            resp.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
        }
        resp
    }
}

/// The header naming the limit that stopped a request.
pub const LIMIT_HEADER: &str = "x-dabba-limit";

/// A JSON error body: `{"error": {"code", "message", "limit"?}}`, with the limit also in
/// the [`LIMIT_HEADER`] header.
pub fn error_response(
    status: u16,
    code: &str,
    message: &str,
    limit: Option<LimitKind>,
) -> HttpResponse {
    let body = serde_json::json!({
        "error": {
            "code": code,
            "message": message,
            "limit": limit.map(|l| l.as_str()),
        }
    });
    let mut builder = http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(l) = limit {
        builder = builder.header(LIMIT_HEADER, l.as_str());
    }
    builder
        .body(whole(body.to_string()))
        .expect("a valid status and headers")
}
