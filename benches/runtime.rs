//! Runtime microbenchmarks (criterion): the cost of one request inside a host, with no
//! network in the way.
//!
//! - `instantiate_call/hello`: a fresh instance of the trivial handler, called once —
//!   the time until its complete response is ready (goal: p50 ≤ 10 µs).
//! - `request_cost/hello`: the same, plus resetting the instance's memory slot, which
//!   dabba defers until the response is on its way: the host time one request costs.
//! - `fuel_vs_epoch/{payment,search}/{epoch,fuel}`: a real request of each sample on
//!   the epoch-only engine and on the fuel-metered engine. After the runs, the ratio
//!   fuel/epoch is printed from criterion's own estimates.
//!
//! Run: `cargo bench --bench runtime` (builds the guest components first).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group};
use dabba_host::AppConfig;
use dabba_host::kv::MemoryKv;
use dabba_host::runtime::{Runtime, RuntimeOptions};
use dabba_host::{ComponentBytes, function::HttpFunction};
use dabba_spec::{Capabilities, LimitOverrides, WorkloadKind};
use http_body_util::Full;

fn load(runtime: &Arc<Runtime>, guest: &str, fuel: Option<u64>) -> HttpFunction {
    let wasm = ComponentBytes::read(&dabba_testkit::guest(guest)).expect("guest built");
    let limits = LimitOverrides {
        fuel,
        ..Default::default()
    }
    .resolve(WorkloadKind::Http)
    .unwrap();
    let app = AppConfig {
        name: guest.into(),
        revision: None,
        scope: "bench".into(),
        limits,
        capabilities: Capabilities {
            key_value_buckets: vec!["default".into()],
            ..Default::default()
        },
        secrets: Default::default(),
        kv: Arc::new(MemoryKv::new()),
        log: None,
    };
    runtime.load_http(app, &wasm).expect("loads")
}

fn request(method: &str, path: &str, body: &'static [u8]) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "bench")
        .header("content-type", "application/json")
        .header("idempotency-key", "bench-key")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap()
}

const PAYMENT: &[u8] =
    br#"{"merchant_id":"m_bench","payer_vpa":"asha@okhdfc","amount":250050,"currency":"INR"}"#;

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let runtime = Runtime::new(&RuntimeOptions {
        cache_dir: Some(dabba_testkit::workspace().join("target/bench-artifacts")),
        ..Default::default()
    })
    .unwrap();

    let hello = load(&runtime, "hello", None);
    // Latency: from the request reaching the function to the complete response, as a
    // client waits for it. Building the request and the deferred reset of the
    // instance's memory slot happen outside the timed part.
    c.bench_function("instantiate_call/hello", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let req = request("GET", "/", b"");
                let started = Instant::now();
                let resp = rt.block_on(hello.handle(req));
                total += started.elapsed();
                assert_eq!(resp.status(), 200);
                rt.block_on(tokio::task::yield_now());
            }
            total
        })
    });
    // Cost: everything a request takes from the host, cleanup included.
    c.bench_function("request_cost/hello", |b| {
        b.iter(|| {
            let resp = rt.block_on(hello.handle(request("GET", "/", b"")));
            assert_eq!(resp.status(), 200);
            rt.block_on(tokio::task::yield_now());
        })
    });

    let mut group = c.benchmark_group("fuel_vs_epoch");
    for (guest, method, path, body) in [
        // The same idempotent payment every time: validation, hashing, a KV read and the
        // JSON replay — the path most production traffic (retries) takes.
        ("payment", "POST", "/payments", PAYMENT),
        (
            "search",
            "GET",
            "/search?q=samsung+phone&sort=relevance&page_size=20",
            &b""[..],
        ),
    ] {
        for (engine, fuel) in [("epoch", None), ("fuel", Some(10_000_000_000u64))] {
            let f = load(&runtime, guest, fuel);
            group.bench_function(format!("{guest}/{engine}"), |b| {
                b.iter(|| {
                    let resp = rt.block_on(f.handle(request(method, path, body)));
                    assert!(resp.status().is_success(), "{}", resp.status());
                })
            });
        }
    }
    group.finish();
}

criterion_group!(runtime_benches, benches);

fn main() {
    runtime_benches();
    Criterion::default().configure_from_args().final_summary();
    report_ratios();
}

/// Prints fuel/epoch from criterion's saved estimates (median of this run).
fn report_ratios() {
    let dir = dabba_testkit::workspace().join("target/criterion");
    let median = |id: &str| -> Option<f64> {
        let path = dir.join(id).join("new/estimates.json");
        let text = std::fs::read_to_string(path).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["median"]["point_estimate"].as_f64()
    };
    if let Some(ns) = median("instantiate_call_hello") {
        println!(
            "instantiate+call hello: median {:.2} µs to the complete response (goal ≤ 10 µs)",
            ns / 1000.0
        );
    }
    if let Some(ns) = median("request_cost_hello") {
        println!(
            "request cost hello: median {:.2} µs of host time per request, cleanup included",
            ns / 1000.0
        );
    }
    for guest in ["payment", "search"] {
        let (Some(e), Some(f)) = (
            median(&format!("fuel_vs_epoch/{guest}_epoch")),
            median(&format!("fuel_vs_epoch/{guest}_fuel")),
        ) else {
            continue;
        };
        println!(
            "{guest}: epoch {:.1} µs, fuel {:.1} µs per request: fuel costs {:.2}× epoch",
            e / 1000.0,
            f / 1000.0,
            f / e
        );
    }
}
