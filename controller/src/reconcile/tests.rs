//! The reconcilers against hand-built cluster states, and a small simulation that applies
//! their commands until the cluster converges.

use dabba_spec::resources::{Capacity, HostInfo, HostState, Pod, PodPhase, ResourceKey};

use super::*;
use crate::command::{Command, PodChange, Reply};
use crate::state::tests::{spec, with_blobs};

pub(super) const GIB: u64 = 1 << 30;

pub(crate) fn host(name: &str, zone: &str, memory: u64, labels: &[(&str, &str)]) -> Command {
    Command::RegisterHost {
        info: HostInfo {
            name: name.into(),
            address: format!("http://{name}"),
            region: "ap-south-1".into(),
            zone: zone.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            capacity: Capacity {
                memory,
                instances: 1000,
            },
        },
        at: 0,
        credential: None,
    }
}

pub(super) fn alive(state: &State, now: Millis) -> Observed {
    Observed {
        heartbeats: state.hosts.keys().map(|h| (h.clone(), now)).collect(),
        leader_since: 0,
        ..Observed::default()
    }
}

/// Applies reconciler commands (and marks scheduled pods Running, as hosts would) until
/// nothing more is proposed; returns the number of rounds.
pub(super) fn converge(state: &mut State, observed: &Observed, now: Millis) -> usize {
    for round in 0..20 {
        let commands = reconcile(state, observed, now, &Tuning::default());
        let running: Vec<PodChange> = state
            .pods
            .values()
            .filter(|p| p.phase == PodPhase::Scheduled)
            .map(|p| PodChange::Phase {
                key: p.key(),
                phase: PodPhase::Running,
                reason: None,
            })
            .collect();
        if commands.is_empty() && running.is_empty() {
            return round;
        }
        for c in &commands {
            state.apply(c);
        }
        state.apply(&Command::Pods {
            changes: running,
            at: now,
        });
    }
    panic!("the cluster did not converge in 20 rounds");
}

/// `converge` with every host sending heartbeats at `now`.
pub(super) fn converge_alive(state: &mut State, now: Millis) -> usize {
    let observed = alive(state, now);
    converge(state, &observed, now)
}

fn pods_on(state: &State, host: &str) -> usize {
    state
        .pods
        .values()
        .filter(|p| p.host.as_deref() == Some(host))
        .count()
}

#[test]
fn a_replica_set_gets_its_pods_spread_across_zones() {
    let mut s = with_blobs();
    for c in [
        host("h1", "a", 8 * GIB, &[]),
        host("h2", "a", 8 * GIB, &[]),
        host("h3", "b", 8 * GIB, &[]),
    ] {
        s.apply(&c);
    }
    s.apply(&Command::ApplyApp {
        spec: Box::new(spec("pay", "/pay", 4)),
        at: 1,
    });
    converge_alive(&mut s, 10);
    assert_eq!(s.pods.len(), 4);
    assert!(s.pods.values().all(|p| p.phase == PodPhase::Running));
    // Two per zone: zone b's only host takes two, zone a's hosts one each.
    assert_eq!(pods_on(&s, "h3"), 2);
    assert_eq!(pods_on(&s, "h1") + pods_on(&s, "h2"), 2);
    assert_eq!(pods_on(&s, "h1"), 1);
    // Converged: nothing more to do.
    assert!(reconcile(&s, &alive(&s, 11), 11, &Tuning::default()).is_empty());
}

#[test]
fn a_pod_that_fits_nowhere_stays_pending_with_a_reason_then_runs() {
    let mut s = with_blobs();
    s.apply(&host("small", "a", 64 << 20, &[]));
    s.apply(&Command::ApplyApp {
        spec: Box::new(spec("pay", "/pay", 1)),
        at: 1,
    });
    converge_alive(&mut s, 5);
    let pod = s.pods.values().next().unwrap();
    assert_eq!(pod.phase, PodPhase::Pending);
    assert!(
        pod.reason.as_deref().unwrap().contains("128Mi of memory"),
        "{:?}",
        pod.reason
    );
    s.apply(&host("big", "a", 4 * GIB, &[]));
    converge_alive(&mut s, 6);
    let pod = s.pods.values().next().unwrap();
    assert_eq!(
        (pod.phase, pod.host.as_deref()),
        (PodPhase::Running, Some("big"))
    );
}

