//! `dabba get apps|revisions|pods|hosts|cronjobs|jobs|rollouts|analysistemplates|regions|secrets|roles|rolebindings
//! [NAME]`: a table, or `-o json`.

use clap::{Args, ValueEnum};
use dabba_client::ApiClient;

use super::block_on;
use super::output::{Output, age, print_json, table};
use super::target::ClusterArgs;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Kind {
    Apps,
    Revisions,
    Pods,
    Hosts,
    /// Cron jobs, with their next run times.
    Cronjobs,
    /// Runs of cron jobs.
    Jobs,
    /// Canary and blue-green rollouts.
    Rollouts,
    /// Analysis templates applied on their own.
    Analysistemplates,
    /// Regions: hosts, availability, voters, and where placed apps serve.
    Regions,
    /// Secrets: their keys, versions and users (never a value).
    Secrets,
    /// Roles of the cluster's own (admins).
    Roles,
    /// Role bindings (admins).
    Rolebindings,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    pub kind: Kind,
    /// Only this app (revisions, pods), cron job (cronjobs, jobs).
    pub name: Option<String>,
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

pub fn get(args: GetArgs) -> anyhow::Result<()> {
    let api = args.cluster.client()?;
    block_on(async move {
        match args.kind {
            Kind::Apps => apps(&api, &args).await,
            Kind::Revisions => revisions(&api, &args).await,
            Kind::Pods => pods(&api, &args).await,
            Kind::Cronjobs => cron_jobs(&api, &args).await,
            Kind::Jobs => runs(&api, &args).await,
            Kind::Hosts => hosts(&api, &args).await,
            Kind::Rollouts => rollouts(&api, &args).await,
            Kind::Analysistemplates => templates(&api, &args).await,
            Kind::Secrets => secrets(&api, &args).await,
            Kind::Roles => {
                let roles = api.roles().await?;
                if args.output == Output::Json {
                    return print_json(&roles);
                }
                let rules = |r: &dabba_spec::rbac::RoleSpec| {
                    r.rules
                        .iter()
                        .map(|p| format!("{} on {}", p.verbs.join(","), p.resources.join(",")))
                        .collect::<Vec<_>>()
                        .join("; ")
                };
                table(
                    &["NAME", "RULES"],
                    roles
                        .iter()
                        .map(|r| {
                            vec![
                                super::rbac::shown(r.namespace.as_deref(), &r.name),
                                rules(r),
                            ]
                        })
                        .collect(),
                );
                Ok(())
            }
            Kind::Rolebindings => {
                let bindings = api.role_bindings().await?;
                if args.output == Output::Json {
                    return print_json(&bindings);
                }
                table(
                    &["NAME", "ROLE", "TOKENS"],
                    bindings
                        .iter()
                        .map(|b| {
                            vec![
                                super::rbac::shown(b.namespace.as_deref(), &b.name),
                                b.role.clone(),
                                b.tokens.join(","),
                            ]
                        })
                        .collect(),
                );
                Ok(())
            }
            Kind::Regions => {
                let views = api.regions().await?;
                if args.output == Output::Json {
                    return print_json(&views);
                }
                super::region::print_table(&views);
                Ok(())
            }
        }
    })
}

async fn secrets(api: &ApiClient, args: &GetArgs) -> anyhow::Result<()> {
    let mut all = api.secrets(Some(&args.cluster.namespace)).await?;
    all.retain(|s| args.name.as_ref().is_none_or(|n| *n == s.name));
    if args.output == Output::Json {
        return print_json(&all);
    }
    table(
        &["NAME", "KEYS", "VERSION", "USED BY", "AGE"],
        all.iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.keys.join(","),
                    s.version.to_string(),
                    if s.used_by.is_empty() {
                        "-".into()
                    } else {
                        s.used_by.join(",")
                    },
                    age(s.created),
                ]
            })
            .collect(),
    );
    Ok(())
}

async fn apps(api: &ApiClient, args: &GetArgs) -> anyhow::Result<()> {
    let apps = api.apps(Some(&args.cluster.namespace)).await?;
    if args.output == Output::Json {
        return print_json(&apps);
    }
    table(
        &[
            "NAME",
            "ROUTE",
            "REVISION",
            "READY",
            "DESIRED",
            "AUTOSCALER",
            "AGE",
            "LAST DECISION",
        ],
        apps.iter()
            .map(|a| {
                let (mode, reason) = match &a.autoscaler {
                    Some(s) => (s.mode.to_string(), s.reason.clone()),
                    None => ("-".into(), String::new()),
                };
                vec![
                    a.name.clone(),
                    a.route.prefix.clone(),
                    a.revision.to_string(),
                    a.ready.to_string(),
                    a.desired.to_string(),
                    mode,
                    age(a.updated_at),
                    reason,
                ]
            })
            .collect(),
    );
    Ok(())
}

async fn rollouts(api: &ApiClient, args: &GetArgs) -> anyhow::Result<()> {
    let mut views = api.rollouts(Some(&args.cluster.namespace)).await?;
    if let Some(name) = &args.name {
        views.retain(|v| &v.app == name);
    }
    if args.output == Output::Json {
        return print_json(&views);
    }
    super::rollout::print_table(&views);
    Ok(())
}

