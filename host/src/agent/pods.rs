//! The pods of this host: starting an assigned pod (its component fetched by digest
//! from memory, the local cache or a controller, and verified), tracking it, and
//! publishing the routing table of the pods that run.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use dabba_spec::api::Assignment;
use dabba_spec::resources::ResourceKey;
use dabba_spec::{Digest, WorkloadKind};

use super::{Agent, Local, StartError, Tracked};
use crate::app::AppConfig;
use crate::component::ComponentBytes;
use crate::ingress::{LocalPod, RoutingTable};

impl Agent {
    /// Starts an assigned pod, tracks it (unless it already is) and publishes the
    /// routing table with it.
    ///
    /// The pod enters the table under the same lock that makes it Running for the
    /// heartbeat: once the controllers hear it runs, other hosts route requests here,
    /// and it must already take them. (Published only after every pod of an assignment
    /// batch started, a pod that ran seconds before the slowest compile was listed
    /// elsewhere while this host answered that it ran nothing.)
    pub(super) async fn install(&self, a: &Assignment, version: u64) {
        let state = match self.start(a).await {
            Ok(pod) => {
                self.pod_starts.with_label_values(&["ok"]).inc();
                pod.function.log().event(format!(
                    "started: revision {}, component {}",
                    a.pod.revision,
                    a.spec.component.short()
                ));
                Local::Running(Arc::new(pod))
            }
            Err(e) => {
                self.pod_starts.with_label_values(&["failed"]).inc();
                tracing::warn!(pod = %a.pod.key(), reason = %e, "pod failed to start");
                self.pod_log(&a.pod.app_key(), &a.pod.key())
                    .event(format!("failed to start: {e}"));
                Local::Failed(e.to_string())
            }
        };
        let mut pods = self.pods.lock().expect("pods lock");
        let secrets = super::secrets_of(a);
        match pods.get(&a.pod.key()) {
            Some(t) if t.secrets == secrets => {}
            earlier => {
                if let Some(Local::Running(p)) = earlier.map(|t| &t.state) {
                    p.function
                        .log()
                        .event("replaced: its secrets changed (the new values serve from now)");
                }
                pods.insert(
                    a.pod.key(),
                    Tracked {
                        app: a.pod.app_key(),
                        state,
                        assigned_at: version,
                        secrets,
                    },
                );
            }
        }
        self.publish_from(&pods);
    }

    /// Swaps in a routing table of the last routes and the pods running here.
    pub(super) fn publish(&self) {
        let pods = self.pods.lock().expect("pods lock");
        self.publish_from(&pods);
    }

    /// [`Agent::publish`] with the pods already locked (the table is swapped in before
    /// the lock is released, so a heartbeat never reports a pod the table lacks).
    fn publish_from(&self, pods: &HashMap<ResourceKey, Tracked>) {
        let local: Vec<(ResourceKey, Arc<LocalPod>)> = {
            let (mut running, mut failed) = (0, 0);
            let list = pods
                .values()
                .filter_map(|t| match &t.state {
                    Local::Running(p) => {
                        running += 1;
                        Some((t.app.clone(), p.clone()))
                    }
                    Local::Failed(_) => {
                        failed += 1;
                        None
                    }
                })
                .collect();
            self.pod_gauge.with_label_values(&["running"]).set(running);
            self.pod_gauge.with_label_values(&["failed"]).set(failed);
            list
        };
        let routes = self.routes.lock().expect("routes lock").clone();
        let (host_regions, states) = self.regions.lock().expect("regions lock").clone();
        self.ingress
            .replace_table(RoutingTable::new(routes, local).with_regions(
                &self.opts.info.region,
                host_regions,
                states,
            ));
        self.report_now.notify_one();
    }

