//! Who may call what, on a real 3-controller cluster: every endpoint of the route table
//! × every kind of caller, sent to a follower and to the leader, answered 401/403 or
//! let through exactly as the table below says; and with no leader at all, a request
//! without a valid token still gets its 401 (not a 503).

use std::collections::BTreeMap;
use std::time::Duration;

use dabba_controller::api::{Access, Ns, Rule};
use dabba_spec::api::TokenRequest;
use dabba_spec::resources::Role;

use crate::support::{block_on, eventually, try_request};

/// The callers tried against every endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    NoToken,
    BadToken,
    Viewer,
    /// A viewer of namespace `shop` only.
    ShopViewer,
    Deployer,
    /// A deployer of namespace `shop` only.
    ShopDeployer,
    Admin,
    /// A host (the join token).
    Host,
}

const CALLERS: [Caller; 8] = [
    Caller::NoToken,
    Caller::BadToken,
    Caller::Viewer,
    Caller::ShopViewer,
    Caller::Deployer,
    Caller::ShopDeployer,
    Caller::Admin,
    Caller::Host,
];

/// What each endpoint allows, written out by hand from spec/controller.md ("Tokens and
/// roles") — not derived from the controller's own rules, so a rule changed or
/// forgotten there shows here. An endpoint missing from this table fails the test.
fn expected() -> BTreeMap<(&'static str, &'static str), &'static str> {
    [
        (("GET", "/v1/healthz"), "open"),
        (("GET", "/metrics"), "open"),
        (("POST", "/raft/append"), "peer"),
        (("POST", "/raft/vote"), "peer"),
        (("POST", "/raft/snapshot"), "peer"),
        (("PUT", "/raft/blobs/{digest}"), "peer"),
        (("GET", "/raft/blobs/{digest}"), "peer"),
        (("POST", "/v1/cluster/elect"), "peer"),
        (("PUT", "/v1/cluster/members/{id}/place"), "peer or admin"),
        (("PUT", "/v1/blobs/{digest}"), "upload"),
        (("GET", "/v1/blobs/{digest}"), "download"),
        (("HEAD", "/v1/blobs/{digest}"), "download"),
        (("GET", "/v1/apps"), "view listed"),
        (("PUT", "/v1/apps/{ns}/{name}"), "deploy"),
        (("GET", "/v1/apps/{ns}/{name}"), "view ns"),
        (("DELETE", "/v1/apps/{ns}/{name}"), "deploy"),
        (("POST", "/v1/apps/{ns}/{name}/scale"), "deploy"),
        (("POST", "/v1/apps/{ns}/{name}/activate"), "host"),
        (("GET", "/v1/apps/{ns}/{name}/logs"), "view ns"),
        (("GET", "/v1/apps/{ns}/{name}/rollout"), "view ns"),
        (("POST", "/v1/apps/{ns}/{name}/rollout"), "deploy"),
        (("POST", "/v1/apps/{ns}/{name}/undo"), "deploy"),
        (("POST", "/v1/apps/{ns}/{name}/checks"), "host"),
        (("GET", "/v1/revisions"), "view listed"),
        (("GET", "/v1/pods"), "view listed"),
        (("GET", "/v1/rollouts"), "view listed"),
        (("GET", "/v1/analysistemplates"), "view listed"),
        (("PUT", "/v1/analysistemplates/{ns}/{name}"), "deploy"),
        (("DELETE", "/v1/analysistemplates/{ns}/{name}"), "deploy"),
        (("GET", "/v1/cronjobs"), "view listed"),
        (("PUT", "/v1/cronjobs/{ns}/{name}"), "deploy"),
        (("DELETE", "/v1/cronjobs/{ns}/{name}"), "deploy"),
        (("POST", "/v1/cronjobs/{ns}/{name}/suspend"), "deploy"),
        (("POST", "/v1/cronjobs/{ns}/{name}/resume"), "deploy"),
        (("POST", "/v1/cronjobs/{ns}/{name}/run"), "deploy"),
        (("GET", "/v1/runs/{ns}/{name}/logs"), "view ns"),
        (("POST", "/v1/runs/{ns}/{run}/report"), "host"),
        (("GET", "/v1/cluster"), "view any"),
        (("GET", "/v1/watch"), "view any"),
        (("GET", "/v1/hosts"), "view any"),
        (("GET", "/v1/regions"), "view any"),
        (("GET", "/v1/cluster/peer-token"), "admin"),
        (("POST", "/v1/cluster/members"), "admin"),
        (("DELETE", "/v1/cluster/members/{id}"), "admin"),
        (("PUT", "/v1/cluster/preferred-leader-region"), "admin"),
        (("POST", "/v1/regions/{region}/failover"), "admin"),
        (("POST", "/v1/regions/{region}/drain"), "admin"),
        (("POST", "/v1/regions/{region}/restore"), "admin"),
        (("POST", "/v1/tokens"), "admin"),
        (("POST", "/v1/hosts/register"), "host"),
        (("POST", "/v1/hosts/{name}/heartbeat"), "host"),
        (("GET", "/v1/hosts/{name}/assignments"), "host"),
        (("POST", "/v1/kv/write"), "host"),
        (("POST", "/v1/kv/read"), "host"),
        (("POST", "/v1/kv/list"), "host"),
    ]
    .into_iter()
    .collect()
}

