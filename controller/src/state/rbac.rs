//! Roles and role bindings in the replicated state, and the decision they make
//! (`dabba_spec::rbac`): whether a token's grant or its bindings allow a request.

use dabba_spec::rbac::{Attributes, PolicyRule, RoleBinding, RoleSpec, builtin, permits};
use dabba_spec::resources::{Grant, Millis, Role};

use super::{State, rejected};
use crate::command::{Rejection, Reply};

/// Where a request acts, for which bindings apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// In one namespace: its bindings and cluster-wide ones.
    In(&'a str),
    /// Cluster-wide state any viewer sees, and components: every binding.
    Shared,
    /// The cluster itself, or all namespaces at once: cluster-wide bindings only.
    Cluster,
}

impl Scope<'_> {
    fn covered_by(self, binding_ns: Option<&str>) -> bool {
        match (self, binding_ns) {
            (_, None) | (Scope::Shared, Some(_)) => true,
            (Scope::In(ns), Some(b)) => ns == b,
            (Scope::Cluster, Some(_)) => false,
        }
    }
}

/// `ns/name`, or `*/name` for a cluster-wide role or binding: their keys in the state.
pub fn scoped(namespace: Option<&str>, name: &str) -> String {
    format!("{}/{name}", namespace.unwrap_or("*"))
}

impl State {
    /// The rules of role `name` as seen from a binding in `namespace`: a built-in
    /// role, one of that namespace, or a cluster-wide one.
    fn role_rules(&self, namespace: Option<&str>, name: &str) -> Option<Vec<PolicyRule>> {
        builtin(name).or_else(|| {
            namespace
                .and_then(|ns| self.roles.get(&scoped(Some(ns), name)))
                .or_else(|| self.roles.get(&scoped(None, name)))
                .map(|r| r.rules.clone())
        })
    }

    /// What allows `what` in `scope` to the token `id` with `grant`: its built-in role
    /// (within the grant's namespace) or one of its bindings; `None`: nothing does.
    pub fn authorize(
        &self,
        id: &str,
        grant: &Grant,
        what: Attributes,
        scope: Scope<'_>,
    ) -> Option<String> {
        let own = match grant.role {
            Role::Viewer => Some("viewer"),
            Role::Deployer => Some("deployer"),
            Role::Admin => Some("admin"),
            Role::Host | Role::Bound => None,
        };
        if let Some(role) = own
            && scope.covered_by(grant.namespace.as_deref())
            && builtin(role).is_some_and(|rules| permits(&rules, what))
        {
            return Some(format!("its role {role}"));
        }
        self.bindings
            .values()
            .filter(|b| b.tokens.iter().any(|t| t == id))
            .filter(|b| scope.covered_by(b.namespace.as_deref()))
            .find(|b| {
                self.role_rules(b.namespace.as_deref(), &b.role)
                    .is_some_and(|rules| permits(&rules, what))
            })
            .map(|b| {
                format!(
                    "role binding {} (role {})",
                    scoped(b.namespace.as_deref(), &b.name),
                    b.role
                )
            })
    }

    pub(super) fn put_role(&mut self, role: &RoleSpec, at: Millis) -> Reply {
        if let Err(e) = role.validate() {
            return rejected(Rejection::Invalid, e.to_string());
        }
        let key = scoped(role.namespace.as_deref(), &role.name);
        self.roles.insert(key.clone(), role.clone());
        self.event(at, format!("role/{key}"), "Configured", "rules set");
        self.version += 1;
        Reply::Ok
    }

    pub(super) fn put_binding(&mut self, binding: &RoleBinding, at: Millis) -> Reply {
        if let Err(e) = binding.validate() {
            return rejected(Rejection::Invalid, e.to_string());
        }
        if self
            .role_rules(binding.namespace.as_deref(), &binding.role)
            .is_none()
        {
            return rejected(
                Rejection::Invalid,
                format!(
                    "role: no role `{}` {}(built in: viewer, deployer, admin)",
                    binding.role,
                    binding
                        .namespace
                        .as_deref()
                        .map(|ns| format!("in namespace {ns} or cluster-wide "))
                        .unwrap_or_else(|| "cluster-wide ".into())
                ),
            );
        }
        let key = scoped(binding.namespace.as_deref(), &binding.name);
        self.bindings.insert(key.clone(), binding.clone());
        self.event(
            at,
            format!("rolebinding/{key}"),
            "Configured",
            format!("role {} to {} token(s)", binding.role, binding.tokens.len()),
        );
        self.version += 1;
        Reply::Ok
    }

    /// Deletes role `key` (`scoped`) unless a binding gives it.
    pub(super) fn delete_role(&mut self, key: &str, at: Millis) -> Reply {
        let Some(role) = self.roles.get(key) else {
            return rejected(Rejection::NotFound, format!("no role {key}"));
        };
        let users: Vec<String> = self
            .bindings
            .iter()
            .filter(|(_, b)| {
                b.role == role.name && (role.namespace.is_none() || b.namespace == role.namespace)
            })
            .map(|(k, _)| k.clone())
            .collect();
        if !users.is_empty() {
            return rejected(
                Rejection::Conflict,
                format!(
                    "role {key} is given by role binding(s) {}: delete them first",
                    users.join(", ")
                ),
            );
        }
        self.roles.remove(key);
        self.event(at, format!("role/{key}"), "Deleted", "deleted");
        self.version += 1;
        Reply::Ok
    }

    pub(super) fn delete_binding(&mut self, key: &str, at: Millis) -> Reply {
        if self.bindings.remove(key).is_none() {
            return rejected(Rejection::NotFound, format!("no role binding {key}"));
        }
        self.event(at, format!("rolebinding/{key}"), "Deleted", "deleted");
        self.version += 1;
        Reply::Ok
    }
}

