//! `dabba-controller` is the control plane: an openraft-replicated state machine holding
//! all desired state, the `/v1` API server, and the reconcilers as pure functions with
//! thin drivers.

pub mod command;
pub mod raft;
pub mod reconcile;
pub mod state;
