//! Roles and role bindings (`/v1/roles`, `/v1/rolebindings`, admins) and
//! `GET /v1/auth/can-i` (any token): what a token may do, decided as its requests are.

use dabba_spec::rbac::{Attributes, CanI, RESOURCES, RoleBinding, RoleSpec, VERBS, attributes};
use http::Method;

use super::auth::{Access, Rule, scope_of};
use super::router::Router;
use super::{Answer, Api, Call, fail, json, parse, reply};
use crate::command::Command;
use crate::credentials::token_hash;
use crate::node::now_millis;
use crate::state::rbac::scoped;

pub(super) fn routes(r: &mut Router) {
    for (pattern, item) in [
        ("/v1/roles", "/v1/roles/{name}"),
        ("/v1/rolebindings", "/v1/rolebindings/{name}"),
    ] {
        r.leader(
            Method::GET,
            pattern,
            Access::Token(Rule::Admin),
            handler!(list),
        );
        r.leader(
            Method::PUT,
            pattern,
            Access::Token(Rule::Admin),
            handler!(put),
        );
        r.leader(
            Method::DELETE,
            item,
            Access::Token(Rule::Admin),
            handler!(delete),
        );
    }
    r.leader(
        Method::GET,
        "/v1/auth/can-i",
        Access::Token(Rule::Authenticated),
        handler!(can_i),
    );
}

fn bindings(call: &Call) -> bool {
    call.parts.uri.path().starts_with("/v1/rolebindings")
}

async fn list(api: &Api, call: Call) -> Answer {
    api.node.linearize().await?;
    if bindings(&call) {
        json(
            200,
            &api.node
                .shared
                .read(|s| s.bindings.values().cloned().collect::<Vec<_>>()),
        )
    } else {
        json(
            200,
            &api.node
                .shared
                .read(|s| s.roles.values().cloned().collect::<Vec<_>>()),
        )
    }
}

async fn put(api: &Api, call: Call) -> Answer {
    let at = now_millis();
    let command = if bindings(&call) {
        let binding: RoleBinding = parse(&call.body)?;
        binding
            .validate()
            .map_err(|e| fail(422, "invalid", e.to_string()))?;
        Command::PutRoleBinding {
            binding: Box::new(binding),
            at,
        }
    } else {
        let role: RoleSpec = parse(&call.body)?;
        role.validate()
            .map_err(|e| fail(422, "invalid", e.to_string()))?;
        Command::PutRole {
            role: Box::new(role),
            at,
        }
    };
    reply(api.node.propose(command).await?)
}

async fn delete(api: &Api, call: Call) -> Answer {
    let key = scoped(call.query("namespace"), call.param("name"));
    let at = now_millis();
    let command = if bindings(&call) {
        Command::DeleteRoleBinding { key, at }
    } else {
        Command::DeleteRole { key, at }
    };
    reply(api.node.propose(command).await?)
}

/// Whether the caller may `verb` `resource` (in `namespace`): the question an endpoint
/// of that resource and verb would ask, answered the same way.
async fn can_i(api: &Api, call: Call) -> Answer {
    let (verb, resource) = (
        call.query("verb").unwrap_or(""),
        call.query("resource").unwrap_or(""),
    );
    let Some(verb) = VERBS.iter().find(|v| **v == verb) else {
        return Err(fail(
            422,
            "invalid",
            format!("no verb `{verb}`: one of {}", VERBS.join(", ")),
        ));
    };
    let Some(resource) = RESOURCES.iter().find(|r| **r == resource) else {
        return Err(fail(
            422,
            "invalid",
            format!("no resource `{resource}`: one of {}", RESOURCES.join(", ")),
        ));
    };
    let what = Attributes { resource, verb };
    let ns = call.query("namespace");
    let grant = call.grant();
    let rule = super::route_table().into_iter().find_map(|(m, p, access)| {
        let rule = match access {
            Access::Token(r) | Access::PeerOr(r) => r,
            _ => return None,
        };
        (attributes(m.as_str(), p)? == what).then_some(rule)
    });
    let answer = match rule.and_then(|r| scope_of(r, ns, ns, grant)) {
        None => CanI {
            allowed: false,
            reason: format!("no endpoint does {what}"),
        },
        Some(scope) => {
            let id = super::tokens::token_id(&token_hash(super::auth::bearer(&call.parts)?));
            match api
                .node
                .shared
                .read(|s| s.authorize(&id, grant, what, scope))
            {
                Some(by) => CanI {
                    allowed: true,
                    reason: format!("allowed by {by}"),
                },
                None => CanI {
                    allowed: false,
                    reason: format!(
                        "no role of token `{}` allows {what}{}",
                        grant.label,
                        ns.map(|n| format!(" in namespace {n}")).unwrap_or_default()
                    ),
                },
            }
        }
    };
    json(200, &answer)
}
