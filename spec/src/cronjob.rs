//! Cron jobs as an operator writes them: `[[cron]]` tables in a manifest of their own
//! (`dabba apply -f settlement-cron.toml`), with Kubernetes CronJob semantics.
//!
//! ```toml
//! [[cron]]
//! name = "settlement"
//! schedule = "0 1 * * *"             # see crate::cron; 5 fields, or 6 with seconds first
//! timezone = "Asia/Kolkata"          # IANA; default UTC; unknown zones are refused
//! component = "settlement.wasm"      # relative to this file
//! args = []                          # argv after the program name
//! env = { MODE = "live" }
//! config = { bucket = "ledger" }
//! key_value_buckets = ["ledger"]
//! limits = { fuel = 5_000_000_000, memory = "256Mi", timeout = "20m" }
//! concurrency_policy = "forbid"      # allow (default) | forbid | replace
//! starting_deadline = "10m"          # optional: a run later than this is missed
//! suspend = false
//! successful_history = 5             # default 3
//! failed_history = 3                 # default 1
//! backoff_limit = 2                  # retries of a failed run; default 6
//! active_deadline = "30m"            # optional: a run (all attempts) longer fails
//! ```
//!
//! Parsing does no I/O, like `crate::manifest`: errors name the file, line and field.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cron::{Schedule, time_zone};
use crate::locate::locate_field;
use crate::manifest::ManifestError;
use crate::resources::{ResourceKey, valid_name};
use crate::validate::{Invalid, name_message};
use crate::{HumanDuration, LimitOverrides, WorkloadKind};

/// What happens when a run is due while the previous one still runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConcurrencyPolicy {
    /// Start it anyway.
    #[default]
    Allow,
    /// Skip it (recorded as skipped).
    Forbid,
    /// Stop the running one and start it.
    Replace,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronSection {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    pub schedule: String,
    #[serde(default = "utc")]
    pub timezone: String,
    /// Path of the component, relative to the manifest.
    pub component: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Config keys served from the namespace's secrets (`crate::secret`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, crate::secret::SecretRef>,
    #[serde(default)]
    pub key_value_buckets: Vec<String>,
    #[serde(default)]
    pub limits: LimitOverrides,
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    #[serde(default)]
    pub starting_deadline: Option<HumanDuration>,
    #[serde(default)]
    pub suspend: bool,
    #[serde(default = "three")]
    pub successful_history: u32,
    #[serde(default = "one")]
    pub failed_history: u32,
    #[serde(default = "six")]
    pub backoff_limit: u32,
    #[serde(default)]
    pub active_deadline: Option<HumanDuration>,
    /// The regions it may run in, in order: each run goes to the first with a Ready
    /// host (its primary while it is up). Empty: anywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronManifest {
    pub cron: Vec<CronSection>,
}

fn default_namespace() -> String {
    "default".into()
}
fn utc() -> String {
    "UTC".into()
}
fn one() -> u32 {
    1
}
fn three() -> u32 {
    3
}
fn six() -> u32 {
    6
}

/// Runs kept per job and outcome, at most.
pub const MAX_HISTORY: u32 = 100;
/// The first retry of a failed run waits this long; each later one twice as long …
pub const FIRST_RETRY: Duration = Duration::from_secs(10);
/// … up to this (Kubernetes' cap for job back-off).
pub const MAX_RETRY: Duration = Duration::from_secs(6 * 60);

/// How long to wait before retry number `retry` (1-based) of a failed run.
pub fn retry_delay(retry: u32) -> Duration {
    let doublings = retry.saturating_sub(1).min(16);
    (FIRST_RETRY * 2u32.pow(doublings)).min(MAX_RETRY)
}