#[test]
fn node_selectors_are_honoured() {
    let mut s = with_blobs();
    s.apply(&host("plain", "a", 8 * GIB, &[]));
    s.apply(&host("gpu", "a", 8 * GIB, &[("accel", "yes")]));
    let mut sp = spec("pay", "/pay", 3);
    sp.node_selector.insert("accel".into(), "yes".into());
    s.apply(&Command::ApplyApp {
        spec: Box::new(sp),
        at: 1,
    });
    converge_alive(&mut s, 5);
    assert_eq!(pods_on(&s, "gpu"), 3);
    let mut sp = spec("other", "/other", 1);
    sp.node_selector.insert("region".into(), "mars".into());
    s.apply(&Command::ApplyApp {
        spec: Box::new(sp),
        at: 6,
    });
    converge_alive(&mut s, 7);
    let pending = s.pods.values().find(|p| p.app == "other").unwrap();
    assert_eq!(
        pending.reason.as_deref(),
        Some("no Ready host has labels region=mars")
    );
}

#[test]
fn a_silent_host_is_judged_after_the_timeout_and_its_pods_move() {
    let mut s = with_blobs();
    s.apply(&host("h1", "a", 8 * GIB, &[]));
    s.apply(&host("h2", "b", 8 * GIB, &[]));
    s.apply(&Command::ApplyApp {
        spec: Box::new(spec("pay", "/pay", 2)),
        at: 1,
    });
    converge_alive(&mut s, 10);
    assert_eq!((pods_on(&s, "h1"), pods_on(&s, "h2")), (1, 1));

    // h2 stops sending heartbeats at t=10.
    let mut observed = alive(&s, 10);
    observed.heartbeats.insert("h1".into(), 3_000);
    assert!(
        reconcile(&s, &observed, 3_000, &Tuning::default()).is_empty(),
        "within the timeout"
    );
    observed.heartbeats.insert("h1".into(), 3_011);
    let commands = reconcile(&s, &observed, 3_011, &Tuning::default());
    assert!(commands.contains(&Command::SetHostState {
        name: "h2".into(),
        state: HostState::NotReady,
        at: 3_011
    }));
    converge(&mut s, &observed, 3_011);
    assert_eq!((pods_on(&s, "h1"), pods_on(&s, "h2")), (2, 0));
    assert_eq!(s.hosts["h2"].state, HostState::NotReady);

    // It comes back: Ready again, and takes new work only as new pods need it.
    observed.heartbeats.insert("h2".into(), 3_100);
    converge(&mut s, &observed, 3_100);
    assert_eq!(s.hosts["h2"].state, HostState::Ready);
    assert_eq!(s.pods.len(), 2);
}

#[test]
fn a_new_leader_gives_hosts_a_grace_period() {
    let mut s = with_blobs();
    s.apply(&host("h1", "a", 8 * GIB, &[]));
    // A new leader elected at t=100_000 has no heartbeats at all.
    let observed = Observed {
        heartbeats: Default::default(),
        leader_since: 100_000,
        ..Observed::default()
    };
    assert!(hosts::judge(&s, &observed, 102_000, &Tuning::default()).is_empty());
    assert_eq!(
        hosts::judge(&s, &observed, 103_001, &Tuning::default()),
        vec![("h1".to_string(), HostState::NotReady)]
    );
}

