//! The autoscaler's decisions against hand-made demand: KPA windows and panic mode,
//! HPA tolerance, stabilization and policies, scale to zero.

use super::*;

fn flat(concurrency: f64, from: Millis, to: Millis) -> Vec<Sample> {
    (from..=to)
        .step_by(1000)
        .map(|at| Sample {
            at,
            concurrency,
            rps: 0.0,
        })
        .collect()
}

/// One Percent policy per period, no stabilization, select Max.
fn percent_per(value: u32, period: Millis) -> Rules {
    Rules {
        stabilization_window: 0,
        policies: vec![Policy {
            kind: PolicyKind::Percent,
            value,
            period,
        }],
        select: Select::Max,
    }
}

fn spec(target: f64) -> ScaleSpec {
    ScaleSpec {
        target: Metric::Concurrency(target),
        utilization: 1.0,
        ..ScaleSpec::default()
    }
}

#[test]
fn desired_replicas_is_demand_over_target_rounded_up() {
    let s = spec(10.0);
    let mut m = Memory::default();
    let d = decide(&s, &flat(45.0, 1000, 60_000), 5, &mut m, 60_000);
    assert_eq!(d.desired, 5, "4.5 → 5, and 5 is what there is");
    let mut m = Memory::default();
    let d = decide(&s, &flat(75.0, 1000, 60_000), 5, &mut m, 60_000);
    assert_eq!(d.desired, 8, "7.5 → 8 (+60%, within the +100% policy)");
}

#[test]
fn utilization_lowers_the_per_pod_target() {
    let s = ScaleSpec {
        target: Metric::Concurrency(10.0),
        utilization: 0.7,
        ..ScaleSpec::default()
    };
    let mut m = Memory::default();
    // 70 in flight at 7 per pod (70% of 10): 10 pods.
    let d = decide(&s, &flat(70.0, 1000, 60_000), 8, &mut m, 60_000);
    assert_eq!(d.desired, 10);
}

#[test]
fn a_change_within_ten_percent_is_ignored() {
    let s = spec(10.0);
    let mut m = Memory::default();
    let d = decide(&s, &flat(105.0, 1000, 60_000), 10, &mut m, 60_000);
    assert_eq!(d.desired, 10, "10.5 per pod is within 10% of the target 10");
    let mut m = Memory::default();
    let d = decide(&s, &flat(125.0, 1000, 60_000), 10, &mut m, 60_000);
    assert_eq!(d.desired, 13, "12.5 per pod is 25% over: ceil(12.5) pods");
}

#[test]
fn scale_down_is_stabilized_as_a_rolling_max() {
    let mut s = spec(10.0);
    s.down.stabilization_window = 300_000; // HPA's default
    let mut m = Memory::default();
    // High demand a minute ago, low now: the earlier recommendation holds.
    decide(&s, &flat(100.0, 1000, 60_000), 10, &mut m, 60_000);
    let mut low = flat(100.0, 1000, 60_000);
    low.extend(flat(10.0, 61_000, 180_000));
    let d = decide(&s, &low, 10, &mut m, 180_000);
    assert_eq!(d.desired, 10, "within 300 s of recommending 10");
    // After the window the low recommendations are all that remain.
    let mut later = low.clone();
    later.extend(flat(10.0, 181_000, 480_000));
    for t in (190_000..=480_000).step_by(10_000) {
        decide(&s, &later, 10, &mut m, t);
    }
    let d = decide(&s, &later, 10, &mut m, 490_000);
    assert_eq!(d.desired, 1);
}

#[test]
fn panic_mode_scales_up_fast_and_never_down() {
    let s = ScaleSpec {
        up: percent_per(1000, 1000),
        ..spec(10.0)
    };
    let mut samples = flat(20.0, 1000, 54_000);
    samples.extend(flat(200.0, 55_000, 60_000)); // a spike in the last 6 s
    let mut m = Memory::default();
    let d = decide(&s, &samples, 2, &mut m, 60_000);
    assert_eq!(d.mode, Mode::Panic);
    assert_eq!(d.desired, 20, "the panic window wants 20");
    // The spike ends; during panic the count does not drop.
    let mut after = samples.clone();
    after.extend(flat(0.0, 61_000, 90_000));
    let d = decide(&s, &after, 20, &mut m, 90_000);
    assert_eq!(d.mode, Mode::Panic);
    assert_eq!(d.desired, 20);
}

#[test]
fn scales_to_zero_only_after_the_grace_period() {
    let s = ScaleSpec {
        down: percent_per(100, 1000),
        ..spec(10.0)
    };
    let mut samples = flat(5.0, 1000, 10_000);
    samples.extend(flat(0.0, 11_000, 100_000));
    let mut m = Memory::default();
    let d = decide(&s, &samples, 1, &mut m, 30_000);
    assert_eq!(d.desired, 1, "idle for 20 s of a 30 s grace");
    let d = decide(&s, &samples, 1, &mut m, 100_000);
    assert_eq!(d.desired, 0);
    assert_eq!(d.mode, Mode::ScaledToZero);
}

#[test]
fn min_and_max_bound_everything() {
    let s = ScaleSpec {
        min: 2,
        max: 5,
        ..spec(10.0)
    };
    let mut m = Memory::default();
    assert_eq!(
        decide(&s, &flat(0.0, 1000, 60_000), 2, &mut m, 60_000).desired,
        2
    );
    let mut m = Memory::default();
    assert_eq!(
        decide(&s, &flat(1000.0, 1000, 60_000), 4, &mut m, 60_000).desired,
        5
    );
}

/// A railway Tatkal-rush HPA: +200% per 30 s up, −5% per 600 s down.
fn tatkal() -> ScaleSpec {
    ScaleSpec {
        min: 1,
        max: 1000,
        up: percent_per(200, 30_000),
        down: percent_per(5, 600_000),
        ..spec(10.0)
    }
}

