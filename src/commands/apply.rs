//! `dabba apply -f FILE`: an app manifest (`[app]`), cron jobs (`[[cron]]`), analysis
//! templates alone (`[[analysis]]`, applied to the namespace for any rollout there), or
//! a namespace's quota and limit range (`[namespace]`, `dabba_spec::quota`). The
//! manifest is parsed and checked first (errors name the file, line and field, and
//! nothing is sent); each component is uploaded if the cluster lacks its digest; then
//! the app or jobs are applied. `--wait` follows the new revision until it runs.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use dabba_client::ApiClient;
use dabba_host::ComponentBytes;
use dabba_spec::analysis::{AnalysisManifest, AnalysisTemplate};
use dabba_spec::api::CronJobApply;
use dabba_spec::cronjob::CronManifest;
use dabba_spec::resources::{Pod, PodPhase, ResourceKey};
use dabba_spec::rollout::Strategy;
use dabba_spec::{Digest, Manifest};

use super::block_on;
use super::target::ClusterArgs;

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The manifest (TOML): an `[app]`, `[[cron]]` jobs, or `[[analysis]]` templates.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// Wait until the new revision's pods are all running.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "60s")]
    pub timeout: dabba_spec::HumanDuration,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

pub fn apply(args: ApplyArgs) -> anyhow::Result<()> {
    let api = args.cluster.client()?;
    block_on(apply_file(
        &api,
        &args.file,
        &args.cluster.namespace,
        args.wait,
        args.timeout.get(),
    ))
}

/// Applies the manifest in `file`: uploads its components (if the cluster lacks them)
/// and applies the app or the cron jobs.
pub async fn apply_file(
    api: &ApiClient,
    file: &Path,
    namespace: &str,
    wait: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let shown = file.display().to_string();
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {shown}"))?;
    if has_table(&text, "[namespace]") {
        let m = dabba_spec::quota::NamespaceManifest::parse(&shown, &text)?;
        let view = api
            .set_namespace_policy(&m.namespace.name, &m.policy())
            .await
            .map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
        println!(
            "namespace {} configured: quota {}, limit range {}",
            view.namespace,
            if view.policy.quota.is_some() {
                "set"
            } else {
                "none"
            },
            if view.policy.limit_range.is_some() {
                "set"
            } else {
                "none"
            },
        );
        return Ok(());
    }
    if is_cron_manifest(&text) {
        return apply_cron_file(api, file, &text).await;
    }
    if is_analysis_manifest(&text) {
        return apply_analysis_file(api, file, &text, namespace).await;
    }
    let manifest = Manifest::parse(&shown, &text)?;
    let base = file.parent().unwrap_or(Path::new("."));
    let wasm = read_component(&shown, "app.component", &base.join(&manifest.app.component))?;
    upload(api, &wasm).await?;
    let mut spec = manifest.to_spec(wasm.digest);
    upload_checks(api, &shown, base, &mut spec.analysis).await?;
    let app = api
        .apply_app(&spec)
        .await
        .map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
    println!(
        "app {} configured: revision {} ({} replica{}, route {})",
        spec.key(),
        app.revision,
        spec.replicas,
        if spec.replicas == 1 { "" } else { "s" },
        spec.route.prefix
    );
    let rollout = if spec.strategy() == Strategy::Rolling {
        None
    } else {
        api.rollout(&spec.key()).await.ok()
    };
    if let Some(r) = &rollout {
        println!(
            "rollout: {} (`dabba rollout status {}` follows it)",
            super::rollout::summary(r),
            spec.name
        );
    }
    if wait {
        wait_ready(api, &spec.key(), app.revision, timeout).await?;
    }
    Ok(())
}

/// Uploads the component of every `job` analysis check (a component too) and names it
/// by its digest.
async fn upload_checks(
    api: &ApiClient,
    shown: &str,
    base: &Path,
    templates: &mut [AnalysisTemplate],
) -> anyhow::Result<()> {
    for (i, t) in templates.iter_mut().enumerate() {
        for (j, m) in t.metrics.iter_mut().enumerate() {
            if let Some(job) = &mut m.job {
                let field = format!("analysis[{i}].metrics[{j}].job.component");
                let check = read_component(shown, &field, &base.join(&job.component))?;
                upload(api, &check).await?;
                job.digest = Some(check.digest);
            }
        }
    }
    Ok(())
}

/// Applies a manifest of `[[analysis]]` tables alone to `namespace`.
async fn apply_analysis_file(
    api: &ApiClient,
    file: &Path,
    text: &str,
    namespace: &str,
) -> anyhow::Result<()> {
    let shown = file.display().to_string();
    let mut manifest = AnalysisManifest::parse(&shown, text)?;
    let base = file.parent().unwrap_or(Path::new("."));
    upload_checks(api, &shown, base, &mut manifest.analysis).await?;
    for t in &manifest.analysis {
        api.apply_analysis_template(namespace, t)
            .await
            .map_err(|e| anyhow::anyhow!("{shown}: analysis template {}: {e}", t.name))?;
        println!(
            "analysistemplate {namespace}/{} configured: {} metric(s)",
            t.name,
            t.metrics.len()
        );
    }
    Ok(())
}

/// Reads and checks a manifest's component; errors name the manifest and the field.
fn read_component(manifest: &str, field: &str, path: &Path) -> anyhow::Result<ComponentBytes> {
    let wasm = ComponentBytes::read(path).map_err(|e| {
        anyhow::anyhow!(
            "{manifest}: field {field}: {e} (the path is relative to the manifest; build the samples with `cargo guests`)"
        )
    })?;
    wasm.check_header()
        .map_err(|e| anyhow::anyhow!("{manifest}: field {field}: {e}"))?;
    Ok(wasm)
}

