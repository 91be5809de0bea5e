//! Read-only views of the state for API answers: pure functions, tested without a
//! server.

use std::collections::{BTreeSet, HashMap, HashSet};

use dabba_spec::ratelimit::RouteLimit;

use dabba_spec::api::{
    AppDetail, AppSummary, Assignment, CheckAssignment, CronJobView, EventView, HostView,
    RegionStateView, RolloutView, RouteEntry, Split,
};
use dabba_spec::cron::{Schedule, rfc3339_in, time_zone};
use dabba_spec::cronjob::{RunAssignment, RunPhase};
use dabba_spec::resources::{HostState, Pod, PodPhase, ResourceKey, Revision};
use dabba_spec::rollout::Strategy;

use crate::state::State;

/// The apps visible in `namespace` (`None`: all), as listed by `dabba get apps`.
pub fn app_summaries(state: &State, namespace: Option<&str>) -> Vec<AppSummary> {
    let mut ready: HashMap<(&str, &str, u64), u32> = HashMap::new();
    for p in state.pods.values().filter(|p| p.phase == PodPhase::Running) {
        *ready
            .entry((p.namespace.as_str(), p.app.as_str(), p.revision))
            .or_default() += 1;
    }
    state
        .apps
        .values()
        .filter(|a| namespace.is_none_or(|ns| a.spec.namespace == ns))
        .map(|a| AppSummary {
            namespace: a.spec.namespace.clone(),
            name: a.spec.name.clone(),
            route: a.spec.route.clone(),
            revision: a.revision,
            desired: a.spec.replicas,
            ready: ready
                .get(&(a.spec.namespace.as_str(), a.spec.name.as_str(), a.revision))
                .copied()
                .unwrap_or(0),
            component: a.spec.component.to_string(),
            updated_at: a.updated_at,
            autoscaler: None,
        })
        .collect()
}

/// Everything about one app, for `dabba describe app`.
pub fn app_detail(state: &State, key: &ResourceKey) -> Option<AppDetail> {
    let (namespace, name) = (key.namespace(), key.name());
    let app = state.apps.get(key)?.clone();
    let pod_prefix = format!("pod/{namespace}/{name}-r");
    Some(AppDetail {
        app,
        revisions: state.revisions.get(key).cloned().unwrap_or_default(),
        replica_sets: state
            .replica_sets
            .values()
            .filter(|rs| rs.namespace == namespace && rs.app == name)
            .cloned()
            .collect(),
        pods: state
            .pods
            .values()
            .filter(|p| p.namespace == namespace && p.app == name)
            .cloned()
            .collect(),
        events: state
            .events
            .iter()
            .filter(|e| e.object == format!("app/{key}") || e.object.starts_with(&pod_prefix))
            .map(|e| EventView {
                at: e.at,
                object: e.object.clone(),
                reason: e.reason.clone(),
                message: e.message.clone(),
            })
            .collect(),
        autoscaler: None,
        rollout: None,
        placement: state.placements.get(key).cloned(),
    })
}

/// An app's rollout, without what only the leader knows (`observed`).
pub fn rollout_view(state: &State, key: &ResourceKey, now: u64) -> Option<RolloutView> {
    let status = state.rollouts.get(key)?.clone();
    let app = state.apps.get(key)?;
    let rollout = app.spec.rollout.clone().unwrap_or_default();
    let mut named: Vec<&str> = rollout
        .analysis_refs()
        .into_iter()
        .flat_map(|(_, a)| a.templates.iter().map(String::as_str))
        .collect();
    named.sort_unstable();
    named.dedup();
    let conditions = named
        .into_iter()
        .filter_map(|name| state.analysis_template(key, name))
        .flat_map(|t| {
            t.metrics.iter().map(move |m| {
                let mut parts = Vec::new();
                if let Some(c) = &m.success_condition {
                    parts.push(format!("success: {c}"));
                }
                if let Some(c) = &m.failure_condition {
                    parts.push(format!("failure: {c}"));
                }
                if let Some(w) = &m.web {
                    parts.push(format!("GET {} → {}", w.url, w.status));
                }
                if let Some(j) = &m.job {
                    parts.push(format!("job {} exits 0", j.component));
                }
                (format!("{}/{}", t.name, m.name), parts.join(", "))
            })
        })
        .collect();
    Some(RolloutView {
        namespace: key.namespace().to_string(),
        app: key.name().to_string(),
        waiting_for: crate::reconcile::rollout::waiting_for(state, key, &status, now),
        status,
        steps: rollout.steps.iter().map(|s| s.describe()).collect(),
        conditions,
        observed: None,
    })
}

