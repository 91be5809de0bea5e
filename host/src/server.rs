//! The HTTP listener: accepts connections, hands each request to a handler, and shuts
//! down gracefully (stop accepting, let in-flight requests finish, up to a bound).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use dabba_client::transport::PeerAddr;

use crate::function::HttpResponse;

/// Something that answers requests.
pub trait Handler: Send + Sync + 'static {
    fn call(&self, req: http::Request<Incoming>) -> impl Future<Output = HttpResponse> + Send;
}

/// How long in-flight requests may run after shutdown begins.
pub const DRAIN: Duration = Duration::from_secs(10);

/// Serves `handler` on `listener` until `shutdown` resolves, then drains.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = service_fn(move |mut req: http::Request<Incoming>| {
            req.extensions_mut().insert(PeerAddr(peer));
            let handler = handler.clone();
            async move { Ok::<_, Infallible>(handler.call(req).await) }
        });
        let conn = http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN) => {
            tracing::warn!("in-flight requests did not finish within {DRAIN:?}; stopping anyway");
        }
    }
    Ok(())
}
