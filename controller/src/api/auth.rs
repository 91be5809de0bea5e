//! Who may do what. A request carries `Authorization: Bearer <token>`; the state holds
//! each token's SHA-256 and its [`Grant`] (a role, for one namespace or all). No token,
//! or one the cluster does not know: 401. A token whose role or namespace does not cover
//! the request: 403.
//!
//! What a role can grant is decided by role-based access control
//! (`dabba_spec::rbac`, `state::rbac`): the request's resource and verb, named by its
//! route, must be covered by the token's built-in role (viewer, deployer, admin, within
//! the grant's namespace) or by a role one of its bindings gives, where that binding
//! holds. What no role grants — the hosts' own calls, the join token's registration,
//! the peer token — is [`allows`], a pure function of a grant and what a request needs.
//! Every endpoint declares who may call it ([`Access`]) where it is routed, and the
//! controller that receives a request admits it ([`Api::admit`]) before anything else —
//! before forwarding it to the leader, and when there is no leader — so an
//! unauthenticated request gets its 401 from any controller, never a 503 or a hop to
//! the leader. Declared with the route, a rule cannot be forgotten in a handler, and the
//! route table is the list a test walks (every endpoint × every role).
//!
//! A follower's copy of the tokens may lag the leader's by a few entries: a token it
//! does not know yet is not refused there when a leader is known — the request goes to
//! the leader, which admits it again with the latest tokens. A token the follower knows
//! is judged there (a revocation reaches a follower as it reaches the leader, by the
//! log; the leader admits forwarded requests again anyway).

use dabba_spec::rbac::{Attributes, attributes};
use dabba_spec::resources::{Grant, Role};

use super::{Api, Call, Failure, fail};
use crate::credentials::token_hash;
use crate::node::now_millis;
use crate::state::rbac::Scope;

/// What a request needs of its token.
#[derive(Debug, Clone, Copy)]
pub enum Need<'a> {
    /// Read in a namespace (`None`: any namespace the token covers).
    View(Option<&'a str>),
    /// Change apps and cron jobs in a namespace.
    Deploy(&'a str),
    /// Upload components (any deployer).
    Upload,
    /// Read components (hosts, to run them; deployers, to check for them).
    Download,
    /// Tokens and cluster membership.
    Admin,
    /// What any host does: activations, buckets, reports (which ones: the handler).
    Host,
    /// What only host `name` does: heartbeat and read its assignments.
    HostAs(&'a str),
    /// Register a host: the join token's one power (and a host's own credential, for
    /// itself).
    Register,
    /// Any valid token (asking what it may do).
    Authenticated,
}

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: health and metrics.
    Open,
    /// Other controllers, with the peer token: Raft's RPCs, components between
    /// controllers, a handed-over election.
    Peer,
    /// A token whose grant covers the rule.
    Token(Rule),
    /// Another controller, or a token whose grant covers the rule.
    PeerOr(Rule),
}

/// What a token needs for an endpoint, with where the namespace comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    View(Ns),
    /// Change what is in the path's namespace (`{ns}`).
    Deploy,
    Upload,
    Download,
    Admin,
    Host,
    /// Host `{name}` itself.
    HostAs,
    Register,
    /// Any valid token.
    Authenticated,
}

/// Which namespace a view is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ns {
    /// The path's `{ns}`.
    Path,
    /// A listing's `?namespace=` (none: what the token covers).
    Query,
    /// Cluster-wide state any viewer sees (hosts, regions, members).
    Any,
}

impl Rule {
    /// What `call` needs under this rule.
    pub fn need(self, call: &Call) -> Need<'_> {
        match self {
            Rule::View(Ns::Path) => Need::View(Some(call.param("ns"))),
            Rule::View(Ns::Query) => Need::View(call.query("namespace")),
            Rule::View(Ns::Any) => Need::View(None),
            Rule::Deploy => Need::Deploy(call.param("ns")),
            Rule::Upload => Need::Upload,
            Rule::Download => Need::Download,
            Rule::Admin => Need::Admin,
            Rule::Host => Need::Host,
            Rule::HostAs => Need::HostAs(call.param("name")),
            Rule::Register => Need::Register,
            Rule::Authenticated => Need::Authenticated,
        }
    }
}

