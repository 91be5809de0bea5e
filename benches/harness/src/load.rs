//! A closed-loop HTTP/1.1 load generator: `concurrency` keep-alive connections, each
//! sending the next request as soon as the previous answer is read, for a bounded time
//! and a bounded number of requests. Latencies go into an HDR histogram.
//!
//! It only ever connects to the address it is given; the harness gives it loopback
//! addresses of servers it started itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Serialize;

use super::stats::{self, Latency};

/// What to send, and how hard.
#[derive(Debug, Clone)]
pub struct Load {
    pub addr: SocketAddr,
    pub method: http::Method,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// A header given a value unique to each request (e.g. `idempotency-key`, so every
    /// payment is a new one).
    pub unique_header: Option<String>,
    pub body: Bytes,
    pub concurrency: usize,
    /// Requests sent but not recorded first, to warm caches and pools.
    pub warmup: Duration,
    pub duration: Duration,
    /// Stop after this many recorded requests even if time remains.
    pub max_requests: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub rps: f64,
    pub latency: Latency,
}

/// Runs the load on the current tokio runtime.
pub async fn run(load: &Load) -> anyhow::Result<LoadResult> {
    let recorded = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + load.warmup;
    let deadline = measure_from + load.duration;
    let mut tasks = Vec::with_capacity(load.concurrency);
    for n in 0..load.concurrency {
        let load = load.clone();
        let recorded = recorded.clone();
        tasks.push(tokio::spawn(async move {
            connection(&load, n, measure_from, deadline, &recorded).await
        }));
    }
    let mut hist = stats::histogram();
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await??;
        hist.add(h)?;
        errors += e;
    }
    let seconds = Instant::now()
        .min(deadline)
        .saturating_duration_since(measure_from)
        .as_secs_f64()
        .max(1e-9);
    let requests = hist.len();
    Ok(LoadResult {
        requests,
        errors,
        seconds,
        rps: requests as f64 / seconds,
        latency: stats::latency(&hist),
    })
}

/// A keep-alive connection to `load.addr`.
async fn connect(
    load: &Load,
) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(load.addr).await?;
    stream.set_nodelay(true)?;
    let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(s)
}

/// The `count`th request of connection `number`.
fn request(load: &Load, number: usize, count: u64) -> anyhow::Result<http::Request<Full<Bytes>>> {
    let mut req = http::Request::builder()
        .method(load.method.clone())
        .uri(&load.path)
        .header(http::header::HOST, load.addr.to_string());
    for (k, v) in &load.headers {
        req = req.header(k, v);
    }
    if let Some(h) = &load.unique_header {
        req = req.header(h, format!("bench-{}-{number}-{count}", std::process::id()));
    }
    Ok(req.body(Full::new(load.body.clone()))?)
}

/// Sends one request on `sender` (dropping a broken connection): the status (`None`: no
/// answer) and the answer's `x-dabba-revision`.
async fn exchange(
    sender: &mut Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
    req: http::Request<Full<Bytes>>,
) -> (Option<u16>, Option<u64>) {
    let Some(s) = sender.as_mut() else {
        return (None, None);
    };
    match s.send_request(req).await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let revision = resp
                .headers()
                .get("x-dabba-revision")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            match resp.into_body().collect().await {
                Ok(_) => (Some(status), revision),
                Err(_) => (None, revision),
            }
        }
        Err(_) => {
            *sender = None;
            (None, None)
        }
    }
}

async fn connection(
    load: &Load,
    number: usize,
    measure_from: Instant,
    deadline: Instant,
    recorded: &AtomicU64,
) -> anyhow::Result<(Histogram<u64>, u64)> {
    let mut hist = stats::histogram();
    let mut errors = 0u64;
    let mut sender = None;
    let mut count = 0u64;
    while Instant::now() < deadline && recorded.load(Ordering::Relaxed) < load.max_requests {
        if sender.is_none() {
            sender = Some(connect(load).await?);
        }
        count += 1;
        let req = request(load, number, count)?;
        let sent = Instant::now();
        let (status, _) = exchange(&mut sender, req).await;
        let ok = status.is_some_and(|s| (200..300).contains(&s));
        let done = Instant::now();
        if sent >= measure_from && done <= deadline {
            if ok {
                hist.record((done - sent).as_micros().max(1) as u64)?;
                recorded.fetch_add(1, Ordering::Relaxed);
            } else {
                errors += 1;
            }
        }
    }
    Ok((hist, errors))
}

/// One request of a traced load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Traced {
    /// When it was sent, in ms since the Unix epoch (the clock Raft entries are stamped
    /// with on this machine).
    pub sent_ms: f64,
    /// Which of the loads (which host) it went to.
    pub target: usize,
    /// 0: no answer.
    pub status: u16,
    /// The revision that answered (`x-dabba-revision`).
    pub revision: Option<u64>,
}

/// Runs every load at once, recording each request (its warm-up and duration are not
/// used): until `stop` is set, or `max_requests` (of all of them together) are sent.
pub async fn trace(
    loads: &[Load],
    stop: Arc<std::sync::atomic::AtomicBool>,
    max_requests: u64,
) -> anyhow::Result<Vec<Traced>> {
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (target, load) in loads.iter().enumerate() {
        for number in 0..load.concurrency {
            let (load, stop, sent) = (load.clone(), stop.clone(), sent.clone());
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                let mut sender = None;
                let mut count = 0u64;
                while !stop.load(Ordering::Relaxed)
                    && sent.fetch_add(1, Ordering::Relaxed) < max_requests
                {
                    if sender.is_none() {
                        sender = Some(connect(&load).await?);
                    }
                    count += 1;
                    let req = request(&load, number, count)?;
                    let sent_ms = now_ms();
                    let (status, revision) = exchange(&mut sender, req).await;
                    out.push(Traced {
                        sent_ms,
                        target,
                        status: status.unwrap_or(0),
                        revision,
                    });
                }
                anyhow::Ok(out)
            }));
        }
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort_by(|a, b| a.sent_ms.total_cmp(&b.sent_ms));
    Ok(all)
}

/// Milliseconds since the Unix epoch, with microseconds.
pub fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}