#[test]
fn tatkal_rush_triples_per_thirty_seconds_and_sheds_five_percent_per_ten_minutes() {
    let s = ScaleSpec {
        panic_threshold: f64::INFINITY, // the HPA has no panic mode
        ..tatkal()
    };
    let demand = flat(10_000.0, 0, 200_000); // wants 1000 pods
    let mut m = Memory::default();
    let mut n = 10;
    let mut trajectory = vec![];
    for t in (60_000..=150_000).step_by(30_000) {
        n = decide(&s, &demand, n, &mut m, t).desired;
        trajectory.push(n);
    }
    assert_eq!(trajectory, [30, 90, 270, 810], "+200% per 30 s period");
    // Demand collapses: −5% of 100 = 95, then nothing more for 600 s.
    let mut m = Memory::default();
    let quiet = flat(10.0, 0, 2_000_000);
    assert_eq!(decide(&s, &quiet, 100, &mut m, 1_000_000).desired, 95);
    assert_eq!(decide(&s, &quiet, 95, &mut m, 1_300_000).desired, 95);
    assert_eq!(
        decide(&s, &quiet, 95, &mut m, 1_600_001).desired,
        90,
        "95 × 0.95 = 90.25 keeps 90: the amount removed rounds up"
    );
}

#[test]
fn festival_sale_doubles_per_minute_and_sheds_ten_percent_per_minute() {
    let s = ScaleSpec {
        panic_threshold: f64::INFINITY,
        min: 1,
        max: 1000,
        up: percent_per(100, 60_000),
        down: percent_per(10, 60_000),
        ..spec(10.0)
    };
    let rush = flat(2_000.0, 0, 1_000_000); // wants 200
    let mut m = Memory::default();
    let mut n = 5;
    let mut up = vec![];
    for t in (60_000..=360_000).step_by(60_000) {
        n = decide(&s, &rush, n, &mut m, t).desired;
        up.push(n);
    }
    assert_eq!(up, [10, 20, 40, 80, 160, 200]);
    let calm = flat(10.0, 0, 2_000_000); // wants 1
    let mut m = Memory::default();
    let mut down = vec![];
    let mut n = 100;
    for t in (1_000_000..=1_240_000).step_by(60_000) {
        n = decide(&s, &calm, n, &mut m, t).desired;
        down.push(n);
    }
    assert_eq!(
        down,
        [90, 81, 72, 64, 57],
        "−10% a minute, kept count truncated"
    );
}

/// A day in the life: ramp, hold, spike, back, then idle, with pods ready at once.
/// Scaling down is stabilized over HPA's 300 s: without it, the end of the panic a
/// steep ramp triggers drops the count to the (lagging) stable window's answer, as
/// Knative's KPA does.
#[test]
fn a_synthetic_load_curve_gives_the_expected_trajectory() {
    let mut s = ScaleSpec {
        target: Metric::Concurrency(10.0), // 7 per pod at 70%
        max: 200,
        ..ScaleSpec::default()
    };
    s.down.stabilization_window = 300_000;
    let demand = |t: Millis| -> f64 {
        match t {
            0..120_000 => 200.0 * t as f64 / 120_000.0, // ramp to 200 over 2 min
            120_000..300_000 => 200.0,                  // hold 3 min
            300_000..330_000 => 1000.0,                 // a 30 s spike
            330_000..450_000 => 200.0,                  // back for 2 min
            _ => 0.0,                                   // then idle
        }
    };
    let step = 2000;
    let mut samples = Vec::new();
    let mut m = Memory::default();
    let mut n = 0u32;
    let mut trajectory = Vec::new();
    for t in (step..=1_500_000).step_by(step as usize) {
        samples.push(Sample {
            at: t,
            concurrency: demand(t),
            rps: 0.0,
        });
        let d = decide(&s, &samples, n, &mut m, t);
        n = d.desired;
        trajectory.push((t, n, d.mode));
    }
    let at = |t: Millis| trajectory.iter().find(|(at, ..)| *at >= t).unwrap();

    // Ramp: never down while demand rises.
    let ramp: Vec<u32> = trajectory
        .iter()
        .filter(|(t, ..)| *t < 120_000)
        .map(|(_, n, _)| *n)
        .collect();
    assert!(ramp.windows(2).all(|w| w[1] >= w[0]), "{ramp:?}");
    // Hold: 200 / 7 → 29 pods, or a count the 10% tolerance accepts (≥ 200/7/1.1).
    let hold = at(290_000).1;
    assert!((26..=29).contains(&hold), "{:?}", at(290_000));
    // Spike: panic, and well over the stable count within the spike.
    let spike = at(328_000);
    assert_eq!(spike.2, Mode::Panic, "{spike:?}");
    assert!(spike.1 >= 100, "{spike:?}");
    // After the spike: panic holds the count for a stable window.
    assert!(at(380_000).1 >= spike.1, "{:?}", at(380_000));
    // Idle: not before the grace period, but eventually zero.
    let first_zero = trajectory
        .iter()
        .filter(|(t, ..)| *t > 450_000)
        .find(|(_, n, _)| *n == 0)
        .expect("scaled to zero by the end");
    assert!(
        first_zero.0 >= 450_000 + s.scale_to_zero_after,
        "zero only after the grace period: {first_zero:?}"
    );
    assert_eq!(trajectory.last().unwrap().1, 0);
    assert_eq!(trajectory.last().unwrap().2, Mode::ScaledToZero);
    // And the count never exceeded max.
    assert!(trajectory.iter().all(|(_, n, _)| *n <= s.max));
}
