//! Pods: `GET /v1/pods`, optionally narrowed to a namespace and an app.

use http::Method;

use super::auth::Need;
use super::router::Router;
use super::{Answer, Api, Call, json, views};

pub(super) fn routes(r: &mut Router) {
    r.leader(Method::GET, "/v1/pods", |api, call| {
        Box::pin(list(api, call))
    });
}

async fn list(api: &Api, call: Call) -> Answer {
    let ns = call.query("namespace");
    let g = api.authorize(&call, Need::View(ns))?;
    api.node.linearize().await?;
    let ns = ns.map(str::to_string).or(g.namespace);
    let pods = api
        .node
        .shared
        .read(|s| views::pods(s, ns.as_deref(), call.query("app")));
    json(200, &pods)
}
