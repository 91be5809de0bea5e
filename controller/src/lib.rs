//! `dabba-controller` is the control plane: an openraft-replicated state machine holding
//! all desired state, the `/v1` API server, and the reconcilers (replica sets, scheduler,
//! autoscaler, cron, rollouts, failover) as pure functions with thin drivers.
//!
//! It is not built yet: this crate exists so the workspace has its final shape. The host
//! and the CLI run components on their own until the controller lands (see
//! `spec/controller.md` for what it will hold).
