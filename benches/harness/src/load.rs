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
    let mut sent_count = 0u64;
    let run = std::process::id();
    while Instant::now() < deadline && recorded.load(Ordering::Relaxed) < load.max_requests {
        if sender.is_none() {
            let stream = tokio::net::TcpStream::connect(load.addr).await?;
            stream.set_nodelay(true)?;
            let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            sender = Some(s);
        }
        let s = sender.as_mut().expect("connected above");
        let mut req = http::Request::builder()
            .method(load.method.clone())
            .uri(&load.path)
            .header(http::header::HOST, load.addr.to_string());
        for (k, v) in &load.headers {
            req = req.header(k, v);
        }
        if let Some(h) = &load.unique_header {
            sent_count += 1;
            req = req.header(h, format!("bench-{run}-{number}-{sent_count}"));
        }
        let req = req.body(Full::new(load.body.clone()))?;
        let sent = Instant::now();
        let ok = match s.send_request(req).await {
            Ok(resp) => {
                let status = resp.status();
                let body = resp.into_body().collect().await;
                status.is_success() && body.is_ok()
            }
            Err(_) => {
                sender = None;
                false
            }
        };
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
