//! The audit log in the replicated state: the newest [`AUDIT_KEPT`] entries, each
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
}

impl Default for AuditTrail {
    fn default() -> AuditTrail {
        AuditTrail {
            anchor: GENESIS.into(),
            entries: VecDeque::new(),
            next: 1,
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
        self.entries.push_back(entry);
        while self.entries.len() > AUDIT_KEPT {
            if let Some(old) = self.entries.pop_front() {
                self.anchor = old.hash;
            }
        }
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
}
