//! Role-based access control in the Kubernetes mould: a **role** is a list of rules
//! (resources × verbs), for one namespace or the whole cluster; a **role binding**
//! gives a role to tokens (by id), in one namespace or (without one) everywhere.
//!
//! The three roles a token can be created with — `viewer`, `deployer`, `admin` — are
//! built in ([`builtin`]); a token created with a role of the cluster's own
//! (`dabba token create --role ROLE`) holds nothing by itself, only what its bindings
//! give. Every API request is named by a resource and a verb ([`attributes`]) from its
//! route, so a rule covers the endpoints of what it names and nothing else.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::resources::valid_name;
use crate::validate::Invalid;

/// What can be done to a resource.
pub const VERBS: [&str; 10] = [
    "get", "list", "watch", "create", "update", "delete", "scale", "rollout", "logs", "exec-job",
];

/// What can be named in a rule. Namespaced: apps (their revisions, pods, rollouts and
/// logs go with them by name), cron jobs, jobs (runs), secrets, analysis templates.
/// Cluster-wide: the rest.
pub const RESOURCES: [&str; 17] = [
    "apps",
    "revisions",
    "pods",
    "rollouts",
    "cronjobs",
    "jobs",
    "secrets",
    "analysistemplates",
    "namespaces",
    "components",
    "hosts",
    "regions",
    "cluster",
    "tokens",
    "roles",
    "rolebindings",
    "audit",
];

/// One rule: these verbs on these resources (`*`: all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
}

impl PolicyRule {
    fn new(resources: &[&str], verbs: &[&str]) -> PolicyRule {
        PolicyRule {
            resources: resources.iter().map(|s| s.to_string()).collect(),
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
        }
    }

    pub fn covers(&self, resource: &str, verb: &str) -> bool {
        let any = |list: &[String], x: &str| list.iter().any(|l| l == "*" || l == x);
        any(&self.resources, resource) && any(&self.verbs, verb)
    }
}

/// A role of the cluster's own: in `namespace`, or (`None`) cluster-wide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub rules: Vec<PolicyRule>,
}

/// Gives `role` to tokens (by id: the first 16 hex digits of the secret's SHA-256, as
/// `dabba token list` shows them) in `namespace`, or (`None`) everywhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleBinding {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub role: String,
    pub tokens: Vec<String>,
}

/// The rules of a built-in role.
pub fn builtin(name: &str) -> Option<Vec<PolicyRule>> {
    const NAMESPACED: [&str; 8] = [
        "apps",
        "revisions",
        "pods",
        "rollouts",
        "cronjobs",
        "jobs",
        "secrets",
        "analysistemplates",
    ];
    const READ: [&str; 4] = ["get", "list", "watch", "logs"];
    let views = || {
        vec![
            PolicyRule::new(&NAMESPACED, &READ),
            PolicyRule::new(&["namespaces", "hosts", "regions", "cluster"], &READ),
        ]
    };
    match name {
        "viewer" => Some(views()),
        "deployer" => {
            let mut rules = views();
            rules.push(PolicyRule::new(
                &NAMESPACED,
                &["create", "update", "delete", "scale", "rollout", "exec-job"],
            ));
            rules.push(PolicyRule::new(&["components"], &["get", "create"]));
            Some(rules)
        }
        "admin" => Some(vec![PolicyRule::new(&["*"], &["*"])]),
        _ => None,
    }
}

/// The built-in roles' names.
pub const BUILTIN: [&str; 3] = ["viewer", "deployer", "admin"];

fn check_rules(rules: &[PolicyRule]) -> Result<(), Invalid> {
    if rules.is_empty() {
        return Err(Invalid::new("rules", "a role needs at least one rule"));
    }
    for (i, r) in rules.iter().enumerate() {
        if r.resources.is_empty() || r.verbs.is_empty() {
            return Err(Invalid::new(
                format!("rules[{i}]"),
                "a rule names at least one resource and one verb",
            ));
        }
        if let Some(bad) = r
            .resources
            .iter()
            .find(|x| *x != "*" && !RESOURCES.contains(&x.as_str()))
        {
            return Err(Invalid::new(
                format!("rules[{i}].resources"),
                format!("no resource `{bad}`: one of {}, or *", RESOURCES.join(", ")),
            ));
        }
        if let Some(bad) = r
            .verbs
            .iter()
            .find(|x| *x != "*" && !VERBS.contains(&x.as_str()))
        {
            return Err(Invalid::new(
                format!("rules[{i}].verbs"),
                format!("no verb `{bad}`: one of {}, or *", VERBS.join(", ")),
            ));
        }
    }
    Ok(())
}

