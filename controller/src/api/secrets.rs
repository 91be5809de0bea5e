//! Secrets: `/v1/secrets`, `/v1/secrets/{ns}/{name}` and `/v1/secrets/rotate-key`.
//! Values go in and never come out: every answer shows keys, versions and users only
//! (a host gets the values its pods list with its assignments, `hosts.rs`).

use dabba_spec::resources::{ResourceKey, valid_name};
use dabba_spec::secret::SecretPut;
use http::Method;

use super::auth::{Access, Ns, Rule};
use super::router::Router;
use super::{Answer, Api, Call, Failure, fail, json, parse, reply};
use crate::command::Command;
use crate::node::now_millis;
use crate::node::secrets::SecretError;

pub(super) fn routes(r: &mut Router) {
    r.leader(
        Method::GET,
        "/v1/secrets",
        Access::Token(Rule::View(Ns::Query)),
        handler!(list),
    );
    r.leader(
        Method::POST,
        "/v1/secrets/rotate-key",
        Access::Token(Rule::Admin),
        handler!(rotate),
    );
    r.leader(
        Method::GET,
        "/v1/secrets/{ns}/{name}",
        Access::Token(Rule::View(Ns::Path)),
        handler!(show),
    );
    r.leader(
        Method::PUT,
        "/v1/secrets/{ns}/{name}",
        Access::Token(Rule::Deploy),
        handler!(put),
    );
    r.leader(
        Method::DELETE,
        "/v1/secrets/{ns}/{name}",
        Access::Token(Rule::Deploy),
        handler!(delete),
    );
}

fn key(call: &Call) -> Result<ResourceKey, Failure> {
    let name = call.param("name");
    if !valid_name(name) {
        return Err(fail(
            422,
            "invalid",
            format!("`{name}` is not a valid secret name (lowercase letters, digits and `-`)"),
        ));
    }
    Ok(ResourceKey::new(call.param("ns"), name))
}

impl From<SecretError> for Failure {
    fn from(e: SecretError) -> Failure {
        match e {
            SecretError::Propose(e) => e.into(),
            SecretError::Vault(e) => fail(500, "vault", e.to_string()),
            SecretError::Rejected { code, message } => fail(code.status(), code.code(), message),
        }
    }
}

async fn list(api: &Api, call: Call) -> Answer {
    let ns = api.listed_namespace(&call).await?;
    json(
        200,
        &api.node.shared.read(|s| s.secret_views(ns.as_deref())),
    )
}

async fn show(api: &Api, call: Call) -> Answer {
    let key = key(&call)?;
    api.node.linearize().await?;
    let view = api.node.shared.read(|s| {
        s.secret_views(Some(key.namespace()))
            .into_iter()
            .find(|v| v.name == key.name())
    });
    match view {
        Some(v) => json(200, &v),
        None => Err(fail(404, "not_found", format!("no secret {key}"))),
    }
}

async fn put(api: &Api, call: Call) -> Answer {
    let key = key(&call)?;
    let put: SecretPut = parse(&call.body)?;
    put.validate()
        .map_err(|e| fail(422, "invalid", e.to_string()))?;
    api.node.put_secret(&key, &put, now_millis()).await?;
    show(api, call).await
}

async fn delete(api: &Api, call: Call) -> Answer {
    let key = key(&call)?;
    reply(
        api.node
            .propose(Command::DeleteSecret {
                key,
                at: now_millis(),
            })
            .await?,
    )
}

async fn rotate(api: &Api, _: Call) -> Answer {
    json(200, &api.node.rotate_data_key(now_millis()).await?)
}
