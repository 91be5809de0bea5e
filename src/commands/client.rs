//! The commands that talk to a cluster's API: `apply`, `get`, `describe`, `delete`,
//! `scale`, `logs`, `cluster`, `token`. They find the cluster through the CLI config
//! that `dabba up` writes (or `--server`/`--token`, or DABBA_SERVER/DABBA_TOKEN).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use dabba_host::ComponentBytes;
use dabba_spec::api::{
    AddMember, AppDetail, AppSummary, ClusterStatus, CronJobApply, CronJobView, LogLine,
    ScaleRequest, TokenRequest, TokenResponse, WatchResponse,
};
use dabba_spec::client::{ApiClient, ApiError};
use dabba_spec::cronjob::CronManifest;
use dabba_spec::resources::{App, Host, Pod, Revision, Role};
use dabba_spec::{Digest, Manifest};
use http::Method;
use serde::{Deserialize, Serialize};

/// Where the CLI finds its cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientConfig {
    pub servers: Vec<String>,
    pub token: String,
}

impl ClientConfig {
    fn default_path() -> anyhow::Result<PathBuf> {
        if let Some(p) = std::env::var_os("DABBA_CONFIG") {
            return Ok(PathBuf::from(p));
        }
        let home = std::env::var_os("HOME").context("HOME is not set; pass --config")?;
        Ok(PathBuf::from(home).join(".config/dabba/config.json"))
    }

    /// Writes the config (mode 0600: it holds a token) and returns where.
    pub fn save(&self, path: Option<&Path>) -> anyhow::Result<PathBuf> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => Self::default_path()?,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(self)?;
        dabba_controller::node::write_secret(&path, &text)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }

    pub fn client(&self) -> ApiClient {
        ApiClient::new(self.servers.clone(), self.token.clone())
    }
}

#[derive(Debug, Args)]
pub struct Target {
    /// Controller URLs, comma-separated. Default: from the CLI config.
    #[arg(long, global = true, env = "DABBA_SERVER", value_delimiter = ',')]
    pub server: Vec<String>,
    /// API token. Default: from the CLI config.
    #[arg(long, global = true, env = "DABBA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The CLI config file. Default: $DABBA_CONFIG, else ~/.config/dabba/config.json.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Namespace.
    #[arg(short, long, global = true, default_value = "default")]
    pub namespace: String,
}

impl Target {
    fn client(&self) -> anyhow::Result<ApiClient> {
        let stored = || -> anyhow::Result<ClientConfig> {
            let path = match &self.config {
                Some(p) => p.clone(),
                None => ClientConfig::default_path()?,
            };
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "cannot read the CLI config {} (run `dabba up`, or pass --server and --token)",
                    path.display()
                )
            })?;
            serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
        };
        let (servers, token) = match (self.server.is_empty(), &self.token) {
            (false, Some(t)) => (self.server.clone(), t.clone()),
            (false, None) => (self.server.clone(), stored()?.token),
            (true, Some(t)) => (stored()?.servers, t.clone()),
            (true, None) => {
                let c = stored()?;
                (c.servers, c.token)
            }
        };
        Ok(ApiClient::new(servers, token))
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The app manifest (TOML).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// Wait until the new revision's pods are all running.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "60s")]
    pub timeout: dabba_spec::HumanDuration,
    #[command(flatten)]
    pub target: Target,
}

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
}

