//! Resource limits for one HTTP request or one job run, and their defaults.
//!
//! No guest is ever unbounded: every limit has a default, and an app's manifest or the
//! command line can only replace a default with another finite value. Fuel is the one
//! optional limit, because fuel metering makes guest code slower (see `spec/limits.md`):
//! an app that does not ask for a fuel budget is still bounded by its wall-clock timeout.

use serde::{Deserialize, Serialize};

use crate::units::{ByteSize, HumanDuration};

/// What kind of workload a component is run as; each kind has its own defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    /// A `wasi:http/incoming-handler` component: one fresh instance per request.
    Http,
    /// A `wasi:cli/command` component: one instance per run, with args and an exit code.
    Job,
}

/// The limits in force for one request or one run, with every value resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Fuel budget per request or run (deterministic CPU: roughly one unit per wasm
    /// instruction). `None` runs the component on the epoch-only engine, which is faster;
    /// the timeout still bounds it. By default: `None`.
    pub fuel: Option<u64>,
    /// Cap on all of an instance's linear memories and tables together.
    /// By default: 128Mi for HTTP, 512Mi for jobs.
    pub memory: ByteSize,
    /// Wall-clock deadline for a request (until the response is complete) or a run.
    /// By default: 30s for HTTP, 15m for jobs.
    pub timeout: HumanDuration,
    /// Largest request body accepted; larger bodies get 413 before the guest runs.
    /// By default: 1Mi. Jobs ignore it.
    pub max_request_body: ByteSize,
    /// Largest response body a guest may produce; a guest that writes more is stopped
    /// and the client gets 502. By default: 8Mi. Jobs ignore it.
    pub max_response_body: ByteSize,
    /// Instances of this component that may run at once. By default: 64.
    pub max_concurrency: u32,
    /// Requests that may wait for a free instance once `max_concurrency` is reached;
    /// past it the request gets 503 at once. By default: 256.
    pub queue_depth: u32,
    /// How long a queued request waits for an instance before it gets 503.
    /// By default: 1s.
    pub queue_timeout: HumanDuration,
    /// Cap on captured stdout and on captured stderr of one request or run; output past
    /// it is dropped and counted. By default: 1Mi.
    pub max_output: ByteSize,
}

/// The largest memory cap a host accepts for one instance (the pooling allocator's slot).
pub const MAX_MEMORY: ByteSize = ByteSize::gib(4);

impl Limits {
    /// The defaults for a workload kind; every value is finite.
    pub fn defaults(kind: WorkloadKind) -> Self {
        let (memory, timeout) = match kind {
            WorkloadKind::Http => (ByteSize::mib(128), HumanDuration::from_secs(30)),
            WorkloadKind::Job => (ByteSize::mib(512), HumanDuration::from_secs(15 * 60)),
        };
        Limits {
            fuel: None,
            memory,
            timeout,
            max_request_body: ByteSize::mib(1),
            max_response_body: ByteSize::mib(8),
            max_concurrency: 64,
            queue_depth: 256,
            queue_timeout: HumanDuration::from_secs(1),
            max_output: ByteSize::mib(1),
        }
    }

    /// Checks that the values can be enforced: nothing zero that would make every request
    /// fail, and memory within what a host can give one instance.
    pub fn validate(&self) -> Result<(), LimitError> {
        if self.fuel == Some(0) {
            return Err(LimitError::Zero { field: "fuel" });
        }
        if self.memory.as_u64() == 0 {
            return Err(LimitError::Zero { field: "memory" });
        }
        if self.memory > MAX_MEMORY {
            return Err(LimitError::MemoryTooLarge {
                requested: self.memory,
                max: MAX_MEMORY,
            });
        }
        if self.timeout.get().is_zero() {
            return Err(LimitError::Zero { field: "timeout" });
        }
        if self.max_concurrency == 0 {
            return Err(LimitError::Zero {
                field: "max_concurrency",
            });
        }
        Ok(())
    }
}

/// Optional replacements for the defaults, as written in a manifest `[limits]` table or
/// given as command-line flags. Unset fields keep the default of the workload kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_body: Option<ByteSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_response_body: Option<ByteSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_timeout: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output: Option<ByteSize>,
}