impl CronManifest {
    /// Parses and validates a cron manifest. `file` is used only in errors.
    pub fn parse(file: &str, text: &str) -> Result<CronManifest, ManifestError> {
        let manifest: CronManifest = crate::manifest::from_toml(file, text)?;
        for (i, job) in manifest.cron.iter().enumerate() {
            job.validate().map_err(|Invalid { field, message }| {
                let (line, column) = locate_field(text, &format!("cron[{i}].{field}"));
                ManifestError {
                    file: file.to_string(),
                    line,
                    column,
                    field: Some(format!("cron[{i}].{field}")),
                    message,
                }
            })?;
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, job) in manifest.cron.iter().enumerate() {
            if !names.insert((&job.namespace, &job.name)) {
                let (line, column) = locate_field(text, &format!("cron[{i}].name"));
                return Err(ManifestError {
                    file: file.to_string(),
                    line,
                    column,
                    field: Some(format!("cron[{i}].name")),
                    message: format!("a second cron job named `{}`", job.name),
                });
            }
        }
        Ok(manifest)
    }
}

impl CronSection {
    /// Checks one job; the error names its key within the `[[cron]]` table.
    pub fn validate(&self) -> Result<(), Invalid> {
        if !valid_name(&self.name) {
            return Err(Invalid::new("name", name_message("name", &self.name)));
        }
        for (i, r) in self.regions.iter().enumerate() {
            if !valid_name(r) {
                return Err(Invalid::new(
                    format!("regions[{i}]"),
                    name_message("region", r),
                ));
            }
        }
        if self.name.ends_with("-manual") {
            return Err(Invalid::new(
                "name",
                format!(
                    "`{}` may not end in `-manual`: its runs' names would collide with the manual runs of `{}`",
                    self.name,
                    self.name.trim_end_matches("-manual")
                ),
            ));
        }
        if !valid_name(&self.namespace) {
            return Err(Invalid::new(
                "namespace",
                format!("`{}` is not a valid namespace", self.namespace),
            ));
        }
        crate::secret::check_listing("secrets", &self.secrets, &self.config)?;
        self.schedule
            .parse::<Schedule>()
            .map_err(|e| Invalid::new("schedule", e.to_string()))?;
        time_zone(&self.timezone).map_err(|e| Invalid::new("timezone", e))?;
        if self.component.trim().is_empty() {
            return Err(Invalid::new(
                "component",
                "must name a .wasm file, relative to this manifest",
            ));
        }
        if let Err(e) = self.limits.resolve(WorkloadKind::Job) {
            return Err(Invalid::new("limits", e.to_string()));
        }
        for (key, n) in [
            ("successful_history", self.successful_history),
            ("failed_history", self.failed_history),
        ] {
            if n > MAX_HISTORY {
                return Err(Invalid::new(key, format!("{n} is more than {MAX_HISTORY}")));
            }
        }
        if self.backoff_limit > 20 {
            return Err(Invalid::new(
                "backoff_limit",
                format!("{} retries is more than 20", self.backoff_limit),
            ));
        }
        for (key, d) in [
            ("starting_deadline", self.starting_deadline),
            ("active_deadline", self.active_deadline),
        ] {
            if d.is_some_and(|d| d.get() < Duration::from_secs(1)) {
                return Err(Invalid::new(key, "must be at least 1s"));
            }
        }
        for b in &self.key_value_buckets {
            if !valid_name(b) {
                return Err(Invalid::new(
                    "key_value_buckets",
                    format!("`{b}` is not a valid bucket name"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTLEMENT: &str = r#"
[[cron]]
name = "settlement"
schedule = "0 1 * * *"
timezone = "Asia/Kolkata"
component = "settlement.wasm"
config = { bucket = "ledger" }
key_value_buckets = ["ledger"]
concurrency_policy = "forbid"
backoff_limit = 2
successful_history = 5
failed_history = 3

[[cron]]
name = "cleanup"
schedule = "@hourly"
component = "cleanup.wasm"
"#;

    #[test]
    fn a_cron_manifest_parses_with_kubernetes_defaults() {
        let m = CronManifest::parse("cron.toml", SETTLEMENT).unwrap();
        let s = &m.cron[0];
        assert_eq!(s.concurrency_policy, ConcurrencyPolicy::Forbid);
        assert_eq!(
            (s.backoff_limit, s.successful_history, s.failed_history),
            (2, 5, 3)
        );
        let c = &m.cron[1];
        assert_eq!(c.timezone, "UTC");
        assert_eq!(c.concurrency_policy, ConcurrencyPolicy::Allow);
        assert_eq!(
            (c.backoff_limit, c.successful_history, c.failed_history),
            (6, 3, 1)
        );
        assert!(!c.suspend && c.starting_deadline.is_none());
    }

    #[test]
    fn errors_name_the_job_the_field_and_the_line() {
        let cases = [
            (
                SETTLEMENT.replace("Asia/Kolkata", "Asia/Bombay_Beach"),
                "cron[0].timezone",
                5,
            ),
            (
                SETTLEMENT.replace("0 1 * * *", "0 61 1 * * *"),
                "cron[0].schedule",
                4,
            ),
            (
                SETTLEMENT.replace("@hourly", "@reboot"),
                "cron[1].schedule",
                16,
            ),
            (
                SETTLEMENT.replace("name = \"settlement\"", "name = \"settlement-manual\""),
                "cron[0].name",
                3,
            ),
            (
                SETTLEMENT.replace("backoff_limit = 2", "backoff_limit = 99"),
                "cron[0].backoff_limit",
                10,
            ),
            (
                SETTLEMENT.replace("name = \"cleanup\"", "name = \"settlement\""),
                "cron[1].name",
                15,
            ),
        ];
        for (text, field, line) in cases {
            let e = CronManifest::parse("cron.toml", &text).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{e}");
            assert_eq!(e.line, line, "{e}");
        }
        let e = CronManifest::parse("cron.toml", &format!("{SETTLEMENT}colour = 1\n")).unwrap_err();
        assert!(e.message.contains("colour"), "{e}");
    }

    #[test]
    fn retries_back_off_from_ten_seconds_doubling_to_six_minutes() {
        let delays: Vec<u64> = (1..=8).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 360, 360]);
        assert_eq!(retry_delay(1000).as_secs(), 360);
    }
}

#[cfg(test)]
mod sample {
    use super::*;

    #[test]
    fn the_settlement_sample_manifest_is_valid() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/settlement/cron.toml"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let m = CronManifest::parse(path, &text).unwrap();
        let s = &m.cron[0];
        assert_eq!(
            (s.schedule.as_str(), s.timezone.as_str()),
            ("0 1 * * *", "Asia/Kolkata")
        );
        assert_eq!(s.concurrency_policy, ConcurrencyPolicy::Forbid);
        assert_eq!(
            (s.backoff_limit, s.successful_history, s.failed_history),
            (2, 5, 3)
        );
    }
}

/// A cron job as the control plane holds it: the section with its component resolved,
/// and what the scheduler has done so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronJob {
    pub spec: CronSection,
    /// The component, by content.
    pub component: crate::Digest,
    pub created_at: u64,
    /// The latest schedule time dealt with (claimed, skipped or missed): no time at or
    /// before it is ever claimed again.
    pub last_scheduled: Option<u64>,
    /// Schedule times recorded as missed (most recent last, at most [`MISSED_KEPT`]).
    #[serde(default)]
    pub missed: Vec<u64>,
    #[serde(default)]
    pub missed_total: u64,
}

/// Missed schedule times kept per job for `describe`.
pub const MISSED_KEPT: usize = 20;

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunPhase {
    /// Claimed; waiting for a host (or for its retry time).
    Pending,
    Running,
    Succeeded,
    /// Failed for good (retries used up, deadline passed, or replaced).
    Failed,
    /// Not started: the previous run was still active and the policy is `forbid`.
    Skipped,
}

impl RunPhase {
    pub fn is_active(self) -> bool {
        matches!(self, RunPhase::Pending | RunPhase::Running)
    }
}

/// One run of a cron job for one schedule time (or a manual run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRun {
    /// `<job>-<yyyymmddhhmm[ss] in UTC>` for scheduled runs, so a schedule time has one
    /// name ([`CronSection::run_name`]).
    pub name: String,
    pub namespace: String,
    pub job: String,
    pub scheduled: u64,
    pub phase: RunPhase,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// When the current attempt may start (a retry waits its back-off).
    pub not_before: u64,
    /// When the first attempt started.
    #[serde(default)]
    pub started: Option<u64>,
    #[serde(default)]
    pub finished: Option<u64>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub fuel: Option<u64>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub manual: bool,
    /// How long the last attempt ran.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// The end of the last attempt's output (stdout, then stderr), at most
    /// [`OUTPUT_KEPT`] bytes.
    #[serde(default)]
    pub output: String,
}

/// Bytes of a run's output kept with it.
pub const OUTPUT_KEPT: usize = 16 * 1024;

/// What a host reports when an attempt of a run ends
/// (`POST /v1/runs/{ns}/{run}/report`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunReport {
    pub attempt: u32,
    pub exit_code: i32,
    pub fuel: Option<u64>,
    pub duration_ms: u64,
    /// Why it failed, when it did (a trap, a limit, a non-zero exit).
    pub reason: Option<String>,
    pub output: String,
}

