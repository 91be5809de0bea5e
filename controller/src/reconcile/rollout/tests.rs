//! The rollout step machine, end to end over the state machine: the reconcilers'
//! proposals are applied as Raft would apply them, hosts "run" what is scheduled, and
//! analysis measurements are fed in with chosen values.

use dabba_spec::analysis::{AnalysisTemplate, Measurement};
use dabba_spec::resources::{AppSpec, Millis, PodPhase, ResourceKey};
use dabba_spec::rollout::{PauseReason, Rollout, RolloutPhase, RolloutStatus};
use serde::Deserialize;

use super::{due, plan};
use crate::command::{Command, Reply, RolloutChange};
use crate::reconcile::tests::{GIB, converge_alive, host};
use crate::state::State;
use crate::state::tests::{digest, spec, with_blobs};

#[derive(Deserialize)]
struct Sections {
    rollout: Rollout,
    #[serde(default)]
    analysis: Vec<AnalysisTemplate>,
}

const RATE: &str = r#"
[[analysis]]
name = "success-rate"
[[analysis.metrics]]
name = "rate"
measure = "success_rate"
interval = "10s"
count = 2
success_condition = "result >= 0.95"
min_requests = 20
"#;

struct Sim {
    s: State,
    now: Millis,
    spec: AppSpec,
}

impl Sim {
    /// An app of `replicas` pods at revision 1 on two hosts, with these sections.
    fn new(sections: &str, replicas: u32) -> Sim {
        let parsed: Sections = toml::from_str(sections).unwrap_or_else(|e| panic!("{e}"));
        let mut s = with_blobs();
        s.apply(&host("h1", "a", 64 * GIB, &[]));
        s.apply(&host("h2", "b", 64 * GIB, &[]));
        let mut spec = spec("search", "/search", replicas);
        spec.rollout = Some(parsed.rollout);
        spec.analysis = parsed.analysis;
        let mut sim = Sim {
            s,
            now: 1_000,
            spec,
        };
        sim.apply_spec();
        sim.settle();
        sim
    }

    fn key() -> ResourceKey {
        ResourceKey::new("default", "search")
    }

    fn apply_spec(&mut self) -> Reply {
        self.s.apply(&Command::ApplyApp {
            spec: Box::new(self.spec.clone()),
            at: self.now,
        })
    }

    /// A new revision running component `n`.
    fn deploy(&mut self, n: u8) {
        self.spec.component = digest(n);
        assert!(matches!(self.apply_spec(), Reply::App { .. }));
        self.settle();
    }

    /// Lets the reconcilers act (and hosts start what they are given) at this time.
    fn settle(&mut self) {
        converge_alive(&mut self.s, self.now);
    }

    fn advance(&mut self, ms: Millis) {
        self.now += ms;
        self.settle();
    }

    /// Takes every measurement due now with this value over this many requests.
    fn measure(&mut self, value: f64, requests: u64) -> usize {
        let due = due(&self.s, self.now, 0);
        for d in &due {
            // Only measured metrics count requests; a check's value stands alone.
            let requests = d.spec.measure.is_some().then_some(requests);
            let (phase, message) = d.spec.judge(Some(value), requests);
            self.s.apply(&Command::Rollout {
                changes: vec![RolloutChange::Measured {
                    app: d.app.clone(),
                    canary: d.canary,
                    run: d.run,
                    started: d.started,
                    metric: d.metric,
                    measurement: Measurement {
                        at: self.now,
                        value: Some(value),
                        requests,
                        phase,
                        message,
                    },
                }],
                at: self.now,
            });
        }
        self.settle();
        due.len()
    }

    fn change(&mut self, c: impl FnOnce(ResourceKey, u64) -> RolloutChange) {
        let canary = self.r().canary.expect("a canary");
        self.s.apply(&Command::Rollout {
            changes: vec![c(Sim::key(), canary)],
            at: self.now,
        });
        self.settle();
    }

    fn r(&self) -> &RolloutStatus {
        &self.s.rollouts[&Sim::key()]
    }

    /// Running pods of each revision, by revision.
    fn running(&self, revision: u64) -> usize {
        self.s
            .pods
            .values()
            .filter(|p| p.revision == revision && p.phase == PodPhase::Running)
            .count()
    }

    fn events(&self, reason: &str) -> usize {
        self.s.events.iter().filter(|e| e.reason == reason).count()
    }
}

