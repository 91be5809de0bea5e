//! What the fuzz targets (`fuzz/`, run with `cargo fuzz`) check, kept here so the test
//! suite runs the same checks on the saved inputs (`fuzz/regressions/`) and on inputs
//! it derives from them (`spec/tests/fuzz_inputs.rs`) without a fuzzer.
//!
//! Each function takes arbitrary bytes and panics only when a property fails: every
//! parser answers bad input with an error, never a panic, and what it accepts holds
//! together (what is shown parses back to the same value; a checked stream agrees with
//! the whole; an accepted route serves only what it names).

use std::str::FromStr;

/// One fuzz target's check.
pub type Check = fn(&[u8]);

/// The fuzz targets, by name (the directories under `fuzz/regressions/`).
pub const TARGETS: [(&str, Check); 6] = [
    ("manifest", manifest),
    ("cron_schedule", cron_schedule),
    ("api_body", api_body),
    ("component", component),
    ("units", units),
    ("route", route),
];

/// The manifest kinds `dabba apply -f` reads: app, cron, analysis, namespace.
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = crate::Manifest::parse("f.toml", text) {
        let spec = m.to_spec(crate::Digest::from_bytes([0; 32]));
        // What a manifest accepts, the API and the state machine accept too.
        spec.validate()
            .expect("an accepted manifest makes a valid spec");
    }
    if let Ok(m) = crate::cronjob::CronManifest::parse("f.toml", text) {
        for job in &m.cron {
            job.validate()
                .expect("an accepted cron manifest holds valid jobs");
        }
    }
    let _ = crate::analysis::AnalysisManifest::parse("f.toml", text);
    if let Ok(m) = crate::quota::NamespaceManifest::parse("f.toml", text) {
        m.policy().validate().expect("an accepted policy validates");
    }
}

/// Cron schedules and time zones: parsing, and the next run after a time.
pub fn cron_schedule(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (schedule, zone) = text.split_once('\n').unwrap_or((text, "UTC"));
    let Ok(s) = crate::cron::Schedule::from_str(schedule) else {
        return;
    };
    let Ok(tz) = crate::cron::time_zone(zone.trim()) else {
        return;
    };
    let start = jiff::Timestamp::from_second(1_700_000_000).expect("a valid instant");
    if let Some(next) = s.next_after(start, &tz) {
        assert!(
            next > start,
            "the next run of `{schedule}` is after the start"
        );
        let again = s.next_after(next, &tz);
        assert!(
            again.is_none_or(|a| a > next),
            "runs of `{schedule}` move forward"
        );
    }
}

/// Request bodies the API parses, then validates, as its handlers do.
pub fn api_body(data: &[u8]) {
    if let Ok(spec) = serde_json::from_slice::<crate::resources::AppSpec>(data) {
        let _ = spec.validate();
        let _ = crate::quota::Usage::of_app(&spec);
    }
    if let Ok(put) = serde_json::from_slice::<crate::secret::SecretPut>(data) {
        let _ = put.validate();
    }
    if let Ok(p) = serde_json::from_slice::<crate::quota::NamespacePolicy>(data) {
        let _ = p.validate();
    }
    if let Ok(r) = serde_json::from_slice::<crate::rbac::RoleSpec>(data) {
        let _ = r.validate();
    }
    if let Ok(b) = serde_json::from_slice::<crate::rbac::RoleBinding>(data) {
        let _ = b.validate();
    }
    if let Ok(c) = serde_json::from_slice::<crate::api::CronJobApply>(data) {
        let _ = c.spec.validate();
    }
    let _ = serde_json::from_slice::<crate::api::TokenRequest>(data);
    let _ = serde_json::from_slice::<crate::kv::Write>(data);
}

/// The component header check, whole and streamed in pieces: they agree.
pub fn component(data: &[u8]) {
    let whole = crate::component::check(data);
    // The first byte (if any) says where to cut the rest into pieces.
    let step = data.first().map_or(1, |b| usize::from(*b % 13) + 1);
    let mut checker = crate::component::Checker::default();
    let mut streamed = Ok(());
    for piece in data.chunks(step) {
        streamed = checker.feed(piece);
        if streamed.is_err() {
            break;
        }
    }
    if streamed.is_ok() {
        streamed = checker.finish();
    }
    assert_eq!(
        whole.is_ok(),
        streamed.is_ok(),
        "whole: {whole:?}, in pieces of {step}: {streamed:?}"
    );
}

/// Human units: what parses shows as text that parses back to the same value.
pub fn units(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(size) = crate::ByteSize::from_str(text) {
        let shown = size.to_string();
        assert_eq!(
            crate::ByteSize::from_str(&shown),
            Ok(size),
            "{text} -> {shown}"
        );
    }
    if let Ok(d) = crate::HumanDuration::from_str(text) {
        let shown = d.to_string();
        assert_eq!(
            crate::HumanDuration::from_str(&shown),
            Ok(d),
            "{text} -> {shown}"
        );
    }
}

/// Routes as the ingress matches them: a valid route serves only paths under its
/// prefix, on its host; the RBAC name of a request never panics.
pub fn route(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(4, '\n');
    let (prefix, host, path, req_host) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next(),
    );
    let route = crate::resources::Route {
        prefix: prefix.to_string(),
        host: (!host.is_empty()).then(|| host.to_string()),
    };
    let _ = crate::rbac::attributes("GET", prefix);
    if route.validate().is_err() {
        return;
    }
    if route.matches(req_host, path) {
        let p = prefix.trim_end_matches('/');
        assert!(
            p.is_empty() || path == p || path.starts_with(&format!("{p}/")),
            "route {prefix} served {path}"
        );
        if let Some(h) = &route.host {
            let asked = req_host.map(|r| r.split(':').next().unwrap_or(r));
            assert!(asked.is_some_and(|a| a.eq_ignore_ascii_case(h)), "host {h}");
        }
    }
}