/// The cron job attempt a key-value write is made for: the fencing token. The
/// replicated store applies a fenced write only while `attempt` is the attempt of
/// `run` that is running, so an attempt its host failed to stop in time (a zombie
/// behind a partition, a paused process) cannot write once the run moved on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    pub run: crate::resources::ResourceKey,
    pub attempt: u32,
}

impl Fence {
    /// Why `run` (as it stands, `None`: gone) no longer takes writes of this attempt;
    /// `None` when it does.
    pub fn refuses(&self, run: Option<&JobRun>) -> Option<crate::kv::KvError> {
        let why = match run {
            None => "the run no longer exists".to_string(),
            Some(r) if r.attempt != self.attempt => {
                format!("the run is at attempt {} ({:?})", r.attempt, r.phase)
            }
            Some(r) if r.phase != RunPhase::Running => format!("the run is {:?}", r.phase),
            Some(_) => return None,
        };
        Some(crate::kv::KvError::Fenced {
            message: format!(
                "attempt {} of run {} may no longer write: {why}",
                self.attempt, self.run
            ),
        })
    }
}

/// A run this host should execute, with what it needs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAssignment {
    pub run: JobRun,
    pub spec: CronSection,
    pub component: crate::Digest,
    /// The values of the secrets the job lists, by config key (never stored).
    #[serde(default, skip_serializing_if = "crate::secret::Revealed::is_empty")]
    pub secrets: crate::secret::Revealed,
    /// Why the listed secrets could not be given (the attempt must not start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unrevealed: Option<String>,
}

