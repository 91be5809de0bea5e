//! Raft log entries: every change to the cluster's state is one [`Command`], applied in
//! log order by every replica, and answered with one [`Reply`].
//!
//! `PodChange` and `CronChange` are the parts of a command that reconcilers decide; the
//! state applies them (`state/apps.rs`, `state/cron.rs`), and nothing here depends on
//! the state.
//!
//! Commands carry everything their effect depends on (times are stamped by the leader
//! when it proposes them), so applying the log is deterministic.

use dabba_spec::Digest;
use dabba_spec::analysis::{AnalysisTemplate, Measurement, RunKind};
use dabba_spec::api::ControllerPlace;
use dabba_spec::cronjob::RunReport;
use dabba_spec::kv::{KvError, Outcome, Write};
use dabba_spec::regions::FailoverKind;
use dabba_spec::resources::{
    App, AppSpec, Grant, HostInfo, HostState, Millis, Pod, PodPhase, ResourceKey,
};
use dabba_spec::rollout::PauseReason;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// The first entry of a new cluster: its initial tokens, by SHA-256 of the secret.
    Init {
        tokens: Vec<(String, Grant)>,
    },
    CreateToken {
        hash: String,
        grant: Grant,
    },
    RevokeToken {
        hash: String,
    },
    /// A component, by content: its bytes are in the blob store of a majority of the
    /// controllers (`crate::blobs`), never in the log.
    PutBlob {
        digest: Digest,
        #[serde(default)]
        size: u64,
        #[serde(default)]
        at: Millis,
        /// Only in entries written before components left the log: the bytes, which
        /// the state machine moves into the blob store as it applies the entry.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "dabba_spec::kv::b64::opt"
        )]
        bytes: Option<Vec<u8>>,
    },
    /// Forget components nothing uses (`reconcile::blobs`); one in use again by the
    /// time this applies is kept.
    DeleteBlobs {
        digests: Vec<Digest>,
        at: Millis,
    },
    /// Create or change an app; a change of anything but `replicas` is a new revision.
    ApplyApp {
        spec: Box<AppSpec>,
        at: Millis,
    },
    DeleteApp {
        namespace: String,
        name: String,
        at: Millis,
    },
    ScaleApp {
        namespace: String,
        name: String,
        replicas: u32,
        at: Millis,
        /// Why (the autoscaler's reason), for the event.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Scale an autoscaled app from zero to one pod because requests wait for it, the
    /// pod on `host` (the one holding the requests) when the leader found that it fits.
    /// Nothing happens if the app already has replicas.
    Activate {
        namespace: String,
        name: String,
        host: Option<String>,
        at: Millis,
    },
    /// A host (re-)registers. With a `credential` (the SHA-256 of a new host token,
    /// when the join token registered it) that token becomes the host's only one, and
    /// only a new host or one judged NotReady may be registered so: the join token
    /// cannot take over a live host's name.
    RegisterHost {
        info: HostInfo,
        at: Millis,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credential: Option<String>,
    },
    SetHostState {
        name: String,
        state: HostState,
        at: Millis,
    },
    /// Pod changes decided by the reconcilers or reported by hosts.
    Pods {
        changes: Vec<PodChange>,
        at: Millis,
    },
    /// Several commands proposed together, applied in order as if one by one (the leader
    /// batches concurrent proposals so that many share one log entry and one fsync).
    Batch {
        commands: Vec<Command>,
    },
    /// Create or change a cron job (its schedule bookkeeping is kept).
    ApplyCronJob {
        spec: Box<dabba_spec::cronjob::CronSection>,
        component: Digest,
        at: Millis,
    },
    DeleteCronJob {
        namespace: String,
        name: String,
        at: Millis,
    },
    /// Changes decided by the cron reconciler.
    Cron {
        changes: Vec<CronChange>,
        at: Millis,
    },
    /// Changes to rollouts: decided by the rollout reconciler, measured by the leader's
    /// analysis, or asked for by a person (promote, abort, pause, ...).
    Rollout {
        changes: Vec<RolloutChange>,
        at: Millis,
    },
    /// Changes to apps placed across regions: the autoscaler's counts, failovers, drains
    /// and restores.
    Regions {
        changes: Vec<RegionChange>,
        at: Millis,
    },
    /// Where controller `id` runs (it says so when it starts).
    PlaceController {
        id: u64,
        place: ControllerPlace,
    },
    /// Keep the leader in this region while it is healthy (`None`: anywhere).
    PreferLeaderRegion {
        region: Option<String>,
    },
    /// An analysis template applied on its own to a namespace.
    ApplyAnalysisTemplate {
        namespace: String,
        template: Box<AnalysisTemplate>,
        at: Millis,
    },
    DeleteAnalysisTemplate {
        namespace: String,
        name: String,
        at: Millis,
    },
    /// `dabba rollout undo`: revision `to` (by default the one before) serves again.
    UndoApp {
        namespace: String,
        name: String,
        to: Option<u64>,
        at: Millis,
    },
    /// Set a secret's values: all of them, sealed by the leader with data key
    /// `data_key`, if the secret is still at version `expect` (0: it does not exist).
    PutSecret {
        key: ResourceKey,
        data: std::collections::BTreeMap<String, crate::vault::Sealed>,
        data_key: u32,
        expect: u64,
        at: Millis,
    },
    /// Set (`None`: remove) a namespace's quota and limit range; what runs stays.
    SetNamespacePolicy {
        namespace: String,
        policy: Option<Box<dabba_spec::quota::NamespacePolicy>>,
        at: Millis,
    },
    /// Create or replace a role (`dabba_spec::rbac`).
    PutRole {
        role: Box<dabba_spec::rbac::RoleSpec>,
        at: Millis,
    },
    /// Delete role `key` (`ns/name`, `*/name`) unless a binding gives it.
    DeleteRole {
        key: String,
        at: Millis,
    },
    /// Create or replace a role binding.
    PutRoleBinding {
        binding: Box<dabba_spec::rbac::RoleBinding>,
        at: Millis,
    },
    DeleteRoleBinding {
        key: String,
        at: Millis,
    },
    /// Delete a secret nothing lists.
    DeleteSecret {
        key: ResourceKey,
        at: Millis,
    },
    /// A new data key (wrapped with the key-encryption key), every secret re-sealed
    /// with it; the old data keys are dropped.
    RotateDataKey {
        id: u32,
        wrapped: crate::vault::WrappedKey,
        resealed: Vec<crate::state::secrets::Resealed>,
        at: Millis,
    },
    /// Keep audit entries at most this long (`None`: by count only).
    AuditRetention {
        max_age_ms: Option<u64>,
    },
    /// Audited requests, appended to the audit log in this order (numbered and
    /// chained when applied).
    Audit {
        entries: Vec<dabba_spec::audit::AuditEntry>,
    },
    /// A write to a workload's key-value bucket. A write with an `id` is applied at
    /// most once: a retry with the same id (after an answer was lost in a leader change)
    /// gets the first outcome back instead of applying again.
    /// A write with a `fence` (a cron job attempt's) is refused unless that attempt is
    /// the run's attempt running now.
    Kv {
        bucket: String,
        write: Write,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fence: Option<dabba_spec::cronjob::Fence>,
    },
}

