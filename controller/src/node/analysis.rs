//! The leader's analysis: it keeps the load each revision of a rolling-out app reported
//! (soft state, from the hosts' heartbeats), takes the measurements that fall due
//! (`reconcile::rollout::due`) and commits them, so every controller sees the same
//! values and a new leader continues from them.
//!
//! `measure` metrics are computed from that load over the measurement's window;
//! `web` checks are HTTP requests made from here, in their own tasks; `job` checks are
//! components a host runs (`dabba-host`'s agent), reported back through the API.
//! A new leader has no load from before it led: its first window starts when it began
//! leading (see `due`), so no measurement counts load it never saw.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dabba_spec::analysis::{MAX_INTERVAL, RunKind};
use dabba_spec::api::{PodLoad, PodReport};
use dabba_spec::resources::{Millis, ResourceKey};
use http_body_util::Full;

use super::{Controller, now_millis};
use crate::command::{Command, RolloutChange};
use crate::reconcile::rollout::measure::{self, Window};
use crate::reconcile::rollout::{self, Due};

/// Load kept per revision: a little more than the longest interval.
const KEPT: Millis = MAX_INTERVAL.as_millis() as Millis + 60_000;
/// Reports kept per revision, whatever their age.
const MAX_REPORTS: usize = 50_000;
/// The window the observed split is computed over.
pub const OBSERVED_WINDOW: Millis = 10_000;

/// One measurement, by what it measures.
type CheckId = (ResourceKey, RunKind, Millis, u32);

#[derive(Default)]
pub(super) struct Analysis {
    /// By app and revision, apps with a rollout only: when each pod report arrived, and
    /// the load it reported.
    load: HashMap<(ResourceKey, u64), VecDeque<(Millis, PodLoad)>>,
    /// Checks running now, so none starts twice.
    in_flight: HashSet<CheckId>,
}

impl Analysis {
    /// The requests each revision answered over `[now - window, now]`.
    pub fn requests(&self, app: &ResourceKey, revision: u64, now: Millis, window: Millis) -> u64 {
        self.window(app, revision, now.saturating_sub(window), now)
            .requests
    }

    /// A revision's load reported after `from`, up to `to`.
    fn window(&self, app: &ResourceKey, revision: u64, from: Millis, to: Millis) -> Window {
        let mut w = Window::default();
        if let Some(reports) = self.load.get(&(app.clone(), revision)) {
            for (_, load) in reports.iter().filter(|(at, _)| *at > from && *at <= to) {
                w.add(load);
            }
        }
        w
    }

    fn forget_old(&mut self, now: Millis) {
        let oldest = now.saturating_sub(KEPT);
        self.load.retain(|_, reports| {
            while reports.front().is_some_and(|(at, _)| *at < oldest) || reports.len() > MAX_REPORTS
            {
                reports.pop_front();
            }
            !reports.is_empty()
        });
    }
}

impl Controller {
    /// Keeps the load of pods of apps with a rollout, by revision (from a heartbeat).
    pub(super) fn record_rollout_load(&self, reports: &[PodReport], now: Millis) {
        let revisions: Vec<(ResourceKey, u64, PodLoad)> = self.shared.read(|s| {
            if s.rollouts.is_empty() {
                return Vec::new();
            }
            reports
                .iter()
                .filter_map(|r| {
                    let load = r.load?;
                    let pod = s.pods.get(&r.key)?;
                    let app = pod.app_key();
                    s.rollouts
                        .contains_key(&app)
                        .then_some((app, pod.revision, load))
                })
                .collect()
        });
        if revisions.is_empty() {
            return;
        }
        let mut soft = self.soft.lock().expect("soft state lock");
        for (app, revision, load) in revisions {
            soft.analysis
                .load
                .entry((app, revision))
                .or_default()
                .push_back((now, load));
        }
        soft.analysis.forget_old(now);
    }

    /// The percent of the last [`OBSERVED_WINDOW`]'s requests the canary answered, and
    /// how many requests that was (on the leader).
    pub fn observed_split(
        &self,
        app: &ResourceKey,
        stable: u64,
        canary: u64,
    ) -> Option<(f64, u64)> {
        let now = now_millis();
        let soft = self.soft.lock().expect("soft state lock");
        let c = soft.analysis.requests(app, canary, now, OBSERVED_WINDOW);
        let s = soft.analysis.requests(app, stable, now, OBSERVED_WINDOW);
        (c + s > 0).then(|| (c as f64 * 100.0 / (c + s) as f64, c + s))
    }

    /// Takes the measurements due now: returns the commands for those computed from
    /// load, and starts the web checks (each commits its own).
    pub(super) fn analyze(self: &Arc<Self>, now: Millis) -> Vec<Command> {
        let since = {
            let soft = self.soft.lock().expect("soft state lock");
            soft.leader_since.unwrap_or(now)
        };
        let due = self.shared.read(|s| rollout::due(s, now, since));
        let mut changes = Vec::new();
        for d in due {
            if d.spec.job.is_some() {
                if let Some(c) = self.shared.read(|s| job_check(s, &d, now)) {
                    changes.push(c);
                }
            } else if let Some(m) = d.spec.measure {
                let window = {
                    let soft = self.soft.lock().expect("soft state lock");
                    soft.analysis.window(&d.app, d.canary, d.window_from, now)
                };
                changes.push(measured(&d, window.measurement(&d.spec, m, now)));
            } else if let Some(check) = d.spec.web.clone() {
                let id = (d.app.clone(), d.run, d.started, d.metric);
                let mut soft = self.soft.lock().expect("soft state lock");
                if soft.analysis.in_flight.insert(id.clone()) {
                    drop(soft);
                    let node = self.clone();
                    let (args, ingress) = self
                        .shared
                        .read(|s| (run_args(s, &d), canary_ingress(s, &d)));
                    tokio::spawn(async move {
                        let expand =
                            |v: &str| measure::expand(v, &args, ingress.as_deref(), d.canary);
                        let url = expand(&check.url);
                        let headers: Vec<(String, String)> = check
                            .headers
                            .iter()
                            .map(|(k, v)| (k.clone(), expand(v)))
                            .collect();
                        let m = web_check(&node, &d, &check, &url, &headers).await;
                        let _ = node
                            .propose(Command::Rollout {
                                changes: vec![measured(&d, m)],
                                at: now_millis(),
                            })
                            .await;
                        node.soft
                            .lock()
                            .expect("soft state lock")
                            .analysis
                            .in_flight
                            .remove(&id);
                    });
                }
            }
        }
        if changes.is_empty() {
            Vec::new()
        } else {
            vec![Command::Rollout { changes, at: now }]
        }
    }
}

