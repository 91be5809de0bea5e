//! Autoscaling end to end, on the embedded default and on a 3-controller cluster: an
//! idle app goes to zero pods; a bounded burst of concurrent requests against it is
//! answered in full (held by the activator while the first pod starts, then spread as
//! the autoscaler adds pods); then the app goes back to zero.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use dabba_spec::api::AppSummary;
use dabba_spec::resources::Pod;
use dabba_spec::scale::AutoscalerMode;

use crate::cluster::Cluster;
use crate::platform::Up;
use crate::support::{apply_manifest, eventually, guest, json_out, stderr, stdout, try_request};

/// An app of the hostile guest whose `/sleep` holds a request without computing, scaled
/// on two in flight per pod, with windows short enough for a test.
fn manifest(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("sleeper.toml");
    std::fs::write(
        &path,
        format!(
            r#"[app]
name = "sleeper"
component = "{}"
route = "/sleep"

[scale]
min = 0
max = 6
target_concurrency = 2
target_utilization = 100
stable_window = "4s"
panic_window = "1s"
scale_to_zero_after = "2s"

[scale.behavior.down]
stabilization_window = "1s"
"#,
            guest("hostile").display()
        ),
    )
    .unwrap();
    path
}

fn sleeper(apps: Vec<AppSummary>) -> Option<AppSummary> {
    apps.into_iter().find(|a| a.name == "sleeper")
}