impl LimitOverrides {
    /// The defaults of `kind` with these overrides applied, validated.
    pub fn resolve(&self, kind: WorkloadKind) -> Result<Limits, LimitError> {
        let d = Limits::defaults(kind);
        let limits = Limits {
            fuel: self.fuel.or(d.fuel),
            memory: self.memory.unwrap_or(d.memory),
            timeout: self.timeout.unwrap_or(d.timeout),
            max_request_body: self.max_request_body.unwrap_or(d.max_request_body),
            max_response_body: self.max_response_body.unwrap_or(d.max_response_body),
            max_concurrency: self.max_concurrency.unwrap_or(d.max_concurrency),
            queue_depth: self.queue_depth.unwrap_or(d.queue_depth),
            queue_timeout: self.queue_timeout.unwrap_or(d.queue_timeout),
            max_output: self.max_output.unwrap_or(d.max_output),
        };
        limits.validate()?;
        Ok(limits)
    }
}

/// A limit that cannot be enforced as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("`{field}` must be greater than zero")]
    Zero { field: &'static str },
    #[error("`memory` of {requested} is more than one instance may have ({max})")]
    MemoryTooLarge { requested: ByteSize, max: ByteSize },
}

/// Which limit stopped a guest. Counted per app, and named in the 5xx body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    Fuel,
    Memory,
    Timeout,
    RequestBody,
    ResponseBody,
    QueueFull,
    QueueTimeout,
    Output,
}

impl LimitKind {
    pub const ALL: [LimitKind; 8] = [
        LimitKind::Fuel,
        LimitKind::Memory,
        LimitKind::Timeout,
        LimitKind::RequestBody,
        LimitKind::ResponseBody,
        LimitKind::QueueFull,
        LimitKind::QueueTimeout,
        LimitKind::Output,
    ];

    /// The label used in metrics and error bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Fuel => "fuel",
            LimitKind::Memory => "memory",
            LimitKind::Timeout => "timeout",
            LimitKind::RequestBody => "request_body",
            LimitKind::ResponseBody => "response_body",
            LimitKind::QueueFull => "queue_full",
            LimitKind::QueueTimeout => "queue_timeout",
            LimitKind::Output => "output",
        }
    }
}

impl std::fmt::Display for LimitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_finite_and_valid_for_every_kind() {
        for kind in [WorkloadKind::Http, WorkloadKind::Job] {
            let d = Limits::defaults(kind);
            d.validate().unwrap();
            assert!(d.timeout.get().as_secs() > 0);
            assert!(d.memory.as_u64() > 0);
        }
        assert!(
            Limits::defaults(WorkloadKind::Job).timeout
                > Limits::defaults(WorkloadKind::Http).timeout
        );
    }

    #[test]
    fn overrides_replace_only_what_they_set() {
        let o = LimitOverrides {
            fuel: Some(1_000_000),
            memory: Some(ByteSize::mib(16)),
            ..Default::default()
        };
        let l = o.resolve(WorkloadKind::Http).unwrap();
        assert_eq!(l.fuel, Some(1_000_000));
        assert_eq!(l.memory, ByteSize::mib(16));
        assert_eq!(l.timeout, Limits::defaults(WorkloadKind::Http).timeout);
    }

    #[test]
    fn unenforceable_limits_are_rejected() {
        let zero_fuel = LimitOverrides {
            fuel: Some(0),
            ..Default::default()
        };
        assert_eq!(
            zero_fuel.resolve(WorkloadKind::Http),
            Err(LimitError::Zero { field: "fuel" })
        );
        let huge = LimitOverrides {
            memory: Some(ByteSize::gib(64)),
            ..Default::default()
        };
        assert!(matches!(
            huge.resolve(WorkloadKind::Job),
            Err(LimitError::MemoryTooLarge { .. })
        ));
        let no_concurrency = LimitOverrides {
            max_concurrency: Some(0),
            ..Default::default()
        };
        assert!(no_concurrency.resolve(WorkloadKind::Http).is_err());
    }

    #[test]
    fn overrides_reject_unknown_fields() {
        let err = toml::from_str::<LimitOverrides>("memroy = \"1Mi\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("memroy"), "{err}");
    }
}
