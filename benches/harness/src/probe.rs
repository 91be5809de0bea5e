//! Probes the suites share: one request timed to its first byte on a connection opened
//! beforehand, polling until a path answers 200, and a process's resident memory.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How often readiness is polled where its exact moment is not measured.
pub const POLL: Duration = Duration::from_millis(50);

/// Sends one GET on a connection opened beforehand; the time from writing it to the
/// first byte of the answer, which must be a 200.
pub async fn first_byte(addr: SocketAddr, host: &str, path: &str) -> anyhow::Result<Duration> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    let started = Instant::now();
    s.write_all(request.as_bytes()).await?;
    let mut first = [0u8; 1];
    s.read_exact(&mut first).await?;
    let took = started.elapsed();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await?;
    let head = String::from_utf8_lossy(&rest);
    if !head.starts_with("TTP/1.1 200") {
        bail!(
            "GET {path} did not answer 200: H{}",
            head.lines()
                .next()
                .into_iter()
                .chain(head.lines().last())
                .collect::<Vec<_>>()
                .join(" … ")
        );
    }
    Ok(took)
}

/// The body of `GET path` on `addr`, which must answer 200 (read to the connection's
/// end: for small answers such as `/metrics`).
pub async fn get_text(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await?;
    let mut all = Vec::new();
    s.read_to_end(&mut all).await?;
    let text = String::from_utf8_lossy(&all);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {path}: no complete answer"))?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_string())
}

/// Waits until `path` on `addr` answers 200, asking again every `pause`.
pub async fn until_ok(
    addr: SocketAddr,
    host: &str,
    path: &str,
    timeout: Duration,
    pause: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match first_byte(addr, host, path).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!("{path} did not answer within {timeout:?}")));
            }
            Err(_) => tokio::time::sleep(pause).await,
        }
    }
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    vm_rss_kib(&status).context("no VmRSS")
}

/// The `VmRSS` of a `/proc/PID/status` text, in KiB.
pub fn vm_rss_kib(status: &str) -> Option<u64> {
    dabba_testkit::status_kib(status, "VmRSS")
}
