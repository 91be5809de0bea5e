//! Progressive delivery on a real cluster (three controllers, two hosts) under continuous
//! load from several clients: the search canary from its manifest in the repo, with the
//! leader killed mid-rollout and mid-analysis; header routes and sticky users; a bad
//! revision aborted by its analysis; and the payment API's blue-green release with its
//! Wasm smoke test, switch and undo.
//!
//! Which revision answered is read from every response's `x-dabba-revision`, so splits
//! and "no request reached it" are counted from what clients saw, not from what the
//! cluster says it did.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dabba_spec::api::RolloutView;
use dabba_spec::resources::{PodPhase, ResourceKey};
use dabba_spec::rollout::RolloutPhase;

use dabba_testkit::manifests;

use crate::cluster::Cluster;
use crate::support::{block_on, eventually, guest, stderr, stdout, try_request, workspace};

/// One request a load client made.
#[derive(Debug, Clone)]
struct Sample {
    sent: Instant,
    /// When it was sent, in ms since the Unix epoch (the clock Raft entries carry).
    sent_ms: u64,
    done: Instant,
    /// 0: no answer at all.
    status: u16,
    revision: Option<u64>,
}

/// What each load request is: method, path, headers, body.
type MakeRequest =
    dyn Fn(usize, u64) -> (String, String, Vec<(String, String)>, Vec<u8>) + Send + Sync;

/// Clients sending requests one after another, alternating the hosts' ingresses.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    samples: Arc<Mutex<Vec<Sample>>>,
}

impl Load {
    fn start(addrs: &[SocketAddr], clients: usize, make: Arc<MakeRequest>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
        let threads = (0..clients)
            .map(|client| {
                let (stop, samples, make) = (stop.clone(), samples.clone(), make.clone());
                let addrs = addrs.to_vec();
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let (method, path, headers, body) = make(client, n);
                        let headers: Vec<(&str, &str)> = headers
                            .iter()
                            .map(|(k, v)| (k.as_str(), v.as_str()))
                            .collect();
                        let addr = addrs[(client + n as usize) % addrs.len()];
                        let sent = Instant::now();
                        let sent_ms = epoch_ms();
                        let r = try_request(addr, &method, &path, &headers, &body);
                        let (status, revision) = match &r {
                            Ok(r) => (
                                r.status,
                                r.header("x-dabba-revision").and_then(|v| v.parse().ok()),
                            ),
                            Err(_) => (0, None),
                        };
                        samples.lock().unwrap().push(Sample {
                            sent,
                            sent_ms,
                            done: Instant::now(),
                            status,
                            revision,
                        });
                        n += 1;
                    }
                })
            })
            .collect();
        Load {
            stop,
            threads,
            samples,
        }
    }

    fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }

    fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        self.samples.lock().unwrap().clone()
    }
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn get(path: &'static str) -> Arc<MakeRequest> {
    Arc::new(move |_, _| ("GET".into(), path.into(), Vec::new(), Vec::new()))
}

/// The requests that failed: no answer, or a 5xx.
fn failures(samples: &[Sample]) -> Vec<&Sample> {
    samples
        .iter()
        .filter(|s| s.status == 0 || s.status >= 500)
        .collect()
}

/// A manifest from the repo with its components at their built paths, and `edits`
/// (text replacements, each of which must apply) made for the test's time scale.
fn repo_manifest(c: &Cluster, path: &str, edits: &[(&str, &str)]) -> std::path::PathBuf {
    let mut text = std::fs::read_to_string(workspace().join(path)).unwrap();
    for name in ["payment-smoke", "payment", "search"] {
        text = text.replace(
            &format!("\"../../target/wasm32-wasip2/guest/{name}.wasm\""),
            &format!("{:?}", guest(name).display().to_string()),
        );
    }
    for (from, to) in edits {
        assert!(text.contains(from), "{path} has no `{from}` to edit");
        text = text.replace(from, to);
    }
    let out = c.dir.path().join(path.replace('/', "-"));
    std::fs::write(&out, text).unwrap();
    out
}

fn apply(c: &Cluster, manifest: &std::path::Path, wait: bool) {
    let mut args = vec!["apply", "-f", manifest.to_str().unwrap()];
    if wait {
        args.push("--wait");
    }
    let out = c.cli(&args);
    assert!(
        out.status.success(),
        "apply: {}{}",
        stdout(&out),
        stderr(&out)
    );
}

