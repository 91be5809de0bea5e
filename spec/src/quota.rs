//! Namespace quotas and limit ranges (Kubernetes' `ResourceQuota` and `LimitRange`):
//! how much one namespace may hold, and the defaults and bounds of each app's
//! `[limits]`. Both are checked when an app or cron job is applied or scaled; what is
//! already running is never stopped by a new quota.
//!
//! ```toml
//! [namespace]
//! name = "shop"
//!
//! [quota]                      # every entry optional
//! apps = 10
//! pods = 40                    # an autoscaled app counts its [scale] max
//! cron_jobs = 5
//! memory = "64Gi"              # per pod: memory x max_concurrency (its ceiling)
//! fuel_per_second = 2_000_000_000   # per app: fuel x rate_limit.requests_per_second
//!
//! [limit_range.default]        # filled into an app's [limits] where it says nothing
//! memory = "64Mi"
//! timeout = "5s"
//!
//! [limit_range.max]            # min too: memory, fuel, timeout, max_concurrency
//! memory = "256Mi"
//! ```
//!
//! `fuel_per_second` bounds a namespace's deterministic CPU: an app counts its fuel per
//! request times the requests a second its `[rate_limit]` lets through, so with this
//! quota set every app must declare both (an app without them could use any amount).

use serde::{Deserialize, Serialize};

use crate::cronjob::CronSection;
use crate::limits::{LimitOverrides, Limits, WorkloadKind};
use crate::manifest::{ManifestError, from_toml};
use crate::resources::{AppSpec, valid_name};
use crate::units::ByteSize;
use crate::validate::Invalid;

/// How much a namespace may hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron_jobs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel_per_second: Option<u64>,
}

/// The defaults and bounds of each app's (and cron job's) `[limits]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitRange {
    #[serde(default)]
    pub default: LimitOverrides,
    #[serde(default)]
    pub min: LimitOverrides,
    #[serde(default)]
    pub max: LimitOverrides,
}

/// A namespace's quota and limit range, as applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespacePolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_range: Option<LimitRange>,
}

/// `GET /v1/namespaces/{ns}/policy`: the policy and what the namespace uses of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceView {
    pub namespace: String,
    pub policy: NamespacePolicy,
    pub used: Usage,
}

/// `dabba apply -f` of a `[namespace]` manifest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceManifest {
    pub namespace: NamespaceSection,
    #[serde(default)]
    pub quota: Option<Quota>,
    #[serde(default)]
    pub limit_range: Option<LimitRange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceSection {
    pub name: String,
}

impl NamespaceManifest {
    pub fn parse(file: &str, text: &str) -> Result<NamespaceManifest, ManifestError> {
        let m: NamespaceManifest = from_toml(file, text)?;
        let located = |e: Invalid| crate::manifest::located(file, text, e);
        if !valid_name(&m.namespace.name) {
            return Err(located(Invalid::new(
                "namespace.name",
                format!("`{}` is not a valid namespace", m.namespace.name),
            )));
        }
        m.policy().validate().map_err(located)?;
        Ok(m)
    }

    pub fn policy(&self) -> NamespacePolicy {
        NamespacePolicy {
            quota: self.quota.clone(),
            limit_range: self.limit_range.clone(),
        }
    }
}

impl NamespacePolicy {
    /// Checks that the limit range can be met: its bounds are valid limits, min ≤ max,
    /// and the defaults lie within them.
    pub fn validate(&self) -> Result<(), Invalid> {
        let Some(range) = &self.limit_range else {
            return Ok(());
        };
        for (name, o) in [
            ("default", &range.default),
            ("min", &range.min),
            ("max", &range.max),
        ] {
            // Each is checked as limits of its own (nothing zero, memory within a slot).
            o.resolve(WorkloadKind::Http)
                .map_err(|e| Invalid::new(format!("limit_range.{name}"), e.to_string()))?;
        }
        for (field, min, max) in bounded(&range.min)
            .zip(bounded(&range.max))
            .filter_map(|((field, min), (_, max))| Some((field, min?, max?)))
        {
            if min > max {
                return Err(Invalid::new(
                    format!("limit_range.min.{field}"),
                    format!("is more than limit_range.max.{field}"),
                ));
            }
        }
        for (field, value) in bounded(&range.default) {
            if let Some(v) = value {
                range
                    .bounds(field, Some(v))
                    .map_err(|m| Invalid::new(format!("limit_range.default.{field}"), m))?;
            }
        }
        Ok(())
    }
}

