//! The native adapter: the same `fn(Request) -> Response` a component exports, served by
//! hyper on a native socket. This is what the container image in the benchmarks runs, so
//! dabba is compared with the very handler code it runs as Wasm, not a rewrite.
//!
//! Like a pod, every request is handled on its own (the handler owns nothing between
//! requests); unlike a pod there is no sandbox, no fuel and no memory cap. Key-value
//! buckets are the SDK's native in-memory maps, configuration comes from the
//! environment (`DABBA_CONFIG_<KEY>`, see [`crate::config::native_env_name`]).

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::http::{Method, Request, Response};

/// Request bodies larger than this are refused with 413, as a pod's default
/// `max_request_body` is.
pub const MAX_BODY: usize = 1 << 20;

/// The address to listen on: the first argument, else `$LISTEN`, else `0.0.0.0:8080`
/// (a container's published port).
pub fn listen_address() -> Result<SocketAddr, String> {
    let text = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("LISTEN").ok())
        .unwrap_or_else(|| "0.0.0.0:8080".into());
    text.parse()
        .map_err(|e| format!("listen address `{text}`: {e}"))
}

/// Serves `handler` on [`listen_address`] until the process is stopped.
pub fn serve(name: &str, handler: fn(Request) -> Response) -> std::io::Result<()> {
    let addr = listen_address().map_err(std::io::Error::other)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("{name} listening on http://{}", listener.local_addr()?);
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                // Out of file descriptors and the like: keep serving the others.
                Err(_) => continue,
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(req, handler));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    handler: fn(Request) -> Response,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => {
            return Ok(plain(
                413,
                format!("request body larger than {MAX_BODY} bytes or cut short"),
            ));
        }
    };
    let mut request = Request::new(
        Method::parse(parts.method.as_str()),
        parts.uri.path_and_query().map_or("/", |p| p.as_str()),
    );
    request.headers = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
        .collect();
    request.body = body;
    Ok(convert(handler(request)))
}

fn convert(r: Response) -> hyper::Response<Full<Bytes>> {
    let mut out = hyper::Response::builder().status(r.status);
    for (k, v) in &r.headers {
        out = out.header(k.as_str(), v.as_str());
    }
    out.body(Full::new(Bytes::from(r.body)))
        .unwrap_or_else(|e| {
            plain(
                500,
                format!("the handler's response is not valid HTTP: {e}"),
            )
        })
}

fn plain(status: u16, text: String) -> hyper::Response<Full<Bytes>> {
    let mut r = hyper::Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handler_response_becomes_an_http_response() {
        let r = convert(
            Response::new(201)
                .with_header("content-type", "application/json")
                .with_body("{}"),
        );
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()["content-type"], "application/json");
        let bad = convert(Response::new(200).with_header("bad header", "x"));
        assert_eq!(bad.status(), 500);
    }
}
