//! Analysis templates: how a rollout decides whether a revision is good, from numbers
//! dabba measures itself (`spec/rollouts.md`).
//!
//! ```toml
//! [[analysis]]
//! name = "success-rate"
//! [[analysis.metrics]]
//! name = "success-rate"
//! measure = "success_rate"        # or p95, requests, ...; or web = {...}; or job = {...}
//! interval = "10s"
//! count = 6
//! success_condition = "result >= 0.95"
//! failure_limit = 1
//! min_requests = 20
//! ```
//!
//! A measurement is taken every `interval` (after `initial_delay`), `count` times (the
//! background analysis of a canary: until the rollout ends). Each one is Successful,
//! Failed (its failure condition holds, or its success condition does not),
//! Inconclusive (fewer than `min_requests` requests were measured: **never a success
//! with no data**), or Error (it could not be taken). The metric fails when failures
//! exceed `failure_limit`, inconclusive results exceed `inconclusive_limit`, or errors
//! in a row exceed `consecutive_error_limit`; it succeeds when all `count` measurements
//! are in without that.

mod run;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use run::{AnalysisPhase, AnalysisRun, MEASUREMENTS_KEPT, Measurement, MetricRun, RunKind};

use crate::HumanDuration;
use crate::condition::Condition;
use crate::resources::valid_name;
use crate::validate::Invalid;

/// The longest interval between measurements (the leader keeps this much load).
pub const MAX_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// A manifest of analysis templates alone (`[[analysis]]` tables), applied to a
/// namespace so that any app's rollout there may name them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisManifest {
    pub analysis: Vec<AnalysisTemplate>,
}

impl AnalysisManifest {
    /// Parses and checks it; errors name the file, the line and the field, as an app
    /// manifest's do. `file` is used only in errors.
    pub fn parse(file: &str, text: &str) -> Result<AnalysisManifest, crate::ManifestError> {
        let manifest: AnalysisManifest = crate::manifest::from_toml(file, text)?;
        let located = |e: Invalid| crate::manifest::located(file, text, e);
        let mut names = std::collections::BTreeSet::new();
        for (i, t) in manifest.analysis.iter().enumerate() {
            t.validate(&format!("analysis[{i}]")).map_err(located)?;
            if !names.insert(&t.name) {
                return Err(located(Invalid::new(
                    format!("analysis[{i}].name"),
                    format!("a second analysis template named `{}`", t.name),
                )));
            }
        }
        Ok(manifest)
    }
}

/// A named set of metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisTemplate {
    pub name: String,
    pub metrics: Vec<MetricSpec>,
}

/// One metric of a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricSpec {
    pub name: String,
    /// A number dabba measures of the revision under analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measure: Option<Measure>,
    /// An HTTP check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<WebCheck>,
    /// A `wasi:cli` component run as the check (exit 0: success).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobCheck>,
    /// Between measurements. By default 10 s.
    #[serde(default = "default_interval")]
    pub interval: HumanDuration,
    /// Measurements to take; `None`: until the rollout ends (background analysis) or
    /// one (a step's analysis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Before the first measurement. By default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_condition: Option<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_condition: Option<Condition>,
    /// Failed measurements tolerated; one more fails the metric. By default 0.
    #[serde(default)]
    pub failure_limit: u32,
    /// Inconclusive measurements tolerated; one more makes the metric inconclusive
    /// (the rollout pauses for a person). By default 0.
    #[serde(default)]
    pub inconclusive_limit: u32,
    /// Errors in a row tolerated; one more fails the metric. By default 4.
    #[serde(default = "default_consecutive_errors")]
    pub consecutive_error_limit: u32,
    /// Fewer requests than this in a measurement's window make it inconclusive. By
    /// default 10. (Only for `measure`.)
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
}

fn default_interval() -> HumanDuration {
    HumanDuration::from_secs(10)
}