/// The limits a range bounds, as numbers (bytes, fuel, milliseconds, instances).
fn bounded(o: &LimitOverrides) -> impl Iterator<Item = (&'static str, Option<u64>)> {
    [
        ("memory", o.memory.map(ByteSize::as_u64)),
        ("fuel", o.fuel),
        ("timeout", o.timeout.map(|t| t.get().as_millis() as u64)),
        ("max_concurrency", o.max_concurrency.map(u64::from)),
    ]
    .into_iter()
}

fn resolved(l: &Limits) -> impl Iterator<Item = (&'static str, Option<u64>)> {
    [
        ("memory", Some(l.memory.as_u64())),
        ("fuel", l.fuel),
        ("timeout", Some(l.timeout.get().as_millis() as u64)),
        ("max_concurrency", Some(u64::from(l.max_concurrency))),
    ]
    .into_iter()
}

fn shown(field: &str, v: u64) -> String {
    match field {
        "memory" => ByteSize::bytes(v).to_string(),
        "timeout" => crate::units::HumanDuration::from_millis(v).to_string(),
        _ => v.to_string(),
    }
}

impl LimitRange {
    /// `limits` with the range's defaults where they say nothing.
    pub fn defaulted(&self, limits: &LimitOverrides) -> LimitOverrides {
        let d = &self.default;
        LimitOverrides {
            fuel: limits.fuel.or(d.fuel),
            memory: limits.memory.or(d.memory),
            timeout: limits.timeout.or(d.timeout),
            max_request_body: limits.max_request_body.or(d.max_request_body),
            max_response_body: limits.max_response_body.or(d.max_response_body),
            max_concurrency: limits.max_concurrency.or(d.max_concurrency),
            queue_depth: limits.queue_depth.or(d.queue_depth),
            queue_timeout: limits.queue_timeout.or(d.queue_timeout),
            max_output: limits.max_output.or(d.max_output),
        }
    }

    /// Checks resolved limits (defaults filled) against the range; the error names the
    /// field (`limits.memory`) and says by how much it is out.
    pub fn check(&self, limits: &Limits) -> Result<(), Invalid> {
        for (field, value) in resolved(limits) {
            self.bounds(field, value)
                .map_err(|m| Invalid::new(format!("limits.{field}"), m))?;
        }
        Ok(())
    }

    fn bounds(&self, field: &str, value: Option<u64>) -> Result<(), String> {
        let find = |o: &LimitOverrides| bounded(o).find(|(f, _)| *f == field).and_then(|(_, v)| v);
        if let Some(max) = find(&self.max) {
            match value {
                None => {
                    return Err(format!(
                        "is unbounded, but the namespace's limit range allows at most {}",
                        shown(field, max)
                    ));
                }
                Some(v) if v > max => {
                    return Err(format!(
                        "{} is more than the namespace's limit range allows ({}; over by {})",
                        shown(field, v),
                        shown(field, max),
                        shown(field, v - max)
                    ));
                }
                _ => {}
            }
        }
        if let (Some(min), Some(v)) = (find(&self.min), value)
            && v < min
        {
            return Err(format!(
                "{} is less than the namespace's limit range allows ({})",
                shown(field, v),
                shown(field, min)
            ));
        }
        Ok(())
    }
}

/// What apps and cron jobs use of a quota.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub apps: u64,
    pub pods: u64,
    pub cron_jobs: u64,
    /// Bytes.
    pub memory: u64,
    /// `None`: some app could use any amount (no fuel limit or no rate limit).
    pub fuel_per_second: Option<u64>,
}

impl std::ops::Add for Usage {
    type Output = Usage;

    fn add(self, o: Usage) -> Usage {
        Usage {
            apps: self.apps + o.apps,
            pods: self.pods + o.pods,
            cron_jobs: self.cron_jobs + o.cron_jobs,
            memory: self.memory.saturating_add(o.memory),
            fuel_per_second: self
                .fuel_per_second
                .zip(o.fuel_per_second)
                .map(|(a, b)| a.saturating_add(b)),
        }
    }
}

