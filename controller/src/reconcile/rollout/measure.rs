//! What a `measure` metric's `result` is, from the load a revision's pods reported over
//! a measurement's window. Pure, so the numbers an analysis decides by are tested
//! without a cluster.

use dabba_spec::analysis::{AnalysisPhase, Measure, Measurement, MetricSpec, WebCheck};
use dabba_spec::api::PodLoad;
use dabba_spec::latency::{self, Histogram};
use dabba_spec::resources::Millis;

/// One revision's load over a window, summed over its pods and heartbeats.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Window {
    pub requests: u64,
    /// Answers that were 5xx, abandoned requests, and limit hits.
    pub errors: u64,
    pub limit_hits: u64,
    pub latency: Histogram,
    pub fuel: u64,
}

impl Window {
    pub fn add(&mut self, load: &PodLoad) {
        self.requests += load.requests;
        self.errors += load.errors;
        self.limit_hits += load.limit_hits;
        latency::add(&mut self.latency, &load.latency);
        self.fuel += load.fuel;
    }

    /// The metric's `result` over this window (`None`: nothing to compute it from).
    pub fn value(&self, measure: Measure) -> Option<f64> {
        let per_request = |x: u64| (self.requests > 0).then(|| x as f64 / self.requests as f64);
        match measure {
            Measure::SuccessRate => per_request(
                self.requests
                    .saturating_sub(self.errors.max(self.limit_hits)),
            ),
            Measure::P50 => latency::quantile_ms(&self.latency, 0.50),
            Measure::P95 => latency::quantile_ms(&self.latency, 0.95),
            Measure::P99 => latency::quantile_ms(&self.latency, 0.99),
            Measure::ErrorCount => Some(self.errors as f64),
            Measure::LimitHits => Some(self.limit_hits as f64),
            // Only an app with a `fuel` limit is metered by fuel; without, there is no
            // value (not zero).
            Measure::FuelPerRequest if self.fuel == 0 => None,
            Measure::FuelPerRequest => per_request(self.fuel),
            Measure::Requests => Some(self.requests as f64),
        }
    }

    /// The measurement of `spec` (a `measure` metric) over this window, taken at `at`.
    pub fn measurement(&self, spec: &MetricSpec, measure: Measure, at: Millis) -> Measurement {
        let value = self.value(measure);
        let (phase, message) = spec.judge(value, Some(self.requests));
        Measurement {
            at,
            value,
            requests: Some(self.requests),
            phase,
            message,
        }
    }
}

/// A `web` check's measurement from the answer it got: Failed unless the status is the
/// expected one; then the value at `json_pointer` (a number, or a boolean as 1 or 0) is
/// the `result` the conditions judge, or without a pointer the check simply succeeded.
pub fn web_measurement(
    spec: &MetricSpec,
    check: &WebCheck,
    status: u16,
    body: &[u8],
    at: Millis,
) -> Measurement {
    let done = |phase, value, message: String| Measurement {
        at,
        value,
        requests: None,
        phase,
        message,
    };
    if status != check.status {
        return done(
            AnalysisPhase::Failed,
            Some(f64::from(status)),
            format!("{} answered {status}, expected {}", check.url, check.status),
        );
    }
    let Some(pointer) = &check.json_pointer else {
        let (phase, message) = spec.judge(Some(1.0), None);
        return done(phase, Some(1.0), message);
    };
    let value = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| match v.pointer(pointer)? {
            serde_json::Value::Number(n) => n.as_f64(),
            serde_json::Value::Bool(b) => Some(f64::from(u8::from(*b))),
            _ => None,
        });
    match value {
        None => done(
            AnalysisPhase::Error,
            None,
            format!("the answer has no number or boolean at {pointer}"),
        ),
        Some(v) => {
            let (phase, message) = spec.judge(Some(v), None);
            done(phase, Some(v), message)
        }
    }
}

/// A measurement that could not be taken.
pub fn error_measurement(at: Millis, message: String) -> Measurement {
    Measurement {
        at,
        value: None,
        requests: None,
        phase: AnalysisPhase::Error,
        message,
    }
}