/// Whether an object of namespace `ns` and app `app` is in a listing narrowed to
/// `namespace` and `only_app` (`None`: any).
fn listed(namespace: Option<&str>, only_app: Option<&str>, ns: &str, app: &str) -> bool {
    namespace.is_none_or(|x| x == ns) && only_app.is_none_or(|x| x == app)
}

/// Pods, narrowed to a namespace and an app.
pub fn pods(state: &State, namespace: Option<&str>, app: Option<&str>) -> Vec<Pod> {
    state
        .pods
        .values()
        .filter(|p| listed(namespace, app, &p.namespace, &p.app))
        .cloned()
        .collect()
}

/// Revisions, narrowed to a namespace and an app.
pub fn revisions(state: &State, namespace: Option<&str>, app: Option<&str>) -> Vec<Revision> {
    state
        .revisions
        .values()
        .flatten()
        .filter(|r| listed(namespace, app, &r.spec.namespace, &r.spec.name))
        .cloned()
        .collect()
}

/// Cron jobs in `namespace` (`None`: all), each with its next three run times and its
/// runs, newest first.
pub fn cron_jobs(state: &State, namespace: Option<&str>, now: u64) -> Vec<CronJobView> {
    state
        .cron
        .jobs
        .values()
        .filter(|j| namespace.is_none_or(|ns| j.spec.namespace == ns))
        .map(|j| {
            let next = match (
                j.spec.schedule.parse::<Schedule>(),
                time_zone(&j.spec.timezone),
            ) {
                (Ok(s), Ok(tz)) => {
                    let now = jiff::Timestamp::from_millisecond(now as i64)
                        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
                    s.between(now, jiff::Timestamp::MAX, &tz, 3)
                        .into_iter()
                        .map(|t| rfc3339_in(t, &tz))
                        .collect()
                }
                _ => Vec::new(),
            };
            let mut runs: Vec<_> = state
                .cron
                .runs
                .values()
                .filter(|r| r.namespace == j.spec.namespace && r.job == j.spec.name)
                .cloned()
                .collect();
            runs.sort_by_key(|r| std::cmp::Reverse(r.scheduled));
            CronJobView {
                job: j.clone(),
                next,
                runs,
            }
        })
        .collect()
}

/// What host `name` should run, and where every app's requests go.
pub fn host_view(state: &State, name: &str) -> HostView {
    let pods = state
        .pods
        .values()
        .filter(|p| p.host.as_deref() == Some(name))
        .filter_map(|p| {
            let rev = state.revision(&p.namespace, &p.app, p.revision)?;
            Some(Assignment {
                pod: p.clone(),
                spec: rev.spec.clone(),
                secrets: Default::default(),
                unrevealed: None,
            })
        })
        .collect();
    let runs = state
        .cron
        .runs
        .values()
        .filter(|r| r.phase == RunPhase::Running && r.host.as_deref() == Some(name))
        .filter_map(|r| {
            let job = state.cron.jobs.get(&r.job_key())?;
            Some(RunAssignment {
                run: r.clone(),
                spec: job.spec.clone(),
                component: job.component,
                secrets: Default::default(),
                unrevealed: None,
            })
        })
        .collect();
    HostView {
        version: state.version,
        host: state.hosts.get(name).cloned(),
        pods,
        routes: routes(state),
        runs,
        checks: checks(state, name),
        host_regions: state
            .hosts
            .values()
            .filter(|h| h.state == HostState::Ready)
            .map(|h| (h.info.address.clone(), h.info.region.clone()))
            .collect(),
        region_states: state
            .placements
            .iter()
            .filter_map(|(key, p)| {
                let placement = state.apps.get(key)?.spec.regions.as_ref()?;
                Some(RegionStateView {
                    app: key.clone(),
                    serving: p.serving(placement).map(str::to_string),
                    failed: p.failed.keys().cloned().collect(),
                    degraded: placement.degraded,
                })
            })
            .collect(),
        read_key: String::new(),
    }
}

