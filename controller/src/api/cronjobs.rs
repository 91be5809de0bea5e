//! Cron jobs and their runs: `/v1/cronjobs`, `/v1/cronjobs/{ns}/{name}` and its
//! `suspend`, `resume` and `run`, and hosts' reports of runs (`/v1/runs/.../report`).

use dabba_spec::api::CronJobApply;
use dabba_spec::cronjob::RunReport;
use dabba_spec::resources::ResourceKey;
use http::Method;

use super::auth::{Access, Ns, Rule};
use super::router::Router;
use super::{Answer, Api, Call, fail, json, parse, reply, views};
use crate::command::Command;
use crate::command::CronChange;
use crate::node::now_millis;

pub(super) fn routes(r: &mut Router) {
    r.leader(
        Method::GET,
        "/v1/cronjobs",
        Access::Token(Rule::View(Ns::Query)),
        handler!(list),
    );
    r.leader(
        Method::PUT,
        "/v1/cronjobs/{ns}/{name}",
        Access::Token(Rule::Deploy),
        handler!(apply),
    );
    r.leader(
        Method::DELETE,
        "/v1/cronjobs/{ns}/{name}",
        Access::Token(Rule::Deploy),
        handler!(delete),
    );
    r.leader(
        Method::POST,
        "/v1/cronjobs/{ns}/{name}/suspend",
        Access::Token(Rule::Deploy),
        |api, call| Box::pin(change(api, call, Action::Suspend)),
    );
    r.leader(
        Method::POST,
        "/v1/cronjobs/{ns}/{name}/resume",
        Access::Token(Rule::Deploy),
        |api, call| Box::pin(change(api, call, Action::Resume)),
    );
    r.leader(
        Method::POST,
        "/v1/cronjobs/{ns}/{name}/run",
        Access::Token(Rule::Deploy),
        |api, call| Box::pin(change(api, call, Action::Run)),
    );
    r.leader(
        Method::POST,
        "/v1/runs/{ns}/{run}/report",
        Access::Token(Rule::Host),
        handler!(report),
    );
}

fn key(call: &Call) -> ResourceKey {
    ResourceKey::new(call.param("ns"), call.param("name"))
}

async fn list(api: &Api, call: Call) -> Answer {
    let ns = api.listed_namespace(&call).await?;
    let node = &api.node;
    let now = now_millis();
    json(
        200,
        &node
            .shared
            .read(|s| views::cron_jobs(s, ns.as_deref(), now)),
    )
}

async fn apply(api: &Api, call: Call) -> Answer {
    let key = key(&call);
    let req: CronJobApply = parse(&call.body)?;
    if req.spec.key() != key {
        return Err(fail(
            422,
            "invalid",
            format!("the body describes {}, not {key}", req.spec.key()),
        ));
    }
    req.spec
        .validate()
        .map_err(|e| fail(422, "invalid", e.to_string()))?;
    reply(
        api.node
            .propose(Command::ApplyCronJob {
                spec: Box::new(req.spec),
                component: req.component,
                at: now_millis(),
            })
            .await?,
    )
}

async fn delete(api: &Api, call: Call) -> Answer {
    let key = key(&call);
    reply(
        api.node
            .propose(Command::DeleteCronJob {
                namespace: key.namespace().into(),
                name: key.name().into(),
                at: now_millis(),
            })
            .await?,
    )
}

/// What a `POST /v1/cronjobs/{ns}/{name}/{action}` asks for.
#[derive(Debug, Clone, Copy)]
enum Action {
    Suspend,
    Resume,
    Run,
}

async fn change(api: &Api, call: Call, action: Action) -> Answer {
    let job = key(&call);
    if !api.node.shared.read(|s| s.cron.jobs.contains_key(&job)) {
        return Err(fail(404, "not_found", format!("no cron job {job}")));
    }
    let change = match action {
        Action::Run => CronChange::RunNow { job },
        Action::Suspend => CronChange::Suspend { job, suspend: true },
        Action::Resume => CronChange::Suspend {
            job,
            suspend: false,
        },
    };
    reply(
        api.node
            .propose(Command::Cron {
                changes: vec![change],
                at: now_millis(),
            })
            .await?,
    )
}

async fn report(api: &Api, call: Call) -> Answer {
    let report: RunReport = parse(&call.body)?;
    let run = ResourceKey::new(call.param("ns"), call.param("run"));
    if let Some(host) = api
        .node
        .shared
        .read(|s| s.cron.runs.get(&run).map(|r| r.host.clone()))
    {
        super::auth::on_own_host(&call, &format!("run {run}"), host.as_deref())?;
    }
    reply(
        api.node
            .propose(Command::Cron {
                changes: vec![CronChange::Report { run, report }],
                at: now_millis(),
            })
            .await?,
    )
}
