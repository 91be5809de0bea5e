//! `dabba-testkit` starts dabba the one way the end-to-end tests and the benchmarks
//! both use: real `dabba` processes on loopback ports handed out here, each ready when
//! its API says so — a controller when `/v1/healthz` answers and it is a voter, a host
//! when the controllers list it Ready, `dabba up` when its host is Ready (and, with the
//! demo, the sample apps run), `dabba serve` when it answers HTTP. Nothing waits on
//! what a process prints for people.
//!
//! - [`Cluster`]: controllers (the first starts the cluster, the others join it) and
//!   hosts; controllers can be killed and restarted.
//! - [`Up`]: the embedded default.
//! - [`Served`]: one component under `dabba serve`.
//! - [`Process`]: any child process, killed when dropped, its output in a log file.
//! - [`wan`]: emulated regions (network namespaces and a wide-area delay) to run a
//!   cluster's processes in.
//! - [`http`]: a small blocking HTTP/1.1 client, for what the tests send on the wire.
//! - [`payments`]: payment clients that retry as careful clients do, and the ledger
//!   check that counts what a failure lost.
//! - [`manifests`]: apps both deploy (a deliberately failing canary).
//! - [`guest`], [`native_servers`], [`bench_harness`]: what must be built first.
//!
//! Launching is async (the benchmarks run on tokio); synchronous tests call
//! [`block_on`]. What it is not: a mock. Every process is the real binary.

mod builds;
mod cluster;
pub mod http;
pub mod manifests;
pub mod payments;
mod ports;
mod process;
mod ready;
mod serve;
mod up;
pub mod wan;

use std::future::Future;
use std::sync::OnceLock;

pub use builds::{
    bench_harness, guest, native_servers, padded_component, python_component, workspace,
};
pub use cluster::{Cluster, ClusterOptions, HostOptions};
pub use ports::{free_addr, free_port};
pub use process::{Process, status_kib};
pub use ready::{eventually, until};
pub use serve::{Served, start_server};
pub use up::{Up, UpOptions};

/// Runs `future` to completion on a runtime shared by every caller in this process
/// (the typed API client's connections live on it). For synchronous tests; async code
/// awaits the launchers directly.
pub fn block_on<F: Future>(future: F) -> F::Output {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("testkit")
                .enable_all()
                .build()
                .expect("a tokio runtime")
        })
        .block_on(future)
}