#[test]
fn scaling_down_removes_pending_pods_first() {
    let mut s = with_blobs();
    s.apply(&host("h1", "a", 300 << 20, &[]));
    s.apply(&Command::ApplyApp {
        spec: Box::new(spec("pay", "/pay", 4)),
        at: 1,
    });
    converge_alive(&mut s, 5);
    let pending = s
        .pods
        .values()
        .filter(|p| p.phase == PodPhase::Pending)
        .count();
    assert_eq!(pending, 2, "only two 128Mi pods fit in 300Mi");
    s.apply(&Command::ScaleApp {
        namespace: "default".into(),
        name: "pay".into(),
        replicas: 2,
        at: 6,
        reason: None,
    });
    converge_alive(&mut s, 7);
    assert_eq!(s.pods.len(), 2);
    assert!(s.pods.values().all(|p| p.phase == PodPhase::Running));
}

#[test]
fn a_new_revision_replaces_the_old_one_without_a_gap() {
    let mut s = with_blobs();
    s.apply(&host("h1", "a", 8 * GIB, &[]));
    s.apply(&Command::ApplyApp {
        spec: Box::new(spec("pay", "/pay", 2)),
        at: 1,
    });
    converge_alive(&mut s, 5);
    let mut v2 = spec("pay", "/pay", 2);
    v2.component = crate::state::tests::digest(2);
    s.apply(&Command::ApplyApp {
        spec: Box::new(v2),
        at: 6,
    });

    // First pass: new pods are created, old ones stay while the new ones start.
    let commands = reconcile(&s, &alive(&s, 7), 7, &Tuning::default());
    for c in &commands {
        s.apply(c);
    }
    let by_rev = |s: &State, r: u64| s.pods.values().filter(|p| p.revision == r).count();
    assert_eq!((by_rev(&s, 1), by_rev(&s, 2)), (2, 2));
    // Once the new pods run, the old ones go.
    converge_alive(&mut s, 8);
    assert_eq!((by_rev(&s, 1), by_rev(&s, 2)), (0, 2));
}

#[test]
fn reconciling_is_idempotent_and_deterministic() {
    let mut s = with_blobs();
    s.apply(&host("h1", "a", 8 * GIB, &[]));
    s.apply(&host("h2", "b", 8 * GIB, &[]));
    s.apply(&Command::ApplyApp {
        spec: Box::new(spec("pay", "/pay", 3)),
        at: 1,
    });
    let observed = alive(&s, 5);
    let a = reconcile(&s, &observed, 5, &Tuning::default());
    let b = reconcile(&s, &observed, 5, &Tuning::default());
    assert_eq!(a, b);
    // Applying the same proposals twice (a stale second pass) creates nothing extra.
    for c in a.iter().chain(b.iter()) {
        s.apply(c);
    }
    assert_eq!(s.pods.len(), 3);
}

/// The one pod of `s`, which must have one.
fn only_pod(s: &State) -> &Pod {
    assert_eq!(s.pods.len(), 1, "{:?}", s.pods);
    s.pods.values().next().unwrap()
}

/// The host reports `pod` in `phase` at `at`.
fn report_phase(s: &mut State, pod: &ResourceKey, phase: PodPhase, at: Millis) {
    s.apply(&Command::Pods {
        changes: vec![PodChange::Phase {
            key: pod.clone(),
            phase,
            reason: (phase == PodPhase::Failed).then(|| "component failed to load".into()),
        }],
        at,
    });
}

