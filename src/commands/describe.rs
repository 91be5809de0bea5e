//! `dabba describe app|cronjob|analysistemplate|secret|namespace NAME`: everything about
//! one object, or `-o json`.

use anyhow::bail;
use clap::Args;
use dabba_spec::api::{AppDetail, CronJobView};

use super::output::{Output, age, print_json};
use super::target::ClusterArgs;
use super::{ObjectKind, block_on};

#[derive(Debug, Args)]
pub struct DescribeArgs {
    pub kind: ObjectKind,
    pub name: String,
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

pub fn describe(args: DescribeArgs) -> anyhow::Result<()> {
    let api = args.cluster.client()?;
    let key = args.cluster.key(&args.name);
    block_on(async move {
        match args.kind {
            ObjectKind::Cronjob => {
                let jobs = api.cron_jobs(Some(key.namespace())).await?;
                let Some(j) = jobs.iter().find(|j| j.job.spec.name == key.name()) else {
                    bail!("no cron job {key}");
                };
                if args.output == Output::Json {
                    return print_json(j);
                }
                print_cron_job(j);
            }
            ObjectKind::Analysistemplate => {
                let all = api.analysis_templates(Some(key.namespace())).await?;
                let Some(t) = all.iter().find(|t| t.template.name == key.name()) else {
                    bail!("no analysis template {key}");
                };
                if args.output == Output::Json {
                    return print_json(t);
                }
                println!("Name:        {}", t.template.name);
                println!("Namespace:   {}", t.namespace);
                println!("Metrics:");
                for m in &t.template.metrics {
                    println!("  {}", serde_json::to_string(m)?);
                }
            }
            ObjectKind::Role | ObjectKind::Rolebinding => {
                bail!("`dabba get roles` and `dabba get rolebindings` show them whole")
            }
            ObjectKind::Namespace => {
                let v = api.namespace(&args.name).await?;
                if args.output == Output::Json {
                    return print_json(&v);
                }
                print_namespace(&v);
            }
            ObjectKind::Secret => {
                let key = super::secret::secret_key(&args.cluster, &args.name);
                let s = api.secret(&key).await?;
                if args.output == Output::Json {
                    return print_json(&s);
                }
                super::secret::print_secret(&s);
            }
            ObjectKind::App => {
                let d = api.app(&key).await?;
                if args.output == Output::Json {
                    return print_json(&d);
                }
                print_app(&d);
            }
        }
        Ok(())
    })
}

fn print_app(d: &AppDetail) {
    let s = &d.app.spec;
    println!("Name:        {}", s.name);
    println!("Namespace:   {}", s.namespace);
    println!(
        "Route:       {}{}",
        s.route
            .host
            .as_deref()
            .map(|h| format!("{h} "))
            .unwrap_or_default(),
        s.route.prefix
    );
    println!("Revision:    {}", d.app.revision);
    println!("Replicas:    {}", s.replicas);
    println!("Component:   {}", s.component);
    println!(
        "Limits:      {}",
        serde_json::to_string(&s.limits).unwrap_or_default()
    );
    if !s.node_selector.is_empty() {
        println!("Selector:    {:?}", s.node_selector);
    }
    if let Some(scale) = &s.scale {
        let target = match (scale.target_rps, scale.target_concurrency) {
            (Some(r), _) => format!("{r} requests/s per pod"),
            (None, c) => format!(
                "{} in flight per pod",
                c.unwrap_or(dabba_spec::scale::DEFAULT_TARGET_CONCURRENCY)
            ),
        };
        println!(
            "Scale:       {}..{} pods, target {target} at {}%, to zero after {}",
            scale.min, scale.max, scale.target_utilization, scale.scale_to_zero_after
        );
    }
    if let Some(a) = &d.autoscaler {
        println!(
            "Autoscaler:  {} (desired {}, demand {:.1}): {}",
            a.mode, a.desired, a.demand, a.reason
        );
    }
    if let Some(r) = &d.rollout {
        println!("\nRollout:");
        for l in super::rollout::render(r).lines().skip(1) {
            println!("  {l}");
        }
    }
    println!("\nRevisions:");
    for r in &d.revisions {
        println!(
            "  {:>3}  {}  {} replicas  {} ago",
            r.number,
            r.spec.component.short(),
            r.spec.replicas,
            age(r.created_at)
        );
    }
    println!("\nPods:");
    for p in &d.pods {
        println!(
            "  {}  r{}  {:?}  {}{}{}",
            p.name,
            p.revision,
            p.phase,
            p.host.as_deref().unwrap_or("-"),
            match p.restarts {
                0 => String::new(),
                n => format!("  restarts {n}"),
            },
            p.why().map(|r| format!("  ({r})")).unwrap_or_default()
        );
    }
    println!("\nScaling events:");
    for e in d.events.iter().filter(|e| e.reason == "Scaled") {
        println!("  {:>5} ago  {}", age(e.at), e.message);
    }
    println!("\nEvents:");
    for e in &d.events {
        println!(
            "  {:>5} ago  {}  {}  {}",
            age(e.at),
            e.reason,
            e.object,
            e.message
        );
    }
}

fn print_cron_job(j: &CronJobView) {
    let s = &j.job.spec;
    let tz = dabba_spec::cron::time_zone(&s.timezone).ok();
    let when = |ms: u64| match (&tz, jiff::Timestamp::from_millisecond(ms as i64)) {
        (Some(tz), Ok(t)) => dabba_spec::cron::rfc3339_in(t, tz),
        _ => ms.to_string(),
    };
    println!("Name:               {}", s.name);
    println!("Namespace:          {}", s.namespace);
    println!("Schedule:           {} ({})", s.schedule, s.timezone);
    println!("Suspend:            {}", s.suspend);
    println!("Concurrency policy: {:?}", s.concurrency_policy);
    println!(
        "Deadlines:          starting {}, active {}",
        s.starting_deadline.map_or("none".into(), |d| d.to_string()),
        s.active_deadline.map_or("none".into(), |d| d.to_string())
    );
    println!(
        "Retries:            {} (10 s doubling, at most 6 min apart)",
        s.backoff_limit
    );
    println!(
        "History:            {} succeeded, {} failed",
        s.successful_history, s.failed_history
    );
    println!("Component:          {}", j.job.component);
    println!(
        "Last scheduled:     {}",
        j.job.last_scheduled.map_or("never".into(), when)
    );
    println!("\nNext runs:");
    for t in &j.next {
        println!("  {t}");
    }
    println!("\nMissed: {} in all", j.job.missed_total);
    for t in &j.job.missed {
        println!("  {}", when(*t));
    }
    println!("\nRuns:");
    for r in &j.runs {
        println!(
            "  {}  {:?}  attempt {}  {}  exit {}  {}{}",
            r.name,
            r.phase,
            r.attempt,
            r.host.as_deref().unwrap_or("-"),
            r.exit_code.map_or("-".into(), |c| c.to_string()),
            r.duration_ms.map_or("-".into(), |d| format!("{d} ms")),
            r.reason
                .as_deref()
                .map(|x| format!("  ({x})"))
                .unwrap_or_default()
        );
    }
}

/// `dabba describe namespace`: the quota as `kubectl describe quota` shows it (used
/// against allowed), then the limit range.
fn print_namespace(v: &dabba_spec::quota::NamespaceView) {
    use dabba_spec::ByteSize;
    println!("Name:        {}", v.namespace);
    let u = &v.used;
    let fuel = u
        .fuel_per_second
        .map_or("unbounded".to_string(), |f| f.to_string());
    let q = v.policy.quota.clone().unwrap_or_default();
    let hard = |h: Option<u64>| h.map_or("-".to_string(), |h| h.to_string());
    println!("Quota:       RESOURCE          USED          ALLOWED");
    for (what, used, allowed) in [
        ("apps", u.apps.to_string(), hard(q.apps)),
        ("pods", u.pods.to_string(), hard(q.pods)),
        ("cron_jobs", u.cron_jobs.to_string(), hard(q.cron_jobs)),
        (
            "memory",
            ByteSize::bytes(u.memory).to_string(),
            q.memory.map_or("-".to_string(), |m| m.to_string()),
        ),
        ("fuel_per_second", fuel, hard(q.fuel_per_second)),
    ] {
        println!("             {what:<17} {used:<13} {allowed}");
    }
    match &v.policy.limit_range {
        None => println!("Limit range: none"),
        Some(r) => {
            println!("Limit range:");
            for (name, o) in [("default", &r.default), ("min", &r.min), ("max", &r.max)] {
                println!(
                    "  {name:<8} {}",
                    serde_json::to_string(o).unwrap_or_default()
                );
            }
        }
    }
}
