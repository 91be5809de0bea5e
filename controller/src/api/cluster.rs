//! The controller cluster: its status and members (`/v1/cluster...`), the peer token a
//! joining controller needs, and the long-poll on the state version (`/v1/watch`).

use dabba_spec::api::{AddMember, PeerToken, WatchResponse};
use http::Method;

use super::auth::Need;
use super::router::Router;
use super::{Answer, Api, Call, fail, json, parse, since_of, wait_of};

pub(super) fn routes(r: &mut Router) {
    r.leader(Method::GET, "/v1/cluster", handler!(status));
    r.leader(Method::GET, "/v1/cluster/peer-token", handler!(peer_token));
    r.leader(Method::POST, "/v1/cluster/members", handler!(add_member));
    r.leader(
        Method::DELETE,
        "/v1/cluster/members/{id}",
        handler!(remove_member),
    );
    r.leader(Method::GET, "/v1/watch", handler!(watch));
}

async fn status(api: &Api, call: Call) -> Answer {
    api.authorize(&call, Need::View(None))?;
    json(200, &api.node.status())
}

async fn peer_token(api: &Api, call: Call) -> Answer {
    api.authorize(&call, Need::Admin)?;
    json(
        200,
        &PeerToken {
            token: api.node.peer_token().to_string(),
        },
    )
}

async fn add_member(api: &Api, call: Call) -> Answer {
    api.authorize(&call, Need::Admin)?;
    let req: AddMember = parse(&call.body)?;
    api.node.add_member(req.id, &req.address).await?;
    json(200, &api.node.status())
}

async fn remove_member(api: &Api, call: Call) -> Answer {
    api.authorize(&call, Need::Admin)?;
    let id: u64 = call
        .param("id")
        .parse()
        .map_err(|_| fail(400, "bad_request", "member id must be a number"))?;
    api.node.remove_member(id).await?;
    json(200, &api.node.status())
}

async fn watch(api: &Api, call: Call) -> Answer {
    api.authorize(&call, Need::View(None))?;
    let version = api.wait_past(since_of(&call), wait_of(&call)).await;
    json(200, &WatchResponse { version })
}