fn default_consecutive_errors() -> u32 {
    4
}

fn default_min_requests() -> u64 {
    10
}

/// What dabba measures of a revision over one interval, across all its pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// Answers that were not 5xx, over all requests (limit hits count as failures).
    SuccessRate,
    /// Latency percentiles, in milliseconds.
    P50,
    P95,
    P99,
    /// Answers that were 5xx.
    ErrorCount,
    /// Requests stopped by a limit (fuel, memory, time, queue).
    LimitHits,
    /// Fuel per request.
    FuelPerRequest,
    /// Requests answered.
    Requests,
}

/// An HTTP check the leader makes: a `GET` (or `method`) of `url` (plain `http://`;
/// `{{args.NAME}}` is replaced by the analysis's arguments, `{{ingress}}` by the ingress
/// of a host running the revision under analysis, `{{revision}}` by its number),
/// successful when the status is `status` and, if given, the number or boolean at
/// `json_pointer` makes the conditions hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebCheck {
    pub url: String,
    #[serde(default = "default_method")]
    pub method: String,
    /// Request headers (their values expanded as the URL is).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_status")]
    pub status: u16,
    /// A JSON pointer (`/data/ok`) to a number in the answer: the `result`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_pointer: Option<String>,
    /// How long the check may take. By default 10 s.
    #[serde(default = "default_interval")]
    pub timeout: HumanDuration,
}

fn default_method() -> String {
    "GET".into()
}

fn default_status() -> u16 {
    200
}

/// A check that is itself a component: run once per measurement, exit 0 succeeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobCheck {
    /// The component: a path relative to the manifest (resolved to a digest on apply).
    pub component: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_value_buckets: Vec<String>,
    /// The component's digest, once resolved (`dabba apply` fills it in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<crate::Digest>,
}

/// What a rollout names to run: templates, and the arguments they see.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisRef {
    pub templates: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, String>,
}

