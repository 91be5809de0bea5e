//! Cron jobs through the CLI on `dabba up` (issue 5, in progress: jobs are stored and
//! scheduled; hosts do not run them yet).

use serde_json::Value;

use crate::platform::Up;
use crate::support::{guest, stderr, stdout};

#[test]
fn a_cron_manifest_applies_and_lists_its_next_runs_in_its_zone() {
    guest("settlement");
    let up = Up::start(false);
    let sample = crate::support::workspace().join("examples/settlement/cron.toml");
    let out = up.cli(&["apply", "-f", sample.to_str().unwrap()]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("cronjob default/settlement configured"));

    let out = up.cli(&["get", "cronjobs", "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let jobs: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let job = &jobs[0];
    assert_eq!(job["job"]["spec"]["timezone"], "Asia/Kolkata");
    let next: Vec<&str> = job["next"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(next.len(), 3, "{job}");
    for t in &next {
        assert!(t.ends_with("T01:00:00+05:30"), "{t}");
    }
    let table = stdout(&up.cli(&["get", "cronjobs"]));
    assert!(
        table.contains("0 1 * * *") && table.contains("Asia/Kolkata"),
        "{table}"
    );

    // An unknown zone is refused with the file, line and field, and changes nothing.
    let bad = up.dir.path().join("bad-cron.toml");
    let text = std::fs::read_to_string(&sample)
        .unwrap()
        .replace("Asia/Kolkata", "Asia/Atlantis")
        .replace(
            "../../target/wasm32-wasip2/guest/settlement.wasm",
            guest("settlement").to_str().unwrap(),
        );
    std::fs::write(&bad, text).unwrap();
    let out = up.cli(&["apply", "-f", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("bad-cron.toml:11")
            && err.contains("cron[0].timezone")
            && err.contains("IANA"),
        "{err}"
    );
    let after: Value =
        serde_json::from_str(&stdout(&up.cli(&["get", "cronjobs", "-o", "json"]))).unwrap();
    assert_eq!(after[0]["job"]["spec"]["timezone"], "Asia/Kolkata");
}
