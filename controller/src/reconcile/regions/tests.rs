//! Regions over the state machine: pods placed per region, triggers, failover, drain
//! and restore, as the leader would drive them.

use dabba_spec::regions::{FailoverKind, RegionPlacement};
use dabba_spec::resources::{AppSpec, HostState, Millis, PodPhase, ResourceKey};

use super::{Measured, Served, plan};
use crate::command::{Command, RegionChange};
use crate::reconcile::tests::{GIB, converge, host};
use crate::reconcile::{Observed, Tuning, reconcile};
use crate::state::State;
use crate::state::tests::{spec, with_blobs};

struct Sim {
    s: State,
    now: Millis,
    measured: Measured,
    down: Vec<&'static str>,
}

const HOSTS: [(&str, &str); 5] = [
    ("m1", "mumbai"),
    ("m2", "mumbai"),
    ("s1", "singapore"),
    ("s2", "singapore"),
    ("h1", "hyderabad"),
];

fn placed(text: &str, replicas: u32) -> AppSpec {
    let mut s = spec("pay", "/pay", replicas);
    s.regions = Some(toml::from_str::<RegionPlacement>(text).unwrap());
    s
}

impl Sim {
    fn new(app: AppSpec) -> Sim {
        let mut s = with_blobs();
        for (name, region) in HOSTS {
            let Command::RegisterHost { mut info, at, .. } = host(name, "z", 64 * GIB, &[]) else {
                unreachable!()
            };
            info.region = region.into();
            s.apply(&Command::RegisterHost {
                info,
                at,
                credential: None,
            });
        }
        s.apply(&Command::ApplyApp {
            spec: Box::new(app),
            at: 1,
        });
        let mut sim = Sim {
            s,
            now: 1_000,
            measured: Measured::new(),
            down: Vec::new(),
        };
        sim.settle();
        sim
    }

    fn key() -> ResourceKey {
        ResourceKey::new("default", "pay")
    }

    fn observed(&self) -> Observed {
        Observed {
            heartbeats: HOSTS
                .iter()
                .filter(|(h, _)| !self.down.contains(h))
                .map(|(h, _)| (h.to_string(), self.now))
                .collect(),
            leader_since: 0,
            voters: Vec::new(),
            served: self.measured.clone(),
        }
    }

    fn settle(&mut self) {
        let observed = self.observed();
        converge(&mut self.s, &observed, self.now);
    }

    /// Running pods of the app per region.
    fn running(&self, region: &str) -> usize {
        self.s
            .pods
            .values()
            .filter(|p| p.phase == PodPhase::Running)
            .filter(|p| p.host.as_deref().and_then(|h| self.s.host_region(h)) == Some(region))
            .count()
    }

    fn region(&mut self, change: RegionChange) {
        self.commit(change);
        self.settle();
    }

    /// Commits `change` without letting the cluster act on it yet.
    fn commit(&mut self, change: RegionChange) {
        self.s.apply(&Command::Regions {
            changes: vec![change],
            at: self.now,
        });
    }

    /// Starts a drain of `from` to `to` (committed, not yet acted on).
    fn drain(&mut self, from: &str, to: &str) {
        self.commit(RegionChange::Drain {
            app: Sim::key(),
            from: from.into(),
            to: to.into(),
        });
    }

    fn status(&self) -> &dabba_spec::regions::PlacementStatus {
        &self.s.placements[&Sim::key()]
    }
}

const THREE: &str = "regions = [\"mumbai\", \"singapore\", \"hyderabad\"]\n";

#[test]
fn pods_run_in_the_primary_and_standbys_stay_at_their_min() {
    let sim = Sim::new(placed(&format!("{THREE}[region.hyderabad]\nmin = 1\n"), 3));
    assert_eq!(sim.running("mumbai"), 3);
    assert_eq!(
        sim.running("singapore"),
        0,
        "a standby at zero: pilot light"
    );
    assert_eq!(sim.running("hyderabad"), 1);
    // Spread over the primary's zones and hosts, never outside its region.
    let hosts: std::collections::BTreeSet<_> = sim
        .s
        .pods
        .values()
        .filter(|p| p.region.as_deref() == Some("mumbai"))
        .filter_map(|p| p.host.clone())
        .collect();
    assert_eq!(hosts.len(), 2, "{hosts:?}");
}