#[test]
fn a_crash_looping_pod_is_replaced_after_a_doubling_back_off_reset_by_a_long_run() {
    let mut s = with_blobs();
    s.apply(&host("h1", "a", 4 * GIB, &[]));
    s.apply(&Command::ApplyApp {
        spec: Box::new(spec("pay", "/pay", 1)),
        at: 0,
    });
    let tuning = Tuning::default();
    let mut t = 1_000;
    converge_alive(&mut s, t);
    // (failure, wait before its replacement, restarts and back-off of the replacement)
    let expected = [(10_000, 1, 1), (20_000, 2, 2), (40_000, 3, 3)];
    for (wait, restarts, backoff) in expected {
        let pod = only_pod(&s).key();
        report_phase(&mut s, &pod, PodPhase::Failed, t);
        let soon = t + wait - 1;
        assert!(
            reconcile(&s, &alive(&s, soon), soon, &tuning).is_empty(),
            "a Failed pod is left alone during its back-off of {wait} ms"
        );
        t += wait;
        for c in reconcile(&s, &alive(&s, t), t, &tuning) {
            s.apply(&c);
        }
        let next = only_pod(&s);
        assert_ne!(next.key(), pod, "replaced after {wait} ms");
        assert_eq!(next.phase, PodPhase::Scheduled);
        assert_eq!((next.restarts, next.backoff), (restarts, backoff));
    }
    // The fourth pod runs for ten minutes, then fails: a first failure again, though
    // the count goes on.
    let pod = only_pod(&s).key();
    report_phase(&mut s, &pod, PodPhase::Running, t);
    t += dabba_spec::resources::RestartBackoff::RESET_AFTER;
    report_phase(&mut s, &pod, PodPhase::Failed, t);
    assert_eq!(s.pods[&pod].backoff, 0, "the back-off starts again");
    assert!(!s.pods[&pod].crash_looping());
    t += 10_000;
    for c in reconcile(&s, &alive(&s, t), t, &tuning) {
        s.apply(&c);
    }
    let next = only_pod(&s);
    assert_ne!(next.key(), pod, "replaced after 10 s");
    assert_eq!((next.restarts, next.backoff), (4, 1));
    // A pod that fails after a short run stays in the loop.
    let pod = next.key();
    report_phase(&mut s, &pod, PodPhase::Running, t);
    report_phase(&mut s, &pod, PodPhase::Failed, t + 60_000);
    assert_eq!(s.pods[&pod].backoff, 1);
    assert!(s.pods[&pod].crash_looping());
}

#[test]
fn a_pod_replaced_because_its_host_was_lost_starts_without_restarts() {
    let mut s = with_blobs();
    s.apply(&host("h1", "a", 4 * GIB, &[]));
    s.apply(&host("h2", "b", 4 * GIB, &[]));
    s.apply(&Command::ApplyApp {
        spec: Box::new(spec("pay", "/pay", 1)),
        at: 0,
    });
    converge_alive(&mut s, 1_000);
    let first = only_pod(&s).clone();
    let survivor = if first.host.as_deref() == Some("h1") {
        "h2"
    } else {
        "h1"
    };
    let mut observed = alive(&s, 1_000);
    observed.heartbeats.insert(survivor.into(), 20_000);
    converge(&mut s, &observed, 20_000);
    let next = only_pod(&s);
    assert_eq!(next.host.as_deref(), Some(survivor));
    assert_eq!(
        (next.restarts, next.backoff),
        (0, 0),
        "a lost host is no crash"
    );
}

fn autoscaled(name: &str, prefix: &str, replicas: u32) -> Command {
    let mut s = spec(name, prefix, replicas);
    s.scale = Some(dabba_spec::scale::Scale {
        target_concurrency: Some(10),
        target_utilization: 100,
        scale_to_zero_after: dabba_spec::HumanDuration::from_secs(30),
        ..Default::default()
    });
    Command::ApplyApp {
        spec: Box::new(s),
        at: 1,
    }
}

#[test]
fn activation_scales_from_zero_once_with_the_pod_on_the_asking_host() {
    let mut s = with_blobs();
    s.apply(&host("h1", "a", GIB, &[]));
    s.apply(&autoscaled("pay", "/pay", 0));
    s.apply(&Command::ApplyApp {
        spec: Box::new(spec("fixed", "/fixed", 0)),
        at: 1,
    });
    let activate = |app: &str| Command::Activate {
        namespace: "default".into(),
        name: app.into(),
        host: Some("h1".into()),
        at: 5,
    };
    let Reply::Activated { replicas, pod } = s.apply(&activate("pay")) else {
        panic!("not an activation reply");
    };
    let pod = pod.expect("a pod");
    assert_eq!((replicas, pod.host.as_deref()), (1, Some("h1")));
    assert_eq!(pod.phase, PodPhase::Scheduled);
    assert!(s.events.iter().any(|e| e.message.contains("0 → 1")));
    // Already activated: nothing more.
    let again = s.apply(&activate("pay"));
    assert_eq!(
        again,
        Reply::Activated {
            replicas: 1,
            pod: None
        }
    );
    assert_eq!(pods_on(&s, "h1"), 1);
    // The replica reconciler sees the activation as satisfied.
    assert!(replicas::reconcile(&s, &["h1"].into(), 6, &Tuning::default()).is_empty());
    // An app without [scale] is never activated.
    let Reply::Activated { replicas, pod } = s.apply(&activate("fixed")) else {
        panic!("not an activation reply");
    };
    assert_eq!((replicas, pod), (0, None));
}

