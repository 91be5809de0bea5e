//! Regions on one machine: three emulated regions (network namespaces, a wide-area
//! delay between them), five controllers spread 2 / 2 / 1, two hosts per region, the
//! payment API placed in all three with Mumbai primary and Singapore a standby at zero
//! pods. Payment load comes from clients in the surviving regions; what counts is what
//! the clients saw and what the ledger holds afterwards, entry by entry.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dabba_testkit::HostOptions;
use dabba_testkit::wan::Wan;

use crate::cluster::Cluster;
use crate::support::{block_on, eventually, guest, stderr, stdout, try_request};

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
        let c = Cluster::start_with(5, hosts, Some(wan.clone()), controllers);
        Some(World { c, wan })
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

    fn deploy_payment(&self, placement: &str) {
        let manifest = self.c.dir.path().join("payment.toml");
        std::fs::write(
            &manifest,
            format!(
                "[app]\nname = \"payment\"\ncomponent = {:?}\nroute = \"/payments\"\nreplicas = 2\n\n[capabilities]\nkey_value_buckets = [\"ledger\"]\n\n[config]\nbucket = \"ledger\"\n\n[placement]\n{placement}",
                guest("payment").display().to_string()
            ),
        )
        .unwrap();
        let out = self
            .c
            .cli(&["apply", "-f", manifest.to_str().unwrap(), "--wait"]);
        assert!(
            out.status.success(),
            "apply: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }
}

const PAYMENT: &str =
    r#"{"merchant_id":"m_regions","payer_vpa":"asha@okhdfc","amount":1000,"currency":"INR"}"#;

/// Books payment `key` through `ingress`: the payment's id, or the status it got.
fn pay(ingress: SocketAddr, key: &str) -> Result<String, u16> {
    match try_request(
        ingress,
        "POST",
        "/payments",
        &[
            ("idempotency-key", key),
            ("content-type", "application/json"),
        ],
        PAYMENT.as_bytes(),
    ) {
        Ok(r) if r.status == 201 || r.status == 200 => {
            Ok(r.json()["id"].as_str().unwrap_or_default().to_string())
        }
        Ok(r) => Err(r.status),
        Err(_) => Err(0),
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
            .unwrap_or_else(|s| panic!("{host}: {s}"));
        assert!(id.starts_with("pay_"));
    }
    let out = w.c.cli(&["get", "regions"]);
    assert!(stdout(&out).contains("serving"), "{}", stdout(&out));

    // Load from clients in Singapore and Hyderabad, then every Mumbai process dies.
    let accepted: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let outcomes: Arc<Mutex<Vec<(Instant, bool)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = ["s1", "s2", "h1", "h2"]
        .into_iter()
        .enumerate()
        .map(|(n, host)| {
            let ingress = w.ingress(host);
            let (accepted, outcomes, stop) = (accepted.clone(), outcomes.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("load-{n}-{i}");
                    let r = pay(ingress, &key);
                    outcomes.lock().unwrap().push((Instant::now(), r.is_ok()));
                    if let Ok(id) = r {
                        accepted.lock().unwrap().insert(key, id);
                        i += 1;
                    }
                    // A refused payment is retried with the same key, as a client does.
                }
            })
        })
        .collect();
    eventually("payments flowing", Duration::from_secs(30), || {
        (accepted.lock().unwrap().len() > 20).then_some(())
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
    // Recovery: the first moment after which every request succeeds for 3 s.
    let rto = eventually(
        "the survivors to serve every request for 3 s",
        Duration::from_secs(60),
        || {
            let o = outcomes.lock().unwrap();
            let last_failure = o.iter().filter(|(_, ok)| !ok).map(|(t, _)| *t).max();
            let since = last_failure.unwrap_or(killed).max(killed);
            let clean = o.iter().filter(|(t, ok)| *t > since && *ok).count();
            (Instant::now().duration_since(since) >= Duration::from_secs(3) && clean > 10)
                .then(|| since.duration_since(killed))
        },
    );
    stop.store(true, Ordering::Relaxed);
    for t in clients {
        t.join().unwrap();
    }
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

    // RPO 0: every acknowledged payment is in the ledger exactly once.
    let accepted = accepted.lock().unwrap().clone();
    let mut seqs = BTreeSet::new();
    for (key, id) in &accepted {
        let r = try_request(
            w_ingress(&c, "s1"),
            "GET",
            &format!("/payments/{id}"),
            &[],
            b"",
        )
        .expect("reading a payment back");
        assert_eq!(r.status, 200, "{key} ({id}) is lost: {}", r.text());
        let p = r.json();
        let seq = (
            p["ledger_date"].to_string(),
            p["ledger_seq"].as_u64().unwrap(),
        );
        assert!(seqs.insert(seq), "two payments share a ledger slot: {p}");
    }
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
