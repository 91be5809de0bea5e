//! What the suites do to the platform they measure, through the typed API client:
//! upload a component, apply apps (many at once), scale them, and wait until an app
//! has its pods.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use dabba_client::ApiClient;
use dabba_host::ComponentBytes;
use dabba_spec::api::AppSummary;
use dabba_spec::resources::{AppSpec, ResourceKey};

/// The namespace every benchmark app lives in.
pub const NAMESPACE: &str = "default";

pub fn key(name: &str) -> ResourceKey {
    ResourceKey::new(NAMESPACE, name)
}

/// Uploads a component unless the cluster has it.
pub async fn upload(api: &ApiClient, wasm: &ComponentBytes) -> anyhow::Result<()> {
    if !api.has_blob(&wasm.digest).await? {
        api.put_blob(
            &wasm.digest,
            Bytes::copy_from_slice(&wasm.bytes),
            Default::default(),
        )
        .await
        .with_context(|| format!("uploading {}", wasm.origin))?;
    }
    Ok(())
}

/// Applies `specs`, `parallel` at a time.
pub async fn apply_all(
    api: &Arc<ApiClient>,
    specs: Vec<AppSpec>,
    parallel: usize,
) -> anyhow::Result<()> {
    let gate = Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut tasks = tokio::task::JoinSet::new();
    for s in specs {
        let (api, gate) = (api.clone(), gate.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            api.apply_app(&s)
                .await
                .with_context(|| format!("applying {}", s.name))?;
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

pub async fn app(api: &ApiClient, name: &str) -> anyhow::Result<AppSummary> {
    let apps = api.apps(Some(NAMESPACE)).await?;
    apps.into_iter()
        .find(|a| a.name == name)
        .with_context(|| format!("app {name} is missing"))
}

pub async fn scale(api: &ApiClient, name: &str, replicas: u32) -> anyhow::Result<()> {
    api.scale_app(&key(name), replicas).await?;
    Ok(())
}

/// Polls until `name` has `ready` Running pods (and no more desired); returns when.
pub async fn until_ready(
    api: &ApiClient,
    name: &str,
    ready: u32,
    timeout: Duration,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        let a = app(api, name).await?;
        if a.ready == ready && a.desired == ready {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!(
                "{name}: {} of {ready} pods ready after {timeout:?}",
                a.ready
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