/// How a request was admitted.
#[derive(Debug)]
pub(super) enum Admitted {
    /// Open, or another controller's.
    Anyone,
    /// With this token's grant.
    Grant(Grant),
    /// A token this follower does not know (yet): only the leader can judge it.
    ByTheLeader,
}

/// Whether `grant` covers `need`.
pub fn allows(grant: &Grant, need: Need<'_>) -> bool {
    let in_scope = |ns: &str| grant.namespace.as_deref().is_none_or(|own| own == ns);
    match need {
        Need::View(ns) => {
            matches!(grant.role, Role::Viewer | Role::Deployer | Role::Admin)
                && ns.is_none_or(in_scope)
        }
        Need::Deploy(ns) => matches!(grant.role, Role::Deployer | Role::Admin) && in_scope(ns),
        Need::Upload => matches!(grant.role, Role::Deployer | Role::Admin),
        Need::Download => matches!(grant.role, Role::Admin | Role::Deployer) || is_a_host(grant),
        Need::Admin => grant.role == Role::Admin && grant.namespace.is_none(),
        Need::Host => grant.role == Role::Admin || is_a_host(grant),
        Need::HostAs(name) => {
            grant.role == Role::Admin || (is_a_host(grant) && grant.host.as_deref() == Some(name))
        }
        Need::Register => matches!(grant.role, Role::Host | Role::Admin),
        Need::Authenticated => true,
    }
}

/// Where an endpoint of `rule` acts, for which bindings apply: the path's namespace, a
/// listing's (else the token's own namespace, else all), shared state, or the cluster.
/// `None`: no role grants it (hosts' and the join token's endpoints).
pub(super) fn scope_of<'a>(
    rule: Rule,
    path_ns: Option<&'a str>,
    query_ns: Option<&'a str>,
    grant: &'a Grant,
) -> Option<Scope<'a>> {
    Some(match rule {
        Rule::View(Ns::Path) | Rule::Deploy => path_ns.map_or(Scope::Cluster, Scope::In),
        Rule::View(Ns::Query) => query_ns
            .or(grant.namespace.as_deref())
            .map_or(Scope::Cluster, Scope::In),
        Rule::View(Ns::Any) | Rule::Upload | Rule::Download => Scope::Shared,
        Rule::Admin => Scope::Cluster,
        Rule::Host | Rule::HostAs | Rule::Register | Rule::Authenticated => return None,
    })
}

/// Whether `grant` is one host's own credential (not the join token).
fn is_a_host(grant: &Grant) -> bool {
    grant.role == Role::Host && grant.host.is_some()
}

/// Refuses a host's call about `what`, assigned to host `on` (`None`: to none), unless
/// the caller is that host (or an admin): a host reports only its own runs and checks,
/// and reaches only the buckets of what it runs.
pub(super) fn on_own_host(call: &Call, what: &str, on: Option<&str>) -> Result<(), Failure> {
    let grant = call.grant();
    if grant.role == Role::Admin || (grant.host.is_some() && grant.host.as_deref() == on) {
        return Ok(());
    }
    Err(fail(
        403,
        "forbidden",
        format!(
            "host {} may not touch {what}: {}",
            grant.host.as_deref().unwrap_or("?"),
            match on {
                Some(h) => format!("it is assigned to host {h}"),
                None => "it is assigned to no host".into(),
            }
        ),
    ))
}

