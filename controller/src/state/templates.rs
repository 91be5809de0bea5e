//! Analysis templates applied on their own to a namespace (`dabba apply` of a manifest
//! of `[[analysis]]` tables), which any app's rollout there may name; and how a
//! rollout finds a template: the app's own first, then its namespace's.

use dabba_spec::analysis::{AnalysisTemplate, MetricSpec};
use dabba_spec::resources::{Millis, ResourceKey};

use super::{State, rejected};
use crate::command::{Rejection, Reply};

impl State {
    /// The analysis template `name` as `app`'s rollout sees it.
    pub fn analysis_template(&self, app: &ResourceKey, name: &str) -> Option<&AnalysisTemplate> {
        self.apps
            .get(app)
            .and_then(|a| a.spec.analysis.iter().find(|t| t.name == name))
            .or_else(|| {
                self.analysis_templates
                    .get(&ResourceKey::new(app.namespace(), name))
            })
    }

    /// Metric `metric` of template `template` as `app`'s rollout sees it.
    pub fn metric_spec(
        &self,
        app: &ResourceKey,
        template: &str,
        metric: &str,
    ) -> Option<&MetricSpec> {
        self.analysis_template(app, template)?
            .metrics
            .iter()
            .find(|m| m.name == metric)
    }

    pub(super) fn apply_analysis_template(
        &mut self,
        namespace: &str,
        template: &AnalysisTemplate,
        at: Millis,
    ) -> Reply {
        if let Err(e) = template.validate("analysis") {
            return rejected(Rejection::Invalid, e.to_string());
        }
        let key = ResourceKey::new(namespace, &template.name);
        let new = !self.analysis_templates.contains_key(&key);
        self.analysis_templates
            .insert(key.clone(), template.clone());
        self.event(
            at,
            format!("analysistemplate/{key}"),
            if new { "Created" } else { "Changed" },
            format!("{} metric(s)", template.metrics.len()),
        );
        self.version += 1;
        Reply::Ok
    }

    pub(super) fn delete_analysis_template(
        &mut self,
        namespace: &str,
        name: &str,
        at: Millis,
    ) -> Reply {
        let key = ResourceKey::new(namespace, name);
        let users: Vec<String> = self
            .apps
            .iter()
            .filter(|(k, a)| {
                k.namespace() == namespace
                    && !a.spec.analysis.iter().any(|t| t.name == name)
                    && a.spec.rollout.as_ref().is_some_and(|r| {
                        r.analysis_refs()
                            .iter()
                            .any(|(_, a)| a.templates.iter().any(|t| t == name))
                    })
            })
            .map(|(k, _)| k.to_string())
            .collect();
        if !users.is_empty() {
            return rejected(
                Rejection::Invalid,
                format!(
                    "analysis template {key} is named by the rollout of {}: change those first",
                    users.join(", ")
                ),
            );
        }
        if self.analysis_templates.remove(&key).is_none() {
            return rejected(Rejection::NotFound, format!("no analysis template {key}"));
        }
        self.event(at, format!("analysistemplate/{key}"), "Deleted", "deleted");
        self.version += 1;
        Reply::Ok
    }
}
