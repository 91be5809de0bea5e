//! What every node answers about itself: `GET /v1/healthz` and `GET /metrics`
//! (Prometheus text: API requests by method and status, this node's Raft state, and —
//! on the leader — each member's replication lag; and from the replicated state, so the
//! same on every node, each rollout's phase, step, weight and revisions and its
//! analysis's latest measurements — with, on the leader, the weight the ingresses
//! actually made).

use dabba_client::transport::whole;
use dabba_spec::api::Health;
use dabba_spec::resources::ResourceKey;
use dabba_spec::rollout::RolloutStatus;
use http::{Method, StatusCode};
use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use super::auth::Access;
use super::router::Router;
use super::{Answer, Api, Call, json};

pub(super) fn routes(r: &mut Router) {
    r.local(Method::GET, "/v1/healthz", Access::Open, |_, _| {
        Box::pin(async { json(200, &Health { ok: true }) })
    });
    r.local(Method::GET, "/metrics", Access::Open, handler!(metrics));
}

/// The API's own metrics.
pub(super) struct ApiMetrics {
    registry: Registry,
    requests: IntCounterVec,
    raft_gauges: IntGaugeVec,
    lag: IntGaugeVec,
    workload_keys: prometheus::IntGauge,
    /// Cron job attempts' writes, applied or refused by their fence.
    pub(super) fenced_writes: IntCounterVec,
    /// Audit entries committed, or dropped (spec/controller.md, "Audit").
    pub(super) audit_entries: IntCounterVec,
    rollout: RolloutMetrics,
}

/// Gauges of every rollout, set afresh from the state at each scrape.
struct RolloutMetrics {
    phase: IntGaugeVec,
    step: IntGaugeVec,
    weight: GaugeVec,
    revision: IntGaugeVec,
    measurement: GaugeVec,
    measurements: IntGaugeVec,
}

