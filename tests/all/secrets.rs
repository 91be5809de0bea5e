//! Secrets end to end on `dabba up`: set through the CLI (a value from standard input),
//! read by the app that lists them through `wasi:config`, changed without a rollout,
//! rotated; never shown by `get`/`describe`/`-o json`, the audit log or the logs, and
//! not on disk in the clear.

use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

use dabba_spec::secret::SecretView;
use serde_json::Value;

use crate::platform::Up;
use crate::support::{dabba, eventually, guest, json_out, stderr, stdout, try_request};

/// Values no one should see anywhere but in the app's answer.
const FIRST: &str = "sk_live_first_4c0ffee";
const SECOND: &str = "sk_live_second_8badf00d";

/// `dabba secret set ARGS...` with `stdin` on its standard input.
fn set_from_stdin(up: &Up, args: &[&str], stdin: &str) -> std::process::Output {
    let config = up.config();
    let mut child = dabba()
        .args(["secret", "set"])
        .args(args)
        .args(["--config", config.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Writes `gateway.toml` in `dir`: the hostile guest (which answers
/// `/config?key=K`) on `/`, with `mode = "live"` in `[config]` and config key
/// `gateway_key` from `secret` (`name/key`).
fn gateway_manifest(dir: &std::path::Path, secret: &str) -> std::path::PathBuf {
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            "[app]\nname = \"gateway\"\ncomponent = \"{}\"\nroute = \"/\"\n\n\
             [config]\nmode = \"live\"\n\n[secrets]\ngateway_key = \"{secret}\"\n",
            guest("hostile").display()
        ),
    )
    .unwrap();
    path
}

/// Every file under `dir`, with its bytes (to look for a value in the clear).
fn files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, bytes));
        }
    }
    out
}

