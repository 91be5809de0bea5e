//! The controller cluster: its status and members (`/v1/cluster...`), the peer token a
//! joining controller needs, and the long-poll on the state version (`/v1/watch`).

use dabba_spec::api::{
    AddMember, ControllerPlace, PeerToken, PreferredLeaderRegion, WatchResponse,
};
use http::Method;

use super::auth::{Access, Ns, Rule};
use super::router::Router;
use super::{Answer, Api, Call, fail, json, parse, reply, since_of, wait_of};
use crate::command::Command;

pub(super) fn routes(r: &mut Router) {
    r.leader(
        Method::GET,
        "/v1/cluster",
        Access::Token(Rule::View(Ns::Any)),
        handler!(status),
    );
    r.leader(
        Method::GET,
        "/v1/cluster/peer-token",
        Access::Token(Rule::Admin),
        handler!(peer_token),
    );
    r.leader(
        Method::POST,
        "/v1/cluster/members",
        Access::Token(Rule::Admin),
        handler!(add_member),
    );
    r.leader(
        Method::DELETE,
        "/v1/cluster/members/{id}",
        Access::Token(Rule::Admin),
        handler!(remove_member),
    );
    r.leader(
        Method::PUT,
        "/v1/cluster/members/{id}/place",
        Access::PeerOr(Rule::Admin),
        handler!(place_member),
    );
    r.leader(
        Method::PUT,
        "/v1/cluster/preferred-leader-region",
        Access::Token(Rule::Admin),
        handler!(prefer_leader_region),
    );
    r.local(
        Method::POST,
        "/v1/cluster/elect",
        Access::Peer,
        handler!(elect),
    );
    r.leader(
        Method::GET,
        "/v1/watch",
        Access::Token(Rule::View(Ns::Any)),
        handler!(watch),
    );
}

/// A leader handing over asks this controller to stand for election (peer token).
async fn elect(api: &Api, _: Call) -> Answer {
    api.node.stand_for_election();
    json(200, &dabba_spec::api::Empty {})
}

/// A controller says where it runs (with the peer token), or an admin does.
async fn place_member(api: &Api, call: Call) -> Answer {
    let id: u64 = call
        .param("id")
        .parse()
        .map_err(|_| fail(400, "bad_request", "member id must be a number"))?;
    let place: ControllerPlace = parse(&call.body)?;
    for (what, v) in [("region", &place.region), ("zone", &place.zone)] {
        if !dabba_spec::resources::valid_name(v) {
            return Err(fail(
                422,
                "invalid",
                dabba_spec::validate::name_message(what, v),
            ));
        }
    }
    reply(
        api.node
            .propose(Command::PlaceController { id, place })
            .await?,
    )
}

async fn prefer_leader_region(api: &Api, call: Call) -> Answer {
    let req: PreferredLeaderRegion = parse(&call.body)?;
    reply(
        api.node
            .propose(Command::PreferLeaderRegion { region: req.region })
            .await?,
    )?;
    json(200, &api.node.status())
}

async fn status(api: &Api, _: Call) -> Answer {
    json(200, &api.node.status())
}

async fn peer_token(api: &Api, _: Call) -> Answer {
    json(
        200,
        &PeerToken {
            token: api.node.peer_token().to_string(),
            secrets_key: Some(api.node.vault.export()),
        },
    )
}

async fn add_member(api: &Api, call: Call) -> Answer {
    let req: AddMember = parse(&call.body)?;
    let place = ControllerPlace {
        region: req.region,
        zone: req.zone,
    };
    api.node.add_member(req.id, &req.address, place).await?;
    json(200, &api.node.status())
}

async fn remove_member(api: &Api, call: Call) -> Answer {
    let id: u64 = call
        .param("id")
        .parse()
        .map_err(|_| fail(400, "bad_request", "member id must be a number"))?;
    api.node.remove_member(id).await?;
    json(200, &api.node.status())
}

async fn watch(api: &Api, call: Call) -> Answer {
    let version = api.wait_past(since_of(&call), wait_of(&call)).await;
    json(200, &WatchResponse { version })
}