/// One change to one pod. Changes to pods that no longer exist are ignored, so a
/// reconciler acting on a slightly old view cannot resurrect anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum PodChange {
    Create {
        pod: Pod,
    },
    Delete {
        key: ResourceKey,
    },
    /// Place a Pending pod on a host (it becomes Scheduled), or record why it cannot be.
    Place {
        key: ResourceKey,
        host: Option<String>,
        reason: Option<String>,
    },
    /// A host reports how its pod is doing.
    Phase {
        key: ResourceKey,
        phase: PodPhase,
        reason: Option<String>,
    },
}

/// A change to cron jobs and their runs, decided by the cron reconciler or asked for
/// by a user or a host; applied by `CronState::apply` (`state/cron.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum CronChange {
    /// Start a run for `scheduled`; the older due times in `missed` are recorded as such.
    Claim {
        job: ResourceKey,
        scheduled: Millis,
        missed: Vec<Millis>,
    },
    /// Do not start `scheduled` (the previous run is still active under `forbid`).
    Skip {
        job: ResourceKey,
        scheduled: Millis,
        missed: Vec<Millis>,
    },
    /// These times passed without a run (past the starting deadline).
    Missed {
        job: ResourceKey,
        times: Vec<Millis>,
    },
    /// The current attempt of a run failed; it is retried after its back-off while the
    /// job's `backoff_limit` allows, else the run fails.
    AttemptFailed { run: ResourceKey, reason: String },
    /// The run fails now, without retries.
    Fail { run: ResourceKey, reason: String },
    /// Forget finished runs beyond the job's history limits.
    Prune { runs: Vec<ResourceKey> },
    /// Start a Pending run on a host.
    Place { run: ResourceKey, host: String },
    /// A manual run of a job (`dabba create job --from cronjob/NAME`), named after the
    /// time it was asked for.
    RunNow { job: ResourceKey },
    /// Stop (or resume) claiming schedule times.
    Suspend { job: ResourceKey, suspend: bool },
    /// A host reports how an attempt ended.
    Report { run: ResourceKey, report: RunReport },
}

