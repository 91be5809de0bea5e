//! Heartbeats: every interval, and right after each change, the phase and load of every
//! pod, the requests the activator holds, and the new lines of guest output.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dabba_spec::api::{AppLogLines, Heartbeat, HeldRequests, LogLine, PodReport};
use dabba_spec::resources::{PodPhase, ResourceKey};

use super::{Agent, Local};

impl Agent {
    pub(super) async fn heartbeat_loop(&self) {
        // A heartbeat that cannot be delivered soon is worthless: the next one replaces
        // it. Never let one stall the loop past the controllers' failure timeout.
        let every = self.opts.heartbeat;
        let api = self
            .api
            .with_bounds(every, every.max(Duration::from_millis(500)));
        loop {
            let beat = self.heartbeat();
            match api.heartbeat(self.name(), &beat).await {
                Ok(()) => self.ingress.control_plane().reached(),
                Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
            }
            tokio::select! {
                () = tokio::time::sleep(self.opts.heartbeat) => {}
                () = self.report_now.notified() => {}
            }
        }
    }

    /// The phase and load of every pod, the held requests, and the guest output since
    /// the last heartbeat.
    fn heartbeat(&self) -> Heartbeat {
        let interval = {
            let mut last = self.last_report.lock().expect("report lock");
            let now = Instant::now();
            now - std::mem::replace(&mut *last, now)
        };
        let mut pods = self.pods.lock().expect("pods lock");
        let mut reports = Vec::with_capacity(pods.len());
        let mut logs: HashMap<ResourceKey, AppLogLines> = HashMap::new();
        for (key, t) in pods.iter_mut() {
            match &t.state {
                Local::Running(p) => {
                    reports.push(PodReport {
                        key: key.clone(),
                        phase: PodPhase::Running,
                        reason: None,
                        load: p.function.load().take(interval),
                    });
                    // Each pod keeps its own ring of output lines.
                    let (lines, seen) = p.function.log().since(t.log_seen);
                    t.log_seen = seen;
                    if !lines.is_empty() {
                        let entry = logs.entry(t.app.clone()).or_insert_with(|| AppLogLines {
                            namespace: t.app.namespace().to_string(),
                            app: t.app.name().to_string(),
                            lines: Vec::new(),
                        });
                        entry.lines.extend(lines.into_iter().map(|l| LogLine {
                            host: self.opts.info.name.clone(),
                            stream: match l.stream {
                                crate::logs::Stream::Stdout => "stdout".into(),
                                crate::logs::Stream::Stderr => "stderr".into(),
                            },
                            line: l.line,
                        }));
                    }
                }
                Local::Failed(reason) => reports.push(PodReport {
                    key: key.clone(),
                    phase: PodPhase::Failed,
                    reason: Some(reason.clone()),
                    load: None,
                }),
            }
        }
        Heartbeat {
            pods: reports,
            logs: logs.into_values().collect(),
            held: self
                .ingress
                .held()
                .into_iter()
                .map(|d| HeldRequests {
                    namespace: d.app.namespace().to_string(),
                    app: d.app.name().to_string(),
                    requests: d.held,
                })
                .collect(),
        }
    }
}