const SEARCH: &str = r#"
[rollout]
strategy = "canary"
[[rollout.steps]]
set_weight = 5
[[rollout.steps]]
pause = "30s"
[[rollout.steps]]
set_weight = 25
[[rollout.steps]]
analysis = { templates = ["success-rate"] }
[[rollout.steps]]
set_weight = 50
[[rollout.steps]]
pause = {}
"#;

#[test]
fn a_canary_walks_its_steps_and_takes_over() {
    let mut sim = Sim::new(&format!("{SEARCH}{RATE}"), 4);
    assert!(
        sim.s.rollouts.is_empty(),
        "the first revision has nothing to roll over"
    );
    sim.deploy(2);
    let r = sim.r().clone();
    assert_eq!((r.stable, r.canary, r.step, r.weight), (1, Some(2), 1, 5));
    // 5% of 4 pods is one canary pod; the stable keeps all four. Once it runs, the
    // weight step is done and the 30 s pause began.
    assert_eq!((sim.running(1), sim.running(2)), (4, 1));
    assert_eq!(sim.r().phase, RolloutPhase::Paused);
    sim.advance(29_000);
    assert_eq!(sim.r().step, 1, "the pause has not passed");
    sim.advance(1_000);
    // Weight 25: still one pod (ceil of 1.0); then the analysis step.
    assert_eq!((sim.r().step, sim.r().weight), (3, 25));
    assert_eq!(sim.r().running_analysis().count(), 1);
    assert_eq!(
        sim.measure(0.99, 100),
        0,
        "nothing is due before the interval"
    );
    sim.advance(10_000);
    assert_eq!(sim.measure(0.99, 100), 1);
    assert_eq!(sim.r().step, 3, "one of two measurements");
    sim.advance(10_000);
    assert_eq!(sim.measure(0.97, 100), 1);
    // Analysis passed: weight 50 (two canary pods), then paused until promoted.
    assert_eq!((sim.r().step, sim.r().weight), (5, 50));
    assert_eq!((sim.running(1), sim.running(2)), (4, 2));
    assert_eq!(sim.r().paused.map(|p| p.reason), Some(PauseReason::Step));
    sim.advance(3_600_000);
    assert_eq!(sim.r().step, 5, "an indefinite pause waits for a person");
    sim.change(|app, canary| RolloutChange::Promote {
        app,
        canary,
        full: false,
    });
    // Past the last step the canary takes everything once it runs its full count.
    let r = sim.r().clone();
    assert_eq!(
        (r.stable, r.canary, r.phase),
        (2, None, RolloutPhase::Healthy)
    );
    assert_eq!(
        (sim.running(1), sim.running(2)),
        (4, 4),
        "the old stable waits 30 s"
    );
    sim.advance(30_000);
    assert_eq!((sim.running(1), sim.running(2)), (0, 4));
    assert_eq!(sim.events("RolloutCompleted"), 1);
    assert_eq!(sim.events("ScaledDown"), 1);
}

#[test]
fn a_failing_analysis_aborts_and_a_retry_starts_over() {
    let mut sim = Sim::new(&format!("{SEARCH}{RATE}"), 4);
    sim.deploy(2);
    sim.advance(30_000);
    assert_eq!(sim.r().step, 3);
    sim.advance(10_000);
    sim.measure(0.70, 100);
    let r = sim.r().clone();
    assert!(r.aborted && r.phase == RolloutPhase::Degraded, "{r:?}");
    assert_eq!(r.weight, 0, "one entry takes the canary's traffic away");
    assert!(
        r.message.contains("success-rate/rate = 0.7000"),
        "{}",
        r.message
    );
    assert_eq!(
        sim.running(2),
        1,
        "the aborted canary keeps its pod for a while"
    );
    assert_eq!(
        sim.measure(0.99, 100),
        0,
        "an aborted rollout measures nothing"
    );
    sim.advance(30_000);
    assert_eq!(sim.running(2), 0);
    assert_eq!(sim.running(1), 4);
    // A retry begins again at the first step.
    sim.change(|app, canary| RolloutChange::Retry { app, canary });
    let r = sim.r().clone();
    assert_eq!((r.aborted, r.step, r.weight), (false, 1, 5));
    assert_eq!(sim.running(2), 1);
}