fn check_scope(name: &str, namespace: Option<&str>) -> Result<(), Invalid> {
    if !valid_name(name) {
        return Err(Invalid::new(
            "name",
            format!("`{name}` is not a valid name"),
        ));
    }
    if let Some(ns) = namespace.filter(|ns| !valid_name(ns)) {
        return Err(Invalid::new(
            "namespace",
            format!("`{ns}` is not a valid namespace"),
        ));
    }
    Ok(())
}

impl RoleSpec {
    pub fn validate(&self) -> Result<(), Invalid> {
        check_scope(&self.name, self.namespace.as_deref())?;
        if BUILTIN.contains(&self.name.as_str()) {
            return Err(Invalid::new(
                "name",
                format!("`{}` is a built-in role", self.name),
            ));
        }
        check_rules(&self.rules)
    }
}

impl RoleBinding {
    pub fn validate(&self) -> Result<(), Invalid> {
        check_scope(&self.name, self.namespace.as_deref())?;
        if self.tokens.is_empty() {
            return Err(Invalid::new("tokens", "bind at least one token (by id)"));
        }
        if let Some(bad) = self
            .tokens
            .iter()
            .find(|t| t.len() != 16 || !t.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(Invalid::new(
                "tokens",
                format!("`{bad}` is not a token id (16 hex digits, as `dabba token list` shows)"),
            ));
        }
        Ok(())
    }
}

/// What a request does, by its route: the resource and the verb a rule must cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attributes {
    pub resource: &'static str,
    pub verb: &'static str,
}

impl fmt::Display for Attributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)
    }
}

/// The resource and verb of a request to the route `pattern` (`/v1/apps/{ns}/{name}`)
/// with `method`; `None` for what no role grants (health, metrics, the hosts' own
/// traffic, the controllers' own).
pub fn attributes(method: &str, pattern: &str) -> Option<Attributes> {
    let segments: Vec<&str> = pattern.trim_start_matches("/v1/").split('/').collect();
    let item = pattern.ends_with('}');
    let last = segments.last().copied().unwrap_or("");
    let read = |item: bool| if item { "get" } else { "list" };
    let (resource, verb) = match (segments[0], method, last) {
        ("apps", "GET", "logs") => ("apps", "logs"),
        ("apps", "GET", "rollout") => ("rollouts", "get"),
        ("apps", "POST", "rollout" | "undo") => ("apps", "rollout"),
        ("apps", "POST", "scale") => ("apps", "scale"),
        ("apps", "POST", _) => return None, // activate, checks: hosts
        ("runs", "GET", "logs") => ("jobs", "logs"),
        ("runs", _, _) => return None, // reports: hosts
        ("cronjobs", "POST", "run") => ("cronjobs", "exec-job"),
        ("cronjobs", "POST", _) => ("cronjobs", "update"), // suspend, resume
        ("secrets", "POST", "rotate-key") => ("cluster", "update"),
        ("namespaces", m, _) => ("namespaces", verb_of(m, true)?),
        ("watch", _, _) => ("cluster", "watch"),
        ("cluster", _, "peer-token") => return None, // the controllers' own secret
        ("cluster", "GET", "cluster") => ("cluster", "get"),
        ("cluster", _, _) => ("cluster", "update"), // members, peer token, leader region
        ("regions", "GET", _) => ("regions", "list"),
        ("regions", _, _) => ("regions", "update"), // failover, drain, restore
        ("blobs", "GET" | "HEAD", _) => ("components", "get"),
        ("blobs", _, _) => ("components", "create"),
        ("tokens", "POST", _) => ("tokens", "create"),
        ("audit", "GET", _) => ("audit", "list"),
        (r, m, _) => {
            let resource = RESOURCES.iter().find(|x| **x == r)?;
            (
                *resource,
                if m == "GET" {
                    read(item)
                } else {
                    verb_of(m, item)?
                },
            )
        }
    };
    Some(Attributes { resource, verb })
}

