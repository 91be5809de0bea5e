//! `dabba secret set|unset|rotate-key`: secrets' values go in here and never come out
//! (`dabba get secrets` and `dabba describe secret` show keys, versions and users).
//!
//! A value on the command line stays in the shell's history: `--from-file KEY=PATH`
//! reads it from a file, and `KEY=-` from standard input.

use std::collections::BTreeMap;
use std::io::Read as _;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use dabba_spec::resources::ResourceKey;
use dabba_spec::secret::{Revealed, SecretPut, SecretView};

use super::block_on;
use super::output::age;
use super::target::ClusterArgs;

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Set keys of a secret (creating it): `dabba secret set payment-keys gateway=-`.
    Set(SetArgs),
    /// Remove keys of a secret (refused while an app or cron job lists them).
    Unset(UnsetArgs),
    /// Seal every secret with a new data key and drop the old one (admins).
    RotateKey(RotateArgs),
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// The secret: NAME (in -n's namespace) or NS/NAME.
    pub name: String,
    /// KEY=VALUE pairs; KEY=- reads the value from standard input.
    #[arg(value_name = "KEY=VALUE")]
    pub values: Vec<String>,
    /// KEY=PATH: the value is the file's contents (its bytes as they are).
    #[arg(long = "from-file", value_name = "KEY=PATH")]
    pub from_file: Vec<String>,
    /// The secret holds exactly these keys afterwards (others are removed).
    #[arg(long)]
    pub replace: bool,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Debug, Args)]
pub struct UnsetArgs {
    /// The secret: NAME (in -n's namespace) or NS/NAME.
    pub name: String,
    #[arg(required = true)]
    pub keys: Vec<String>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

pub fn secret(cmd: SecretCommand) -> anyhow::Result<()> {
    match cmd {
        SecretCommand::Set(args) => {
            let key = secret_key(&args.cluster, &args.name);
            let data = values(&args.values, &args.from_file)?;
            let api = args.cluster.client()?;
            block_on(async move {
                let put = SecretPut {
                    data,
                    replace: args.replace,
                    remove: Vec::new(),
                };
                changed(&api.put_secret(&key, &put).await?);
                Ok(())
            })
        }
        SecretCommand::Unset(args) => {
            let key = secret_key(&args.cluster, &args.name);
            let api = args.cluster.client()?;
            block_on(async move {
                let put = SecretPut {
                    remove: args.keys,
                    ..Default::default()
                };
                changed(&api.put_secret(&key, &put).await?);
                Ok(())
            })
        }
        SecretCommand::RotateKey(args) => {
            let api = args.cluster.client()?;
            block_on(async move {
                let r = api.rotate_secret_key().await?;
                println!(
                    "data key {}: {} secret(s) re-sealed; retired data key(s): {}",
                    r.data_key,
                    r.resealed,
                    if r.retired.is_empty() {
                        "none".to_string()
                    } else {
                        r.retired
                            .iter()
                            .map(u32::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                );
                Ok(())
            })
        }
    }
}

/// What a change left: the secret's version and keys.
fn changed(view: &SecretView) {
    println!(
        "secret {}/{}: version {}, keys {}",
        view.namespace,
        view.name,
        view.version,
        view.keys.join(", ")
    );
}

/// `NAME` in the namespace of `-n`, or `NS/NAME`.
pub fn secret_key(cluster: &ClusterArgs, name: &str) -> ResourceKey {
    match name.split_once('/') {
        Some((ns, name)) => ResourceKey::new(ns, name),
        None => cluster.key(name),
    }
}

/// The values given as `KEY=VALUE` (`KEY=-`: standard input) and `--from-file KEY=PATH`.
fn values(pairs: &[String], files: &[String]) -> anyhow::Result<Revealed> {
    let mut out = BTreeMap::new();
    let mut stdin_used = false;
    let split = |pair: &str, what: &str| -> anyhow::Result<(String, String)> {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("`{}` is not {what}", pair.split('=').next().unwrap_or("")))?;
        Ok((k.to_string(), v.to_string()))
    };
    for pair in pairs {
        let (k, v) = split(pair, "KEY=VALUE")?;
        let v = if v == "-" {
            if stdin_used {
                bail!("only one key can read its value from standard input");
            }
            stdin_used = true;
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the value from standard input")?;
            // A value piped with `echo` ends in a newline that is not part of it.
            text.strip_suffix('\n').unwrap_or(&text).to_string()
        } else {
            v
        };
        if out.insert(k.clone(), v).is_some() {
            bail!("key `{k}` is given twice");
        }
    }
    for pair in files {
        let (k, path) = split(pair, "KEY=PATH")?;
        let v = std::fs::read_to_string(&path)
            .with_context(|| format!("reading the value of `{k}` from {path}"))?;
        if out.insert(k.clone(), v).is_some() {
            bail!("key `{k}` is given twice");
        }
    }
    if out.is_empty() {
        bail!("give at least one KEY=VALUE or --from-file KEY=PATH");
    }
    Ok(Revealed(out))
}

/// `dabba describe secret`.
pub fn print_secret(s: &SecretView) {
    println!("Name:        {}", s.name);
    println!("Namespace:   {}", s.namespace);
    println!("Keys:        {}", s.keys.join(", "));
    println!("Version:     {}", s.version);
    println!("Data key:    {}", s.data_key);
    println!("Created:     {} ago", age(s.created));
    println!("Updated:     {} ago", age(s.updated));
    println!(
        "Used by:     {}",
        if s.used_by.is_empty() {
            "nothing".to_string()
        } else {
            s.used_by.join(", ")
        }
    );
}
