//! Whether a spec is acceptable, decided in one place for every way it arrives: the
//! manifest parser (which adds the file, line and column), the API (422 `invalid`) and
//! the state machine (a command that would store an invalid spec is rejected, whoever
//! proposed it).

use crate::WorkloadKind;
use crate::resources::{AppSpec, Route, valid_name};

/// The most replicas one app may ask for.
pub const MAX_REPLICAS: u32 = 1000;

/// A field that is not as it must be: which one, named as a manifest names it
/// (`app.route`, `limits.memory`, `scale.max`), and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Invalid {
        Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Why `prefix` cannot be a route's path prefix, if it cannot.
pub fn check_route_prefix(prefix: &str) -> Result<(), String> {
    if !prefix.starts_with('/') || prefix.contains(['?', '#', ' ']) {
        return Err(format!(
            "`{prefix}` is not a path prefix: it must start with '/' and contain no '?', '#' or spaces"
        ));
    }
    if prefix == RESERVED_PREFIX || prefix.starts_with(&format!("{RESERVED_PREFIX}/")) {
        return Err(format!(
            "`{prefix}` is under {RESERVED_PREFIX}, which every ingress keeps for itself (its health check)"
        ));
    }
    Ok(())
}

/// The path prefix every ingress answers itself (`/.dabba/health`).
pub const RESERVED_PREFIX: &str = "/.dabba";

/// Why `host` cannot be a route's host name, if it cannot.
pub fn check_route_host(host: &str) -> Result<(), String> {
    if host.is_empty() || host.contains(['/', ':', ' ']) {
        return Err(format!("`{host}` is not a host name"));
    }
    Ok(())
}

/// The message for a name that is not a DNS label.
pub fn name_message(what: &str, name: &str) -> String {
    format!(
        "`{name}` is not a valid {what}: use 1-63 lower-case letters, digits and '-', starting with a letter"
    )
}

impl Route {
    pub fn validate(&self) -> Result<(), Invalid> {
        check_route_prefix(&self.prefix).map_err(|m| Invalid::new("app.route", m))?;
        if let Some(h) = &self.host {
            check_route_host(h).map_err(|m| Invalid::new("app.host", m))?;
        }
        Ok(())
    }
}

impl AppSpec {
    /// Checks everything about an app that can be checked without the cluster (a route
    /// conflict or a missing component is the state machine's to find).
    pub fn validate(&self) -> Result<(), Invalid> {
        if !valid_name(&self.name) {
            return Err(Invalid::new("app.name", name_message("name", &self.name)));
        }
        if !valid_name(&self.namespace) {
            return Err(Invalid::new(
                "app.namespace",
                name_message("namespace", &self.namespace),
            ));
        }
        self.route.validate()?;
        if let Some(limit) = &self.rate_limit {
            limit.validate()?;
        }
        if self.replicas > MAX_REPLICAS {
            return Err(Invalid::new(
                "app.replicas",
                format!(
                    "{} is more than the maximum of {MAX_REPLICAS}",
                    self.replicas
                ),
            ));
        }
        if let Err(e) = self.limits.resolve(WorkloadKind::Http) {
            let key = match &e {
                crate::LimitError::Zero { field } => field,
                crate::LimitError::MemoryTooLarge { .. } => "memory",
            };
            return Err(Invalid::new(format!("limits.{key}"), e.to_string()));
        }
        crate::secret::check_listing(
            "secrets",
            &self.capabilities.secrets,
            &self.capabilities.config,
        )?;
        for k in self.capabilities.env.keys() {
            if k.is_empty() || k.contains('=') {
                return Err(Invalid::new(
                    format!("env.{k}"),
                    format!("`{k}` is not an environment variable name"),
                ));
            }
        }
        if let Some(scale) = &self.scale
            && let Err(e) = scale.validate()
        {
            return Err(Invalid::new(format!("scale.{}", e.field), e.message));
        }
        for b in &self.capabilities.key_value_buckets {
            if !valid_name(b) {
                return Err(Invalid::new(
                    "capabilities.key_value_buckets",
                    format!("`{b}` is not a valid bucket name"),
                ));
            }
        }
        if let Some(r) = &self.regions {
            r.validate()?;
        }
        self.validate_rollout()
    }