fn verb_of(method: &str, item: bool) -> Option<&'static str> {
    Some(match method {
        "GET" | "HEAD" if item => "get",
        "GET" | "HEAD" => "list",
        "PUT" => "update",
        "POST" => "create",
        "DELETE" => "delete",
        _ => return None,
    })
}

/// Whether `rules` allow `what`.
pub fn permits(rules: &[PolicyRule], what: Attributes) -> bool {
    rules.iter().any(|r| r.covers(what.resource, what.verb))
}

/// `GET /v1/auth/can-i`: the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanI {
    pub allowed: bool,
    /// Which grant or binding allows it, or why not.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_is_named_by_its_route() {
        for (m, p, want) in [
            ("GET", "/v1/apps", Some(("apps", "list"))),
            ("GET", "/v1/apps/{ns}/{name}", Some(("apps", "get"))),
            ("PUT", "/v1/apps/{ns}/{name}", Some(("apps", "update"))),
            (
                "POST",
                "/v1/apps/{ns}/{name}/scale",
                Some(("apps", "scale")),
            ),
            ("GET", "/v1/apps/{ns}/{name}/logs", Some(("apps", "logs"))),
            (
                "POST",
                "/v1/apps/{ns}/{name}/undo",
                Some(("apps", "rollout")),
            ),
            ("POST", "/v1/apps/{ns}/{name}/activate", None),
            (
                "POST",
                "/v1/cronjobs/{ns}/{name}/run",
                Some(("cronjobs", "exec-job")),
            ),
            ("GET", "/v1/runs/{ns}/{name}/logs", Some(("jobs", "logs"))),
            (
                "DELETE",
                "/v1/secrets/{ns}/{name}",
                Some(("secrets", "delete")),
            ),
            ("GET", "/v1/watch", Some(("cluster", "watch"))),
            ("PUT", "/v1/blobs/{digest}", Some(("components", "create"))),
            ("POST", "/v1/tokens", Some(("tokens", "create"))),
            ("GET", "/v1/metrics", None),
        ] {
            let got = attributes(m, p).map(|a| (a.resource, a.verb));
            assert_eq!(got, want, "{m} {p}");
        }
    }

    #[test]
    fn rules_cover_what_they_name_and_wildcards_all() {
        let r = PolicyRule::new(&["apps", "pods"], &["get", "list"]);
        assert!(r.covers("pods", "list"));
        assert!(!r.covers("pods", "delete"));
        assert!(!r.covers("secrets", "get"));
        assert!(PolicyRule::new(&["*"], &["get"]).covers("secrets", "get"));
        let deployer = builtin("deployer").unwrap();
        let can = |resource, verb| permits(&deployer, Attributes { resource, verb });
        assert!(can("apps", "scale") && can("components", "create"));
        assert!(!can("tokens", "create") && !can("cluster", "update"));
        assert!(permits(
            &builtin("admin").unwrap(),
            Attributes {
                resource: "audit",
                verb: "list"
            }
        ));
    }

    #[test]
    fn roles_and_bindings_are_checked() {
        let role = |resources: &[&str], verbs: &[&str]| RoleSpec {
            name: "reader".into(),
            namespace: Some("shop".into()),
            rules: vec![PolicyRule::new(resources, verbs)],
        };
        assert!(role(&["apps"], &["get"]).validate().is_ok());
        let e = role(&["app"], &["get"]).validate().unwrap_err();
        assert_eq!(e.field, "rules[0].resources");
        assert!(e.message.contains("no resource `app`"), "{e:?}");
        let e = role(&["apps"], &["read"]).validate().unwrap_err();
        assert!(e.message.contains("no verb `read`"), "{e:?}");
        let builtin = RoleSpec {
            name: "admin".into(),
            ..role(&["apps"], &["get"])
        };
        assert!(builtin.validate().is_err());
        let binding = RoleBinding {
            name: "ci".into(),
            namespace: None,
            role: "reader".into(),
            tokens: vec!["0123456789abcdef".into()],
        };
        assert!(binding.validate().is_ok());
        let bad = RoleBinding {
            tokens: vec!["ci-token".into()],
            ..binding
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .message
                .contains("not a token id")
        );
    }
}
