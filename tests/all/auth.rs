//! Who may call what, on a real 3-controller cluster: every endpoint of the route table
//! × every kind of caller, sent to a follower and to the leader, answered 401/403 or
//! let through exactly as the table below says; and with no leader at all, a request
//! without a valid token still gets its 401 (not a 503).

use std::collections::BTreeMap;
use std::time::Duration;

use dabba_controller::api::{Access, Ns, Rule};
use dabba_spec::api::TokenRequest;
use dabba_spec::resources::Role;

use crate::support::{block_on, eventually, json_out, stderr, stdout, try_request};

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
    /// The cluster's join token: it only registers hosts.
    Join,
    /// Host `h1`'s own credential.
    H1,
}

const CALLERS: [Caller; 9] = [
    Caller::NoToken,
    Caller::BadToken,
    Caller::Viewer,
    Caller::ShopViewer,
    Caller::Deployer,
    Caller::ShopDeployer,
    Caller::Admin,
    Caller::Join,
    Caller::H1,
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
        (("GET", "/v1/tokens"), "admin"),
        (("DELETE", "/v1/tokens/{id}"), "admin"),
        (("GET", "/v1/secrets"), "view listed"),
        (("GET", "/v1/secrets/{ns}/{name}"), "view ns"),
        (("PUT", "/v1/secrets/{ns}/{name}"), "deploy"),
        (("DELETE", "/v1/secrets/{ns}/{name}"), "deploy"),
        (("POST", "/v1/secrets/rotate-key"), "admin"),
        (("GET", "/v1/namespaces/{ns}/policy"), "view ns"),
        (("GET", "/v1/roles"), "admin"),
        (("PUT", "/v1/roles"), "admin"),
        (("DELETE", "/v1/roles/{name}"), "admin"),
        (("GET", "/v1/rolebindings"), "admin"),
        (("PUT", "/v1/rolebindings"), "admin"),
        (("DELETE", "/v1/rolebindings/{name}"), "admin"),
        (("GET", "/v1/auth/can-i"), "any token"),
        (("PUT", "/v1/namespaces/{ns}/policy"), "admin"),
        (("DELETE", "/v1/namespaces/{ns}/policy"), "admin"),
        (("GET", "/v1/audit"), "admin"),
        (("POST", "/v1/audit"), "peer"),
        (("PUT", "/v1/audit/retention"), "admin"),
        (("POST", "/v1/hosts/register"), "register"),
        (("POST", "/v1/hosts/{name}/heartbeat"), "host as {name}"),
        (("GET", "/v1/hosts/{name}/assignments"), "host as {name}"),
        (("POST", "/v1/kv/write"), "host"),
        (("POST", "/v1/kv/read"), "host"),
        (("POST", "/v1/kv/list"), "host"),
    ]
    .into_iter()
    .collect()
}

/// Whether `caller` may call an endpoint of `kind` in namespace `ns` (for a listing,
/// `ns` is its `?namespace=`; `None`: not given), with `{name}` = `name`.
fn may(kind: &str, caller: Caller, ns: Option<&str>, name: &str) -> bool {
    use Caller::*;
    let shop = ns.is_none_or(|n| n == "shop");
    match kind {
        "open" => true,
        // None of these callers holds the peer token.
        "peer" => false,
        "peer or admin" | "admin" => caller == Admin,
        "upload" => matches!(caller, Deployer | ShopDeployer | Admin),
        "download" => matches!(caller, Deployer | ShopDeployer | Admin | H1),
        "deploy" => matches!(caller, Deployer | Admin) || (caller == ShopDeployer && shop),
        "view ns" | "view listed" => {
            matches!(caller, Viewer | Deployer | Admin)
                || (matches!(caller, ShopViewer | ShopDeployer) && shop)
        }
        "view any" => matches!(
            caller,
            Viewer | ShopViewer | Deployer | ShopDeployer | Admin
        ),
        "host" => matches!(caller, H1 | Admin),
        "host as {name}" => caller == Admin || (caller == H1 && name == "h1"),
        "register" => matches!(caller, Join | H1 | Admin),
        "any token" => !matches!(caller, NoToken | BadToken),
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
        Access::Token(Rule::HostAs) => "host as {name}",
        Access::Token(Rule::Register) => "register",
        Access::Token(Rule::Authenticated) => "any token",
        other => panic!("an access the table has no word for: {other:?}"),
    }
}

/// `pattern` with its parameters filled in, namespace `ns` and name `name`.
fn path(pattern: &str, ns: &str, name: &str) -> String {
    let digest = format!("sha256:{}", "1".repeat(64));
    pattern
        .replace("{ns}", ns)
        .replace("{name}", name)
        .replace("{run}", "nothing")
        .replace("{digest}", &digest)
        .replace("{id}", "9")
        .replace("{region}", "nowhere")
}

