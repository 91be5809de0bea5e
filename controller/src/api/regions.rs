//! Regions: `GET /v1/regions` (each region's hosts, voters and the placed apps there,
//! with the triggers firing now), and an operator's moves — `POST
//! /v1/regions/{region}/failover`, `/drain`, `/restore` (admin), each one Raft entry
//! for every app placed in the region (`spec/regions.md`).

use dabba_spec::api::{RegionAppView, RegionMove, RegionView};
use dabba_spec::regions::FailoverKind;
use dabba_spec::resources::{HostState, PodPhase};
use http::Method;

use super::auth::{Access, Ns, Rule};
use super::router::Router;
use super::{Answer, Api, Call, fail, json, parse, reply};
use crate::command::{Command, RegionChange};
use crate::node::now_millis;
use crate::reconcile::regions;
use crate::state::State;

pub(super) fn routes(r: &mut Router) {
    r.leader(
        Method::GET,
        "/v1/regions",
        Access::Token(Rule::View(Ns::Any)),
        handler!(list),
    );
    r.leader(
        Method::POST,
        "/v1/regions/{region}/failover",
        Access::Token(Rule::Admin),
        |api, call| Box::pin(act(api, call, Move::Failover)),
    );
    r.leader(
        Method::POST,
        "/v1/regions/{region}/drain",
        Access::Token(Rule::Admin),
        |api, call| Box::pin(act(api, call, Move::Drain)),
    );
    r.leader(
        Method::POST,
        "/v1/regions/{region}/restore",
        Access::Token(Rule::Admin),
        |api, call| Box::pin(act(api, call, Move::Restore)),
    );
}

async fn list(api: &Api, _: Call) -> Answer {
    api.node.linearize().await?;
    let voters = api.node.voter_ids();
    let served = api.node.served_now();
    json(200, &api.node.shared.read(|s| views(s, &voters, &served)))
}

/// Every region with its placed apps.
pub fn views(state: &State, voters: &[u64], served: &regions::Measured) -> Vec<RegionView> {
    let health = regions::health(state, voters);
    let firing = regions::triggers(state, voters, served);
    health
        .into_values()
        .map(|h| {
            let apps = state
                .placements
                .iter()
                .filter_map(|(key, status)| {
                    let placement = state.apps.get(key)?.spec.regions.as_ref()?;
                    if !placement.regions.contains(&h.region) {
                        return None;
                    }
                    let running = state
                        .pods
                        .values()
                        .filter(|p| p.app_key() == *key && p.phase == PodPhase::Running)
                        .filter(|p| {
                            p.host.as_deref().and_then(|x| state.host_region(x))
                                == Some(h.region.as_str())
                        })
                        .count() as u32;
                    Some(RegionAppView {
                        app: key.clone(),
                        serving: status.serving(placement) == Some(h.region.as_str()),
                        replicas: status.replicas.get(&h.region).copied().unwrap_or(0),
                        running,
                        failed: status.failed.get(&h.region).cloned(),
                        draining_to: status.draining.get(&h.region).cloned(),
                        triggers: firing
                            .iter()
                            .filter(|(k, t)| k == key && t.region == h.region)
                            .map(|(_, t)| t.reason.clone())
                            .collect(),
                    })
                })
                .collect();
            RegionView { health: h, apps }
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
enum Move {
    Failover,
    Drain,
    Restore,
}

async fn act(api: &Api, call: Call, what: Move) -> Answer {
    let region = call.param("region").to_string();
    let body: RegionMove = if call.body.is_empty() {
        RegionMove { to: None }
    } else {
        parse(&call.body)?
    };
    api.node.linearize().await?;
    let changes = api
        .node
        .shared
        .read(|s| moves(s, &region, body.to.as_deref(), what))
        .map_err(|m| fail(409, "conflict", m))?;
    reply(
        api.node
            .propose(Command::Regions {
                changes,
                at: now_millis(),
            })
            .await?,
    )?;
    let voters = api.node.voter_ids();
    let served = api.node.served_now();
    json(200, &api.node.shared.read(|s| views(s, &voters, &served)))
}

/// The changes an operator's move of `region` makes: one per app placed there, or why
/// there are none to make.
fn moves(
    state: &State,
    region: &str,
    to: Option<&str>,
    what: Move,
) -> Result<Vec<RegionChange>, String> {
    if let Move::Restore = what {
        let (hosts, ready) = state
            .hosts
            .values()
            .filter(|h| h.info.region == region)
            .fold((0, 0), |(n, r), h| {
                (n + 1, r + u32::from(h.state == HostState::Ready))
            });
        if ready == 0 {
            return Err(format!(
                "region {region} has no Ready host ({hosts} registered): restore it once its hosts are back"
            ));
        }
    }
    let mut changes = Vec::new();
    for (key, status) in &state.placements {
        let Some(placement) = state.apps.get(key).and_then(|a| a.spec.regions.as_ref()) else {
            continue;
        };
        if !placement.regions.iter().any(|r| r == region) {
            continue;
        }
        let app = key.clone();
        match what {
            Move::Restore => {
                // Failed over or drained: back; still draining: the drain is called off.
                if status.failed.contains_key(region) || status.draining.contains_key(region) {
                    changes.push(RegionChange::Restore {
                        app,
                        region: region.to_string(),
                    });
                }
            }
            Move::Failover | Move::Drain => {
                if !status.routes_to(region) {
                    continue;
                }
                let target = match to {
                    Some(t) if placement.regions.iter().any(|r| r == t) => t.to_string(),
                    Some(t) => {
                        return Err(format!("app {key} is not placed in region {t}"));
                    }
                    None => match placement
                        .in_order()
                        .into_iter()
                        .find(|r| *r != region && status.routes_to(r))
                    {
                        Some(t) => t.to_string(),
                        None => return Err(format!("app {key} has no other region to move to")),
                    },
                };
                changes.push(match what {
                    Move::Failover => RegionChange::Failover {
                        app,
                        from: region.to_string(),
                        to: target,
                        kind: FailoverKind::Manual,
                        reason: "dabba region failover".into(),
                    },
                    _ => RegionChange::Drain {
                        app,
                        from: region.to_string(),
                        to: target,
                    },
                });
            }
        }
    }
    if changes.is_empty() {
        return Err(format!(
            "no app placed in region {region} has anything to {what:?}"
        ));
    }
    Ok(changes)
}
