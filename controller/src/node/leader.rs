//! What only the leader does: it keeps soft state from the hosts' heartbeats (when each
//! host was last heard, pod load, held requests, recent guest output) that is never
//! committed, activates apps at zero, and runs the reconcilers a few times a second,
//! committing what they propose.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use dabba_spec::api::{ActivateResponse, Assignment, AutoscalerStatus, HeldRequests, PodReport};
use dabba_spec::resources::{Millis, ResourceKey};
use dabba_spec::scale::AutoscalerMode;

use super::analysis::Analysis;
use super::{Controller, ProposeError, now_millis};
use crate::command::{Command, Reply};
use crate::reconcile::autoscale::{self, AppScaler, LoadReports, ScalerKey};
use crate::reconcile::{self, Observed};

/// One heartbeat's report of what an app's pods in a region served: when, requests,
/// errors.
pub(super) type ServedReport = (Millis, u64, u64);

#[derive(Default)]
pub(super) struct Soft {
    heartbeats: HashMap<String, Millis>,
    /// Pod load and held requests from the heartbeats, for the autoscaler.
    load: LoadReports,
    /// What each autoscaled app's autoscaler remembers.
    scalers: HashMap<ScalerKey, AppScaler>,
    last_autoscale: Millis,
    /// When this node last became leader; `None` while it follows.
    pub(super) leader_since: Option<Millis>,
    /// Load by revision of apps with a rollout, and checks running.
    pub(super) analysis: Analysis,
    /// Requests and errors of apps placed across regions, by app and region, as
    /// heartbeats reported them: when, requests, errors.
    pub(super) served: HashMap<(ResourceKey, String), VecDeque<ServedReport>>,
    /// Round trips to each controller, in ms, and when they were measured.
    pub(super) rtts: HashMap<super::NodeId, (f64, std::time::Instant)>,
    pub(super) last_probe: Option<std::time::Instant>,
    /// When this leader last considered handing leadership to the preferred region.
    pub(super) last_handoff: Option<std::time::Instant>,
}

impl Controller {
    /// Records a host's heartbeat (leader only), and proposes the pod phases that changed.
    pub async fn heartbeat(&self, host: &str, reports: &[PodReport], held: &[HeldRequests]) {
        {
            let now = now_millis();
            let mut soft = self.soft.lock().expect("soft state lock");
            soft.heartbeats.insert(host.to_string(), now);
            for r in reports {
                match r.load {
                    Some(load) => soft.load.pods.insert(r.key.clone(), (now, load)),
                    None => soft.load.pods.remove(&r.key),
                };
            }
            soft.load.held.retain(|(h, _), _| h != host);
            for h in held {
                soft.load.held.insert(
                    (host.to_string(), ResourceKey::new(&h.namespace, &h.app)),
                    (now, h.requests),
                );
            }
            let stale = now.saturating_sub(10 * autoscale::REPORT_FRESHNESS);
            soft.load.pods.retain(|_, (at, _)| *at >= stale);
        }
        self.record_rollout_load(reports, now_millis());
        self.record_served(host, reports, now_millis());
        let changes = self
            .shared
            .read(|s| reconcile::pods::reported(s, host, reports));
        if !changes.is_empty() {
            let _ = self
                .propose(Command::Pods {
                    changes,
                    at: now_millis(),
                })
                .await;
        }
    }

