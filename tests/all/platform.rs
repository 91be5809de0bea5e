//! The embedded default, `dabba up`: the samples deployed with `--demo`, state kept
//! across restarts, manifests rejected with clear errors, and the API's authorization.

use std::io::Write as _;
use std::time::Duration;

use dabba_spec::Digest;
use dabba_spec::api::AppSummary;
use dabba_testkit::UpOptions;
use serde_json::Value;

use crate::support::{
    apply_manifest, block_on, dabba_bin, eventually, guest, json_out, run_dabba, stderr, stdout,
    try_request, workspace,
};

/// A test's `dabba up`: the testkit's, in a temporary directory, run from the
/// workspace (as a user in a checkout runs it: `--demo` finds the sample manifests).
pub struct Up {
    kit: dabba_testkit::Up,
    pub dir: tempfile::TempDir,
}

impl std::ops::Deref for Up {
    type Target = dabba_testkit::Up;

    fn deref(&self) -> &Self::Target {
        &self.kit
    }
}

impl Up {
    pub fn start(demo: bool) -> Up {
        Up::start_with(demo, &[])
    }

    /// `dabba up` with extra flags.
    pub fn start_with(demo: bool, extra: &[&str]) -> Up {
        guest("payment");
        let dir = tempfile::tempdir().unwrap();
        let kit = block_on(dabba_testkit::Up::start(UpOptions {
            dabba: dabba_bin().to_path_buf(),
            dir: dir.path().to_path_buf(),
            demo,
            cwd: Some(workspace().to_path_buf()),
            flags: extra.iter().map(|a| a.to_string()).collect(),
            patience: Duration::from_secs(90),
        }))
        .unwrap_or_else(|e| panic!("starting dabba up: {e:#}"));
        Up { kit, dir }
    }

    /// Stops it and starts it again on the same state.
    pub fn restart(&mut self) {
        block_on(self.kit.restart()).unwrap_or_else(|e| panic!("restarting dabba up: {e:#}"));
    }

    /// `dabba ARGS...` using the CLI config `dabba up` wrote.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let config = self.config();
        let mut all = args.to_vec();
        all.extend(["--config", config.to_str().unwrap()]);
        run_dabba(&all, Duration::from_secs(60))
    }

    /// The cluster's read key, which hosts show each other (on a proxied request, for
    /// one), as the host's assignments carry it.
    pub fn read_key(&self) -> String {
        let auth = format!("Bearer {}", self.admin);
        let view = try_request(
            self.api_addr,
            "GET",
            "/v1/hosts/local/assignments?wait_ms=0",
            &[("authorization", auth.as_str())],
            b"",
        )
        .expect("the host's assignments")
        .json();
        view["read_key"].as_str().expect("a read key").to_string()
    }

    /// `dabba get apps -o json`.
    pub fn apps(&self) -> Vec<AppSummary> {
        json_out(&self.cli(&["get", "apps", "-o", "json"]))
    }

    /// The apps as they were asked for: what a refused change must leave as it was.
    /// The observed parts (ready pods, the autoscaler's decision) move on their own.
    pub fn desired_apps(&self) -> Vec<AppSummary> {
        let mut apps = self.apps();
        for app in &mut apps {
            app.ready = 0;
            app.autoscaler = None;
        }
        apps
    }

    /// One raw API call (to test what goes over the wire): the status and the JSON.
    fn call(&self, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> (u16, Value) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("authorization", a));
        }
        let r = try_request(self.api_addr, method, path, &headers, body).expect("an API answer");
        let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        (r.status, v)
    }
}

const PAYMENT: &[u8] =
    br#"{"merchant_id":"m_9","payer_vpa":"bob@upi","amount":5000,"currency":"INR"}"#;

