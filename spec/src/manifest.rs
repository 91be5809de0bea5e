//! App manifests: the TOML an operator writes and `dabba apply -f` sends.
//!
//! ```toml
//! [app]
//! name = "payment"
//! namespace = "default"          # optional
//! component = "payment.wasm"     # relative to this file
//! route = "/payments"            # path prefix served by this app
//! host = "pay.example.com"       # optional host name
//! replicas = 2                   # optional, default 1
//!
//! [limits]                       # optional; see spec/limits.md
//! memory = "64Mi"
//! timeout = "5s"
//!
//! [env]                          # optional
//! MODE = "live"
//!
//! [config]                       # optional, served by wasi:config
//! mdr_rules = '[{"up_to": null, "bps": 110}]'
//!
//! [secrets]                      # optional: config keys from the namespace's secrets
//! gateway_key = "payment-keys/gateway"   # see crate::secret
//!
//! [capabilities]                 # optional
//! allowed_outbound_hosts = ["https://api.example.com"]
//! key_value_buckets = ["default"]
//!
//! [placement]                    # optional
//! node_selector = { disk = "ssd" }
//! regions = ["mumbai", "singapore"]   # see crate::regions, spec/regions.md
//!
//! [scale]                        # optional: autoscaling, see crate::scale
//! min = 0
//! max = 20
//! target_concurrency = 10
//!
//! [rate_limit]                   # optional: see crate::ratelimit
//! requests_per_second = 200
//! ```
//!
//! Parsing does no I/O: the caller reads the file, and resolves `component` (reading the
//! bytes and hashing them) at its edge. Every error names the file, the line and the
//! field, and says what was expected.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::analysis::AnalysisTemplate;
use crate::locate::locate_field;
use crate::regions::RegionPlacement;
use crate::resources::{AppSpec, Route};
use crate::rollout::Rollout;
use crate::scale::Scale;
use crate::validate::Invalid;
use crate::{Capabilities, Digest, LimitOverrides, OutboundRule};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub app: AppSection,
    #[serde(default)]
    pub limits: LimitOverrides,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Config keys served from secrets (`crate::secret`).
    #[serde(default)]
    pub secrets: BTreeMap<String, crate::secret::SecretRef>,
    #[serde(default)]
    pub capabilities: CapabilitySection,
    #[serde(default)]
    pub placement: Placement,
    /// Autoscaling; see `crate::scale`.
    #[serde(default)]
    pub scale: Option<Scale>,
    /// How a new revision takes over; see `crate::rollout`.
    #[serde(default)]
    pub rollout: Option<Rollout>,
    /// Analysis templates for the rollout; see `crate::analysis`.
    #[serde(default)]
    pub analysis: Vec<AnalysisTemplate>,
    /// Requests a second let through; see `crate::ratelimit`.
    #[serde(default)]
    pub rate_limit: Option<crate::ratelimit::RateLimit>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSection {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Path of the component, relative to the manifest.
    pub component: String,
    pub route: String,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default = "one")]
    pub replicas: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilitySection {
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<OutboundRule>,
    #[serde(default)]
    pub key_value_buckets: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// The regions and their failover (`crate::regions`), when `regions` is given.
    #[serde(flatten)]
    pub regions: Option<RegionPlacement>,
}

fn default_namespace() -> String {
    "default".into()
}

fn one() -> u32 {
    1
}

