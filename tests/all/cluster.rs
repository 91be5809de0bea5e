//! A real cluster: three `dabba controller` and two `dabba host` processes on loopback
//! (started by `dabba-testkit`), driven through the CLI, the typed API client and the
//! ingress. Controllers are killed with SIGKILL (no clean shutdown), hosts too.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dabba_spec::Digest;
use dabba_spec::api::ClusterStatus;
use dabba_spec::resources::{HostState, Pod, PodPhase};
use dabba_testkit::{ClusterOptions, HostOptions, padded_component, python_component};

use crate::support::{
    block_on, dabba_bin, eventually, guest, run_dabba, stderr, stdout, try_request,
};

/// Cluster tests (and the benchmarks' quick runs) start five processes each: on a
/// 2-core machine they run one at a time.
pub static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A test cluster: the testkit's, with its data in a temporary directory, and helpers
/// that block.
pub struct Cluster {
    kit: dabba_testkit::Cluster,
    pub dir: tempfile::TempDir,
    /// Held while this cluster runs (declared last: released after the processes stop).
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Deref for Cluster {
    type Target = dabba_testkit::Cluster;

    fn deref(&self) -> &Self::Target {
        &self.kit
    }
}

impl DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.kit
    }
}

impl Cluster {
    /// Starts `n_controllers` controllers (the first starts the cluster, the others
    /// join it) and `n_hosts` hosts `h1`, `h2`, ... in zones a, b, ...
    pub fn start(n_controllers: usize, n_hosts: usize) -> Cluster {
        let hosts = (0..n_hosts)
            .map(|i| {
                HostOptions::new(
                    &format!("h{}", i + 1),
                    &format!("zone-{}", (b'a' + i as u8) as char),
                )
            })
            .collect();
        Cluster::start_with(n_controllers, hosts, None, Vec::new(), &[])
    }

    /// Starts controllers (in `controller_regions`, with emulated regions) and `hosts`.
    pub fn start_with(
        n_controllers: usize,
        hosts: Vec<HostOptions>,
        wan: Option<std::sync::Arc<dabba_testkit::wan::Wan>>,
        controller_regions: Vec<String>,
        controller_flags: &[&str],
    ) -> Cluster {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        guest("payment");
        let dir = tempfile::tempdir().unwrap();
        let opts = ClusterOptions {
            dabba: dabba_bin().to_path_buf(),
            dir: dir.path().to_path_buf(),
            controllers: n_controllers,
            controller_flags: [
                "--failure-timeout",
                "2s",
                // Tests run debug builds, many times slower than release: give each
                // replication RPC room (failover speed is the benchmark's business).
                "--heartbeat-interval",
                "100ms",
                "--election-timeout",
                "400ms",
            ]
            .iter()
            .chain(controller_flags)
            .map(|f| f.to_string())
            .collect(),
            hosts: hosts
                .into_iter()
                .map(|mut h| {
                    // A debug build compiling a component for the first time on a busy
                    // machine can take longer than the default 10 s a request is held.
                    h.flags.extend(["--activator-timeout".into(), "60s".into()]);
                    h
                })
                .collect(),
            // Generous: a debug build under the whole parallel suite joins slowly.
            patience: Duration::from_secs(120),
            wan,
            controller_regions,
        };
        let kit = block_on(dabba_testkit::Cluster::start(opts))
            .unwrap_or_else(|e| panic!("starting the cluster: {e:#}"));
        Cluster {
            kit,
            dir,
            _turn: turn,
        }
    }

    /// The sum over every controller that answers of metric `family`'s samples whose
    /// labels contain each of `labels` (`name="value"`).
    pub fn summed(&self, family: &str, labels: &[&str]) -> f64 {
        self.controller_addrs
            .iter()
            .filter_map(|a| try_request(*a, "GET", "/metrics", &[], b"").ok())
            .flat_map(|r| {
                r.text()
                    .lines()
                    .filter(|l| {
                        l.starts_with(&format!("{family}{{"))
                            && labels.iter().all(|want| l.contains(want))
                    })
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .collect::<Vec<_>>()
            })
            .sum()
    }

