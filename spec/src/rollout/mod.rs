//! `[rollout]`: how a new revision of an app takes over its traffic (`spec/rollouts.md`).
//!
//! ```toml
//! [rollout]
//! strategy = "canary"             # rolling (default) | canary | blue-green
//! scale_down_delay = "30s"
//! [[rollout.steps]]
//! set_weight = 5
//! [[rollout.steps]]
//! pause = "2m"                    # or pause = {} : until promoted
//! [[rollout.steps]]
//! analysis = { templates = ["success-rate"] }
//! [[rollout.steps]]
//! set_header_route = { name = "beta", match = [{ header = "x-beta", exact = "1" }] }
//! [[rollout.steps]]
//! set_canary_scale = { weight = 50 }
//! ```
//!
//! These are the types and their checks; what each step does is the rollout
//! reconciler's (`controller/src/reconcile/rollout.rs`).

mod status;

use serde::{Deserialize, Serialize};

pub use status::{
    PauseReason, Paused, PendingCheck, RolloutPhase, RolloutStatus, ScaleDown, Sizes,
};

use crate::HumanDuration;
use crate::analysis::AnalysisRef;
use crate::resources::valid_name;
use crate::validate::{Invalid, check_route_prefix};

/// The header that reaches a blue-green app's preview from its normal route.
pub const PREVIEW_HEADER: &str = "x-dabba-preview";

/// How a new revision takes over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Every request goes to the newest revision as soon as it has pods (as before
    /// rollouts existed).
    #[default]
    Rolling,
    /// The new revision takes traffic by weight, step by step, with analysis.
    Canary,
    /// The new revision runs beside the active one, reachable only as a preview, until
    /// it is promoted: then all traffic switches at once.
    BlueGreen,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    #[serde(default)]
    pub strategy: Strategy,
    /// The canary's steps, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
    /// Analysis that runs beside the canary's steps from `starting_step` on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<BackgroundAnalysis>,
    /// Pods a rolling update may run above the app's count in all (a number, or a percent
    /// of it). By default 100%: every new pod at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<Amount>,
    /// Pods a rolling update may have fewer than the app's count running. By default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<Amount>,
    /// How long the old revision keeps its pods after a promotion. By default 30 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_delay: Option<HumanDuration>,
    /// How long an aborted revision keeps its pods. By default 30 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_scale_down_delay: Option<HumanDuration>,
    /// A rollout making no progress for this long is Degraded. By default 10 min.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline: Option<HumanDuration>,
    /// Whether a rollout past its progress deadline is also aborted.
    #[serde(default)]
    pub progress_deadline_abort: bool,
    /// An undo to one of the last `revisions` revisions skips the steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_window: Option<RollbackWindow>,
    /// Keeps one user on one revision for the whole rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<Sticky>,
    /// Blue-green: the route prefix that reaches the preview.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_route: Option<String>,
    /// Blue-green: pods of the preview before promotion. By default the app's replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_replicas: Option<u32>,
    /// Blue-green: promote without a person once the preview is ready (and its
    /// pre-promotion analysis passed). By default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_promotion_enabled: Option<bool>,
    /// Blue-green: wait this many seconds before promoting on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_promotion_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_promotion_analysis: Option<AnalysisRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_promotion_analysis: Option<AnalysisRef>,
}

/// One step of a canary: a table with one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Send this percent of requests to the canary.
    SetWeight(u32),
    /// Wait: for a while (`"2m"`), or until promoted (`{}`).
    Pause(Pause),
    /// Run an analysis; the step ends when it succeeds.
    Analysis(AnalysisRef),
    /// Requests matching these headers go to the canary whatever the weight.
    SetHeaderRoute(HeaderRoute),
    /// Size the canary apart from its weight.
    SetCanaryScale(CanaryScale),
}

/// How long a pause lasts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Pause {
    For(HumanDuration),
    UntilPromoted(Indefinite),
}

/// `{}`: no bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Indefinite {}

/// An analysis beside the steps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackgroundAnalysis {
    #[serde(flatten)]
    pub analysis: AnalysisRef,
    /// The step (0-based) from which it runs. By default the first.
    #[serde(default)]
    pub starting_step: u32,
}

/// A header route: its name, and matches that must all hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderRoute {
    pub name: String,
    #[serde(rename = "match")]
    pub matches: Vec<HeaderMatch>,
}

/// One header and how its value must look: exactly one of `exact`, `prefix`, `regex`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    pub header: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// How many pods the canary runs: exactly one of a count, a percent of the app's
/// replicas, or as many as its traffic weight asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryScale {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub match_traffic_weight: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackWindow {
    pub revisions: u32,
}

/// What keeps a user on one revision: a request header, or a cookie dabba sets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sticky {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
}

