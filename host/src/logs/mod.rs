//! Guest output and platform events, kept per pod (and per job run) on the host's disk.
//!
//! A log is where its lines are produced: an app's pods write to
//! `<data>/logs/apps/<namespace>/<app>/<pod>.log`, a cron job's runs to
//! `<data>/logs/runs/<namespace>/<run>.log` (every attempt that ran here). One JSON
//! object per line (`{"t":ms,"s":"stdout","l":"..."}`), appended as the guest writes,
//! so `dabba logs --follow` sees a job's output while it runs. A log is capped: once
//! the next line would take it past the cap, it is renamed `<name>.log.1` (replacing
//! the previous one) and a new one begun, so a pod holds at most twice the cap on disk.
//! Nothing is fsync'd per line (as a container runtime does not): lines reach the page
//! cache with one `write`, so they outlive the host process, not a power cut.
//!
//! The lines stay on the host that wrote them — a controller failover loses none — and
//! `serve` answers them to the controllers, which merge them from every host.

mod serve;

pub use serve::{LogService, PREFIX};

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
    /// What the platform did to the pod or run: started, stopped, ended.
    Event,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Event => "event",
        }
    }
}

/// One line of a log, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Unix milliseconds.
    pub t: u64,
    pub s: Stream,
    pub l: String,
}