#[test]
fn up_with_the_demo_serves_the_samples_and_keeps_everything_across_a_restart() {
    let mut up = Up::start(true);
    let r = try_request(
        up.ingress,
        "POST",
        "/payments",
        &[
            ("idempotency-key", "demo-1"),
            ("content-type", "application/json"),
        ],
        PAYMENT,
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let s = try_request(up.ingress, "GET", "/search?q=phone", &[], b"").unwrap();
    assert_eq!(s.status, 200, "{}", s.text());
    assert!(s.json()["total"].as_u64().unwrap() > 0);
    // One /metrics for the whole process: the host's per-app series and Raft's.
    let metrics = try_request(up.api_addr, "GET", "/metrics", &[], b"")
        .unwrap()
        .text();
    for series in [
        r#"dabba_requests_total{app="default/payment",code="2xx",revision="1"} 1"#,
        r#"dabba_pods{phase="running"} 3"#,
        r#"dabba_raft_state{field="is_leader"} 1"#,
        "dabba_api_requests_total",
    ] {
        assert!(metrics.contains(series), "missing {series} in\n{metrics}");
    }
    let none = try_request(up.ingress, "GET", "/nothing-here", &[], b"").unwrap();
    assert_eq!(none.status, 404);
    assert_eq!(none.json()["error"]["code"], "no_route");

    let apps = up.apps();
    let names: Vec<&str> = apps.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["payment", "search"]);
    // Query values and path segments are percent-decoded once: `def%61ult` is
    // `default` (and `%2F` would be a `/` inside one value, not a path separator).
    let admin = up.admin.clone();
    let (status, listed) = up.call("GET", "/v1/apps?namespace=def%61ult", Some(&admin), b"");
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
    let (status, one) = up.call("GET", "/v1/apps/def%61ult/p%61yment", Some(&admin), b"");
    assert_eq!(
        (status, &one["app"]["spec"]["name"]),
        (200, &Value::from("payment"))
    );
    let (status, none) = up.call("GET", "/v1/apps?namespace=default%2Fx", Some(&admin), b"");
    assert_eq!((status, none), (200, serde_json::json!([])));
    let revisions_before = stdout(&up.cli(&["get", "revisions", "-o", "json"]));

    up.restart();
    eventually(
        "the payment to be served again",
        Duration::from_secs(30),
        || {
            let r = try_request(up.ingress, "GET", &format!("/payments/{id}"), &[], b"").ok()?;
            (r.status == 200).then_some(())
        },
    );
    assert_eq!(up.apps().len(), 2);
    assert_eq!(
        stdout(&up.cli(&["get", "revisions", "-o", "json"])),
        revisions_before
    );
    let describe = up.cli(&["describe", "app", "payment"]);
    assert!(
        stdout(&describe).contains("Running"),
        "{}",
        stdout(&describe)
    );

    // An app with no pod anywhere and no [scale]: the ingress says so at once and when
    // to retry, and a request that already hopped from another host is not proxied
    // again. (An autoscaled app would be activated instead: see tests/all/autoscale.rs.)
    apply_manifest(
        &|args| up.cli(args),
        &up.dir.path().join("fixed.toml"),
        &format!(
            "[app]\nname = \"fixed\"\ncomponent = \"{}\"\nroute = \"/fixed\"\nreplicas = 0\n",
            guest("hello").display()
        ),
    );
    let key = up.read_key();
    for hop in [false, true] {
        let hopped = [("x-dabba-hop", "1"), ("x-dabba-read-key", key.as_str())];
        let headers: &[(&str, &str)] = if hop { &hopped } else { &[] };
        let r = eventually("the fixed app's route", Duration::from_secs(30), || {
            let r = try_request(up.ingress, "GET", "/fixed", headers, b"").ok()?;
            (r.status == 503).then_some(r)
        });
        assert_eq!(r.json()["error"]["code"], "no_ready_pod");
        assert_eq!(r.header("retry-after"), Some("1"));
    }
    // The demo's search is autoscaled: its route shows in `get apps` with the mode.
    let table = stdout(&up.cli(&["get", "apps"]));
    assert!(table.contains("AUTOSCALER"), "{table}");
}

#[test]
fn raft_timing_flags_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    // `dabba controller` with `flags`, which must refuse to start: what it said.
    let refused = |flags: &[&str]| {
        let mut args = vec![
            "controller",
            "--id",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ];
        args.extend_from_slice(flags);
        let out = run_dabba(&args, Duration::from_secs(30));
        assert!(!out.status.success(), "{flags:?} was accepted");
        stderr(&out)
    };
    let err = refused(&[
        "--heartbeat-interval",
        "100ms",
        "--election-timeout",
        "50ms",
    ]);
    assert!(
        err.contains(
            "--election-timeout (50 ms) must be longer than --heartbeat-interval (100 ms)"
        ),
        "{err}"
    );
    // A zero restart back-off would replace a failed pod in a tight loop.
    let err = refused(&["--restart-backoff", "0s"]);
    assert!(
        err.contains("--restart-backoff must be longer than 0s"),
        "{err}"
    );
}

