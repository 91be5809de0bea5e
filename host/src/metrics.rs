//! Prometheus metrics of a host, in one registry served as text on `/metrics`.
//!
//! Names follow Prometheus conventions: `dabba_` prefix, base units, `_total` for
//! counters, `_seconds` for durations. Per-app series are resolved once when an app is
//! loaded ([`AppMetrics`]) so the request path only increments atomics.

use dabba_spec::LimitKind;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    limit_hits: IntCounterVec,
    fuel: IntCounterVec,
    instantiations: IntCounterVec,
    output_dropped: IntCounterVec,
    job_runs: IntCounterVec,
    loads: IntCounterVec,
}

/// Status classes a request can end in.
pub const CODE_CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

/// One app's series, resolved up front.
pub struct AppMetrics {
    requests: [IntCounter; 4],
    pub duration: Histogram,
    limit_hits: Vec<(LimitKind, IntCounter)>,
    pub fuel: IntCounter,
    pub instantiations: IntCounter,
    pub output_dropped: IntCounter,
    job_ok: IntCounter,
    job_failed: IntCounter,
}

impl AppMetrics {
    pub fn request(&self, status: u16) {
        let class = match status {
            200..=299 => 0,
            300..=399 => 1,
            400..=499 => 2,
            _ => 3,
        };
        self.requests[class].inc();
    }

    pub fn limit_hit(&self, kind: LimitKind) {
        if let Some((_, c)) = self.limit_hits.iter().find(|(k, _)| *k == kind) {
            c.inc();
        }
    }

    pub fn job_run(&self, ok: bool) {
        if ok { &self.job_ok } else { &self.job_failed }.inc();
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let requests = counter(
            "dabba_requests_total",
            "HTTP requests answered, by app, revision and status class.",
            &["app", "revision", "code"],
        );
        let limit_hits = counter(
            "dabba_limit_hits_total",
            "Requests or runs stopped by a limit, by app and limit.",
            &["app", "limit"],
        );
        let fuel = counter(
            "dabba_fuel_consumed_total",
            "Fuel consumed by guests with a fuel budget.",
            &["app"],
        );
        let instantiations = counter(
            "dabba_instantiations_total",
            "Guest instances created (one per request or run).",
            &["app"],
        );
        let output_dropped = counter(
            "dabba_guest_output_dropped_bytes_total",
            "Guest stdout/stderr bytes dropped past the output cap.",
            &["app"],
        );
        let job_runs = counter(
            "dabba_job_runs_total",
            "Job runs, by app and result.",
            &["app", "result"],
        );
        let loads = counter(
            "dabba_component_loads_total",
            "Components loaded, by whether the precompiled artifact was cached.",
            &["source"],
        );
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "dabba_request_duration_seconds",
                "Time from a request reaching the function to its response being complete.",
            )
            .buckets(vec![
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["app", "revision"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(duration.clone()))
            .expect("unique metric");
        Metrics {
            registry,
            requests,
            duration,
            limit_hits,
            fuel,
            instantiations,
            output_dropped,
            job_runs,
            loads,
        }
    }

    /// The series of one app (and revision: empty outside a cluster).
    pub fn app(&self, app: &str, revision: &str) -> AppMetrics {
        AppMetrics {
            requests: CODE_CLASSES.map(|c| self.requests.with_label_values(&[app, revision, c])),
            duration: self.duration.with_label_values(&[app, revision]),
            limit_hits: LimitKind::ALL
                .iter()
                .map(|k| (*k, self.limit_hits.with_label_values(&[app, k.as_str()])))
                .collect(),
            fuel: self.fuel.with_label_values(&[app]),
            instantiations: self.instantiations.with_label_values(&[app]),
            output_dropped: self.output_dropped.with_label_values(&[app]),
            job_ok: self.job_runs.with_label_values(&[app, "succeeded"]),
            job_failed: self.job_runs.with_label_values(&[app, "failed"]),
        }
    }

    pub fn component_loaded(&self, cached: bool) {
        self.loads
            .with_label_values(&[if cached { "cache" } else { "compile" }])
            .inc();
    }

    /// The registry, for other parts of the process to add their own metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Everything, in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding metrics to a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_series_show_up_in_the_text_format() {
        let m = Metrics::new();
        let a = m.app("payment", "3");
        a.request(201);
        a.request(503);
        a.limit_hit(LimitKind::Fuel);
        let text = m.render();
        assert!(
            text.contains(r#"dabba_requests_total{app="payment",code="2xx",revision="3"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"dabba_requests_total{app="payment",code="5xx",revision="3"} 1"#));
        assert!(text.contains(r#"dabba_limit_hits_total{app="payment",limit="fuel"} 1"#));
    }
}