/// Whether `caller` may call an endpoint of `kind` in namespace `ns` (for a listing,
/// `ns` is its `?namespace=`; `None`: not given).
fn may(kind: &str, caller: Caller, ns: Option<&str>) -> bool {
    use Caller::*;
    let shop = ns.is_none_or(|n| n == "shop");
    match kind {
        "open" => true,
        // None of these callers holds the peer token.
        "peer" => false,
        "peer or admin" | "admin" => caller == Admin,
        "upload" => matches!(caller, Deployer | ShopDeployer | Admin),
        "download" => matches!(caller, Deployer | ShopDeployer | Admin | Host),
        "deploy" => matches!(caller, Deployer | Admin) || (caller == ShopDeployer && shop),
        "view ns" | "view listed" => {
            matches!(caller, Viewer | Deployer | Admin)
                || (matches!(caller, ShopViewer | ShopDeployer) && shop)
        }
        "view any" => matches!(
            caller,
            Viewer | ShopViewer | Deployer | ShopDeployer | Admin
        ),
        "host" => matches!(caller, Host | Admin),
        other => panic!("no such kind {other}"),
    }
}

/// The kind the controller declares for an endpoint, in the table's words (so a rule
/// changed in the code without the table fails here too).
fn declared(access: Access) -> &'static str {
    match access {
        Access::Open => "open",
        Access::Peer => "peer",
        Access::PeerOr(Rule::Admin) => "peer or admin",
        Access::Token(Rule::View(Ns::Path)) => "view ns",
        Access::Token(Rule::View(Ns::Query)) => "view listed",
        Access::Token(Rule::View(Ns::Any)) => "view any",
        Access::Token(Rule::Deploy) => "deploy",
        Access::Token(Rule::Upload) => "upload",
        Access::Token(Rule::Download) => "download",
        Access::Token(Rule::Admin) => "admin",
        Access::Token(Rule::Host) => "host",
        other => panic!("an access the table has no word for: {other:?}"),
    }
}

/// `pattern` with its parameters filled in, namespace `ns`.
fn path(pattern: &str, ns: &str) -> String {
    let digest = format!("sha256:{}", "1".repeat(64));
    pattern
        .replace("{ns}", ns)
        .replace("{name}", "nothing")
        .replace("{run}", "nothing")
        .replace("{digest}", &digest)
        .replace("{id}", "9")
        .replace("{region}", "nowhere")
}