/// A count, or a percent of one (`2` or `"25%"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Amount {
    Count(u32),
    Percent(#[serde(with = "crate::units::percent")] u32),
}

impl Amount {
    /// The count this amount is of `total` (percents round up, as Kubernetes' surge).
    pub fn of(self, total: u32) -> u32 {
        match self {
            Amount::Count(n) => n,
            Amount::Percent(p) => (u64::from(total) * u64::from(p)).div_ceil(100) as u32,
        }
    }
}

impl Rollout {
    /// By default 30 s.
    pub fn scale_down_delay(&self) -> HumanDuration {
        self.scale_down_delay
            .unwrap_or(HumanDuration::from_secs(30))
    }

    /// By default 30 s.
    pub fn abort_scale_down_delay(&self) -> HumanDuration {
        self.abort_scale_down_delay
            .unwrap_or(HumanDuration::from_secs(30))
    }

    /// By default 10 minutes.
    pub fn progress_deadline(&self) -> HumanDuration {
        self.progress_deadline
            .unwrap_or(HumanDuration::from_secs(600))
    }

    /// By default true.
    pub fn auto_promotion_enabled(&self) -> bool {
        self.auto_promotion_enabled.unwrap_or(true)
    }

    /// Every analysis this rollout names, with where (as a manifest field).
    pub fn analysis_refs(&self) -> Vec<(String, &AnalysisRef)> {
        let mut out = Vec::new();
        for (i, s) in self.steps.iter().enumerate() {
            if let Step::Analysis(a) = s {
                out.push((format!("rollout.steps[{i}].analysis"), a));
            }
        }
        if let Some(b) = &self.analysis {
            out.push(("rollout.analysis".into(), &b.analysis));
        }
        if let Some(a) = &self.pre_promotion_analysis {
            out.push(("rollout.pre_promotion_analysis".into(), a));
        }
        if let Some(a) = &self.post_promotion_analysis {
            out.push(("rollout.post_promotion_analysis".into(), a));
        }
        out
    }

    /// Checks the section on its own (the templates it names are checked with the app).
    pub fn validate(&self) -> Result<(), Invalid> {
        let canary_only = !self.steps.is_empty() || self.analysis.is_some();
        let blue_green_only = self.preview_route.is_some()
            || self.preview_replicas.is_some()
            || self.auto_promotion_enabled.is_some()
            || self.auto_promotion_seconds.is_some()
            || self.pre_promotion_analysis.is_some()
            || self.post_promotion_analysis.is_some();
        match self.strategy {
            Strategy::Rolling if canary_only || blue_green_only => {
                return Err(Invalid::new(
                    "rollout.strategy",
                    "steps, analysis and previews need strategy = \"canary\" or \"blue-green\"",
                ));
            }
            Strategy::Canary if blue_green_only => {
                return Err(Invalid::new(
                    "rollout.strategy",
                    "preview_route, preview_replicas, auto_promotion_* and pre/post-promotion analysis are for strategy = \"blue-green\"",
                ));
            }
            Strategy::BlueGreen if canary_only => {
                return Err(Invalid::new(
                    "rollout.strategy",
                    "steps and background analysis are for strategy = \"canary\"",
                ));
            }
            _ => {}
        }
        for (i, step) in self.steps.iter().enumerate() {
            step.validate(&format!("rollout.steps[{i}]"))?;
        }
        if let Some(b) = &self.analysis
            && b.starting_step as usize >= self.steps.len().max(1)
        {
            return Err(Invalid::new(
                "rollout.analysis.starting_step",
                format!(
                    "{} is past the last step ({} steps)",
                    b.starting_step,
                    self.steps.len()
                ),
            ));
        }
        for (field, a) in [
            ("max_surge", self.max_surge),
            ("max_unavailable", self.max_unavailable),
        ] {
            if let Some(Amount::Percent(p)) = a
                && p > 100
            {
                return Err(Invalid::new(
                    format!("rollout.{field}"),
                    "a percent is at most 100%",
                ));
            }
        }
        let zero = |a: Option<Amount>| matches!(a, Some(Amount::Count(0) | Amount::Percent(0)));
        if zero(self.max_surge) && self.max_unavailable.is_none_or(|a| zero(Some(a))) {
            return Err(Invalid::new(
                "rollout.max_surge",
                "max_surge and max_unavailable cannot both be 0: the update could not start",
            ));
        }
        if let Some(w) = self.rollback_window
            && w.revisions == 0
        {
            return Err(Invalid::new(
                "rollout.rollback_window.revisions",
                "must be at least 1",
            ));
        }
        if let Some(s) = &self.sticky {
            let names = [&s.header, &s.cookie];
            if names.iter().filter(|n| n.is_some()).count() != 1 {
                return Err(Invalid::new(
                    "rollout.sticky",
                    "give exactly one of header or cookie",
                ));
            }
            if names
                .iter()
                .flat_map(|n| n.as_deref())
                .any(|n| !valid_header_name(n))
            {
                return Err(Invalid::new(
                    "rollout.sticky",
                    "a header or cookie name is letters, digits, '-' and '_'",
                ));
            }
        }
        if let Some(p) = &self.preview_route {
            check_route_prefix(p).map_err(|m| Invalid::new("rollout.preview_route", m))?;
        }
        if self.auto_promotion_seconds.is_some() && !self.auto_promotion_enabled() {
            return Err(Invalid::new(
                "rollout.auto_promotion_seconds",
                "auto_promotion_seconds needs auto_promotion_enabled",
            ));
        }
        for (field, a) in self.analysis_refs() {
            if a.templates.is_empty() {
                return Err(Invalid::new(
                    format!("{field}.templates"),
                    "name at least one analysis template",
                ));
            }
        }
        Ok(())
    }
}

