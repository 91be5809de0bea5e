//! Hosts: the listing (`GET /v1/hosts`), and what the hosts' agents call — register,
//! heartbeat, and the long-poll of their assignments. A host speaks for itself only:
//! the join token registers it and gets back the host's own credential, which alone may
//! heartbeat and read assignments under its name (`auth`).

use dabba_spec::api::{Empty, Heartbeat, Registered};
use dabba_spec::resources::{HostInfo, valid_name};
use http::Method;

use super::auth::{Access, Ns, Rule};
use super::router::Router;
use super::{Answer, Api, Call, fail, json, parse, reply, since_of, views, wait_of};
use crate::command::Command;
use crate::credentials::{new_token, token_hash};
use crate::node::now_millis;

pub(super) fn routes(r: &mut Router) {
    r.leader(
        Method::GET,
        "/v1/hosts",
        Access::Token(Rule::View(Ns::Any)),
        handler!(list),
    );
    r.leader(
        Method::POST,
        "/v1/hosts/register",
        Access::Token(Rule::Register),
        handler!(register),
    );
    r.leader(
        Method::POST,
        "/v1/hosts/{name}/heartbeat",
        Access::Token(Rule::HostAs),
        handler!(heartbeat),
    );
    r.leader(
        Method::GET,
        "/v1/hosts/{name}/assignments",
        Access::Token(Rule::HostAs),
        handler!(assignments),
    );
}

async fn list(api: &Api, _: Call) -> Answer {
    api.node.linearize().await?;
    let hosts: Vec<_> = api
        .node
        .shared
        .read(|s| s.hosts.values().cloned().collect());
    json(200, &hosts)
}

/// Registers a host. With the join token (or an admin's), the host gets its own
/// credential in the answer, and its earlier ones stop working; with its own
/// credential, a host re-registers itself only.
async fn register(api: &Api, call: Call) -> Answer {
    let info: HostInfo = parse(&call.body)?;
    if !valid_name(&info.name) {
        return Err(fail(
            422,
            "invalid",
            format!("`{}` is not a valid host name", info.name),
        ));
    }
    let (token, credential) = match &call.grant().host {
        Some(own) if *own != info.name => {
            return Err(fail(
                403,
                "forbidden",
                format!("host {own} may register only itself, not {}", info.name),
            ));
        }
        Some(_) => (None, None),
        None => {
            let token = new_token();
            let hash = token_hash(&token);
            (Some(token), Some(hash))
        }
    };
    let node = &api.node;
    node.heartbeat(&info.name, &[], &[]).await;
    reply(
        node.propose(Command::RegisterHost {
            info,
            at: now_millis(),
            credential,
        })
        .await?,
    )?;
    json(200, &Registered { token })
}

async fn heartbeat(api: &Api, call: Call) -> Answer {
    let hb: Heartbeat = parse(&call.body)?;
    // An answered heartbeat tells the host a majority of controllers is reachable
    // (`spec/regions.md`, partitions): a leader cut off from it does not answer.
    api.node.linearize().await?;
    api.node
        .heartbeat(call.param("name"), &hb.pods, &hb.held)
        .await;
    json(200, &Empty {})
}

async fn assignments(api: &Api, call: Call) -> Answer {
    api.wait_past(since_of(&call), wait_of(&call)).await;
    let node = &api.node;
    node.linearize().await?;
    let name = call.param("name");
    let mut view = node.shared.read(|s| {
        let mut view = views::host_view(s, name);
        node.reveal_view(s, &mut view);
        view
    });
    view.read_key = node.read_key();
    json(200, &view)
}