impl Entry {
    pub fn now(s: Stream, l: impl Into<String>) -> Entry {
        Entry {
            t: unix_millis(),
            s,
            l: l.into(),
        }
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A log being appended to, rotated at its cap.
pub struct LogFile {
    path: PathBuf,
    cap: u64,
    file: File,
    size: u64,
}

impl LogFile {
    /// Opens (or creates) the log at `path` for appending.
    pub fn open(path: PathBuf, cap: u64) -> std::io::Result<LogFile> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(LogFile {
            path,
            cap,
            file,
            size,
        })
    }

    /// Appends `entries`, rotating first whenever the next one would pass the cap (a
    /// single line longer than the cap gets a part of its own).
    pub fn append(&mut self, entries: &[Entry]) -> std::io::Result<()> {
        let mut buf = Vec::new();
        for e in entries {
            let mut line = serde_json::to_vec(e).map_err(std::io::Error::other)?;
            line.push(b'\n');
            let pending = self.size + buf.len() as u64;
            if pending > 0 && pending + line.len() as u64 > self.cap {
                self.file.write_all(&buf)?;
                buf.clear();
                self.rotate()?;
            }
            buf.extend_from_slice(&line);
        }
        self.file.write_all(&buf)?;
        self.size += buf.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        std::fs::rename(&self.path, rotated(&self.path))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// Where a log's previous part goes when it rotates.
fn rotated(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

/// An app's (or a job's) output as a host records it: echoed to the host's stderr when
/// asked (`dabba serve`), appended to the pod's log when it runs in a cluster.
pub struct AppLog {
    app: String,
    echo: bool,
    file: Option<Mutex<LogFile>>,
}

impl AppLog {
    pub fn new(app: &str, file: Option<LogFile>, echo: bool) -> AppLog {
        AppLog {
            app: app.to_string(),
            echo,
            file: file.map(Mutex::new),
        }
    }

    /// Records complete lines of one stream's output.
    pub fn record(&self, stream: Stream, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(bytes);
        if self.echo {
            for line in text.lines() {
                eprintln!("[{}] {line}", self.app);
            }
        }
        let t = unix_millis();
        let entries: Vec<Entry> = text
            .lines()
            .map(|l| Entry {
                t,
                s: stream,
                l: l.to_string(),
            })
            .collect();
        self.write(&entries);
    }

    /// Records what the platform did.
    pub fn event(&self, text: impl Into<String>) {
        self.write(&[Entry::now(Stream::Event, text)]);
    }

    fn write(&self, entries: &[Entry]) {
        if let Some(f) = &self.file {
            let mut f = f.lock().expect("log lock poisoned");
            if let Err(e) = f.append(entries) {
                tracing::warn!(app = %self.app, path = %f.path.display(), error = %e, "cannot write a log");
            }
        }
    }
}

/// Where a log was read up to: the current file (by inode) and the bytes of it read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    ino: u64,
    offset: u64,
}

/// Every entry of a log, its rotated part first, and where it ended. A torn last line
/// (a host that died mid-write) is skipped, not an error.
pub fn read_log(path: &Path) -> (Vec<Entry>, Cursor) {
    let mut entries = Vec::new();
    if let Ok(bytes) = std::fs::read(rotated(path)) {
        parse_into(&bytes, &mut entries);
    }
    let mut cursor = Cursor::default();
    if let Ok(mut f) = File::open(path)
        && let Ok(meta) = f.metadata()
    {
        cursor.ino = meta.ino();
        let mut bytes = Vec::new();
        if f.read_to_end(&mut bytes).is_ok() {
            cursor.offset = parse_into(&bytes, &mut entries) as u64;
        }
    }
    (entries, cursor)
}

/// The entries appended to a log since `cursor`, which moves past them; across a
/// rotation, the rest of the rotated part first.
pub fn read_new(path: &Path, cursor: &mut Cursor) -> Vec<Entry> {
    let mut entries = Vec::new();
    let Ok(meta) = std::fs::metadata(path) else {
        return entries;
    };
    if meta.ino() != cursor.ino {
        // Rotated (or begun) since: finish the part that was being read, if it was.
        let old = rotated(path);
        if cursor.ino != 0
            && std::fs::metadata(&old).is_ok_and(|m| m.ino() == cursor.ino)
            && let Some(bytes) = read_from(&old, cursor.offset)
        {
            parse_into(&bytes, &mut entries);
        }
        *cursor = Cursor {
            ino: meta.ino(),
            offset: 0,
        };
    } else if meta.len() < cursor.offset {
        cursor.offset = 0;
    }
    if meta.len() > cursor.offset
        && let Some(bytes) = read_from(path, cursor.offset)
    {
        cursor.offset += parse_into(&bytes, &mut entries) as u64;
    }
    entries
}

fn read_from(path: &Path, offset: u64) -> Option<Vec<u8>> {
    let mut f = File::open(path).ok()?;
    f.seek(SeekFrom::Start(offset)).ok()?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

/// Parses the complete lines of `bytes` into `out`; returns the bytes they took (a
/// last line without its newline is left for the next read).
fn parse_into(bytes: &[u8], out: &mut Vec<Entry>) -> usize {
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    for line in bytes[..complete].split(|b| *b == b'\n') {
        if line.is_empty() {
            continue;
        }
        if let Ok(e) = serde_json::from_slice::<Entry>(line) {
            out.push(e);
        }
    }
    complete
}

/// The logs of one host: where each pod's and run's log lives, how big one may grow,
/// and how long one outlives its pod.
#[derive(Debug, Clone)]
pub struct LogDir {
    root: PathBuf,
    cap: u64,
}

impl LogDir {
    /// The default cap of one log file (a pod keeps at most twice this).
    pub const DEFAULT_CAP: u64 = 10 << 20;
    /// How long the log of a pod or run that no longer runs here is kept.
    pub const RETENTION: Duration = Duration::from_secs(24 * 3600);

    pub fn new(root: PathBuf, cap: u64) -> LogDir {
        LogDir { root, cap }
    }

    /// The directory of an app's pod logs.
    pub fn app_dir(&self, namespace: &str, app: &str) -> PathBuf {
        self.root.join("apps").join(namespace).join(app)
    }

    pub fn pod_path(&self, namespace: &str, app: &str, pod: &str) -> PathBuf {
        self.app_dir(namespace, app).join(format!("{pod}.log"))
    }

    pub fn run_path(&self, namespace: &str, run: &str) -> PathBuf {
        self.root
            .join("runs")
            .join(namespace)
            .join(format!("{run}.log"))
    }

    /// The log at `path`, with this directory's cap.
    pub fn log(&self, path: PathBuf) -> LogPath {
        LogPath {
            path,
            cap: self.cap,
        }
    }

    /// Removes the logs (both parts) not written for longer than `retention`, except
    /// those in `keep` (pods that run here: a quiet one is still running); returns how
    /// many files went.
    pub fn sweep(&self, retention: Duration, keep: &[PathBuf]) -> usize {
        let mut removed = 0;
        let now = SystemTime::now();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(list) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in list.flatten() {
                let path = e.path();
                let Ok(meta) = e.metadata() else { continue };
                if meta.is_dir() {
                    stack.push(path);
                    continue;
                }
                let base = base_of(&path);
                let old = meta
                    .modified()
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .is_some_and(|age| age > retention);
                if old && !keep.contains(&base) && std::fs::remove_file(&path).is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }
}

/// Where one pod's (or run's) log is, and its cap: what a pod is started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPath {
    pub path: PathBuf,
    pub cap: u64,
}

impl LogPath {
    /// Opens the log for appending, or says why not (the pod then runs without one).
    pub fn open(&self) -> Option<LogFile> {
        match LogFile::open(self.path.clone(), self.cap) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot open a log");
                None
            }
        }
    }

    /// Appends one event (a pod that failed to start has no `AppLog`).
    pub fn event(&self, text: impl Into<String>) {
        if let Some(mut f) = self.open()
            && let Err(e) = f.append(&[Entry::now(Stream::Event, text)])
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot write a log");
        }
    }
}

/// A log's path for either of its parts.
fn base_of(path: &Path) -> PathBuf {
    match path.to_str().and_then(|s| s.strip_suffix(".1")) {
        Some(base) => PathBuf::from(base),
        None => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes one `line-NNN` entry takes in a log.
    fn line_bytes() -> usize {
        serde_json::to_vec(&Entry::now(Stream::Stdout, "line-000"))
            .unwrap()
            .len()
            + 1
    }

    fn lines(entries: &[Entry]) -> Vec<String> {
        entries.iter().map(|e| e.l.clone()).collect()
    }

    #[test]
    fn lines_are_appended_and_read_back_with_their_stream() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/p.log");
        let log = AppLog::new(
            "a",
            Some(LogFile::open(path.clone(), 1 << 20).unwrap()),
            false,
        );
        log.record(Stream::Stdout, b"one\ntwo\n");
        log.record(Stream::Stderr, b"three");
        log.event("stopped");
        let (entries, _) = read_log(&path);
        assert_eq!(lines(&entries), ["one", "two", "three", "stopped"]);
        let streams: Vec<Stream> = entries.iter().map(|e| e.s).collect();
        assert_eq!(
            streams,
            [
                Stream::Stdout,
                Stream::Stdout,
                Stream::Stderr,
                Stream::Event
            ]
        );
        assert!(entries.windows(2).all(|w| w[0].t <= w[1].t));
    }

    #[test]
    fn a_log_rotates_at_its_cap_and_keeps_one_previous_part() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.log");
        let one_line = line_bytes();
        // Room for 10 lines a part.
        let mut f = LogFile::open(path.clone(), 10 * one_line as u64).unwrap();
        for i in 0..35 {
            f.append(&[Entry::now(Stream::Stdout, format!("line-{i:03}"))])
                .unwrap();
        }
        let current = std::fs::metadata(&path).unwrap().len();
        let previous = std::fs::metadata(rotated(&path)).unwrap().len();
        assert!(current <= 10 * one_line as u64, "{current}");
        assert_eq!(previous, 10 * one_line as u64);
        let (entries, _) = read_log(&path);
        let expected: Vec<String> = (20..35).map(|i| format!("line-{i:03}")).collect();
        assert_eq!(
            lines(&entries),
            expected,
            "the two newest parts, oldest first"
        );
        // A batch larger than the cap rotates inside the batch.
        let batch: Vec<Entry> = (100..125)
            .map(|i| Entry::now(Stream::Stdout, format!("line-{i:03}")))
            .collect();
        f.append(&batch).unwrap();
        let (entries, _) = read_log(&path);
        let expected: Vec<String> = (105..125).map(|i| format!("line-{i:03}")).collect();
        assert_eq!(lines(&entries), expected);
    }

