//! The audit log in the replicated state: the newest [`AUDIT_KEPT`] entries (and, with
//! a retention set, none older than it), each
//! numbered and chained to the one before when its command is applied (deterministic,
//! so every controller holds the same hashes), and the hash before the oldest kept one.
//! Appending changes no version: nobody waits for audit entries.

use std::collections::VecDeque;

use dabba_spec::audit::{AuditEntry, AuditLog, GENESIS};
use dabba_spec::resources::Millis;
use serde::{Deserialize, Serialize};

/// Entries kept; older ones go (the anchor keeps the chain verifiable).
pub const AUDIT_KEPT: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditTrail {
    /// The hash before the oldest entry kept.
    anchor: String,
    entries: VecDeque<AuditEntry>,
    /// The number the next entry gets.
    next: u64,
    /// Entries older than this (before the newest entry's time) go; `None`: kept
    /// until [`AUDIT_KEPT`] newer ones push them out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_age: Option<Millis>,
}

impl Default for AuditTrail {
    fn default() -> AuditTrail {
        AuditTrail {
            anchor: GENESIS.into(),
            entries: VecDeque::new(),
            next: 1,
            max_age: None,
        }
    }
}

impl AuditTrail {
    /// Numbers `entry`, chains it to the last one and keeps it, dropping the oldest
    /// beyond [`AUDIT_KEPT`].
    pub fn append(&mut self, mut entry: AuditEntry) {
        entry.seq = self.next;
        self.next += 1;
        let prev = self.entries.back().map_or(&self.anchor, |e| &e.hash);
        entry.hash = entry.chained(prev);
        let newest = entry.at;
        self.entries.push_back(entry);
        let too_old = |e: &AuditEntry, max_age: Option<Millis>| {
            max_age.is_some_and(|age| e.at < newest.saturating_sub(age))
        };
        while self.entries.len() > AUDIT_KEPT
            || self
                .entries
                .front()
                .is_some_and(|e| too_old(e, self.max_age))
        {
            if let Some(old) = self.entries.pop_front() {
                self.anchor = old.hash;
            }
        }
    }

    /// Keeps entries at most `max_age` ms older than the newest (`None`: by count only);
    /// takes effect as the next entry is appended.
    pub fn set_max_age(&mut self, max_age: Option<Millis>) {
        self.max_age = max_age;
    }

    pub fn max_age(&self) -> Option<Millis> {
        self.max_age
    }

    /// The entries recorded at or after `since`, with the hash before the first of them.
    pub fn since(&self, since: Millis) -> AuditLog {
        let first = self.entries.partition_point(|e| e.at < since);
        AuditLog {
            anchor: match first {
                0 => self.anchor.clone(),
                i => self.entries[i - 1].hash.clone(),
            },
            entries: self.entries.range(first..).cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(at: Millis) -> AuditEntry {
        AuditEntry {
            seq: 0,
            at,
            user: "admin".into(),
            verb: "apply".into(),
            method: "PUT".into(),
            path: "/v1/apps/default/pay".into(),
            namespace: Some("default".into()),
            status: 200,
            source: "127.0.0.1:1".into(),
            request_id: format!("r{at}"),
            controller: 1,
            body: None,
            hash: String::new(),
        }
    }

    #[test]
    fn entries_are_numbered_chained_and_kept_verifiable_past_retention() {
        let mut t = AuditTrail::default();
        for at in 0..(AUDIT_KEPT as u64 + 5) {
            t.append(entry(at));
        }
        let all = t.since(0);
        assert_eq!(all.entries.len(), AUDIT_KEPT);
        assert_eq!(all.entries[0].seq, 6, "the five oldest went");
        assert_ne!(all.anchor, GENESIS);
        dabba_spec::audit::verify(&all).unwrap();
        let tail = t.since(AUDIT_KEPT as u64);
        assert_eq!(tail.entries.len(), 5);
        assert_eq!(tail.entries[0].at, AUDIT_KEPT as u64);
        dabba_spec::audit::verify(&tail).unwrap();
        // The same appends give the same hashes (every controller applies them).
        let mut again = AuditTrail::default();
        for at in 0..(AUDIT_KEPT as u64 + 5) {
            again.append(entry(at));
        }
        assert_eq!(again, t);
    }

    #[test]
    fn with_a_retention_entries_older_than_it_go_and_the_chain_still_verifies() {
        let mut t = AuditTrail::default();
        for at in [1_000, 2_000, 3_000] {
            t.append(entry(at));
        }
        t.set_max_age(Some(1_500));
        assert_eq!(
            t.since(0).entries.len(),
            3,
            "nothing goes before the next entry"
        );
        t.append(entry(4_000));
        let kept = t.since(0);
        let times: Vec<Millis> = kept.entries.iter().map(|e| e.at).collect();
        assert_eq!(times, [3_000, 4_000], "older than 4,000 - 1,500 went");
        assert_eq!(kept.entries[0].seq, 3);
        dabba_spec::audit::verify(&kept).unwrap();
        t.set_max_age(None);
        t.append(entry(100_000));
        assert_eq!(t.since(0).entries.len(), 3, "by count only again");
    }
}