impl RolloutMetrics {
    fn new(registry: &Registry) -> RolloutMetrics {
        let int = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let float = |name: &str, help: &str, labels: &[&str]| {
            let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        RolloutMetrics {
            phase: int(
                "dabba_rollout_phase",
                "1 for each rollout's phase (Progressing, Paused, Healthy, Degraded), with its strategy.",
                &["namespace", "app", "strategy", "phase"],
            ),
            step: int(
                "dabba_rollout_step",
                "The canary step a rollout is at (1-based; steps + 1 once all are done).",
                &["namespace", "app"],
            ),
            weight: float(
                "dabba_rollout_weight_percent",
                "The canary's weight: as set, and (on the leader) as the ingresses made it over the last 10 s.",
                &["namespace", "app", "kind"],
            ),
            revision: int(
                "dabba_rollout_revision",
                "The stable and canary revisions of a rollout.",
                &["namespace", "app", "role"],
            ),
            measurement: float(
                "dabba_analysis_measurement",
                "The latest measured value of each metric of a rollout's newest analysis run of each kind.",
                &["namespace", "app", "run", "template", "metric"],
            ),
            measurements: int(
                "dabba_analysis_measurements",
                "Measurements of each metric of a rollout's newest analysis run of each kind, by outcome.",
                &["namespace", "app", "run", "template", "metric", "phase"],
            ),
        }
    }

    fn set(&self, api: &Api) {
        for g in [&self.phase, &self.step, &self.revision, &self.measurements] {
            g.reset();
        }
        self.weight.reset();
        self.measurement.reset();
        let rollouts: Vec<(ResourceKey, RolloutStatus)> = api.node.shared.read(|s| {
            s.rollouts
                .iter()
                .map(|(k, r)| (k.clone(), r.clone()))
                .collect()
        });
        for (key, r) in rollouts {
            let (ns, app) = (key.namespace(), key.name());
            let strategy = format!("{:?}", r.strategy);
            self.phase
                .with_label_values(&[ns, app, &strategy, &format!("{:?}", r.phase)])
                .set(1);
            self.step
                .with_label_values(&[ns, app])
                .set(i64::from(r.step) + 1);
            self.weight
                .with_label_values(&[ns, app, "set"])
                .set(f64::from(r.weight));
            self.revision
                .with_label_values(&[ns, app, "stable"])
                .set(r.stable as i64);
            if let Some(c) = r.canary {
                self.revision
                    .with_label_values(&[ns, app, "canary"])
                    .set(c as i64);
                if let Some((observed, _)) = api.node.observed_split(&key, r.stable, c) {
                    self.weight
                        .with_label_values(&[ns, app, "observed"])
                        .set(observed);
                }
            }
            let mut kinds = std::collections::BTreeSet::new();
            for run in r.analysis.iter().rev() {
                let kind = run.kind.label();
                if !kinds.insert(kind) {
                    continue;
                }
                for m in &run.metrics {
                    let labels = [ns, app, kind, m.template.as_str(), m.metric.as_str()];
                    if let Some(v) = m.measurements.last().and_then(|x| x.value) {
                        self.measurement.with_label_values(&labels).set(v);
                    }
                    for (phase, n) in [
                        ("Successful", m.successes),
                        ("Failed", m.failures),
                        ("Inconclusive", m.inconclusive),
                        ("Error", m.errors),
                    ] {
                        self.measurements
                            .with_label_values(&[ns, app, kind, &m.template, &m.metric, phase])
                            .set(i64::from(n));
                    }
                }
            }
        }
    }
}

impl ApiMetrics {
    pub(super) fn new() -> ApiMetrics {
        let requests = IntCounterVec::new(
            Opts::new(
                "dabba_api_requests_total",
                "API requests, by method and status code.",
            ),
            &["method", "code"],
        )
        .expect("valid metric");
        let raft_gauges = IntGaugeVec::new(
            Opts::new(
                "dabba_raft_state",
                "Raft state of this controller: term, leader id, last log, applied and snapshot index, snapshots installed from the leader.",
            ),
            &["field"],
        )
        .expect("valid metric");
        let lag = IntGaugeVec::new(
            Opts::new(
                "dabba_raft_follower_lag_entries",
                "Entries each member is behind the leader.",
            ),
            &["member"],
        )
        .expect("valid metric");
        let workload_keys = prometheus::IntGauge::new(
            "dabba_workload_keys",
            "Keys in this controller's workload store (every bucket).",
        )
        .expect("valid metric");
        let fenced_writes = IntCounterVec::new(
            Opts::new(
                "dabba_kv_fenced_writes_total",
                "Key-value writes of cron job attempts this controller proposed, by result: \
                 applied, or refused because the attempt was no longer the one running.",
            ),
            &["result"],
        )
        .expect("valid metric");
        let audit_entries = IntCounterVec::new(
            Opts::new(
                "dabba_audit_entries_total",
                "Audit entries this controller recorded and saw committed, or dropped (more \
                 refusals a second than it records, or more held than it keeps while no \
                 leader takes them).",
            ),
            &["result"],
        )
        .expect("valid metric");
        let registry = Registry::new();
        for m in [
            Box::new(fenced_writes.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(audit_entries.clone()),
            Box::new(requests.clone()),
            Box::new(raft_gauges.clone()),
            Box::new(lag.clone()),
            Box::new(workload_keys.clone()),
        ] {
            registry.register(m).expect("unique metric");
        }
        let rollout = RolloutMetrics::new(&registry);
        ApiMetrics {
            registry,
            requests,
            raft_gauges,
            lag,
            workload_keys,
            fenced_writes,
            audit_entries,
            rollout,
        }
    }

    /// Counts one answered request.
    pub(super) fn count(&self, method: &Method, status: StatusCode) {
        self.requests
            .with_label_values(&[method.as_str(), status.as_str()])
            .inc();
    }
}

async fn metrics(api: &Api, _: Call) -> Answer {
    let m = api.node.raft.metrics().borrow().clone();
    let gauges = &api.metrics;
    let set = |f: &str, v: u64| gauges.raft_gauges.with_label_values(&[f]).set(v as i64);
    set("term", m.current_term);
    set("leader", m.current_leader.unwrap_or(0));
    set("last_log_index", m.last_log_index.unwrap_or(0));
    set("applied_index", m.last_applied.map_or(0, |l| l.index));
    set("snapshot_index", m.snapshot.map_or(0, |l| l.index));
    set("snapshots_installed", api.node.shared.snapshots_installed());
    if let Ok(view) = api.node.shared.workload() {
        gauges
            .workload_keys
            .set(view.keys_held().unwrap_or(0) as i64);
    }
    set(
        "is_leader",
        u64::from(m.current_leader == Some(api.node.id)),
    );
    for member in api.node.status().members {
        if let Some(lag) = member.lag {
            gauges
                .lag
                .with_label_values(&[&member.id.to_string()])
                .set(lag as i64);
        }
    }
    gauges.rollout.set(api);
    let mut out = Vec::new();
    prometheus::Encoder::encode(
        &prometheus::TextEncoder::new(),
        &gauges.registry.gather(),
        &mut out,
    )
    .expect("encoding to a Vec");
    Ok(http::Response::builder()
        .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")
        .body(whole(out))
        .expect("valid response"))
}
