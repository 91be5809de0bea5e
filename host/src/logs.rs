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

/// A bounded ring of an app's recent output lines.
pub struct AppLog {
    app: String,
    lines: Mutex<VecDeque<LogLine>>,
    max_lines: usize,
    echo: bool,
}

impl AppLog {
    pub fn new(app: &str, max_lines: usize, echo: bool) -> AppLog {
        AppLog {
            app: app.to_string(),
            lines: Mutex::new(VecDeque::new()),
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
        let mut lines = self.lines.lock().expect("log lock poisoned");
        for line in text.lines() {
            if self.echo {
                eprintln!("[{}] {line}", self.app);
            }
            if lines.len() == self.max_lines {
                lines.pop_front();
            }
            lines.push_back(LogLine {
                stream,
                line: line.to_string(),
            });
        }
    }

    /// The most recent `n` lines, oldest first.
    pub fn tail(&self, n: usize) -> Vec<LogLine> {
        let lines = self.lines.lock().expect("log lock poisoned");
        lines
            .iter()
            .skip(lines.len().saturating_sub(n))
            .cloned()
            .collect()
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
}