    /// Fetches an assignment's component and loads it as a pod.
    async fn start(&self, a: &Assignment) -> Result<LocalPod, StartError> {
        if let Some(why) = &a.unrevealed {
            return Err(StartError::Secrets(why.clone()));
        }
        let digest = a.spec.component;
        let bytes = self
            .component(&digest, &self.peers_running(&a.spec.key()))
            .await?;
        let limits = a.spec.limits.resolve(WorkloadKind::Http)?;
        let config = AppConfig {
            name: a.spec.key().to_string(),
            scope: a.spec.namespace.clone(),
            revision: Some(a.pod.revision),
            limits,
            capabilities: a.spec.capabilities.clone(),
            secrets: a.secrets.clone(),
            kv: self.kv.clone(),
            log: Some(self.pod_log(&a.pod.app_key(), &a.pod.key())),
        };
        let runtime = self.runtime.clone();
        let function = if runtime.is_linked(&digest, &config.limits, WorkloadKind::Http) {
            // Linked before: microseconds, so no hop to the blocking pool.
            runtime.load_http(config, &bytes)
        } else {
            // Compiling can take a while: keep it off the threads that answer requests.
            tokio::task::spawn_blocking(move || runtime.load_http(config, &bytes))
                .await
                .map_err(|e| StartError::Panicked(e.to_string()))?
        }?;
        Ok(LocalPod {
            key: a.pod.key(),
            revision: a.pod.revision,
            function,
        })
    }

    /// The other hosts that run pods of `app` (so have its component cached, unless
    /// a new revision brings a new one), those of this host's region first.
    fn peers_running(&self, app: &ResourceKey) -> Vec<String> {
        let own = self.opts.info.address.trim_end_matches('/');
        let routes = self.routes.lock().expect("routes lock");
        let regions = self.regions.lock().expect("regions lock");
        let mut peers: Vec<String> = routes
            .iter()
            .filter(|r| r.key() == *app)
            .flat_map(|r| r.endpoints.iter())
            .filter(|e| e.trim_end_matches('/') != own)
            .cloned()
            .collect();
        peers.sort();
        peers.dedup();
        peers.sort_by_key(|p| regions.0.get(p) != Some(&self.opts.info.region));
        peers
    }

    /// A component by digest: from memory, from the local cache, or fetched — from one
    /// of `peers` that has it, else from the controllers — and verified before it is
    /// cached.
    pub(super) async fn component(
        &self,
        digest: &Digest,
        peers: &[String],
    ) -> Result<Arc<ComponentBytes>, StartError> {
        if let Some(c) = self.components.lock().expect("components lock").get(digest) {
            return Ok(c.clone());
        }
        let bytes = self.component_bytes(digest, peers).await?;
        let c = Arc::new(ComponentBytes::verified(
            bytes.to_vec(),
            *digest,
            format!("component {}", digest.short()),
        ));
        self.components
            .lock()
            .expect("components lock")
            .insert(*digest, c.clone());
        Ok(c)
    }

    async fn component_bytes(
        &self,
        digest: &Digest,
        peers: &[String],
    ) -> Result<Bytes, StartError> {
        let path = self
            .opts
            .data_dir
            .join("components")
            .join(format!("{}.wasm", digest.hex()));
        if let Ok(bytes) = tokio::fs::read(&path).await
            && Digest::of(&bytes) == *digest
        {
            self.fetches.with_label_values(&["cache"]).inc();
            return Ok(Bytes::from(bytes));
        }
        // An interrupted download (a lost connection, a restart) resumes from here.
        let partial = path.with_extension("partial");
        let (bytes, from_peer) = self
            .api
            .download_blob_via_peers(peers, &self.opts.reads.key(), digest, &partial)
            .await
            .map_err(|source| StartError::Fetch {
                digest: digest.short(),
                source,
            })?;
        self.fetches
            .with_label_values(&[if from_peer { "peer" } else { "controller" }])
            .inc();
        let tmp = path.with_extension("tmp");
        if let Err(e) = tokio::fs::write(&tmp, &bytes).await {
            tracing::warn!(error = %e, "cannot cache component");
        } else if let Err(e) = tokio::fs::rename(&tmp, &path).await {
            tracing::warn!(error = %e, "cannot cache component");
        }
        Ok(bytes)
    }
}
