//! `GET /.dabba/logs/apps/{ns}/{app}` and `GET /.dabba/logs/runs/{ns}/{run}` on the
//! host's ingress: the lines of this host's logs, for a controller to merge with the
//! other hosts' (`spec/api.md`, logs). `crate::peer` answers only callers that show
//! the cluster's read key: a guest's output is a merchant's business.
//!
//! One JSON [`LogLine`] per line. Query: `pod` (only that pod), `since` (Unix ms),
//! `tail` (the last N lines), `follow` (keep the answer open and send each new line:
//! the logs are polled, new pods' logs picked up as they appear).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dabba_client::transport::{streamed, whole};
use dabba_spec::api::{LogLine, LogQuery};
use dabba_spec::resources::valid_segment;

use super::{Cursor, Entry, LogDir, read_log, read_new};
use crate::function::{HttpResponse, error_response};

/// Where a request for logs starts.
pub const PREFIX: &str = "/.dabba/logs/";

/// How often a followed log is looked at for new lines.
const POLL: Duration = Duration::from_millis(200);

/// This host's logs, as the controllers read them.
pub struct LogService {
    dir: LogDir,
    host: String,
}

/// Whose logs a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    App { namespace: String, app: String },
    Run { namespace: String, run: String },
}

impl LogService {
    pub fn new(dir: LogDir, host: &str) -> LogService {
        LogService {
            dir,
            host: host.to_string(),
        }
    }

    pub fn dir(&self) -> &LogDir {
        &self.dir
    }

    /// Answers a request under [`PREFIX`] (the caller showed the read key). The logs are
    /// read on the blocking pool: a first read can be tens of MiB, and the ingress's
    /// threads answer requests.
    pub async fn answer(self: &Arc<Self>, parts: &http::request::Parts) -> HttpResponse {
        let target = match target(parts.uri.path()) {
            Ok(t) => Arc::new(t),
            Err(why) => return error_response(404, "not_found", &why, None),
        };
        let query = match LogQuery::parse(parts.uri.query().unwrap_or("")) {
            Ok(q) => q,
            Err(why) => return error_response(400, "bad_request", &why, None),
        };
        let (first, files) = self
            .collect_off_runtime(target.clone(), Arc::new(query.clone()), HashMap::new())
            .await;
        if !query.follow {
            return ndjson(whole(encode(&first)));
        }
        let (tx, body) = streamed(None, 16);
        let me = self.clone();
        // The tail is of what was there; every line written from now on is sent.
        let query = Arc::new(LogQuery {
            tail: None,
            ..query
        });
        tokio::spawn(async move {
            let mut files = files;
            let mut new = first;
            loop {
                if !new.is_empty() && tx.send(Ok(encode(&new))).await.is_err() {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(POLL) => {}
                    () = tx.closed() => return,
                }
                (new, files) = me
                    .collect_off_runtime(target.clone(), query.clone(), files)
                    .await;
            }
        });
        ndjson(body)
    }

    /// [`LogService::collect`] on the blocking pool.
    async fn collect_off_runtime(
        self: &Arc<Self>,
        target: Arc<Target>,
        query: Arc<LogQuery>,
        mut files: HashMap<PathBuf, Cursor>,
    ) -> (Vec<LogLine>, HashMap<PathBuf, Cursor>) {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let lines = me.collect(&target, &query, &mut files);
            (lines, files)
        })
        .await
        .unwrap_or_default()
    }

    /// The lines of `target`'s logs not yet read (by `files`' cursors; a log not in
    /// `files` is read whole), oldest first, with `query` applied.
    fn collect(
        &self,
        target: &Target,
        query: &LogQuery,
        files: &mut HashMap<PathBuf, Cursor>,
    ) -> Vec<LogLine> {
        let mut lines = Vec::new();
        for (pod, path) in self.logs_of(target, query.pod.as_deref()) {
            let entries = match files.get_mut(&path) {
                Some(cursor) => read_new(&path, cursor),
                None => {
                    let (entries, cursor) = read_log(&path);
                    files.insert(path, cursor);
                    entries
                }
            };
            lines.extend(
                entries
                    .into_iter()
                    .filter(|e| query.since.is_none_or(|s| e.t >= s))
                    .map(|e| self.line(&pod, e)),
            );
        }
        lines.sort_by_key(|l| l.t);
        if let Some(n) = query.tail {
            lines.drain(..lines.len().saturating_sub(n));
        }
        lines
    }

    /// The logs a target has here, by pod (or run).
    fn logs_of(&self, target: &Target, pod: Option<&str>) -> Vec<(String, PathBuf)> {
        match target {
            Target::Run { namespace, run } => {
                let path = self.dir.run_path(namespace, run);
                if path.exists() {
                    vec![(run.clone(), path)]
                } else {
                    Vec::new()
                }
            }
            Target::App { namespace, app } => {
                let Ok(list) = std::fs::read_dir(self.dir.app_dir(namespace, app)) else {
                    return Vec::new();
                };
                let mut logs: Vec<(String, PathBuf)> = list
                    .flatten()
                    .filter_map(|e| {
                        let name = e.file_name().into_string().ok()?;
                        let p = name.strip_suffix(".log")?.to_string();
                        (pod.is_none_or(|want| want == p)).then(|| (p, e.path()))
                    })
                    .collect();
                logs.sort();
                logs
            }
        }
    }

    fn line(&self, pod: &str, e: Entry) -> LogLine {
        LogLine {
            host: self.host.clone(),
            pod: pod.to_string(),
            t: e.t,
            stream: e.s.as_str().to_string(),
            line: e.l,
        }
    }
}

