//! Apps and their revisions: `/v1/apps`, `/v1/apps/{ns}/{name}` and its `scale`,
//! `activate`, and `/v1/revisions`.

use dabba_spec::api::{ActivateRequest, ScaleRequest};
use dabba_spec::resources::{AppSpec, ResourceKey};
use dabba_spec::validate::MAX_REPLICAS;
use http::Method;

use super::auth::{Access, Ns, Rule};
use super::router::Router;
use super::{Answer, Api, Call, fail, json, parse, reply, views};
use crate::command::Command;
use crate::node::now_millis;

pub(super) fn routes(r: &mut Router) {
    r.leader(
        Method::GET,
        "/v1/apps",
        Access::Token(Rule::View(Ns::Query)),
        handler!(list),
    );
    r.leader(
        Method::PUT,
        "/v1/apps/{ns}/{name}",
        Access::Token(Rule::Deploy),
        handler!(apply),
    );
    r.leader(
        Method::GET,
        "/v1/apps/{ns}/{name}",
        Access::Token(Rule::View(Ns::Path)),
        handler!(detail),
    );
    r.leader(
        Method::DELETE,
        "/v1/apps/{ns}/{name}",
        Access::Token(Rule::Deploy),
        handler!(delete),
    );
    r.leader(
        Method::POST,
        "/v1/apps/{ns}/{name}/scale",
        Access::Token(Rule::Deploy),
        handler!(scale),
    );
    r.leader(
        Method::POST,
        "/v1/apps/{ns}/{name}/activate",
        Access::Token(Rule::Host),
        handler!(activate),
    );
    r.leader(
        Method::GET,
        "/v1/revisions",
        Access::Token(Rule::View(Ns::Query)),
        handler!(revisions),
    );
}

/// The app a path names.
fn key(call: &Call) -> ResourceKey {
    ResourceKey::new(call.param("ns"), call.param("name"))
}

async fn list(api: &Api, call: Call) -> Answer {
    let ns = api.listed_namespace(&call).await?;
    let node = &api.node;
    let mut apps = node.shared.read(|s| views::app_summaries(s, ns.as_deref()));
    for a in &mut apps {
        a.autoscaler = node.autoscaler(&ResourceKey::new(&a.namespace, &a.name));
    }
    json(200, &apps)
}

async fn apply(api: &Api, call: Call) -> Answer {
    let key = key(&call);
    let spec: AppSpec = parse(&call.body)?;
    if spec.key() != key {
        return Err(fail(
            422,
            "invalid",
            format!("the body describes {}, not {key}", spec.key()),
        ));
    }
    spec.validate()
        .map_err(|e| fail(422, "invalid", e.to_string()))?;
    reply(
        api.node
            .propose(Command::ApplyApp {
                spec: Box::new(spec),
                at: now_millis(),
            })
            .await?,
    )
}

async fn detail(api: &Api, call: Call) -> Answer {
    let key = key(&call);
    let node = &api.node;
    node.linearize().await?;
    let mut detail = node
        .shared
        .read(|s| views::app_detail(s, &key))
        .ok_or_else(|| fail(404, "not_found", format!("no app {key}")))?;
    detail.autoscaler = node.autoscaler(&key);
    detail.rollout = super::rollouts::view(api, &key);
    json(200, &detail)
}

async fn delete(api: &Api, call: Call) -> Answer {
    let key = key(&call);
    reply(
        api.node
            .propose(Command::DeleteApp {
                namespace: key.namespace().into(),
                name: key.name().into(),
                at: now_millis(),
            })
            .await?,
    )
}

async fn scale(api: &Api, call: Call) -> Answer {
    let key = key(&call);
    let req: ScaleRequest = parse(&call.body)?;
    if req.replicas > MAX_REPLICAS {
        return Err(fail(
            422,
            "invalid",
            format!("at most {MAX_REPLICAS} replicas"),
        ));
    }
    reply(
        api.node
            .propose(Command::ScaleApp {
                namespace: key.namespace().into(),
                name: key.name().into(),
                replicas: req.replicas,
                at: now_millis(),
                reason: None,
            })
            .await?,
    )
}

async fn activate(api: &Api, call: Call) -> Answer {
    let req: ActivateRequest = parse(&call.body)?;
    let answer = api.node.activate(&key(&call), &req.host, req.held).await?;
    json(200, &answer)
}

async fn revisions(api: &Api, call: Call) -> Answer {
    let ns = api.listed_namespace(&call).await?;
    let revs = api
        .node
        .shared
        .read(|s| views::revisions(s, ns.as_deref(), call.query("app")));
    json(200, &revs)
}