/// A change to one app's rollout. Each names the canary it is about: a change for a
/// canary that is no longer being rolled out (a newer revision replaced it, it was
/// promoted) changes nothing, so a reconciler acting on a slightly old view, or a
/// leader replaying a proposal, cannot move the wrong rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum RolloutChange {
    /// Enter step `step` (the one after the current), applying what it says.
    Step {
        app: ResourceKey,
        canary: u64,
        step: u32,
    },
    /// One measurement of metric `metric` (its index in the run) of the analysis run
    /// of this kind that started at `started`.
    Measured {
        app: ResourceKey,
        canary: u64,
        run: RunKind,
        started: Millis,
        metric: u32,
        measurement: Measurement,
    },
    /// A `job` check of metric `metric` goes to `host` to run (`id` names it).
    CheckStarted {
        app: ResourceKey,
        canary: u64,
        run: RunKind,
        started: Millis,
        metric: u32,
        host: String,
        id: String,
    },
    /// The canary (or preview) has taken over: it becomes the stable revision, and the
    /// old one keeps its pods for the scale-down delay.
    Complete { app: ResourceKey, canary: u64 },
    /// Blue-green: the preview has all its pods running.
    PreviewReady { app: ResourceKey, canary: u64 },
    /// Blue-green: all traffic switches to the preview (post-promotion analysis runs).
    Switch { app: ResourceKey, canary: u64 },
    /// Stop the canary: it takes no more traffic; the stable revision serves all.
    Abort {
        app: ResourceKey,
        canary: u64,
        reason: String,
    },
    /// Past the progress deadline without `progress_deadline_abort`: Degraded, but
    /// still rolling.
    Degrade {
        app: ResourceKey,
        canary: u64,
        reason: String,
    },
    Pause {
        app: ResourceKey,
        canary: u64,
        reason: PauseReason,
        message: String,
    },
    /// Go on after a person's pause, or re-run the step an inconclusive analysis paused.
    Resume { app: ResourceKey, canary: u64 },
    /// A person promotes: past the current pause or step, or (`full`) to the end.
    Promote {
        app: ResourceKey,
        canary: u64,
        full: bool,
    },
    /// Start an aborted rollout again from its first step.
    Retry { app: ResourceKey, canary: u64 },
    /// A revision that stopped taking traffic loses its pods.
    ScaleDown { app: ResourceKey, revision: u64 },
    /// An autoscaled app: the percent of its demand the canary carried (its pods follow
    /// it).
    Share {
        app: ResourceKey,
        canary: u64,
        share: u32,
    },
}

impl RolloutChange {
    pub fn app(&self) -> &ResourceKey {
        match self {
            RolloutChange::Step { app, .. }
            | RolloutChange::CheckStarted { app, .. }
            | RolloutChange::Measured { app, .. }
            | RolloutChange::Complete { app, .. }
            | RolloutChange::PreviewReady { app, .. }
            | RolloutChange::Switch { app, .. }
            | RolloutChange::Abort { app, .. }
            | RolloutChange::Degrade { app, .. }
            | RolloutChange::Pause { app, .. }
            | RolloutChange::Resume { app, .. }
            | RolloutChange::Promote { app, .. }
            | RolloutChange::Retry { app, .. }
            | RolloutChange::ScaleDown { app, .. }
            | RolloutChange::Share { app, .. } => app,
        }
    }

