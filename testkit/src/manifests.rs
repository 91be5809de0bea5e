//! App manifests the end-to-end tests and the benchmarks both deploy, written once.

/// The `hostile` test guest as app `flaky` at `/`, on two pods, its component at
/// `component`, with `extra` (its `[config]`, `[rollout]`, ...) after `[app]`.
pub fn hostile(component: &str, extra: &str) -> String {
    format!(
        "[app]\nname = \"flaky\"\ncomponent = {component:?}\nroute = \"/\"\nreplicas = 2\n\n{extra}"
    )
}

/// The sections of a revision of the `hostile` guest that fails 30% of its requests,
/// rolled out as a canary at 20% whose next step is an analysis of its success rate
/// (≥ 95% over at least 10 requests, measured every `interval`, no failure tolerated),
/// then `after` (one step's TOML, e.g. `set_weight = 100`).
pub fn failing_canary(interval: &str, abort_scale_down_delay: &str, after: &str) -> String {
    format!(
        r#"[config]
fail_percent = "30"

[rollout]
strategy = "canary"
abort_scale_down_delay = "{abort_scale_down_delay}"
[[rollout.steps]]
set_weight = 20
[[rollout.steps]]
analysis = {{ templates = ["success-rate"] }}
[[rollout.steps]]
{after}

[[analysis]]
name = "success-rate"
[[analysis.metrics]]
name = "success-rate"
measure = "success_rate"
interval = "{interval}"
count = 600
success_condition = "result >= 0.95"
failure_limit = 0
min_requests = 10
"#
    )
}
