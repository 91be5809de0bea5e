//! Rollouts: `/v1/rollouts`, `/v1/apps/{ns}/{name}/rollout` (its status, and what a
//! person does to it: promote, abort, retry, pause, resume),
//! `/v1/apps/{ns}/{name}/undo`, hosts' reports of `job` checks, and analysis templates
//! applied on their own (`/v1/analysistemplates`).
//!
//! An action that cannot apply to the rollout as it stands is refused with 409 and why
//! (an abort of an aborted rollout, a resume of one a step paused), rather than
//! committed to change nothing.

use dabba_spec::analysis::{AnalysisPhase, AnalysisTemplate, Measurement, MetricSpec};
use dabba_spec::api::{
    AnalysisTemplateView, CheckReport, ObservedSplit, RolloutAction, RolloutView, UndoRequest,
};
use dabba_spec::resources::ResourceKey;
use dabba_spec::rollout::{PauseReason, RolloutStatus};
use http::Method;

use super::auth::{Access, Ns, Rule};
use super::router::Router;
use super::{Answer, Api, Call, Failure, fail, json, parse, reply, views};
use crate::command::{Command, RolloutChange};
use crate::node::analysis::OBSERVED_WINDOW;
use crate::node::now_millis;

pub(super) fn routes(r: &mut Router) {
    r.leader(
        Method::GET,
        "/v1/rollouts",
        Access::Token(Rule::View(Ns::Query)),
        handler!(list),
    );
    r.leader(
        Method::GET,
        "/v1/apps/{ns}/{name}/rollout",
        Access::Token(Rule::View(Ns::Path)),
        handler!(status),
    );
    r.leader(
        Method::POST,
        "/v1/apps/{ns}/{name}/rollout",
        Access::Token(Rule::Deploy),
        handler!(act),
    );
    r.leader(
        Method::POST,
        "/v1/apps/{ns}/{name}/undo",
        Access::Token(Rule::Deploy),
        handler!(undo),
    );
    r.leader(
        Method::POST,
        "/v1/apps/{ns}/{name}/checks",
        Access::Token(Rule::Host),
        handler!(check),
    );
    r.leader(
        Method::GET,
        "/v1/analysistemplates",
        Access::Token(Rule::View(Ns::Query)),
        handler!(list_templates),
    );
    r.leader(
        Method::PUT,
        "/v1/analysistemplates/{ns}/{name}",
        Access::Token(Rule::Deploy),
        handler!(apply_template),
    );
    r.leader(
        Method::DELETE,
        "/v1/analysistemplates/{ns}/{name}",
        Access::Token(Rule::Deploy),
        handler!(delete_template),
    );
}

fn key(call: &Call) -> ResourceKey {
    ResourceKey::new(call.param("ns"), call.param("name"))
}

/// The rollout view with what the leader observed of the split.
pub(super) fn view(api: &Api, key: &ResourceKey) -> Option<RolloutView> {
    let now = now_millis();
    let mut view = api.node.shared.read(|s| views::rollout_view(s, key, now))?;
    if let Some(canary) = view.status.canary {
        view.observed = api
            .node
            .observed_split(key, view.status.stable, canary)
            .map(|(canary_percent, requests)| ObservedSplit {
                canary_percent,
                requests,
                window_ms: OBSERVED_WINDOW,
            });
    }
    Some(view)
}

async fn list(api: &Api, call: Call) -> Answer {
    let ns = api.listed_namespace(&call).await?;
    let keys: Vec<ResourceKey> = api.node.shared.read(|s| {
        s.rollouts
            .keys()
            .filter(|k| ns.as_deref().is_none_or(|n| k.namespace() == n))
            .cloned()
            .collect()
    });
    let views: Vec<RolloutView> = keys.iter().filter_map(|k| view(api, k)).collect();
    json(200, &views)
}

async fn status(api: &Api, call: Call) -> Answer {
    let key = key(&call);
    api.node.linearize().await?;
    let view = view(api, &key).ok_or_else(|| no_rollout(api, &key))?;
    json(200, &view)
}

fn no_rollout(api: &Api, key: &ResourceKey) -> Failure {
    if api.node.shared.read(|s| s.apps.contains_key(key)) {
        fail(
            404,
            "not_found",
            format!(
                "app {key} has had no rollout (its strategy is rolling, or it has one revision)"
            ),
        )
    } else {
        fail(404, "not_found", format!("no app {key}"))
    }
}