fn target(path: &str) -> Result<Target, String> {
    let rest = path.strip_prefix(PREFIX).unwrap_or("");
    let parts: Vec<&str> = rest.split('/').collect();
    let checked = |s: &str| {
        if valid_segment(s) {
            Ok(s.to_string())
        } else {
            Err(format!("`{s}` in {path} is not a name"))
        }
    };
    match parts.as_slice() {
        ["apps", ns, app] => Ok(Target::App {
            namespace: checked(ns)?,
            app: checked(app)?,
        }),
        ["runs", ns, run] => Ok(Target::Run {
            namespace: checked(ns)?,
            run: checked(run)?,
        }),
        _ => Err(format!(
            "no logs at {path} (apps/NAMESPACE/APP or runs/NAMESPACE/RUN)"
        )),
    }
}

/// Lines as the answer carries them: one JSON object each.
fn encode(lines: &[LogLine]) -> Bytes {
    let mut buf = Vec::new();
    for l in lines {
        serde_json::to_writer(&mut buf, l).expect("a log line serializes");
        buf.push(b'\n');
    }
    Bytes::from(buf)
}

fn ndjson(body: dabba_client::transport::Body) -> HttpResponse {
    http::Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, "application/x-ndjson")
        .body(body)
        .expect("a valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_an_app_or_a_run_and_nothing_else() {
        assert_eq!(
            target("/.dabba/logs/apps/default/pay"),
            Ok(Target::App {
                namespace: "default".into(),
                app: "pay".into()
            })
        );
        assert_eq!(
            target("/.dabba/logs/runs/d/nightly-202612010200"),
            Ok(Target::Run {
                namespace: "d".into(),
                run: "nightly-202612010200".into()
            })
        );
        for bad in [
            "/.dabba/logs/apps/d/..",
            "/.dabba/logs/apps/../etc",
            "/.dabba/logs/apps/d/pay/extra",
            "/.dabba/logs/pods/d/p",
            "/.dabba/logs/apps/d/.hidden",
        ] {
            assert!(target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lines_of_every_pod_are_merged_in_time_order_and_cut_to_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogDir::new(dir.path().to_path_buf(), 1 << 20);
        let service = LogService::new(logs.clone(), "h1");
        let write = |pod: &str, t: u64, l: &str| {
            let mut f = logs.log(logs.pod_path("d", "pay", pod)).open().unwrap();
            f.append(&[Entry {
                t,
                s: super::super::Stream::Stdout,
                l: l.into(),
            }])
            .unwrap();
        };
        write("pay-1-a", 10, "a10");
        write("pay-1-b", 5, "b5");
        write("pay-1-a", 20, "a20");
        write("pay-1-b", 30, "b30");
        let app = Target::App {
            namespace: "d".into(),
            app: "pay".into(),
        };
        let text = |q: &LogQuery, files: &mut HashMap<PathBuf, Cursor>| -> Vec<String> {
            service
                .collect(&app, q, files)
                .into_iter()
                .map(|l| format!("{}:{}", l.pod, l.line))
                .collect()
        };
        let all = LogQuery::default();
        assert_eq!(
            text(&all, &mut HashMap::new()),
            ["pay-1-b:b5", "pay-1-a:a10", "pay-1-a:a20", "pay-1-b:b30"]
        );
        let q = LogQuery {
            since: Some(10),
            tail: Some(2),
            ..Default::default()
        };
        assert_eq!(
            text(&q, &mut HashMap::new()),
            ["pay-1-a:a20", "pay-1-b:b30"]
        );
        let q = LogQuery {
            pod: Some("pay-1-b".into()),
            ..Default::default()
        };
        assert_eq!(text(&q, &mut HashMap::new()), ["pay-1-b:b5", "pay-1-b:b30"]);
        // Following: only what is new, including a pod that appears.
        let mut files = HashMap::new();
        assert_eq!(text(&all, &mut files).len(), 4);
        write("pay-1-a", 40, "a40");
        write("pay-2-c", 35, "c35");
        assert_eq!(text(&all, &mut files), ["pay-2-c:c35", "pay-1-a:a40"]);
        assert!(text(&all, &mut files).is_empty());
    }
}
