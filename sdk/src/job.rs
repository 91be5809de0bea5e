//! The entry point for `wasi:cli` jobs.
//!
//! A job is an ordinary `fn main`; [`run`] turns its result into an exit code and prints
//! the error once, with its chain, on stderr. A job's arguments and environment are the
//! ones its manifest or `dabba run` gives it (`std::env::args`, `std::env::var`).

use std::fmt;
use std::process::ExitCode;

/// A failed job: what went wrong, and the exit code to report.
#[derive(Debug)]
pub struct JobError {
    pub code: u8,
    pub message: String,
}

impl JobError {
    /// A failure with exit code 1.
    pub fn new(message: impl Into<String>) -> Self {
        JobError {
            code: 1,
            message: message.into(),
        }
    }

    /// A usage error (bad arguments): exit code 2.
    pub fn usage(message: impl Into<String>) -> Self {
        JobError {
            code: 2,
            message: message.into(),
        }
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for JobError {}

impl From<crate::kv::KvError> for JobError {
    fn from(e: crate::kv::KvError) -> Self {
        JobError::new(format!("key-value store: {e}"))
    }
}

impl From<crate::config::ConfigError> for JobError {
    fn from(e: crate::config::ConfigError) -> Self {
        JobError::new(e.to_string())
    }
}

/// Runs a job body and reports its outcome as an exit code. WASI 0.2 carries only
/// success or failure out of a component, so any non-zero code is seen by the host as 1.
pub fn run(body: impl FnOnce() -> Result<(), JobError>) -> ExitCode {
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.message);
            ExitCode::from(e.code.max(1))
        }
    }
}

/// The arguments after the program name.
pub fn args() -> Vec<String> {
    std::env::args().skip(1).collect()
}
