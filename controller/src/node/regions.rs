//! Where the controllers run: each says its region and zone when it starts (so the
//! cluster can tell whether it survives losing a region), and the leader measures the
//! round trip to every member.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;

use dabba_spec::api::PodReport;
use dabba_spec::resources::{Millis, ResourceKey};

use super::{Controller, NodeId};
use crate::raft::network::PEER_TOKEN_HEADER;
use crate::reconcile::{
    self,
    regions::{Measured, Served, Voter},
};

/// Reports of served requests kept, at most (the longest window anyone should want).
const SERVED_KEPT: Millis = 15 * 60 * 1000;

/// How often the leader considers handing leadership to the preferred region.
const HANDOFF_EVERY: Duration = Duration::from_secs(5);

/// How often the leader probes the members.
const PROBE_EVERY: Duration = Duration::from_secs(2);

impl Controller {
    /// Says where this controller runs, through the leader, whenever the state says
    /// otherwise (at first start, and when its flags change).
    pub(super) fn spawn_placer(self: Arc<Self>) {
        tokio::spawn(async move {
            loop {
                let stored = self
                    .shared
                    .read(|s| s.initialized.then(|| s.controllers.get(&self.id).cloned()));
                let wanted = match stored {
                    // Not initialized yet, or already right.
                    None => None,
                    Some(Some(p)) if p == self.place => None,
                    Some(_) => Some(self.place.clone()),
                };
                if let Some(place) = wanted {
                    let url = format!("{}/v1/cluster/members/{}/place", self.address, self.id);
                    let body = serde_json::to_vec(&place).unwrap_or_default();
                    let req = http::Request::builder()
                        .method(http::Method::PUT)
                        .uri(url)
                        .header(PEER_TOKEN_HEADER, &self.peer_token)
                        .header(http::header::CONTENT_TYPE, "application/json")
                        .body(Full::new(Bytes::from(body)));
                    if let Ok(req) = req
                        && let Err(e) =
                            dabba_client::transport::send(&self.client, req, Duration::from_secs(5))
                                .await
                    {
                        tracing::debug!(error = %e, "saying where this controller runs");
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    /// Keeps what the pods of apps placed across regions served, by the reporting host's
    /// region (from a heartbeat).
    pub(super) fn record_served(&self, host: &str, reports: &[PodReport], now: Millis) {
        let rows: Vec<(ResourceKey, String, u64, u64)> = self.shared.read(|s| {
            let Some(region) = s.host_region(host) else {
                return Vec::new();
            };
            reports
                .iter()
                .filter_map(|r| {
                    let load = r.load?;
                    let app = s.pods.get(&r.key)?.app_key();
                    s.placements
                        .contains_key(&app)
                        .then(|| (app, region.to_string(), load.requests, load.errors))
                })
                .collect()
        });
        if rows.is_empty() {
            return;
        }
        let mut soft = self.soft.lock().expect("soft state lock");
        for (app, region, requests, errors) in rows {
            soft.served
                .entry((app, region))
                .or_default()
                .push_back((now, requests, errors));
        }
        let oldest = now.saturating_sub(SERVED_KEPT);
        soft.served.retain(|_, rows| {
            while rows.front().is_some_and(|(at, _, _)| *at < oldest) {
                rows.pop_front();
            }
            !rows.is_empty()
        });
    }

    /// What each app placed across regions served in each region over its window — for
    /// the apps whose window this leader has watched whole.
    pub(super) fn served(&self, now: Millis) -> Measured {
        let windows: HashMap<ResourceKey, Millis> = self.shared.read(|s| {
            s.placements
                .keys()
                .filter_map(|k| {
                    let p = s.apps.get(k)?.spec.regions.as_ref()?;
                    Some((k.clone(), reconcile::regions::window(p)))
                })
                .collect()
        });
        let soft = self.soft.lock().expect("soft state lock");
        let since = soft.leader_since.unwrap_or(now);
        let mut out = Measured::new();
        for ((app, region), rows) in &soft.served {
            let Some(window) = windows.get(app) else {
                continue;
            };
            if since + window > now {
                continue;
            }
            let from = now.saturating_sub(*window);
            let mut s = Served::default();
            for (_, requests, errors) in rows.iter().filter(|(at, _, _)| *at > from) {
                s.requests += requests;
                s.errors += errors;
            }
            out.insert((app.clone(), region.clone()), s);
        }
        out
    }

    /// On the leader, at most every [`HANDOFF_EVERY`]: if a preferred leader region is set,
    /// this leader is outside it, and a caught-up voter there answers, hands leadership
    /// to that voter: it stops heartbeats and holds proposals (which would renew the
    /// followers' lease), and asks the voter to stand for election once the lease has
    /// run out. Whatever happens, heartbeats and proposals resume after two leases;
    /// writes held meanwhile go on at the new leader, or here if the handoff failed.
    pub(super) fn prefer_leader(self: &Arc<Self>) {
        {
            let mut soft = self.soft.lock().expect("soft state lock");
            if soft
                .last_handoff
                .is_some_and(|at| at.elapsed() < HANDOFF_EVERY)
            {
                return;
            }
            soft.last_handoff = Some(Instant::now());
        }
        let status = self.status();
        let rtts = self.member_rtts();
        let voters: Vec<Voter> = status
            .members
            .iter()
            .filter(|m| m.voter)
            .map(|m| Voter {
                id: m.id,
                region: m.region.clone(),
                lag: m.lag,
                reachable: m.id == self.id || rtts.contains_key(&m.id),
            })
            .collect();
        let Some(target) = reconcile::regions::leader_handoff(
            self.id,
            status.preferred_leader_region.as_deref(),
            &voters,
        ) else {
            return;
        };
        let Some(address) = status
            .members
            .iter()
            .find(|m| m.id == target)
            .map(|m| m.address.clone())
        else {
            return;
        };
        tracing::info!(to = target, "handing leadership to the preferred region");
        let node = self.clone();
        tokio::spawn(async move {
            let _ = node.handoff.send(true);
            node.raft.runtime_config().heartbeat(false);
            let req = http::Request::builder()
                .method(http::Method::POST)
                .uri(format!(
                    "{}/v1/cluster/elect",
                    address.trim_end_matches('/')
                ))
                .header(PEER_TOKEN_HEADER, &node.peer_token)
                .body(Full::new(Bytes::new()));
            if let Ok(req) = req {
                let _ =
                    dabba_client::transport::send(&node.client, req, Duration::from_secs(1)).await;
            }
            tokio::time::sleep(node.lease * 2 + Duration::from_millis(200)).await;
            node.raft.runtime_config().heartbeat(true);
            let _ = node.handoff.send(false);
        });
    }

    /// Asked by a leader handing over: stands for election once the leader's lease has
    /// run out (followers refuse any candidate before), a few times if needed.
    pub fn stand_for_election(self: &Arc<Self>) {
        let node = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(node.lease + Duration::from_millis(50)).await;
            for _ in 0..3 {
                if node.is_leader() {
                    return;
                }
                let _ = node.raft.trigger().elect().await;
                tokio::time::sleep(node.lease / 2).await;
            }
        });
    }

    /// The voters' ids.
    pub fn voter_ids(&self) -> Vec<NodeId> {
        self.voters()
    }

    /// What placed apps served in each region over their window (on the leader).
    pub fn served_now(&self) -> Measured {
        self.served(super::now_millis())
    }

    /// The round trip from the leader to each member that answered its last probe, in
    /// ms (on the leader; a probe older than three rounds counts for nothing, so a
    /// leader elected after a partition does not trust what it measured before).
    pub fn member_rtts(&self) -> HashMap<NodeId, f64> {
        self.soft
            .lock()
            .expect("soft state lock")
            .rtts
            .iter()
            .filter(|(_, (_, at))| at.elapsed() < PROBE_EVERY * 3)
            .map(|(id, (rtt, _))| (*id, *rtt))
            .collect()
    }

    /// Probes every member's `/v1/healthz` from the leader, at most every
    /// [`PROBE_EVERY`], and keeps the round trips.
    pub(super) fn probe_members(self: &Arc<Self>) {
        {
            let mut soft = self.soft.lock().expect("soft state lock");
            if soft.last_probe.is_some_and(|at| at.elapsed() < PROBE_EVERY) {
                return;
            }
            soft.last_probe = Some(Instant::now());
        }
        let members: Vec<(NodeId, String)> = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect();
        for (id, addr) in members {
            let node = self.clone();
            tokio::spawn(async move {
                let Ok(req) = http::Request::get(format!(
                    "{}{}",
                    addr.trim_end_matches('/'),
                    dabba_client::paths::HEALTHZ
                ))
                .body(Full::new(Bytes::new())) else {
                    return;
                };
                let started = Instant::now();
                let ok = dabba_client::transport::send(&node.client, req, Duration::from_secs(2))
                    .await
                    .is_ok();
                let mut soft = node.soft.lock().expect("soft state lock");
                if ok {
                    soft.rtts.insert(
                        id,
                        (started.elapsed().as_secs_f64() * 1000.0, Instant::now()),
                    );
                } else {
                    soft.rtts.remove(&id);
                }
            });
        }
    }
}