/// `url` with `{{args.NAME}}` replaced by the analysis's arguments, `{{ingress}}` by an
/// ingress address (`http://host:port`) and `{{revision}}` by the revision under
/// analysis.
pub fn expand(
    url: &str,
    args: &std::collections::BTreeMap<String, String>,
    ingress: Option<&str>,
    revision: u64,
) -> String {
    let mut out = args.iter().fold(url.to_string(), |u, (k, v)| {
        u.replace(&format!("{{{{args.{k}}}}}"), v)
    });
    if let Some(i) = ingress {
        out = out.replace("{{ingress}}", i.trim_end_matches('/'));
    }
    out.replace("{{revision}}", &revision.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(requests: u64, errors: u64, limit_hits: u64, micros: u64) -> PodLoad {
        let mut l = PodLoad {
            requests,
            errors,
            limit_hits,
            fuel: requests * 1000,
            ..PodLoad::default()
        };
        l.latency[latency::bucket(micros)] = requests;
        l
    }

    fn metric(measure: &str, condition: &str) -> MetricSpec {
        toml::from_str(&format!(
            "name = \"m\"\nmeasure = \"{measure}\"\nsuccess_condition = \"{condition}\"\nmin_requests = 20\n"
        ))
        .unwrap()
    }

    #[test]
    fn success_rate_counts_errors_and_limit_hits_as_failures() {
        let mut w = Window::default();
        w.add(&load(70, 3, 0, 500));
        w.add(&load(30, 3, 3, 500)); // limit hits are among the errors
        assert_eq!(w.value(Measure::SuccessRate), Some(0.94));
        assert_eq!(w.value(Measure::ErrorCount), Some(6.0));
        assert_eq!(w.value(Measure::LimitHits), Some(3.0));
        assert_eq!(w.value(Measure::Requests), Some(100.0));
        assert_eq!(w.value(Measure::FuelPerRequest), Some(1000.0));
        let m = w.measurement(
            &metric("success_rate", "result >= 0.95"),
            Measure::SuccessRate,
            7,
        );
        assert_eq!(m.phase, AnalysisPhase::Failed, "{m:?}");
        assert_eq!((m.at, m.requests), (7, Some(100)));
    }

    #[test]
    fn latency_percentiles_come_from_the_summed_buckets() {
        let mut w = Window::default();
        w.add(&load(90, 0, 0, 3_000)); // under 4.096 ms
        w.add(&load(10, 0, 0, 3_000_000)); // under 4.194 s
        assert_eq!(w.value(Measure::P50), Some(4.096));
        assert_eq!(w.value(Measure::P95), Some(4194.304));
        let m = w.measurement(&metric("p95", "result <= 2000"), Measure::P95, 1);
        assert_eq!(m.phase, AnalysisPhase::Failed);
    }

    #[test]
    fn no_requests_is_inconclusive_never_a_success() {
        let w = Window::default();
        assert_eq!(w.value(Measure::SuccessRate), None);
        let mut unmetered = Window::default();
        unmetered.add(&PodLoad {
            requests: 50,
            ..PodLoad::default()
        });
        assert_eq!(
            unmetered.value(Measure::FuelPerRequest),
            None,
            "no fuel limit, no value"
        );
        assert_eq!(w.value(Measure::P95), None);
        for (measure, name) in [
            (Measure::SuccessRate, "success_rate"),
            (Measure::ErrorCount, "error_count"),
        ] {
            let m = w.measurement(&metric(name, "result >= 0"), measure, 1);
            assert_eq!(m.phase, AnalysisPhase::Inconclusive, "{name}: {m:?}");
        }
    }

    #[test]
    fn a_web_check_wants_its_status_then_judges_the_pointed_value() {
        let spec: MetricSpec = toml::from_str(
            "name = \"smoke\"\nweb = { url = \"http://x/{{args.path}}\", json_pointer = \"/checks/ok\" }\nsuccess_condition = \"result == 1\"\n",
        )
        .unwrap();
        let check = spec.web.clone().unwrap();
        let m = |status, body: &str| web_measurement(&spec, &check, status, body.as_bytes(), 1);
        assert_eq!(
            m(200, r#"{"checks":{"ok":true}}"#).phase,
            AnalysisPhase::Successful
        );
        assert_eq!(
            m(200, r#"{"checks":{"ok":false}}"#).phase,
            AnalysisPhase::Failed
        );
        assert_eq!(
            m(200, r#"{"checks":{"ok":1}}"#).phase,
            AnalysisPhase::Successful
        );
        assert_eq!(m(200, r#"{"checks":{}}"#).phase, AnalysisPhase::Error);
        assert_eq!(m(200, "not json").phase, AnalysisPhase::Error);
        let wrong = m(503, "");
        assert_eq!(wrong.phase, AnalysisPhase::Failed);
        assert!(wrong.message.contains("expected 200"), "{}", wrong.message);
        let args = [("path".to_string(), "health".to_string())].into();
        assert_eq!(expand(&check.url, &args, None, 3), "http://x/health");
        assert_eq!(
            expand(
                "{{ingress}}/p-preview/{{args.path}}?r={{revision}}",
                &args,
                Some("http://h1:8080/"),
                3
            ),
            "http://h1:8080/p-preview/health?r=3"
        );
    }
}