#[test]
fn the_first_pod_of_an_activation_goes_to_the_asking_host_only_if_it_fits_there() {
    let mut s = with_blobs();
    s.apply(&host("h1", "a", GIB, &[]));
    s.apply(&host("small", "b", 1 << 20, &[]));
    s.apply(&autoscaled("pay", "/pay", 0));
    let pay = ResourceKey::new("default", "pay");
    assert_eq!(
        scheduler::activation_host(&s, &pay, "h1").as_deref(),
        Some("h1")
    );
    // Too little memory for the app's 128 MiB, an unknown host, a NotReady host, a
    // missing app: no place now (the replica-set reconciler places the pod).
    assert_eq!(scheduler::activation_host(&s, &pay, "small"), None);
    assert_eq!(scheduler::activation_host(&s, &pay, "h9"), None);
    assert_eq!(
        scheduler::activation_host(&s, &ResourceKey::new("default", "nope"), "h1"),
        None
    );
    s.apply(&Command::SetHostState {
        name: "h1".into(),
        state: HostState::NotReady,
        at: 2,
    });
    assert_eq!(scheduler::activation_host(&s, &pay, "h1"), None);
}

#[test]
fn a_heartbeat_moves_only_its_own_placed_pods_and_only_when_something_changed() {
    use dabba_spec::api::PodReport;
    let mut s = with_blobs();
    s.apply(&host("h1", "a", GIB, &[]));
    s.apply(&host("h2", "b", GIB, &[]));
    s.apply(&Command::ApplyApp {
        spec: Box::new(spec("pay", "/pay", 2)),
        at: 1,
    });
    converge_alive(&mut s, 2);
    let on = |h: &str| {
        s.pods
            .values()
            .find(|p| p.host.as_deref() == Some(h))
            .unwrap()
            .key()
    };
    let (mine, theirs) = (on("h1"), on("h2"));
    let report = |key: &ResourceKey, phase, reason: Option<&str>| PodReport {
        key: key.clone(),
        phase,
        reason: reason.map(Into::into),
        load: None,
    };
    // Converged pods run: reporting Running again changes nothing.
    assert!(pods::reported(&s, "h1", &[report(&mine, PodPhase::Running, None)]).is_empty());
    // A failure of its own pod is a change; a report about another host's pod, or an
    // unknown pod, is not believed.
    let changes = pods::reported(
        &s,
        "h1",
        &[
            report(&mine, PodPhase::Failed, Some("trap")),
            report(&theirs, PodPhase::Failed, Some("not yours")),
            report(
                &ResourceKey::new("default", "ghost"),
                PodPhase::Running,
                None,
            ),
        ],
    );
    assert_eq!(
        changes,
        [PodChange::Phase {
            key: mine.clone(),
            phase: PodPhase::Failed,
            reason: Some("trap".into())
        }]
    );
    // A Pending pod has no host to report it.
    s.apply(&Command::Pods {
        changes: vec![PodChange::Place {
            key: mine.clone(),
            host: None,
            reason: Some("no room".into()),
        }],
        at: 3,
    });
    assert!(pods::reported(&s, "h1", &[report(&mine, PodPhase::Running, None)]).is_empty());
}

