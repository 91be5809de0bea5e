//! Hostile guests against `dabba serve`: every limit stops only the instance that hit
//! it, answers a 5xx that names the limit, and leaves other requests unharmed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::*;

/// Sends `bad` in the background and, while it is still in flight, checks that a
/// well-behaved request on the same server succeeds. Returns the bad request's reply.
/// The bad request first waits 600 ms in the host (`after_ms`), so it is in flight when
/// the good one is sent however fast this machine runs it.
fn while_in_flight(s: &Served, bad: &str) -> Reply {
    let addr = s.addr;
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    let sep = if bad.contains('?') { '&' } else { '?' };
    let bad_path = format!("{bad}{sep}after_ms=600");
    let handle = std::thread::spawn(move || {
        let r = request(addr, "GET", &bad_path, &[], b"");
        flag.store(true, Ordering::SeqCst);
        r
    });
    // Let the bad request get going.
    std::thread::sleep(Duration::from_millis(200));
    let ok = s.get("/ok");
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert!(
        !done.load(Ordering::SeqCst),
        "{bad} finished before the well-behaved request: it was not concurrent"
    );
    handle.join().unwrap()
}

fn assert_limit(r: &Reply, status: u16, limit: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("x-dabba-limit"), Some(limit));
    let v = r.json();
    assert_eq!(v["error"]["code"], "limit_exceeded");
    assert_eq!(v["error"]["limit"], limit);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("{limit} limit"))
    );
}

#[test]
fn an_infinite_loop_is_stopped_by_the_timeout() {
    let s = serve(&guest("hostile"), &["--timeout", "2s"]);
    let r = while_in_flight(&s, "/spin");
    assert_limit(&r, 504, "timeout");
}

#[test]
fn an_infinite_loop_is_stopped_by_fuel() {
    let s = serve(
        &guest("hostile"),
        &["--fuel", "2000000000", "--timeout", "60s"],
    );
    let r = while_in_flight(&s, "/spin");
    assert_limit(&r, 500, "fuel");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2000000000")
    );
}

#[test]
fn a_memory_bomb_hits_the_cap() {
    let s = serve(&guest("hostile"), &["--memory", "48Mi"]);
    let r = while_in_flight(&s, "/alloc?mb=4096");
    assert_limit(&r, 500, "memory");
    // Below the cap, allocation works.
    assert_eq!(s.get("/alloc?mb=8").status, 200);
}

#[test]
fn deep_recursion_traps() {
    let s = serve(&guest("hostile"), &[]);
    let r = while_in_flight(&s, "/recurse");
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["error"]["code"], "guest_trapped");
    let p = s.get("/panic");
    assert_eq!(p.status, 500);
    assert_eq!(p.json()["error"]["code"], "guest_trapped");
    assert_eq!(s.get("/ok").status, 200);
}

#[test]
fn a_guest_blocked_in_the_host_is_stopped_by_the_timeout() {
    let s = serve(&guest("hostile"), &["--timeout", "2s"]);
    let r = while_in_flight(&s, "/sleep?ms=30000");
    assert_limit(&r, 504, "timeout");
}

#[test]
fn body_sizes_are_capped_both_ways() {
    let s = serve(
        &guest("hostile"),
        &["--max-request-body", "64Ki", "--max-response-body", "256Ki"],
    );
    let big = vec![b'a'; 65 * 1024];
    let r = s.post("/echo", &[], &big);
    assert_limit(&r, 413, "request_body");
    let fits = s.post("/echo", &[], &big[..1000]);
    assert_eq!(fits.status, 200);
    assert_eq!(fits.body.len(), 1000);
    assert_limit(&s.get("/big?kb=300"), 502, "response_body");
    assert_eq!(s.get("/big?kb=200").body.len(), 200 * 1024);
}

#[test]
fn excess_concurrency_is_queued_then_refused() {
    let s = serve(
        &guest("hostile"),
        &[
            "--max-concurrency",
            "1",
            "--queue-depth",
            "1",
            "--queue-timeout",
            "300ms",
            "--timeout",
            "3s",
        ],
    );
    let addr = s.addr;
    let spinner = std::thread::spawn(move || request(addr, "GET", "/spin", &[], b""));
    std::thread::sleep(Duration::from_millis(200));
    // One request may wait; it times out in the queue because the spinner holds the slot.
    let waiter = std::thread::spawn(move || request(addr, "GET", "/ok", &[], b""));
    std::thread::sleep(Duration::from_millis(50));
    let refused = s.get("/ok");
    assert_limit(&refused, 503, "queue_full");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_limit(&waiter.join().unwrap(), 503, "queue_timeout");
    assert_limit(&spinner.join().unwrap(), 504, "timeout");
    // Once the slot is free, requests flow again.
    assert_eq!(s.get("/ok").status, 200);
}

#[test]
fn limit_hits_are_counted_in_metrics() {
    let s = serve_with_metrics(&guest("hostile"), &["--fuel", "50000000"]);
    assert_limit(&s.get("/spin"), 500, "fuel");
    assert_eq!(s.get("/ok").status, 200);
    let metrics = request(
        s.metrics.expect("a metrics address"),
        "GET",
        "/metrics",
        &[],
        b"",
    );
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    for line in [
        r#"dabba_limit_hits_total{app="hostile",limit="fuel"} 1"#,
        r#"dabba_requests_total{app="hostile",code="2xx",revision=""} 1"#,
        r#"dabba_requests_total{app="hostile",code="5xx",revision=""} 1"#,
        r#"dabba_instantiations_total{app="hostile"} 2"#,
    ] {
        assert!(text.contains(line), "missing `{line}` in\n{text}");
    }
}

#[test]
fn capabilities_are_denied_by_default() {
    let s = serve(&guest("hostile"), &[]);
    assert_eq!(s.get("/env").json(), serde_json::json!([]));
    let fs = s.get("/fs");
    assert_eq!(fs.status, 403, "{}", fs.text());
    assert_eq!(
        s.get("/config?key=anything").json(),
        serde_json::Value::Null
    );
    let kv = s.get("/kv?bucket=secret");
    assert_eq!(kv.status, 403);
    assert!(kv.text().contains("not granted"), "{}", kv.text());
    let upstream = serve(&guest("hello"), &[]);
    let out = s.get(&format!("/outbound?url=http://{}/", upstream.addr));
    assert_eq!(out.status, 502, "{}", out.text());
    assert!(out.text().contains("HttpRequestDenied"), "{}", out.text());
}

#[test]
fn granted_capabilities_are_visible() {
    let upstream = serve(&guest("hello"), &[]);
    let rule = format!("http://127.0.0.1:{}", upstream.addr.port());
    let s = serve(
        &guest("hostile"),
        &[
            "--env",
            "GREETING=namaste",
            "--config",
            "region=ap-south-1",
            "--allow-outbound",
            &rule,
            "--kv-bucket",
            "counters",
        ],
    );
    assert_eq!(
        s.get("/env").json(),
        serde_json::json!([["GREETING", "namaste"]])
    );
    assert_eq!(s.get("/config?key=region").json(), "ap-south-1");
    let out = s.get(&format!("/outbound?url=http://{}/", upstream.addr));
    assert_eq!(out.status, 200, "{}", out.text());
    assert_eq!(out.text(), "upstream answered 200");
    assert_eq!(s.get("/kv?bucket=counters").text(), "1");
    assert_eq!(s.get("/kv?bucket=counters").text(), "2");
    // Granting one bucket does not grant the default one.
    assert_eq!(s.get("/kv?bucket=default").status, 403);
}