#[test]
fn invalid_manifests_get_clear_errors_and_change_nothing() {
    let up = Up::start(false);
    let dir = up.dir.path();
    let payment = guest("payment");
    let good = format!(
        "[app]\nname = \"pay\"\ncomponent = \"{}\"\nroute = \"/pay\"\n",
        payment.display()
    );
    std::fs::write(dir.join("good.toml"), &good).unwrap();
    let out = up.cli(&["apply", "-f", dir.join("good.toml").to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = up.desired_apps();

    let core = wat::parse_str("(module)").unwrap();
    std::fs::write(dir.join("core.wasm"), core).unwrap();
    let cases: Vec<(&str, String, &[&str])> = vec![
        (
            "bad-toml.toml",
            "[app\nname = \"x\"\n".into(),
            &["bad-toml.toml:1"],
        ),
        (
            "unknown.toml",
            format!("{good}colour = \"blue\"\n"),
            &["unknown.toml:5", "colour"],
        ),
        (
            "size.toml",
            format!("{good}\n[limits]\nmemory = \"lots\"\n"),
            &["size.toml:7", "limits.memory"],
        ),
        (
            "conflict.toml",
            good.replace("name = \"pay\"", "name = \"other\""),
            &["conflict.toml", "route", "/pay"],
        ),
        (
            "missing.toml",
            "[app]\nname = \"m\"\ncomponent = \"nope.wasm\"\nroute = \"/m\"\n".into(),
            &["missing.toml", "app.component", "nope.wasm"],
        ),
        (
            "scale.toml",
            format!("{good}\n[scale]\nmin = 5\nmax = 2\n"),
            &["scale.toml:7", "scale.min", "more than max"],
        ),
        (
            "core.toml",
            "[app]\nname = \"c\"\ncomponent = \"core.wasm\"\nroute = \"/c\"\n".into(),
            &["core.toml", "app.component", "core WebAssembly module"],
        ),
    ];
    for (file, text, expect) in cases {
        std::fs::write(dir.join(file), text).unwrap();
        let out = up.cli(&["apply", "-f", dir.join(file).to_str().unwrap()]);
        let err = stderr(&out);
        assert!(!out.status.success(), "{file} was accepted");
        for e in expect {
            assert!(
                err.contains(e),
                "{file}: the error should mention `{e}`:\n{err}"
            );
        }
        assert_eq!(up.desired_apps(), before, "{file} changed something");
    }

    // The API checks a spec's [scale] as apply does.
    let auth = format!("Bearer {}", up.admin.clone());
    let (status, detail) = up.call("GET", "/v1/apps/default/pay", Some(&up.admin.clone()), b"");
    assert_eq!(status, 200);
    let mut spec = detail["app"]["spec"].clone();
    spec["scale"] =
        serde_json::json!({"min": 0, "max": 3, "target_concurrency": 2, "target_rps": 5});
    let r = try_request(
        up.api_addr,
        "PUT",
        "/v1/apps/default/pay",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        spec.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("scale.target_rps"), "{}", r.text());
    assert_eq!(
        up.desired_apps(),
        before,
        "an invalid scale changed something"
    );

    // The API itself refuses a core module, whoever sends it.
    let core = wat::parse_str("(module)").unwrap();
    let digest = Digest::of(&core);
    let r = try_request(
        up.api_addr,
        "PUT",
        &format!("/v1/blobs/{digest}"),
        &[("authorization", &auth)],
        &core,
    )
    .unwrap();
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "not_a_component");

    // A body that does not hash to the digest it is stored under.
    let r = try_request(
        up.api_addr,
        "PUT",
        &format!("/v1/blobs/sha256:{}", "0".repeat(64)),
        &[("authorization", &auth)],
        &std::fs::read(&payment).unwrap(),
    )
    .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "digest_mismatch");

    // And a body larger than the cluster stores: refused on its announced length,
    // before any of it is read (so none of it is sent here).
    let mut s = std::net::TcpStream::connect(up.api_addr).unwrap();
    write!(
        s,
        "PUT /v1/blobs/sha256:{} HTTP/1.1\r\nhost: x\r\nauthorization: {auth}\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        "0".repeat(64),
        (256u64 << 20) + 1
    )
    .unwrap();
    let mut answer = String::new();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    std::io::Read::read_to_string(&mut s, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("256 MiB"), "{answer}");
    assert_eq!(up.desired_apps(), before);
}