#[cfg(test)]
mod tests {
    use dabba_spec::rbac::PolicyRule;

    use super::*;
    use crate::command::Command;

    const ID: &str = "0123456789abcdef";

    fn grant(role: Role, namespace: Option<&str>) -> Grant {
        Grant {
            role,
            namespace: namespace.map(Into::into),
            label: "t".into(),
            host: None,
            expires: None,
        }
    }

    fn what(resource: &'static str, verb: &'static str) -> Attributes {
        Attributes { resource, verb }
    }

    fn role(name: &str, ns: Option<&str>, resources: &[&str], verbs: &[&str]) -> Command {
        Command::PutRole {
            role: Box::new(RoleSpec {
                name: name.into(),
                namespace: ns.map(Into::into),
                rules: vec![PolicyRule {
                    resources: resources.iter().map(|s| s.to_string()).collect(),
                    verbs: verbs.iter().map(|s| s.to_string()).collect(),
                }],
            }),
            at: 1,
        }
    }

    fn bind(name: &str, ns: Option<&str>, role: &str) -> Command {
        Command::PutRoleBinding {
            binding: Box::new(RoleBinding {
                name: name.into(),
                namespace: ns.map(Into::into),
                role: role.into(),
                tokens: vec![ID.into()],
            }),
            at: 1,
        }
    }

    #[test]
    fn a_bound_token_may_do_what_its_bindings_give_where_they_give_it() {
        let mut s = State::default();
        let bound = grant(Role::Bound, Some("shop"));
        assert_eq!(
            s.authorize(ID, &bound, what("apps", "get"), Scope::In("shop")),
            None
        );
        assert_eq!(
            s.apply(&role("scaler", Some("shop"), &["apps"], &["get", "scale"])),
            Reply::Ok
        );
        // A binding to a role that does not exist (here: of another namespace) is refused.
        assert!(matches!(
            s.apply(&bind("b", Some("bank"), "scaler")),
            Reply::Rejected { .. }
        ));
        assert_eq!(s.apply(&bind("b", Some("shop"), "scaler")), Reply::Ok);
        let can = |s: &State, r, v, scope| s.authorize(ID, &bound, what(r, v), scope).is_some();
        assert!(can(&s, "apps", "scale", Scope::In("shop")));
        assert!(
            !can(&s, "apps", "delete", Scope::In("shop")),
            "a verb not given"
        );
        assert!(
            !can(&s, "pods", "get", Scope::In("shop")),
            "a resource not given"
        );
        assert!(
            !can(&s, "apps", "scale", Scope::In("bank")),
            "another namespace"
        );
        assert!(
            !can(&s, "apps", "get", Scope::Cluster),
            "all namespaces at once"
        );
        // Another token is not given anything.
        assert_eq!(
            s.authorize(
                "fedcba9876543210",
                &bound,
                what("apps", "get"),
                Scope::In("shop")
            ),
            None
        );
        // A cluster-wide binding of a built-in role reaches every namespace.
        assert_eq!(s.apply(&bind("ops", None, "viewer")), Reply::Ok);
        assert!(can(&s, "pods", "list", Scope::In("bank")));
        assert!(can(&s, "pods", "list", Scope::Cluster));
        assert!(!can(&s, "pods", "delete", Scope::In("bank")));
        let by = s
            .authorize(ID, &bound, what("pods", "list"), Scope::In("bank"))
            .unwrap();
        assert!(by.contains("*/ops") && by.contains("viewer"), "{by}");
    }

    #[test]
    fn built_in_roles_hold_within_their_grants_namespace() {
        let s = State::default();
        let deployer = grant(Role::Deployer, Some("shop"));
        let can = |g: &Grant, r, v, scope| s.authorize("x", g, what(r, v), scope).is_some();
        assert!(can(&deployer, "apps", "update", Scope::In("shop")));
        assert!(!can(&deployer, "apps", "update", Scope::In("bank")));
        assert!(can(&deployer, "hosts", "list", Scope::Shared));
        assert!(!can(&deployer, "tokens", "create", Scope::Cluster));
        let admin_of_shop = grant(Role::Admin, Some("shop"));
        assert!(!can(&admin_of_shop, "tokens", "create", Scope::Cluster));
        assert!(can(
            &grant(Role::Admin, None),
            "tokens",
            "create",
            Scope::Cluster
        ));
        assert!(!can(
            &grant(Role::Host, None),
            "apps",
            "get",
            Scope::In("shop")
        ));
    }

    #[test]
    fn a_role_in_use_stays_and_a_revoked_token_leaves_its_bindings() {
        let mut s = State::default();
        s.apply(&role("scaler", None, &["apps"], &["scale"]));
        s.apply(&bind("b", Some("shop"), "scaler"));
        assert!(matches!(
            s.apply(&Command::DeleteRole {
                key: "*/scaler".into(),
                at: 2
            }),
            Reply::Rejected {
                code: Rejection::Conflict,
                ..
            }
        ));
        s.tokens
            .insert(format!("{ID}{}", "0".repeat(48)), grant(Role::Bound, None));
        assert_eq!(
            s.apply(&Command::RevokeToken {
                hash: format!("{ID}{}", "0".repeat(48))
            }),
            Reply::Ok
        );
        assert!(
            s.bindings.is_empty(),
            "its only token revoked: the binding went"
        );
        assert_eq!(
            s.apply(&Command::DeleteRole {
                key: "*/scaler".into(),
                at: 3
            }),
            Reply::Ok
        );
    }
}