#[test]
fn every_endpoint_answers_every_caller_as_its_rule_says_on_any_controller() {
    let mut c = crate::cluster::Cluster::start(3, 0);
    let token = |role: Role, namespace: Option<&str>| {
        let req = TokenRequest {
            role,
            namespace: namespace.map(str::to_string),
            label: format!("{role:?}-{}", namespace.unwrap_or("all")),
        };
        block_on(c.api().create_token(&req))
            .expect("creating a token")
            .token
    };
    let tokens: BTreeMap<String, String> = [
        (Caller::BadToken, "not-a-token".to_string()),
        (Caller::Viewer, token(Role::Viewer, None)),
        (Caller::ShopViewer, token(Role::Viewer, Some("shop"))),
        (Caller::Deployer, token(Role::Deployer, None)),
        (Caller::ShopDeployer, token(Role::Deployer, Some("shop"))),
        (Caller::Admin, c.admin.clone()),
        (Caller::Host, c.join.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (format!("{k:?}"), v))
    .collect();
    let leader = c.leader().expect("a leader");
    let follower = (0..3).find(|i| *i != leader).unwrap();
    // The newest tokens have reached the follower before it is asked.
    std::thread::sleep(Duration::from_secs(1));

    let table = expected();
    let routes = dabba_controller::api::route_table();
    let mut missing = Vec::new();
    let mut requests = 0;
    for (method, pattern, access) in &routes {
        let Some(kind) = table.get(&(method.as_str(), *pattern)) else {
            missing.push(format!("{method} {pattern}"));
            continue;
        };
        assert_eq!(
            declared(*access),
            *kind,
            "{method} {pattern}: the controller's rule is not the table's"
        );
        // Namespaced endpoints are tried in the scoped tokens' namespace and another.
        let namespaces: &[Option<&str>] = match *kind {
            "view listed" => &[None, Some("shop"), Some("bank")],
            _ if pattern.contains("{ns}") => &[Some("shop"), Some("bank")],
            _ => &[None],
        };
        for &ns in namespaces {
            let mut uri = path(pattern, ns.unwrap_or("shop"));
            uri.push_str("?wait_ms=0");
            if *kind == "view listed"
                && let Some(ns) = ns
            {
                uri.push_str(&format!("&namespace={ns}"));
            }
            for caller in CALLERS {
                let auth = tokens
                    .get(&format!("{caller:?}"))
                    .map(|t| format!("Bearer {t}"));
                let headers: Vec<(&str, &str)> =
                    auth.iter().map(|a| ("authorization", a.as_str())).collect();
                for node in [follower, leader] {
                    let r = try_request(
                        c.controller_addrs[node],
                        method.as_str(),
                        &uri,
                        &headers,
                        b"",
                    )
                    .unwrap_or_else(|e| panic!("{method} {uri}: {e}"));
                    requests += 1;
                    let status = r.status;
                    let at = if node == leader { "leader" } else { "follower" };
                    let what = format!(
                        "{method} {uri} as {caller:?} on the {at}: {status} {}",
                        r.text()
                    );
                    if may(kind, caller, ns) {
                        assert!(status != 401 && status != 403, "let through: {what}");
                    } else if matches!(caller, Caller::NoToken | Caller::BadToken)
                        || *kind == "peer"
                    {
                        assert_eq!(status, 401, "{what}");
                    } else {
                        assert_eq!(status, 403, "{what}");
                    }
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "endpoints without a row in this test's table (add one, with who may call them): {missing:?}"
    );
    let extra: Vec<_> = table
        .keys()
        .filter(|(m, p)| {
            !routes
                .iter()
                .any(|(rm, rp, _)| rm.as_str() == *m && rp == p)
        })
        .collect();
    assert!(
        extra.is_empty(),
        "rows for endpoints that do not exist: {extra:?}"
    );
    // None of it changed what is deployed.
    assert!(block_on(c.api().apps(None)).unwrap().is_empty());
    println!(
        "{} endpoints × {} callers: {requests} requests",
        routes.len(),
        CALLERS.len()
    );

    // No leader at all (the leader and one follower killed): the survivor still
    // answers 401 without a valid token and 403 to a token that may not, before it
    // would look for a leader; a request it admits waits for one, and gets 503.
    let other = (0..3).find(|i| *i != leader && *i != follower).unwrap();
    c.kill_controller(leader);
    c.kill_controller(other);
    let survivor = c.controller_addrs[follower];
    eventually(
        "the survivor to know no leader",
        Duration::from_secs(30),
        || {
            let text = try_request(survivor, "GET", "/metrics", &[], b"")
                .ok()?
                .text();
            text.lines()
                .any(|l| l == "dabba_raft_state{field=\"leader\"} 0")
                .then_some(())
        },
    );
    let bearer = |t: &str| format!("Bearer {t}");
    let viewer = bearer(&tokens["Viewer"]);
    for (headers, method, uri, want) in [
        (vec![], "GET", "/v1/apps", 401),
        (
            vec![("authorization", "Bearer not-a-token")],
            "GET",
            "/v1/apps",
            401,
        ),
        (vec![], "POST", "/v1/kv/write", 401),
        (
            vec![("authorization", viewer.as_str())],
            "POST",
            "/v1/tokens",
            403,
        ),
        (
            vec![("authorization", viewer.as_str())],
            "GET",
            "/v1/apps",
            503,
        ),
    ] {
        let r = try_request(survivor, method, uri, &headers, b"").unwrap();
        assert_eq!(
            r.status,
            want,
            "{method} {uri} with no leader: {}",
            r.text()
        );
    }
}