fn rollout(c: &Cluster, app: &str) -> Option<RolloutView> {
    block_on(c.api().rollout(&ResourceKey::new("default", app))).ok()
}

/// The rollout as it moved: when each (step, weight, phase) was first seen.
#[derive(Default)]
struct Timeline {
    seen: Vec<(Instant, RolloutView)>,
}

impl Timeline {
    fn watch(&mut self, c: &Cluster, app: &str) -> Option<RolloutView> {
        let v = rollout(c, app)?;
        let moved = self.seen.last().is_none_or(|(_, last)| {
            (
                last.status.step,
                last.status.weight,
                last.status.phase,
                last.status.canary,
            ) != (
                v.status.step,
                v.status.weight,
                v.status.phase,
                v.status.canary,
            )
        });
        if moved {
            self.seen.push((Instant::now(), v.clone()));
        }
        Some(v)
    }

    /// When step `step` was entered and left (by the next change of step).
    fn step_window(&self, step: u32) -> Option<(Instant, Instant)> {
        let i = self.seen.iter().position(|(_, v)| v.status.step == step)?;
        let end = self.seen[i..]
            .iter()
            .find(|(_, v)| v.status.step != step || v.status.canary.is_none())?
            .0;
        Some((self.seen[i].0, end))
    }
}

/// The percent of answers from `revision` among requests sent and answered within
/// `[from, to]`, and how many requests that was.
fn split(samples: &[Sample], revision: u64, from: Instant, to: Instant) -> (f64, usize) {
    let within: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.sent >= from && s.done <= to)
        .collect();
    let on = within
        .iter()
        .filter(|s| s.revision == Some(revision))
        .count();
    (on as f64 * 100.0 / within.len().max(1) as f64, within.len())
}

