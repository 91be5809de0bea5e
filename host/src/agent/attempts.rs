//! Which cron job attempts this host has started, and how the ended ones ended, on its
//! disk.
//!
//! Why on disk: a host killed during an attempt and started again under the same name
//! before the controllers judge it lost is still assigned that attempt. Kept in memory
//! only, the record went with the process and the attempt ran a second time — a
//! settlement run twice. Here an attempt is written down (temporary file, fsync,
//! rename) before it starts; after a restart an attempt found written down but not
//! ended did not finish (the process that ran it is gone) and is reported so, never run
//! again: the controllers then retry it as a new attempt, as they would had the host
//! been lost.
//!
//! And why the reports too: a report can be lost (the controllers unreachable for
//! longer than its retries, the host restarted before it got through). The controllers
//! keep assigning an attempt to this host until its report is applied, so every view
//! of the assignments asks again about each attempt still running there; an attempt
//! that ended here is answered from its written-down report, again, until it is no
//! longer assigned. A run is never left Running because one report was lost.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dabba_spec::cronjob::RunReport;
use dabba_spec::resources::ResourceKey;
use serde::{Deserialize, Serialize};

/// One attempt: its run and its number.
pub type Attempt = (ResourceKey, u32);

/// What cut an attempt short that an earlier process of this host started and never
/// saw end.
pub const RESTARTED: &str = "the host restarted while this attempt ran: it did not finish";

/// How long after sending a report it is sent again while the attempt stays assigned
/// here (a view of the assignments fetched before the report was applied asks again
/// at once).
pub const RESEND: Duration = Duration::from_secs(5);

#[derive(Debug, Default, Serialize, Deserialize)]
struct Recorded {
    /// Started and not seen to end (`attempts` in the first version of this file).
    #[serde(alias = "attempts")]
    started: BTreeSet<Attempt>,
    /// Ended, with the report, until no longer assigned.
    #[serde(default)]
    ended: Vec<(Attempt, RunReport)>,
}

/// An ended attempt's report and when it was last sent by this process.
struct Ended {
    report: RunReport,
    sending: bool,
    sent: Option<Instant>,
}

/// The attempts started here and still assigned, as this process and the ones before
/// it started them.
pub struct Attempts {
    path: PathBuf,
    started: BTreeSet<Attempt>,
    ended: BTreeMap<Attempt, Ended>,
    /// Started by an earlier process and not seen to end: reported cut short, and
    /// logged so once ([`Attempts::take_restarted`]).
    restarted: Vec<(Attempt, RunReport)>,
}

/// What to do about an assigned attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Never started here: it is now recorded; start it.
    Start,
    /// Ended here (or was cut short by a restart) and still assigned: its report has
    /// not been applied yet; send it (and call [`Attempts::sent`] when done).
    Report(RunReport),
    /// Running in this process, or its report is on its way: nothing.
    Nothing,
}