/// The buckets each host may reach (scoped `namespace/bucket`): those granted to the
/// pods placed on it, to the cron job runs running on it and to the rollout checks
/// given to it. Everything else is another tenant's.
pub fn host_buckets(state: &State) -> HashMap<String, HashSet<String>> {
    let mut out: HashMap<String, HashSet<String>> = HashMap::new();
    let mut grant = |host: &str, namespace: &str, buckets: &[String]| {
        let set = out.entry(host.to_string()).or_default();
        for b in buckets {
            set.insert(ResourceKey::new(namespace, b).to_string());
        }
    };
    for p in state.pods.values() {
        if let (Some(host), Some(rev)) = (
            p.host.as_deref(),
            state.revision(&p.namespace, &p.app, p.revision),
        ) {
            grant(host, &p.namespace, &rev.spec.capabilities.key_value_buckets);
        }
    }
    for r in state.cron.runs.values() {
        if let (RunPhase::Running, Some(host), Some(job)) = (
            r.phase,
            r.host.as_deref(),
            state.cron.jobs.get(&r.job_key()),
        ) {
            grant(host, &r.namespace, &job.spec.key_value_buckets);
        }
    }
    for (key, r) in &state.rollouts {
        for c in &r.checks {
            if let Some(job) = check_job(state, key, r, c) {
                grant(&c.host, key.namespace(), &job.key_value_buckets);
            }
        }
    }
    out
}

/// What rollout check `c` of app `key` runs, if its metric still asks for it.
fn check_job<'a>(
    state: &'a State,
    key: &ResourceKey,
    r: &'a dabba_spec::rollout::RolloutStatus,
    c: &dabba_spec::rollout::PendingCheck,
) -> Option<&'a dabba_spec::analysis::JobCheck> {
    let run = r
        .analysis
        .iter()
        .find(|run| (run.kind, run.started) == (c.run, c.started))?;
    let m = run.metrics.get(c.metric as usize)?;
    state.metric_spec(key, &m.template, &m.metric)?.job.as_ref()
}

/// The rollout `job` checks given to host `name`.
fn checks(state: &State, name: &str) -> Vec<CheckAssignment> {
    let mut out = Vec::new();
    for (key, r) in &state.rollouts {
        let (Some(canary), Some(app)) = (r.canary, state.apps.get(key)) else {
            continue;
        };
        for c in r.checks.iter().filter(|c| c.host == name) {
            if let Some(job) = check_job(state, key, r, c) {
                out.push(CheckAssignment {
                    app: key.clone(),
                    canary,
                    route: app.spec.route.clone(),
                    run: c.run,
                    started: c.started,
                    metric: c.metric,
                    id: c.id.clone(),
                    job: job.clone(),
                });
            }
        }
    }
    out
}