#[test]
fn too_few_requests_pause_the_rollout_for_a_person() {
    let mut sim = Sim::new(&format!("{SEARCH}{RATE}"), 4);
    sim.deploy(2);
    sim.advance(30_000);
    sim.advance(10_000);
    assert_eq!(sim.measure(1.0, 3), 1);
    let r = sim.r().clone();
    assert_eq!(r.paused.map(|p| p.reason), Some(PauseReason::Inconclusive));
    assert!(!r.aborted && r.step == 3, "{r:?}");
    // A resume runs the step's analysis again.
    sim.change(|app, canary| RolloutChange::Resume { app, canary });
    assert_eq!(sim.r().paused, None);
    assert_eq!(sim.r().running_analysis().count(), 1);
    sim.advance(10_000);
    sim.measure(0.99, 50);
    sim.advance(10_000);
    sim.measure(0.99, 50);
    assert_eq!(sim.r().step, 5);
}

#[test]
fn a_full_promote_skips_every_step_and_analysis() {
    let mut sim = Sim::new(&format!("{SEARCH}{RATE}"), 3);
    sim.deploy(2);
    sim.change(|app, canary| RolloutChange::Promote {
        app,
        canary,
        full: true,
    });
    assert_eq!(sim.r().stable, 2);
    assert_eq!(sim.r().phase, RolloutPhase::Healthy);
    assert_eq!(sim.running(2), 3);
}

#[test]
fn a_step_proposed_twice_moves_the_rollout_once() {
    let mut sim = Sim::new(&format!("{SEARCH}{RATE}"), 4);
    sim.deploy(2);
    let step = RolloutChange::Step {
        app: Sim::key(),
        canary: 2,
        step: 2,
    };
    let before = sim.s.version;
    sim.s.apply(&Command::Rollout {
        changes: vec![step.clone(), step.clone()],
        at: sim.now,
    });
    assert_eq!(sim.r().step, 2);
    assert_eq!(sim.s.version, before + 1);
    // One naming another canary changes nothing.
    sim.s.apply(&Command::Rollout {
        changes: vec![RolloutChange::Step {
            app: Sim::key(),
            canary: 7,
            step: 3,
        }],
        at: sim.now,
    });
    assert_eq!(sim.r().step, 2);
}

#[test]
fn a_background_analysis_aborts_at_whatever_step() {
    let text = SEARCH.replacen(
        "strategy = \"canary\"\n",
        "strategy = \"canary\"\nanalysis = { templates = [\"success-rate\"], starting_step = 1 }\n",
        1,
    ) + RATE;
    let mut sim = Sim::new(&text, 4);
    sim.deploy(2);
    assert_eq!(sim.r().step, 1);
    assert!(
        sim.r()
            .running_analysis()
            .any(|r| r.kind == dabba_spec::analysis::RunKind::Background)
    );
    sim.advance(10_000);
    sim.measure(0.5, 100);
    assert!(sim.r().aborted, "{:?}", sim.r());
}

#[test]
fn a_stuck_canary_degrades_at_its_progress_deadline_or_aborts() {
    for abort in [false, true] {
        let text = SEARCH.replacen(
            "strategy = \"canary\"\n",
            &format!(
                "strategy = \"canary\"\nprogress_deadline = \"1m\"\nprogress_deadline_abort = {abort}\n"
            ),
            1,
        );
        let mut sim = Sim::new(&format!("{text}{RATE}"), 2);
        // The canary's pods cannot run: nothing fits anywhere.
        for h in sim.s.hosts.values_mut() {
            h.info.capacity.memory = 0;
        }
        sim.deploy(2);
        assert_eq!(sim.running(2), 0);
        sim.advance(59_000);
        assert_eq!(sim.r().phase, RolloutPhase::Progressing);
        sim.advance(2_000);
        assert_eq!(sim.r().phase, RolloutPhase::Degraded);
        assert_eq!(sim.r().aborted, abort);
        assert!(
            sim.r().message.contains("progress_deadline"),
            "{}",
            sim.r().message
        );
    }
}

#[test]
fn undo_to_the_stable_revision_mid_rollout_is_one_entry() {
    let mut sim = Sim::new(&format!("{SEARCH}{RATE}"), 4);
    sim.deploy(2);
    let reply = sim.s.apply(&Command::UndoApp {
        namespace: "default".into(),
        name: "search".into(),
        to: None,
        at: sim.now,
    });
    assert!(
        matches!(reply, Reply::App { ref app } if app.revision == 1),
        "{reply:?}"
    );
    let r = sim.r().clone();
    assert_eq!(
        (r.stable, r.canary, r.phase),
        (1, None, RolloutPhase::Healthy)
    );
    sim.settle();
    assert_eq!(
        (sim.running(1), sim.running(2)),
        (4, 1),
        "kept for the abort delay"
    );
    // Applying the stable manifest again does the same.
    sim.deploy(3);
    assert_eq!(sim.r().canary, Some(3));
    sim.spec.component = digest(1);
    assert!(matches!(sim.apply_spec(), Reply::App { ref app } if app.revision == 1));
    assert_eq!(sim.r().canary, None);
    assert_eq!(sim.s.revisions[&Sim::key()].len(), 3, "no new revision");
}

