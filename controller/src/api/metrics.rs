//! What every node answers about itself: `GET /v1/healthz` and `GET /metrics`
//! (Prometheus text: API requests by method and status, this node's Raft state, and —
//! on the leader — each member's replication lag).

use bytes::Bytes;
use dabba_spec::api::Health;
use http::{Method, StatusCode};
use http_body_util::Full;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

use super::router::Router;
use super::{Answer, Api, Call, json};

pub(super) fn routes(r: &mut Router) {
    r.local(Method::GET, "/v1/healthz", |_, _| {
        Box::pin(async { json(200, &Health { ok: true }) })
    });
    r.local(Method::GET, "/metrics", handler!(metrics));
}

/// The API's own metrics.
pub(super) struct ApiMetrics {
    registry: Registry,
    requests: IntCounterVec,
    raft_gauges: IntGaugeVec,
    lag: IntGaugeVec,
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
                "Raft state of this controller: term, leader id, last log, commit and applied index.",
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
        let registry = Registry::new();
        for m in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(raft_gauges.clone()),
            Box::new(lag.clone()),
        ] {
            registry.register(m).expect("unique metric");
        }
        ApiMetrics {
            registry,
            requests,
            raft_gauges,
            lag,
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
    let mut out = Vec::new();
    prometheus::Encoder::encode(
        &prometheus::TextEncoder::new(),
        &gauges.registry.gather(),
        &mut out,
    )
    .expect("encoding to a Vec");
    Ok(http::Response::builder()
        .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")
        .body(Full::new(Bytes::from(out)))
        .expect("valid response"))
}