impl JobRun {
    /// A run named `name` of job `namespace/job` for `scheduled`, waiting for its first
    /// attempt from `at`.
    pub fn pending(namespace: &str, job: &str, name: String, scheduled: u64, at: u64) -> JobRun {
        JobRun {
            name,
            namespace: namespace.to_string(),
            job: job.to_string(),
            scheduled,
            phase: RunPhase::Pending,
            attempt: 1,
            not_before: at,
            started: None,
            finished: None,
            host: None,
            exit_code: None,
            fuel: None,
            reason: None,
            manual: false,
            duration_ms: None,
            output: String::new(),
        }
    }

    pub fn key(&self) -> ResourceKey {
        ResourceKey::new(&self.namespace, &self.name)
    }

    /// The key of the cron job this is a run of.
    pub fn job_key(&self) -> ResourceKey {
        ResourceKey::new(&self.namespace, &self.job)
    }
}

impl CronSection {
    pub fn key(&self) -> ResourceKey {
        ResourceKey::new(&self.namespace, &self.name)
    }

    /// The name of this job's run for schedule time `scheduled` (ms since the epoch):
    /// `<job>-<yyyymmddhhmm>` in UTC, with the seconds (`ss`) added when the schedule
    /// has a seconds field.
    pub fn run_name(&self, scheduled: u64) -> String {
        let ts = jiff::Timestamp::from_millisecond(scheduled as i64)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let seconds = self
            .schedule
            .parse::<crate::cron::Schedule>()
            .is_ok_and(|s| s.has_seconds());
        let format = if seconds {
            "%Y%m%d%H%M%S"
        } else {
            "%Y%m%d%H%M"
        };
        format!("{}-{}", self.name, ts.strftime(format))
    }
}