#[test]
fn the_autoscaler_follows_reported_load_and_returns_to_zero_after_the_grace() {
    use crate::reconcile::autoscale::{LoadReports, drive};
    use dabba_spec::api::PodLoad;
    use std::collections::HashMap;

    let mut s = with_blobs();
    s.apply(&host("h1", "a", GIB, &[]));
    s.apply(&autoscaled("pay", "/pay", 1));
    converge_alive(&mut s, 2);
    let pod = s.pods.keys().next().unwrap().clone();
    let mut scalers = HashMap::new();
    let mut reports = LoadReports::default();
    // A leader that has never seen the app does not scale it to zero at once.
    assert!(drive(&s, &reports, &mut scalers, 1_000).is_empty());

    // 45 in flight at 10 per pod, averaged with the idle second before over the panic
    // window: 22.5, so panic, and 3 pods.
    reports.pods.insert(
        pod.clone(),
        (
            2_000,
            PodLoad {
                concurrency: 45.0,
                in_flight: 45,
                ..PodLoad::default()
            },
        ),
    );
    let commands = drive(&s, &reports, &mut scalers, 2_000);
    let [
        Command::ScaleApp {
            replicas, reason, ..
        },
    ] = commands.as_slice()
    else {
        panic!("expected one scale command, got {commands:?}");
    };
    assert_eq!(*replicas, 3);
    assert!(reason.as_deref().unwrap().contains("panic"), "{reason:?}");
    assert_eq!(
        scalers[&(ResourceKey::new("default", "pay"), None)]
            .status
            .as_ref()
            .unwrap()
            .mode,
        dabba_spec::scale::AutoscalerMode::Panic
    );
    for c in &commands {
        s.apply(c);
    }
    converge_alive(&mut s, 2_100);

    // Requests held by an activator count as demand too: (0 + 45 + 100) / 3 → 5 pods,
    // which the default up policy (+4 pods per 15 s from 1) allows.
    reports.pods.clear();
    reports.held.insert(
        ("h1".into(), ResourceKey::new("default", "pay")),
        (2_500, 100),
    );
    let commands = drive(&s, &reports, &mut scalers, 2_500);
    assert!(
        matches!(commands.as_slice(), [Command::ScaleApp { replicas, .. }] if *replicas == 5),
        "{commands:?}"
    );

    // Idle, past the panic, the stabilization window and the grace: zero.
    reports.held.clear();
    let mut last = None;
    let mut now = 3_000;
    while now < 800_000 {
        for c in drive(&s, &reports, &mut scalers, now) {
            if let Command::ScaleApp { replicas, .. } = &c {
                last = Some(*replicas);
            }
            s.apply(&c);
        }
        now += 1_000;
    }
    assert_eq!(last, Some(0));
    assert_eq!(s.apps["default/pay"].spec.replicas, 0);
    assert_eq!(
        scalers[&(ResourceKey::new("default", "pay"), None)]
            .status
            .as_ref()
            .unwrap()
            .mode,
        dabba_spec::scale::AutoscalerMode::ScaledToZero
    );
}

#[test]
fn cron_jobs_are_stored_through_commands_and_claimed_by_the_reconciler() {
    use dabba_spec::cronjob::CronManifest;

    let mut s = with_blobs();
    s.apply(&host("h1", "a", GIB, &[]));
    let text = "[[cron]]\nname = \"tick\"\nschedule = \"*/5 * * * *\"\ncomponent = \"t.wasm\"\n";
    let spec = CronManifest::parse("c.toml", text).unwrap().cron.remove(0);
    let apply = |spec: &dabba_spec::cronjob::CronSection, n: u8| Command::ApplyCronJob {
        spec: Box::new(spec.clone()),
        component: crate::state::tests::digest(n),
        at: 1_000,
    };
    // A component the cluster lacks, or a bad spec, is refused.
    assert!(matches!(s.apply(&apply(&spec, 9)), Reply::Rejected { .. }));
    let mut bad = spec.clone();
    bad.timezone = "Nowhere/Nothing".into();
    assert!(matches!(s.apply(&apply(&bad, 1)), Reply::Rejected { .. }));
    assert!(s.cron.jobs.is_empty());
    assert_eq!(s.apply(&apply(&spec, 1)), Reply::Ok);

    // At 00:05 past the epoch's first minutes: one claim, once.
    let now = 5 * 60_000 + 10;
    let commands = reconcile(&s, &alive(&s, now), now, &Tuning::default());
    let claims: Vec<&Command> = commands
        .iter()
        .filter(|c| matches!(c, Command::Cron { .. }))
        .collect();
    assert_eq!(claims.len(), 1, "{commands:?}");
    for c in &commands {
        s.apply(c);
    }
    assert!(s.cron.runs.contains_key("default/tick-197001010005"));
    let again = reconcile(&s, &alive(&s, now + 1000), now + 1000, &Tuning::default());
    let claims_again = again.iter().any(|c| {
        matches!(c, Command::Cron { changes, .. }
            if changes.iter().any(|x| matches!(x, crate::command::CronChange::Claim { .. })))
    });
    assert!(!claims_again, "{again:?}");

    // It survives a snapshot.
    let json = serde_json::to_string(&s).unwrap();
    let back: State = serde_json::from_str(&json).unwrap();
    assert_eq!(back.cron, s.cron);
    // And deleting the job removes its runs.
    s.apply(&Command::DeleteCronJob {
        namespace: "default".into(),
        name: "tick".into(),
        at: now,
    });
    assert!(s.cron.jobs.is_empty() && s.cron.runs.is_empty());
}

