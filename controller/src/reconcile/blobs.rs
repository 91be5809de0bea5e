//! Components nothing uses any more: deleted once their grace period is over.
//!
//! A component is in use while a kept revision of an app (the newest 10 of each) or a
//! cron job names it; rolling back to any kept revision therefore always finds its
//! component. One not in use yet is kept `component_grace` after its upload committed,
//! because `dabba apply` uploads first and applies after — and the state machine keeps
//! one that came into use again before the deletion applied.

use dabba_spec::Digest;
use dabba_spec::resources::Millis;

use crate::state::State;

/// The components to delete now.
pub fn unused(state: &State, now: Millis, grace: Millis) -> Vec<Digest> {
    let in_use = state.components_in_use();
    state
        .blobs
        .iter()
        .filter(|(_, b)| now.saturating_sub(b.stored_at) >= grace)
        .filter_map(|(d, _)| d.parse::<Digest>().ok())
        .filter(|d| !in_use.contains(d))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use crate::state::tests::{digest, spec};

    #[test]
    fn a_component_is_deleted_only_when_nothing_uses_it_and_its_grace_is_over() {
        let mut s = State::default();
        for n in 1..=3 {
            s.apply(&Command::PutBlob {
                digest: digest(n),
                size: 10,
                at: 1_000 * n as u64,
                bytes: None,
            });
        }
        // Component 1 runs app a; 2 and 3 are used by nothing.
        let mut a = spec("a", "/a", 1);
        a.component = digest(1);
        s.apply(&Command::ApplyApp {
            spec: Box::new(a.clone()),
            at: 5_000,
        });
        assert_eq!(unused(&s, 2_999, 1_000), vec![]);
        assert_eq!(unused(&s, 3_000, 1_000), vec![digest(2)]);
        assert_eq!(unused(&s, 4_000, 1_000), vec![digest(2), digest(3)]);

        // A new revision on component 2 keeps both: the old revision is kept too.
        a.component = digest(2);
        s.apply(&Command::ApplyApp {
            spec: Box::new(a),
            at: 6_000,
        });
        assert_eq!(unused(&s, 100_000, 1_000), vec![digest(3)]);

        // A deletion proposed before component 3 came into use keeps it.
        let stale = unused(&s, 100_000, 1_000);
        let mut b = spec("b", "/b", 1);
        b.component = digest(3);
        s.apply(&Command::ApplyApp {
            spec: Box::new(b),
            at: 7_000,
        });
        s.apply(&Command::DeleteBlobs {
            digests: stale,
            at: 8_000,
        });
        assert!(s.blob(&digest(3)).is_some());

        // Once the app is deleted, its components go.
        s.apply(&Command::DeleteApp {
            namespace: "default".into(),
            name: "a".into(),
            at: 9_000,
        });
        let gone = unused(&s, 100_000, 1_000);
        assert_eq!(gone, vec![digest(1), digest(2)]);
        s.apply(&Command::DeleteBlobs {
            digests: gone,
            at: 10_000,
        });
        assert_eq!(s.blob(&digest(1)), None);
        assert_eq!(s.blob(&digest(2)), None);
        assert_eq!(s.blob(&digest(3)), Some(10));
        assert!(unused(&s, 100_000, 1_000).is_empty());
    }
}