#[test]
fn every_endpoint_answers_every_caller_as_its_rule_says_on_any_controller() {
    let mut c = crate::cluster::Cluster::start(3, 1);
    let token = |role: Role, namespace: Option<&str>| {
        let req = TokenRequest {
            role,
            namespace: namespace.map(str::to_string),
            label: format!("{role:?}-{}", namespace.unwrap_or("all")),
            ttl_ms: None,
            bind: None,
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
        (Caller::Join, c.join.clone()),
        (Caller::H1, credential(&c, "h1")),
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
        // A host's own endpoints are tried under its name and another's.
        let names: &[&str] = if *kind == "host as {name}" {
            &["h1", "h2"]
        } else {
            &["nothing"]
        };
        for (&ns, &name) in namespaces
            .iter()
            .flat_map(|ns| names.iter().map(move |n| (ns, n)))
        {
            let mut uri = path(pattern, ns.unwrap_or("shop"), name);
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
                    if may(kind, caller, ns, name) {
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

/// Host `name`'s own credential, as it keeps it in its data directory.
fn credential(c: &crate::cluster::Cluster, name: &str) -> String {
    let path = c.dir.path().join(name).join("host.token");
    eventually(
        "the host to keep its credential",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(&path)
                .ok()
                .filter(|t| !t.is_empty())
        },
    )
}

/// A host's credential speaks for that host alone: it reaches the buckets of the pods
/// it runs and nothing else (not another namespace's, not those of pods on another
/// host), heartbeats only under its own name, and the join token reaches no bucket at
/// all. A host restarted keeps its credential; registering a live host's name with the
/// join token is refused.
#[test]
fn a_host_credential_reaches_only_what_its_host_runs() {
    use dabba_spec::api::KvRead;

    let mut c = crate::cluster::Cluster::start(3, 2);
    c.deploy_payment(1);
    let pod = c.pods().pop().expect("the payment pod");
    let on = pod.host.clone().expect("a placed pod");
    let other = if on == "h1" { "h2" } else { "h1" };
    let (own, stolen) = (credential(&c, &on), credential(&c, other));
    let admin = c.api().clone();
    let read = |token: &str, bucket: &str| -> u16 {
        let api = admin.with_token(token);
        let r = KvRead {
            bucket: bucket.into(),
            keys: vec!["k".into()],
        };
        match block_on(api.kv_read(&r)) {
            Ok(_) => 200,
            Err(e) => e.status().unwrap_or_else(|| panic!("{e}")),
        }
    };
    assert_eq!(read(&own, "default/default"), 200, "its own pod's bucket");
    assert_eq!(read(&own, "bank/ledger"), 403, "another namespace's bucket");
    assert_eq!(
        read(&own, "default/ledger"),
        403,
        "a bucket no pod of it is granted"
    );
    assert_eq!(
        read(&stolen, "default/default"),
        403,
        "a pod on another host"
    );
    assert_eq!(read(&c.join, "default/default"), 403, "the join token");
    assert_eq!(read(&c.admin, "bank/ledger"), 200, "an admin");
    // The pod's writes went through (it serves payments).
    let heartbeat = |token: &str, host: &str| {
        let api = c.api().with_token(token);
        block_on(api.heartbeat(host, &Default::default()))
            .err()
            .and_then(|e| e.status())
    };
    assert_eq!(heartbeat(&stolen, other), None);
    assert_eq!(
        heartbeat(&stolen, &on),
        Some(403),
        "heartbeat as another host"
    );

    // The join token cannot register a live host's name (and so take its credential).
    let info = block_on(c.api().hosts())
        .unwrap()
        .into_iter()
        .find(|h| h.info.name == on)
        .unwrap()
        .info;
    let taken = block_on(c.api().with_token(&c.join).register_host(&info));
    assert_eq!(
        taken.err().and_then(|e| e.status()),
        Some(409),
        "registering {on} again with the join token"
    );
    assert_eq!(read(&own, "default/default"), 200, "still its credential");
    // Nor can a host's credential register another host.
    let posing = block_on(c.api().with_token(&stolen).register_host(&info));
    assert_eq!(
        posing.err().and_then(|e| e.status()),
        Some(403),
        "{other} registering as {on}"
    );

    // Restarted, the host comes back with the credential it kept.
    let index: usize = on.trim_start_matches('h').parse::<usize>().unwrap() - 1;
    c.hosts[index].kill();
    c.hosts[index].restart().unwrap();
    eventually(
        "the host to be Ready again",
        Duration::from_secs(60),
        || {
            c.host_is(&on, dabba_spec::resources::HostState::Ready)
                .then_some(())
        },
    );
    assert_eq!(credential(&c, &on), own);
    assert_eq!(read(&own, "default/default"), 200);
}

/// Every change and every refusal is in the audit log once — with who, what, from where
/// and the request id the client was answered — whichever controller it reached, and the
/// log outlives the leader: after a failover `dabba audit` verifies the chain and shows
/// them.
#[test]
fn changes_and_refusals_are_audited_once_and_outlive_the_leader() {
    use dabba_spec::audit::AuditEntry;

    let mut c = crate::cluster::Cluster::start(3, 1);
    c.deploy_payment(1);
    let token = |role: Role, label: &str| {
        let req = TokenRequest {
            role,
            namespace: None,
            label: label.into(),
            ttl_ms: None,
            bind: None,
        };
        block_on(c.api().create_token(&req)).unwrap().token
    };
    let deployer = format!("Bearer {}", token(Role::Deployer, "ci-deployer"));
    let viewer = format!("Bearer {}", token(Role::Viewer, "auditor"));
    let leader = c.leader().expect("a leader");
    let follower = (0..3).find(|i| *i != leader).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let scale = |node: usize, auth: &str, replicas: u32| {
        let body = format!(r#"{{"replicas":{replicas}}}"#);
        try_request(
            c.controller_addrs[node],
            "POST",
            "/v1/apps/default/payment/scale",
            &[
                ("authorization", auth),
                ("content-type", "application/json"),
            ],
            body.as_bytes(),
        )
        .unwrap()
    };
    let scales = |c: &crate::cluster::Cluster| -> Option<Vec<AuditEntry>> {
        let out = c.cli(&["audit", "--verb", "scale", "-o", "json"]);
        assert!(out.status.success(), "{}", crate::support::stderr(&out));
        serde_json::from_slice(&out.stdout).ok()
    };
    // Refusals on a follower and on the leader: committed within 200 ms.
    let refused = scale(follower, &viewer, 5);
    assert_eq!(refused.status, 403, "{}", refused.text());
    let unknown = scale(leader, "Bearer not-a-token", 7);
    assert_eq!(unknown.status, 401, "{}", unknown.text());
    eventually(
        "the refusals in the audit log",
        Duration::from_secs(30),
        || scales(&c).filter(|e| e.len() == 2),
    );
    // A change through a follower (forwarded: recorded once, by the leader, with the
    // follower's view of the client), and the leader killed the moment it answered: a
    // change's entry is committed before the change is answered.
    let changed = scale(follower, &deployer, 2);
    c.kill_controller(leader);
    assert_eq!(changed.status, 200, "{}", changed.text());
    let ids: Vec<String> = [&changed, &refused, &unknown]
        .iter()
        .map(|r| {
            r.header("x-dabba-request-id")
                .expect("a request id")
                .to_string()
        })
        .collect();
    eventually("a new leader", Duration::from_secs(30), || {
        c.leader().filter(|l| *l != leader)
    });
    let entries = scales(&c).expect("the audit log from the new leader");
    assert_eq!(entries.len(), 3, "each request once: {entries:#?}");
    let by_id = |id: &str| {
        entries
            .iter()
            .find(|e| e.request_id == id)
            .unwrap_or_else(|| panic!("no entry for request {id}: {entries:#?}"))
    };
    let e = by_id(&ids[0]);
    assert_eq!(
        (e.user.as_str(), e.status, e.path.as_str()),
        ("ci-deployer", 200, "/v1/apps/default/payment/scale")
    );
    assert_eq!(e.namespace.as_deref(), Some("default"));
    assert_eq!(e.controller, leader as u64 + 1, "recorded by the leader");
    assert!(e.source.starts_with("127.0.0.1:"), "{e:#?}");
    let e = by_id(&ids[1]);
    assert_eq!((e.user.as_str(), e.status), ("auditor", 403));
    assert_eq!(
        e.controller,
        follower as u64 + 1,
        "recorded where it was refused"
    );
    let e = by_id(&ids[2]);
    assert_eq!((e.user.as_str(), e.status), ("anonymous", 401));
    // The admin's own apply is there too, and the table form verifies the chain.
    let out = c.cli(&["audit", "--user", "admin"]);
    assert!(out.status.success(), "{}", crate::support::stderr(&out));
    let text = crate::support::stdout(&out);
    assert!(
        text.contains("apply") && text.contains("/v1/apps/default/payment"),
        "{text}"
    );
}

/// Tokens expire and are revoked: a token created with `--ttl` works until then and gets
/// 401 after; a revoked one gets 401 at once on every controller; `dabba token list`
/// shows ids, labels and expiries but no secret; the last admin token that does not
/// expire cannot be revoked.
#[test]
fn tokens_expire_and_are_revoked_on_every_controller() {
    use dabba_spec::api::TokenView;

    let c = crate::cluster::Cluster::start(3, 0);
    let created = |args: &[&str]| -> String {
        let mut all = vec!["token", "create"];
        all.extend_from_slice(args);
        let out = c.cli(&all);
        assert!(out.status.success(), "{}", crate::support::stderr(&out));
        crate::support::stdout(&out).trim().to_string()
    };
    let short = created(&["--role", "viewer", "--label", "short-lived", "--ttl", "3s"]);
    let revoked = created(&["--role", "deployer", "--label", "leaked"]);
    let status = |node: usize, token: &str| -> (u16, String) {
        let auth = format!("Bearer {token}");
        let r = try_request(
            c.controller_addrs[node],
            "GET",
            "/v1/apps",
            &[("authorization", auth.as_str())],
            b"",
        )
        .unwrap();
        (r.status, r.text())
    };
    std::thread::sleep(Duration::from_secs(1));
    for node in 0..3 {
        assert_eq!(status(node, &short).0, 200, "controller {node}");
        assert_eq!(status(node, &revoked).0, 200, "controller {node}");
    }

    let out = c.cli(&["token", "list", "-o", "json"]);
    assert!(out.status.success(), "{}", crate::support::stderr(&out));
    let text = crate::support::stdout(&out);
    assert!(
        !text.contains(&short) && !text.contains(&revoked),
        "no secret listed"
    );
    let tokens: Vec<TokenView> = serde_json::from_str(&text).unwrap();
    let leaked = tokens
        .iter()
        .find(|t| t.grant.label == "leaked")
        .expect("the token is listed");
    assert!(
        tokens
            .iter()
            .find(|t| t.grant.label == "short-lived")
            .is_some_and(|t| t.grant.expires.is_some())
    );
    let out = c.cli(&["token", "revoke", &leaked.id]);
    assert!(out.status.success(), "{}", crate::support::stderr(&out));
    eventually(
        "the revocation on every controller",
        Duration::from_secs(10),
        || (0..3).all(|n| status(n, &revoked).0 == 401).then_some(()),
    );

    eventually(
        "the short-lived token to expire",
        Duration::from_secs(10),
        || (0..3).all(|n| status(n, &short).0 == 401).then_some(()),
    );
    let (_, why) = status(0, &short);
    assert!(
        why.contains("short-lived") && why.contains("expired"),
        "{why}"
    );

    // The admin token the cluster began with is its last lasting one.
    let admin_id = tokens
        .iter()
        .find(|t| t.grant.role == Role::Admin && t.grant.expires.is_none())
        .map(|t| t.id.clone())
        .unwrap();
    let out = c.cli(&["token", "revoke", &admin_id]);
    assert!(!out.status.success());
    assert!(
        crate::support::stderr(&out).contains("last admin token"),
        "{}",
        crate::support::stderr(&out)
    );
    assert_eq!(status(0, &c.admin).0, 200);
}

/// A role of the cluster's own, given to a token: it may do exactly what the role says,
/// in the namespace it was bound in — the requests themselves and `dabba auth can-i`
/// agree — until a cluster-wide binding gives it more, and a revoked token leaves its
/// bindings.
#[test]
fn a_token_bound_to_a_custom_role_may_do_exactly_what_the_role_says() {
    let up = crate::platform::Up::start(false);
    let hello = up.dir.path().join("hello.toml");
    std::fs::write(
        &hello,
        format!(
            "[app]\nname = \"hello\"\nnamespace = \"shop\"\ncomponent = \"{}\"\nroute = \"/hello\"\n",
            crate::support::guest("hello").display()
        ),
    )
    .unwrap();
    let ok = |out: std::process::Output| {
        assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
        stdout(&out)
    };
    ok(up.cli(&["apply", "-f", hello.to_str().unwrap()]));
    ok(up.cli(&[
        "create",
        "role",
        "scaler",
        "--verb",
        "get,list,scale",
        "--resource",
        "apps",
        "-n",
        "shop",
    ]));
    let out = up.cli(&[
        "create",
        "role",
        "bad",
        "--verb",
        "read",
        "--resource",
        "apps",
        "-n",
        "shop",
    ]);
    assert!(
        !out.status.success() && stderr(&out).contains("no verb `read`"),
        "{}",
        stderr(&out)
    );
    let token = ok(up.cli(&[
        "token",
        "create",
        "--role",
        "scaler",
        "--for-namespace",
        "shop",
        "--label",
        "scaler",
    ]))
    .trim()
    .to_string();
    let out = up.cli(&["token", "create", "--role", "nope", "--label", "x"]);
    assert!(!out.status.success(), "a role that does not exist");
    let as_scaler = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--token", token.as_str()]);
        up.cli(&all)
    };
    // The requests.
    ok(as_scaler(&["get", "apps", "-n", "shop"]));
    ok(as_scaler(&[
        "scale",
        "app",
        "hello",
        "--replicas",
        "2",
        "-n",
        "shop",
    ]));
    for refused in [
        vec!["delete", "app", "hello", "-n", "shop"],
        vec!["get", "pods", "-n", "shop"],
        vec!["get", "apps", "-n", "bank"],
        vec!["get", "secrets", "-n", "shop"],
        vec!["token", "list"],
    ] {
        let out = as_scaler(&refused);
        assert!(!out.status.success(), "{refused:?}: {}", stdout(&out));
        assert!(
            stderr(&out).contains("403") || stderr(&out).contains("may not"),
            "{refused:?}: {}",
            stderr(&out)
        );
    }
    // can-i says the same, with the binding that decides.
    let can = |verb: &str, resource: &str, ns: &str| {
        let out = as_scaler(&["auth", "can-i", verb, resource, "-n", ns]);
        (out.status.code(), stdout(&out))
    };
    let (code, text) = can("scale", "apps", "shop");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.starts_with("yes") && text.contains("role scaler"),
        "{text}"
    );
    assert_eq!(can("delete", "apps", "shop").0, Some(1));
    assert_eq!(can("scale", "apps", "bank").0, Some(1));
    assert_eq!(can("list", "pods", "shop").0, Some(1));

    // A cluster-wide binding of the built-in viewer role: pods everywhere, read only.
    let tokens: Vec<dabba_spec::api::TokenView> =
        json_out(&up.cli(&["token", "list", "-o", "json"]));
    let id = tokens
        .iter()
        .find(|t| t.grant.label == "scaler")
        .map(|t| t.id.clone())
        .expect("the scaler token");
    ok(up.cli(&[
        "create",
        "rolebinding",
        "ops",
        "--role",
        "viewer",
        "--token-id",
        &id,
        "--cluster-wide",
    ]));
    ok(as_scaler(&["get", "pods", "-n", "bank"]));
    assert_eq!(can("list", "pods", "bank").0, Some(0));
    assert_eq!(can("delete", "pods", "bank").0, Some(1));
    // Revoked: it works no more, and no binding names it.
    ok(up.cli(&["token", "revoke", &id]));
    assert!(!as_scaler(&["get", "apps", "-n", "shop"]).status.success());
    let bindings: Vec<dabba_spec::rbac::RoleBinding> =
        json_out(&up.cli(&["get", "rolebindings", "-o", "json"]));
    assert!(
        bindings.iter().all(|b| !b.tokens.contains(&id)),
        "{bindings:?}"
    );
    ok(up.cli(&["delete", "role", "scaler", "-n", "shop"]));
}

/// With a retention set, entries older than it go as new ones come, and what is kept
/// still verifies (`dabba audit` checks the chain before it shows anything).
#[test]
fn audit_entries_older_than_the_retention_go() {
    let up = crate::platform::Up::start(false);
    let out = up.cli(&["audit", "--retention", "0s"]);
    assert!(!out.status.success(), "a zero retention is refused");
    let out = up.cli(&["audit", "--retention", "3s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let token = |label: &str| {
        let out = up.cli(&["token", "create", "--role", "viewer", "--label", label]);
        assert!(out.status.success(), "{}", stderr(&out));
    };
    token("early");
    let entries =
        || -> Vec<dabba_spec::audit::AuditEntry> { json_out(&up.cli(&["audit", "-o", "json"])) };
    assert!(
        entries().iter().any(|e| e.verb == "tokens"),
        "{:?}",
        entries()
    );
    std::thread::sleep(Duration::from_millis(3500));
    token("late");
    let kept = entries();
    let newest = kept.iter().map(|e| e.at).max().expect("entries");
    assert!(kept.iter().all(|e| e.at + 3000 >= newest), "{kept:?}");
    assert_eq!(
        kept.iter().filter(|e| e.verb == "tokens").count(),
        1,
        "{kept:?}"
    );
    let out = up.cli(&["audit", "--retention", "none"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
