//! Shared helpers: building the guest components, starting `dabba` processes, and a
//! small blocking HTTP/1.1 client. Everything talks to 127.0.0.1 only, and every wait is
//! bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The guest crates, by the file they build.
const GUESTS: &[(&str, &str)] = &[
    ("payment", "dabba-example-payment"),
    ("search", "dabba-example-search"),
    ("settlement", "dabba-example-settlement"),
    ("hello", "dabba-guest-hello"),
    ("hostile", "dabba-guest-hostile"),
    ("job", "dabba-guest-job"),
];

pub fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

/// The path of a guest component, building all guests once per test binary (the same
/// build as `cargo guests`).
pub fn guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace()).args([
            "build",
            "--profile",
            "guest",
            "--target",
            "wasm32-wasip2",
        ]);
        for (_, package) in GUESTS {
            cmd.args(["-p", package]);
        }
        let status = cmd.status().expect("running cargo to build the guests");
        assert!(status.success(), "building the guest components failed");
    });
    assert!(
        GUESTS.iter().any(|(n, _)| *n == name),
        "unknown guest {name}"
    );
    target_dir()
        .join("wasm32-wasip2/guest")
        .join(format!("{name}.wasm"))
}

/// The native servers the container images are built from (`payment-native`,
/// `search-native`), built once per test run in the `container` profile; their directory.
pub fn native_servers() -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(workspace())
            .args(["build", "--profile", "container", "-p", "dabba-baseline"])
            .status()
            .expect("running cargo to build the native servers");
        assert!(status.success(), "building the native servers failed");
    });
    target_dir().join("container")
}

pub fn dabba() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dabba"));
    cmd.env("RUST_LOG", "warn");
    cmd
}

/// A `dabba serve` process, killed when dropped.
pub struct Served {
    child: Child,
    pub addr: SocketAddr,
    /// Where metrics are served, when started with `--metrics-listen`.
    pub metrics: Option<SocketAddr>,
}

impl Served {
    /// Starts `dabba serve COMPONENT --listen 127.0.0.1:0 ARGS...` and waits (at most
    /// 60 s) for it to print its address.
    pub fn start(component: &Path, args: &[&str]) -> Served {
        let mut child = dabba()
            .arg("serve")
            .arg(component)
            .args(["--listen", "127.0.0.1:0", "--quiet"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting dabba serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut metrics = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(m) = line.strip_prefix("metrics on http://") {
                    metrics = m.strip_suffix("/metrics").map(str::to_string);
                }
                if let Some(addr) = line
                    .rsplit("on http://")
                    .next()
                    .filter(|_| line.starts_with("serving "))
                {
                    let _ = tx.send((addr.trim().to_string(), metrics.clone()));
                }
            }
        });
        let (addr, metrics) = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("dabba serve did not start within 60 s")
            });
        Served {
            child,
            addr: addr.parse().expect("a socket address"),
            metrics: metrics.map(|m| m.parse().expect("a socket address")),
        }
    }

    pub fn get(&self, path: &str) -> Reply {
        request(self.addr, "GET", path, &[], b"")
    }

    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        request(self.addr, "POST", path, headers, body)
    }

    /// Stops the server the way an operator does (SIGTERM), and waits for it.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A complete HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text()))
    }
}

/// One HTTP/1.1 request on a fresh connection, with a 60 s bound.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    try_request(addr, method, path, headers, body).expect("an HTTP exchange")
}

/// Like [`request`], but a failed connection or exchange is an error, not a panic.
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Reply> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    if !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        return Err(std::io::Error::other(
            "the connection closed before a response",
        ));
    }
    Ok(parse(&raw))
}

fn parse(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = raw[split + 4..].to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

/// Runs `dabba ARGS...` to completion (bounded by `timeout`).
pub fn run_dabba(args: &[&str], timeout: Duration) -> Output {
    let child = dabba()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting dabba");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.expect("collecting output"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("dabba {args:?} did not finish within {timeout:?}");
        }
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A free port on 127.0.0.1 (bound and released; good enough for tests on loopback).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A long-running `dabba` process (controller, host or `up`), killed when dropped; it
/// can be killed and started again with the same arguments.
pub struct Proc {
    pub name: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    pub fn start(name: &str, args: &[String], envs: &[(&str, &str)], log_dir: &Path) -> Proc {
        let mut p = Proc {
            name: name.to_string(),
            args: args.to_vec(),
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
            log: log_dir.join(format!("{name}.log")),
        };
        p.restart();
        p
    }

    /// Starts the process (again), appending its output to its log file.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("opening a log file");
        // Run from the workspace, as a user in a checkout would (`dabba up --demo` finds
        // the sample manifests relative to it).
        let child = dabba()
            .current_dir(workspace())
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("starting dabba");
        self.child = Some(child);
    }

    /// Kills the process at once (SIGKILL: no chance to clean up).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Asks the process to stop (SIGTERM) and waits up to 15 s, then kills it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `timeout`.
pub fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes a manifest to `path` and applies it with `cli` (a platform's CLI with its
/// credentials), which must succeed.
pub fn apply_manifest(cli: &dyn Fn(&[&str]) -> Output, path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    let out = cli(&["apply", "-f", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
}