impl std::iter::Sum for Usage {
    fn sum<I: Iterator<Item = Usage>>(iter: I) -> Usage {
        iter.fold(Usage::none(), |a, b| a + b)
    }
}

impl Usage {
    /// Nothing used.
    pub fn none() -> Usage {
        Usage {
            fuel_per_second: Some(0),
            ..Usage::default()
        }
    }

    /// What an app counts: itself, its pods (an autoscaled app: its `[scale]` max),
    /// each pod's memory ceiling, and its fuel a second.
    pub fn of_app(spec: &AppSpec) -> Usage {
        let pods = u64::from(spec.scale.as_ref().map_or(spec.replicas, |s| s.max));
        let limits = spec
            .limits
            .resolve(WorkloadKind::Http)
            .unwrap_or_else(|_| Limits::defaults(WorkloadKind::Http));
        let per_pod = limits
            .memory
            .as_u64()
            .saturating_mul(u64::from(limits.max_concurrency));
        let rate = spec.rate_limit.as_ref().map(|r| r.requests_per_second);
        Usage {
            apps: 1,
            pods,
            cron_jobs: 0,
            memory: pods.saturating_mul(per_pod),
            fuel_per_second: limits
                .fuel
                .zip(rate)
                .map(|(fuel, rps)| fuel.saturating_mul(u64::from(rps))),
        }
    }

    /// What a cron job counts: itself (its runs are bounded by its limits and
    /// schedule, not counted here).
    pub fn of_cron_job(_: &CronSection) -> Usage {
        Usage {
            cron_jobs: 1,
            ..Usage::none()
        }
    }
}

