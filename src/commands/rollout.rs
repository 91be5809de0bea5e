//! `dabba rollout status|promote|abort|retry|pause|resume|undo APP`, in the habits of
//! `kubectl argo rollouts`, and how a rollout prints (shared with `get rollouts` and
//! `describe app`).
//!
//! `rollout status` exits with a code scripts can use: 0 Healthy, 1 Degraded (aborted,
//! or past its progress deadline), 3 paused for a person, 4 timed out (`--watch`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use dabba_spec::analysis::AnalysisPhase;
use dabba_spec::api::{RolloutAction, RolloutView};
use dabba_spec::rollout::{RolloutPhase, Strategy};

use super::output::{Output, age, print_json, table};
use super::target::ClusterArgs;

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Show an app's rollout: step, weights set and observed, analysis, what it waits
    /// for. Exits 0 Healthy, 1 Degraded, 3 paused for a person, 4 timed out.
    Status(StatusArgs),
    /// Move past the current step or pause (`--full`: to the end, skipping analysis).
    Promote(PromoteArgs),
    /// Stop the rollout: the canary takes no more requests (one Raft entry).
    Abort(AppArgs),
    /// Start an aborted rollout again from its first step.
    Retry(AppArgs),
    /// Hold the rollout where it is.
    Pause(AppArgs),
    /// Go on after a pause or an inconclusive analysis (which runs again).
    Resume(AppArgs),
    /// Serve an earlier revision again (default: the stable one, or the one before).
    Undo(UndoArgs),
}

#[derive(Debug, Args)]
pub struct AppArgs {
    pub app: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    pub app: String,
    /// Keep printing until the rollout is Healthy, Degraded or paused for a person.
    #[arg(short, long)]
    pub watch: bool,
    /// Give up watching after this long (exit 4).
    #[arg(long, default_value = "10m")]
    pub timeout: dabba_spec::HumanDuration,
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    pub app: String,
    /// Skip every remaining step and analysis.
    #[arg(long)]
    pub full: bool,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Debug, Args)]
pub struct UndoArgs {
    pub app: String,
    #[arg(long)]
    pub to_revision: Option<u64>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

pub fn rollout(cmd: RolloutCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let (cluster, action) = match cmd {
            RolloutCommand::Status(args) => return status(args).await,
            RolloutCommand::Undo(args) => {
                let api = args.cluster.client()?;
                let key = args.cluster.key(&args.app);
                let app = api.undo(&key, args.to_revision).await?;
                println!("app {key}: revision {} serves again", app.revision);
                return Ok(ExitCode::SUCCESS);
            }
            RolloutCommand::Promote(a) => (
                AppArgs {
                    app: a.app,
                    cluster: a.cluster,
                },
                RolloutAction::Promote { full: a.full },
            ),
            RolloutCommand::Abort(a) => (a, RolloutAction::Abort),
            RolloutCommand::Retry(a) => (a, RolloutAction::Retry),
            RolloutCommand::Pause(a) => (a, RolloutAction::Pause),
            RolloutCommand::Resume(a) => (a, RolloutAction::Resume),
        };
        let api = cluster.cluster.client()?;
        let key = cluster.cluster.key(&cluster.app);
        let view = api.rollout_action(&key, action).await?;
        println!("app {key}: {}", summary(&view));
        Ok(ExitCode::SUCCESS)
    })
}

async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let api = args.cluster.client()?;
    let key = args.cluster.key(&args.app);
    let deadline = Instant::now() + args.timeout.get();
    loop {
        let view = api.rollout(&key).await?;
        if args.output == Output::Json {
            print_json(&view)?;
        } else {
            print!("{}", render(&view));
        }
        let code = exit_code(&view);
        if !args.watch || code.is_some() {
            return Ok(ExitCode::from(code.unwrap_or(0)));
        }
        if Instant::now() >= deadline {
            eprintln!("timed out after {} waiting for {key}", args.timeout);
            return Ok(ExitCode::from(4));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        println!();
    }
}

/// The exit code of a rollout that needs no more watching (`None`: it is moving).
fn exit_code(v: &RolloutView) -> Option<u8> {
    let r = &v.status;
    if r.aborted || r.phase == RolloutPhase::Degraded {
        return Some(1);
    }
    if r.canary.is_none() {
        return Some(0);
    }
    match r.paused {
        // Paused until a person acts (a pause step without a time, a preview waiting
        // for promotion, an inconclusive analysis); a person's own pause too.
        Some(p) if p.until.is_none() => Some(3),
        _ => None,
    }
}

/// One line: phase, step, weight.
pub fn summary(v: &RolloutView) -> String {
    let r = &v.status;
    let step = match (r.strategy, r.canary) {
        (Strategy::Canary, Some(_)) => format!(", step {}", step_of(v)),
        _ => String::new(),
    };
    let message = if r.message.is_empty() {
        String::new()
    } else {
        format!(": {}", r.message)
    };
    format!("{:?}{step}, weight {}%{message}", r.phase, r.weight)
}

fn step_of(v: &RolloutView) -> String {
    let n = v.steps.len() as u32;
    format!("{}/{n}", (v.status.step + 1).min(n))
}

