//! Flags shared by the commands that run one component (`serve`, `run`): limits,
//! capabilities and where state lives. Each flag's help says its default and unit.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use dabba_host::kv::{KvBackend, MemoryKv, RedbKv};
use dabba_spec::{
    ByteSize, Capabilities, HumanDuration, LimitOverrides, Limits, OutboundRule, WorkloadKind,
};

#[derive(Debug, Args)]
pub struct LimitFlags {
    /// Fuel budget per request or run (about one unit per wasm instruction). Runs the
    /// component on the fuel-metered engine. Default: no fuel limit (the timeout bounds it).
    #[arg(long, value_name = "N")]
    pub fuel: Option<u64>,
    /// Cap on all linear memories and tables of one instance, e.g. 64Mi.
    /// Default: 128Mi for serve, 512Mi for run.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<ByteSize>,
    /// Wall-clock limit per request or run, e.g. 5s, 250ms, 2m.
    /// Default: 30s for serve, 15m for run.
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<HumanDuration>,
    /// Instances that may run at once; more requests wait in a queue. Default: 64.
    #[arg(long, value_name = "N")]
    pub max_concurrency: Option<u32>,
    /// Requests that may wait for an instance before new ones get 503. Default: 256.
    #[arg(long, value_name = "N")]
    pub queue_depth: Option<u32>,
    /// How long a queued request waits before it gets 503. Default: 1s.
    #[arg(long, value_name = "DURATION")]
    pub queue_timeout: Option<HumanDuration>,
    /// Largest request body accepted (larger gets 413). Default: 1Mi.
    #[arg(long, value_name = "SIZE")]
    pub max_request_body: Option<ByteSize>,
    /// Largest response body a guest may write (larger gets 502). Default: 8Mi.
    #[arg(long, value_name = "SIZE")]
    pub max_response_body: Option<ByteSize>,
    /// Cap on captured stdout and on stderr per request or run; the rest is dropped.
    /// Default: 1Mi.
    #[arg(long, value_name = "SIZE")]
    pub max_output: Option<ByteSize>,
}

impl LimitFlags {
    pub fn resolve(&self, kind: WorkloadKind) -> anyhow::Result<Limits> {
        let overrides = LimitOverrides {
            fuel: self.fuel,
            memory: self.memory,
            timeout: self.timeout,
            max_request_body: self.max_request_body,
            max_response_body: self.max_response_body,
            max_concurrency: self.max_concurrency,
            queue_depth: self.queue_depth,
            queue_timeout: self.queue_timeout,
            max_output: self.max_output,
        };
        overrides.resolve(kind).context("invalid limits")
    }
}

#[derive(Debug, Args)]
pub struct CapabilityFlags {
    /// An environment variable for the guest, KEY=VALUE (repeatable). The guest sees
    /// nothing of dabba's own environment.
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_pair)]
    pub env: Vec<(String, String)>,
    /// A wasi:config value for the guest, KEY=VALUE (repeatable).
    #[arg(long = "config", short = 'c', value_name = "KEY=VALUE", value_parser = parse_pair)]
    pub config: Vec<(String, String)>,
    /// A destination the guest may send HTTP requests to, as scheme://host or scheme://host:port
    /// (repeatable; `*` wildcards allowed: https://*.example.com, http://127.0.0.1:*).
    /// Default: none.
    #[arg(long = "allow-outbound", value_name = "RULE")]
    pub allow_outbound: Vec<OutboundRule>,
    /// A wasi:keyvalue bucket the guest may open (repeatable). Default: `default`.
    #[arg(long = "kv-bucket", value_name = "NAME")]
    pub kv_buckets: Vec<String>,
    /// Directory for durable key-value state (a redb file inside it). Without it,
    /// buckets live in memory and are lost when dabba exits.
    #[arg(long, value_name = "DIR")]
    pub kv_dir: Option<PathBuf>,
}

impl CapabilityFlags {
    pub fn capabilities(&self) -> Capabilities {
        let buckets = if self.kv_buckets.is_empty() {
            vec!["default".to_string()]
        } else {
            self.kv_buckets.clone()
        };
        Capabilities {
            env: self.env.iter().cloned().collect::<BTreeMap<_, _>>(),
            config: self.config.iter().cloned().collect::<BTreeMap<_, _>>(),
            secrets: Default::default(),
            allowed_outbound_hosts: self.allow_outbound.clone(),
            key_value_buckets: buckets,
        }
    }

    pub fn kv_backend(&self) -> anyhow::Result<Arc<dyn KvBackend>> {
        Ok(match &self.kv_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).with_context(|| {
                    format!("creating the key-value directory {}", dir.display())
                })?;
                let path = dir.join("kv.redb");
                Arc::new(RedbKv::open(&path).with_context(|| {
                    format!(
                        "opening the key-value store {} (is another dabba using it?)",
                        path.display()
                    )
                })?)
            }
            None => {
                tracing::warn!("no --kv-dir: key-value buckets are in memory and lost on exit");
                Arc::new(MemoryKv::new())
            }
        })
    }
}

#[derive(Debug, Args)]
pub struct CacheFlags {
    /// Where precompiled components are kept. Default: $XDG_CACHE_HOME/dabba/artifacts
    /// (or ~/.cache/dabba/artifacts).
    #[arg(long, value_name = "DIR", env = "DABBA_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile on every start instead of using the precompiled-component cache.
    #[arg(long, conflicts_with = "cache_dir")]
    pub no_cache: bool,
}

impl CacheFlags {
    pub fn dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            return None;
        }
        if let Some(d) = &self.cache_dir {
            return Some(d.clone());
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("dabba").join("artifacts"))
    }
}

fn parse_pair(s: &str) -> anyhow::Result<(String, String)> {
    let Some((k, v)) = s.split_once('=') else {
        bail!("`{s}` is not KEY=VALUE");
    };
    if k.is_empty() {
        bail!("`{s}` has an empty key");
    }
    Ok((k.to_string(), v.to_string()))
}

/// The app name for a component file: its file stem (`payment.wasm` → `payment`).
pub fn app_name(path: &std::path::Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "app".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_need_a_key_and_an_equals_sign() {
        assert_eq!(parse_pair("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert_eq!(parse_pair("a=").unwrap(), ("a".into(), "".into()));
        assert!(parse_pair("novalue").is_err());
        assert!(parse_pair("=v").is_err());
    }
}
