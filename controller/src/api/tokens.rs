//! API tokens: `POST /v1/tokens` (admins) makes one, optionally expiring; the secret is
//! shown once and the state keeps only its SHA-256. `GET /v1/tokens` lists them by id
//! (the first 16 hex digits of that hash: enough to name one, useless to use one) and
//! `DELETE /v1/tokens/{id}` revokes one — at once on every controller, as any change to
//! the state.

use dabba_spec::api::{TokenRequest, TokenResponse, TokenView};
use dabba_spec::resources::{Grant, Role, valid_name};
use http::Method;

use super::auth::{Access, Rule};
use super::router::Router;
use super::{Answer, Api, Call, fail, json, parse, reply};
use crate::command::Command;
use crate::credentials::{new_token, token_hash};
use crate::node::now_millis;

pub(super) fn routes(r: &mut Router) {
    r.leader(
        Method::POST,
        "/v1/tokens",
        Access::Token(Rule::Admin),
        handler!(create),
    );
    r.leader(
        Method::GET,
        "/v1/tokens",
        Access::Token(Rule::Admin),
        handler!(list),
    );
    r.leader(
        Method::DELETE,
        "/v1/tokens/{id}",
        Access::Token(Rule::Admin),
        handler!(revoke),
    );
}

/// How a token is named without its secret.
pub fn token_id(hash: &str) -> String {
    hash.chars().take(16).collect()
}

async fn list(api: &Api, _: Call) -> Answer {
    api.node.linearize().await?;
    let tokens: Vec<TokenView> = api.node.shared.read(|s| {
        s.tokens
            .iter()
            .map(|(hash, grant)| TokenView {
                id: token_id(hash),
                grant: grant.clone(),
            })
            .collect()
    });
    json(200, &tokens)
}

async fn revoke(api: &Api, call: Call) -> Answer {
    let id = call.param("id");
    let hash = api.node.shared.read(|s| {
        s.tokens
            .keys()
            .find(|h| id.len() == 16 && h.starts_with(id))
            .cloned()
    });
    let Some(hash) = hash else {
        return Err(fail(
            404,
            "not_found",
            format!("no token {id} (`dabba token list` shows their ids)"),
        ));
    };
    reply(api.node.propose(Command::RevokeToken { hash }).await?)
}

async fn create(api: &Api, call: Call) -> Answer {
    let req: TokenRequest = parse(&call.body)?;
    if let Some(ns) = &req.namespace
        && !valid_name(ns)
    {
        return Err(fail(
            422,
            "invalid",
            format!("`{ns}` is not a namespace name"),
        ));
    }
    if req.ttl_ms == Some(0) {
        return Err(fail(422, "invalid", "ttl: a token must work for some time"));
    }
    if (req.role == Role::Bound) != req.bind.is_some() {
        return Err(fail(
            422,
            "invalid",
            "a token bound to a role of the cluster's own has role `bound` and names it in `bind`",
        ));
    }
    let token = new_token();
    let hash = token_hash(&token);
    if let Some(role) = &req.bind {
        // The binding first: a token whose role does not exist is never made.
        let binding = dabba_spec::rbac::RoleBinding {
            name: format!("token-{}", token_id(&hash)),
            namespace: req.namespace.clone(),
            role: role.clone(),
            tokens: vec![token_id(&hash)],
        };
        reply(
            api.node
                .propose(Command::PutRoleBinding {
                    binding: Box::new(binding),
                    at: now_millis(),
                })
                .await?,
        )?;
    }
    reply(
        api.node
            .propose(Command::CreateToken {
                hash: hash.clone(),
                grant: Grant {
                    role: req.role,
                    namespace: req.namespace,
                    label: req.label,
                    host: None,
                    expires: req.ttl_ms.map(|ttl| now_millis().saturating_add(ttl)),
                },
            })
            .await?,
    )?;
    json(
        201,
        &TokenResponse {
            token,
            id: token_id(&hash),
        },
    )
}