/// The whole status, as `rollout status` prints it.
pub fn render(v: &RolloutView) -> String {
    let r = &v.status;
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!("Name:        {}/{}", v.namespace, v.app));
    line(format!("Strategy:    {:?}", r.strategy));
    line(format!(
        "Status:      {:?}{}",
        r.phase,
        if r.message.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.message)
        }
    ));
    line(format!("Stable:      revision {}", r.stable));
    if let Some(c) = r.canary {
        line(format!("Canary:      revision {c}"));
        if r.strategy == Strategy::Canary {
            line(format!("Step:        {}", step_of(v)));
        }
        let observed = v.observed.map_or("no requests yet".into(), |o| {
            format!(
                "{:.1}% of {} requests in the last {} s",
                o.canary_percent,
                o.requests,
                o.window_ms / 1000
            )
        });
        line(format!(
            "Weight:      set {}%, observed {observed}",
            r.weight
        ));
        if let Some(h) = &r.header_route {
            line(format!("Header route: {}", h.name));
        }
    }
    if !v.waiting_for.is_empty() {
        line(format!("Waiting for: {}", v.waiting_for));
    }
    if !v.steps.is_empty() {
        line("Steps:".into());
        for (i, s) in v.steps.iter().enumerate() {
            let mark = match (r.canary, (i as u32).cmp(&r.step)) {
                (None, _) | (_, std::cmp::Ordering::Less) => "✔",
                (Some(_), std::cmp::Ordering::Equal) => "▶",
                _ => " ",
            };
            line(format!("  {mark} {:>2}. {s}", i + 1));
        }
    }
    if !r.analysis.is_empty() {
        line("Analysis:".into());
        for run in r.analysis.iter().rev().take(6) {
            line(format!(
                "  {:?} of revision {} ({:?}, started {} ago)",
                run.kind,
                run.revision,
                run.phase(),
                age(run.started)
            ));
            for m in &run.metrics {
                let key = format!("{}/{}", m.template, m.metric);
                let cond = v.conditions.get(&key).cloned().unwrap_or_default();
                let values: Vec<String> = m
                    .measurements
                    .iter()
                    .rev()
                    .take(5)
                    .rev()
                    .map(|x| {
                        let mark = match x.phase {
                            AnalysisPhase::Successful => "✔",
                            AnalysisPhase::Failed => "✖",
                            AnalysisPhase::Inconclusive => "?",
                            AnalysisPhase::Error => "!",
                            AnalysisPhase::Running => "…",
                        };
                        let value = x.value.map_or("-".into(), |v| format!("{v:.3}"));
                        match x.requests {
                            Some(n) => format!("{value}/{n}req{mark}"),
                            None => format!("{value}{mark}"),
                        }
                    })
                    .collect();
                line(format!(
                    "    {key} [{cond}]: {:?}, {} measured ({} ok, {} failed, {} inconclusive, {} errors) {}",
                    m.phase,
                    m.taken,
                    m.successes,
                    m.failures,
                    m.inconclusive,
                    m.errors,
                    values.join(" ")
                ));
            }
        }
    }
    out
}

/// `get rollouts` as a table.
pub fn print_table(views: &[RolloutView]) {
    table(
        &[
            "NAME",
            "STRATEGY",
            "STATUS",
            "STEP",
            "SET WEIGHT",
            "ACTUAL WEIGHT",
            "STABLE",
            "CANARY",
            "MESSAGE",
        ],
        views
            .iter()
            .map(|v| {
                let r = &v.status;
                vec![
                    v.app.clone(),
                    format!("{:?}", r.strategy),
                    format!("{:?}", r.phase),
                    match (r.strategy, r.canary) {
                        (Strategy::Canary, Some(_)) => step_of(v),
                        _ => "-".into(),
                    },
                    r.weight.to_string(),
                    v.observed
                        .map_or("-".into(), |o| format!("{:.1}", o.canary_percent)),
                    r.stable.to_string(),
                    r.canary.map_or("-".into(), |c| c.to_string()),
                    r.message.clone(),
                ]
            })
            .collect(),
    );
}

#[cfg(test)]
mod tests {
    use dabba_spec::rollout::{PauseReason, Paused, RolloutStatus};

    use super::*;

    fn view(status: RolloutStatus) -> RolloutView {
        RolloutView {
            namespace: "default".into(),
            app: "search".into(),
            status,
            steps: vec!["set_weight 5".into(), "pause (until promoted)".into()],
            conditions: Default::default(),
            observed: None,
            waiting_for: String::new(),
        }
    }

    #[test]
    fn exit_codes_tell_scripts_how_it_stands() {
        let mut s = RolloutStatus::begin(Strategy::Canary, 1, 2, 0);
        assert_eq!(exit_code(&view(s.clone())), None, "moving: keep watching");
        s.paused = Some(Paused {
            reason: PauseReason::Step,
            since: 0,
            until: Some(5),
        });
        assert_eq!(
            exit_code(&view(s.clone())),
            None,
            "a timed pause ends by itself"
        );
        s.paused = Some(Paused {
            reason: PauseReason::Inconclusive,
            since: 0,
            until: None,
        });
        assert_eq!(exit_code(&view(s.clone())), Some(3));
        s.aborted = true;
        assert_eq!(exit_code(&view(s.clone())), Some(1));
        let mut done = RolloutStatus::begin(Strategy::Canary, 1, 2, 0);
        done.canary = None;
        done.phase = RolloutPhase::Healthy;
        assert_eq!(exit_code(&view(done)), Some(0));
    }

    #[test]
    fn status_shows_the_step_and_both_weights() {
        let mut s = RolloutStatus::begin(Strategy::Canary, 1, 2, 0);
        s.weight = 5;
        let mut v = view(s);
        v.observed = Some(dabba_spec::api::ObservedSplit {
            canary_percent: 4.9,
            requests: 1000,
            window_ms: 10_000,
        });
        let text = render(&v);
        assert!(text.contains("Step:        1/2"), "{text}");
        assert!(
            text.contains("set 5%, observed 4.9% of 1000 requests in the last 10 s"),
            "{text}"
        );
        assert!(text.contains("▶  1. set_weight 5"), "{text}");
    }
}