/// What was wrong with a manifest, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    pub file: String,
    /// 1-based; 0 when the position is unknown.
    pub line: usize,
    pub column: usize,
    /// The field, as a dotted path (`limits.memory`), when known.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if let Some(field) = &self.field {
            write!(f, ": `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ManifestError {}

impl Manifest {
    /// Parses and validates a manifest. `file` is used only in errors.
    pub fn parse(file: &str, text: &str) -> Result<Manifest, ManifestError> {
        let manifest: Manifest = from_toml(file, text)?;
        manifest.validate(file, text)?;
        Ok(manifest)
    }

    fn validate(&self, file: &str, text: &str) -> Result<(), ManifestError> {
        if self.app.component.trim().is_empty() {
            return Err(located(
                file,
                text,
                Invalid::new(
                    "app.component",
                    "must name a .wasm file, relative to this manifest",
                ),
            ));
        }
        // Everything else is the spec's own rule (the API and the state machine check
        // the same); the component is not known yet, and not looked at.
        let spec = self.as_written(Digest::from_bytes([0; 32]));
        spec.validate().map_err(|e| located(file, text, e))
    }

    /// The spec to apply, with the component resolved to `component`; an autoscaled
    /// app starts from its replica count within `[min, max]`.
    pub fn to_spec(&self, component: Digest) -> AppSpec {
        let mut spec = self.as_written(component);
        if let Some(scale) = &self.scale {
            spec.replicas = scale.clamp(spec.replicas);
        }
        spec
    }

    /// The spec exactly as the manifest writes it.
    fn as_written(&self, component: Digest) -> AppSpec {
        AppSpec {
            name: self.app.name.clone(),
            namespace: self.app.namespace.clone(),
            component,
            route: Route {
                prefix: self.app.route.clone(),
                host: self.app.host.clone(),
            },
            replicas: self.app.replicas,
            limits: self.limits.clone(),
            capabilities: Capabilities {
                env: self.env.clone(),
                config: self.config.clone(),
                secrets: self.secrets.clone(),
                allowed_outbound_hosts: self.capabilities.allowed_outbound_hosts.clone(),
                key_value_buckets: self.capabilities.key_value_buckets.clone(),
            },
            node_selector: self.placement.node_selector.clone(),
            scale: self.scale.clone(),
            rollout: self.rollout.clone(),
            analysis: self.analysis.clone(),
            regions: self.placement.regions.clone(),
            rate_limit: self.rate_limit.clone(),
        }
    }
}

/// `e` (a field's dotted path and what is wrong with it) at its place in `text`.
pub(crate) fn located(file: &str, text: &str, e: Invalid) -> ManifestError {
    let (line, column) = locate_field(text, &e.field);
    ManifestError {
        file: file.to_string(),
        line,
        column,
        field: Some(e.field),
        message: e.message,
    }
}

/// A TOML document as `T`; an error names the file, line and field.
pub(crate) fn from_toml<T: serde::de::DeserializeOwned>(
    file: &str,
    text: &str,
) -> Result<T, ManifestError> {
    let de = toml::Deserializer::parse(text).map_err(|e| toml_error(file, text, &e, None))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field = (path != "." && !path.is_empty()).then_some(path);
        toml_error(file, text, e.inner(), field)
    })
}