#[test]
fn undo_within_the_rollback_window_skips_the_steps_and_outside_it_does_not() {
    let text = SEARCH.replacen(
        "strategy = \"canary\"\n",
        "strategy = \"canary\"\nrollback_window = { revisions = 1 }\nscale_down_delay = \"1s\"\n",
        1,
    );
    let mut sim = Sim::new(&format!("{text}{RATE}"), 2);
    for n in [2, 3] {
        sim.deploy(n);
        sim.change(|app, canary| RolloutChange::Promote {
            app,
            canary,
            full: true,
        });
        sim.advance(2_000);
    }
    assert_eq!(sim.r().stable, 3);
    assert_eq!(sim.running(2), 0, "revision 2 was scaled down");
    // Revision 2 is the one before: its rollout skips the steps.
    sim.s.apply(&Command::UndoApp {
        namespace: "default".into(),
        name: "search".into(),
        to: Some(2),
        at: sim.now,
    });
    sim.settle();
    assert_eq!((sim.r().stable, sim.r().phase), (2, RolloutPhase::Healthy));
    // Revision 1 is outside the window: its rollout walks the steps.
    sim.advance(2_000);
    sim.s.apply(&Command::UndoApp {
        namespace: "default".into(),
        name: "search".into(),
        to: Some(1),
        at: sim.now,
    });
    sim.settle();
    assert_eq!(
        (sim.r().canary, sim.r().step, sim.r().weight),
        (Some(1), 1, 5)
    );
    // An undo to a revision that was never kept says which are.
    let reply = sim.s.apply(&Command::UndoApp {
        namespace: "default".into(),
        name: "search".into(),
        to: Some(42),
        at: sim.now,
    });
    assert!(
        matches!(&reply, Reply::Rejected { message, .. } if message.contains("revisions kept: 1, 2, 3")),
        "{reply:?}"
    );
}

const BLUE_GREEN: &str = r#"
[rollout]
strategy = "blue-green"
preview_route = "/search-preview"
auto_promotion_seconds = 5
pre_promotion_analysis = { templates = ["smoke"] }
post_promotion_analysis = { templates = ["success-rate"] }
[[analysis]]
name = "smoke"
[[analysis.metrics]]
name = "books-a-payment"
job = { component = "smoke.wasm" }
interval = "1s"
"#;

#[test]
fn blue_green_previews_switches_and_undoes_instantly_within_the_delay() {
    let mut sim = Sim::new(&format!("{BLUE_GREEN}{RATE}"), 3);
    sim.deploy(2);
    let r = sim.r().clone();
    assert!(r.preview_ready.is_some(), "{r:?}");
    assert_eq!((r.weight, r.promoted), (0, false));
    assert_eq!(
        (sim.running(1), sim.running(2)),
        (3, 3),
        "a full-size preview"
    );
    sim.advance(5_000);
    assert!(
        !sim.r().promoted,
        "the pre-promotion analysis has not passed"
    );
    assert_eq!(sim.measure(1.0, 0), 1);
    // The smoke check passed: switched, and the post-promotion analysis runs.
    assert!(sim.r().promoted);
    assert_eq!(sim.r().weight, 100);
    sim.advance(10_000);
    sim.measure(0.99, 500);
    sim.advance(10_000);
    sim.measure(0.99, 500);
    assert_eq!((sim.r().stable, sim.r().phase), (2, RolloutPhase::Healthy));
    assert_eq!(sim.running(1), 3, "the old active keeps its pods for 30 s");
    sim.advance(10_000);
    let reply = sim.s.apply(&Command::UndoApp {
        namespace: "default".into(),
        name: "search".into(),
        to: None,
        at: sim.now,
    });
    assert!(
        matches!(reply, Reply::App { ref app } if app.revision == 1),
        "{reply:?}"
    );
    assert_eq!(
        (sim.r().stable, sim.r().canary),
        (1, None),
        "no rollout: instant"
    );
}