#[test]
fn the_search_canary_walks_every_step_exactly_through_a_leader_failover() {
    let mut c = Cluster::start(3, 2);
    apply(
        &c,
        &repo_manifest(&c, "examples/search/dabba.toml", &[]),
        true,
    );
    // The repo's canary, on the test's time scale: pauses of 4 s, measurements every
    // 2 s over at least 20 requests.
    let canary = repo_manifest(
        &c,
        "examples/search/canary.toml",
        &[
            ("pause = \"1m\"", "pause = \"4s\""),
            ("interval = \"10s\"", "interval = \"2s\""),
            ("min_requests = 50", "min_requests = 20"),
        ],
    );
    let load = Load::start(&c.host_addrs, 4, get("/search?q=phone"));
    eventually("search answering", Duration::from_secs(60), || {
        (load.samples().iter().filter(|s| s.status == 200).count() > 50).then_some(())
    });
    apply(&c, &canary, false);

    let mut timeline = Timeline::default();
    let mut killed = None;
    let deadline = Instant::now() + Duration::from_secs(180);
    let done = loop {
        assert!(
            Instant::now() < deadline,
            "the canary did not finish\n{}",
            c.logs()
        );
        let Some(v) = timeline.watch(&c, "search") else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let measured: u32 = v
            .status
            .analysis
            .iter()
            .filter(|r| r.finished.is_none())
            .flat_map(|r| &r.metrics)
            .map(|m| m.taken)
            .sum();
        // Mid-rollout (the 25% pause) and mid-analysis (the background run has
        // measured): SIGKILL the leader.
        if killed.is_none() && v.status.step == 5 && measured >= 2 {
            let leader = c.leader().expect("a leader");
            c.kill_controller(leader);
            killed = Some((leader, v.status.step, Instant::now()));
            eprintln!("killed leader {} at step {}", leader + 1, v.status.step + 1);
        }
        if v.status.canary.is_none() {
            break v;
        }
        assert!(
            !v.status.aborted,
            "the canary was aborted: {}",
            v.status.message
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(500));
    let samples = load.stop();
    let (killed, at_step, _) = killed.expect("the leader was killed mid-rollout");
    assert!(
        c.leader().is_some_and(|l| l != killed),
        "a new leader took over"
    );

    // It ended as it would have: revision 2 stable, every step entered exactly once,
    // the background analysis all successful across both leaders.
    assert_eq!(
        (done.status.stable, done.status.phase),
        (2, RolloutPhase::Healthy)
    );
    let detail = block_on(c.api().app(&ResourceKey::new("default", "search"))).unwrap();
    let steps: Vec<&str> = detail
        .events
        .iter()
        .filter(|e| e.reason == "RolloutStep")
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(
        steps.len(),
        11,
        "ten steps and the end, once each: {steps:#?}"
    );
    for n in 1..=10 {
        let prefix = format!("step {n}/10:");
        assert_eq!(
            steps.iter().filter(|m| m.starts_with(&prefix)).count(),
            1,
            "step {n}: {steps:#?}"
        );
    }
    let background: Vec<_> = done
        .status
        .analysis
        .iter()
        .filter(|r| r.kind == dabba_spec::analysis::RunKind::Background)
        .collect();
    assert_eq!(
        background.len(),
        1,
        "one background run, kept across the failover"
    );
    let taken: Vec<u32> = background[0].metrics.iter().map(|m| m.taken).collect();
    assert!(
        background[0]
            .metrics
            .iter()
            .all(|m| m.successes == m.taken && m.taken >= 5),
        "every measurement succeeded, before and after the failover: {taken:?} {:#?}",
        background[0].metrics
    );
    eprintln!(
        "leader killed at step {}; background measurements {taken:?}",
        at_step + 1
    );

    // Zero failed requests, and at every pause the split the clients saw is the
    // weight, within one point.
    let failed = failures(&samples);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        samples.len(),
        &failed[..failed.len().min(5)]
    );
    for (pause, weight) in [(1, 5.0), (3, 10.0), (5, 25.0), (7, 50.0), (9, 75.0)] {
        let (from, to) = timeline
            .step_window(pause)
            .unwrap_or_else(|| panic!("step {} was never seen", pause + 1));
        let (observed, n) = split(
            &samples,
            2,
            from + Duration::from_millis(300),
            to - Duration::from_millis(200).min(to - from),
        );
        eprintln!("pause at {weight}%: {observed:.2}% of {n} requests on the canary");
        assert!(
            n >= 200,
            "too few requests to judge the split at {weight}%: {n}"
        );
        assert!(
            (observed - weight).abs() <= 1.0,
            "at {weight}% the clients saw {observed:.2}% of {n} requests on the canary"
        );
    }
}

/// The hostile guest at `/` on two pods, with `extra` manifest text, in `file`.
fn hostile_manifest(c: &Cluster, file: &str, extra: &str) -> std::path::PathBuf {
    let path = c.dir.path().join(file);
    let component = guest("hostile").display().to_string();
    std::fs::write(&path, manifests::hostile(&component, extra)).unwrap();
    path
}

