//! The `[scale]` section of an app: how the autoscaler sizes it (see
//! `spec/autoscaling.md`). Without it an app keeps the replica count it is given.
//!
//! ```toml
//! [scale]
//! min = 0                        # may be 0: scale to zero when idle
//! max = 20
//! target_concurrency = 10        # in-flight requests per pod (or target_rps)
//! target_utilization = 70        # percent of the target to aim for
//! stable_window = "60s"
//! panic_window = "6s"
//! panic_threshold = 200          # percent
//! scale_to_zero_after = "30s"
//!
//! [scale.behavior.up]
//! stabilization_window = "0s"
//! select = "Max"
//! policies = [{ type = "Percent", value = 200, period = "30s" }]
//!
//! [scale.behavior.down]
//! stabilization_window = "5m"
//! policies = [{ type = "Percent", value = 5, period = "10m" }]
//! ```
//!
//! Defaults follow Knative's KPA (target 100 in flight, 70%, 60 s / 6 s windows, 200%
//! panic threshold, 30 s grace) and Kubernetes HPA's default behaviour (up: no
//! stabilization, max of +100% and +4 pods per 15 s; down: −100% per 15 s, no stabilization, as Knative's
//! `scale-down-delay` of 0). Fields are whole numbers, so specs compare exactly.

use serde::{Deserialize, Serialize};

use crate::HumanDuration;

/// Knative's default concurrency target per pod.
pub const DEFAULT_TARGET_CONCURRENCY: u32 = 100;

/// The state an autoscaler is in (as `dabba get apps` shows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AutoscalerMode {
    /// Sizing by the stable window.
    Stable,
    /// Demand jumped past the panic threshold: sizing by the panic window, never down.
    Panic,
    /// No demand for the grace period: no pods.
    ScaledToZero,
}