impl Step {
    /// The step as `rollout status` shows it: `set_weight 25`, `pause 2m`.
    pub fn describe(&self) -> String {
        match self {
            Step::SetWeight(w) => format!("set_weight {w}"),
            Step::Pause(Pause::For(d)) => format!("pause {d}"),
            Step::Pause(Pause::UntilPromoted(_)) => "pause (until promoted)".into(),
            Step::Analysis(a) => format!("analysis {}", a.templates.join(", ")),
            Step::SetHeaderRoute(h) => format!("set_header_route {}", h.name),
            Step::SetCanaryScale(s) => match (s.replicas, s.weight) {
                (Some(r), _) => format!("set_canary_scale {r} pods"),
                (_, Some(w)) => format!("set_canary_scale {w}%"),
                _ => "set_canary_scale match_traffic_weight".into(),
            },
        }
    }

    fn validate(&self, at: &str) -> Result<(), Invalid> {
        match self {
            Step::SetWeight(w) if *w > 100 => Err(Invalid::new(
                format!("{at}.set_weight"),
                format!("{w} is more than 100 (percent)"),
            )),
            Step::SetHeaderRoute(r) => r.validate(&format!("{at}.set_header_route")),
            Step::SetCanaryScale(s) => {
                let given = [
                    s.replicas.is_some(),
                    s.weight.is_some(),
                    s.match_traffic_weight,
                ];
                if given.iter().filter(|g| **g).count() != 1 {
                    return Err(Invalid::new(
                        format!("{at}.set_canary_scale"),
                        "give exactly one of replicas, weight or match_traffic_weight = true",
                    ));
                }
                if s.weight.is_some_and(|w| w > 100) {
                    return Err(Invalid::new(
                        format!("{at}.set_canary_scale.weight"),
                        "a weight is a percent: at most 100",
                    ));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

impl HeaderRoute {
    fn validate(&self, at: &str) -> Result<(), Invalid> {
        if !valid_name(&self.name) {
            return Err(Invalid::new(
                format!("{at}.name"),
                crate::validate::name_message("route name", &self.name),
            ));
        }
        if self.matches.is_empty() {
            return Err(Invalid::new(
                format!("{at}.match"),
                "a header route needs at least one match",
            ));
        }
        for (i, m) in self.matches.iter().enumerate() {
            let at = format!("{at}.match[{i}]");
            if !valid_header_name(&m.header) {
                return Err(Invalid::new(
                    format!("{at}.header"),
                    format!("`{}` is not a header name", m.header),
                ));
            }
            let given = [&m.exact, &m.prefix, &m.regex];
            if given.iter().filter(|g| g.is_some()).count() != 1 {
                return Err(Invalid::new(
                    at,
                    "give exactly one of exact, prefix or regex",
                ));
            }
            if let Some(r) = &m.regex
                && let Err(e) = regex::Regex::new(r)
            {
                return Err(Invalid::new(format!("{at}.regex"), e.to_string()));
            }
        }
        Ok(())
    }

    /// Whether a request with these headers (name, value; names in any case) takes
    /// the route: every match holds.
    pub fn matches<'a>(&self, header: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.matches.iter().all(|m| {
            let Some(v) = header(&m.header) else {
                return false;
            };
            match (&m.exact, &m.prefix, &m.regex) {
                (Some(e), _, _) => v == e,
                (_, Some(p), _) => v.starts_with(p.as_str()),
                (_, _, Some(r)) => regex::Regex::new(r).is_ok_and(|re| re.is_match(v)),
                _ => false,
            }
        })
    }
}

/// A token of HTTP: letters, digits, `-` and `_`.
fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(text: &str) -> Rollout {
        toml::from_str(text).unwrap_or_else(|e| panic!("{e}"))
    }

    const CANARY: &str = r#"
strategy = "canary"
[[steps]]
set_weight = 5
[[steps]]
pause = "2m"
[[steps]]
analysis = { templates = ["success-rate"], args = { service = "search" } }
[[steps]]
set_header_route = { name = "beta", match = [{ header = "x-beta", exact = "1" }, { header = "x-user", regex = "^u[0-9]+$" }] }
[[steps]]
set_canary_scale = { weight = 50 }
[[steps]]
pause = {}
"#;

    #[test]
    fn every_step_kind_reads() {
        let r = rollout(CANARY);
        assert_eq!(r.strategy, Strategy::Canary);
        assert_eq!(r.steps[0], Step::SetWeight(5));
        assert_eq!(
            r.steps[1],
            Step::Pause(Pause::For(HumanDuration::from_secs(120)))
        );
        assert!(
            matches!(&r.steps[2], Step::Analysis(a) if a.templates == ["success-rate"] && a.args["service"] == "search")
        );
        assert!(matches!(&r.steps[3], Step::SetHeaderRoute(h) if h.matches.len() == 2));
        assert!(matches!(
            r.steps[4],
            Step::SetCanaryScale(CanaryScale {
                weight: Some(50),
                ..
            })
        ));
        assert_eq!(r.steps[5], Step::Pause(Pause::UntilPromoted(Indefinite {})));
        assert_eq!(r.validate(), Ok(()));
        // Defaults, and a round trip through JSON (how it is stored).
        assert_eq!(r.scale_down_delay().get().as_secs(), 30);
        assert_eq!(r.progress_deadline().get().as_secs(), 600);
        let back: Rollout = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn header_routes_match_exact_prefix_and_regex() {
        let Step::SetHeaderRoute(h) = &rollout(CANARY).steps[3] else {
            unreachable!()
        };
        let headers = |beta: Option<&'static str>, user: Option<&'static str>| {
            move |name: &str| match name {
                "x-beta" => beta,
                "x-user" => user,
                _ => None,
            }
        };
        assert!(h.matches(headers(Some("1"), Some("u42"))));
        assert!(!h.matches(headers(Some("1"), Some("admin"))));
        assert!(!h.matches(headers(None, Some("u42"))));
        assert!(!h.matches(headers(Some("10"), Some("u42"))));
    }

    #[test]
    fn amounts_are_counts_or_percents() {
        #[derive(Deserialize)]
        struct A {
            a: Amount,
        }
        let a = |t: &str| toml::from_str::<A>(t).map(|a| a.a);
        assert_eq!(a("a = 2").unwrap(), Amount::Count(2));
        assert_eq!(a("a = \"25%\"").unwrap(), Amount::Percent(25));
        assert!(a("a = \"lots\"").is_err());
        assert!(a("a = \"150%\"").is_err());
        assert_eq!(Amount::Percent(25).of(10), 3);
        assert_eq!(Amount::Count(2).of(10), 2);
    }

    #[test]
    fn mistakes_name_their_field() {
        let field = |text: &str| rollout(text).validate().unwrap_err().field;
        assert_eq!(field("[[steps]]\nset_weight = 5\n"), "rollout.strategy");
        assert_eq!(
            field("strategy = \"canary\"\npreview_route = \"/p\"\n"),
            "rollout.strategy"
        );
        assert_eq!(
            field("strategy = \"blue-green\"\n[[steps]]\nset_weight = 5\n"),
            "rollout.strategy"
        );
        assert_eq!(
            field("strategy = \"canary\"\n[[steps]]\nset_weight = 105\n"),
            "rollout.steps[0].set_weight"
        );
        assert_eq!(
            field(
                "strategy = \"canary\"\n[[steps]]\nset_canary_scale = { replicas = 1, weight = 5 }\n"
            ),
            "rollout.steps[0].set_canary_scale"
        );
        assert_eq!(
            field(
                "strategy = \"canary\"\n[[steps]]\nset_header_route = { name = \"b\", match = [{ header = \"x\", regex = \"(\" }] }\n"
            ),
            "rollout.steps[0].set_header_route.match[0].regex"
        );
        assert_eq!(
            field(
                "strategy = \"canary\"\nanalysis = { templates = [\"a\"], starting_step = 3 }\n[[steps]]\nset_weight = 5\n"
            ),
            "rollout.analysis.starting_step"
        );
        assert_eq!(
            field("strategy = \"blue-green\"\npreview_route = \"preview\"\n"),
            "rollout.preview_route"
        );
        assert_eq!(
            field("strategy = \"canary\"\nsticky = { header = \"x-u\", cookie = \"c\" }\n"),
            "rollout.sticky"
        );
        assert!(toml::from_str::<Rollout>("[[steps]]\nset_weight = 5\npause = \"1m\"\n").is_err());
        assert!(toml::from_str::<Rollout>("[[steps]]\nwait = \"1m\"\n").is_err());
    }
}
