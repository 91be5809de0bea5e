//! Admission by namespace policy (`dabba_spec::quota`): an app's `[limits]` take the
//! namespace's defaults and must lie within its limit range, and a change may not take
//! the namespace past its quota. Checked as a command is applied, so two changes
//! proposed at once cannot both fit into room for one.

use dabba_spec::cronjob::CronSection;
use dabba_spec::quota::Usage;
use dabba_spec::resources::{AppSpec, ResourceKey};
use dabba_spec::{LimitOverrides, WorkloadKind};

use super::{State, rejected};
use crate::command::{Rejection, Reply};

/// What a change adds in each dimension (nothing where it frees room).
fn added(new: &Usage, old: &Usage) -> Usage {
    Usage {
        apps: new.apps.saturating_sub(old.apps),
        pods: new.pods.saturating_sub(old.pods),
        cron_jobs: new.cron_jobs.saturating_sub(old.cron_jobs),
        memory: new.memory.saturating_sub(old.memory),
        fuel_per_second: match (new.fuel_per_second, old.fuel_per_second) {
            (None, _) => None,
            (Some(n), Some(o)) => Some(n.saturating_sub(o)),
            (Some(n), None) => Some(n),
        },
    }
}

impl State {
    /// Everything namespace `ns` uses, but the app or cron job `except`.
    pub fn namespace_usage(&self, ns: &str, except: Option<&ResourceKey>) -> Usage {
        let apps = self
            .apps
            .iter()
            .filter(|(k, _)| k.namespace() == ns && Some(*k) != except)
            .map(|(_, a)| Usage::of_app(&a.spec));
        let jobs = self
            .cron
            .jobs
            .iter()
            .filter(|(k, _)| k.namespace() == ns && Some(*k) != except)
            .map(|(_, j)| Usage::of_cron_job(&j.spec));
        apps.chain(jobs).sum()
    }

    /// `limits` with the namespace's defaults filled in, checked against its range.
    fn admit_limits(
        &self,
        ns: &str,
        limits: &LimitOverrides,
        kind: WorkloadKind,
    ) -> Result<LimitOverrides, Reply> {
        let Some(range) = self.namespaces.get(ns).and_then(|p| p.limit_range.as_ref()) else {
            return Ok(limits.clone());
        };
        let filled = range.defaulted(limits);
        let resolved = filled
            .resolve(kind)
            .map_err(|e| rejected(Rejection::Invalid, format!("limits: {e}")))?;
        range
            .check(&resolved)
            .map_err(|e| rejected(Rejection::Invalid, format!("{}: {}", e.field, e.message)))?;
        Ok(filled)
    }

    /// Whether namespace `ns` has room for a change of `key` from `old` to `new`.
    pub(super) fn admit_quota(
        &self,
        ns: &str,
        key: &ResourceKey,
        old: Usage,
        new: Usage,
    ) -> Result<(), Reply> {
        let Some(quota) = self.namespaces.get(ns).and_then(|p| p.quota.as_ref()) else {
            return Ok(());
        };
        let used = self.namespace_usage(ns, Some(key)) + new;
        quota
            .check(&used, &added(&new, &old))
            .map_err(|m| rejected(Rejection::QuotaExceeded, format!("namespace {ns}: {m}")))
    }

    /// The spec to store for an app applied or scaled to `spec`: its limits defaulted
    /// and bounded by the namespace's range, within the namespace's quota.
    pub(super) fn admit_app(&self, spec: &AppSpec) -> Result<AppSpec, Reply> {
        let mut spec = spec.clone();
        spec.limits = self.admit_limits(&spec.namespace, &spec.limits, WorkloadKind::Http)?;
        let key = spec.key();
        let old = self
            .apps
            .get(&key)
            .map_or(Usage::none(), |a| Usage::of_app(&a.spec));
        self.admit_quota(&spec.namespace, &key, old, Usage::of_app(&spec))?;
        Ok(spec)
    }