#[test]
fn a_standby_follows_its_min_when_the_manifest_changes_it() {
    let warm = format!("{THREE}[region.singapore]\nmin = 2\n");
    let mut sim = Sim::new(placed(&warm, 2));
    assert_eq!(sim.running("singapore"), 2, "a warm standby");
    for (text, want) in [(THREE.to_string(), 0), (warm, 2)] {
        sim.s.apply(&Command::ApplyApp {
            spec: Box::new(placed(&text, 2)),
            at: sim.now,
        });
        sim.now += 1_000;
        sim.settle();
        sim.now += 11_000; // past the grace a region's pods are kept
        sim.settle();
        assert_eq!(sim.running("singapore"), want, "{text}");
        assert_eq!(sim.running("mumbai"), 2, "{text}");
    }
}

#[test]
fn losing_the_primarys_hosts_fails_over_to_the_next_healthy_region() {
    let mut sim = Sim::new(placed(THREE, 3));
    // Mumbai's hosts stop heartbeating; after the failure timeout they are NotReady.
    sim.down = vec!["m1", "m2"];
    sim.now += Tuning::default().failure_timeout + 1;
    let commands = reconcile(&sim.s, &sim.observed(), sim.now, &Tuning::default());
    for c in &commands {
        sim.s.apply(c);
    }
    assert!(sim.s.hosts["m1"].state == HostState::NotReady);
    sim.settle();
    let status = sim.status().clone();
    let failure = &status.failed["mumbai"];
    assert_eq!(
        (failure.kind, failure.to.as_str()),
        (FailoverKind::Automatic, "singapore")
    );
    assert!(
        failure.reason.contains("availability 0%"),
        "{}",
        failure.reason
    );
    assert_eq!(
        status.replicas["singapore"], 3,
        "the standby takes the primary's count"
    );
    assert_eq!(sim.running("singapore"), 3);
    assert_eq!(sim.running("mumbai"), 0);
    assert_eq!(
        sim.s
            .events
            .iter()
            .filter(|e| e.reason == "FailedOver")
            .count(),
        1
    );
    // Planning again proposes nothing more: one failover.
    assert!(plan(&sim.s, &[], &sim.measured).is_empty());
}

#[test]
fn a_low_success_rate_fails_over_but_too_few_requests_do_not() {
    let mut sim = Sim::new(placed(THREE, 2));
    let at = |region: &str| (Sim::key(), region.to_string());
    sim.measured.insert(
        at("mumbai"),
        Served {
            requests: 10,
            errors: 10,
        },
    );
    assert!(
        plan(&sim.s, &[], &sim.measured).is_empty(),
        "10 requests judge nothing"
    );
    sim.measured.insert(
        at("mumbai"),
        Served {
            requests: 100,
            errors: 25,
        },
    );
    let changes = plan(&sim.s, &[], &sim.measured);
    assert!(
        matches!(&changes[..], [RegionChange::Failover { from, to, reason, .. }]
            if from == "mumbai" && to == "singapore" && reason.contains("success rate 75.0%")),
        "{changes:?}"
    );
    // With singapore failing too, hyderabad takes over.
    sim.measured.insert(
        at("singapore"),
        Served {
            requests: 100,
            errors: 90,
        },
    );
    let changes = plan(&sim.s, &[], &sim.measured);
    assert!(
        matches!(&changes[..], [RegionChange::Failover { to, .. }] if to == "hyderabad"),
        "{changes:?}"
    );
}

#[test]
fn manual_failover_only_reports_its_triggers() {
    let mut sim = Sim::new(placed(&format!("{THREE}failover = \"manual\"\n"), 2));
    sim.measured.insert(
        (Sim::key(), "mumbai".into()),
        Served {
            requests: 100,
            errors: 50,
        },
    );
    assert!(plan(&sim.s, &[], &sim.measured).is_empty());
    assert_eq!(super::triggers(&sim.s, &[], &sim.measured).len(), 1);
}