#[test]
fn header_routes_sticky_users_and_a_bad_revision_aborted_by_its_analysis() {
    let c = Cluster::start(3, 2);
    apply(
        &c,
        &hostile_manifest(&c, "v1.toml", "[config]\nfail_percent = \"0\"\n"),
        true,
    );

    // A template applied on its own to the namespace: a web check the leader makes
    // through an ingress, as a beta tester, so it reaches the canary.
    let shared = c.dir.path().join("canary-ok.toml");
    std::fs::write(
        &shared,
        r#"[[analysis]]
name = "canary-ok"
[[analysis.metrics]]
name = "answers"
web = { url = "{{ingress}}/ok", headers = { x-beta = "yes" }, status = 200 }
interval = "1s"
count = 2
"#,
    )
    .unwrap();
    apply(&c, &shared, false);
    let listed = stdout(&c.cli(&["get", "analysistemplates"]));
    assert!(
        listed.contains("canary-ok") && listed.contains("answers (web, every 1s)"),
        "{listed}"
    );

    // Revision 2: beta testers (x-beta: yes) see it whatever the weight, and the shared
    // web check passes through them; at 50% each user (x-user-id) stays on one
    // revision.
    let v2 = hostile_manifest(
        &c,
        "v2.toml",
        r#"[config]
fail_percent = "0"
release = "2"

[rollout]
strategy = "canary"
sticky = { header = "x-user-id" }
[[rollout.steps]]
set_header_route = { name = "beta", match = [{ header = "x-beta", exact = "yes" }] }
[[rollout.steps]]
analysis = { templates = ["canary-ok"] }
[[rollout.steps]]
pause = {}
[[rollout.steps]]
set_weight = 50
[[rollout.steps]]
pause = {}
"#,
    );
    apply(&c, &v2, false);
    let paused = eventually("the header route", Duration::from_secs(60), || {
        rollout(&c, "flaky").filter(|v| v.status.step == 2 && v.status.paused.is_some())
    });
    let web = &paused.status.analysis[0].metrics[0];
    assert_eq!((web.taken, web.successes), (2, 2), "{web:?}");
    // A template a rollout names cannot be deleted from under it.
    let out = c.cli(&["delete", "analysistemplate", "canary-ok"]);
    assert!(
        !out.status.success() && stderr(&out).contains("default/flaky"),
        "{}",
        stderr(&out)
    );
    let revision_of = |headers: &[(&str, &str)], n: usize| -> Vec<Option<u64>> {
        (0..n)
            .map(|i| {
                let r = try_request(c.host_addrs[i % 2], "GET", "/ok", headers, b"").unwrap();
                assert_eq!(r.status, 200, "{}", r.text());
                r.header("x-dabba-revision").and_then(|v| v.parse().ok())
            })
            .collect()
    };
    assert!(
        revision_of(&[("x-beta", "yes")], 40)
            .iter()
            .all(|r| *r == Some(2))
    );
    assert!(
        revision_of(&[("x-beta", "no")], 40)
            .iter()
            .all(|r| *r == Some(1))
    );
    assert!(
        revision_of(&[], 40).iter().all(|r| *r == Some(1)),
        "weight 0 so far"
    );

    let out = c.cli(&["rollout", "promote", "flaky"]);
    assert!(out.status.success(), "{}", stderr(&out));
    eventually("weight 50", Duration::from_secs(60), || {
        rollout(&c, "flaky").filter(|v| v.status.step == 4)
    });
    // The hosts learn of a commit within milliseconds (the benchmark measures it).
    std::thread::sleep(Duration::from_millis(500));
    // Sticky: 200 users, four requests each over both hosts, each always on one
    // revision; about half of them on the canary.
    let mut on_canary = 0;
    for u in 0..200 {
        let user = format!("user-{u}");
        let seen = revision_of(&[("x-user-id", &user)], 4);
        assert!(
            seen.windows(2).all(|w| w[0] == w[1]),
            "{user} moved: {seen:?}"
        );
        on_canary += usize::from(seen[0] == Some(2));
    }
    assert!(
        (70..=130).contains(&on_canary),
        "{on_canary} of 200 users on the canary"
    );
    assert!(
        revision_of(&[("x-beta", "yes"), ("x-user-id", "user-1")], 10)
            .iter()
            .all(|r| *r == Some(2)),
        "the header route wins"
    );
    let out = c.cli(&["rollout", "promote", "flaky", "--full"]);
    assert!(out.status.success(), "{}", stderr(&out));
    eventually("revision 2 stable", Duration::from_secs(60), || {
        rollout(&c, "flaky").filter(|v| v.status.canary.is_none() && v.status.stable == 2)
    });

    // Revision 3 fails 30% of its requests. At 20% it is measured every 2 s; the first
    // failed measurement aborts it, and it keeps its pods for 5 s.
    let bad = hostile_manifest(
        &c,
        "v3.toml",
        &manifests::failing_canary("2s", "5s", "set_weight = 100"),
    );
    let load = Load::start(&c.host_addrs, 4, get("/ok"));
    eventually("load flowing", Duration::from_secs(30), || {
        (load.samples().len() > 100).then_some(())
    });
    apply(&c, &bad, false);
    let started = Instant::now();
    let aborted = eventually("the abort", Duration::from_secs(60), || {
        rollout(&c, "flaky").filter(|v| v.status.aborted)
    });
    let seen_aborted = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let samples = load.stop();
    eprintln!(
        "aborted {:?} after the apply: {}",
        seen_aborted - started,
        aborted.status.message
    );
    assert!(
        aborted
            .status
            .message
            .contains("success-rate/success-rate = 0."),
        "{}",
        aborted.status.message
    );
    assert_eq!(aborted.status.weight, 0);
    // Requests that reached revision 3: about its 20% of those sent while it took
    // traffic, and none sent once every host had the abort: 100 ms after its Raft entry
    // (the bound the benchmark measures against; a request sent in between may still
    // find the old routing table).
    let detail = block_on(c.api().app(&ResourceKey::new("default", "flaky"))).unwrap();
    let committed = detail
        .events
        .iter()
        .rev()
        .find(|e| e.reason == "RolloutAborted")
        .expect("the abort's event")
        .at;
    let during: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.sent >= started && s.sent < seen_aborted)
        .collect();
    let reached = during.iter().filter(|s| s.revision == Some(3)).count();
    let after = samples
        .iter()
        .filter(|s| s.sent_ms >= committed + 100 && s.revision == Some(3))
        .count();
    eprintln!(
        "{reached} of {} requests reached the bad revision before the abort; {after} after",
        during.len()
    );
    assert!(reached > 0, "the bad revision took some traffic");
    assert!(
        reached as f64 <= 0.2 * during.len() as f64 + 8.0,
        "{reached} of {} requests reached the bad revision at 20%",
        during.len()
    );
    assert_eq!(
        after, 0,
        "no request sent 100 ms after the abort committed reached the bad revision"
    );
    // Its failures were its own: the stable revision answered every request it got.
    assert!(
        samples
            .iter()
            .filter(|s| s.revision == Some(2))
            .all(|s| s.status == 200)
    );
    // The aborted canary loses its pods after abort_scale_down_delay.
    eventually(
        "the aborted canary's pods to go",
        Duration::from_secs(30),
        || c.pods().iter().all(|p| p.revision != 3).then_some(()),
    );
    // Every controller's /metrics shows it (from the replicated state).
    for addr in &c.controller_addrs {
        let text = try_request(*addr, "GET", "/metrics", &[], b"")
            .unwrap()
            .text();
        for line in [
            r#"dabba_rollout_phase{app="flaky",namespace="default",phase="Degraded",strategy="Canary"} 1"#,
            r#"dabba_rollout_revision{app="flaky",namespace="default",role="canary"} 3"#,
            r#"dabba_rollout_weight_percent{app="flaky",kind="set",namespace="default"} 0"#,
            r#"dabba_analysis_measurements{app="flaky",metric="success-rate",namespace="default",phase="Failed",run="step",template="success-rate"} 1"#,
        ] {
            assert!(text.contains(line), "{addr} /metrics lacks {line}:\n{text}");
        }
    }
    // `rollout status` says so to scripts.
    let out = c.cli(&["rollout", "status", "flaky"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("Degraded"), "{}", stdout(&out));
}

