//! Which cluster a command talks to, and with which token: `--server`/`--token` (or
//! `DABBA_SERVER`/`DABBA_TOKEN`), else the CLI config that `dabba up` writes.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use dabba_client::ApiClient;
use dabba_controller::credentials::write_secret;
use serde::{Deserialize, Serialize};

/// Where the CLI finds its cluster (`~/.config/dabba/config.json`).
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

    /// Reads the config at `path` (default: [`Self::default_path`]).
    fn load(path: Option<&Path>) -> anyhow::Result<ClientConfig> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => Self::default_path()?,
        };
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read the CLI config {} (run `dabba up`, or pass --server and --token)",
                path.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
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
        write_secret(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }

    pub fn client(&self) -> ApiClient {
        ApiClient::new(self.servers.clone(), self.token.clone())
    }
}

/// The flags every command that calls the API takes.
#[derive(Debug, Args)]
pub struct ClusterArgs {
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

impl ClusterArgs {
    /// A client of the cluster the flags (or the config) name.
    pub fn client(&self) -> anyhow::Result<ApiClient> {
        let stored = || ClientConfig::load(self.config.as_deref());
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

    /// `NAMESPACE/name`.
    pub fn key(&self, name: &str) -> dabba_spec::resources::ResourceKey {
        dabba_spec::resources::ResourceKey::new(&self.namespace, name)
    }
}