#[test]
fn a_drain_moves_requests_only_once_the_target_runs_and_a_restore_comes_back() {
    let mut sim = Sim::new(placed(THREE, 2));
    sim.drain("mumbai", "singapore");
    // Still serving from mumbai while singapore's pods start.
    assert!(sim.status().routes_to("mumbai"));
    assert_eq!(sim.status().replicas["singapore"], 2);
    sim.settle();
    assert!(
        !sim.status().routes_to("mumbai"),
        "drained once singapore ran"
    );
    assert_eq!(
        (sim.running("mumbai"), sim.running("singapore")),
        (2, 2),
        "mumbai keeps its pods for requests already routed there"
    );
    sim.now += crate::reconcile::replicas::REGION_GRACE;
    sim.settle();
    assert_eq!((sim.running("mumbai"), sim.running("singapore")), (0, 2));
    assert_eq!(sim.status().failed["mumbai"].kind, FailoverKind::Drained);
    // Restore: mumbai runs again; singapore keeps its pods until then, then goes to 0.
    sim.region(RegionChange::Restore {
        app: Sim::key(),
        region: "mumbai".into(),
    });
    assert!(sim.status().routes_to("mumbai"));
    assert!(
        sim.status().restoring.is_empty(),
        "restored once mumbai ran"
    );
    assert_eq!((sim.running("mumbai"), sim.running("singapore")), (2, 0));
    assert_eq!(
        sim.status()
            .serving(sim.s.apps[&Sim::key()].spec.regions.as_ref().unwrap()),
        Some("mumbai")
    );
}

#[test]
fn a_restore_during_a_drain_calls_the_drain_off() {
    let mut sim = Sim::new(placed(THREE, 2));
    sim.drain("mumbai", "singapore");
    assert_eq!(sim.status().replicas["singapore"], 2);
    // Before singapore runs its pods, the operator thinks again.
    sim.commit(RegionChange::Restore {
        app: Sim::key(),
        region: "mumbai".into(),
    });
    assert!(sim.status().draining.is_empty(), "the drain is off");
    assert!(sim.status().failed.is_empty());
    sim.settle();
    assert!(sim.status().routes_to("mumbai"));
    assert_eq!((sim.running("mumbai"), sim.running("singapore")), (2, 0));
    assert!(
        sim.s.events.iter().any(|e| e.reason == "DrainCancelled"),
        "an event says so"
    );
}

#[test]
fn a_region_at_zero_activates_with_the_first_request_there() {
    let mut sim = Sim::new(placed(THREE, 2));
    sim.region(RegionChange::Failover {
        app: Sim::key(),
        from: "mumbai".into(),
        to: "singapore".into(),
        kind: FailoverKind::Manual,
        reason: "drill".into(),
    });
    // Hyderabad is at zero; a request held on h1 activates it there.
    let reply = sim.s.apply(&Command::Activate {
        namespace: "default".into(),
        name: "pay".into(),
        host: Some("h1".into()),
        at: sim.now,
    });
    assert!(
        matches!(&reply, crate::command::Reply::Activated { pod: Some(p), .. } if p.region.as_deref() == Some("hyderabad") && p.host.as_deref() == Some("h1")),
        "{reply:?}"
    );
    // A second request changes nothing: the region has its pod.
    let again = sim.s.apply(&Command::Activate {
        namespace: "default".into(),
        name: "pay".into(),
        host: Some("h1".into()),
        at: sim.now,
    });
    assert!(matches!(
        again,
        crate::command::Reply::Activated { pod: None, .. }
    ));
    // A host in the region failed over from asks for the serving region instead.
    let from_failed = sim.s.apply(&Command::Activate {
        namespace: "default".into(),
        name: "pay".into(),
        host: Some("m1".into()),
        at: sim.now,
    });
    assert!(
        matches!(
            from_failed,
            crate::command::Reply::Activated { pod: None, .. }
        ),
        "singapore has pods"
    );
    // Failback: every region but mumbai returns to its min, the one activated by a
    // stray request during the outage too (else the next loss would start from a
    // different place than the first).
    sim.settle();
    assert_eq!(sim.running("hyderabad"), 1);
    sim.region(RegionChange::Restore {
        app: Sim::key(),
        region: "mumbai".into(),
    });
    sim.settle();
    assert_eq!(
        (
            sim.running("mumbai"),
            sim.running("singapore"),
            sim.running("hyderabad")
        ),
        (2, 0, 0)
    );
}

#[test]
fn three_regions_of_voters_survive_any_one() {
    let mut s = with_blobs();
    for (id, region) in [
        (1, "mumbai"),
        (2, "mumbai"),
        (3, "singapore"),
        (4, "singapore"),
        (5, "hyderabad"),
    ] {
        s.apply(&Command::PlaceController {
            id,
            place: dabba_spec::api::ControllerPlace {
                region: region.into(),
                zone: "a".into(),
            },
        });
    }
    let h = super::health(&s, &[1, 2, 3, 4, 5]);
    assert_eq!(
        h.values()
            .map(|r| (r.region.as_str(), r.voters))
            .collect::<Vec<_>>(),
        [("hyderabad", 1), ("mumbai", 2), ("singapore", 2)]
    );
}