/// Every app's route and the ingress addresses of the hosts running it: of any
/// revision for an app rolling over plainly, of the stable and canary revisions apart
/// for an app with a rollout. One pass over the pods, so ten thousand apps scaled to
/// zero cost no more than their routes.
pub fn routes(state: &State) -> Vec<RouteEntry> {
    type Hosts<'a> = BTreeSet<&'a str>;
    let mut any: HashMap<(&str, &str), Hosts> = HashMap::new();
    let mut by_revision: HashMap<(&str, &str, u64), Hosts> = HashMap::new();
    for p in state.pods.values().filter(|p| p.phase == PodPhase::Running) {
        if let Some(h) = p.host.as_ref().and_then(|h| state.hosts.get(h))
            && h.state == HostState::Ready
            && state
                .placements
                .get(&p.app_key())
                .is_none_or(|placed| placed.routes_to(&h.info.region))
        {
            let address = h.info.address.as_str();
            any.entry((p.namespace.as_str(), p.app.as_str()))
                .or_default()
                .insert(address);
            by_revision
                .entry((p.namespace.as_str(), p.app.as_str(), p.revision))
                .or_default()
                .insert(address);
        }
    }
    let list = |hosts: Option<&Hosts>| -> Vec<String> {
        hosts
            .map(|e| e.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default()
    };
    // Every Ready host runs an ingress, and a rate limit is shared between them.
    let ingresses = state
        .hosts
        .values()
        .filter(|h| h.state == HostState::Ready)
        .count() as u32;
    state
        .apps
        .iter()
        .map(|(key, a)| {
            let (ns, name) = (a.spec.namespace.as_str(), a.spec.name.as_str());
            let rollout = state.rollouts.get(key);
            let endpoints = match rollout {
                Some(r) => list(by_revision.get(&(ns, name, r.stable))),
                None => list(any.get(&(ns, name))),
            };
            let split = rollout.and_then(|r| {
                let canary = r.canary.filter(|_| !r.aborted)?;
                let settings = a.spec.rollout.clone().unwrap_or_default();
                let canary_endpoints = list(by_revision.get(&(ns, name, canary)));
                Some(Split {
                    canary,
                    // A weight applies once the canary runs somewhere: until then its
                    // share goes to the stable revision rather than failing.
                    weight: if canary_endpoints.is_empty() {
                        0
                    } else {
                        r.weight
                    },
                    canary_endpoints,
                    header_route: r.header_route.clone(),
                    sticky: settings.sticky,
                    preview: (r.strategy == Strategy::BlueGreen)
                        .then(|| a.spec.preview_route())
                        .flatten(),
                })
            });
            RouteEntry {
                namespace: ns.to_string(),
                app: name.to_string(),
                route: a.spec.route.clone(),
                endpoints,
                // An app placed across regions may be at zero in a region it must
                // serve from: requests wait there while it activates.
                autoscaled: a.spec.scale.is_some() || a.spec.regions.is_some(),
                serving: rollout.map(|r| r.stable),
                split,
                limit: a.spec.rate_limit.clone().map(|app| RouteLimit {
                    app,
                    ingresses: ingresses.max(1),
                }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use dabba_spec::resources::{Capacity, HostInfo};

    use super::*;
    use crate::command::{Command, PodChange};
    use crate::state::tests::{spec, with_blobs};

    #[test]
    fn a_host_sees_its_pods_and_every_route() {
        let mut s = with_blobs();
        for h in ["h1", "h2"] {
            s.apply(&Command::RegisterHost {
                info: HostInfo {
                    name: h.into(),
                    address: format!("http://{h}:8080"),
                    region: "r".into(),
                    zone: "z".into(),
                    labels: Default::default(),
                    capacity: Capacity {
                        memory: 1 << 30,
                        instances: 10,
                    },
                },
                at: 0,
                credential: None,
            });
        }
        s.apply(&Command::ApplyApp {
            spec: Box::new(spec("pay", "/pay", 2)),
            at: 1,
        });
        let pod = |n: &str, host: &str, phase| Pod {
            name: n.into(),
            namespace: "default".into(),
            app: "pay".into(),
            revision: 1,
            host: Some(host.into()),
            phase,
            reason: None,
            created_at: 1,
            region: None,
            phase_since: 1,
            restarts: 0,
            backoff: 0,
        };
        s.apply(&Command::Pods {
            changes: vec![
                PodChange::Create {
                    pod: pod("pay-r1-1", "h1", PodPhase::Running),
                },
                PodChange::Create {
                    pod: pod("pay-r1-2", "h2", PodPhase::Scheduled),
                },
            ],
            at: 2,
        });
        let v = host_view(&s, "h2");
        assert_eq!(v.pods.len(), 1);
        assert_eq!(v.pods[0].spec.route.prefix, "/pay");
        // Only hosts with a Running pod receive traffic.
        assert_eq!(v.routes[0].endpoints, vec!["http://h1:8080".to_string()]);
        let summary = &app_summaries(&s, None)[0];
        assert_eq!((summary.desired, summary.ready), (2, 1));
        assert!(app_summaries(&s, Some("other")).is_empty());
        let d = app_detail(&s, &ResourceKey::new("default", "pay")).unwrap();
        assert_eq!(d.pods.len(), 2);
        assert!(d.events.iter().any(|e| e.reason == "NewRevision"));
    }
}
