//! Outbound HTTP: a guest sends a [`Request`] to another service and gets its
//! [`Response`], over `wasi:http/outgoing-handler` — so the host decides what the guest
//! may reach (`allowed_outbound_hosts`) and bounds the call by the guest's limits.
//!
//! ```ignore
//! let resp = dabba_sdk::outbound::send("http://127.0.0.1:8080", Request::new(Method::Get, "/health"))?;
//! ```
//!
//! Natively (tests, the container baseline) it speaks plain HTTP/1.1 over a TCP socket,
//! so the same code is tested with `cargo test` against a real server.

use crate::http::{Request, Response};

/// Why an outbound request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    #[error("`{0}` is not a URL like http://host:port")]
    BadUrl(String),
    /// The host refused it (not in `allowed_outbound_hosts`), or it failed on the way.
    #[error("request to {url} failed: {message}")]
    Failed { url: String, message: String },
}

/// Sends `req` to the server at `base` (`http://host:port`, no path): the request's
/// path and query are appended.
pub fn send(base: &str, req: Request) -> Result<Response, OutboundError> {
    let (scheme, authority) = split(base)?;
    imp::send(scheme, authority, base, req)
}

/// `http://host:port` → (`http`, `host:port`).
fn split(base: &str) -> Result<(&str, &str), OutboundError> {
    let (scheme, rest) = base
        .split_once("://")
        .ok_or_else(|| OutboundError::BadUrl(base.to_string()))?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') || !matches!(scheme, "http" | "https") {
        return Err(OutboundError::BadUrl(base.to_string()));
    }
    Ok((scheme, authority))
}

/// A failure of the request `req` to `base`.
fn failed(base: &str, req: &Request, message: String) -> OutboundError {
    OutboundError::Failed {
        url: format!("{base}{}", path_and_query(req)),
        message,
    }
}

