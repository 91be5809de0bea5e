//! Regions on one machine: three emulated regions (network namespaces, a wide-area
//! delay between them), five controllers spread 2 / 2 / 1, two hosts per region, the
//! payment API placed in all three with Mumbai primary and Singapore a standby at zero
//! pods. Payment load comes from clients in the surviving regions; what counts is what
//! the clients saw and what the ledger holds afterwards, entry by entry.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dabba_testkit::HostOptions;
use dabba_testkit::payments::{PAYMENT, PaymentLoad, check_ledger, pay};
use dabba_testkit::wan::Wan;

use crate::cluster::Cluster;
use crate::support::{apply_manifest, block_on, eventually, guest, stderr, stdout};

const REGIONS: [&str; 3] = ["mumbai", "singapore", "hyderabad"];

/// One way, between regions: Mumbai–Singapore 15 ms, Mumbai–Hyderabad 5 ms,
/// Singapore–Hyderabad 15 ms (kept short: the test runs debug builds).
fn delay(a: &str, b: &str) -> Duration {
    let pair: BTreeSet<&str> = [a, b].into();
    if pair == BTreeSet::from(["mumbai", "hyderabad"]) {
        Duration::from_millis(5)
    } else {
        Duration::from_millis(15)
    }
}

struct World {
    c: Cluster,
    wan: Arc<Wan>,
}

impl World {
    /// The cluster in three regions, or `None` (saying why) where namespaces are not
    /// available.
    fn start() -> Option<World> {
        if let Err(why) = Wan::available() {
            eprintln!("skipped: {why}");
            return None;
        }
        let wan = Wan::create(&REGIONS, delay).expect("emulated regions");
        let controllers = ["mumbai", "mumbai", "singapore", "singapore", "hyderabad"]
            .map(String::from)
            .to_vec();
        let hosts = REGIONS
            .iter()
            .flat_map(|r| {
                (1..=2).map(move |i| {
                    let mut h = HostOptions::new(&format!("{}{i}", &r[..1]), &format!("{r}-{i}"));
                    h.region = Some(r.to_string());
                    h
                })
            })
            .collect();
        let c = Cluster::start_with(5, hosts, Some(wan.clone()), controllers, &[]);
        Some(World { c, wan })
    }

    /// An admin client of the controllers outside `region` (c1, c2 are Mumbai's).
    fn api_outside_mumbai(&self) -> dabba_client::ApiClient {
        dabba_client::ApiClient::new(self.c.urls()[2..].to_vec(), self.c.admin.clone())
            .with_bounds(Duration::from_secs(10), Duration::from_secs(5))
    }

    /// The ingress of host `name` (as a client in its region reaches it).
    fn ingress(&self, name: &str) -> SocketAddr {
        let i = self
            .c
            .hosts
            .iter()
            .position(|p| p.name == name)
            .unwrap_or_else(|| panic!("no host {name}"));
        self.c.host_addrs[i]
    }

    /// Payment clients at the ingresses of `hosts`.
    fn load(&self, hosts: &[&str], tag: &str) -> PaymentLoad {
        let clients: Vec<(String, SocketAddr)> = hosts
            .iter()
            .map(|h| (h.to_string(), self.ingress(h)))
            .collect();
        PaymentLoad::start(&clients, tag)
    }

    fn deploy_payment(&self, placement: &str) {
        self.apply_and_wait(
            "payment.toml",
            &format!(
                "[app]\nname = \"payment\"\ncomponent = {:?}\nroute = \"/payments\"\nreplicas = 2\n\n[capabilities]\nkey_value_buckets = [\"ledger\"]\n\n[config]\nbucket = \"ledger\"\n\n[placement]\n{placement}",
                guest("payment").display().to_string()
            ),
        );
    }

