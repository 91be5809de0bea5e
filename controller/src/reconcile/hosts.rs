//! Host health: Ready while heartbeats arrive, NotReady once they have been missing for
//! the failure timeout. Only the transitions are committed; heartbeats stay in the
//! leader's memory.

use dabba_spec::resources::{HostState, Millis};

use super::{Observed, Tuning};
use crate::state::State;

/// The hosts whose state should change, and to what.
pub fn judge(
    state: &State,
    observed: &Observed,
    now: Millis,
    tuning: &Tuning,
) -> Vec<(String, HostState)> {
    let mut verdicts = Vec::new();
    for (name, host) in &state.hosts {
        // A host is judged from the later of its last heartbeat and the moment this
        // leader took over (a new leader has seen no heartbeats yet).
        let last = observed
            .heartbeats
            .get(name)
            .copied()
            .unwrap_or(0)
            .max(observed.leader_since)
            .max(host.since);
        let silent = now.saturating_sub(last) > tuning.failure_timeout;
        let heard_recently = observed.heartbeats.get(name).is_some_and(|hb| {
            now.saturating_sub(*hb) <= tuning.failure_timeout && *hb > host.since
        });
        match host.state {
            HostState::Ready if silent => verdicts.push((name.clone(), HostState::NotReady)),
            HostState::NotReady if heard_recently => {
                verdicts.push((name.clone(), HostState::Ready))
            }
            _ => {}
        }
    }
    verdicts
}
