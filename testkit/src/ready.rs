//! Waiting, always bounded: for a condition, for a server to answer, for a controller
//! to say it is healthy.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::bail;
use dabba_client::ApiClient;

use crate::process::Process;

/// Polls `check` every 50 ms until it returns `Some`, for at most `timeout`; panics
/// naming `what` if it never does (for tests).
pub fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asks `check` again every `pause` until it returns `Some`, for at most `timeout`;
/// an error naming `what` if it never does. Stops early, with the log, if `process`
/// exits.
pub async fn until<T, F>(
    what: &str,
    timeout: Duration,
    pause: Duration,
    mut process: Option<&mut Process>,
    mut check: impl FnMut() -> F,
) -> anyhow::Result<T>
where
    F: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if let Some(died) = process.as_deref_mut().and_then(Process::exited) {
            bail!("waiting for {what}: {died}");
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {timeout:?}");
        }
        tokio::time::sleep(pause).await;
    }
}

/// Waits until the controller at `addr` answers `/v1/healthz`.
pub(crate) async fn until_healthy(
    addr: SocketAddr,
    process: &mut Process,
    timeout: Duration,
) -> anyhow::Result<()> {
    let api = ApiClient::new(vec![format!("http://{addr}")], String::new());
    let what = format!("{} to answer /v1/healthz on {addr}", process.name);
    until(&what, timeout, PAUSE, Some(process), || async {
        api.healthz().await.ok().filter(|h| h.ok)
    })
    .await
    .map(drop)
}

/// Waits until something listens at `addr` (a TCP connection is accepted). No request
/// is sent: a probe must not run a guest, or it would show in what tests count.
pub(crate) async fn until_listening(
    addr: SocketAddr,
    process: Option<&mut Process>,
    what: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    until(what, timeout, PAUSE, process, || async move {
        tokio::net::TcpStream::connect(addr).await.ok().map(drop)
    })
    .await
}

/// How often readiness is asked for.
const PAUSE: Duration = Duration::from_millis(20);