#[test]
fn an_autoscaled_app_is_sized_in_each_region_by_that_regions_demand() {
    use crate::reconcile::autoscale::{LoadReports, drive};
    use dabba_spec::api::PodLoad;
    use std::collections::HashMap;

    let mut app = placed(THREE, 1);
    app.scale = Some(toml::from_str("min = 1\nmax = 10\ntarget_concurrency = 10\n").unwrap());
    let sim = Sim::new(app);
    assert_eq!((sim.running("mumbai"), sim.running("singapore")), (1, 0));
    let pod = sim.s.pods.keys().next().unwrap().clone();
    let mut scalers = HashMap::new();
    let mut reports = LoadReports::default();
    drive(&sim.s, &reports, &mut scalers, sim.now);
    // Mumbai's pod is busy; singapore holds requests for the app on s1.
    reports.pods.insert(
        pod,
        (
            sim.now + 1_000,
            PodLoad {
                concurrency: 45.0,
                in_flight: 45,
                ..PodLoad::default()
            },
        ),
    );
    reports
        .held
        .insert(("s1".into(), Sim::key()), (sim.now + 1_000, 12));
    let commands = drive(&sim.s, &reports, &mut scalers, sim.now + 1_000);
    let scaled: Vec<(String, u32)> = commands
        .iter()
        .flat_map(|c| match c {
            Command::Regions { changes, .. } => changes.clone(),
            other => panic!("a region's scale, not {other:?}"),
        })
        .map(|c| match c {
            RegionChange::Scale {
                region, replicas, ..
            } => (region, replicas),
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(
        scaled.iter().any(|(r, n)| r == "mumbai" && *n > 1),
        "{scaled:?}"
    );
    assert!(
        scaled.iter().any(|(r, n)| r == "singapore" && *n >= 1),
        "{scaled:?}"
    );
    assert!(
        !scaled.iter().any(|(r, _)| r == "hyderabad"),
        "no demand there: {scaled:?}"
    );
}

#[test]
fn a_standby_that_takes_over_an_autoscaled_app_holds_the_apps_min_without_demand() {
    use crate::reconcile::autoscale::{LoadReports, drive};
    use std::collections::HashMap;

    let mut app = placed(THREE, 2);
    app.scale = Some(toml::from_str("min = 2\nmax = 10\ntarget_concurrency = 10\n").unwrap());
    let mut sim = Sim::new(app);
    sim.drain("mumbai", "singapore");
    // No demand anywhere, for long enough for the autoscaler to scale down.
    let mut scalers = HashMap::new();
    let reports = LoadReports::default();
    for step in 0..200 {
        let now = sim.now + step * 1_000;
        for c in drive(&sim.s, &reports, &mut scalers, now) {
            sim.s.apply(&c);
        }
        if step == 5 {
            sim.settle();
        }
    }
    sim.settle();
    assert!(!sim.status().routes_to("mumbai"), "drained");
    assert_eq!(
        sim.status().replicas["singapore"],
        2,
        "the region serving now holds the app's min, not its standby min of 0"
    );
    assert_eq!(sim.running("singapore"), 2);
    assert_eq!(sim.status().replicas["hyderabad"], 0, "still a standby");
}

#[test]
fn leadership_moves_to_a_caught_up_voter_of_the_preferred_region_only() {
    use super::{Voter, leader_handoff};
    let v = |id, region: &str, lag, reachable| Voter {
        id,
        region: region.into(),
        lag,
        reachable,
    };
    let voters = [
        v(1, "singapore", Some(0), true),
        v(2, "mumbai", Some(3), true),
        v(3, "mumbai", Some(0), true),
        v(4, "hyderabad", Some(0), true),
    ];
    assert_eq!(
        leader_handoff(1, Some("mumbai"), &voters),
        Some(3),
        "caught up, reachable"
    );
    assert_eq!(
        leader_handoff(3, Some("mumbai"), &voters),
        None,
        "already there"
    );
    assert_eq!(leader_handoff(1, None, &voters), None, "no preference");
    let lost = [
        v(1, "singapore", Some(0), true),
        v(3, "mumbai", Some(0), false),
    ];
    assert_eq!(
        leader_handoff(1, Some("mumbai"), &lost),
        None,
        "the preferred region is not reachable: stay"
    );
}
