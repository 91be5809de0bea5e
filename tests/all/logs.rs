//! Logs kept where they are written: each pod's output on its host's disk, rotated at
//! the cap, answered through any controller, followed as it is written, and still there
//! after the leader is killed and after the host restarts.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use dabba_spec::cronjob::{JobRun, RunPhase};
use dabba_spec::resources::{HostState, PodPhase};
use dabba_testkit::HostOptions;

use crate::cluster::Cluster;
use crate::platform::Up;
use crate::support::{
    apply_manifest, dabba, eventually, guest, json_out, stderr, stdout, try_request,
};

/// `dabba logs ... --follow` running, its lines read as they come.
struct Follower {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Follower {
    fn start(args: &[&str]) -> Follower {
        let mut child = dabba()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting dabba logs --follow");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Follower {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `text`; `false` if the output ended first.
    fn wait_for(&mut self, text: &str, timeout: Duration) -> bool {
        if self.seen.iter().any(|l| l.contains(text)) {
            return true;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let found = l.contains(text);
                    self.seen.push(l);
                    if found {
                        return true;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no line with `{text}` within {timeout:?}; seen:\n{}",
                        self.seen.join("\n")
                    )
                }
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    /// How many lines seen end with `suffix`.
    fn count(&self, suffix: &str) -> usize {
        self.seen.iter().filter(|l| l.ends_with(suffix)).count()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request to the printing app through `ingress`, retried until it is answered.
fn print_lines(c: &Cluster, line: &str, n: usize) {
    let path = format!("/log?line={line}&n={n}");
    eventually(
        &format!("{path} to be answered"),
        Duration::from_secs(30),
        || {
            try_request(c.host_addrs[0], "GET", &path, &[], b"")
                .ok()
                .filter(|r| r.status == 200)
        },
    );
}

/// The bytes in a pod log's current and rotated files.
fn log_files(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
        .map(|l| {
            l.flatten()
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        e.metadata().map(|m| m.len()).unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn an_apps_logs_stay_on_its_host_rotate_at_the_cap_and_outlive_a_leader_and_a_host_restart() {
    const CAP: u64 = 8 << 10;
    let mut host = HostOptions::new("h1", "zone-a");
    host.flags.extend(["--log-size".into(), "8Ki".into()]);
    let mut c = Cluster::start_with(3, vec![host], None, Vec::new(), &[]);
    let manifest = c.dir.path().join("printer.toml");
    apply_manifest(
        &|args| c.cli(args),
        &manifest,
        &format!(
            "[app]\nname = \"printer\"\ncomponent = \"{}\"\nroute = \"/log\"\nreplicas = 1\n",
            guest("hostile").display()
        ),
    );
    let pod = eventually("the printer pod to run", Duration::from_secs(60), || {
        c.pods()
            .into_iter()
            .find(|p| p.app == "printer" && p.phase == PodPhase::Running)
    });
    let urls = c.controller_urls();
    let admin = c.admin.clone();
    let cli_args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        a.extend([
            "--server".into(),
            urls.clone(),
            "--token".into(),
            admin.clone(),
        ]);
        a
    };
    let follow_args = cli_args(&["logs", "app", "printer", "--follow", "--tail", "5"]);
    let mut f = Follower::start(&follow_args.iter().map(String::as_str).collect::<Vec<_>>());

    // A host answers its logs to the controllers only.
    let path = "/.dabba/logs/apps/default/printer";
    for key in [None, Some("not-the-key")] {
        let headers: Vec<(&str, &str)> = key.map(|k| ("x-dabba-read-key", k)).into_iter().collect();
        let r = try_request(c.host_addrs[0], "GET", path, &headers, b"").unwrap();
        assert_eq!(r.status, 403, "{key:?}: {}", r.text());
    }

    // Written, and streamed to the follower as they are.
    print_lines(&c, "alpha", 3);
    assert!(f.wait_for("alpha done", Duration::from_secs(20)));
    let logs = stdout(&c.cli(&["logs", "app", "printer"]));
    assert!(logs.contains("(event) started: revision 1"), "{logs}");
    assert!(logs.contains(&format!("[{}] alpha #2", pod.name)), "{logs}");
    assert!(
        logs.contains(&format!("[{}] (stderr) alpha done", pod.name)),
        "{logs}"
    );

    // Rotated at the cap: about 27 KiB written, at most two parts of 8 KiB kept. (Paced
    // by the follower: one that polls every 200 ms loses what more than a whole part
    // written between two polls pushes out, as a tail of a rotated file does.)
    for i in 0..40 {
        print_lines(&c, &format!("fill-{i:02}"), 10);
        assert!(f.wait_for(&format!("fill-{i:02} done"), Duration::from_secs(20)));
    }
    let dir = c.dir.path().join("h1/logs/apps/default/printer");
    let files = log_files(&dir);
    let current = format!("{}.log", pod.name);
    let previous = format!("{}.log.1", pod.name);
    assert_eq!(
        files.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        [current.as_str(), previous.as_str()],
        "{files:?}"
    );
    assert!(files.iter().all(|(_, len)| *len <= CAP), "{files:?}");
    let kept: usize = files
        .iter()
        .map(|(n, _)| {
            std::fs::read_to_string(dir.join(n))
                .unwrap()
                .lines()
                .count()
        })
        .sum();
    let all = stdout(&c.cli(&["logs", "app", "printer", "--tail", "100000"]));
    assert_eq!(all.lines().count(), kept, "every line kept, and only those");
    assert!(
        !all.contains("alpha #0"),
        "the oldest lines went with the rotation"
    );
    assert!(all.contains("fill-39 #9") && all.contains("fill-39 done"));
    // The follower saw every line once, rotations notwithstanding.
    for i in 0..40 {
        for j in 0..10 {
            assert_eq!(
                f.count(&format!("fill-{i:02} #{j}")),
                1,
                "fill-{i:02} #{j} in {:#?}",
                &f.seen[..40.min(f.seen.len())]
            );
        }
    }
    // --pod and --since choose.
    let other = stdout(&c.cli(&["logs", "app", "printer", "--pod", "printer-0-none"]));
    assert!(other.is_empty(), "{other}");
    std::thread::sleep(Duration::from_millis(1500));
    let recent = c.cli(&["logs", "app", "printer", "--since", "1s"]);
    assert!(recent.status.success(), "{}", stderr(&recent));
    assert!(stdout(&recent).is_empty(), "{}", stdout(&recent));
    let bad = c.cli(&["logs", "app", "printer", "--since", "soon"]);
    assert!(!bad.status.success());

    // The leader killed: the lines are still there, and the follower goes on.
    let leader = c.leader().expect("a leader");
    c.kill_controller(leader);
    print_lines(&c, "beta", 2);
    let after = eventually(
        "the logs through another controller",
        Duration::from_secs(30),
        || {
            let out = c.cli(&[
                "logs", "app", "printer", "--since", "60s", "--tail", "100000",
            ]);
            let text = stdout(&out);
            (out.status.success() && text.contains("beta done")).then_some(text)
        },
    );
    assert!(after.contains("fill-39 done"), "{after}");
    assert!(
        f.wait_for("beta done", Duration::from_secs(30)),
        "the follower gave up"
    );
    assert_eq!(f.count("beta #1"), 1);

    // The host restarted: its logs are still there, and its pod logs on.
    c.hosts[0].kill();
    c.hosts[0].restart().unwrap();
    eventually("h1 Ready again", Duration::from_secs(60), || {
        c.host_is("h1", HostState::Ready).then_some(())
    });
    print_lines(&c, "gamma", 1);
    let out = stdout(&c.cli(&["logs", "app", "printer", "--tail", "100000"]));
    assert!(out.contains("beta #1") && out.contains("gamma #0"), "{out}");
    assert!(out.matches("(event) started").count() >= 1, "{out}");
    assert!(
        f.wait_for("gamma done", Duration::from_secs(30)),
        "the follower gave up"
    );
    assert_eq!(f.count("gamma #0"), 1);
    assert_eq!(f.count("beta #1"), 1);
}

/// A job run's output is readable while it runs, and `--follow` ends when the run does.
#[test]
fn a_job_runs_output_streams_while_it_runs_and_the_follow_ends_with_it() {
    let up = Up::start(false);
    apply_manifest(
        &|args| up.cli(args),
        &up.dir.path().join("ticker.toml"),
        &format!(
            "[[cron]]\nname = \"ticker\"\nschedule = \"0 0 1 1 *\"\nsuspend = true\ncomponent = \"{}\"\nargs = [\"tick\", \"6\", \"700\"]\n",
            guest("job").display()
        ),
    );
    let out = up.cli(&["create", "job", "--from", "cronjob/ticker"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let runs = || -> Vec<JobRun> { json_out(&up.cli(&["get", "jobs", "-o", "json"])) };
    let run = eventually("the manual run", Duration::from_secs(30), || {
        runs().into_iter().find(|r| r.manual)
    });
    let config = up.config();
    let mut f = Follower::start(&[
        "logs",
        "job",
        &run.name,
        "--follow",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(f.wait_for("tick 0", Duration::from_secs(60)));
    let phase = runs()
        .into_iter()
        .find(|r| r.name == run.name)
        .map(|r| r.phase);
    assert_eq!(phase, Some(RunPhase::Running), "seen while it runs");
    assert!(f.wait_for("attempt 1 ended: exit code 0", Duration::from_secs(30)));
    // The follow ends on its own once the run has.
    let status = eventually("the follow to end", Duration::from_secs(15), || {
        f.child.try_wait().ok().flatten()
    });
    assert!(status.success());
    while let Ok(l) = f.lines.recv_timeout(Duration::from_millis(200)) {
        f.seen.push(l);
    }
    for i in 0..6 {
        assert_eq!(f.count(&format!("] tick {i}")), 1, "{:?}", f.seen);
    }
    assert_eq!(f.count("(event) attempt 1 started"), 1, "{:?}", f.seen);

    // A run that does not exist, and an option that is for apps.
    let out = up.cli(&["logs", "job", "ticker-nope"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no job run default/ticker-nope"),
        "{}",
        stderr(&out)
    );
    let out = up.cli(&["logs", "job", &run.name, "--pod", "x"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--pod is for `dabba logs app`"),
        "{}",
        stderr(&out)
    );
}