#[test]
fn a_preview_route_may_not_take_another_apps_route() {
    let mut sim = Sim::new(&format!("{BLUE_GREEN}{RATE}"), 1);
    let reply = sim.s.apply(&Command::ApplyApp {
        spec: Box::new(spec("other", "/search-preview", 1)),
        at: sim.now,
    });
    assert!(
        matches!(&reply, Reply::Rejected { message, .. } if message.contains("default/search")),
        "{reply:?}"
    );
    sim.settle();
}

#[test]
fn planning_is_idempotent() {
    let mut sim = Sim::new(&format!("{SEARCH}{RATE}"), 4);
    sim.deploy(2);
    sim.now += 30_000;
    let a = plan(&sim.s, sim.now);
    let b = plan(&sim.s, sim.now);
    assert_eq!(a, b);
    assert_eq!(a.len(), 1, "{a:?}");
    sim.settle();
    assert!(plan(&sim.s, sim.now).is_empty());
}

/// Replica-set sizes of the stable and canary revisions.
fn sizes(sim: &Sim) -> (u32, u32) {
    let rs = |rev: u64| {
        sim.s
            .replica_sets
            .get(&crate::state::replica_set_key("default", "search", rev))
            .map_or(0, |r| r.replicas)
    };
    let r = sim.r();
    (rs(r.stable), r.canary.map_or(0, rs))
}

#[test]
fn scaling_a_rolling_out_app_resizes_both_revisions() {
    let mut sim = Sim::new(&format!("{SEARCH}{RATE}"), 4);
    sim.deploy(2);
    sim.advance(30_000);
    sim.advance(1);
    assert_eq!((sim.r().weight, sizes(&sim)), (25, (4, 1)));
    sim.s.apply(&Command::ScaleApp {
        namespace: "default".into(),
        name: "search".into(),
        replicas: 8,
        at: sim.now,
        reason: None,
    });
    assert_eq!(
        sizes(&sim),
        (8, 2),
        "the stable whole, the canary a quarter"
    );
    sim.settle();
    assert_eq!((sim.running(1), sim.running(2)), (8, 2));
}

#[test]
fn an_autoscaled_app_splits_by_demand_and_activates_from_zero() {
    let mut sim = Sim::new(&format!("{SEARCH}{RATE}"), 4);
    sim.spec.scale = Some(toml::from_str("min = 0\nmax = 10\n").unwrap());
    sim.apply_spec();
    sim.deploy(2);
    assert_eq!((sim.r().weight, sizes(&sim)), (5, (3, 1)));
    // The canary carried half the demand (a header route, say): half the pods.
    sim.change(|app, canary| RolloutChange::Share {
        app,
        canary,
        share: 50,
    });
    assert_eq!(sizes(&sim), (2, 2));
    // At zero, both revisions have nothing; a request activates the app, its first
    // pod the stable revision's, and the canary gets one too.
    sim.s.apply(&Command::ScaleApp {
        namespace: "default".into(),
        name: "search".into(),
        replicas: 0,
        at: sim.now,
        reason: None,
    });
    sim.settle();
    assert_eq!((sim.running(1), sim.running(2)), (0, 0));
    let reply = sim.s.apply(&Command::Activate {
        namespace: "default".into(),
        name: "search".into(),
        host: Some("h1".into()),
        at: sim.now,
    });
    assert!(
        matches!(&reply, Reply::Activated { pod: Some(p), .. } if p.revision == 1),
        "{reply:?}"
    );
    sim.settle();
    assert_eq!((sim.running(1), sim.running(2)), (1, 1));
}

#[test]
fn the_revisions_a_rollout_uses_outlive_the_history_limit() {
    let mut sim = Sim::new(&format!("{SEARCH}{RATE}"), 1);
    for n in 0..12u8 {
        // Each new revision replaces the canary; revision 1 stays stable throughout.
        sim.spec.capabilities.env.insert("N".into(), n.to_string());
        sim.apply_spec();
    }
    let kept: Vec<u64> = sim.s.revisions[&Sim::key()]
        .iter()
        .map(|r| r.number)
        .collect();
    assert_eq!(kept.len(), crate::state::REVISION_HISTORY);
    assert!(kept.contains(&1), "the stable revision is kept: {kept:?}");
    assert_eq!(sim.r().stable, 1);
    assert_eq!(sim.r().canary, Some(13));
}