async fn act(api: &Api, call: Call) -> Answer {
    let key = key(&call);
    let grant = call.grant().clone();
    let action: RolloutAction = parse(&call.body)?;
    api.node.linearize().await?;
    let status = api
        .node
        .shared
        .read(|s| s.rollouts.get(&key).cloned())
        .ok_or_else(|| no_rollout(api, &key))?;
    let change =
        change(&key, &status, action, &grant.label).map_err(|m| fail(409, "conflict", m))?;
    reply(
        api.node
            .propose(Command::Rollout {
                changes: vec![change],
                at: now_millis(),
            })
            .await?,
    )?;
    json(200, &view(api, &key).ok_or_else(|| no_rollout(api, &key))?)
}

/// The change `action` makes to this rollout, or why it cannot.
fn change(
    key: &ResourceKey,
    r: &RolloutStatus,
    action: RolloutAction,
    who: &str,
) -> Result<RolloutChange, String> {
    let Some(canary) = r.canary else {
        return Err(format!(
            "{key} has no rollout in progress: revision {} serves everything",
            r.stable
        ));
    };
    let app = key.clone();
    match action {
        RolloutAction::Promote { .. } | RolloutAction::Abort | RolloutAction::Pause
            if r.aborted =>
        {
            Err(format!(
                "the rollout of revision {canary} was aborted ({}): `retry` starts it again",
                r.message
            ))
        }
        RolloutAction::Promote { full } => Ok(RolloutChange::Promote { app, canary, full }),
        RolloutAction::Abort => Ok(RolloutChange::Abort {
            app,
            canary,
            reason: format!("aborted by {who}"),
        }),
        RolloutAction::Retry if !r.aborted => Err(format!(
            "the rollout of revision {canary} was not aborted: only an aborted rollout is retried"
        )),
        RolloutAction::Retry => Ok(RolloutChange::Retry { app, canary }),
        RolloutAction::Pause => match r.paused {
            Some(p) => Err(format!("the rollout is already paused ({:?})", p.reason)),
            None => Ok(RolloutChange::Pause {
                app,
                canary,
                reason: PauseReason::User,
                message: format!("paused by {who}"),
            }),
        },
        RolloutAction::Resume => match r.paused.map(|p| p.reason) {
            None => Err("the rollout is not paused".into()),
            Some(PauseReason::Step | PauseReason::Promotion) => {
                Err("a pause step (or a preview waiting for promotion) ends with `promote`".into())
            }
            Some(PauseReason::User | PauseReason::Inconclusive) => {
                Ok(RolloutChange::Resume { app, canary })
            }
        },
    }
}

async fn undo(api: &Api, call: Call) -> Answer {
    let key = key(&call);
    let req: UndoRequest = if call.body.is_empty() {
        UndoRequest::default()
    } else {
        parse(&call.body)?
    };
    reply(
        api.node
            .propose(Command::UndoApp {
                namespace: key.namespace().into(),
                name: key.name().into(),
                to: req.to_revision,
                at: now_millis(),
            })
            .await?,
    )
}

/// A host reports a `job` check: it becomes the metric's measurement.
async fn check(api: &Api, call: Call) -> Answer {
    let key = key(&call);
    let report: CheckReport = parse(&call.body)?;
    let now = now_millis();
    let assigned = api.node.shared.read(|s| {
        let r = s.rollouts.get(&key)?;
        Some(r.checks.iter().find(|c| c.id == report.id)?.host.clone())
    });
    if let Some(host) = assigned {
        super::auth::on_own_host(&call, &format!("check {}", report.id), Some(&host))?;
    }
    let spec = api.node.shared.read(|s| {
        let r = s.rollouts.get(&key)?;
        r.checks.iter().find(|c| c.id == report.id)?;
        let run = r
            .analysis
            .iter()
            .find(|x| (x.kind, x.started) == (report.run, report.started))?;
        let m = run.metrics.get(report.metric as usize)?;
        s.metric_spec(&key, &m.template, &m.metric).cloned()
    });
    let Some(spec) = spec else {
        // The check is no longer wanted (the rollout moved on, or it timed out).
        return json(200, &dabba_spec::api::Empty {});
    };
    let measurement = check_measurement(&spec, &report, now);
    reply(
        api.node
            .propose(Command::Rollout {
                changes: vec![RolloutChange::Measured {
                    app: key,
                    canary: report.canary,
                    run: report.run,
                    started: report.started,
                    metric: report.metric,
                    measurement,
                }],
                at: now,
            })
            .await?,
    )
}

