//! API tokens: `POST /v1/tokens` (admins) makes one; the secret is shown once and the
//! state keeps only its SHA-256.

use dabba_spec::api::{TokenRequest, TokenResponse};
use dabba_spec::resources::{Grant, valid_name};
use http::Method;

use super::auth::{Access, Rule};
use super::router::Router;
use super::{Answer, Api, Call, fail, json, parse};
use crate::command::Command;
use crate::secrets::{new_token, token_hash};

pub(super) fn routes(r: &mut Router) {
    r.leader(
        Method::POST,
        "/v1/tokens",
        Access::Token(Rule::Admin),
        handler!(create),
    );
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
    let token = new_token();
    api.node
        .propose(Command::CreateToken {
            hash: token_hash(&token),
            grant: Grant {
                role: req.role,
                namespace: req.namespace,
                label: req.label,
                host: None,
            },
        })
        .await?;
    json(201, &TokenResponse { token })
}
