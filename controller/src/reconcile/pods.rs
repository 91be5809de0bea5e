//! What a host's heartbeat changes about its pods: the phases (and reasons) it reports,
//! for the pods the state places on it. A pure function of the committed state and the
//! report; the leader proposes what it returns.
//!
//! A report is believed only for pods assigned to the reporting host (a host that lost
//! a pod to another cannot move it back), never for a Pending pod (it has no host yet),
//! and only when it says something new, so a steady heartbeat proposes nothing.

use dabba_spec::api::PodReport;
use dabba_spec::resources::PodPhase;

use crate::command::PodChange;
use crate::state::State;

/// The pod changes `host`'s `reports` make.
pub fn reported(state: &State, host: &str, reports: &[PodReport]) -> Vec<PodChange> {
    reports
        .iter()
        .filter_map(|r| {
            let pod = state.pods.get(&r.key)?;
            let moved = pod.host.as_deref() == Some(host)
                && pod.phase != PodPhase::Pending
                && (pod.phase != r.phase || pod.reason != r.reason);
            moved.then(|| PodChange::Phase {
                key: r.key.clone(),
                phase: r.phase,
                reason: r.reason.clone(),
            })
        })
        .collect()
}