/// Whether `text` has a line that is exactly the table header `header`.
fn has_table(text: &str, header: &str) -> bool {
    text.lines().any(|l| l.trim() == header)
}

/// A manifest of `[[analysis]]` tables alone.
fn is_analysis_manifest(text: &str) -> bool {
    let has = |header: &str| has_table(text, header);
    has("[[analysis]]") && !has("[app]") && !has("[[cron]]")
}

/// A manifest of `[[cron]]` tables and no `[app]`.
fn is_cron_manifest(text: &str) -> bool {
    has_table(text, "[[cron]]") && !has_table(text, "[app]")
}

/// Uploads each cron job's component (if the cluster lacks it) and applies the job.
async fn apply_cron_file(api: &ApiClient, file: &Path, text: &str) -> anyhow::Result<()> {
    let shown = file.display().to_string();
    let manifest = CronManifest::parse(&shown, text)?;
    let base = file.parent().unwrap_or(Path::new("."));
    for (i, spec) in manifest.cron.into_iter().enumerate() {
        let field = format!("cron[{i}].component");
        let wasm = read_component(&shown, &field, &base.join(&spec.component))?;
        upload(api, &wasm).await?;
        let body = CronJobApply {
            spec: spec.clone(),
            component: wasm.digest,
        };
        api.apply_cron_job(&body)
            .await
            .map_err(|e| anyhow::anyhow!("{shown}: cron job {}: {e}", spec.name))?;
        println!(
            "cronjob {} configured: `{}` ({}){}",
            spec.key(),
            spec.schedule,
            spec.timezone,
            if spec.suspend { ", suspended" } else { "" }
        );
    }
    Ok(())
}

/// Uploads a component unless the cluster already has its digest.
pub async fn upload(api: &ApiClient, wasm: &ComponentBytes) -> anyhow::Result<()> {
    let digest: Digest = wasm.digest;
    if api
        .has_blob(&digest)
        .await
        .context("checking for the component")?
    {
        println!(
            "component {} ({}) already in the cluster",
            wasm.origin,
            digest.short()
        );
        return Ok(());
    }
    let size = wasm.bytes.len() as u64;
    let mib = |n: u64| n as f64 / (1 << 20) as f64;
    println!(
        "uploading {} ({:.1} MiB, {})",
        wasm.origin,
        mib(size),
        digest.short()
    );
    let started = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let upload = api.put_blob(&digest, Bytes::copy_from_slice(&wasm.bytes), sent.clone());
    let mut upload = std::pin::pin!(upload);
    // Progress on one line while it goes (a terminal redraws it; a log gets a line a
    // second), then what it took.
    let redraw = std::io::stdout().is_terminal();
    let mut ticks = tokio::time::interval(if redraw {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(1)
    });
    ticks.tick().await;
    let stored = loop {
        tokio::select! {
            r = &mut upload => break r,
            _ = ticks.tick() => {
                let n = sent.load(Ordering::Relaxed);
                let secs = started.elapsed().as_secs_f64().max(1e-6);
                let line = if n < size {
                    format!("  {:.1} of {:.1} MiB sent ({:.1} MiB/s)", mib(n), mib(size), mib(n) / secs)
                } else {
                    format!("  {:.1} MiB sent; waiting for a majority of the controllers to hold it", mib(size))
                };
                if redraw {
                    print!("\r\x1b[2K{line}");
                } else {
                    println!("{line}");
                }
                std::io::stdout().flush()?;
            }
        }
    };
    if redraw {
        print!("\r\x1b[2K");
    }
    stored.context("uploading the component")?;
    let took = started.elapsed();
    println!(
        "  held by a majority of the controllers in {} ms ({:.1} MiB/s)",
        took.as_millis(),
        mib(size) / took.as_secs_f64().max(1e-6)
    );
    Ok(())
}

/// Follows `app`'s `revision` until all its pods run and no old pod is left.
async fn wait_ready(
    api: &ApiClient,
    app: &ResourceKey,
    revision: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    let mut version = 0;
    loop {
        let d = api.app(app).await.context("reading the app's rollout")?;
        // A canary or blue-green revision runs the pods its rollout gives it, beside
        // the stable revision's (which stay).
        let rolling_out = d
            .rollout
            .as_ref()
            .is_some_and(|r| r.status.canary == Some(revision));
        let want = if rolling_out {
            d.replica_sets
                .iter()
                .find(|rs| rs.revision == revision)
                .map_or(0, |rs| rs.replicas as usize)
        } else {
            d.pods_wanted()
        };
        let of_rev: Vec<&Pod> = d.pods.iter().filter(|p| p.revision == revision).collect();
        let running = of_rev
            .iter()
            .filter(|p| p.phase == PodPhase::Running)
            .count();
        let old = if rolling_out {
            0
        } else {
            d.pods.iter().filter(|p| p.revision != revision).count()
        };
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
        if let Some(f) = of_rev.iter().find(|p| p.phase == PodPhase::Failed) {
            bail!(
                "pod {} failed: {}",
                f.name,
                f.reason.as_deref().unwrap_or("no reason given")
            );
        }
        if running == want && old == 0 {
            println!("app {app} is ready");
            return Ok(());
        }
        if Instant::now() > deadline {
            let pending: Vec<String> = of_rev
                .iter()
                .filter_map(|p| p.reason.as_ref().map(|r| format!("{}: {r}", p.name)))
                .collect();
            bail!(
                "app {app} was not ready within {timeout:?} ({last}){}",
                if pending.is_empty() {
                    String::new()
                } else {
                    format!("; {}", pending.join("; "))
                }
            );
        }
        // Long-poll until the state changes, instead of polling on a timer.
        version = api
            .watch(version, Duration::from_secs(1))
            .await
            .context("watching the rollout")?
            .version;
    }
}