#[test]
fn a_rolling_update_is_paced_by_max_surge_and_max_unavailable() {
    let by_rev = |s: &State, r: u64, running: bool| {
        s.pods
            .values()
            .filter(|p| p.revision == r && (!running || p.phase == PodPhase::Running))
            .count()
    };
    for (surge, unavailable, first_new, first_old) in [
        // One pod above the count: one new pod, and the old stay until it runs.
        ("1", "0", 1, 4),
        // None above, one below: an old pod goes first, then a new one comes.
        ("0", "1", 0, 3),
    ] {
        let mut s = with_blobs();
        s.apply(&host("h1", "a", 8 * GIB, &[]));
        let mut v1 = spec("pay", "/pay", 4);
        v1.rollout = Some(
            toml::from_str(&format!(
                "max_surge = {surge}\nmax_unavailable = {unavailable}\n"
            ))
            .unwrap(),
        );
        s.apply(&Command::ApplyApp {
            spec: Box::new(v1.clone()),
            at: 1,
        });
        converge_alive(&mut s, 5);
        let mut v2 = v1;
        v2.component = crate::state::tests::digest(2);
        s.apply(&Command::ApplyApp {
            spec: Box::new(v2),
            at: 6,
        });
        let commands = reconcile(&s, &alive(&s, 7), 7, &Tuning::default());
        for c in &commands {
            s.apply(c);
        }
        assert_eq!(
            (by_rev(&s, 2, false), by_rev(&s, 1, false)),
            (first_new, first_old),
            "surge {surge}, unavailable {unavailable}"
        );
        // Step by step, never more than 5 pods and never fewer than 3 running.
        for round in 0..20 {
            let total = s.pods.len();
            let running = s
                .pods
                .values()
                .filter(|p| p.phase == PodPhase::Running)
                .count();
            assert!(
                total <= 4 + surge.parse::<usize>().unwrap(),
                "round {round}: {total}"
            );
            assert!(
                running >= 4 - unavailable.parse::<usize>().unwrap(),
                "round {round}: {running}"
            );
            let now = 8 + round;
            let commands = reconcile(&s, &alive(&s, now), now, &Tuning::default());
            let starting: Vec<PodChange> = s
                .pods
                .values()
                .filter(|p| p.phase == PodPhase::Scheduled)
                .map(|p| PodChange::Phase {
                    key: p.key(),
                    phase: PodPhase::Running,
                    reason: None,
                })
                .collect();
            if commands.is_empty() && starting.is_empty() {
                break;
            }
            for c in &commands {
                s.apply(c);
            }
            s.apply(&Command::Pods {
                changes: starting,
                at: now,
            });
        }
        assert_eq!((by_rev(&s, 2, true), by_rev(&s, 1, false)), (4, 0));
    }
}
