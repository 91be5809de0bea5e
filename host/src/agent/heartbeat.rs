//! Heartbeats: every interval, and right after each change, the phase and load of every
//! pod and the requests the activator holds. (Guest output stays on this host's disk:
//! `crate::logs`.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use dabba_spec::api::{Heartbeat, HeldRequests, PodReport};
use dabba_spec::resources::PodPhase;

use super::{Agent, Local};

impl Agent {
    pub(super) async fn heartbeat_loop(self: &Arc<Self>) {
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
            if let Err(why) = self.ingress.control_plane().check() {
                self.fence(&why);
            }
            tokio::select! {
                () = tokio::time::sleep(self.opts.heartbeat) => {}
                () = self.report_now.notified() => {}
            }
        }
    }

    /// Stops every attempt running here: cut off from the controllers' majority for
    /// longer than its patience, this host may soon be judged lost and its attempts
    /// given to another host, and an attempt must not run in two places. The timing
    /// argument is in spec/cron.md. Each is reported cut short once the controllers
    /// answer again (if they have not given it up by then).
    fn fence(self: &Arc<Self>, why: &str) {
        let why = format!("cut off from the controllers: {why}");
        for attempt in self.stop_attempts(|_| false, &why) {
            let (agent, why) = (self.clone(), why.clone());
            tokio::spawn(async move { agent.cut_short(attempt, why).await });
        }
    }

    /// The phase and load of every pod, and the held requests.
    fn heartbeat(&self) -> Heartbeat {
        let interval = {
            let mut last = self.last_report.lock().expect("report lock");
            let now = Instant::now();
            now - std::mem::replace(&mut *last, now)
        };
        let pods = self.pods.lock().expect("pods lock");
        let mut reports = Vec::with_capacity(pods.len());
        for (key, t) in pods.iter() {
            match &t.state {
                Local::Running(p) => {
                    reports.push(PodReport {
                        key: key.clone(),
                        phase: PodPhase::Running,
                        reason: None,
                        load: p.function.load().take(interval),
                    });
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
