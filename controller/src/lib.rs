//! `dabba-controller` is the control plane: an openraft-replicated state machine holding
//! all desired state, the `/v1` API server, and the reconcilers (replica sets, scheduler,
//! autoscaler, cron, rollouts, failover) as pure functions with thin drivers.
//!
//! It is not built yet: this crate exists so the workspace has its final shape. Until it
//! lands, `dabba serve` and `dabba run` drive a host runtime directly.