fn path_and_query(req: &Request) -> String {
    if req.query.is_empty() {
        req.path.clone()
    } else {
        format!("{}?{}", req.path, req.query)
    }
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use std::io::{Read as _, Write as _};

    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{
        Fields, Method as WasiMethod, OutgoingBody, OutgoingRequest, Scheme,
    };

    use super::{OutboundError, path_and_query};
    use crate::http::{Method, Request, Response};

    pub fn send(
        scheme: &str,
        authority: &str,
        base: &str,
        req: Request,
    ) -> Result<Response, OutboundError> {
        let failed = |message: String| super::failed(base, &req, message);
        let headers =
            Fields::from_list(&req.headers).map_err(|e| failed(format!("header: {e:?}")))?;
        let out = OutgoingRequest::new(headers);
        let method = match &req.method {
            Method::Get => WasiMethod::Get,
            Method::Head => WasiMethod::Head,
            Method::Post => WasiMethod::Post,
            Method::Put => WasiMethod::Put,
            Method::Patch => WasiMethod::Patch,
            Method::Delete => WasiMethod::Delete,
            Method::Options => WasiMethod::Options,
            Method::Other(m) => WasiMethod::Other(m.clone()),
        };
        let _ = out.set_method(&method);
        let _ = out.set_scheme(Some(&if scheme == "https" {
            Scheme::Https
        } else {
            Scheme::Http
        }));
        let _ = out.set_authority(Some(authority));
        let _ = out.set_path_with_query(Some(&path_and_query(&req)));
        let body = out.body().map_err(|()| failed("no request body".into()))?;
        {
            let mut stream = body.write().map_err(|()| failed("no body stream".into()))?;
            stream
                .write_all(&req.body)
                .map_err(|e| failed(e.to_string()))?;
            stream.flush().map_err(|e| failed(e.to_string()))?;
        }
        let future = outgoing_handler::handle(out, None).map_err(|e| failed(format!("{e:?}")))?;
        OutgoingBody::finish(body, None).map_err(|e| failed(format!("{e:?}")))?;
        future.subscribe().block();
        let resp = match future.get() {
            Some(Ok(Ok(resp))) => resp,
            Some(Ok(Err(e))) => return Err(failed(format!("{e:?}"))),
            other => return Err(failed(format!("{other:?}"))),
        };
        let status = resp.status();
        let headers = resp
            .headers()
            .entries()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let incoming = resp
            .consume()
            .map_err(|()| failed("no response body".into()))?;
        let mut bytes = Vec::new();
        {
            let mut stream = incoming
                .stream()
                .map_err(|()| failed("no body stream".into()))?;
            stream
                .read_to_end(&mut bytes)
                .map_err(|e| failed(e.to_string()))?;
        }
        Ok(Response {
            status,
            headers,
            body: bytes,
        })
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    use std::net::TcpStream;
    use std::time::Duration;

    use super::{OutboundError, path_and_query};
    use crate::http::{Request, Response};

    pub fn send(
        scheme: &str,
        authority: &str,
        base: &str,
        req: Request,
    ) -> Result<Response, OutboundError> {
        let failed = |message: String| super::failed(base, &req, message);
        if scheme != "http" {
            return Err(failed("natively only plain http is spoken".into()));
        }
        let stream = TcpStream::connect(authority).map_err(|e| failed(e.to_string()))?;
        stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
        let mut head = format!(
            "{} {} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\ncontent-length: {}\r\n",
            req.method.as_str(),
            path_and_query(&req),
            req.body.len()
        );
        for (k, v) in &req.headers {
            head.push_str(&format!("{k}: {}\r\n", String::from_utf8_lossy(v)));
        }
        head.push_str("\r\n");
        let mut w = &stream;
        w.write_all(head.as_bytes())
            .map_err(|e| failed(e.to_string()))?;
        w.write_all(&req.body).map_err(|e| failed(e.to_string()))?;
        let mut r = BufReader::new(&stream);
        let mut line = String::new();
        r.read_line(&mut line).map_err(|e| failed(e.to_string()))?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| failed(format!("not an HTTP status line: {line:?}")))?;
        let mut headers = Vec::new();
        let mut length: Option<usize> = None;
        loop {
            line.clear();
            r.read_line(&mut line).map_err(|e| failed(e.to_string()))?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                if k == "content-length" {
                    length = v.parse().ok();
                }
                headers.push((k, v));
            }
        }
        let mut body = Vec::new();
        match length {
            Some(n) => {
                body.resize(n, 0);
                r.read_exact(&mut body).map_err(|e| failed(e.to_string()))?;
            }
            None => {
                r.read_to_end(&mut body)
                    .map_err(|e| failed(e.to_string()))?;
            }
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_is_a_scheme_and_an_authority_only() {
        assert_eq!(
            split("http://127.0.0.1:8080").unwrap(),
            ("http", "127.0.0.1:8080")
        );
        assert_eq!(split("http://h:1/").unwrap(), ("http", "h:1"));
        assert!(split("127.0.0.1:8080").is_err());
        assert!(split("http://h:1/path").is_err());
        assert!(split("ftp://h:1").is_err());
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn natively_it_speaks_http_to_a_real_socket() {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            // The head and the body may come in separate segments: read until the
            // body the head announces is all here.
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = s.read(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got);
                let whole = text.split_once("\r\n\r\n").is_some_and(|(head, body)| {
                    let announced = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    body.len() >= announced
                });
                if n == 0 || whole {
                    break;
                }
            }
            let got = String::from_utf8_lossy(&got).into_owned();
            s.write_all(
                b"HTTP/1.1 201 Created\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok",
            )
            .unwrap();
            got
        });
        let req = Request::new(crate::Method::Post, "/pay?x=1")
            .with_header("x-dabba-preview", "1")
            .with_body("{}");
        let resp = send(&format!("http://{addr}"), req).unwrap();
        assert_eq!((resp.status, resp.body.as_slice()), (201, &b"ok"[..]));
        let got = server.join().unwrap();
        assert!(got.starts_with("POST /pay?x=1 HTTP/1.1\r\n"), "{got}");
        assert!(
            got.contains("x-dabba-preview: 1\r\n") && got.ends_with("\r\n\r\n{}"),
            "{got}"
        );
    }
}
