//! Activations: the activator holds requests for an app with no running pod; this asks
//! the leader to scale the app from zero (in-process under `dabba up`, else over the
//! API) and, when the leader places the first pod here, starts it at once instead of
//! waiting for the next assignments.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dabba_spec::api::ActivateRequest;
use tokio::sync::mpsc;

use super::Agent;
use crate::ingress::Demand;

impl Agent {
    /// Asks the leader to scale each app the activator holds requests for, and starts
    /// the first pod at once when the leader places it here.
    pub(super) async fn activation_loop(
        self: Arc<Self>,
        mut demands: mpsc::UnboundedReceiver<Demand>,
    ) {
        let api = Arc::new(
            self.api
                .with_bounds(Duration::from_secs(2), Duration::from_secs(5)),
        );
        while let Some(d) = demands.recv().await {
            let agent = self.clone();
            let api = api.clone();
            tokio::spawn(async move {
                let asked = Instant::now();
                let req = ActivateRequest {
                    host: agent.name().to_string(),
                    held: d.held,
                };
                let local = match &agent.opts.local_leader {
                    Some(leader) => leader.activate(&d.app, &req).await,
                    None => None,
                };
                let answer = match local {
                    Some(answer) => answer,
                    None => api.activate(&d.app, &req).await.map_err(Into::into),
                };
                match answer {
                    Ok(answer) => {
                        let answered = asked.elapsed();
                        if let Some(a) = answer.assignment {
                            agent.install(&a, answer.version).await;
                        }
                        tracing::debug!(
                            app = %d.app,
                            answered_us = answered.as_micros() as u64,
                            started_us = asked.elapsed().as_micros() as u64,
                            "activated"
                        );
                    }
                    Err(e) => {
                        // The held requests still count in the next heartbeat, so the
                        // autoscaler scales the app from zero anyway.
                        tracing::warn!(app = %d.app, error = %e, "activation failed");
                    }
                }
            });
        }
    }
}