    /// Checks that every analysis template the rollout names is the app's own
    /// (`[[analysis]]`) or one that `shared` knows (applied on its own to the app's
    /// namespace). Only the cluster knows the latter, so the controller checks this.
    pub fn check_templates(&self, shared: impl Fn(&str) -> bool) -> Result<(), Invalid> {
        let Some(rollout) = &self.rollout else {
            return Ok(());
        };
        for (field, a) in rollout.analysis_refs() {
            if let Some(missing) = a
                .templates
                .iter()
                .find(|t| !self.analysis.iter().any(|own| own.name == **t) && !shared(t))
            {
                return Err(Invalid::new(
                    format!("{field}.templates"),
                    format!(
                        "no analysis template named `{missing}` in the manifest ([[analysis]]) or applied to namespace {}",
                        self.namespace
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The rollout and its analysis templates (whether the templates it names exist is
    /// [`AppSpec::check_templates`]).
    fn validate_rollout(&self) -> Result<(), Invalid> {
        let mut names = std::collections::BTreeSet::new();
        for (i, t) in self.analysis.iter().enumerate() {
            t.validate(&format!("analysis[{i}]"))?;
            if !names.insert(t.name.as_str()) {
                return Err(Invalid::new(
                    format!("analysis[{i}].name"),
                    format!("a second analysis template named `{}`", t.name),
                ));
            }
        }
        let Some(rollout) = &self.rollout else {
            return Ok(());
        };
        rollout.validate()?;
        if let Some(p) = &rollout.preview_route
            && p.trim_end_matches('/') == self.route.prefix.trim_end_matches('/')
        {
            return Err(Invalid::new(
                "rollout.preview_route",
                "the preview needs a route of its own, not the app's",
            ));
        }
        if rollout.preview_replicas.is_some_and(|n| n > MAX_REPLICAS) {
            return Err(Invalid::new(
                "rollout.preview_replicas",
                format!("at most {MAX_REPLICAS}"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Digest;

    fn spec() -> AppSpec {
        crate::Manifest::parse(
            "t.toml",
            "[app]\nname = \"pay\"\ncomponent = \"p.wasm\"\nroute = \"/pay\"\n",
        )
        .unwrap()
        .to_spec(Digest::of(b""))
    }

    #[test]
    fn a_good_spec_passes_and_each_bad_field_is_named() {
        assert_eq!(spec().validate(), Ok(()));
        let field = |f: &dyn Fn(&mut AppSpec)| {
            let mut s = spec();
            f(&mut s);
            s.validate().unwrap_err().field
        };
        assert_eq!(field(&|s| s.name = "Pay".into()), "app.name");
        assert_eq!(field(&|s| s.namespace = String::new()), "app.namespace");
        // What the API once let through: the manifest's rule holds everywhere.
        for bad in ["pay", "/pay?x", "/pay#x", "/a b"] {
            assert_eq!(
                field(&|s| s.route.prefix = bad.into()),
                "app.route",
                "{bad}"
            );
        }
        assert_eq!(field(&|s| s.route.host = Some("a:80".into())), "app.host");
        assert_eq!(field(&|s| s.replicas = MAX_REPLICAS + 1), "app.replicas");
        assert_eq!(
            field(&|s| s.limits.memory = Some(crate::ByteSize::bytes(0))),
            "limits.memory"
        );
        assert_eq!(
            field(&|s| {
                s.capabilities.env.insert("A=B".into(), "x".into());
            }),
            "env.A=B"
        );
        assert_eq!(
            field(&|s| s.scale = Some(crate::scale::Scale {
                max: 0,
                ..Default::default()
            })),
            "scale.max"
        );
        assert_eq!(
            field(&|s| s.capabilities.key_value_buckets = vec!["Bad".into()]),
            "capabilities.key_value_buckets"
        );
    }
}