/// Runs the whole scenario against a platform reachable through `cli` (the CLI with its
/// credentials) and `ingresses`.
fn scale_from_zero_and_back(
    dir: &Path,
    cli: &dyn Fn(&[&str]) -> std::process::Output,
    ingresses: &[(SocketAddr, &str)],
) {
    let apps = || -> Vec<AppSummary> { json_out(&cli(&["get", "apps", "-o", "json"])) };
    let m = manifest(dir);
    let out = cli(&["apply", "-f", m.to_str().unwrap(), "--wait"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));

    // Idle: down to zero after the grace period.
    eventually(
        "the idle app to reach zero",
        Duration::from_secs(60),
        || {
            let a = sleeper(apps())?;
            let mode = a.autoscaler.as_ref().map(|s| s.mode);
            (a.desired == 0 && a.ready == 0 && mode == Some(AutoscalerMode::ScaledToZero))
                .then_some(())
        },
    );
    let table = stdout(&cli(&["get", "apps"]));
    assert!(table.contains("scaled-to-zero"), "{table}");

    // A burst: 16 clients, each sending requests that take 300 ms one after another
    // for 4 s (at most 20 each), across every ingress.
    let started = Instant::now();
    let clients: Vec<_> = (0..16)
        .map(|i| {
            let ingress = ingresses[i % ingresses.len()].0;
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                let began = Instant::now();
                while began.elapsed() < Duration::from_secs(4) && statuses.len() < 20 {
                    let r = try_request(ingress, "GET", "/sleep?ms=300", &[], b"");
                    statuses.push(match r {
                        Ok(r) => (r.status, r.text()),
                        Err(e) => (0, e.to_string()),
                    });
                }
                statuses
            })
        })
        .collect();
    // While the burst runs, see how far the app scales.
    let mut peak = 0;
    while started.elapsed() < Duration::from_secs(5) {
        if let Some(a) = sleeper(apps()) {
            peak = peak.max(a.desired);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let mut answered = 0;
    for c in clients {
        for (status, body) in c.join().unwrap() {
            assert_eq!(status, 200, "a request of the burst failed: {body}");
            answered += 1;
        }
    }
    eprintln!("burst: {answered} requests answered, peak {peak} pods");
    assert!(answered >= 16, "only {answered} requests were made");
    assert!(
        peak >= 3,
        "the burst should scale the app to several pods; peak {peak}"
    );

    // Back to zero once the burst is over.
    eventually("the app to return to zero", Duration::from_secs(60), || {
        let a = sleeper(apps())?;
        (a.desired == 0 && a.ready == 0).then_some(())
    });
    let described = stdout(&cli(&["describe", "app", "sleeper"]));
    assert!(described.contains("Scaling events:"), "{described}");
    assert!(
        described.contains("activated: requests are waiting"),
        "{described}"
    );
    assert!(described.contains("autoscaler, panic"), "{described}");

    // From zero again, one request at the last host's ingress: the first pod starts on
    // the host that holds the request.
    let (ingress, host) = *ingresses.last().unwrap();
    let r = try_request(ingress, "GET", "/sleep?ms=1", &[], b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let pods: Vec<Pod> = json_out(&cli(&["get", "pods", "sleeper", "-o", "json"]));
    assert_eq!(pods.len(), 1, "{pods:?}");
    assert_eq!(pods[0].host.as_deref(), Some(host), "{pods:?}");
}

#[test]
fn an_idle_app_scales_to_zero_and_back_on_the_embedded_default() {
    // As the cluster tests' hosts: a debug build compiling a component for the first
    // time on a busy machine can take longer than the default 10 s a request is held.
    let up = Up::start_with(false, &["--activator-timeout", "60s"]);
    let dir = up.dir.path().to_path_buf();
    scale_from_zero_and_back(&dir, &|args| up.cli(args), &[(up.ingress, "local")]);
}

/// The activator's queue and wait are bounded: an app whose pod can never be placed
/// (no host has the label it selects) holds two requests at most, answers a third at
/// once, and answers the two after the timeout — all with 503 and `Retry-After`.
#[test]
fn held_requests_are_bounded_in_number_and_in_time() {
    let up = Up::start_with(
        false,
        &["--activator-queue", "2", "--activator-timeout", "1500ms"],
    );
    apply_manifest(
        &|args| up.cli(args),
        &up.dir.path().join("stuck.toml"),
        &format!(
            "[app]\nname = \"stuck\"\ncomponent = \"{}\"\nroute = \"/stuck\"\nreplicas = 0\n\n[placement]\nnode_selector = {{ disk = \"nvme\" }}\n\n[scale]\nmin = 0\nmax = 2\n",
            guest("hello").display()
        ),
    );
    // The route reaches the host's table (a request is held, not a 404).
    let ingress = up.ingress;
    eventually("the stuck route", Duration::from_secs(30), || {
        let r = try_request(ingress, "GET", "/stuck", &[], b"").ok()?;
        (r.json()["error"]["code"] == "no_ready_pod").then_some(())
    });
    let held: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                let started = Instant::now();
                let r = try_request(ingress, "GET", "/stuck", &[], b"").unwrap();
                (r, started.elapsed())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    // A request proxied from another host (its hop vouched for by the cluster's read
    // key, as hosts send it) is never held (no bounce, no pile-up).
    let key = up.read_key();
    let started = Instant::now();
    let hopped = try_request(
        ingress,
        "GET",
        "/stuck",
        &[("x-dabba-hop", "1"), ("x-dabba-read-key", key.as_str())],
        b"",
    )
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "not at once"
    );
    assert_eq!(hopped.status, 503, "{}", hopped.text());
    assert!(
        hopped.text().contains("no running pod here"),
        "{}",
        hopped.text()
    );
    let started = Instant::now();
    let third = try_request(ingress, "GET", "/stuck", &[], b"").unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "not at once"
    );
    assert_eq!(third.status, 503, "{}", third.text());
    assert!(third.text().contains("queue is full"), "{}", third.text());
    assert_eq!(third.header("retry-after"), Some("1"));
    for h in held {
        let (r, took) = h.join().unwrap();
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(
            r.text().contains("did not get a running pod in time"),
            "{}",
            r.text()
        );
        assert_eq!(r.header("retry-after"), Some("1"));
        assert!(took >= Duration::from_millis(1400), "held for {took:?}");
    }
    // The activation asked for a pod; it waits for a host with the label.
    let pods = stdout(&up.cli(&["get", "pods", "stuck"]));
    assert!(
        pods.contains("Pending") && pods.contains("disk=nvme"),
        "{pods}"
    );
}

#[test]
fn an_idle_app_scales_to_zero_and_back_on_a_three_controller_cluster() {
    let c = Cluster::start(3, 2);
    let ingresses = [(c.host_addrs[0], "h1"), (c.host_addrs[1], "h2")];
    let dir = c.dir.path().to_path_buf();
    scale_from_zero_and_back(&dir, &|args| c.cli(args), &ingresses);
}
