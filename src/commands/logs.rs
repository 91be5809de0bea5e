//! `dabba logs app NAME` (the output of the app's pods, from the hosts that ran them)
//! and `dabba logs job RUN` (a cron job run's output, attempt by attempt).
//!
//! `--follow` keeps printing new lines; when the controller answering goes away (a
//! failover), it asks another from the last line's time on, leaving out the lines it
//! already printed, so a follower sees each line once.

use std::collections::HashSet;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use clap::{Args, ValueEnum};
use dabba_client::logs::{LogQuery, LogSource};
use dabba_client::{ApiClient, ApiError};
use dabba_spec::HumanDuration;
use dabba_spec::api::LogLine;
use dabba_spec::resources::ResourceKey;

use super::block_on;
use super::target::ClusterArgs;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogsKind {
    /// An app's pods.
    App,
    /// One run of a cron job.
    Job,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    pub kind: LogsKind,
    pub name: String,
    /// Lines to show (per host, with --follow).
    #[arg(long, default_value_t = 100)]
    pub tail: usize,
    /// Only lines written this long ago or later, e.g. 10m.
    #[arg(long, value_name = "DURATION")]
    pub since: Option<HumanDuration>,
    /// Only this pod's lines (`dabba get pods` names them).
    #[arg(long, value_name = "POD")]
    pub pod: Option<String>,
    /// Keep printing lines as they are written (a job run's, until it ends).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Begin each line with the time it was written.
    #[arg(long)]
    pub timestamps: bool,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

pub fn logs(args: LogsArgs) -> anyhow::Result<()> {
    let api = args.cluster.client()?;
    let key = args.cluster.key(&args.name);
    let source = match args.kind {
        LogsKind::App => LogSource::App,
        LogsKind::Job => LogSource::Run,
    };
    if args.pod.is_some() && matches!(args.kind, LogsKind::Job) {
        bail!("--pod is for `dabba logs app`; a job run has one log");
    }
    let since = args
        .since
        .map(|d| unix_millis().saturating_sub(d.get().as_millis() as u64));
    let query = LogQuery {
        tail: Some(args.tail),
        since,
        pod: args.pod.clone(),
        follow: args.follow,
    };
    block_on(async move {
        let printed = print_logs(&api, source, &key, query, args.timestamps).await?;
        if printed == 0 && matches!(args.kind, LogsKind::Job) {
            stored_output(&api, &key).await?;
        }
        Ok(())
    })
}

/// Prints the lines (following them, across controller failovers, when asked); returns
/// how many.
async fn print_logs(
    api: &ApiClient,
    source: LogSource,
    key: &ResourceKey,
    mut query: LogQuery,
    timestamps: bool,
) -> anyhow::Result<usize> {
    let mut printed = 0;
    let mut printed_before = Printed::default();
    let mut opened = false;
    let mut warned = HashSet::new();
    let mut out = std::io::stdout().lock();
    loop {
        let mut stream = match api.logs(source, key, &query).await {
            Ok(s) => {
                opened = true;
                s
            }
            // Following, once the cluster answered: wait out a failover.
            Err(e) if query.follow && opened && transient(&e) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        for host in &stream.unreachable {
            if warned.insert(host.clone()) {
                eprintln!("warning: host {host} could not be reached; its lines are missing");
            }
        }
        let ended = loop {
            match stream.next().await {
                Some(Ok(l)) => {
                    if !printed_before.first_time(&l) {
                        continue;
                    }
                    print_line(&mut out, &l, timestamps)?;
                    printed += 1;
                }
                Some(Err(e)) => break Err(e),
                None => break Ok(()),
            }
        };
        if !query.follow {
            ended?;
            return Ok(printed);
        }
        match (ended, source) {
            // A run's log ends when the run has ended.
            (Ok(()), LogSource::Run) => return Ok(printed),
            (Ok(()), LogSource::App) => tokio::time::sleep(Duration::from_secs(1)).await,
            (Err(_), _) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
        // Ask again from the newest line's time on (the lines of that millisecond
        // already printed are left out).
        if let Some(t) = printed_before.newest {
            query.since = Some(t);
            query.tail = None;
        }
    }
}

/// The newest time printed, and the lines printed with it: asked again from that time
/// on, those come again and are left out.
#[derive(Default)]
struct Printed {
    newest: Option<u64>,
    at_newest: HashSet<(String, String, String)>,
}

impl Printed {
    /// Whether `l` is new (and now printed).
    fn first_time(&mut self, l: &LogLine) -> bool {
        let id = (l.host.clone(), l.pod.clone(), l.line.clone());
        match self.newest {
            Some(t) if l.t == t => self.at_newest.insert(id),
            // Another host's older line: the newest time only moves on.
            Some(t) if l.t < t => true,
            _ => {
                self.newest = Some(l.t);
                self.at_newest = HashSet::from([id]);
                true
            }
        }
    }
}

/// A failure another controller may not have (this one went away, or has no leader).
fn transient(e: &ApiError) -> bool {
    match e {
        ApiError::Unavailable(_) => true,
        ApiError::Status { status, .. } => *status >= 500,
        _ => false,
    }
}

fn print_line(out: &mut impl Write, l: &LogLine, timestamps: bool) -> std::io::Result<()> {
    if timestamps {
        let t = jiff::Timestamp::from_millisecond(l.t as i64).unwrap_or_default();
        write!(out, "{t:.3} ")?;
    }
    match l.stream.as_str() {
        "stdout" => writeln!(out, "[{}] {}", l.pod, l.line)?,
        other => writeln!(out, "[{}] ({other}) {}", l.pod, l.line)?,
    }
    out.flush()
}

/// A run no host holds a log of any more: the end of its output, kept with the run.
async fn stored_output(api: &ApiClient, key: &ResourceKey) -> anyhow::Result<()> {
    let jobs = api.cron_jobs(Some(key.namespace())).await?;
    if let Some(run) = jobs
        .iter()
        .flat_map(|j| &j.runs)
        .find(|r| r.name == key.name())
        && !run.output.is_empty()
    {
        eprintln!(
            "(no host holds this run's log any more; the end of its output, kept with the run:)"
        );
        print!("{}", run.output);
    }
    Ok(())
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(t: u64, text: &str) -> LogLine {
        LogLine {
            host: "h1".into(),
            pod: "p".into(),
            t,
            stream: "stdout".into(),
            line: text.into(),
        }
    }

    #[test]
    fn lines_asked_again_from_the_newest_time_are_printed_once() {
        let mut p = Printed::default();
        let first: Vec<bool> = [line(1, "a"), line(2, "b"), line(2, "c")]
            .iter()
            .map(|l| p.first_time(l))
            .collect();
        assert_eq!(first, [true, true, true]);
        // Asked again from t = 2: b and c come again, d is new.
        let again: Vec<bool> = [line(2, "b"), line(2, "c"), line(2, "d"), line(3, "e")]
            .iter()
            .map(|l| p.first_time(l))
            .collect();
        assert_eq!(again, [false, false, true, true]);
        assert_eq!(p.newest, Some(3));
        assert!(p.first_time(&line(1, "older, from another host")));
    }
}