    #[test]
    fn a_cursor_follows_a_log_across_a_rotation_without_loss_or_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.log");
        let one_line = line_bytes();
        let mut f = LogFile::open(path.clone(), 4 * one_line as u64).unwrap();
        let (first, mut cursor) = read_log(&path);
        assert!(first.is_empty());
        let mut seen = Vec::new();
        for i in 0..30 {
            f.append(&[Entry::now(Stream::Stdout, format!("line-{i:03}"))])
                .unwrap();
            // Read every third line, so some reads span a rotation.
            if i % 3 == 2 {
                seen.extend(lines(&read_new(&path, &mut cursor)));
            }
        }
        seen.extend(lines(&read_new(&path, &mut cursor)));
        let expected: Vec<String> = (0..30).map(|i| format!("line-{i:03}")).collect();
        assert_eq!(seen, expected);
        assert!(read_new(&path, &mut cursor).is_empty());
    }

    #[test]
    fn a_torn_last_line_is_left_until_it_is_complete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.log");
        let mut f = LogFile::open(path.clone(), 1 << 20).unwrap();
        f.append(&[Entry::now(Stream::Stdout, "whole")]).unwrap();
        let mut raw = OpenOptions::new().append(true).open(&path).unwrap();
        raw.write_all(br#"{"t":1,"s":"stdout","l":"ha"#).unwrap();
        let (entries, mut cursor) = read_log(&path);
        assert_eq!(lines(&entries), ["whole"]);
        raw.write_all(b"lf\"}\n").unwrap();
        assert_eq!(lines(&read_new(&path, &mut cursor)), ["half"]);
    }

    #[test]
    fn a_sweep_removes_old_logs_but_not_those_of_running_pods() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogDir::new(dir.path().to_path_buf(), 1 << 20);
        let gone = logs.pod_path("d", "pay", "pay-1-a");
        let quiet = logs.pod_path("d", "pay", "pay-1-b");
        let fresh = logs.run_path("d", "nightly-1");
        for p in [&gone, &quiet, &fresh] {
            logs.log(p.clone()).event("started");
        }
        std::fs::write(rotated(&gone), b"").unwrap();
        let long_ago = SystemTime::now() - Duration::from_secs(3600);
        for p in [&gone, &rotated(&gone), &quiet] {
            File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(long_ago)
                .unwrap();
        }
        let removed = logs.sweep(Duration::from_secs(60), std::slice::from_ref(&quiet));
        assert_eq!(removed, 2);
        assert!(!gone.exists() && !rotated(&gone).exists());
        assert!(quiet.exists() && fresh.exists());
    }
}
