//! Pods: `GET /v1/pods`, optionally narrowed to a namespace and an app.

use http::Method;

use super::auth::{Access, Ns, Rule};
use super::router::Router;
use super::{Answer, Api, Call, json, views};

pub(super) fn routes(r: &mut Router) {
    r.leader(
        Method::GET,
        "/v1/pods",
        Access::Token(Rule::View(Ns::Query)),
        handler!(list),
    );
}

async fn list(api: &Api, call: Call) -> Answer {
    let ns = api.listed_namespace(&call).await?;
    let pods = api
        .node
        .shared
        .read(|s| views::pods(s, ns.as_deref(), call.query("app")));
    json(200, &pods)
}