/// A `job` check's measurement: exit 0 succeeds (and the metric's conditions, if any,
/// judge the exit code); another exit code fails; a check that could not run is an
/// error. The message carries the end of its output.
fn check_measurement(spec: &MetricSpec, r: &CheckReport, at: u64) -> Measurement {
    let tail: String = {
        let lines: Vec<&str> = r.output.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(3)..].join(" | ")
    };
    let (phase, message) = match (&r.reason, r.exit_code) {
        (Some(why), -1) => (
            AnalysisPhase::Error,
            format!("the check could not run: {why}"),
        ),
        (_, 0) => spec.judge(Some(0.0), None),
        (why, code) => (
            AnalysisPhase::Failed,
            format!(
                "exit {code}{}: {tail}",
                why.as_deref()
                    .map(|w| format!(" ({w})"))
                    .unwrap_or_default()
            ),
        ),
    };
    let message = if phase == AnalysisPhase::Successful && !tail.is_empty() {
        tail
    } else {
        message
    };
    Measurement {
        at,
        value: Some(f64::from(r.exit_code)),
        requests: None,
        phase,
        message,
    }
}

async fn list_templates(api: &Api, call: Call) -> Answer {
    let ns = api.listed_namespace(&call).await?;
    let templates: Vec<AnalysisTemplateView> = api.node.shared.read(|s| {
        s.analysis_templates
            .iter()
            .filter(|(k, _)| ns.as_deref().is_none_or(|n| k.namespace() == n))
            .map(|(k, t)| AnalysisTemplateView {
                namespace: k.namespace().to_string(),
                template: t.clone(),
            })
            .collect()
    });
    json(200, &templates)
}

async fn apply_template(api: &Api, call: Call) -> Answer {
    let key = key(&call);
    let template: AnalysisTemplate = parse(&call.body)?;
    if template.name != key.name() {
        return Err(fail(
            422,
            "invalid",
            format!(
                "the body describes template {}, not {}",
                template.name,
                key.name()
            ),
        ));
    }
    reply(
        api.node
            .propose(Command::ApplyAnalysisTemplate {
                namespace: key.namespace().into(),
                template: Box::new(template),
                at: now_millis(),
            })
            .await?,
    )
}

async fn delete_template(api: &Api, call: Call) -> Answer {
    let key = key(&call);
    reply(
        api.node
            .propose(Command::DeleteAnalysisTemplate {
                namespace: key.namespace().into(),
                name: key.name().into(),
                at: now_millis(),
            })
            .await?,
    )
}

#[cfg(test)]
mod tests {
    use dabba_spec::rollout::{Paused, Strategy};

    use super::*;

    fn status() -> RolloutStatus {
        RolloutStatus::begin(Strategy::Canary, 1, 2, 0)
    }

    fn refused(r: &RolloutStatus, a: RolloutAction) -> String {
        change(&ResourceKey::new("default", "search"), r, a, "asha").unwrap_err()
    }

    #[test]
    fn actions_that_do_not_apply_are_refused_with_the_reason() {
        let mut r = status();
        assert!(refused(&r, RolloutAction::Retry).contains("was not aborted"));
        assert!(refused(&r, RolloutAction::Resume).contains("not paused"));
        r.paused = Some(Paused {
            reason: PauseReason::Step,
            since: 0,
            until: None,
        });
        assert!(refused(&r, RolloutAction::Resume).contains("ends with `promote`"));
        assert!(refused(&r, RolloutAction::Pause).contains("already paused"));
        r.aborted = true;
        for a in [
            RolloutAction::Abort,
            RolloutAction::Pause,
            RolloutAction::Promote { full: true },
        ] {
            assert!(refused(&r, a).contains("`retry`"), "{a:?}");
        }
        r.canary = None;
        assert!(refused(&r, RolloutAction::Abort).contains("no rollout in progress"));
    }

    #[test]
    fn an_abort_says_who_asked() {
        let key = ResourceKey::new("default", "search");
        let c = change(&key, &status(), RolloutAction::Abort, "asha").unwrap();
        assert_eq!(
            c,
            RolloutChange::Abort {
                app: key,
                canary: 2,
                reason: "aborted by asha".into()
            }
        );
    }
}