/// A host's read that does not ask for the binary answer gets JSON (curl, earlier
/// hosts), values in base64. (Who may call which endpoint: `auth.rs`.)
#[test]
fn a_key_value_read_without_the_binary_accept_is_answered_in_json() {
    let up = Up::start(false);
    // An admin reaches every bucket (a host only those of what it runs).
    let admin = up.admin.clone();
    let (status, v) = up.call(
        "POST",
        "/v1/kv/write",
        Some(&admin),
        br#"{"bucket":"b","write":{"put":[["k","aGk="]]}}"#,
    );
    assert_eq!(status, 200, "{v}");
    let (status, v) = up.call(
        "POST",
        "/v1/kv/read",
        Some(&admin),
        br#"{"bucket":"b","keys":["k","absent"]}"#,
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v, serde_json::json!({"values": ["aGk=", null]}));
}

/// A pod that can never start (a job component deployed as an HTTP app) is replaced
/// again and again, each replacement later than the last (the back-off doubles from
/// `--restart-backoff`), counting its restarts, and shown as a crash loop.
#[test]
fn a_pod_that_cannot_start_is_replaced_after_a_doubling_back_off() {
    use dabba_spec::resources::{Pod, PodPhase, RestartBackoff};
    let up = Up::start_with(false, &["--restart-backoff", "300ms"]);
    let manifest = up.dir.path().join("broken.toml");
    apply_manifest(
        &|a: &[&str]| up.cli(a),
        &manifest,
        &format!(
            "[app]\nname = \"broken\"\ncomponent = {:?}\nroute = \"/broken\"\nreplicas = 1\n",
            guest("job").display().to_string()
        ),
    );
    // Every pod seen, by name: the last state seen of each.
    let mut seen: std::collections::BTreeMap<String, Pod> = Default::default();
    let mut table_showed_the_loop = false;
    eventually(
        "a pod that has been restarted four times",
        Duration::from_secs(60),
        || {
            let pods: Vec<Pod> = json_out(&up.cli(&["get", "pods", "-o", "json"]));
            for p in pods {
                seen.insert(p.name.clone(), p);
            }
            if !table_showed_the_loop && seen.values().any(Pod::crash_looping) {
                let table = stdout(&up.cli(&["get", "pods"]));
                table_showed_the_loop =
                    table.contains("RESTARTS") && table.contains("CrashLoopBackOff");
            }
            seen.values().any(|p| p.restarts >= 4).then_some(())
        },
    );
    assert!(
        table_showed_the_loop,
        "get pods never showed CrashLoopBackOff: {seen:#?}"
    );
    let failed: Vec<&Pod> = seen
        .values()
        .filter(|p| p.phase == PodPhase::Failed)
        .collect();
    assert!(
        failed.iter().all(|p| p
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("incoming-handler"))),
        "each failed for the reason its host gave: {failed:#?}"
    );
    // One pod at a time, each replacing the one before: restarts and creation times
    // rise together, and each came no sooner than its predecessor's back-off.
    let mut pods: Vec<&Pod> = seen.values().collect();
    pods.sort_by_key(|p| p.created_at);
    let backoff = RestartBackoff {
        first: 300,
        max: 9_000,
    };
    for pair in pods.windows(2) {
        let (before, after) = (pair[0], pair[1]);
        assert!(after.restarts > before.restarts, "{pods:#?}");
        assert_eq!(
            after.backoff, after.restarts,
            "no long run resets it: {pods:#?}"
        );
        if after.restarts == before.restarts + 1 {
            let gap = after.created_at - before.created_at;
            let wait = backoff.delay(before.backoff);
            assert!(
                gap >= wait,
                "{} replaced {} after {gap} ms, sooner than its back-off of {wait} ms",
                after.name,
                before.name
            );
        }
    }
    let describe = stdout(&up.cli(&["describe", "app", "broken"]));
    assert!(describe.contains("restarts"), "{describe}");
}

