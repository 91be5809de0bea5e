//! A small method + path router.
//!
//! Patterns are literal segments and `{name}` captures: `/payments/{id}`. Routes are
//! tried in the order they were added. A path that matches no pattern is 404; a path
//! that matches only with another method is 405 with an `Allow` header, as HTTP asks.

use crate::error::HttpError;
use crate::http::{Method, Request, Response};

/// Values captured from `{name}` segments.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

type Handler<S> = Box<dyn Fn(&S, &Request, &Params) -> Result<Response, HttpError>>;

struct Route<S> {
    method: Method,
    segments: Vec<Segment>,
    handler: Handler<S>,
}

enum Segment {
    Literal(String),
    Capture(String),
}

/// Routes requests to handlers that share a state `S` (configuration, a KV bucket...).
pub struct Router<S> {
    routes: Vec<Route<S>>,
}

impl<S> Default for Router<S> {
    fn default() -> Self {
        Router { routes: Vec::new() }
    }
}

impl<S> Router<S> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route. Panics on a malformed pattern, which is a programming error caught
    /// by the first test that builds the router.
    pub fn route(
        mut self,
        method: Method,
        pattern: &str,
        handler: impl Fn(&S, &Request, &Params) -> Result<Response, HttpError> + 'static,
    ) -> Self {
        assert!(pattern.starts_with('/'), "route pattern must start with /");
        let segments = split(pattern)
            .map(
                |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(name) => Segment::Capture(name.to_string()),
                    None => Segment::Literal(s.to_string()),
                },
            )
            .collect();
        self.routes.push(Route {
            method,
            segments,
            handler: Box::new(handler),
        });
        self
    }

    pub fn get(
        self,
        pattern: &str,
        h: impl Fn(&S, &Request, &Params) -> Result<Response, HttpError> + 'static,
    ) -> Self {
        self.route(Method::Get, pattern, h)
    }

    pub fn post(
        self,
        pattern: &str,
        h: impl Fn(&S, &Request, &Params) -> Result<Response, HttpError> + 'static,
    ) -> Self {
        self.route(Method::Post, pattern, h)
    }

    /// Answers a request: the handler's response, or the error it returned, or 404/405.
    pub fn handle(&self, state: &S, req: &Request) -> Response {
        let parts: Vec<&str> = split(&req.path).collect();
        let mut allowed: Vec<&str> = Vec::new();
        for route in &self.routes {
            let Some(params) = match_segments(&route.segments, &parts) else {
                continue;
            };
            let head_as_get = req.method == Method::Head && route.method == Method::Get;
            if route.method != req.method && !head_as_get {
                allowed.push(route.method.as_str());
                continue;
            }
            let mut resp = (route.handler)(state, req, &params).unwrap_or_else(Response::from);
            if head_as_get {
                resp.body.clear();
            }
            return resp;
        }
        if allowed.is_empty() {
            Response::from(HttpError::not_found(format!(
                "no route for {} {}",
                req.method.as_str(),
                req.path
            )))
        } else {
            allowed.dedup();
            let allow = allowed.join(", ");
            Response::from(HttpError::new(
                405,
                "method_not_allowed",
                format!(
                    "{} is not allowed on {}; allowed: {allow}",
                    req.method.as_str(),
                    req.path
                ),
            ))
            .with_header("allow", allow)
        }
    }
}

fn split(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

fn match_segments(segments: &[Segment], parts: &[&str]) -> Option<Params> {
    if segments.len() != parts.len() {
        return None;
    }
    let mut params = Vec::new();
    for (seg, part) in segments.iter().zip(parts) {
        match seg {
            Segment::Literal(l) if l == part => {}
            Segment::Literal(_) => return None,
            Segment::Capture(name) => {
                params.push((name.clone(), crate::http::percent_decode(part)))
            }
        }
    }
    Some(Params(params))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router<u32> {
        Router::new()
            .get("/health", |_, _, _| Ok(Response::text(200, "ok")))
            .get("/items/{id}", |n, _, p| {
                Ok(Response::text(
                    200,
                    format!("{}:{}", n, p.get("id").unwrap()),
                ))
            })
            .post("/items", |_, _, _| {
                Err(HttpError::conflict("dup", "already there"))
            })
    }

    #[test]
    fn routes_match_literals_and_captures() {
        let r = router();
        let resp = r.handle(&7, &Request::new(Method::Get, "/items/abc?x=1"));
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, b"7:abc");
        assert_eq!(
            r.handle(&7, &Request::new(Method::Get, "/health/")).status,
            200
        );
    }

    #[test]
    fn unknown_paths_are_404_and_wrong_methods_405() {
        let r = router();
        assert_eq!(
            r.handle(&0, &Request::new(Method::Get, "/nope")).status,
            404
        );
        let resp = r.handle(&0, &Request::new(Method::Delete, "/items"));
        assert_eq!(resp.status, 405);
        assert_eq!(resp.header("allow"), Some("POST"));
    }

    #[test]
    fn handler_errors_become_json_responses() {
        let resp = router().handle(&0, &Request::new(Method::Post, "/items"));
        assert_eq!(resp.status, 409);
        let v: serde_json::Value = resp.json_body().unwrap();
        assert_eq!(v["error"]["code"], "dup");
    }

    #[test]
    fn head_is_served_by_get_without_a_body() {
        let resp = router().handle(&0, &Request::new(Method::Head, "/health"));
        assert_eq!(resp.status, 200);
        assert!(resp.body.is_empty());
    }
}
