//! `dabba audit [--since 1h] [--user U] [--verb V] [-o json]`: who did what to the
//! cluster, and who was refused; `dabba audit --retention 2160h|none` sets how long
//! entries are kept — read from the replicated audit log, whose hash chain
//! is verified before anything is shown (a log changed behind the controllers' backs is
//! an error, not a table).

use anyhow::bail;
use clap::Args;
use dabba_spec::HumanDuration;
use dabba_spec::audit::verify;

use super::block_on;
use super::output::{Output, age, print_json, table};
use super::target::ClusterArgs;

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only entries this recent, e.g. 1h. Default: all that are kept.
    #[arg(long, value_name = "DURATION")]
    pub since: Option<HumanDuration>,
    /// Only this user's entries (a token's label, `host/NAME`, `anonymous`).
    #[arg(long)]
    pub user: Option<String>,
    /// Only entries of this verb (apply, delete, scale, rollout, run, tokens, ...).
    #[arg(long)]
    pub verb: Option<String>,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Output,
    /// Instead of listing: keep entries this long, e.g. 2160h (`none`: the newest 10,000,
    /// whatever their age).
    #[arg(long, value_name = "DURATION|none")]
    pub retention: Option<String>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

pub fn audit(args: AuditArgs) -> anyhow::Result<()> {
    let api = args.cluster.client()?;
    if let Some(r) = &args.retention {
        let max_age_ms = match r.as_str() {
            "none" => None,
            d => Some(
                d.parse::<HumanDuration>()
                    .map_err(|e| anyhow::anyhow!("--retention: {e}"))?
                    .get()
                    .as_millis() as u64,
            ),
        };
        if max_age_ms == Some(0) {
            bail!("--retention must be longer than 0s (or `none`)");
        }
        return block_on(async move {
            api.set_audit_retention(max_age_ms).await?;
            println!("audit entries are kept {r}");
            Ok(())
        });
    }
    let since = args.since.map_or(0, |d| {
        dabba_controller::node::now_millis().saturating_sub(d.get().as_millis() as u64)
    });
    block_on(async move {
        let log = api.audit(since).await?;
        if let Err(broken) = verify(&log) {
            bail!("the audit log does not verify: {broken}");
        }
        let entries: Vec<_> = log
            .entries
            .into_iter()
            .filter(|e| args.user.as_deref().is_none_or(|u| e.user == u))
            .filter(|e| args.verb.as_deref().is_none_or(|v| e.verb == v))
            .collect();
        if args.output == Output::Json {
            return print_json(&entries);
        }
        table(
            &[
                "SEQ", "AGE", "USER", "VERB", "PATH", "STATUS", "SOURCE", "REQUEST",
            ],
            entries
                .iter()
                .map(|e| {
                    vec![
                        e.seq.to_string(),
                        age(e.at),
                        e.user.clone(),
                        e.verb.clone(),
                        e.path.clone(),
                        e.status.to_string(),
                        e.source.clone(),
                        e.request_id.clone(),
                    ]
                })
                .collect(),
        );
        Ok(())
    })
}
