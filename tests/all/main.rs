//! End-to-end tests of the `dabba` binary: real processes, real sockets on 127.0.0.1,
//! real guest components built from this workspace. One test binary, one module per
//! area, as wasmtime does it.

#![allow(
    clippy::inconsistent_digit_grouping,
    reason = "amounts are written rupees_paise: 2_000_00 is ₹2,000.00"
)]

mod support;

mod auth;
mod autoscale;
mod bad_input;
mod bench;
mod cluster;
mod cron;
mod jobs;
mod limits;
mod logs;
mod platform;
mod quota;
mod regions;
mod rollouts;
mod runtime;
mod samples;
mod secrets;