    /// Scales an autoscaled app from zero because `host` holds `held` requests for it,
    /// placing the first pod on that host if it fits. Answers with the pod's assignment
    /// when one was placed there, so the host can start it at once.
    pub async fn activate(
        &self,
        key: &ResourceKey,
        host: &str,
        held: u32,
    ) -> Result<ActivateResponse, ProposeError> {
        let now = now_millis();
        {
            let mut soft = self.soft.lock().expect("soft state lock");
            soft.load
                .held
                .insert((host.to_string(), key.clone()), (now, held));
            if let Some(scaler) = soft.scalers.get_mut(&(key.clone(), None)) {
                scaler.memory.last_demand = Some(now);
            }
        }
        let on = self
            .shared
            .read(|s| reconcile::scheduler::activation_host(s, key, host));
        let reply = self
            .propose(Command::Activate {
                namespace: key.namespace().into(),
                name: key.name().into(),
                host: on,
                at: now,
            })
            .await?;
        let Reply::Activated { replicas, pod } = reply else {
            return Err(ProposeError::Raft(format!("activation: {reply:?}")));
        };
        if pod.is_some() {
            let mut soft = self.soft.lock().expect("soft state lock");
            if let Some(scaler) = soft.scalers.get_mut(&(key.clone(), None)) {
                scaler.status = Some(AutoscalerStatus {
                    mode: AutoscalerMode::Stable,
                    desired: 1,
                    reason: format!("activated: {held} request(s) held on {host}"),
                    demand: f64::from(held),
                    at: now,
                });
            }
        }
        let (assignment, version) = self.shared.read(|s| {
            let assignment = pod
                .filter(|p| p.host.as_deref() == Some(host))
                .and_then(|p| {
                    let spec = s.revision(&p.namespace, &p.app, p.revision)?.spec.clone();
                    let (secrets, unrevealed) =
                        match self.reveal(s, &spec.namespace, &spec.capabilities.secrets) {
                            Ok(v) => (v, None),
                            Err(e) => (Default::default(), Some(e)),
                        };
                    Some(Assignment {
                        pod: *p,
                        spec,
                        secrets,
                        unrevealed,
                    })
                });
            (assignment, s.version)
        });
        Ok(ActivateResponse {
            replicas,
            version,
            assignment,
        })
    }

    /// What the autoscaler last decided for an app (on the leader).
    pub fn autoscaler(&self, app: &ResourceKey) -> Option<AutoscalerStatus> {
        let soft = self.soft.lock().expect("soft state lock");
        soft.scalers
            .iter()
            .filter(|((k, _), _)| k == app)
            .filter_map(|(_, s)| s.status.clone())
            .max_by_key(|s| s.desired)
    }

    /// Runs the reconcilers on the leader, a few times a second and whenever the state
    /// changes, and commits what they propose.
    pub(super) fn spawn_driver(self: Arc<Self>) {
        let mut changed = self.shared.watch();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    r = changed.changed() => if r.is_err() { return },
                }
                if !self.is_leader() {
                    let mut soft = self.soft.lock().expect("soft state lock");
                    soft.leader_since = None;
                    // A leader again later starts its autoscalers afresh (with a grace
                    // period), and its analysis from the load it sees then.
                    soft.scalers.clear();
                    soft.analysis = Analysis::default();
                    soft.served.clear();
                    soft.rtts.clear();
                    continue;
                }
                let now = now_millis();
                let voters = self.voters();
                let served = self.served(now);
                let observed = {
                    let mut soft = self.soft.lock().expect("soft state lock");
                    let since = *soft.leader_since.get_or_insert(now);
                    Observed {
                        heartbeats: soft.heartbeats.clone(),
                        leader_since: since,
                        voters,
                        served,
                    }
                };
                let mut commands = self
                    .shared
                    .read(|s| reconcile::reconcile(s, &observed, now, &self.tuning));
                commands.extend(self.autoscale(now));
                commands.extend(self.analyze(now));
                self.probe_members();
                self.prefer_leader();
                for command in commands {
                    if let Err(e) = self.propose(command).await {
                        tracing::debug!(error = %e, "reconcile proposal not committed");
                        break;
                    }
                }
            }
        });
    }

    /// Runs the autoscaler, at most every [`AUTOSCALE_EVERY`] ms.
    fn autoscale(&self, now: Millis) -> Vec<Command> {
        let mut soft = self.soft.lock().expect("soft state lock");
        if now.saturating_sub(soft.last_autoscale) < AUTOSCALE_EVERY {
            return Vec::new();
        }
        soft.last_autoscale = now;
        let Soft { load, scalers, .. } = &mut *soft;
        self.shared
            .read(|s| autoscale::drive(s, load, scalers, now))
    }
}

/// How often the autoscaler decides.
const AUTOSCALE_EVERY: Millis = 200;
