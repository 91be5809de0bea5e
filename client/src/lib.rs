//! `dabba-client` is the HTTP side of dabba's contract, for every process that calls
//! another: the CLI, the hosts' agents, controllers (forwarding to the leader, Raft
//! RPCs), the ingress (proxying to another host), the tests and the benchmarks.
//!
//! - [`transport`]: one pooled HTTP/1.1 client and [`transport::send`], which tells a
//!   request that never left from one whose answer was lost.
//! - [`ApiClient`]: the `/v1` API, one typed method per endpoint, over a list of
//!   controllers with failover; [`paths`] builds every endpoint's path in one place.
//!
//! What it is not: the API's types (they are in `dabba_spec::api`, which does no I/O),
//! or a server.

mod api;
pub mod logs;
pub mod paths;
mod transfer;
pub mod transport;

pub use api::{ApiClient, ApiError, MEMBER_CATCH_UP};