#[derive(Debug, Args)]
pub struct GetArgs {
    pub kind: Kind,
    /// Only this app (revisions and pods).
    pub name: Option<String>,
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AppKind {
    App,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DescribeKind {
    App,
    Cronjob,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogsKind {
    /// An app's instances.
    App,
    /// One run of a cron job (its output is kept with it).
    Job,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CronKind {
    Cronjob,
}

/// `dabba suspend|resume cronjob NAME`.
#[derive(Debug, Args)]
pub struct CronArgs {
    pub kind: CronKind,
    pub name: String,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CreateKind {
    Job,
}

/// `dabba create job --from cronjob/NAME`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    pub kind: CreateKind,
    /// The cron job to run now, as `cronjob/NAME`.
    #[arg(long, value_name = "cronjob/NAME")]
    pub from: String,
    #[command(flatten)]
    pub target: Target,
}

/// Suspends or resumes a cron job.
pub fn suspend(args: CronArgs, suspend: bool) -> anyhow::Result<()> {
    let api = args.target.client()?;
    let ns = args.target.namespace.clone();
    let action = if suspend { "suspend" } else { "resume" };
    block_on(async move {
        api.send_json::<_, serde_json::Value>(
            Method::POST,
            &format!("/v1/cronjobs/{ns}/{}/{action}", args.name),
            &serde_json::json!({}),
        )
        .await?;
        println!("cronjob {ns}/{} {action}d", args.name);
        Ok(())
    })
}

/// Starts a manual run of a cron job.
pub fn create(args: CreateArgs) -> anyhow::Result<()> {
    let Some(name) = args.from.strip_prefix("cronjob/") else {
        bail!("--from takes cronjob/NAME, not `{}`", args.from);
    };
    let api = args.target.client()?;
    let ns = args.target.namespace.clone();
    block_on(async move {
        api.send_json::<_, serde_json::Value>(
            Method::POST,
            &format!("/v1/cronjobs/{ns}/{name}/run"),
            &serde_json::json!({}),
        )
        .await?;
        println!("a manual run of cronjob {ns}/{name} was created (see `dabba get jobs`)");
        Ok(())
    })
}

/// The cron jobs in `ns` as the API shows them.
async fn cron_jobs(api: &ApiClient, ns: &str) -> anyhow::Result<Vec<CronJobView>> {
    Ok(api.get(&format!("/v1/cronjobs?namespace={ns}")).await?)
}

fn describe_cronjob(j: &CronJobView) {
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

#[derive(Debug, Args)]
pub struct AppArgs {
    pub kind: DescribeKind,
    pub name: String,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    pub kind: DescribeKind,
    pub name: String,
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    pub kind: AppKind,
    pub name: String,
    #[arg(long)]
    pub replicas: u32,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    pub kind: LogsKind,
    pub name: String,
    /// Lines to show.
    #[arg(long, default_value_t = 100)]
    pub tail: usize,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Members, leader, term, commit index and each member's lag.
    Status {
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
        #[command(flatten)]
        target: Target,
    },
    /// Add a controller (started with the cluster's peer token) as a voter.
    Add {
        #[arg(long)]
        id: u64,
        #[arg(long, value_name = "URL")]
        address: String,
        #[command(flatten)]
        target: Target,
    },
    /// Remove a controller from the cluster.
    Remove {
        id: u64,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// viewer, deployer or admin.
    #[arg(long)]
    pub role: String,
    /// Limit the token to one namespace. Default: all.
    #[arg(long = "for-namespace")]
    pub for_namespace: Option<String>,
    /// A name for the token, shown in errors and audits.
    #[arg(long)]
    pub label: String,
    #[command(flatten)]
    pub target: Target,
}

fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Prints rows as aligned columns.
fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

fn age(at_ms: u64) -> String {
    let now = dabba_controller::node::now_millis();
    let s = now.saturating_sub(at_ms) / 1000;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// Uploads a manifest's component (if the cluster lacks it) and applies the app.
pub async fn apply_file(
    api: &ApiClient,
    file: &Path,
    wait: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let shown = file.display().to_string();
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {shown}"))?;
    if is_cron_manifest(&text) {
        return apply_cron_file(api, file, &text).await;
    }
    let manifest = Manifest::parse(&shown, &text)?;
    let base = file.parent().unwrap_or(Path::new("."));
    let component_path = base.join(&manifest.app.component);
    let wasm = ComponentBytes::read(&component_path).map_err(|e| {
        anyhow::anyhow!(
            "{shown}: field app.component: {e} (the path is relative to the manifest; build the samples with `cargo guests`)"
        )
    })?;
    wasm.check_header()
        .map_err(|e| anyhow::anyhow!("{shown}: field app.component: {e}"))?;
    let digest = wasm.digest;
    upload(api, &component_path, &wasm.bytes, digest).await?;
    let spec = manifest.to_spec(digest);
    let path = format!("/v1/apps/{}/{}", spec.namespace, spec.name);
    let app: App = api
        .send_json(Method::PUT, &path, &spec)
        .await
        .map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
    println!(
        "app {}/{} configured: revision {} ({} replica{}, route {})",
        spec.namespace,
        spec.name,
        app.revision,
        spec.replicas,
        if spec.replicas == 1 { "" } else { "s" },
        spec.route.prefix
    );
    if wait {
        wait_ready(api, &spec.namespace, &spec.name, app.revision, timeout).await?;
    }
    Ok(())
}

/// A manifest of `[[cron]]` tables and no `[app]`.
fn is_cron_manifest(text: &str) -> bool {
    let has = |header: &str| text.lines().any(|l| l.trim() == header);
    has("[[cron]]") && !has("[app]")
}

/// Uploads each cron job's component (if the cluster lacks it) and applies the job.
async fn apply_cron_file(api: &ApiClient, file: &Path, text: &str) -> anyhow::Result<()> {
    let shown = file.display().to_string();
    let manifest = CronManifest::parse(&shown, text)?;
    let base = file.parent().unwrap_or(Path::new("."));
    for (i, spec) in manifest.cron.into_iter().enumerate() {
        let path = base.join(&spec.component);
        let wasm = ComponentBytes::read(&path).map_err(|e| {
            anyhow::anyhow!(
                "{shown}: field cron[{i}].component: {e} (the path is relative to the manifest; build the samples with `cargo guests`)"
            )
        })?;
        wasm.check_header()
            .map_err(|e| anyhow::anyhow!("{shown}: field cron[{i}].component: {e}"))?;
        upload(api, &path, &wasm.bytes, wasm.digest).await?;
        let route = format!("/v1/cronjobs/{}/{}", spec.namespace, spec.name);
        let body = CronJobApply {
            spec: spec.clone(),
            component: wasm.digest,
        };
        api.send_json::<_, serde_json::Value>(Method::PUT, &route, &body)
            .await
            .map_err(|e| anyhow::anyhow!("{shown}: cron job {}: {e}", spec.name))?;
        println!(
            "cronjob {}/{} configured: `{}` ({}){}",
            spec.namespace,
            spec.name,
            spec.schedule,
            spec.timezone,
            if spec.suspend { ", suspended" } else { "" }
        );
    }
    Ok(())
}

pub async fn upload(
    api: &ApiClient,
    path: &Path,
    bytes: &[u8],
    digest: Digest,
) -> anyhow::Result<()> {
    let blob = format!("/v1/blobs/{digest}");
    match api
        .request(Method::HEAD, &blob, Bytes::new(), "application/wasm")
        .await
    {
        Ok(_) => {
            println!(
                "component {} ({}) already in the cluster",
                path.display(),
                digest.short()
            );
            return Ok(());
        }
        Err(ApiError::Status { status: 404, .. }) => {}
        Err(e) => return Err(e).context("checking for the component"),
    }
    print!(
        "uploading {} ({:.1} KiB, {})... ",
        path.display(),
        bytes.len() as f64 / 1024.0,
        digest.short()
    );
    std::io::stdout().flush()?;
    let started = Instant::now();
    api.request(
        Method::PUT,
        &blob,
        Bytes::copy_from_slice(bytes),
        "application/wasm",
    )
    .await
    .context("uploading the component")?;
    println!("done in {} ms", started.elapsed().as_millis());
    Ok(())
}

async fn wait_ready(
    api: &ApiClient,
    namespace: &str,
    name: &str,
    revision: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    let mut version = 0;
    loop {
        let d: AppDetail = api
            .get(&format!("/v1/apps/{namespace}/{name}"))
            .await
            .context("reading the app's rollout")?;
        let want = d.app.spec.replicas as usize;
        let of_rev: Vec<&Pod> = d.pods.iter().filter(|p| p.revision == revision).collect();
        let running = of_rev
            .iter()
            .filter(|p| p.phase == dabba_spec::resources::PodPhase::Running)
            .count();
        let old = d.pods.iter().filter(|p| p.revision != revision).count();
        let status = format!(
            "revision {revision}: {running}/{want} running{}",
            if old > 0 {
                format!(", {old} old pod(s) draining")
            } else {
                String::new()
            }
        );
        if status != last {
            println!("  {status}");
            last = status;
        }
        if let Some(f) = of_rev
            .iter()
            .find(|p| p.phase == dabba_spec::resources::PodPhase::Failed)
        {
            bail!(
                "pod {} failed: {}",
                f.name,
                f.reason.as_deref().unwrap_or("no reason given")
            );
        }
        if running == want && old == 0 {
            println!("app {namespace}/{name} is ready");
            return Ok(());
        }
        if Instant::now() > deadline {
            let pending: Vec<String> = of_rev
                .iter()
                .filter_map(|p| p.reason.as_ref().map(|r| format!("{}: {r}", p.name)))
                .collect();
            bail!(
                "app {namespace}/{name} was not ready within {timeout:?} ({last}){}",
                if pending.is_empty() {
                    String::new()
                } else {
                    format!("; {}", pending.join("; "))
                }
            );
        }
        // Long-poll until the state changes, instead of polling on a timer.
        let w: WatchResponse = api
            .get(&format!("/v1/watch?since={version}&wait_ms=1000"))
            .await
            .context("watching the rollout")?;
        version = w.version;
    }
}

pub fn apply(args: ApplyArgs) -> anyhow::Result<()> {
    let api = args.target.client()?;
    block_on(apply_file(&api, &args.file, args.wait, args.timeout.get()))
}

pub fn get(args: GetArgs) -> anyhow::Result<()> {
    let api = args.target.client()?;
    let ns = &args.target.namespace;
    let app_filter = args
        .name
        .as_ref()
        .map(|n| format!("&app={n}"))
        .unwrap_or_default();
    block_on(async move {
        match args.kind {
            Kind::Apps => {
                let apps: Vec<AppSummary> = api.get(&format!("/v1/apps?namespace={ns}")).await?;
                if let Output::Json = args.output {
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
                                Some(s) => (s.mode.clone(), s.reason.clone()),
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
            }
            Kind::Revisions => {
                let revs: Vec<Revision> = api
                    .get(&format!("/v1/revisions?namespace={ns}{app_filter}"))
                    .await?;
                if let Output::Json = args.output {
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
            }
            Kind::Pods => {
                let pods: Vec<Pod> = api
                    .get(&format!("/v1/pods?namespace={ns}{app_filter}"))
                    .await?;
                if let Output::Json = args.output {
                    return print_json(&pods);
                }
                table(
                    &["NAME", "APP", "REVISION", "PHASE", "HOST", "AGE", "REASON"],
                    pods.iter()
                        .map(|p| {
                            vec![
                                p.name.clone(),
                                p.app.clone(),
                                p.revision.to_string(),
                                format!("{:?}", p.phase),
                                p.host.clone().unwrap_or_else(|| "-".into()),
                                age(p.created_at),
                                p.reason.clone().unwrap_or_default(),
                            ]
                        })
                        .collect(),
                );
            }
            Kind::Cronjobs | Kind::Jobs => {
                let jobs: Vec<CronJobView> =
                    api.get(&format!("/v1/cronjobs?namespace={ns}")).await?;
                let jobs: Vec<CronJobView> = jobs
                    .into_iter()
                    .filter(|j| {
                        matches!(args.kind, Kind::Jobs)
                            || args.name.as_deref().is_none_or(|n| n == j.job.spec.name)
                    })
                    .collect();
                if let Kind::Cronjobs = args.kind {
                    if let Output::Json = args.output {
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
                } else {
                    let runs: Vec<_> = jobs
                        .iter()
                        .flat_map(|j| j.runs.iter())
                        .filter(|r| args.name.as_deref().is_none_or(|n| n == r.job))
                        .cloned()
                        .collect();
                    if let Output::Json = args.output {
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
                }
            }
            Kind::Hosts => {
                let hosts: Vec<Host> = api.get("/v1/hosts").await?;
                if let Output::Json = args.output {
                    return print_json(&hosts);
                }
                table(
                    &[
                        "NAME", "STATE", "ADDRESS", "REGION", "ZONE", "MEMORY", "SLOTS", "LABELS",
                    ],
                    hosts
                        .iter()
                        .map(|h| {
                            vec![
                                h.info.name.clone(),
                                format!("{:?}", h.state),
                                h.info.address.clone(),
                                h.info.region.clone(),
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
            }
        }
        Ok(())
    })
}

pub fn describe(args: DescribeArgs) -> anyhow::Result<()> {
    let api = args.target.client()?;
    let ns = args.target.namespace.clone();
    block_on(async move {
        if let DescribeKind::Cronjob = args.kind {
            let jobs = cron_jobs(&api, &ns).await?;
            let Some(j) = jobs.iter().find(|j| j.job.spec.name == args.name) else {
                bail!("no cron job {ns}/{}", args.name);
            };
            if let Output::Json = args.output {
                return print_json(j);
            }
            describe_cronjob(j);
            return Ok(());
        }
        let d: AppDetail = api.get(&format!("/v1/apps/{ns}/{}", args.name)).await?;
        if let Output::Json = args.output {
            return print_json(&d);
        }
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
                "  {}  r{}  {:?}  {}{}",
                p.name,
                p.revision,
                p.phase,
                p.host.as_deref().unwrap_or("-"),
                p.reason
                    .as_deref()
                    .map(|r| format!("  ({r})"))
                    .unwrap_or_default()
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
        Ok(())
    })
}

pub fn delete(args: AppArgs) -> anyhow::Result<()> {
    let api = args.target.client()?;
    let ns = args.target.namespace.clone();
    block_on(async move {
        let (path, what) = match args.kind {
            DescribeKind::App => ("apps", "app"),
            DescribeKind::Cronjob => ("cronjobs", "cronjob"),
        };
        api.request(
            Method::DELETE,
            &format!("/v1/{path}/{ns}/{}", args.name),
            Bytes::new(),
            "application/json",
        )
        .await?;
        println!("{what} {ns}/{} deleted", args.name);
        Ok(())
    })
}

pub fn scale(args: ScaleArgs) -> anyhow::Result<()> {
    let api = args.target.client()?;
    let ns = args.target.namespace.clone();
    block_on(async move {
        let app: App = api
            .send_json(
                Method::POST,
                &format!("/v1/apps/{ns}/{}/scale", args.name),
                &ScaleRequest {
                    replicas: args.replicas,
                },
            )
            .await?;
        println!(
            "app {ns}/{} scaled to {} replicas (revision {})",
            args.name, app.spec.replicas, app.revision
        );
        Ok(())
    })
}

pub fn logs(args: LogsArgs) -> anyhow::Result<()> {
    let api = args.target.client()?;
    let ns = args.target.namespace.clone();
    block_on(async move {
        if let LogsKind::Job = args.kind {
            let jobs = cron_jobs(&api, &ns).await?;
            let Some(run) = jobs
                .iter()
                .flat_map(|j| &j.runs)
                .find(|r| r.name == args.name)
            else {
                bail!("no job run {ns}/{} (see `dabba get jobs`)", args.name);
            };
            print!("{}", run.output);
            return Ok(());
        }
        let lines: Vec<LogLine> = api
            .get(&format!(
                "/v1/apps/{ns}/{}/logs?tail={}",
                args.name, args.tail
            ))
            .await?;
        for l in lines {
            println!("[{}] {}: {}", l.host, l.stream, l.line);
        }
        Ok(())
    })
}

pub fn cluster(cmd: ClusterCommand) -> anyhow::Result<()> {
    block_on(async move {
        let status = match &cmd {
            ClusterCommand::Status { target, .. } => target.client()?.get("/v1/cluster").await?,
            ClusterCommand::Add {
                id,
                address,
                target,
            } => {
                target
                    .client()?
                    .send_json::<_, ClusterStatus>(
                        Method::POST,
                        "/v1/cluster/members",
                        &AddMember {
                            id: *id,
                            address: address.clone(),
                        },
                    )
                    .await?
            }
            ClusterCommand::Remove { id, target } => {
                let bytes = target
                    .client()?
                    .request(
                        Method::DELETE,
                        &format!("/v1/cluster/members/{id}"),
                        Bytes::new(),
                        "application/json",
                    )
                    .await?;
                serde_json::from_slice(&bytes)?
            }
        };
        if let ClusterCommand::Status {
            output: Output::Json,
            ..
        } = cmd
        {
            return print_json(&status);
        }
        print_status(&status);
        Ok(())
    })
}

fn print_status(s: &ClusterStatus) {
    println!(
        "leader: {}   term: {}   commit index: {}   applied index: {}   state version: {}",
        s.leader.map_or("none".into(), |l| l.to_string()),
        s.term,
        s.commit_index.map_or("-".into(), |c| c.to_string()),
        s.applied_index.map_or("-".into(), |c| c.to_string()),
        s.version
    );
    table(
        &["ID", "ADDRESS", "ROLE", "LAG"],
        s.members
            .iter()
            .map(|m| {
                let role = if Some(m.id) == s.leader {
                    "leader"
                } else if m.voter {
                    "follower"
                } else {
                    "learner"
                };
                vec![
                    m.id.to_string(),
                    m.address.clone(),
                    role.into(),
                    m.lag.map_or("-".into(), |l| l.to_string()),
                ]
            })
            .collect(),
    );
}

pub fn token(args: TokenArgs) -> anyhow::Result<()> {
    let role = match args.role.as_str() {
        "viewer" => Role::Viewer,
        "deployer" => Role::Deployer,
        "admin" => Role::Admin,
        other => bail!("--role `{other}`: expected viewer, deployer or admin"),
    };
    let api = args.target.client()?;
    block_on(async move {
        let t: TokenResponse = api
            .send_json(
                Method::POST,
                "/v1/tokens",
                &TokenRequest {
                    role,
                    namespace: args.for_namespace.clone(),
                    label: args.label.clone(),
                },
            )
            .await?;
        println!("{}", t.token);
        Ok(())
    })
}
