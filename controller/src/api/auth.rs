//! Who may do what. A request carries `Authorization: Bearer <token>`; the state holds
//! each token's SHA-256 and its [`Grant`] (a role, for one namespace or all). No token,
//! or one the cluster does not know: 401. A token whose role or namespace does not cover
//! the request: 403.
//!
//! [`allows`] is the whole policy, a pure function of a grant and what a request needs;
//! the handlers say what they need with [`Need`].

use dabba_spec::resources::{Grant, Role};

use super::{Api, Call, Failure, fail};
use crate::secrets::token_hash;

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
    /// What hosts do: register, heartbeat, assignments, activations, buckets, reports.
    Host,
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
        Need::Download => matches!(grant.role, Role::Host | Role::Admin | Role::Deployer),
        Need::Admin => grant.role == Role::Admin && grant.namespace.is_none(),
        Need::Host => matches!(grant.role, Role::Host | Role::Admin),
    }
}

/// The 403 for a grant that does not allow what was asked.
fn forbidden(grant: &Grant, need: Need<'_>) -> Failure {
    if let Need::Download = need {
        return fail(403, "forbidden", "only hosts and deployers read components");
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
fn bearer(parts: &http::request::Parts) -> Result<&str, Failure> {
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
    /// For a listing: authorizes a view of `?namespace=` (or, without one, of what the
    /// token covers), confirms this node still leads, and says which namespace to list
    /// (`None`: all of them).
    pub(super) async fn listed_namespace(&self, call: &Call) -> Result<Option<String>, Failure> {
        let asked = call.query("namespace");
        let grant = self.authorize(call, Need::View(asked))?;
        self.node.linearize().await?;
        Ok(asked.map(str::to_string).or(grant.namespace))
    }

    /// The grant of the request's token, if it may do what it needs.
    pub(super) fn authorize(&self, call: &Call, need: Need<'_>) -> Result<Grant, Failure> {
        let hash = token_hash(bearer(&call.parts)?);
        let grant = self
            .node
            .shared
            .read(|s| s.tokens.get(&hash).cloned())
            .ok_or_else(|| {
                fail(
                    401,
                    "unauthenticated",
                    "the token is not valid for this cluster",
                )
            })?;
        if allows(&grant, need) {
            Ok(grant)
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
                "view any, view shop, view bank, deploy shop, deploy bank, upload, download, admin, host",
            ),
            // A namespaced admin is not a cluster admin.
            (
                grant(Role::Admin, Some("shop")),
                "view any, view shop, deploy shop, upload, download, host",
            ),
            (grant(Role::Host, None), "download, host"),
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