/// Whether `bytes` hold `value` as it is or hex-encoded (as the state writes sealed
/// bytes).
fn holds(bytes: &[u8], value: &str) -> bool {
    [value.to_string(), hex::encode(value)]
        .iter()
        .any(|needle| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
}

/// The whole life of a secret, as an operator of a payment API lives it: listed by
/// an app before it exists (refused, naming the key), set from standard input, read by
/// the guest, shown nowhere else, changed in place (the pods pick the new value up
/// without a new revision), protected from deletion while listed, rotated to a new
/// data key, and never written to disk in the clear.
#[test]
fn a_secret_reaches_only_the_app_that_lists_it_and_is_shown_nowhere_else() {
    let up = Up::start_with(false, &["--audit-level", "request"]);
    let manifest = gateway_manifest(up.dir.path(), "payment-keys/gateway");
    let apply = || up.cli(&["apply", "-f", manifest.to_str().unwrap(), "--wait"]);

    // Listed before it exists: refused, saying what to do.
    let out = apply();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("secrets.gateway_key") && err.contains("dabba secret set"),
        "{err}"
    );

    // Set from standard input (not the shell's history), then the app applies.
    let out = set_from_stdin(&up, &["payment-keys", "gateway=-"], &format!("{FIRST}\n"));
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("version 1"), "{}", stdout(&out));
    let out = up.cli(&["secret", "set", "payment-keys", "webhook=whsec_unused"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = apply();
    assert!(out.status.success(), "{}", stderr(&out));

    let read = |key: &str| {
        let r = try_request(up.ingress, "GET", &format!("/config?key={key}"), &[], b"")
            .expect("the app answers");
        assert_eq!(r.status, 200, "{}", r.text());
        // The guest answers the value as JSON: a string, or null.
        serde_json::from_str::<Option<String>>(&r.text()).expect("JSON")
    };
    // The value, without the newline `echo` would have added; the plain config beside
    // it; a key of the secret the app does not list is not there.
    assert_eq!(read("gateway_key").as_deref(), Some(FIRST));
    assert_eq!(read("mode").as_deref(), Some("live"));
    assert_eq!(read("webhook"), None);

    // Shown nowhere: listings, describe, JSON, the app's own description.
    let shows: Vec<String> = [
        vec!["get", "secrets"],
        vec!["get", "secrets", "-o", "json"],
        vec!["describe", "secret", "payment-keys"],
        vec!["describe", "secret", "default/payment-keys", "-o", "json"],
        vec!["describe", "app", "gateway", "-o", "json"],
        vec!["get", "revisions", "gateway", "-o", "json"],
    ]
    .iter()
    .map(|args| {
        let out = up.cli(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    })
    .collect();
    for s in &shows {
        assert!(!s.contains(FIRST) && !s.contains("whsec_unused"), "{s}");
    }
    let view: SecretView = json_out(&up.cli(&["describe", "secret", "payment-keys", "-o", "json"]));
    assert_eq!(view.keys, ["gateway", "webhook"]);
    assert_eq!(view.used_by, ["app/gateway"]);
    assert_eq!(view.version, 2);

    // A new value reaches the running pods, with no new revision.
    let revision = |up: &Up| -> u64 {
        let v: Value = json_out(&up.cli(&["describe", "app", "gateway", "-o", "json"]));
        v["app"]["revision"]
            .as_u64()
            .unwrap_or_else(|| panic!("{v}"))
    };
    let before = revision(&up);
    let out = up.cli(&[
        "secret",
        "set",
        "payment-keys",
        &format!("gateway={SECOND}"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    eventually(
        "the pods serve the new value",
        Duration::from_secs(20),
        || (read("gateway_key").as_deref() == Some(SECOND)).then_some(()),
    );
    assert_eq!(revision(&up), before);

    // Listed: neither the secret nor its listed key can go; the other key can.
    let out = up.cli(&["delete", "secret", "payment-keys"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("app/gateway"), "{}", stderr(&out));
    let out = up.cli(&["secret", "unset", "payment-keys", "gateway"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("listed by app/gateway"),
        "{}",
        stderr(&out)
    );
    let out = up.cli(&["secret", "unset", "payment-keys", "webhook"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Rotation: a new data key seals everything; the app still reads its value.
    let out = up.cli(&["secret", "rotate-key"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("1 secret(s) re-sealed"),
        "{}",
        stdout(&out)
    );
    let view: SecretView = json_out(&up.cli(&["describe", "secret", "payment-keys", "-o", "json"]));
    assert!(view.data_key >= 2, "{view:?}");
    let out = up.cli(&["scale", "app", "gateway", "--replicas", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    eventually(
        "a new pod opens the re-sealed value",
        Duration::from_secs(20),
        || {
            let pods: Vec<Value> = json_out(&up.cli(&["get", "pods", "gateway", "-o", "json"]));
            (pods.iter().filter(|p| p["phase"] == "running").count() == 2).then_some(())
        },
    );
    for _ in 0..6 {
        assert_eq!(read("gateway_key").as_deref(), Some(SECOND));
    }

    // The audit log has the changes, by key, without a value.
    let audit = stdout(&up.cli(&["audit", "-o", "json"]));
    assert!(
        audit.contains("/v1/secrets/default/payment-keys"),
        "{audit}"
    );
    assert!(audit.contains("gateway"), "the keys set are kept: {audit}");
    // On disk (the Raft log, snapshots, the workload store) and in the log: no value.
    for (path, bytes) in files(&up.data_dir()) {
        for value in [FIRST, SECOND, "whsec_unused"] {
            assert!(!holds(&bytes, value), "{} holds {value}", path.display());
        }
    }
    let key_file = files(&up.data_dir())
        .into_iter()
        .map(|(path, _)| path)
        .find(|p| p.ends_with("secrets.key"))
        .expect("the controller's secrets.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", key_file.display());
    }
    for value in [FIRST, SECOND, "whsec_unused"] {
        assert!(!audit.contains(value), "the audit log holds {value}");
        assert!(!up.log().contains(value), "the log holds {value}");
    }
}

/// Who may touch secrets: a viewer lists them (never a value) but cannot set them; a
/// deployer of another namespace can do neither there; only an admin rotates.
#[test]
fn secrets_follow_the_roles() {
    let up = Up::start(false);
    let out = up.cli(&[
        "secret",
        "set",
        "payment-keys",
        "gateway=x",
        "-n",
        "payments",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let token = |role: &str, ns: Option<&str>| {
        let mut args = vec!["token", "create", "--role", role, "--label", role];
        if let Some(ns) = ns {
            args.extend(["--for-namespace", ns]);
        }
        let out = up.cli(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).trim().to_string()
    };
    let viewer = token("viewer", None);
    let shop = token("deployer", Some("shop"));
    let payments = token("deployer", Some("payments"));
    let as_ = |t: &str, args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--token", t]);
        up.cli(&all)
    };
    let listed: Vec<SecretView> = json_out(&as_(
        &viewer,
        &["get", "secrets", "-n", "payments", "-o", "json"],
    ));
    assert_eq!(listed.len(), 1);
    let refused = as_(
        &viewer,
        &[
            "secret",
            "set",
            "payment-keys",
            "gateway=y",
            "-n",
            "payments",
        ],
    );
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("403") || stderr(&refused).contains("forbidden"),
        "{}",
        stderr(&refused)
    );
    let refused = as_(
        &shop,
        &[
            "secret",
            "set",
            "payment-keys",
            "gateway=y",
            "-n",
            "payments",
        ],
    );
    assert!(!refused.status.success(), "{}", stdout(&refused));
    let refused = as_(&shop, &["get", "secrets", "-n", "payments"]);
    assert!(!refused.status.success(), "{}", stdout(&refused));
    let ok = as_(
        &payments,
        &[
            "secret",
            "set",
            "payment-keys",
            "gateway=y",
            "-n",
            "payments",
        ],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    let refused = as_(&payments, &["secret", "rotate-key"]);
    assert!(!refused.status.success(), "{}", stdout(&refused));
    let out = up.cli(&["secret", "rotate-key"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A controller that joins gets the cluster's key with the peer token: after the leader
/// that sealed a secret is lost, the new leader opens it for a new app's pods, and
/// rotates the data key.
#[test]
fn a_new_leader_opens_the_secrets_the_old_one_sealed() {
    let mut c = crate::cluster::Cluster::start(3, 1);
    let out = c.cli(&["secret", "set", "keys", &format!("gateway={FIRST}")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let key_files: Vec<Vec<u8>> = files(c.dir.path())
        .into_iter()
        .filter(|(p, _)| p.ends_with("secrets.key"))
        .map(|(_, bytes)| bytes)
        .collect();
    assert_eq!(key_files.len(), 3, "one per controller");
    assert!(
        key_files.iter().all(|k| *k == key_files[0]),
        "one key, everywhere"
    );

    let old = c.leader().expect("a leader");
    c.kill_controller(old);
    eventually("a new leader", Duration::from_secs(30), || {
        c.leader().filter(|l| *l != old)
    });
    let manifest = gateway_manifest(c.dir.path(), "keys/gateway");
    let out = c.cli(&["apply", "-f", manifest.to_str().unwrap(), "--wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = try_request(c.host_addrs[0], "GET", "/config?key=gateway_key", &[], b"").unwrap();
    assert_eq!(r.text(), serde_json::to_string(FIRST).unwrap());
    let out = c.cli(&["secret", "rotate-key"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("1 secret(s) re-sealed"),
        "{}",
        stdout(&out)
    );
}

/// A cron job's `secrets` reach its runs through `wasi:config` like an app's; a job
/// listing a secret that does not exist is refused at apply.
#[test]
fn a_cron_job_run_reads_the_secrets_it_lists() {
    let up = Up::start(false);
    let manifest = up.dir.path().join("cron.toml");
    std::fs::write(
        &manifest,
        format!(
            "[[cron]]\nname = \"settle\"\nschedule = \"0 2 * * *\"\ncomponent = \"{}\"\n\
             args = [\"config\", \"bank_key\", \"region\"]\nconfig = {{ region = \"in\" }}\n\
             secrets = {{ bank_key = \"bank/api\" }}\n",
            guest("job").display()
        ),
    )
    .unwrap();
    let out = up.cli(&["apply", "-f", manifest.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no secret `bank`"),
        "{}",
        stderr(&out)
    );
    // (Not a real credential: this test reads it back from the run's output.)
    let out = up.cli(&["secret", "set", "bank", "api=test-bank-key"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = up.cli(&["apply", "-f", manifest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = up.cli(&["create", "job", "--from", "cronjob/settle"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run = eventually("the run to end", Duration::from_secs(60), || {
        let runs: Vec<dabba_spec::cronjob::JobRun> =
            json_out(&up.cli(&["get", "jobs", "-o", "json"]));
        runs.into_iter().find(|r| {
            use dabba_spec::cronjob::RunPhase::{Failed, Succeeded};
            matches!(r.phase, Succeeded | Failed)
        })
    });
    assert_eq!(run.exit_code, Some(0), "{run:?}");
    assert!(
        run.output.contains("bank_key=test-bank-key"),
        "{}",
        run.output
    );
    assert!(run.output.contains("region=in"), "{}", run.output);
}

/// The limits of a secret hold after merging with what it has: at most 256 KiB in
/// all (each value at most 64 KiB), and a secret is never left with no key; each
/// refusal says which limit, and changes nothing.
#[test]
fn a_secret_stays_within_its_limits_after_every_change() {
    let up = Up::start(false);
    let dir = up.dir.path();
    let big = "x".repeat(60 * 1024);
    for k in 0..4 {
        let file = dir.join(format!("v{k}"));
        std::fs::write(&file, &big).unwrap();
        let arg = format!("k{k}={}", file.display());
        let out = up.cli(&["secret", "set", "bulk", "--from-file", &arg]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // A fifth 60 KiB value takes it past 256 KiB in all: refused, nothing changed.
    let file = dir.join("v4");
    std::fs::write(&file, &big).unwrap();
    let out = up.cli(&[
        "secret",
        "set",
        "bulk",
        "--from-file",
        &format!("k4={}", file.display()),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("at most 262144"), "{}", stderr(&out));
    // One value past 64 KiB: refused before it is sent on.
    std::fs::write(&file, "x".repeat(64 * 1024 + 1)).unwrap();
    let out = up.cli(&[
        "secret",
        "set",
        "other",
        "--from-file",
        &format!("k={}", file.display()),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("at most 65536"), "{}", stderr(&out));
    // Removing every key would leave nothing: refused, pointing at delete.
    let out = up.cli(&["secret", "unset", "bulk", "k0", "k1", "k2", "k3"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("delete it instead"),
        "{}",
        stderr(&out)
    );
    let view: SecretView = json_out(&up.cli(&["describe", "secret", "bulk", "-o", "json"]));
    assert_eq!((view.keys.len(), view.version), (4, 4), "{view:?}");
}