impl std::fmt::Display for AutoscalerMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AutoscalerMode::Stable => "stable",
            AutoscalerMode::Panic => "panic",
            AutoscalerMode::ScaledToZero => "scaled-to-zero",
        })
    }
}
/// The most pods an autoscaled app may reach.
pub const MAX_SCALE: u32 = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scale {
    #[serde(default)]
    pub min: u32,
    #[serde(default = "default_max")]
    pub max: u32,
    /// In-flight requests per pod. The default target when neither is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_concurrency: Option<u32>,
    /// Requests per second per pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_rps: Option<u32>,
    /// Percent of the target to aim for.
    #[serde(default = "default_utilization")]
    pub target_utilization: u32,
    #[serde(default = "default_stable_window")]
    pub stable_window: HumanDuration,
    #[serde(default = "default_panic_window")]
    pub panic_window: HumanDuration,
    /// Percent: panic when the panic window wants this share of the current pods.
    #[serde(default = "default_panic_threshold")]
    pub panic_threshold: u32,
    #[serde(default = "default_grace")]
    pub scale_to_zero_after: HumanDuration,
    #[serde(default)]
    pub behavior: Behavior,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Behavior {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up: Option<Rules>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down: Option<Rules>,
}

/// Kubernetes HPA scaling rules for one direction. Fields left out take the default of
/// their direction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stabilization_window: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select: Option<Select>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<Vec<Policy>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(rename = "type")]
    pub kind: PolicyKind,
    pub value: u32,
    pub period: HumanDuration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyKind {
    Pods,
    Percent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Select {
    Max,
    Min,
    Disabled,
}

fn default_max() -> u32 {
    100
}
fn default_utilization() -> u32 {
    70
}
fn default_stable_window() -> HumanDuration {
    HumanDuration::from_secs(60)
}
fn default_panic_window() -> HumanDuration {
    HumanDuration::from_secs(6)
}
fn default_panic_threshold() -> u32 {
    200
}
fn default_grace() -> HumanDuration {
    HumanDuration::from_secs(30)
}

impl Default for Scale {
    fn default() -> Self {
        Scale {
            min: 0,
            max: default_max(),
            target_concurrency: None,
            target_rps: None,
            target_utilization: default_utilization(),
            stable_window: default_stable_window(),
            panic_window: default_panic_window(),
            panic_threshold: default_panic_threshold(),
            scale_to_zero_after: default_grace(),
            behavior: Behavior::default(),
        }
    }
}

/// What is wrong with a `[scale]` section: the field (under `scale.`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleError {
    pub field: &'static str,
    pub message: String,
}

impl Scale {
    /// Checks the section on its own terms.
    pub fn validate(&self) -> Result<(), ScaleError> {
        let err = |field, message: String| Err(ScaleError { field, message });
        if self.max == 0 || self.max > MAX_SCALE {
            return err("max", format!("must be between 1 and {MAX_SCALE}"));
        }
        if self.min > self.max {
            return err(
                "min",
                format!("{} is more than max ({})", self.min, self.max),
            );
        }
        match (self.target_concurrency, self.target_rps) {
            (Some(_), Some(_)) => {
                return err(
                    "target_rps",
                    "give target_concurrency or target_rps, not both".into(),
                );
            }
            (Some(0), _) => return err("target_concurrency", "must be at least 1".into()),
            (_, Some(0)) => return err("target_rps", "must be at least 1".into()),
            _ => {}
        }
        if !(1..=100).contains(&self.target_utilization) {
            return err(
                "target_utilization",
                "must be a percentage, 1 to 100".into(),
            );
        }
        if self.panic_threshold < 110 {
            return err(
                "panic_threshold",
                "must be at least 110 (percent of the current pods)".into(),
            );
        }
        let ms = |d: HumanDuration| d.get().as_millis();
        if ms(self.stable_window) < 1000 {
            return err("stable_window", "must be at least 1s".into());
        }
        if ms(self.panic_window) == 0 || ms(self.panic_window) > ms(self.stable_window) {
            return err(
                "panic_window",
                "must be more than 0s and at most the stable window".into(),
            );
        }
        for (field, rules) in [
            ("behavior.up.policies", &self.behavior.up),
            ("behavior.down.policies", &self.behavior.down),
        ] {
            let Some(policies) = rules.as_ref().and_then(|r| r.policies.as_ref()) else {
                continue;
            };
            let disabled = rules.as_ref().and_then(|r| r.select) == Some(Select::Disabled);
            if policies.is_empty() && !disabled {
                return err(
                    field,
                    "needs at least one policy unless select = \"Disabled\"".into(),
                );
            }
            if policies.iter().any(|p| p.value == 0 || ms(p.period) == 0) {
                return err(
                    field,
                    "a policy needs a value and a period above zero".into(),
                );
            }
        }
        Ok(())
    }

    /// The replica count a new or changed app starts from: `initial` within [min, max].
    pub fn clamp(&self, initial: u32) -> u32 {
        initial.clamp(self.min, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Scale {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn an_empty_section_takes_the_knative_defaults() {
        let s = parse("");
        assert_eq!(s, Scale::default());
        assert_eq!((s.min, s.max, s.target_utilization), (0, 100, 70));
        assert_eq!(s.stable_window.get().as_secs(), 60);
        assert_eq!(s.panic_window.get().as_secs(), 6);
        assert_eq!(s.scale_to_zero_after.get().as_secs(), 30);
        assert!(s.validate().is_ok());
    }

    #[test]
    fn behavior_policies_parse_in_kubernetes_terms() {
        let s = parse(
            r#"
max = 50
target_rps = 200
[behavior.up]
policies = [{ type = "Percent", value = 200, period = "30s" }]
[behavior.down]
stabilization_window = "10m"
select = "Min"
policies = [{ type = "Pods", value = 1, period = "1m" }]
"#,
        );
        let up = s.behavior.up.as_ref().unwrap();
        assert_eq!(up.policies.as_ref().unwrap()[0].kind, PolicyKind::Percent);
        let down = s.behavior.down.as_ref().unwrap();
        assert_eq!(down.select, Some(Select::Min));
        assert_eq!(down.stabilization_window.unwrap().get().as_secs(), 600);
        assert!(s.validate().is_ok());
    }

    #[test]
    fn nonsense_is_refused_with_the_field() {
        let cases = [
            ("min = 5\nmax = 2", "min"),
            ("max = 0", "max"),
            ("target_concurrency = 1\ntarget_rps = 1", "target_rps"),
            ("target_concurrency = 0", "target_concurrency"),
            ("target_utilization = 150", "target_utilization"),
            ("panic_threshold = 50", "panic_threshold"),
            ("panic_window = \"2m\"", "panic_window"),
            (
                "[behavior.up]\npolicies = [{ type = \"Pods\", value = 0, period = \"1s\" }]",
                "behavior.up.policies",
            ),
        ];
        for (text, field) in cases {
            let e = parse(text).validate().unwrap_err();
            assert_eq!(e.field, field, "{text}: {}", e.message);
        }
    }
}