    /// [`State::admit_app`] for a cron job (its run's limits, the job count).
    pub(super) fn admit_cron_job(&self, spec: &CronSection) -> Result<CronSection, Reply> {
        let mut spec = spec.clone();
        spec.limits = self.admit_limits(&spec.namespace, &spec.limits, WorkloadKind::Job)?;
        let key = ResourceKey::new(&spec.namespace, &spec.name);
        let old = self
            .cron
            .jobs
            .get(&key)
            .map_or(Usage::none(), |j| Usage::of_cron_job(&j.spec));
        self.admit_quota(&spec.namespace, &key, old, Usage::of_cron_job(&spec))?;
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use dabba_spec::ByteSize;
    use dabba_spec::quota::{LimitRange, NamespacePolicy, Quota};

    use super::*;
    use crate::command::Command;
    use crate::state::tests::{spec, with_blobs};

    fn policy(quota: Quota, range: Option<LimitRange>) -> Command {
        Command::SetNamespacePolicy {
            namespace: "default".into(),
            policy: Some(Box::new(NamespacePolicy {
                quota: Some(quota),
                limit_range: range,
            })),
            at: 1,
        }
    }

    fn apply(s: &mut State, spec: AppSpec) -> Reply {
        s.apply(&Command::ApplyApp {
            spec: Box::new(spec),
            at: 2,
        })
    }

    fn scale(s: &mut State, name: &str, replicas: u32) -> Reply {
        s.apply(&Command::ScaleApp {
            namespace: "default".into(),
            name: name.into(),
            replicas,
            at: 3,
            reason: None,
        })
    }

    fn refusal(r: &Reply) -> (Rejection, String) {
        match r {
            Reply::Rejected { code, message } => (*code, message.clone()),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_change_that_takes_the_namespace_past_its_pods_is_refused_and_says_by_how_much() {
        let mut s = with_blobs();
        s.apply(&policy(
            Quota {
                pods: Some(3),
                apps: Some(2),
                ..Default::default()
            },
            None,
        ));
        assert!(matches!(
            apply(&mut s, spec("a", "/a", 2)),
            Reply::App { .. }
        ));
        let before = s.clone();
        let (code, message) = refusal(&apply(&mut s, spec("b", "/b", 2)));
        assert_eq!(code, Rejection::QuotaExceeded);
        assert!(
            message.contains("pods 3")
                && message.contains("makes it 4")
                && message.contains("1 over"),
            "{message}"
        );
        assert_eq!(s, before, "nothing changed");
        // Scaling is held to it too; room freed is room to use.
        assert_eq!(refusal(&scale(&mut s, "a", 4)).0, Rejection::QuotaExceeded);
        assert!(matches!(scale(&mut s, "a", 1), Reply::App { .. }));
        assert!(matches!(
            apply(&mut s, spec("b", "/b", 2)),
            Reply::App { .. }
        ));
        let (_, message) = refusal(&apply(&mut s, spec("c", "/c", 0)));
        assert!(message.contains("apps 2"), "{message}");
        assert_eq!(s.namespace_usage("default", None).pods, 3);
        assert_eq!(s.namespace_usage("other", None).pods, 0);
    }

    #[test]
    fn a_lowered_quota_stops_nothing_that_runs_but_admits_no_growth() {
        let mut s = with_blobs();
        assert!(matches!(
            apply(&mut s, spec("a", "/a", 4)),
            Reply::App { .. }
        ));
        s.apply(&policy(
            Quota {
                pods: Some(2),
                ..Default::default()
            },
            None,
        ));
        assert_eq!(s.apps[&ResourceKey::new("default", "a")].spec.replicas, 4);
        // The same spec again, or less: allowed; more: refused.
        assert!(matches!(
            apply(&mut s, spec("a", "/a", 4)),
            Reply::App { .. }
        ));
        assert!(matches!(scale(&mut s, "a", 3), Reply::App { .. }));
        assert_eq!(refusal(&scale(&mut s, "a", 5)).0, Rejection::QuotaExceeded);
    }

    #[test]
    fn an_autoscaled_app_counts_its_max_and_scales_freely_within_it() {
        let mut s = with_blobs();
        s.apply(&policy(
            Quota {
                pods: Some(5),
                ..Default::default()
            },
            None,
        ));
        let mut auto = spec("a", "/a", 1);
        auto.scale = Some(dabba_spec::scale::Scale {
            min: 1,
            max: 6,
            ..Default::default()
        });
        assert_eq!(
            refusal(&apply(&mut s, auto.clone())).0,
            Rejection::QuotaExceeded
        );
        auto.scale.as_mut().unwrap().max = 5;
        assert!(matches!(apply(&mut s, auto), Reply::App { .. }));
        assert!(matches!(scale(&mut s, "a", 5), Reply::App { .. }));
    }

    #[test]
    fn a_limit_range_fills_defaults_and_refuses_what_is_out_of_it() {
        let mut s = with_blobs();
        let range = LimitRange {
            default: dabba_spec::LimitOverrides {
                memory: Some(ByteSize::mib(64)),
                ..Default::default()
            },
            max: dabba_spec::LimitOverrides {
                memory: Some(ByteSize::mib(128)),
                ..Default::default()
            },
            ..Default::default()
        };
        s.apply(&policy(Quota::default(), Some(range)));
        let Reply::App { app } = apply(&mut s, spec("a", "/a", 1)) else {
            panic!("admitted")
        };
        assert_eq!(app.spec.limits.memory, Some(ByteSize::mib(64)), "defaulted");
        let mut big = spec("b", "/b", 1);
        big.limits.memory = Some(ByteSize::mib(200));
        let (code, message) = refusal(&apply(&mut s, big));
        assert_eq!(code, Rejection::Invalid);
        assert!(
            message.starts_with("limits.memory:") && message.contains("over by 72Mi"),
            "{message}"
        );
    }
}