impl Attempts {
    /// Reads the record in `dir` (none yet: nothing started). A record that cannot be
    /// read is an error: starting over would run its attempts again. Attempts started
    /// by an earlier process and not ended are ended now, as cut short by the restart.
    pub fn open(dir: &Path) -> Result<Attempts, String> {
        let path = dir.join("attempts.json");
        let recorded = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Recorded>(&bytes)
                .map_err(|e| format!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Recorded::default(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let mut ended: BTreeMap<Attempt, Ended> = recorded
            .ended
            .into_iter()
            .map(|(a, report)| (a, Ended::new(report, false)))
            .collect();
        let mut restarted = Vec::new();
        for a in recorded.started {
            if let std::collections::btree_map::Entry::Vacant(slot) = ended.entry(a) {
                let report = cut_short(slot.key().1, RESTARTED.into());
                restarted.push((slot.key().clone(), report.clone()));
                slot.insert(Ended::new(report, false));
            }
        }
        Ok(Attempts {
            path,
            started: BTreeSet::new(),
            ended,
            restarted,
        })
    }

    /// The attempts an earlier process started and never saw end, with the reports
    /// that say so; each once.
    pub fn take_restarted(&mut self) -> Vec<(Attempt, RunReport)> {
        std::mem::take(&mut self.restarted)
    }

    /// Decides what to do about `attempt`, assigned to this host at `now`, recording it
    /// first when it is to start.
    pub fn next(&mut self, attempt: &Attempt, now: Instant) -> std::io::Result<Next> {
        if let Some(e) = self.ended.get_mut(attempt) {
            if e.sending || e.sent.is_some_and(|s| now.duration_since(s) < RESEND) {
                return Ok(Next::Nothing);
            }
            e.sending = true;
            e.sent = Some(now);
            return Ok(Next::Report(e.report.clone()));
        }
        if self.started.contains(attempt) {
            return Ok(Next::Nothing);
        }
        self.started.insert(attempt.clone());
        if let Err(e) = self.write() {
            self.started.remove(attempt);
            return Err(e);
        }
        Ok(Next::Start)
    }

    /// Records that `attempt` ended with `report`, which is being sent now. Written
    /// down before the report leaves, so a restart answers with it instead of calling
    /// the attempt cut short.
    pub fn end(
        &mut self,
        attempt: &Attempt,
        report: RunReport,
        now: Instant,
    ) -> std::io::Result<()> {
        self.started.remove(attempt);
        let mut e = Ended::new(report, true);
        e.sent = Some(now);
        self.ended.insert(attempt.clone(), e);
        self.write()
    }

    /// The report of `attempt` was sent (delivered or not): the next view that still
    /// assigns it here, [`RESEND`] after it was sent, sends it again.
    pub fn sent(&mut self, attempt: &Attempt) {
        if let Some(e) = self.ended.get_mut(attempt) {
            e.sending = false;
        }
    }

    /// Forgets the attempts no longer assigned (they reported, or were given up).
    pub fn retain(&mut self, assigned: &BTreeSet<Attempt>) -> std::io::Result<()> {
        let before = self.started.len() + self.ended.len();
        self.started.retain(|a| assigned.contains(a));
        self.ended.retain(|a, _| assigned.contains(a));
        if self.started.len() + self.ended.len() == before {
            return Ok(());
        }
        self.write()
    }

    fn write(&self) -> std::io::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(&Recorded {
            started: self.started.clone(),
            ended: self
                .ended
                .iter()
                .map(|(a, e)| (a.clone(), e.report.clone()))
                .collect(),
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

impl Ended {
    fn new(report: RunReport, sending: bool) -> Ended {
        Ended {
            report,
            sending,
            sent: None,
        }
    }
}

/// The report of attempt number `attempt`, which did not finish, saying `why`.
pub fn cut_short(attempt: u32, why: String) -> RunReport {
    RunReport {
        attempt,
        exit_code: -1,
        fuel: None,
        duration_ms: 0,
        reason: Some(why),
        output: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(run: &str, n: u32) -> Attempt {
        (ResourceKey::new("default", run), n)
    }

    fn done(n: u32) -> RunReport {
        RunReport {
            attempt: n,
            exit_code: 0,
            fuel: Some(7),
            duration_ms: 12,
            reason: None,
            output: "ok".into(),
        }
    }

    #[test]
    fn an_attempt_starts_once_and_after_a_restart_is_reported_cut_short() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let mut a = Attempts::open(dir.path()).unwrap();
        assert_eq!(a.next(&attempt("r1", 1), now).unwrap(), Next::Start);
        assert_eq!(a.next(&attempt("r1", 1), now).unwrap(), Next::Nothing);
        assert_eq!(a.next(&attempt("r2", 1), now).unwrap(), Next::Start);
        drop(a);

        // The process is gone: both were cut short; the next attempt starts.
        let mut a = Attempts::open(dir.path()).unwrap();
        let restarted = Next::Report(cut_short(1, RESTARTED.into()));
        assert_eq!(
            a.take_restarted()
                .into_iter()
                .map(|(a, _)| a)
                .collect::<Vec<_>>(),
            [attempt("r1", 1), attempt("r2", 1)]
        );
        assert!(a.take_restarted().is_empty(), "once");
        assert_eq!(a.next(&attempt("r1", 1), now).unwrap(), restarted);
        assert_eq!(a.next(&attempt("r1", 1), now).unwrap(), Next::Nothing);
        a.sent(&attempt("r1", 1));
        assert_eq!(
            a.next(&attempt("r1", 1), now + RESEND / 2).unwrap(),
            Next::Nothing,
            "not sent again at once"
        );
        assert_eq!(a.next(&attempt("r1", 2), now).unwrap(), Next::Start);
        // r2 ended and is no longer assigned: forgotten, here and on disk.
        a.retain(&[attempt("r1", 1), attempt("r1", 2)].into())
            .unwrap();
        drop(a);

        let mut a = Attempts::open(dir.path()).unwrap();
        assert_eq!(
            a.next(&attempt("r1", 2), now).unwrap(),
            Next::Report(cut_short(2, RESTARTED.into()))
        );
        assert_eq!(a.next(&attempt("r1", 1), now).unwrap(), restarted);
        assert_eq!(a.next(&attempt("r2", 1), now).unwrap(), Next::Start);
    }

    /// A report that did not get through is sent again while the attempt stays
    /// assigned — by this process, after a pause, and by the next one — and the attempt
    /// never starts again.
    #[test]
    fn an_ended_attempt_is_reported_again_until_no_longer_assigned() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let r1 = attempt("r1", 1);
        let mut a = Attempts::open(dir.path()).unwrap();
        assert_eq!(a.next(&r1, now).unwrap(), Next::Start);
        a.end(&r1, done(1), now).unwrap();
        assert_eq!(a.next(&r1, now).unwrap(), Next::Nothing, "on its way");
        a.sent(&r1);
        assert_eq!(a.next(&r1, now).unwrap(), Next::Nothing);
        assert_eq!(a.next(&r1, now + RESEND).unwrap(), Next::Report(done(1)));
        drop(a);

        let mut a = Attempts::open(dir.path()).unwrap();
        assert_eq!(
            a.next(&r1, now).unwrap(),
            Next::Report(done(1)),
            "the report, not a cut-short one, after a restart"
        );
        assert!(a.take_restarted().is_empty());
        a.sent(&r1);
        a.retain(&BTreeSet::new()).unwrap();
        drop(a);
        let mut a = Attempts::open(dir.path()).unwrap();
        assert!(a.ended.is_empty() && a.started.is_empty());
        // Assigned again (a view older than the report): it would start; the
        // controllers no longer assign an attempt that reported, so this is a new one.
        assert_eq!(a.next(&attempt("r1", 2), now).unwrap(), Next::Start);
    }

    /// A record written by the first version of this file (started attempts only) is
    /// read: its attempts were cut short.
    #[test]
    fn a_record_of_the_first_version_is_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("attempts.json"),
            br#"{"attempts":[["default/r1",3]]}"#,
        )
        .unwrap();
        let mut a = Attempts::open(dir.path()).unwrap();
        assert_eq!(
            a.next(&attempt("r1", 3), Instant::now()).unwrap(),
            Next::Report(cut_short(3, RESTARTED.into()))
        );
    }

    /// An attempt whose record cannot be written is not started, and is not taken
    /// for started: the next view asks again.
    #[test]
    fn an_attempt_not_written_down_does_not_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Attempts::open(dir.path()).unwrap();
        let now = Instant::now();
        // The temporary file cannot be created where a directory stands.
        std::fs::create_dir(dir.path().join("attempts.json.tmp")).unwrap();
        assert!(a.next(&attempt("r1", 1), now).is_err());
        std::fs::remove_dir(dir.path().join("attempts.json.tmp")).unwrap();
        assert_eq!(a.next(&attempt("r1", 1), now).unwrap(), Next::Start);
    }

    #[test]
    fn an_unreadable_record_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("attempts.json"), b"{\"attempts\": [tor").unwrap();
        let e = Attempts::open(dir.path()).err().unwrap();
        assert!(e.contains("attempts.json"), "{e}");
    }
}