#[test]
fn blue_green_payments_preview_smoke_test_switch_and_instant_undo() {
    let c = Cluster::start(3, 2);
    apply(
        &c,
        &repo_manifest(&c, "examples/payment/dabba.toml", &[]),
        true,
    );
    let payment = |client: usize, n: u64| {
        (
            "POST".to_string(),
            "/payments".to_string(),
            vec![
                ("content-type".to_string(), "application/json".to_string()),
                ("idempotency-key".to_string(), format!("load-{client}-{n}")),
            ],
            br#"{"merchant_id":"m_load","payer_vpa":"load@okaxis","amount":1000,"currency":"INR"}"#
                .to_vec(),
        )
    };
    let load = Load::start(&c.host_addrs, 3, Arc::new(payment));
    eventually("payments flowing", Duration::from_secs(60), || {
        (load.samples().iter().filter(|s| s.status == 201).count() > 30).then_some(())
    });
    // The repo's blue-green release, promoted by hand here (so the test can look at
    // the preview first), with its post-promotion analysis every 2 s.
    let release = repo_manifest(
        &c,
        "examples/payment/blue-green.toml",
        &[
            (
                "strategy = \"blue-green\"\n",
                "strategy = \"blue-green\"\nauto_promotion_enabled = false\n",
            ),
            ("interval = \"10s\"", "interval = \"2s\""),
        ],
    );
    apply(&c, &release, false);
    let ready = eventually("the smoke test to pass", Duration::from_secs(90), || {
        rollout(&c, "payment").filter(|v| {
            v.status.analysis.iter().any(|r| {
                r.kind == dabba_spec::analysis::RunKind::PrePromotion
                    && r.phase() == dabba_spec::analysis::AnalysisPhase::Successful
            })
        })
    });
    assert!(!ready.status.promoted && ready.status.weight == 0);
    // The smoke test booked a real payment on the preview, and it reads back.
    let smoke = &ready.status.analysis[0].metrics[0].measurements[0].message;
    let id = smoke
        .split_whitespace()
        .find(|w| w.starts_with("pay_"))
        .unwrap_or_else(|| panic!("the smoke test names its payment: {smoke}"));
    let r = try_request(c.host_addrs[0], "GET", &format!("/payments/{id}"), &[], b"").unwrap();
    assert_eq!(
        (r.status, r.json()["merchant_id"].as_str()),
        (200, Some("m_smoke_test"))
    );

    // Only the preview route and the preview header reach revision 2.
    let before = load.samples();
    assert!(
        before.iter().all(|s| s.revision != Some(2)),
        "normal traffic reached the preview"
    );
    let via = |path: &str, headers: &[(&str, &str)]| {
        let r = try_request(c.host_addrs[1], "GET", path, headers, b"").unwrap();
        (r.status, r.header("x-dabba-revision").map(str::to_string))
    };
    assert_eq!(
        via(&format!("/payments/{id}"), &[]),
        (200, Some("1".into()))
    );
    assert_eq!(
        via(&format!("/payments/{id}"), &[("x-dabba-preview", "1")]),
        (200, Some("2".into()))
    );
    assert_eq!(
        via(&format!("/payments-preview/{id}"), &[]),
        (200, Some("2".into()))
    );

    // Promote: all traffic switches under load; the post-promotion analysis passes.
    let out = c.cli(&["rollout", "promote", "payment"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let switched = Instant::now();
    let healthy = eventually("the release to complete", Duration::from_secs(60), || {
        rollout(&c, "payment").filter(|v| v.status.canary.is_none())
    });
    assert_eq!(
        (healthy.status.stable, healthy.status.phase),
        (2, RolloutPhase::Healthy)
    );
    std::thread::sleep(Duration::from_millis(500));
    let after_switch = load.samples();
    let late_old = after_switch
        .iter()
        .filter(|s| s.sent > switched + Duration::from_millis(500) && s.revision == Some(1))
        .count();
    assert_eq!(
        late_old, 0,
        "requests still reached the old revision after the switch"
    );

    // Undo within scale_down_delay: the old pods are still there, so it is instant.
    let old_pods: Vec<String> = c
        .pods()
        .iter()
        .filter(|p| p.revision == 1 && p.phase == PodPhase::Running)
        .map(|p| p.name.clone())
        .collect();
    assert!(!old_pods.is_empty(), "the old revision kept its pods");
    let undo = Instant::now();
    let out = c.cli(&["rollout", "undo", "payment"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let undone = Instant::now();
    std::thread::sleep(Duration::from_millis(700));
    let samples = load.stop();
    let first_back = samples
        .iter()
        .filter(|s| s.sent >= undo && s.revision == Some(1))
        .map(|s| s.done)
        .min()
        .expect("revision 1 answered after the undo");
    let late_new = samples
        .iter()
        .filter(|s| s.sent > undone + Duration::from_millis(200) && s.revision == Some(2))
        .count();
    eprintln!(
        "undo: the CLI took {:?}; revision 1 answered {:?} after it started",
        undone - undo,
        first_back.saturating_duration_since(undo)
    );
    assert_eq!(late_new, 0, "requests reached revision 2 after the undo");
    let now_pods: Vec<String> = c
        .pods()
        .iter()
        .filter(|p| p.revision == 1)
        .map(|p| p.name.clone())
        .collect();
    for p in &old_pods {
        assert!(now_pods.contains(p), "pod {p} was replaced, not reused");
    }
    // Not one payment failed through preview, switch and undo.
    let failed = failures(&samples);
    let created = samples.iter().filter(|s| s.status == 201).count();
    assert!(
        failed.is_empty(),
        "{} of {} payments failed: {:?}",
        failed.len(),
        samples.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        samples.iter().all(|s| s.status == 201),
        "every payment was created"
    );
    eprintln!("{created} payments, none failed");
}