pub(crate) fn toml_error(
    file: &str,
    text: &str,
    e: &toml::de::Error,
    field: Option<String>,
) -> ManifestError {
    let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
    ManifestError {
        file: file.to_string(),
        line,
        column,
        field,
        message: e.message().trim().to_string(),
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[app]
name = "payment"
component = "payment.wasm"
route = "/payments"
replicas = 2

[limits]
memory = "64Mi"
timeout = "5s"

[env]
MODE = "live"

[config]
bucket = "default"

[capabilities]
allowed_outbound_hosts = ["https://api.example.com"]
key_value_buckets = ["default"]

[placement]
node_selector = { region = "ap-south-1" }
"#;

    fn fails(text: &str) -> ManifestError {
        Manifest::parse("app.toml", text).unwrap_err()
    }

    #[test]
    fn a_full_manifest_becomes_a_spec() {
        let m = Manifest::parse("app.toml", GOOD).unwrap();
        assert_eq!(m.app.namespace, "default");
        let spec = m.to_spec(Digest::from_bytes([1; 32]));
        assert_eq!(spec.replicas, 2);
        assert_eq!(spec.route.prefix, "/payments");
        assert_eq!(spec.limits.memory, Some(crate::ByteSize::mib(64)));
        assert_eq!(spec.capabilities.env["MODE"], "live");
        assert_eq!(spec.node_selector["region"], "ap-south-1");
        assert!(
            spec.capabilities
                .allows_outbound("https", "api.example.com", 443)
        );
    }

    #[test]
    fn bad_toml_names_the_line() {
        let e = fails("[app]\nname = \"x\nroute = 1\n");
        assert_eq!(e.line, 2, "{e}");
        assert!(e.to_string().starts_with("app.toml:2:"), "{e}");
    }

    #[test]
    fn an_unknown_field_names_the_field_and_the_line() {
        let text = GOOD.replace("memory = \"64Mi\"", "memroy = \"64Mi\"");
        let e = fails(&text);
        assert_eq!(e.line, 9, "{e}");
        assert!(e.message.contains("memroy"), "{e}");
        assert!(e.message.contains("memory"), "lists what is expected: {e}");
    }

    #[test]
    fn a_bad_size_names_the_field() {
        let text = GOOD.replace("\"64Mi\"", "\"64MB\"");
        let e = fails(&text);
        assert_eq!(e.field.as_deref(), Some("limits.memory"), "{e}");
        assert_eq!(e.line, 9);
        assert!(e.message.contains("unknown unit `MB`"), "{e}");
    }

    #[test]
    fn semantic_errors_point_at_their_key() {
        let cases = [
            (
                GOOD.replace("name = \"payment\"", "name = \"Payment\""),
                "app.name",
                3,
            ),
            (
                GOOD.replace("route = \"/payments\"", "route = \"payments\""),
                "app.route",
                5,
            ),
            (
                GOOD.replace("replicas = 2", "replicas = 5000"),
                "app.replicas",
                6,
            ),
            (
                GOOD.replace("timeout = \"5s\"", "timeout = \"0s\""),
                "limits.timeout",
                10,
            ),
        ];
        for (text, field, line) in cases {
            let e = fails(&text);
            assert_eq!(e.field.as_deref(), Some(field), "{e}");
            assert_eq!(e.line, line, "{e}");
        }
    }

    #[test]
    fn secrets_are_listed_by_reference_and_errors_name_their_line() {
        let text = format!("{GOOD}\n[secrets]\ngateway_key = \"payment-keys/gateway\"\n");
        let m = Manifest::parse("app.toml", &text).unwrap();
        let spec = m.to_spec(Digest::from_bytes([1; 32]));
        let r = &spec.capabilities.secrets["gateway_key"];
        assert_eq!(
            (r.secret.as_str(), r.key.as_str()),
            ("payment-keys", "gateway")
        );
        // No key named.
        let e = fails(&text.replace("payment-keys/gateway", "payment-keys"));
        assert_eq!(e.field.as_deref(), Some("secrets.gateway_key"), "{e}");
        assert_eq!(e.line, 26, "{e}");
        assert!(e.message.contains("secret/key"), "{e}");
        // The same config key from [config] and [secrets].
        let e = fails(&text.replace("gateway_key =", "bucket ="));
        assert_eq!(e.field.as_deref(), Some("secrets.bucket"), "{e}");
        assert_eq!(e.line, 26, "{e}");
    }

    #[test]
    fn missing_required_fields_are_named() {
        let e = fails("[app]\nname = \"x\"\nroute = \"/\"\n");
        assert!(e.message.contains("component"), "{e}");
        let e = fails("[limits]\nmemory = \"1Mi\"\n");
        assert!(e.message.contains("app"), "{e}");
    }

    #[test]
    fn a_scale_section_bounds_the_replicas_and_errors_name_their_line() {
        let text = format!("{GOOD}\n[scale]\nmin = 0\nmax = 1\ntarget_concurrency = 5\n");
        let spec = Manifest::parse("app.toml", &text)
            .unwrap()
            .to_spec(Digest::from_bytes([1; 32]));
        assert_eq!(spec.replicas, 1, "replicas = 2 clamped to max = 1");
        assert_eq!(spec.scale.unwrap().target_concurrency, Some(5));

        let text = format!("{GOOD}\n[scale]\nmin = 3\nmax = 2\n");
        let e = fails(&text);
        assert_eq!(e.field.as_deref(), Some("scale.min"), "{e}");
        assert_eq!(e.line, 26, "{e}");
        let text = format!(
            "{GOOD}\n[scale]\n[scale.behavior.down]\npolicies = [{{ type = \"Pods\", value = 0, period = \"1m\" }}]\n"
        );
        let e = fails(&text);
        assert_eq!(
            e.field.as_deref(),
            Some("scale.behavior.down.policies"),
            "{e}"
        );
        assert_eq!(e.line, 27, "{e}");
        let e = fails(&format!("{GOOD}\n[scale]\ntarget = 5\n"));
        assert!(e.message.contains("target_concurrency"), "{e}");
    }

    #[test]
    fn bad_outbound_rules_are_explained() {
        let text = GOOD.replace("https://api.example.com", "api.example.com");
        let e = fails(&text);
        assert!(e.message.contains("https://api.example.com"), "{e}");
        assert!(
            e.field
                .as_deref()
                .unwrap_or("")
                .starts_with("capabilities.allowed_outbound_hosts"),
            "{e}"
        );
    }
}