/// The 403 for a grant that does not allow what was asked.
fn forbidden(grant: &Grant, need: Need<'_>) -> Failure {
    match need {
        Need::Download => {
            return fail(403, "forbidden", "only hosts and deployers read components");
        }
        Need::HostAs(name) if grant.role == Role::Host => {
            return fail(
                403,
                "forbidden",
                match &grant.host {
                    Some(own) => format!("host {own} may act only as itself, not as {name}"),
                    None => "the join token only registers hosts".into(),
                },
            );
        }
        Need::Host if grant.role == Role::Host => {
            return fail(403, "forbidden", "the join token only registers hosts");
        }
        _ => {}
    }
    let scope = grant
        .namespace
        .as_deref()
        .map(|n| format!(" in namespace {n}"))
        .unwrap_or_default();
    fail(
        403,
        "forbidden",
        format!(
            "token `{}` ({:?}{scope}) may not do this",
            grant.label, grant.role
        ),
    )
}

/// The bearer token of a request.
pub(super) fn bearer(parts: &http::request::Parts) -> Result<&str, Failure> {
    parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            fail(
                401,
                "unauthenticated",
                "send `Authorization: Bearer <token>`",
            )
        })
}

impl Api {
    /// The resource, verb and scope a role must cover for `call` under `rule`, when a
    /// role can grant it at all.
    fn rbac_question<'c>(
        &self,
        rule: Rule,
        call: &'c Call,
        grant: &'c Grant,
        pattern: Option<&str>,
    ) -> Option<(Attributes, Scope<'c>)> {
        let path_ns = matches!(rule, Rule::View(Ns::Path) | Rule::Deploy).then(|| call.param("ns"));
        let scope = scope_of(rule, path_ns, call.query("namespace"), grant)?;
        let what = attributes(call.parts.method.as_str(), pattern?)?;
        Some((what, scope))
    }

    /// For a listing (admitted with [`Ns::Query`]): confirms this node still leads, and
    /// says which namespace to list (`None`: all of them) — the one asked, or else the
    /// one the token is limited to.
    pub(super) async fn listed_namespace(&self, call: &Call) -> Result<Option<String>, Failure> {
        self.node.linearize().await?;
        Ok(call
            .query("namespace")
            .map(str::to_string)
            .or_else(|| call.grant().namespace.clone()))
    }

    /// Admits `call` to an endpoint of `access`, on this controller, leader or not.
    /// Who the caller is goes into `seen`, for the audit log.
    pub(super) fn admit(
        &self,
        access: Access,
        call: &Call,
        seen: &mut super::audit::Seen,
    ) -> Result<Admitted, Failure> {
        let mut peer = || {
            super::raft_rpc::check_peer(self, call).map(|()| {
                seen.user = Some("peer".into());
                Admitted::Anyone
            })
        };
        let rule = match access {
            Access::Open => return Ok(Admitted::Anyone),
            Access::Peer => return peer(),
            Access::PeerOr(rule) => {
                if let Ok(admitted) = peer() {
                    return Ok(admitted);
                }
                rule
            }
            Access::Token(rule) => rule,
        };
        let hash = token_hash(bearer(&call.parts)?);
        let Some(grant) = self.node.shared.read(|s| s.tokens.get(&hash).cloned()) else {
            if !self.node.is_leader() && self.node.leader_address().is_some() {
                return Ok(Admitted::ByTheLeader);
            }
            return Err(fail(
                401,
                "unauthenticated",
                "the token is not valid for this cluster",
            ));
        };
        seen.user = Some(grant.label.clone());
        if let Some(expired) = grant.expires.filter(|at| *at <= now_millis()) {
            return Err(fail(
                401,
                "unauthenticated",
                format!(
                    "token `{}` expired {} s ago",
                    grant.label,
                    now_millis().saturating_sub(expired) / 1000
                ),
            ));
        }
        let need = rule.need(call);
        let allowed = match self.rbac_question(rule, call, &grant, seen.pattern) {
            // What a role can grant: the token's built-in role or its bindings (and a
            // host's own credential may read components).
            Some((what, scope)) => {
                let id = &super::tokens::token_id(&hash);
                self.node
                    .shared
                    .read(|s| s.authorize(id, &grant, what, scope))
                    .is_some()
                    || (rule == Rule::Download && allows(&grant, need))
            }
            // What only hosts, the join token or a cluster admin do.
            None => allows(&grant, need),
        };
        if allowed {
            Ok(Admitted::Grant(grant))
        } else {
            Err(forbidden(&grant, need))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(role: Role, namespace: Option<&str>) -> Grant {
        Grant {
            role,
            namespace: namespace.map(Into::into),
            label: "t".into(),
            host: None,
            expires: None,
        }
    }

    #[test]
    fn each_role_may_do_what_spec_controller_md_says_and_nothing_more() {
        use Need::*;
        let needs = [
            ("view any", View(None)),
            ("view shop", View(Some("shop"))),
            ("view bank", View(Some("bank"))),
            ("deploy shop", Deploy("shop")),
            ("deploy bank", Deploy("bank")),
            ("upload", Upload),
            ("download", Download),
            ("admin", Admin),
            ("host", Host),
            ("as h1", HostAs("h1")),
            ("register", Register),
        ];
        // Rows: what each grant may do, in the order of `needs`.
        for (g, allowed) in [
            (grant(Role::Viewer, None), "view any, view shop, view bank"),
            (grant(Role::Viewer, Some("shop")), "view any, view shop"),
            (
                grant(Role::Deployer, None),
                "view any, view shop, view bank, deploy shop, deploy bank, upload, download",
            ),
            (
                grant(Role::Deployer, Some("shop")),
                "view any, view shop, deploy shop, upload, download",
            ),
            (
                grant(Role::Admin, None),
                "view any, view shop, view bank, deploy shop, deploy bank, upload, download, admin, host, as h1, register",
            ),
            // A namespaced admin is not a cluster admin.
            (
                grant(Role::Admin, Some("shop")),
                "view any, view shop, deploy shop, upload, download, host, as h1, register",
            ),
            // The join token only registers hosts.
            (grant(Role::Host, None), "register"),
            (
                Grant {
                    host: Some("h1".into()),
                    ..grant(Role::Host, None)
                },
                "download, host, as h1, register",
            ),
            (
                Grant {
                    host: Some("h2".into()),
                    ..grant(Role::Host, None)
                },
                "download, host, register",
            ),
        ] {
            let got: Vec<&str> = needs
                .iter()
                .filter(|(_, n)| allows(&g, *n))
                .map(|(name, _)| *name)
                .collect();
            assert_eq!(got.join(", "), allowed, "{g:?}");
        }
    }

    #[test]
    fn refusals_name_the_token_and_its_scope() {
        let e = forbidden(&grant(Role::Viewer, Some("shop")), Need::Deploy("bank"));
        assert_eq!((e.status.as_u16(), e.code), (403, "forbidden"));
        assert_eq!(
            e.message,
            "token `t` (Viewer in namespace shop) may not do this"
        );
        let e = forbidden(&grant(Role::Viewer, None), Need::Download);
        assert_eq!(e.message, "only hosts and deployers read components");
    }

    #[test]
    fn a_missing_or_malformed_bearer_is_unauthenticated() {
        let parts = |auth: Option<&str>| {
            let mut b = http::Request::builder().uri("/v1/apps");
            if let Some(a) = auth {
                b = b.header(http::header::AUTHORIZATION, a);
            }
            b.body(()).unwrap().into_parts().0
        };
        for bad in [None, Some("Basic abc"), Some("bearer abc")] {
            let e = bearer(&parts(bad)).unwrap_err();
            assert_eq!(
                (e.status.as_u16(), e.code),
                (401, "unauthenticated"),
                "{bad:?}"
            );
        }
        assert_eq!(bearer(&parts(Some("Bearer  abc "))).unwrap(), "abc");
    }
}