impl Quota {
    /// Checks `used` (everything in the namespace, the change included) against the
    /// quota. `adding` is what the change adds, to say by how much it is over.
    pub fn check(&self, used: &Usage, adding: &Usage) -> Result<(), String> {
        let over = |what: &str, hard: u64, used: u64, adding: u64, show: &dyn Fn(u64) -> String| {
            format!(
                "the namespace's quota allows {what} {}; this change makes it {} (it adds {}; \
                 {} over)",
                show(hard),
                show(used),
                show(adding),
                show(used - hard)
            )
        };
        let plain = |n: u64| n.to_string();
        let bytes = |n: u64| ByteSize::bytes(n).to_string();
        for (what, hard, used, adding, show) in [
            (
                "apps",
                self.apps,
                used.apps,
                adding.apps,
                &plain as &dyn Fn(u64) -> String,
            ),
            ("pods", self.pods, used.pods, adding.pods, &plain),
            (
                "cron_jobs",
                self.cron_jobs,
                used.cron_jobs,
                adding.cron_jobs,
                &plain,
            ),
            (
                "memory",
                self.memory.map(ByteSize::as_u64),
                used.memory,
                adding.memory,
                &bytes,
            ),
        ] {
            if let Some(hard) = hard
                && used > hard
                && adding > 0
            {
                return Err(over(what, hard, used, adding, show));
            }
        }
        if let Some(hard) = self.fuel_per_second {
            match (used.fuel_per_second, adding.fuel_per_second) {
                (_, None) => {
                    return Err(format!(
                        "the namespace's quota allows fuel_per_second {hard}: an app there \
                         needs [limits] fuel and [rate_limit] requests_per_second (fuel x \
                         requests a second is what it counts)"
                    ));
                }
                (Some(used), Some(adding)) if used > hard && adding > 0 => {
                    return Err(over("fuel_per_second", hard, used, adding, &plain));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(replicas: u32, limits: &str, rate: Option<u32>) -> AppSpec {
        let mut text = format!(
            "[app]\nname = \"a\"\ncomponent = \"a.wasm\"\nroute = \"/a\"\nreplicas = {replicas}\n\n[limits]\n{limits}\n"
        );
        if let Some(r) = rate {
            text.push_str(&format!("\n[rate_limit]\nrequests_per_second = {r}\n"));
        }
        crate::Manifest::parse("a.toml", &text)
            .unwrap()
            .to_spec(crate::Digest::from_bytes([0; 32]))
    }

    #[test]
    fn an_app_counts_its_pods_ceiling_and_fuel_a_second() {
        let u = Usage::of_app(&app(3, "memory = \"64Mi\"\nmax_concurrency = 4", None));
        assert_eq!((u.apps, u.pods), (1, 3));
        assert_eq!(u.memory, 3 * 4 * 64 * 1024 * 1024);
        assert_eq!(u.fuel_per_second, None, "no fuel limit: unbounded");
        let u = Usage::of_app(&app(1, "fuel = 1000000", Some(50)));
        assert_eq!(u.fuel_per_second, Some(50_000_000));
        let sum: Usage = [u, u].into_iter().sum();
        assert_eq!(sum.fuel_per_second, Some(100_000_000));
        let unbounded: Usage = [u, Usage::of_app(&app(1, "", None))].into_iter().sum();
        assert_eq!(unbounded.fuel_per_second, None);
    }

    #[test]
    fn a_quota_says_which_limit_and_by_how_much() {
        let q = Quota {
            pods: Some(4),
            memory: Some(ByteSize::gib(1)),
            ..Default::default()
        };
        let a = Usage::of_app(&app(3, "memory = \"64Mi\"\nmax_concurrency = 1", None));
        assert!(q.check(&a, &a).is_ok());
        let both = a + a;
        let e = q.check(&both, &a).unwrap_err();
        assert!(
            e.contains("pods 4") && e.contains("makes it 6") && e.contains("2 over"),
            "{e}"
        );
        // Already over (a quota lowered later) but this change adds nothing: allowed.
        assert!(q.check(&both, &Usage::none()).is_ok());
        let big = Usage::of_app(&app(1, "memory = \"2Gi\"\nmax_concurrency = 1", None));
        let e = q.check(&big, &big).unwrap_err();
        assert!(e.contains("memory 1Gi") && e.contains("1Gi over"), "{e}");
        let fuel = Quota {
            fuel_per_second: Some(10),
            ..Default::default()
        };
        let e = fuel.check(&a, &a).unwrap_err();
        assert!(e.contains("needs [limits] fuel"), "{e}");
    }

    #[test]
    fn a_limit_range_fills_defaults_and_bounds_what_is_written() {
        let range = LimitRange {
            default: LimitOverrides {
                memory: Some(ByteSize::mib(64)),
                ..Default::default()
            },
            max: LimitOverrides {
                memory: Some(ByteSize::mib(100)),
                fuel: Some(1_000_000),
                ..Default::default()
            },
            ..Default::default()
        };
        let filled = range.defaulted(&LimitOverrides {
            fuel: Some(500),
            ..Default::default()
        });
        assert_eq!(filled.memory, Some(ByteSize::mib(64)));
        assert!(
            range
                .check(&filled.resolve(WorkloadKind::Http).unwrap())
                .is_ok()
        );
        let e = range
            .check(
                &LimitOverrides::default()
                    .resolve(WorkloadKind::Http)
                    .unwrap(),
            )
            .unwrap_err();
        assert_eq!(e.field, "limits.memory");
        assert!(e.message.contains("over by 28Mi"), "{e:?}");
        let e = range
            .check(
                &range
                    .defaulted(&LimitOverrides::default())
                    .resolve(WorkloadKind::Http)
                    .unwrap(),
            )
            .unwrap_err();
        assert_eq!(e.field, "limits.fuel");
        assert!(e.message.contains("unbounded"), "{e:?}");
    }

    #[test]
    fn a_namespace_manifest_is_checked_where_it_is_written() {
        let good = "[namespace]\nname = \"shop\"\n\n[quota]\npods = 10\n\n[limit_range.default]\nmemory = \"64Mi\"\n\n[limit_range.max]\nmemory = \"128Mi\"\n";
        let m = NamespaceManifest::parse("ns.toml", good).unwrap();
        assert_eq!(m.quota.unwrap().pods, Some(10));
        let e = NamespaceManifest::parse("ns.toml", &good.replace("\"64Mi\"", "\"512Mi\""))
            .unwrap_err();
        assert_eq!(
            e.field.as_deref(),
            Some("limit_range.default.memory"),
            "{e}"
        );
        assert_eq!(e.line, 8, "{e}");
        let e = NamespaceManifest::parse("ns.toml", &good.replace("pods", "pod")).unwrap_err();
        assert!(e.to_string().contains("pod"), "{e}");
    }
}
