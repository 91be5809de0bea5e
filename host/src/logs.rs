//! Guest output, kept per app: the last lines of stdout and stderr of its instances,
//! readable by `dabba logs`, and echoed to the host's stderr when asked.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogLine {
    pub stream: Stream,
    pub line: String,
}

/// The lines kept, and how many were ever recorded (so a reader can ask for the new ones).
#[derive(Default)]
struct Ring {
    lines: VecDeque<LogLine>,
    recorded: u64,
}

/// A bounded ring of an app's recent output lines.
pub struct AppLog {
    app: String,
    lines: Mutex<Ring>,
    max_lines: usize,
    echo: bool,
}

impl AppLog {
    pub fn new(app: &str, max_lines: usize, echo: bool) -> AppLog {
        AppLog {
            app: app.to_string(),
            lines: Mutex::new(Ring::default()),
            max_lines,
            echo,
        }
    }

    /// Records the output of one instance, split into lines.
    pub fn record(&self, stream: Stream, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(bytes);
        let mut ring = self.lines.lock().expect("log lock poisoned");
        for line in text.lines() {
            if self.echo {
                eprintln!("[{}] {line}", self.app);
            }
            if ring.lines.len() == self.max_lines {
                ring.lines.pop_front();
            }
            ring.recorded += 1;
            ring.lines.push_back(LogLine {
                stream,
                line: line.to_string(),
            });
        }
    }

    /// The most recent `n` lines, oldest first.
    pub fn tail(&self, n: usize) -> Vec<LogLine> {
        let ring = self.lines.lock().expect("log lock poisoned");
        ring.lines
            .iter()
            .skip(ring.lines.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    /// The lines recorded after the first `seen` (those still kept), and the count to
    /// pass next time.
    pub fn since(&self, seen: u64) -> (Vec<LogLine>, u64) {
        let ring = self.lines.lock().expect("log lock poisoned");
        let new = (ring.recorded.saturating_sub(seen) as usize).min(ring.lines.len());
        let lines = ring
            .lines
            .iter()
            .skip(ring.lines.len() - new)
            .cloned()
            .collect();
        (lines, ring.recorded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_newest_lines() {
        let log = AppLog::new("a", 3, false);
        log.record(Stream::Stdout, b"one\ntwo\n");
        log.record(Stream::Stderr, b"three\nfour");
        let tail: Vec<String> = log.tail(10).into_iter().map(|l| l.line).collect();
        assert_eq!(tail, ["two", "three", "four"]);
        assert_eq!(log.tail(1)[0].stream, Stream::Stderr);
    }

    #[test]
    fn since_returns_only_new_lines() {
        let log = AppLog::new("a", 3, false);
        log.record(Stream::Stdout, b"one\ntwo\n");
        let (first, seen) = log.since(0);
        assert_eq!(first.len(), 2);
        assert_eq!(seen, 2);
        log.record(Stream::Stdout, b"three\nfour\nfive\nsix\n");
        let (next, seen) = log.since(seen);
        let text: Vec<String> = next.into_iter().map(|l| l.line).collect();
        assert_eq!(
            text,
            ["four", "five", "six"],
            "older new lines were already dropped"
        );
        assert_eq!(seen, 6);
        assert!(log.since(seen).0.is_empty());
    }
}
