//! Namespace quotas and limit ranges end to end on `dabba up`: set with `dabba apply` of
//! a `[namespace]` manifest, enforced on apply and scale with errors that say which
//! quota and by how much, defaults filled into an app's limits, and shown by
//! `dabba describe namespace`.

use dabba_spec::quota::NamespaceView;
use serde_json::Value;

use crate::platform::Up;
use crate::support::{guest, json_out, stderr, stdout};

#[test]
fn a_namespace_holds_no_more_than_its_quota_and_its_apps_take_its_limits() {
    let up = Up::start(false);
    let dir = up.dir.path();
    let ns = dir.join("shop.toml");
    std::fs::write(
        &ns,
        "[namespace]\nname = \"shop\"\n\n[quota]\napps = 2\npods = 2\n\n\
         [limit_range.default]\nmemory = \"32Mi\"\n\n[limit_range.max]\nmemory = \"64Mi\"\n",
    )
    .unwrap();
    let out = up.cli(&["apply", "-f", ns.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let app = |name: &str, replicas: u32, limits: &str| {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "[app]\nname = \"{name}\"\nnamespace = \"shop\"\ncomponent = \"{}\"\n\
                 route = \"/{name}\"\nreplicas = {replicas}\n\n[limits]\n{limits}\n",
                guest("hello").display()
            ),
        )
        .unwrap();
        up.cli(&["apply", "-f", path.to_str().unwrap()])
    };
    let out = app("cart", 2, "");
    assert!(out.status.success(), "{}", stderr(&out));
    // The namespace's default memory was filled in.
    let cart: Value = json_out(&up.cli(&["describe", "app", "cart", "-n", "shop", "-o", "json"]));
    assert_eq!(cart["app"]["spec"]["limits"]["memory"], "32Mi", "{cart}");

    // Past the quota: refused, saying which and by how much; nothing is created.
    let out = app("search", 1, "");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("quota") && err.contains("pods 2") && err.contains("1 over"),
        "{err}"
    );
    let out = up.cli(&["scale", "app", "cart", "--replicas", "3", "-n", "shop"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("makes it 3"), "{}", stderr(&out));
    // Out of the limit range: refused, naming the limit.
    let out = app("search", 0, "memory = \"128Mi\"");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("limits.memory") && err.contains("over by 64Mi"),
        "{err}"
    );
    // Room freed is room to use.
    let out = up.cli(&["scale", "app", "cart", "--replicas", "1", "-n", "shop"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = app("search", 1, "");
    assert!(out.status.success(), "{}", stderr(&out));

    let view: NamespaceView = json_out(&up.cli(&["describe", "namespace", "shop", "-o", "json"]));
    assert_eq!((view.used.apps, view.used.pods), (2, 2));
    let shown = stdout(&up.cli(&["describe", "namespace", "shop"]));
    assert!(
        shown.contains("pods") && shown.contains("memory"),
        "{shown}"
    );
    // Another namespace is not held to it.
    let other = dir.join("other.toml");
    std::fs::write(
        &other,
        format!(
            "[app]\nname = \"other\"\ncomponent = \"{}\"\nroute = \"/other\"\nreplicas = 3\n",
            guest("hello").display()
        ),
    )
    .unwrap();
    let out = up.cli(&["apply", "-f", other.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
}
