//! Which cron job attempts this host has started, on its disk.
//!
//! Why on disk: a host killed during an attempt and started again under the same name
//! before the controllers judge it lost is still assigned that attempt. Kept in memory
//! only, the record went with the process and the attempt ran a second time — a
//! settlement run twice. Here an attempt is written down (temporary file, fsync,
//! rename) before it starts; after a restart an attempt found written down did not
//! finish (the process that ran it is gone) and is reported so, never run again: the
//! controllers then retry it as a new attempt, as they would had the host been lost.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use dabba_spec::resources::ResourceKey;
use serde::{Deserialize, Serialize};

/// One attempt: its run and its number.
pub type Attempt = (ResourceKey, u32);

#[derive(Debug, Default, Serialize, Deserialize)]
struct Recorded {
    attempts: BTreeSet<Attempt>,
}

/// The attempts started here and still assigned, as this process and the ones before
/// it started them.
pub struct Attempts {
    path: PathBuf,
    /// Everything on disk.
    recorded: BTreeSet<Attempt>,
    /// Recorded by an earlier process of this host and not yet reported as cut short.
    before: BTreeSet<Attempt>,
}

/// What to do about an assigned attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Never started here: it is now recorded; start it.
    Start,
    /// Started by an earlier process of this host, which is gone: report that it did
    /// not finish (once).
    CutShort,
    /// Started by this process, or already reported: nothing.
    Nothing,
}

impl Attempts {
    /// Reads the record in `dir` (none yet: nothing started). A record that cannot be
    /// read is an error: starting over would run its attempts again.
    pub fn open(dir: &Path) -> Result<Attempts, String> {
        let path = dir.join("attempts.json");
        let recorded = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice::<Recorded>(&bytes)
                    .map_err(|e| format!("{}: {e}", path.display()))?
                    .attempts
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ok(Attempts {
            path,
            before: recorded.clone(),
            recorded,
        })
    }

    /// Decides what to do about `attempt`, assigned to this host, recording it first
    /// when it is to start.
    pub fn next(&mut self, attempt: &Attempt) -> std::io::Result<Next> {
        if self.before.remove(attempt) {
            return Ok(Next::CutShort);
        }
        if self.recorded.contains(attempt) {
            return Ok(Next::Nothing);
        }
        self.recorded.insert(attempt.clone());
        if let Err(e) = self.write() {
            self.recorded.remove(attempt);
            return Err(e);
        }
        Ok(Next::Start)
    }

    /// Forgets the attempts no longer assigned (they reported, or were given up).
    pub fn retain(&mut self, assigned: &BTreeSet<Attempt>) -> std::io::Result<()> {
        let before = self.recorded.len();
        self.recorded.retain(|a| assigned.contains(a));
        self.before.retain(|a| assigned.contains(a));
        if self.recorded.len() == before {
            return Ok(());
        }
        self.write()
    }

    fn write(&self) -> std::io::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(&Recorded {
            attempts: self.recorded.clone(),
        })
        .map_err(std::io::Error::other)?;
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(run: &str, n: u32) -> Attempt {
        (ResourceKey::new("default", run), n)
    }

    #[test]
    fn an_attempt_starts_once_and_after_a_restart_is_reported_cut_short_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Attempts::open(dir.path()).unwrap();
        assert_eq!(a.next(&attempt("r1", 1)).unwrap(), Next::Start);
        assert_eq!(a.next(&attempt("r1", 1)).unwrap(), Next::Nothing);
        assert_eq!(a.next(&attempt("r2", 1)).unwrap(), Next::Start);
        drop(a);

        // The process is gone: both were cut short; the next attempt starts.
        let mut a = Attempts::open(dir.path()).unwrap();
        assert_eq!(a.next(&attempt("r1", 1)).unwrap(), Next::CutShort);
        assert_eq!(a.next(&attempt("r1", 1)).unwrap(), Next::Nothing);
        assert_eq!(a.next(&attempt("r1", 2)).unwrap(), Next::Start);
        // r2 ended and is no longer assigned: forgotten, here and on disk.
        a.retain(&[attempt("r1", 1), attempt("r1", 2)].into())
            .unwrap();
        drop(a);

        let mut a = Attempts::open(dir.path()).unwrap();
        assert_eq!(a.next(&attempt("r1", 2)).unwrap(), Next::CutShort);
        assert_eq!(a.next(&attempt("r1", 1)).unwrap(), Next::CutShort);
        assert_eq!(a.next(&attempt("r2", 1)).unwrap(), Next::Start);
    }

    /// An attempt whose record cannot be written is not started, and is not taken
    /// for started: the next view asks again.
    #[test]
    fn an_attempt_not_written_down_does_not_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Attempts::open(dir.path()).unwrap();
        // The temporary file cannot be created where a directory stands.
        std::fs::create_dir(dir.path().join("attempts.json.tmp")).unwrap();
        assert!(a.next(&attempt("r1", 1)).is_err());
        std::fs::remove_dir(dir.path().join("attempts.json.tmp")).unwrap();
        assert_eq!(a.next(&attempt("r1", 1)).unwrap(), Next::Start);
    }

    #[test]
    fn an_unreadable_record_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("attempts.json"), b"{\"attempts\": [tor").unwrap();
        let e = Attempts::open(dir.path()).err().unwrap();
        assert!(e.contains("attempts.json"), "{e}");
    }
}
