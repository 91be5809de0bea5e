//! `dabba-controller` is the control plane: an openraft-replicated state machine holding
//! all desired state, the `/v1` API server, and the reconcilers as pure functions with
//! thin drivers.

pub mod api;
mod background;
pub mod blobs;
pub mod command;
pub mod credentials;
pub mod node;
#[allow(
    clippy::result_large_err,
    reason = "openraft's StorageError is the error type its storage traits require"
)]
pub mod raft;
pub mod reconcile;
pub mod state;
pub mod vault;