    /// `dabba apply -f FILE --wait` of `text`, which must succeed.
    fn apply_and_wait(&self, file: &str, text: &str) {
        let manifest = self.c.dir.path().join(file);
        std::fs::write(&manifest, text).unwrap();
        let out = self
            .c
            .cli(&["apply", "-f", manifest.to_str().unwrap(), "--wait"]);
        assert!(
            out.status.success(),
            "apply {file}: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }
}

#[test]
fn three_regions_place_pods_in_the_primary_and_survive_losing_it() {
    let Some(w) = World::start() else {
        return;
    };
    // The voters span three regions: the loss of any one keeps a quorum.
    let status = eventually("every controller's region", Duration::from_secs(30), || {
        block_on(w.c.api().cluster_status())
            .ok()
            .filter(|s| s.members.iter().all(|m| m.region != "default"))
    });
    assert_eq!(status.survives_region_loss.len(), 3, "{status:?}");
    assert!(
        status.survives_region_loss.values().all(|s| *s),
        "{status:?}"
    );
    let out = w.c.cli(&["cluster", "status"]);
    assert!(
        stdout(&out).contains("survives losing any one of them"),
        "{}",
        stdout(&out)
    );

    w.deploy_payment("regions = [\"mumbai\", \"singapore\", \"hyderabad\"]\n[placement.region.singapore]\nmin = 0\n");
    let pods = w.c.pods();
    let regions: BTreeSet<Option<String>> = pods.iter().map(|p| p.region.clone()).collect();
    assert_eq!(
        regions,
        BTreeSet::from([Some("mumbai".to_string())]),
        "{pods:?}"
    );

    // A client in each region is served; from the standby its requests go to Mumbai.
    for host in ["m1", "s1", "h2"] {
        let id = pay(w.ingress(host), &format!("first-{host}"))
            .unwrap_or_else(|s| panic!("{host}: {s:?}"));
        assert!(id.starts_with("pay_"));
    }
    let out = w.c.cli(&["get", "regions"]);
    assert!(stdout(&out).contains("serving"), "{}", stdout(&out));

    // The settlement-like job every two seconds, in Mumbai while it stands.
    apply_manifest(
        &|a: &[&str]| w.c.cli(a),
        &w.c.dir.path().join("tick.toml"),
        &format!(
            "[[cron]]\nname = \"tick\"\nschedule = \"*/2 * * * * *\"\ncomponent = {:?}\nargs = [\"tally\", \"ticks\"]\nkey_value_buckets = [\"ticks\"]\nregions = [\"mumbai\", \"singapore\"]\nsuccessful_history = 100\nfailed_history = 100\n",
            guest("job").display().to_string()
        ),
    );

    // Load from clients in Singapore and Hyderabad, then every Mumbai process dies.
    let load = w.load(&["s1", "s2", "h1", "h2"], "load");
    eventually("payments flowing", Duration::from_secs(30), || {
        (load.accepted() > 20).then_some(())
    });
    let mut c = w.c;
    let killed = Instant::now();
    for i in 0..c.controllers.len() {
        if c.controllers[i].name == "c1" || c.controllers[i].name == "c2" {
            c.kill_controller(i);
        }
    }
    for p in c.hosts.iter_mut().filter(|p| p.name.starts_with('m')) {
        p.kill();
    }
    // Recovery: from the kill to the last request that failed, once every request sent
    // since has succeeded for 3 s.
    let rto = eventually(
        "the survivors to serve every request for 3 s",
        Duration::from_secs(60),
        || load.recovered_after(killed, Duration::from_secs(3)),
    );
    let (accepted, _) = load.stop();
    eprintln!("RTO {rto:?} after killing every process of the primary region");
    let regions = block_on(c.api().regions()).unwrap();
    let mumbai = regions
        .iter()
        .find(|r| r.health.region == "mumbai")
        .unwrap();
    let app = &mumbai.apps[0];
    let failure = app
        .failed
        .as_ref()
        .expect("the app failed over from mumbai");
    assert_eq!(failure.to, "singapore", "{failure:?}");

    // The job's schedule went on in Singapore: each time claimed once, the runs after
    // the loss there, and every run executed once (but the one, at most, that a Mumbai
    // host was running when it died).
    std::thread::sleep(Duration::from_secs(6));
    let out = c.cli(&["suspend", "cronjob", "tick"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let view = eventually("the last runs to finish", Duration::from_secs(60), || {
        let v = block_on(c.api().cron_jobs(None)).ok()?.pop()?;
        v.runs.iter().all(|r| !r.phase.is_active()).then_some(v)
    });
    let hosts_api = c.api().clone();
    let keys = block_on(hosts_api.kv_list(&dabba_spec::api::KvList {
        bucket: "default/ticks".into(),
        cursor: None,
        limit: 1000,
    }))
    .unwrap();
    let values = block_on(hosts_api.kv_read(&dabba_spec::api::KvRead {
        bucket: "default/ticks".into(),
        keys: keys.keys.clone(),
    }))
    .unwrap();
    let executions: BTreeMap<String, String> = keys
        .keys
        .iter()
        .zip(values.values)
        .map(|(k, v)| (k.clone(), String::from_utf8(v.unwrap_or_default()).unwrap()))
        .collect();
    let mut times = BTreeSet::new();
    let mut twice = 0;
    for r in &view.runs {
        assert!(times.insert(r.scheduled), "two runs for one time: {r:#?}");
        if r.phase == dabba_spec::cronjob::RunPhase::Succeeded {
            match executions.get(&r.name).map(String::as_str) {
                Some("1") => {}
                Some("2") => twice += 1,
                other => panic!("run {} executed {other:?} times", r.name),
            }
        }
    }
    assert!(twice <= 1, "{twice} runs executed twice");
    let after: Vec<_> = view
        .runs
        .iter()
        .filter(|r| r.host.as_deref().is_some_and(|h| h.starts_with('s')))
        .collect();
    assert!(
        after.len() >= 2,
        "runs went on in Singapore: {:#?}",
        view.runs
    );

    // RPO 0: every acknowledged payment is in the ledger exactly once.
    assert_in_ledger(w_ingress(&c, "s1"), &accepted);
    eprintln!(
        "{} acknowledged payments, every one in the ledger once",
        accepted.len()
    );
    drop(w.wan);
}

fn w_ingress(c: &Cluster, name: &str) -> SocketAddr {
    let i = c.hosts.iter().position(|p| p.name == name).unwrap();
    c.host_addrs[i]
}

/// Every acknowledged payment reads back from `ingress`, once.
fn assert_in_ledger(ingress: SocketAddr, accepted: &BTreeMap<String, String>) {
    let check = check_ledger(ingress, accepted);
    assert!(check.intact(), "{check:#?}");
}

/// How the payment app is placed in `region`, as the controllers say (`None` while they cannot
/// answer, e.g. electing a leader).
fn placement_of(c: &Cluster, region: &str) -> Option<dabba_spec::api::RegionAppView> {
    placement_via(c.api(), region)
}

fn placement_via(
    api: &dabba_client::ApiClient,
    region: &str,
) -> Option<dabba_spec::api::RegionAppView> {
    block_on(api.regions())
        .ok()?
        .into_iter()
        .find(|r| r.health.region == region)
        .and_then(|r| r.apps.into_iter().find(|a| a.app.name() == "payment"))
}

#[test]
fn a_planned_drain_fails_no_request_failback_returns_and_a_partitioned_primary_accepts_no_write() {
    let Some(w) = World::start() else {
        return;
    };
    // Leader preference: the leader moves to the preferred region, and back.
    for (region, voters) in [("hyderabad", &[5][..]), ("mumbai", &[1, 2][..])] {
        let out = w.c.cli(&["cluster", "prefer-leader-region", region]);
        assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
        let status = eventually(
            &format!("the leader in {region}"),
            Duration::from_secs(60),
            || {
                block_on(w.c.api().cluster_status())
                    .ok()
                    .filter(|s| s.leader.is_some_and(|l| voters.contains(&l)))
            },
        );
        assert_eq!(status.preferred_leader_region.as_deref(), Some(region));
    }

    w.deploy_payment("regions = [\"mumbai\", \"singapore\", \"hyderabad\"]\n");
    // A function with no state that may keep serving where it is cut off.
    w.apply_and_wait(
        "hello.toml",
        &format!(
            "[app]\nname = \"hello\"\ncomponent = {:?}\nroute = \"/hello\"\nreplicas = 2\n\n[placement]\nregions = [\"mumbai\", \"singapore\"]\ndegraded = \"serve-stateless\"\n",
            guest("hello").display().to_string()
        ),
    );

    // Planned: drain Mumbai to Singapore under load from every region.
    let load = w.load(&["m1", "s1", "h1"], "drain");
    eventually("payments flowing", Duration::from_secs(30), || {
        (load.accepted() > 10).then_some(())
    });
    let (drain, drain_wall) = (Instant::now(), std::time::SystemTime::now());
    let out = w.c.cli(&["region", "drain", "mumbai", "--to", "singapore"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    eventually("mumbai drained", Duration::from_secs(60), || {
        placement_of(&w.c, "mumbai")?
            .failed
            .filter(|f| f.to == "singapore")
    });
    let before = load.accepted();
    eventually("payments after the drain", Duration::from_secs(30), || {
        (load.accepted() > before + 10).then_some(())
    });
    let (drained, attempts) = load.stop();
    let failed: Vec<_> = attempts.iter().filter(|a| !a.acknowledged()).collect();
    if !failed.is_empty() {
        // When each failed, from the drain command on (negative: before it), and what
        // every process logged (more of it with DABBA_TEST_LOG): such a failure shows
        // on a busy machine, seldom at rest.
        let when: Vec<String> = failed
            .iter()
            .map(|a| {
                let at = a.sent.saturating_duration_since(drain).as_secs_f64()
                    - drain.saturating_duration_since(a.sent).as_secs_f64();
                format!(
                    "{} at {at:+.2} s took {:.2} s",
                    a.client,
                    a.took.as_secs_f64()
                )
            })
            .collect();
        panic!(
            "a planned drain failed {} of {} requests: {:?}\n{when:?} (the drain: {:?} \
             after the epoch)\n{}",
            failed.len(),
            attempts.len(),
            &failed[..failed.len().min(5)],
            drain_wall
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default(),
            w.c.logs()
        );
    }
    assert_eq!(placement_of(&w.c, "singapore").unwrap().running, 2);
    eprintln!("drain: {} payments, none failed", drained.len());

    // Failback: Mumbai serves again; Singapore returns to its min once it does.
    let out = w.c.cli(&["region", "restore", "mumbai"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    eventually("mumbai serving again", Duration::from_secs(60), || {
        let m = placement_of(&w.c, "mumbai")?;
        let s = placement_of(&w.c, "singapore")?;
        (m.serving && m.running == 2 && s.running == 0).then_some(())
    });

    // Partition Mumbai (its processes stay alive) under load from every region.
    let load = w.load(&["m2", "s2", "h2"], "cut");
    eventually("payments flowing", Duration::from_secs(30), || {
        (load.accepted() > 10).then_some(())
    });
    w.wan.cut("mumbai").unwrap();
    let cut = Instant::now();
    let outside = w.api_outside_mumbai();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !placement_via(&outside, "singapore").is_some_and(|p| p.serving) {
        assert!(
            Instant::now() < deadline,
            "singapore not serving 60 s after the cut: {:#?}\n{:#?}",
            block_on(outside.regions()),
            block_on(outside.cluster_status())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let served = load.accepted();
    let deadline = Instant::now() + Duration::from_secs(30);
    while load.accepted() <= served + 10 {
        if Instant::now() > deadline {
            let (_, a) = load.snapshot();
            let tail: Vec<_> = a
                .iter()
                .rev()
                .take(30)
                .map(|t| (t.sent.duration_since(cut), &t.client, t.status))
                .collect();
            panic!(
                "no payments served elsewhere after the cut: {tail:?}\n{:?}",
                block_on(outside.regions())
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    let (accepted, attempts) = load.snapshot();
    // A client inside cut-off Mumbai: once its hosts know (their patience is 3 s) it is
    // refused at once, told why — and nothing it sends is acknowledged.
    let m1 = w.ingress("m1");
    let mut refusals = Vec::new();
    for i in 0..5 {
        let started = Instant::now();
        let out = w
            .wan
            .client(
                "mumbai",
                "curl",
                &[
                    "-s",
                    "--max-time",
                    "10",
                    "-w",
                    "\n%{http_code}",
                    "-H",
                    &format!("idempotency-key: isolated-{i}"),
                    "-H",
                    "content-type: application/json",
                    "-d",
                    PAYMENT,
                    &format!("http://{m1}/payments"),
                ],
            )
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        refusals.push((started.elapsed(), text));
    }
    for (took, text) in &refusals {
        assert!(
            text.ends_with("503"),
            "acknowledged or not refused in Mumbai: {text}"
        );
        assert!(text.contains("region_isolated"), "{text}");
        assert!(
            *took < Duration::from_secs(1),
            "refused at once, not after {took:?}"
        );
    }
    // The stateless function goes on answering there.
    let out = w
        .wan
        .client(
            "mumbai",
            "curl",
            &[
                "-s",
                "--max-time",
                "5",
                "-w",
                "\n%{http_code}",
                &format!("http://{m1}/hello"),
            ],
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("200"), "hello in isolated Mumbai: {text}");
    assert!(
        attempts
            .iter()
            .filter(|a| a.client == "m2" && a.sent > cut)
            .all(|a| !a.acknowledged()),
        "a write was acknowledged in the partitioned region"
    );

    // Heal: Mumbai's controllers rejoin, nothing diverges, every acknowledged payment is
    // in the ledger once — read from Mumbai too.
    w.wan.heal("mumbai").unwrap();
    let (accepted_all, _) = load.stop();
    eventually(
        "mumbai's controllers caught up",
        Duration::from_secs(60),
        || {
            let s = block_on(outside.cluster_status()).ok()?;
            s.members
                .iter()
                .all(|m| m.lag.is_some_and(|l| l < 5))
                .then_some(())
        },
    );
    assert!(accepted.len() <= accepted_all.len());
    eprintln!(
        "partition: {} payments acknowledged elsewhere",
        accepted_all.len()
    );
    let mut everything = drained;
    everything.extend(accepted_all);
    assert_in_ledger(w.ingress("s1"), &everything);
    assert_in_ledger(w.ingress("m1"), &everything);
}