async fn templates(api: &ApiClient, args: &GetArgs) -> anyhow::Result<()> {
    let mut all = api
        .analysis_templates(Some(&args.cluster.namespace))
        .await?;
    if let Some(name) = &args.name {
        all.retain(|t| &t.template.name == name);
    }
    if args.output == Output::Json {
        return print_json(&all);
    }
    table(
        &["NAME", "METRICS"],
        all.iter()
            .map(|t| {
                let metrics: Vec<String> = t
                    .template
                    .metrics
                    .iter()
                    .map(|m| {
                        let what = match (&m.measure, &m.web, &m.job) {
                            (Some(x), _, _) => format!("{x:?}"),
                            (_, Some(_), _) => "web".into(),
                            _ => "job".into(),
                        };
                        format!("{} ({what}, every {})", m.name, m.interval)
                    })
                    .collect();
                vec![t.template.name.clone(), metrics.join(", ")]
            })
            .collect(),
    );
    Ok(())
}

async fn revisions(api: &ApiClient, args: &GetArgs) -> anyhow::Result<()> {
    let revs = api
        .revisions(Some(&args.cluster.namespace), args.name.as_deref())
        .await?;
    if args.output == Output::Json {
        return print_json(&revs);
    }
    table(
        &["APP", "REVISION", "REPLICAS", "COMPONENT", "AGE"],
        revs.iter()
            .map(|r| {
                vec![
                    r.spec.name.clone(),
                    r.number.to_string(),
                    r.spec.replicas.to_string(),
                    r.spec.component.short(),
                    age(r.created_at),
                ]
            })
            .collect(),
    );
    Ok(())
}

async fn pods(api: &ApiClient, args: &GetArgs) -> anyhow::Result<()> {
    let pods = api
        .pods(Some(&args.cluster.namespace), args.name.as_deref())
        .await?;
    if args.output == Output::Json {
        return print_json(&pods);
    }
    table(
        &[
            "NAME", "APP", "REVISION", "PHASE", "RESTARTS", "HOST", "AGE", "REASON",
        ],
        pods.iter()
            .map(|p| {
                vec![
                    p.name.clone(),
                    p.app.clone(),
                    p.revision.to_string(),
                    format!("{:?}", p.phase),
                    p.restarts.to_string(),
                    p.host.clone().unwrap_or_else(|| "-".into()),
                    age(p.created_at),
                    p.why().unwrap_or_default(),
                ]
            })
            .collect(),
    );
    Ok(())
}

async fn cron_jobs(api: &ApiClient, args: &GetArgs) -> anyhow::Result<()> {
    let jobs: Vec<_> = api
        .cron_jobs(Some(&args.cluster.namespace))
        .await?
        .into_iter()
        .filter(|j| args.name.as_deref().is_none_or(|n| n == j.job.spec.name))
        .collect();
    if args.output == Output::Json {
        return print_json(&jobs);
    }
    table(
        &[
            "NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "MISSED", "NEXT",
        ],
        jobs.iter()
            .map(|j| {
                let s = &j.job.spec;
                vec![
                    s.name.clone(),
                    s.schedule.clone(),
                    s.timezone.clone(),
                    s.suspend.to_string(),
                    j.runs
                        .iter()
                        .filter(|r| r.phase.is_active())
                        .count()
                        .to_string(),
                    j.job.missed_total.to_string(),
                    j.next.first().cloned().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect(),
    );
    Ok(())
}

async fn runs(api: &ApiClient, args: &GetArgs) -> anyhow::Result<()> {
    let runs: Vec<_> = api
        .cron_jobs(Some(&args.cluster.namespace))
        .await?
        .into_iter()
        .flat_map(|j| j.runs)
        .filter(|r| args.name.as_deref().is_none_or(|n| n == r.job))
        .collect();
    if args.output == Output::Json {
        return print_json(&runs);
    }
    table(
        &[
            "NAME", "CRONJOB", "PHASE", "ATTEMPT", "HOST", "AGE", "REASON",
        ],
        runs.iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    r.job.clone(),
                    format!("{:?}", r.phase),
                    r.attempt.to_string(),
                    r.host.clone().unwrap_or_else(|| "-".into()),
                    age(r.scheduled),
                    r.reason.clone().unwrap_or_default(),
                ]
            })
            .collect(),
    );
    Ok(())
}

async fn hosts(api: &ApiClient, args: &GetArgs) -> anyhow::Result<()> {
    let mut hosts = api.hosts().await?;
    // By region, then name: a region's hosts together.
    hosts.sort_by(|a, b| (&a.info.region, &a.info.name).cmp(&(&b.info.region, &b.info.name)));
    if args.output == Output::Json {
        return print_json(&hosts);
    }
    table(
        &[
            "REGION", "NAME", "STATE", "ADDRESS", "ZONE", "MEMORY", "SLOTS", "LABELS",
        ],
        hosts
            .iter()
            .map(|h| {
                vec![
                    h.info.region.clone(),
                    h.info.name.clone(),
                    format!("{:?}", h.state),
                    h.info.address.clone(),
                    h.info.zone.clone(),
                    format!("{}Mi", h.info.capacity.memory >> 20),
                    h.info.capacity.instances.to_string(),
                    h.info
                        .labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(","),
                ]
            })
            .collect(),
    );
    Ok(())
}
