//! A real cluster: three `dabba controller` processes and two `dabba host` processes on
//! loopback, driven through the CLI and the ingress. Controllers are killed with SIGKILL
//! (no clean shutdown), hosts too.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Proc, eventually, free_port, guest, run_dabba, stderr, stdout, try_request};

/// Cluster tests start five processes each: on a 2-core machine they run one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub controllers: Vec<Proc>,
    pub controller_addrs: Vec<SocketAddr>,
    pub hosts: Vec<Proc>,
    pub host_addrs: Vec<SocketAddr>,
    pub admin: String,
    /// Held while this cluster runs (declared last: released after the processes stop).
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Cluster {
    /// Starts `n_controllers` controllers (the first starts the cluster, the others
    /// join it) and `n_hosts` hosts in zones a, b, ...
    pub fn start(n_controllers: usize, n_hosts: usize) -> Cluster {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        guest("payment");
        let dir = tempfile::tempdir().unwrap();
        let controller_addrs: Vec<SocketAddr> = (0..n_controllers)
            .map(|_| SocketAddr::from(([127, 0, 0, 1], free_port())))
            .collect();
        let mut controllers = Vec::new();
        for (i, addr) in controller_addrs.iter().enumerate() {
            let id = i + 1;
            let mut args: Vec<String> = vec![
                "controller".into(),
                "--id".into(),
                id.to_string(),
                "--listen".into(),
                addr.to_string(),
                "--data-dir".into(),
                dir.path().join(format!("c{id}")).display().to_string(),
                "--failure-timeout".into(),
                "2s".into(),
                // Tests run debug builds, many times slower than release: give each
                // replication RPC room (failover speed is the benchmark's business).
                "--heartbeat-interval".into(),
                "100ms".into(),
                "--election-timeout".into(),
                "400ms".into(),
            ];
            let admin = if i > 0 {
                args.extend(["--join".into(), format!("http://{}", controller_addrs[0])]);
                read_token(&dir.path().join("c1/admin.token"))
            } else {
                String::new()
            };
            let envs: Vec<(&str, &str)> = if i > 0 {
                vec![("DABBA_TOKEN", admin.as_str())]
            } else {
                vec![]
            };
            controllers.push(Proc::start(&format!("c{id}"), &args, &envs, dir.path()));
            if i == 0 {
                eventually(
                    "the first controller to start the cluster",
                    Duration::from_secs(30),
                    || dir.path().join("c1/join.token").exists().then_some(()),
                );
            } else {
                // Members join one at a time: Raft changes membership one step at once.
                let first = controller_addrs[0];
                let joined = || -> Option<()> {
                    let auth = format!("Bearer {admin}");
                    let r = try_request(
                        first,
                        "GET",
                        "/v1/cluster",
                        &[("authorization", &auth)],
                        b"",
                    )
                    .ok()?;
                    let s = r.json();
                    let voters = s["members"]
                        .as_array()?
                        .iter()
                        .filter(|m| m["voter"] == true)
                        .count();
                    (voters == i + 1).then_some(())
                };
                // Generous: a debug build under the whole parallel suite joins slowly. If
                // it never does, the controllers' logs say why.
                let deadline = Instant::now() + Duration::from_secs(120);
                while joined().is_none() {
                    if Instant::now() > deadline {
                        let logs: String = controllers
                            .iter()
                            .map(|p| format!("--- {} ---\n{}", p.name, p.log()))
                            .collect();
                        panic!("controller c{id} did not join within 120 s\n{logs}");
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        let admin = read_token(&dir.path().join("c1/admin.token"));
        let join = read_token(&dir.path().join("c1/join.token"));
        let mut c = Cluster {
            _turn: turn,
            dir,
            controllers,
            controller_addrs,
            hosts: Vec::new(),
            host_addrs: Vec::new(),
            admin,
        };
        eventually(
            "every controller to be a voter",
            Duration::from_secs(60),
            || {
                let s = c.status()?;
                let voters = s["members"]
                    .as_array()?
                    .iter()
                    .filter(|m| m["voter"] == true)
                    .count();
                (voters == n_controllers).then_some(())
            },
        );
        let urls = c.controller_urls();
        for i in 0..n_hosts {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let name = format!("h{}", i + 1);
            let zone = format!("zone-{}", (b'a' + i as u8) as char);
            let args: Vec<String> = vec![
                "host".into(),
                "--controller".into(),
                urls.clone(),
                "--name".into(),
                name.clone(),
                "--zone".into(),
                zone,
                "--listen".into(),
                addr.to_string(),
                "--data-dir".into(),
                c.dir.path().join(&name).display().to_string(),
                // A debug build compiling a component for the first time on a busy
                // machine can take longer than the default 10 s a request is held.
                "--activator-timeout".into(),
                "60s".into(),
            ];
            c.hosts.push(Proc::start(
                &name,
                &args,
                &[("DABBA_JOIN_TOKEN", join.as_str())],
                c.dir.path(),
            ));
            c.host_addrs.push(addr);
        }
        eventually("every host to be Ready", Duration::from_secs(60), || {
            let hosts = c.api_get("/v1/hosts")?;
            let ready = hosts
                .as_array()?
                .iter()
                .filter(|h| h["state"] == "Ready")
                .count();
            (ready == n_hosts).then_some(())
        });
        c
    }

    pub fn controller_urls(&self) -> String {
        self.controller_addrs
            .iter()
            .map(|a| format!("http://{a}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `dabba ARGS...` against this cluster with the admin token.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut all: Vec<&str> = args.to_vec();
        let urls = self.controller_urls();
        all.extend(["--server", &urls, "--token", &self.admin]);
        run_dabba(&all, Duration::from_secs(120))
    }

    /// A GET of the API from any live controller.
    pub fn api_get(&self, path: &str) -> Option<Value> {
        let auth = format!("Bearer {}", self.admin);
        self.controller_addrs.iter().find_map(|a| {
            let r = try_request(*a, "GET", path, &[("authorization", &auth)], b"").ok()?;
            (r.status == 200).then(|| r.json())
        })
    }

    pub fn status(&self) -> Option<Value> {
        self.api_get("/v1/cluster")
    }

    /// The index (0-based) of the current leader.
    pub fn leader(&self) -> Option<usize> {
        let s = self.status()?;
        let id = s["leader"].as_u64()?;
        Some(id as usize - 1)
    }

    pub fn deploy_payment(&self, replicas: u32) -> std::path::PathBuf {
        let manifest = self.dir.path().join("payment.toml");
        std::fs::write(
            &manifest,
            format!(
                "[app]\nname = \"payment\"\ncomponent = \"{}\"\nroute = \"/payments\"\nreplicas = {replicas}\n\n[capabilities]\nkey_value_buckets = [\"default\"]\n",
                guest("payment").display()
            ),
        )
        .unwrap();
        let out = self.cli(&["apply", "-f", manifest.to_str().unwrap(), "--wait"]);
        assert!(
            out.status.success(),
            "apply failed: {}{}",
            stdout(&out),
            stderr(&out)
        );
        manifest
    }

    pub fn pods(&self) -> Vec<Value> {
        self.api_get("/v1/pods")
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    pub fn logs(&self) -> String {
        self.controllers
            .iter()
            .chain(&self.hosts)
            .map(|p| format!("--- {} ---\n{}", p.name, p.log()))
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

fn read_token(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .trim()
        .to_string()
}

const PAYMENT: &[u8] =
    br#"{"merchant_id":"m_1","payer_vpa":"alice@upi","amount":125000,"currency":"INR"}"#;

/// Sends one payment with `key` through `ingress`, retrying (with the same key) until it
/// gets a 2xx or `deadline` passes. Returns the payment's id.
fn pay(ingress: SocketAddr, key: &str, deadline: Instant) -> Option<String> {
    while Instant::now() < deadline {
        if let Ok(r) = try_request(
            ingress,
            "POST",
            "/payments",
            &[
                ("idempotency-key", key),
                ("content-type", "application/json"),
            ],
            PAYMENT,
        ) && (200..300).contains(&r.status)
        {
            return r.json()["id"].as_str().map(str::to_string);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn payments_survive_losing_the_leader_and_a_full_restart() {
    let mut c = Cluster::start(3, 2);
    c.deploy_payment(2);

    // Load from four clients, alternating the two hosts' ingresses, while the leader is
    // killed.
    let accepted: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let ingress = c.host_addrs[t % 2];
            let accepted = accepted.clone();
            std::thread::spawn(move || {
                for i in 0..40 {
                    let key = format!("key-{t}-{i}");
                    if let Some(id) = pay(ingress, &key, deadline) {
                        accepted.lock().unwrap().insert(key, id);
                    }
                }
            })
        })
        .collect();
    eventually("some payments to land", Duration::from_secs(30), || {
        (accepted.lock().unwrap().len() >= 20).then_some(())
    });
    let old_leader = c.leader().expect("a leader");
    let killed_at = Instant::now();
    c.controllers[old_leader].kill();
    for t in clients {
        t.join().unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();
    assert_eq!(
        accepted.len(),
        160,
        "every payment was eventually accepted\n{}",
        c.logs()
    );
    let new_leader = eventually("a new leader", Duration::from_secs(10), || {
        c.leader().filter(|l| *l != old_leader)
    });
    eprintln!(
        "leader {} killed; {} leads; load finished {:?} later",
        old_leader + 1,
        new_leader + 1,
        killed_at.elapsed()
    );

    // Every accepted payment is in the ledger, once: distinct ids, distinct sequence
    // numbers, readable from either host.
    let check_ledger = |c: &Cluster| {
        let mut seqs = BTreeSet::new();
        for (n, (key, id)) in accepted.iter().enumerate() {
            let ingress = c.host_addrs[n % 2];
            let r = try_request(ingress, "GET", &format!("/payments/{id}"), &[], b"")
                .expect("reading a payment");
            assert_eq!(
                r.status,
                200,
                "payment {id} ({key}) is missing: {}",
                r.text()
            );
            let p = r.json();
            assert_eq!(p["idempotency_key"], key.as_str());
            let seq = (
                p["ledger_date"].as_str().unwrap().to_string(),
                p["ledger_seq"].as_u64().unwrap(),
            );
            assert!(seqs.insert(seq), "two payments share a ledger slot: {p}");
        }
        let ids: BTreeSet<&String> = accepted.values().collect();
        assert_eq!(ids.len(), accepted.len(), "each key made its own payment");
    };
    check_ledger(&c);

    // A retried key replays the same payment rather than making a second.
    let (key, id) = accepted.iter().next().unwrap();
    let again = pay(
        c.host_addrs[1],
        key,
        Instant::now() + Duration::from_secs(10),
    );
    assert_eq!(again.as_ref(), Some(id));

    // The killed controller comes back and catches up.
    c.controllers[old_leader].restart();
    eventually(
        "the old leader to catch up",
        Duration::from_secs(30),
        || {
            let s = c.status()?;
            let members = s["members"].as_array()?;
            let all_caught_up = members.len() == 3
                && members
                    .iter()
                    .all(|m| m["lag"].as_u64().is_some_and(|l| l < 5));
            all_caught_up.then_some(())
        },
    );

    // Stop and restart every process: everything is back.
    let apps_before = c.api_get("/v1/apps").unwrap();
    for p in c.hosts.iter_mut().chain(c.controllers.iter_mut()) {
        p.stop();
    }
    for p in c.controllers.iter_mut().chain(c.hosts.iter_mut()) {
        p.restart();
    }
    eventually(
        "the app to run again after a full restart",
        Duration::from_secs(60),
        || {
            let pods = c.pods();
            let running = pods.iter().filter(|p| p["phase"] == "running").count();
            (running == 2).then_some(())
        },
    );
    assert_eq!(c.api_get("/v1/apps").unwrap(), apps_before);
    eventually(
        "both ingresses to route again",
        Duration::from_secs(30),
        || {
            c.host_addrs
                .iter()
                .all(|h| {
                    try_request(*h, "GET", &format!("/payments/{id}"), &[], b"")
                        .is_ok_and(|r| r.status == 200)
                })
                .then_some(())
        },
    );
    check_ledger(&c);
}

#[test]
fn a_lost_host_has_its_pods_rescheduled_and_the_app_keeps_answering() {
    let mut c = Cluster::start(3, 2);
    c.deploy_payment(2);
    let on = |c: &Cluster, host: &str| {
        c.pods()
            .iter()
            .filter(|p| p["host"] == host && p["phase"] == "running")
            .count()
    };
    // The scheduler spreads the two pods across the two zones.
    assert_eq!((on(&c, "h1"), on(&c, "h2")), (1, 1), "{:?}", c.pods());

    c.hosts[1].kill();
    eventually("h2 to be NotReady", Duration::from_secs(15), || {
        let hosts = c.api_get("/v1/hosts")?;
        hosts
            .as_array()?
            .iter()
            .any(|h| h["info"]["name"] == "h2" && h["state"] == "NotReady")
            .then_some(())
    });
    eventually("both pods to run on h1", Duration::from_secs(30), || {
        (on(&c, "h1") == 2 && c.pods().len() == 2).then_some(())
    });
    let id = pay(
        c.host_addrs[0],
        "after-loss",
        Instant::now() + Duration::from_secs(20),
    )
    .expect("h1 answers after h2 is lost");
    let r = try_request(c.host_addrs[0], "GET", &format!("/payments/{id}"), &[], b"").unwrap();
    assert_eq!(r.status, 200);

    // A host that comes back is Ready again, and takes new pods.
    c.hosts[1].restart();
    eventually("h2 to be Ready again", Duration::from_secs(30), || {
        let hosts = c.api_get("/v1/hosts")?;
        hosts
            .as_array()?
            .iter()
            .any(|h| h["info"]["name"] == "h2" && h["state"] == "Ready")
            .then_some(())
    });
    let out = c.cli(&["scale", "app", "payment", "--replicas", "4"]);
    assert!(out.status.success(), "{}", stderr(&out));
    eventually("pods on h2 again", Duration::from_secs(30), || {
        (on(&c, "h2") >= 1 && on(&c, "h1") + on(&c, "h2") == 4).then_some(())
    });
    // h2's ingress proxies or serves: either way the payment is found.
    let r = try_request(c.host_addrs[1], "GET", &format!("/payments/{id}"), &[], b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    // Membership by hand: remove a follower, then add it back.
    let leader = c.leader().unwrap();
    let follower = (leader + 1) % 3;
    let id = (follower + 1).to_string();
    let out = c.cli(&["cluster", "remove", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    eventually("two members", Duration::from_secs(15), || {
        (c.status()?["members"].as_array()?.len() == 2).then_some(())
    });
    let address = format!("http://{}", c.controller_addrs[follower]);
    let out = c.cli(&["cluster", "add", "--id", &id, "--address", &address]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = c.cli(&["cluster", "status"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(text.matches("follower").count(), 2, "{text}");
    assert!(text.contains("leader: "), "{text}");
}

#[test]
fn the_cluster_benchmark_takes_every_measurement() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (run, report, _) = quick_bench(
        "cluster",
        "payment",
        &["--duration", "1s", "--failovers", "1"],
    );
    let c = &report["cluster"];
    for m in ["raft_write_serial", "raft_write_concurrent", "payments"] {
        assert!(c[m]["requests"].as_u64().unwrap() > 0, "{m}: {c}");
        assert!(
            c[m]["latency"]["p99_us"].as_f64().unwrap() > 0.0,
            "{m}: {c}"
        );
    }
    assert_eq!(c["failover_ms"].as_array().unwrap().len(), 1, "{c}");
    assert!(stdout(&run).contains("Leader failover"));
}

#[test]
fn the_autoscale_benchmark_takes_every_measurement() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (run, report, _) = quick_bench("autoscale", "hello", &[]);
    let a = &report["autoscale"];
    for cold in ["cold_start_embedded", "cold_start_cluster"] {
        for run in ["stream", "isolated"] {
            assert_eq!(a[cold][run]["samples"], 20, "{a}");
            assert!(a[cold][run]["p99_ms"].as_f64().unwrap() > 0.0, "{a}");
        }
    }
    assert_eq!(a["scale_out_ms"].as_array().unwrap().len(), 1, "{a}");
    assert_eq!(a["density"]["apps"], 200, "{a}");
    assert!(
        a["density"]["host_rss_with_pods_kib"].as_u64().unwrap() > 0,
        "{a}"
    );
    assert!(stdout(&run).contains("Idle pods on one host"));
}

/// Runs `dabba bench --suite SUITE --quick` (with the test clusters' Raft timing and the
/// guests next to `guest`), which must succeed; its output, its JSON report and the
/// names of the files it wrote.
fn quick_bench(
    suite: &str,
    guest_name: &str,
    extra: &[&str],
) -> (std::process::Output, Value, Vec<String>) {
    let guests = guest(guest_name).parent().unwrap().to_path_buf();
    let out = tempfile::tempdir().unwrap();
    let mut args = vec![
        "bench",
        "--suite",
        suite,
        "--quick",
        "--heartbeat-interval",
        "100ms",
        "--election-timeout",
        "400ms",
        "--guests",
        guests.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
    ];
    args.extend(extra);
    let run = run_dabba(&args, Duration::from_secs(300));
    assert!(run.status.success(), "{}{}", stdout(&run), stderr(&run));
    let file = out.path().join(format!("{suite}.json"));
    let report = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    let mut files: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    (run, report, files)
}

#[test]
fn the_settlement_benchmark_settles_its_ledger_every_way() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (run, report, _) = quick_bench("settlement", "settlement", &["--payments", "5000"]);
    let s = &report["settlement"];
    assert_eq!(s["payments"], 5000, "{s}");
    for row in ["dabba", "dabba_again", "platform", "native"] {
        assert!(
            s[row]["payments_per_second"].as_f64().unwrap() > 0.0,
            "{row}: {s}"
        );
    }
    assert!(s["dabba_over_native"].as_f64().unwrap() > 0.0, "{s}");
    assert!(
        stdout(&run).contains("| dabba up cron job"),
        "{}",
        stdout(&run)
    );
}

/// The container comparison in quick mode, against real Docker, real dabba and
/// `wasmtime serve`: every measurement is taken, every chart written.
#[test]
fn the_container_benchmark_takes_every_measurement() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    guest("search");
    let native = crate::support::native_servers();
    let (run, report, files) = quick_bench(
        "containers",
        "payment",
        &["--native", native.to_str().unwrap()],
    );
    let c = &report["containers"];
    for side in ["dabba", "docker"] {
        assert_eq!(c["cold_start"][side]["samples"], 3, "{c}");
        assert!(
            c["cold_start"][side]["p50_ms"].as_f64().unwrap() > 0.0,
            "{c}"
        );
    }
    let s = &c["scale_out"][0];
    assert_eq!(s["replicas"], 10, "{c}");
    for m in [
        "dabba_ms",
        "docker_ms",
        "dabba_kib_per_replica",
        "docker_kib_per_replica",
    ] {
        assert!(s[m].as_f64().unwrap() > 0.0, "{m}: {c}");
    }
    for a in c["artifacts"].as_array().unwrap() {
        assert!(a["component_bytes"].as_u64().unwrap() > 0, "{a}");
        assert!(a["image_bytes"].as_u64().unwrap() > 0, "{a}");
    }
    let rows = c["throughput"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "payment and search at one concurrency: {c}");
    for t in rows {
        assert!(t["dabba"]["rps"].as_f64().unwrap() > 0.0, "{t}");
        assert!(t["container"]["rps"].as_f64().unwrap() > 0.0, "{t}");
        // wasmtime serve runs what it can; where it cannot, the report says why.
        assert!(
            t["wasmtime"]["rps"].as_f64().is_some_and(|r| r > 0.0)
                || t["wasmtime_note"].as_str().is_some_and(|n| !n.is_empty()),
            "{t}"
        );
    }
    let search = rows.iter().find(|t| t["workload"] == "search").unwrap();
    assert!(
        search["wasmtime"]["rps"].as_f64().unwrap() > 0.0,
        "{search}"
    );
    assert!(stdout(&run).contains("dabba vs Docker containers"));
    assert!(c["docker_version"].as_str().is_some_and(|v| !v.is_empty()));
    for chart in [
        "cold-start.svg",
        "scale-out.svg",
        "memory-per-replica.svg",
        "artifact-size.svg",
        "throughput-payment.svg",
        "throughput-search.svg",
    ] {
        assert!(files.iter().any(|f| f == chart), "{chart} in {files:?}");
    }
}