impl AnalysisTemplate {
    /// Checks a template on its own; errors name `analysis[i].metrics[j].field`.
    pub fn validate(&self, at: &str) -> Result<(), Invalid> {
        if !valid_name(&self.name) {
            return Err(Invalid::new(
                format!("{at}.name"),
                crate::validate::name_message("template name", &self.name),
            ));
        }
        if self.metrics.is_empty() {
            return Err(Invalid::new(
                format!("{at}.metrics"),
                "a template needs at least one metric",
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (j, m) in self.metrics.iter().enumerate() {
            let at = format!("{at}.metrics[{j}]");
            if !names.insert(&m.name) {
                return Err(Invalid::new(
                    format!("{at}.name"),
                    format!("a second metric named `{}`", m.name),
                ));
            }
            m.validate(&at)?;
        }
        Ok(())
    }
}

impl MetricSpec {
    fn validate(&self, at: &str) -> Result<(), Invalid> {
        if self.name.trim().is_empty() {
            return Err(Invalid::new(format!("{at}.name"), "a metric needs a name"));
        }
        let providers = [
            self.measure.is_some(),
            self.web.is_some(),
            self.job.is_some(),
        ];
        if providers.iter().filter(|p| **p).count() != 1 {
            return Err(Invalid::new(
                format!("{at}.measure"),
                "give exactly one of measure, web or job",
            ));
        }
        if self.interval.get().as_millis() < 1000 || self.interval.get() > MAX_INTERVAL {
            return Err(Invalid::new(
                format!("{at}.interval"),
                "must be between 1s and 30m",
            ));
        }
        if self.count == Some(0) {
            return Err(Invalid::new(format!("{at}.count"), "must be at least 1"));
        }
        if self.measure.is_some()
            && self.success_condition.is_none()
            && self.failure_condition.is_none()
        {
            return Err(Invalid::new(
                format!("{at}.success_condition"),
                "a measured metric needs a success_condition or a failure_condition",
            ));
        }
        if let Some(w) = &self.web {
            if !(w.url.starts_with("http://") || w.url.starts_with("{{ingress}}")) {
                return Err(Invalid::new(
                    format!("{at}.web.url"),
                    format!(
                        "`{}` is not an http:// URL, nor one starting with {{{{ingress}}}} (the checker speaks plain HTTP)",
                        w.url
                    ),
                ));
            }
            if !(100..=599).contains(&w.status) {
                return Err(Invalid::new(
                    format!("{at}.web.status"),
                    format!("{} is not an HTTP status", w.status),
                ));
            }
            if w.json_pointer
                .as_deref()
                .is_some_and(|p| !p.starts_with('/'))
            {
                return Err(Invalid::new(
                    format!("{at}.web.json_pointer"),
                    "a JSON pointer starts with `/`",
                ));
            }
        }
        if let Some(j) = &self.job
            && j.component.trim().is_empty()
        {
            return Err(Invalid::new(
                format!("{at}.job.component"),
                "must name a .wasm file, relative to this manifest",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(toml_text: &str) -> AnalysisTemplate {
        toml::from_str(toml_text).unwrap_or_else(|e| panic!("{e}"))
    }

    const RATE: &str = "name = \"success-rate\"\n[[metrics]]\nname = \"rate\"\nmeasure = \"success_rate\"\nsuccess_condition = \"result >= 0.95\"\n";

    #[test]
    fn a_template_reads_with_its_defaults() {
        let t = template(RATE);
        let m = &t.metrics[0];
        assert_eq!(m.measure, Some(Measure::SuccessRate));
        assert_eq!(m.interval.get().as_secs(), 10);
        assert_eq!(
            (m.failure_limit, m.consecutive_error_limit, m.min_requests),
            (0, 4, 10)
        );
        assert!(m.success_condition.as_ref().unwrap().holds(0.97));
        assert_eq!(t.validate("analysis[0]"), Ok(()));
    }

    #[test]
    fn a_manifest_of_templates_alone_reads_and_names_its_mistakes() {
        let text = format!("[[analysis]]\n{RATE}").replace("[[metrics]]", "[[analysis.metrics]]");
        let m = AnalysisManifest::parse("t.toml", &text).unwrap();
        assert_eq!(m.analysis[0].name, "success-rate");
        let twice = format!("{text}\n{text}");
        let e = AnalysisManifest::parse("t.toml", &twice).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("analysis[1].name"));
        assert_eq!(e.line, 9, "the second name: {e}");
        let bad = text.replace("result >= 0.95", "result >= lots");
        assert!(AnalysisManifest::parse("t.toml", &bad).is_err());
    }

    #[test]
    fn mistakes_name_their_field() {
        let field = |text: &str| template(text).validate("analysis[0]").unwrap_err().field;
        assert_eq!(
            field(&RATE.replace("measure = \"success_rate\"", "")),
            "analysis[0].metrics[0].measure"
        );
        assert_eq!(
            field(&format!("{RATE}web = {{ url = \"http://x\" }}\n")),
            "analysis[0].metrics[0].measure"
        );
        assert_eq!(
            field(&RATE.replace("success_condition = \"result >= 0.95\"", "")),
            "analysis[0].metrics[0].success_condition"
        );
        assert_eq!(
            field(&format!("{RATE}interval = \"500ms\"\n")),
            "analysis[0].metrics[0].interval"
        );
        assert_eq!(
            field(&RATE.replace("success-rate", "Bad")),
            "analysis[0].name"
        );
        let web = "name = \"smoke\"\n[[metrics]]\nname = \"up\"\nweb = { url = \"ftp://x\" }\n";
        assert_eq!(field(web), "analysis[0].metrics[0].web.url");
        // A condition that does not parse is refused when the manifest is read.
        assert!(toml::from_str::<AnalysisTemplate>(&RATE.replace(">= 0.95", "=> 0.95")).is_err());
    }
}
