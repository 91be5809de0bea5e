//! Plain request and response values for handlers.
//!
//! A handler sees a whole request (method, path, query, headers, body bytes) and returns
//! a whole response. Keeping these as plain data, with no WASI resources inside, is what
//! lets the same handler run under `wasi:http` in a dabba pod, natively in `cargo test`,
//! and behind a native HTTP server for the container comparison.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Body, HttpError, Inner};

/// An HTTP method. Methods the router does not know arrive as `Other`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
    Other(String),
}

impl Method {
    pub fn parse(s: &str) -> Method {
        match s {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Other(s) => s,
        }
    }
}

/// A complete incoming request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    /// The path without the query, e.g. `/payments/pay_123`.
    pub path: String,
    /// The raw query string without the `?`, e.g. `q=phone&page=2`.
    pub query: String,
    /// Header names are lower-case.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Request {
    /// Builds a request from a method and a path that may carry a query (`/search?q=x`).
    pub fn new(method: Method, path_and_query: &str) -> Request {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, q),
            None => (path_and_query, ""),
        };
        Request {
            method,
            path: if path.is_empty() {
                "/".into()
            } else {
                path.into()
            },
            query: query.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Request {
        self.headers
            .push((name.to_ascii_lowercase(), value.as_bytes().to_vec()));
        self
    }

    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// The first value of a header, if it is valid UTF-8. Names match case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The decoded query parameters, in order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        self.query
            .split('&')
            .filter(|s| !s.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect()
    }

    /// The first value of a query parameter.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_pairs()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// Parses the body as JSON, or answers 400 (or 415 for a non-JSON content type)
    /// with what was wrong and where.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HttpError> {
        if let Some(ct) = self.header("content-type") {
            let essence = ct.split(';').next().unwrap_or("").trim();
            if !essence.eq_ignore_ascii_case("application/json") && !essence.ends_with("+json") {
                return Err(HttpError::new(
                    415,
                    "unsupported_media_type",
                    format!("expected content-type application/json, got `{ct}`"),
                ));
            }
        }
        serde_json::from_slice(&self.body).map_err(|e| {
            HttpError::bad_request(
                "invalid_json",
                format!(
                    "request body is not valid JSON for this endpoint: {e} (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            )
        })
    }
}

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A JSON response. Serialization of our own types cannot fail; if it somehow does
    /// the client gets a 500 instead of a panic.
    pub fn json<T: Serialize>(status: u16, value: &T) -> Response {
        match serde_json::to_vec(value) {
            Ok(body) => Response::new(status)
                .with_header("content-type", "application/json")
                .with_body(body),
            Err(e) => HttpError::internal(format!("could not encode the response: {e}")).into(),
        }
    }

    pub fn text(status: u16, text: impl Into<String>) -> Response {
        Response::new(status)
            .with_header("content-type", "text/plain; charset=utf-8")
            .with_body(text.into().into_bytes())
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Response {
        self.body = body.into();
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name).map(String::as_str)
    }

    /// Decodes a JSON body; for tests and clients.
    pub fn json_body<T: DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_slice(&self.body)
    }
}

/// The first value of header `name`, compared case-insensitively.
fn find_header<'a, V>(headers: &'a [(String, V)], name: &str) -> Option<&'a V> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// Decodes `%XX` escapes and `+` (as a space) in a query component. Malformed escapes
/// are kept as written.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl From<HttpError> for Response {
    fn from(e: HttpError) -> Response {
        let body = Body {
            error: Inner {
                code: &e.code,
                message: &e.message,
            },
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| e.message.clone().into_bytes());
        Response::new(e.status)
            .with_header("content-type", "application/json")
            .with_body(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_are_decoded() {
        let r = Request::new(Method::Get, "/search?q=red+shoes&brand=Bata%20Co&x");
        assert_eq!(r.path, "/search");
        assert_eq!(r.query_param("q").as_deref(), Some("red shoes"));
        assert_eq!(r.query_param("brand").as_deref(), Some("Bata Co"));
        assert_eq!(r.query_param("x").as_deref(), Some(""));
        assert_eq!(r.query_param("missing"), None);
    }

    #[test]
    fn percent_decoding_keeps_malformed_escapes() {
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz1"), "%zz1");
        assert_eq!(percent_decode("%41%42"), "AB");
        assert_eq!(percent_decode("a%4"), "a%4");
    }

    #[test]
    fn json_errors_are_400_with_position() {
        let r = Request::new(Method::Post, "/").with_body("{\"a\": ");
        let err = r.json::<serde_json::Value>().unwrap_err();
        assert_eq!(err.status, 400);
        assert!(err.message.contains("line 1"), "{}", err.message);
        let r = Request::new(Method::Post, "/")
            .with_header("Content-Type", "text/plain")
            .with_body("{}");
        assert_eq!(r.json::<serde_json::Value>().unwrap_err().status, 415);
    }
}
