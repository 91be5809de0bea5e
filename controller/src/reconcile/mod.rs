//! Reconcilers: pure functions from (desired state, observed state, now) to the commands
//! that move the cluster toward the desired state.
//!
//! Contract, as in kube-rs and the Kubernetes controllers: a reconciler is level-
//! triggered and idempotent. It is not told why it runs; it looks at everything and
//! proposes what is missing. Run twice on the same input it proposes the same commands;
//! run on a converged cluster it proposes none. It never awaits and does no I/O: the
//! driver on the leader feeds it the committed state and the leader's soft state
//! (heartbeats), and commits what it returns through Raft.

pub mod autoscale;
pub mod blobs;
pub mod cron;
mod hosts;
pub mod pods;
pub mod regions;
pub mod replicas;
pub mod rollout;
pub mod scheduler;

use std::collections::{BTreeSet, HashMap};

use dabba_spec::resources::{HostState, Millis, RestartBackoff};

use crate::command::Command;
use crate::state::State;

/// Soft state the leader keeps in memory and never commits.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Last heartbeat received from each host.
    pub heartbeats: HashMap<String, Millis>,
    /// When this controller became leader: every host gets a full failure timeout from
    /// then before it can be judged, whatever the previous leader saw.
    pub leader_since: Millis,
    /// The Raft voters (for each region's share of them).
    pub voters: Vec<u64>,
    /// What apps placed across regions served in each region over their window.
    pub served: regions::Measured,
}

/// Knobs of the reconcilers.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// A host that has not sent a heartbeat for this long is NotReady and its pods are
    /// replaced elsewhere. By default: 3 s.
    pub failure_timeout: Millis,
    /// A pod its host could not run (Failed) is replaced after this back-off, so a bad
    /// start is retried without a tight loop. By default: 10 s doubling to 5 min.
    pub restart: RestartBackoff,
    /// A component no kept revision or cron job uses is deleted this long after its
    /// upload committed. By default: 10 min.
    pub component_grace: Millis,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            failure_timeout: 3_000,
            restart: RestartBackoff::default(),
            component_grace: 10 * 60_000,
        }
    }
}

/// Everything the reconcilers want done now.
pub fn reconcile(state: &State, observed: &Observed, now: Millis, tuning: &Tuning) -> Vec<Command> {
    let mut commands = Vec::new();
    let verdicts = hosts::judge(state, observed, now, tuning);
    let ready: BTreeSet<&str> = state
        .hosts
        .iter()
        .filter(|(name, host)| {
            let state = verdicts
                .iter()
                .find(|(n, _)| n == *name)
                .map_or(host.state, |(_, s)| *s);
            state == HostState::Ready
        })
        .map(|(name, _)| name.as_str())
        .collect();
    for (name, host_state) in verdicts {
        commands.push(Command::SetHostState {
            name,
            state: host_state,
            at: now,
        });
    }
    let changes = replicas::reconcile(state, &ready, now, tuning);
    if !changes.is_empty() {
        commands.push(Command::Pods { changes, at: now });
    }
    let changes = rollout::plan(state, now);
    if !changes.is_empty() {
        commands.push(Command::Rollout { changes, at: now });
    }
    let changes = regions::plan(state, &observed.voters, &observed.served);
    if !changes.is_empty() {
        commands.push(Command::Regions { changes, at: now });
    }
    let hosts: Vec<&str> = ready.iter().copied().collect();
    let region_of = |h: &str| state.host_region(h).map(str::to_string);
    let changes = cron::plan_placed(&state.cron, now, &hosts, &region_of);
    if !changes.is_empty() {
        commands.push(Command::Cron { changes, at: now });
    }
    let digests = blobs::unused(state, now, tuning.component_grace);
    if !digests.is_empty() {
        commands.push(Command::DeleteBlobs { digests, at: now });
    }
    commands
}

#[cfg(test)]
pub(crate) mod tests;