#[test]
fn a_component_nothing_uses_is_deleted_after_its_grace_and_one_in_use_never_is() {
    // The grace must cover upload → apply of one `dabba apply` on a busy machine.
    let up = Up::start_with(false, &["--component-grace", "3s"]);
    let hello = guest("hello");
    let digest = Digest::of(&std::fs::read(&hello).unwrap());
    let file = up
        .dir
        .path()
        .join("state/controller/blobs")
        .join(digest.hex());
    let manifest = up.dir.path().join("hello.toml");
    let text = format!(
        "[app]\nname = \"hello\"\ncomponent = {:?}\nroute = \"/hello\"\nreplicas = 1\n",
        hello.display().to_string()
    );
    apply_manifest(&|a: &[&str]| up.cli(a), &manifest, &text);
    // In use: kept well past the grace.
    std::thread::sleep(Duration::from_secs(5));
    assert!(file.exists(), "a component in use was deleted");
    let status = stdout(&up.cli(&["cluster", "status"]));
    assert!(status.contains("components: 1 "), "{status}");

    let out = up.cli(&["delete", "app", "hello"]);
    assert!(out.status.success(), "{}", stderr(&out));
    eventually(
        "the unused component deleted",
        Duration::from_secs(30),
        || {
            let status = stdout(&up.cli(&["cluster", "status"]));
            (!file.exists() && status.contains("components: 0 ")).then_some(())
        },
    );
    // Applied again, it is uploaded again and serves.
    let out = up.cli(&["apply", "-f", manifest.to_str().unwrap(), "--wait"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("held by a majority"),
        "{}",
        stdout(&out)
    );
    assert!(file.exists());
    let r = try_request(up.ingress, "GET", "/hello", &[], b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}

/// An app's `[rate_limit]` lets a burst and then its rate through, one bucket per
/// value of `per_header`, and answers the rest 429 with `Retry-After` — counted: no
/// more passes than burst + rate × time, and every refusal says when to come back. A
/// bad limit is refused at apply, naming its line and field.
#[test]
fn a_rate_limited_app_answers_429_with_retry_after_beyond_its_limit() {
    let up = Up::start(false);
    let manifest = |limit: &str| {
        format!(
            "[app]\nname = \"limited\"\ncomponent = \"{}\"\nroute = \"/\"\nreplicas = 1\n\n[rate_limit]\n{limit}",
            guest("hostile").display()
        )
    };
    let path = up.dir.path().join("limited.toml");
    std::fs::write(&path, manifest("requests_per_second = 0\n")).unwrap();
    let out = up.cli(&["apply", "-f", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("rate_limit.requests_per_second") && err.contains("limited.toml:8"),
        "{err}"
    );
    std::fs::write(
        &path,
        manifest("requests_per_second = 4\nburst = 6\nper_header = \"x-merchant\"\n"),
    )
    .unwrap();
    let out = up.cli(&["apply", "-f", path.to_str().unwrap(), "--wait"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let send = |merchant: &str| {
        try_request(up.ingress, "GET", "/ok", &[("x-merchant", merchant)], b"").unwrap()
    };
    let started = std::time::Instant::now();
    let (mut passed, mut limited) = (0u32, 0u32);
    for _ in 0..40 {
        let r = send("m1");
        match r.status {
            200 => passed += 1,
            429 => {
                limited += 1;
                let after: u64 = r
                    .header("retry-after")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("no Retry-After: {r:?}"));
                assert!(after >= 1, "{after}");
                assert!(r.text().contains("rate_limited"), "{}", r.text());
            }
            other => panic!("{other}: {}", r.text()),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let most = 6.0 + 4.0 * elapsed;
    assert!(passed >= 6, "the burst passes: {passed}");
    assert!(
        f64::from(passed) <= most + 1.0,
        "{passed} passed in {elapsed:.2} s: at most {most:.1}"
    );
    assert_eq!(passed + limited, 40);
    assert!(limited > 0, "{passed} passed in {elapsed:.2} s");
    // Another merchant has a bucket of its own.
    assert_eq!(send("m2").status, 200);
    // And the first one gets through again once its bucket refilled.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(send("m1").status, 200);
}