fn measured(d: &Due, m: dabba_spec::analysis::Measurement) -> RolloutChange {
    RolloutChange::Measured {
        app: d.app.clone(),
        canary: d.canary,
        run: d.run,
        started: d.started,
        metric: d.metric,
        measurement: m,
    }
}

/// How long a host may take to run and report a `job` check.
pub const JOB_CHECK_TIMEOUT: Millis = 120_000;

/// What a due `job` check needs: a host to run it, or — given to a host that is gone or
/// never reported — an Error measurement. `None` while its host runs it.
fn job_check(s: &crate::state::State, d: &Due, now: Millis) -> Option<RolloutChange> {
    use dabba_spec::resources::HostState;
    let r = s.rollouts.get(&d.app)?;
    let ready = |h: &str| s.hosts.get(h).is_some_and(|h| h.state == HostState::Ready);
    if let Some(c) = r
        .checks
        .iter()
        .find(|c| (c.run, c.started, c.metric) == (d.run, d.started, d.metric))
    {
        let why = if !ready(&c.host) {
            format!("host {} was lost while it ran the check", c.host)
        } else if now > c.since + JOB_CHECK_TIMEOUT {
            format!(
                "host {} did not report the check within {} s",
                c.host,
                JOB_CHECK_TIMEOUT / 1000
            )
        } else {
            return None;
        };
        return Some(measured(d, measure::error_measurement(now, why)));
    }
    let Some(host) = canary_host(s, d) else {
        return Some(measured(
            d,
            measure::error_measurement(now, "no ready host to run the check".into()),
        ));
    };
    let taken = r
        .analysis
        .iter()
        .find(|x| (x.kind, x.started) == (d.run, d.started))
        .and_then(|x| x.metrics.get(d.metric as usize))
        .map_or(0, |m| m.taken);
    Some(RolloutChange::CheckStarted {
        app: d.app.clone(),
        canary: d.canary,
        run: d.run,
        started: d.started,
        metric: d.metric,
        host: host.to_string(),
        id: format!(
            "{}-r{}-{}-{}-{}",
            d.app.name(),
            d.canary,
            d.started,
            d.metric,
            taken + 1
        ),
    })
}

/// A ready host that runs a pod of the revision under analysis, else any ready host.
fn canary_host<'s>(s: &'s crate::state::State, d: &Due) -> Option<&'s str> {
    use dabba_spec::resources::HostState;
    let ready: Vec<&str> = s
        .hosts
        .iter()
        .filter(|(_, h)| h.state == HostState::Ready)
        .map(|(name, _)| name.as_str())
        .collect();
    let runs_canary = |h: &str| {
        s.pods
            .values()
            .any(|p| p.app_key() == d.app && p.revision == d.canary && p.host.as_deref() == Some(h))
    };
    ready
        .iter()
        .find(|h| runs_canary(h))
        .or(ready.first())
        .copied()
}

/// The ingress address of [`canary_host`], for a web check's `{{ingress}}`.
fn canary_ingress(s: &crate::state::State, d: &Due) -> Option<String> {
    let host = canary_host(s, d)?;
    Some(s.hosts.get(host)?.info.address.clone())
}

/// The arguments of the analysis a due measurement belongs to.
fn run_args(s: &crate::state::State, d: &Due) -> std::collections::BTreeMap<String, String> {
    let Some(rollout) = s.apps.get(&d.app).and_then(|a| a.spec.rollout.clone()) else {
        return Default::default();
    };
    let named = match d.run {
        RunKind::Step { step } => match rollout.steps.get(step as usize) {
            Some(dabba_spec::rollout::Step::Analysis(a)) => Some(a.clone()),
            _ => None,
        },
        RunKind::Background => rollout.analysis.map(|b| b.analysis),
        RunKind::PrePromotion => rollout.pre_promotion_analysis,
        RunKind::PostPromotion => rollout.post_promotion_analysis,
    };
    named.map(|a| a.args).unwrap_or_default()
}

async fn web_check(
    node: &Controller,
    d: &Due,
    check: &dabba_spec::analysis::WebCheck,
    url: &str,
    headers: &[(String, String)],
) -> dabba_spec::analysis::Measurement {
    let timeout: Duration = check.timeout.get();
    let mut req = http::Request::builder()
        .method(check.method.as_str())
        .uri(url)
        .header("user-agent", "dabba-analysis");
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let req = req.body(Full::new(Bytes::new()));
    let req = match req {
        Ok(r) => r,
        Err(e) => return measure::error_measurement(now_millis(), format!("{url}: {e}")),
    };
    match dabba_client::transport::send(&node.client, req, timeout).await {
        Ok(resp) => measure::web_measurement(
            &d.spec,
            check,
            resp.status().as_u16(),
            resp.body(),
            now_millis(),
        ),
        Err(e) => measure::error_measurement(now_millis(), e.to_string()),
    }
}
