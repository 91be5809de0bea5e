//! Namespace policies: `/v1/namespaces/{ns}/policy` — the quota and limit range
//! (`dabba_spec::quota`), and what the namespace uses of the quota.

use dabba_spec::quota::{NamespacePolicy, NamespaceView};
use http::Method;

use super::auth::{Access, Ns, Rule};
use super::router::Router;
use super::{Answer, Api, Call, fail, json, parse, reply};
use crate::command::Command;
use crate::node::now_millis;

pub(super) fn routes(r: &mut Router) {
    r.leader(
        Method::GET,
        "/v1/namespaces/{ns}/policy",
        Access::Token(Rule::View(Ns::Path)),
        handler!(show),
    );
    r.leader(
        Method::PUT,
        "/v1/namespaces/{ns}/policy",
        Access::Token(Rule::Admin),
        handler!(set),
    );
    r.leader(
        Method::DELETE,
        "/v1/namespaces/{ns}/policy",
        Access::Token(Rule::Admin),
        handler!(remove),
    );
}

async fn show(api: &Api, call: Call) -> Answer {
    api.node.linearize().await?;
    let ns = call.param("ns").to_string();
    let view = api.node.shared.read(|s| NamespaceView {
        policy: s.namespaces.get(&ns).cloned().unwrap_or_default(),
        used: s.namespace_usage(&ns, None),
        namespace: ns.clone(),
    });
    json(200, &view)
}

async fn set(api: &Api, call: Call) -> Answer {
    let policy: NamespacePolicy = parse(&call.body)?;
    policy
        .validate()
        .map_err(|e| fail(422, "invalid", e.to_string()))?;
    reply(
        api.node
            .propose(Command::SetNamespacePolicy {
                namespace: call.param("ns").to_string(),
                policy: Some(Box::new(policy)),
                at: now_millis(),
            })
            .await?,
    )?;
    show(api, call).await
}

async fn remove(api: &Api, call: Call) -> Answer {
    reply(
        api.node
            .propose(Command::SetNamespacePolicy {
                namespace: call.param("ns").to_string(),
                policy: None,
                at: now_millis(),
            })
            .await?,
    )
}