    pub fn controller_urls(&self) -> String {
        self.urls().join(",")
    }

    /// `dabba ARGS...` against this cluster with the admin token.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut all: Vec<&str> = args.to_vec();
        let urls = self.controller_urls();
        all.extend(["--server", &urls, "--token", &self.admin]);
        run_dabba(&all, Duration::from_secs(120))
    }

    pub fn status(&self) -> Option<ClusterStatus> {
        block_on(self.api().cluster_status()).ok()
    }

    /// The index (0-based) of the current leader.
    pub fn leader(&self) -> Option<usize> {
        Some(self.status()?.leader? as usize - 1)
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

    pub fn pods(&self) -> Vec<Pod> {
        block_on(self.api().pods(None, None))
            .ok()
            .unwrap_or_default()
    }

    /// Whether the controllers see host `name` in `state`.
    pub fn host_is(&self, name: &str, state: HostState) -> bool {
        block_on(self.api().hosts())
            .ok()
            .is_some_and(|hs| hs.iter().any(|h| h.info.name == name && h.state == state))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// `kill SIG PID` (`-STOP` freezes a process, `-CONT` lets it run again).
pub(crate) fn send_signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
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
    c.kill_controller(old_leader);
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
    c.controllers[old_leader].restart().unwrap();
    eventually(
        "the old leader to catch up",
        Duration::from_secs(30),
        || {
            let s = c.status()?;
            let all_caught_up =
                s.members.len() == 3 && s.members.iter().all(|m| m.lag.is_some_and(|l| l < 5));
            all_caught_up.then_some(())
        },
    );

    // Stop and restart every process: everything is back.
    let apps_before = block_on(c.api().apps(None)).ok().unwrap();
    for p in c.kit.hosts.iter_mut().chain(c.kit.controllers.iter_mut()) {
        p.stop();
    }
    for p in c.kit.controllers.iter_mut().chain(c.kit.hosts.iter_mut()) {
        p.restart().unwrap();
    }
    eventually(
        "the app to run again after a full restart",
        Duration::from_secs(60),
        || {
            let pods = c.pods();
            let running = pods.iter().filter(|p| p.phase == PodPhase::Running).count();
            (running == 2).then_some(())
        },
    );
    // The same apps, as far as a restart can tell (which revision, route, replicas).
    let apps_after = block_on(c.api().apps(None)).ok().unwrap();
    let shape = |apps: &[dabba_spec::api::AppSummary]| -> Vec<_> {
        apps.iter()
            .map(|a| {
                (
                    a.name.clone(),
                    a.revision,
                    a.route.clone(),
                    a.desired,
                    a.updated_at,
                )
            })
            .collect()
    };
    assert_eq!(shape(&apps_after), shape(&apps_before));
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
            .filter(|p| p.host.as_deref() == Some(host) && p.phase == PodPhase::Running)
            .count()
    };
    // The scheduler spreads the two pods across the two zones.
    assert_eq!((on(&c, "h1"), on(&c, "h2")), (1, 1), "{:?}", c.pods());

    c.hosts[1].kill();
    eventually("h2 to be NotReady", Duration::from_secs(15), || {
        c.host_is("h2", HostState::NotReady).then_some(())
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
    c.hosts[1].restart().unwrap();
    eventually("h2 to be Ready again", Duration::from_secs(30), || {
        c.host_is("h2", HostState::Ready).then_some(())
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
        (c.status()?.members.len() == 2).then_some(())
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
fn a_component_larger_than_any_request_is_kept_outside_the_log_and_reaches_a_controller_that_missed_it()
 {
    let mut c = Cluster::start(3, 1);
    let leader = c.leader().unwrap();
    let missed = (leader + 1) % 3;
    c.kill_controller(missed);

    // 70 MiB: more than any other request body (64 MiB), 17 times the old limit.
    let hello = std::fs::read(guest("hello")).unwrap();
    let big = padded_component(&hello, 70 << 20);
    let digest = Digest::of(&big);
    let component = c.dir.path().join("big.wasm");
    std::fs::write(&component, &big).unwrap();
    let manifest = c.dir.path().join("big.toml");
    std::fs::write(
        &manifest,
        format!(
            "[app]\nname = \"big\"\ncomponent = {:?}\nroute = \"/big\"\nreplicas = 1\n",
            component.display().to_string()
        ),
    )
    .unwrap();
    let peaks = |c: &Cluster| -> Vec<u64> {
        (0..3)
            .filter(|i| *i != missed)
            .map(|i| {
                c.controllers[i]
                    .peak_memory_kib()
                    .expect("a live controller")
            })
            .collect()
    };
    let before = peaks(&c);
    let out = c.cli(&["apply", "-f", manifest.to_str().unwrap(), "--wait"]);
    let shown = stdout(&out);
    assert!(out.status.success(), "{shown}{}", stderr(&out));
    assert!(
        shown.contains("held by a majority of the controllers in"),
        "{shown}"
    );
    let r = try_request(c.host_addrs[0], "GET", "/big", &[], b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    // Streamed through, never held whole: no controller's peak memory grew by as much
    // as half the component (holding it whole would add all of it, and more).
    for ((i, was), now) in (0..3).filter(|i| *i != missed).zip(before).zip(peaks(&c)) {
        assert!(
            now - was < (35 << 10),
            "controller {i}: peak resident memory {was} -> {now} KiB during a 70 MiB upload"
        );
    }

    // Outside the log: each live controller holds the file under its digest, and no
    // Raft log grew by the component.
    let root = c.dir.path().to_path_buf();
    let data = |i: usize| root.join(format!("c{}", i + 1));
    let blob_of = |i: usize| data(i).join("blobs").join(digest.hex());
    for i in (0..3).filter(|i| *i != missed) {
        assert_eq!(std::fs::read(blob_of(i)).unwrap(), big, "controller {i}");
    }
    for i in 0..3 {
        let log = std::fs::metadata(data(i).join("raft.redb")).unwrap().len();
        assert!(
            log < big.len() as u64 / 2,
            "controller {i}: a {log}-byte log"
        );
    }

    // The controller that was down during the upload fetches it from a peer.
    block_on(c.restart_controller(missed)).unwrap();
    eventually(
        "the controller that missed the upload to hold it",
        Duration::from_secs(60),
        || (std::fs::read(blob_of(missed)).ok()? == big).then_some(()),
    );

    // A copy corrupted on disk is caught by its digest and replaced from a peer: the
    // download still gets the right bytes.
    let mut corrupted = big.clone();
    corrupted[big.len() / 2] ^= 0xff;
    std::fs::write(blob_of(leader), &corrupted).unwrap();
    let auth = format!("Bearer {}", c.admin);
    let r = try_request(
        c.controller_addrs[leader],
        "GET",
        &format!("/v1/blobs/{digest}"),
        &[("authorization", &auth)],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(Digest::of(&r.body), digest);
    assert_eq!(std::fs::read(blob_of(leader)).unwrap(), big);
    // A download resumes: the rest from byte N, and nothing past the end.
    for (from, status, tail) in [
        (big.len() - 10, 206, &big[big.len() - 10..]),
        (big.len(), 416, &[][..]),
    ] {
        let range = format!("bytes={from}-");
        let r = try_request(
            c.controller_addrs[missed],
            "GET",
            &format!("/v1/blobs/{digest}"),
            &[("authorization", &auth), ("range", &range)],
            b"",
        )
        .unwrap();
        assert_eq!(r.status, status, "{range}");
        assert_eq!(&r.body[..], tail, "{range}");
    }
    let out = c.cli(&["cluster", "status"]);
    let text = stdout(&out);
    assert!(
        text.contains("components: 1 (70.") && text.contains("holds 1 of them"),
        "{text}"
    );

    // A host killed half-way through downloading it resumes where it stopped once it
    // is back: a controller answers its next request with the rest (206), and the
    // whole — checked against its digest — serves.
    let resumed = |c: &Cluster| {
        c.summed(
            "dabba_api_requests_total",
            &["code=\"206\"", "method=\"GET\""],
        )
    };
    let components = root.join("h1").join("components");
    let cached = components.join(format!("{}.wasm", digest.hex()));
    let partial = components.join(format!("{}.partial", digest.hex()));
    let before = resumed(&c);
    let mut cut_at = None;
    for _ in 0..3 {
        c.hosts[0].kill();
        let _ = std::fs::remove_file(&cached);
        c.hosts[0].restart().unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline && !cached.exists() {
            let held = std::fs::metadata(&partial).map_or(0, |m| m.len());
            if held > 0 && held < big.len() as u64 {
                c.hosts[0].kill();
                cut_at = std::fs::metadata(&partial).ok().map(|m| m.len());
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if cut_at.is_some() {
            break;
        }
    }
    let cut_at = cut_at.expect("the host killed while its download was under way");
    assert!(cut_at > 0 && cut_at < big.len() as u64, "{cut_at}");
    c.hosts[0].restart().unwrap();
    eventually(
        "the restarted host to serve the component again",
        Duration::from_secs(120),
        || {
            let r = try_request(c.host_addrs[0], "GET", "/big", &[], b"").ok()?;
            (r.status == 200).then_some(())
        },
    );
    assert!(
        resumed(&c) > before,
        "the download after the restart asked only for the rest (from byte {cut_at})"
    );
    assert_eq!(std::fs::read(&cached).unwrap(), big);
    assert!(!partial.exists());

    // A real one of that size: Python, built by componentize-py with CPython inside.
    let python = python_component();
    let size = std::fs::metadata(&python).unwrap().len();
    assert!(size > 15 << 20, "a {size}-byte Python component");
    let manifest = root.join("py.toml");
    std::fs::write(
        &manifest,
        format!(
            "[app]\nname = \"py\"\ncomponent = {:?}\nroute = \"/py\"\nreplicas = 1\n",
            python.display().to_string()
        ),
    )
    .unwrap();
    // A debug build compiles CPython's 18 MB for a minute or two: room for it.
    let urls = c.controller_urls();
    let out = run_dabba(
        &[
            "apply",
            "-f",
            manifest.to_str().unwrap(),
            "--wait",
            "--timeout",
            "400s",
            "--server",
            &urls,
            "--token",
            &c.admin,
        ],
        Duration::from_secs(420),
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let r = try_request(c.host_addrs[0], "GET", "/py/hi", &[], b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "hello from CPython at /py/hi\n");
}

/// Workload keys live on each controller's disk, and a controller that lost its disk
/// catches up from a snapshot streamed from the leader, not from a log that no longer
/// goes back far enough: it then holds every key, answers every read as the leader,
/// and still answers a retried write instead of applying it twice.
#[test]
fn a_wiped_controller_catches_up_from_a_streamed_snapshot_of_the_workload_store() {
    use dabba_spec::api::{KvList, KvRead, KvWrite};
    use dabba_spec::kv::{Outcome, Write};

    // c3 in its own region, so leadership can be handed to it to read what it holds.
    let regions = ["a", "a", "b"].map(String::from).to_vec();
    let mut c = Cluster::start_with(3, Vec::new(), None, regions, &["--snapshot-logs", "40"]);
    let api = c.api().clone();
    let bucket = "default/ledger".to_string();
    let payment = |i: u32| format!("{{\"id\":\"pay-{i:06}\",\"amount\":{}}}", 100 + i % 997);
    let write_batch = |b: u32| {
        // 100 payments per write, and a running total: both identified, as a guest's
        // retried writes are.
        let payments = (b * 100..(b + 1) * 100)
            .map(|i| (format!("pay-{i:06}"), Some(payment(i).into_bytes())))
            .collect();
        let put = block_on(api.kv_write(&KvWrite {
            bucket: bucket.clone(),
            write: Write::Put(payments),
            id: Some(format!("batch-{b}")),
            fence: None,
        }))
        .unwrap();
        assert_eq!(put.result, Ok(Outcome::Done));
        let total = block_on(api.kv_write(&KvWrite {
            bucket: bucket.clone(),
            write: Write::Increment {
                key: "total".into(),
                delta: 100,
            },
            id: Some(format!("total-{b}")),
            fence: None,
        }))
        .unwrap();
        assert_eq!(total.result, Ok(Outcome::Counter(i64::from(b + 1) * 100)));
    };
    for b in 0..100 {
        write_batch(b);
    }

    // c3 loses everything while the cluster goes on far past what its log keeps.
    let victim = 2;
    c.kill_controller(victim);
    std::fs::remove_dir_all(c.dir.path().join("c3")).unwrap();
    for b in 100..200 {
        write_batch(b);
    }
    // Started again as it was, it refuses to answer Raft under an id whose log and
    // votes it forgot, and says what to do.
    c.controllers[victim].restart().unwrap();
    eventually(
        "the wiped c3 to refuse to start",
        Duration::from_secs(60),
        || c.controllers[victim].exited(),
    );
    let log = c.controllers[victim].log();
    assert!(
        log.contains("already a member") && log.contains("dabba cluster remove 3"),
        "{log}"
    );
    assert_eq!(c.status().unwrap().members.len(), 3);
    let out = c.cli(&["cluster", "remove", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Removed, it joins again as a new member and catches up.
    let _ = std::fs::remove_dir_all(c.dir.path().join("c3"));
    block_on(c.restart_controller(victim)).unwrap();
    block_on(c.wait_voters(3, true)).unwrap();

    let metric = |text: &str, name: &str| -> Option<u64> {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
    };
    eventually(
        "the wiped controller to hold every key, from a snapshot",
        Duration::from_secs(60),
        || {
            let r = try_request(c.controller_addrs[victim], "GET", "/metrics", &[], b"").ok()?;
            let text = r.text();
            let keys = metric(&text, "dabba_workload_keys")?;
            let installed = metric(&text, "dabba_raft_state{field=\"snapshots_installed\"}")?;
            (keys == 20_001 && installed >= 1).then_some(())
        },
    );

    // Read back through it: leadership moves to c3's region.
    let out = c.cli(&["cluster", "prefer-leader-region", "b"]);
    assert!(out.status.success(), "{}", stderr(&out));
    eventually("c3 to lead", Duration::from_secs(60), || {
        (c.leader()? == victim).then_some(())
    });
    let mut listed = Vec::new();
    let mut cursor = None;
    loop {
        let page = block_on(api.kv_list(&KvList {
            bucket: bucket.clone(),
            cursor: cursor.clone(),
            limit: 1000,
        }))
        .unwrap();
        listed.extend(page.keys);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(listed.len(), 20_001);
    let wanted: Vec<String> = (0..20_000).map(|i| format!("pay-{i:06}")).collect();
    for chunk in wanted.chunks(500) {
        let got = block_on(api.kv_read(&KvRead {
            bucket: bucket.clone(),
            keys: chunk.to_vec(),
        }))
        .unwrap();
        for (key, value) in chunk.iter().zip(got.values) {
            let i: u32 = key["pay-".len()..].parse().unwrap();
            assert_eq!(value, Some(payment(i).into_bytes()), "{key}");
        }
    }
    let total = block_on(api.kv_read(&KvRead {
        bucket: bucket.clone(),
        keys: vec!["total".into()],
    }))
    .unwrap();
    assert_eq!(total.values, vec![Some(b"20000".to_vec())]);
    // A write retried from before the wipe is answered, not applied again.
    let retry = block_on(api.kv_write(&KvWrite {
        bucket: bucket.clone(),
        write: Write::Increment {
            key: "total".into(),
            delta: 100,
        },
        id: Some("total-7".into()),
        fence: None,
    }))
    .unwrap();
    assert_eq!(retry.result, Ok(Outcome::Counter(800)));
}

/// A controller stopped after it began to join but before the cluster answered asks
/// again when it starts (its data directory says the join did not finish), and becomes
/// a voter. (Started again without asking, it stayed outside the voters for good.)
#[test]
fn a_controller_killed_while_joining_asks_again_when_it_restarts() {
    let mut c = Cluster::start(3, 0);
    eventually("c1 to lead", Duration::from_secs(30), || {
        c.leader().filter(|l| *l == 0)
    });
    let victim = 2;
    c.kill_controller(victim);
    let out = c.cli(&["cluster", "remove", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let data = c.dir.path().join("c3");
    std::fs::remove_dir_all(&data).unwrap();
    // c2 frozen: c1 alone cannot commit c3's membership, so the join waits.
    let frozen = c.controllers[1].pid().expect("c2 runs");
    let signal = |sig: &str| send_signal(frozen, sig);
    signal("-STOP");
    c.controllers[victim].restart().unwrap();
    eventually("c3 to begin its join", Duration::from_secs(60), || {
        data.join("raft.redb").exists().then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    // Its log holds every start: the first one joined, this one has not.
    let log = c.controllers[victim].log();
    assert_eq!(log.matches("joined the cluster").count(), 1, "{log}");
    assert!(data.join("joining").exists());
    c.kill_controller(victim);
    signal("-CONT");

    block_on(c.restart_controller(victim)).unwrap();
    block_on(c.wait_voters(3, true)).unwrap();
    // (The membership may already hold it, from the join the freeze held up: it says
    // it joined once its own request is answered.)
    eventually(
        "the restarted joiner to join",
        Duration::from_secs(30),
        || {
            (c.controllers[victim]
                .log()
                .matches("joined the cluster")
                .count()
                == 2)
                .then_some(())
        },
    );
    assert!(
        !data.join("joining").exists(),
        "the marker goes once joined"
    );
}

/// A host starting a pod fetches its component from a host that already runs the app,
/// not from the controllers; a caller without the cluster's read key gets nothing.
#[test]
fn a_host_fetches_a_component_from_a_peer_that_runs_the_app() {
    let metrics: Vec<std::net::SocketAddr> = (0..2)
        .map(|_| dabba_testkit::free_addr().unwrap())
        .collect();
    let hosts = (0..2)
        .map(|i| {
            let mut h = HostOptions::new(
                &format!("h{}", i + 1),
                &format!("zone-{}", (b'a' + i as u8) as char),
            );
            h.flags
                .extend(["--metrics-listen".into(), metrics[i].to_string()]);
            h
        })
        .collect();
    let c = Cluster::start_with(3, hosts, None, Vec::new(), &[]);
    let fetches = |host: usize, source: &str| -> u64 {
        let text = try_request(metrics[host], "GET", "/metrics", &[], b"")
            .map(|r| r.text())
            .unwrap_or_default();
        let series = format!("dabba_component_fetches_total{{source=\"{source}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    c.deploy_payment(1);
    let first = c
        .pods()
        .iter()
        .find(|p| p.phase == PodPhase::Running)
        .and_then(|p| p.host.clone())
        .expect("a running pod");
    let (first, second) = if first == "h1" { (0, 1) } else { (1, 0) };
    assert_eq!(fetches(first, "controller"), 1);

    let out = c.cli(&["scale", "app", "payment", "--replicas", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    eventually("a pod on each host", Duration::from_secs(60), || {
        let running: BTreeSet<String> = c
            .pods()
            .into_iter()
            .filter(|p| p.phase == PodPhase::Running)
            .filter_map(|p| p.host)
            .collect();
        (running.len() == 2).then_some(())
    });
    assert_eq!(fetches(second, "peer"), 1, "from the host that runs it");
    assert_eq!(fetches(second, "controller"), 0);
    pay(
        c.host_addrs[second],
        "served-by-the-second",
        Instant::now() + Duration::from_secs(20),
    )
    .expect("the second host serves");

    let path = format!(
        "/.dabba/blobs/{}",
        Digest::of(&std::fs::read(guest("payment")).unwrap())
    );
    let r = try_request(c.host_addrs[first], "GET", &path, &[], b"").unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
}

/// The leader sends an upload on to the other controllers as it arrives; one that takes
/// nothing (frozen) is left behind after a moment, the upload is stored on the majority
/// all the same, and the frozen one fetches the component once it runs again.
#[test]
fn an_upload_goes_on_without_a_controller_that_stalls_and_that_one_catches_up_after() {
    let c = Cluster::start(3, 0);
    let leader = c.leader().unwrap();
    let frozen = (leader + 1) % 3;
    let pid = c.controllers[frozen].pid().expect("a live controller");
    let signal = |sig: &str| send_signal(pid, sig);
    let hello = std::fs::read(guest("hello")).unwrap();
    let big = padded_component(&hello, 24 << 20);
    let digest = Digest::of(&big);
    let api = dabba_client::ApiClient::new(
        vec![format!("http://{}", c.controller_addrs[leader])],
        c.admin.clone(),
    );
    signal("-STOP");
    let (tx, rx) = std::sync::mpsc::channel();
    let bytes = bytes::Bytes::from(big.clone());
    std::thread::spawn(move || {
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let _ = tx.send(block_on(api.put_blob(&digest, bytes, sent)));
    });
    let stored = rx.recv_timeout(Duration::from_secs(90));
    signal("-CONT");
    let stored = stored.expect("the upload waited for the frozen controller");
    assert!(stored.is_ok(), "{stored:?}");
    let file = c
        .dir
        .path()
        .join(format!("c{}", frozen + 1))
        .join("blobs")
        .join(digest.hex());
    eventually(
        "the frozen controller to hold it",
        Duration::from_secs(60),
        || std::fs::read(&file).ok().filter(|b| *b == big),
    );
}

/// What marks a request proxied between hosts (`x-dabba-hop`, with the cluster's read
/// key) is believed only with that key and never reaches a guest: a request proxied to
/// the host running the app arrives without either, and a client's forged hop is
/// ignored — the request is proxied like any other instead of refused as "not run here",
/// and a forged key does not reach the guest either.
#[test]
fn a_hop_is_believed_only_from_another_host_and_never_reaches_a_guest() {
    let c = Cluster::start(3, 2);
    let manifest = c.dir.path().join("hostile.toml");
    std::fs::write(
        &manifest,
        format!(
            "[app]\nname = \"hostile\"\ncomponent = \"{}\"\nroute = \"/\"\nreplicas = 1\n",
            guest("hostile").display()
        ),
    )
    .unwrap();
    let out = c.cli(&["apply", "-f", manifest.to_str().unwrap(), "--wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let on = c.pods().pop().and_then(|p| p.host).expect("a placed pod");
    let runs: usize = on.trim_start_matches('h').parse::<usize>().unwrap() - 1;
    let other = 1 - runs;
    let seen = |host: usize, headers: &[(&str, &str)]| -> Vec<(String, String)> {
        let r = crate::support::request(c.host_addrs[host], "GET", "/headers", headers, b"");
        assert_eq!(r.status, 200, "{}", r.text());
        r.decode()
    };
    let leaked = |headers: &[(String, String)]| {
        headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("x-dabba-read-key") || k == "x-dabba-hop")
    };
    // Proxied by the other host: the guest sees neither the hop nor the key.
    let proxied = seen(other, &[("x-probe", "1")]);
    assert!(proxied.iter().any(|(k, _)| k == "x-probe"), "{proxied:?}");
    assert!(!leaked(&proxied), "{proxied:?}");
    // A forged hop (and key) at either host: ignored, served or proxied as usual.
    let forged = [("x-dabba-hop", "1"), ("x-dabba-read-key", "guess")];
    for host in [other, runs] {
        let headers = seen(host, &forged);
        assert!(!leaked(&headers), "{headers:?}");
    }
    let r = crate::support::request(c.host_addrs[other], "GET", "/ok", &forged, b"");
    assert_eq!(
        r.status,
        200,
        "a forged hop is proxied, not refused: {}",
        r.text()
    );
    assert_eq!(r.header("x-dabba-not-run"), None);
}
