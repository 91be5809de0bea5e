//! How a guest instance ended, and how that is told to clients and operators.

use dabba_spec::LimitKind;
use wasmtime::Trap;

/// Why an instance did not complete normally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A limit stopped it.
    Limit(LimitKind),
    /// It trapped (including a panic, a stack overflow, an unreachable).
    Trap(String),
    /// The host could not set it up or talk to it.
    Host(String),
}

impl Failure {
    /// Classifies an error returned by a guest call. `memory_hit` says whether the
    /// instance was refused memory: a Rust guest then aborts with a generic trap, which
    /// is really the memory limit.
    pub fn classify(e: &wasmtime::Error, memory_hit: bool) -> Failure {
        if memory_hit {
            return Failure::Limit(LimitKind::Memory);
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => Failure::Limit(LimitKind::Fuel),
            Some(Trap::Interrupt) => Failure::Limit(LimitKind::Timeout),
            Some(trap) => Failure::Trap(trap.to_string()),
            None => Failure::Trap(format!("{e:#}")),
        }
    }

    /// The HTTP status a client gets.
    pub fn status(&self) -> u16 {
        match self {
            Failure::Limit(LimitKind::Timeout) => 504,
            Failure::Limit(LimitKind::RequestBody) => 413,
            Failure::Limit(LimitKind::ResponseBody) => 502,
            Failure::Limit(LimitKind::QueueFull | LimitKind::QueueTimeout) => 503,
            Failure::Limit(LimitKind::Fuel | LimitKind::Memory | LimitKind::Output) => 500,
            Failure::Trap(_) => 500,
            Failure::Host(_) => 500,
        }
    }

    /// A stable code for machines.
    pub fn code(&self) -> &'static str {
        match self {
            Failure::Limit(_) => "limit_exceeded",
            Failure::Trap(_) => "guest_trapped",
            Failure::Host(_) => "host_error",
        }
    }

    pub fn limit(&self) -> Option<LimitKind> {
        match self {
            Failure::Limit(k) => Some(*k),
            _ => None,
        }
    }
}

/// Describes a failure for a person, given the limits that were in force.
pub fn describe(f: &Failure, limits: &dabba_spec::Limits) -> String {
    match f {
        Failure::Limit(LimitKind::Fuel) => format!(
            "fuel limit: the guest used its whole budget of {} units and was stopped",
            limits.fuel.unwrap_or_default()
        ),
        Failure::Limit(LimitKind::Memory) => format!(
            "memory limit: the guest needed more than its {} of memory and was stopped",
            limits.memory
        ),
        Failure::Limit(LimitKind::Timeout) => format!(
            "timeout limit: the guest did not finish within {} and was stopped",
            limits.timeout
        ),
        Failure::Limit(LimitKind::RequestBody) => format!(
            "request_body limit: the request body is larger than {}",
            limits.max_request_body
        ),
        Failure::Limit(LimitKind::ResponseBody) => format!(
            "response_body limit: the guest wrote more than {} and was stopped",
            limits.max_response_body
        ),
        Failure::Limit(LimitKind::QueueFull) => format!(
            "queue_full limit: {} requests are running and {} waiting; try again shortly",
            limits.max_concurrency, limits.queue_depth
        ),
        Failure::Limit(LimitKind::QueueTimeout) => format!(
            "queue_timeout limit: no instance became free within {}; try again shortly",
            limits.queue_timeout
        ),
        Failure::Limit(LimitKind::Output) => {
            format!(
                "output limit: the guest wrote more than {} of output",
                limits.max_output
            )
        }
        Failure::Trap(t) => format!("the guest trapped: {t}"),
        Failure::Host(e) => format!("host error: {e}"),
    }
}