    /// The canary the change is about (`None`: a scale-down, which names its revision).
    pub fn canary(&self) -> Option<u64> {
        match self {
            RolloutChange::Step { canary, .. }
            | RolloutChange::CheckStarted { canary, .. }
            | RolloutChange::Measured { canary, .. }
            | RolloutChange::Complete { canary, .. }
            | RolloutChange::PreviewReady { canary, .. }
            | RolloutChange::Switch { canary, .. }
            | RolloutChange::Abort { canary, .. }
            | RolloutChange::Degrade { canary, .. }
            | RolloutChange::Pause { canary, .. }
            | RolloutChange::Resume { canary, .. }
            | RolloutChange::Promote { canary, .. }
            | RolloutChange::Retry { canary, .. }
            | RolloutChange::Share { canary, .. } => Some(*canary),
            RolloutChange::ScaleDown { .. } => None,
        }
    }
}

/// A change to one app's placement across regions (`state/regions.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum RegionChange {
    /// The pods `region` wants (the autoscaler's decision there).
    Scale {
        app: ResourceKey,
        region: String,
        replicas: u32,
        reason: String,
    },
    /// `from` stops serving the app; `to` takes over, at once.
    Failover {
        app: ResourceKey,
        from: String,
        to: String,
        kind: FailoverKind,
        reason: String,
    },
    /// A planned move: `to` starts its pods; requests move once they run.
    Drain {
        app: ResourceKey,
        from: String,
        to: String,
    },
    /// A drain's target runs its pods: requests move.
    Drained { app: ResourceKey, region: String },
    /// `region` serves the app again (its hosts are back).
    Restore { app: ResourceKey, region: String },
    /// The restored region runs its pods: the one that stood in goes back to its `min`.
    Restored { app: ResourceKey, region: String },
}

impl RegionChange {
    pub fn app(&self) -> &ResourceKey {
        match self {
            RegionChange::Scale { app, .. }
            | RegionChange::Failover { app, .. }
            | RegionChange::Drain { app, .. }
            | RegionChange::Drained { app, .. }
            | RegionChange::Restore { app, .. }
            | RegionChange::Restored { app, .. } => app,
        }
    }
}

/// The answer to one command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Ok,
    /// The replies of a [`Command::Batch`], in order.
    Batch {
        replies: Vec<Reply>,
    },
    App {
        app: Box<App>,
    },
    Kv {
        result: Result<Outcome, KvError>,
    },
    /// The answer to [`Command::Activate`]: the replica count now, and the pod it
    /// created (none if the app already had replicas).
    Activated {
        replicas: u32,
        pod: Option<Box<Pod>>,
    },
    /// Nothing changed, for this reason.
    Rejected {
        code: Rejection,
        message: String,
    },
}

/// Why a command was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    AlreadyInitialized,
    NotFound,
    RouteConflict,
    MissingComponent,
    Invalid,
    /// The request conflicts with what is there (a live host's name).
    Conflict,
    /// The change would take a namespace past its quota.
    QuotaExceeded,
}

impl Rejection {
    /// The error code the API answers with (`spec/api.md`).
    pub fn code(self) -> &'static str {
        match self {
            Rejection::AlreadyInitialized => "already_initialized",
            Rejection::NotFound => "not_found",
            Rejection::RouteConflict => "route_conflict",
            Rejection::MissingComponent => "missing_component",
            Rejection::Invalid => "invalid",
            Rejection::Conflict => "conflict",
            Rejection::QuotaExceeded => "quota_exceeded",
        }
    }

    /// The HTTP status the API answers with.
    pub fn status(self) -> u16 {
        match self {
            Rejection::NotFound => 404,
            Rejection::RouteConflict | Rejection::AlreadyInitialized | Rejection::Conflict => 409,
            Rejection::MissingComponent | Rejection::Invalid => 422,
            Rejection::QuotaExceeded => 403,
        }
    }
}
