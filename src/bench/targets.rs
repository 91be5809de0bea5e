//! The servers a benchmark compares, each started as its own process on a loopback port
//! and stopped when dropped.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A running server.
pub struct Target {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server process that prints `... on http://ADDR` when it is listening.
pub fn spawn_announcing(cmd: Command, what: &str) -> anyhow::Result<Target> {
    spawn_logged(cmd, what, None)
}

/// Like [`spawn_announcing`], appending the process's stderr to `log`.
pub fn spawn_logged(mut cmd: Command, what: &str, log: Option<&Path>) -> anyhow::Result<Target> {
    let stderr = match log {
        Some(p) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("opening {}", p.display()))?,
        ),
        None => Stdio::null(),
    };
    let mut child = cmd
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some((_, addr)) = line.rsplit_once("on http://") {
                let _ = tx.send(addr.trim_end_matches('/').to_string());
            }
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(a) => a,
        Err(_) => {
            let _ = child.kill();
            bail!("{what} did not start listening within 120 s");
        }
    };
    let target = Target {
        child,
        addr: addr
            .parse()
            .with_context(|| format!("{what} printed a bad address `{addr}`"))?,
    };
    wait_ready(target.addr, what)?;
    Ok(target)
}

/// `dabba serve COMPONENT` with extra flags.
pub fn dabba_serve(dabba: &Path, component: &Path, extra: &[&str]) -> anyhow::Result<Target> {
    let mut cmd = Command::new(dabba);
    cmd.arg("serve")
        .arg(component)
        .args(["--listen", "127.0.0.1:0", "--quiet"])
        .args(extra);
    spawn_announcing(cmd, "dabba serve")
}

/// A native baseline server binary that takes its listen address as first argument.
pub fn native(binary: &Path) -> anyhow::Result<Target> {
    let mut cmd = Command::new(binary);
    cmd.arg("127.0.0.1:0");
    spawn_announcing(cmd, &binary.display().to_string())
}

/// `wasmtime serve` on the same component, with WASI CLI interfaces enabled as Rust std
/// guests need.
pub fn wasmtime_serve(wasmtime: &Path, component: &Path) -> anyhow::Result<Target> {
    wasmtime_serve_with(wasmtime, component, &["-Scli"])
}

/// `wasmtime serve` on `component` with `flags` (which WASI interfaces to enable).
pub fn wasmtime_serve_with(
    wasmtime: &Path,
    component: &Path,
    flags: &[&str],
) -> anyhow::Result<Target> {
    let port = free_port()?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let child = Command::new(wasmtime)
        .arg("serve")
        .args(flags)
        .args(["--addr", &addr.to_string()])
        .arg(component)
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting wasmtime serve")?;
    let target = Target { child, addr };
    wait_ready(addr, "wasmtime serve")?;
    Ok(target)
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until `GET /` answers (any status) or 60 s pass.
fn wait_ready(addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let req = format!("GET / HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
            let mut buf = [0u8; 12];
            if s.write_all(req.as_bytes()).is_ok()
                && s.read_exact(&mut buf).is_ok()
                && buf.starts_with(b"HTTP/1.1 ")
            {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} on {addr} did not answer within 60 s")
}

/// Finds a program on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// A binary built from this workspace, next to the running `dabba`.
pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(name);
    if path.is_file() {
        Ok(path)
    } else {
        bail!(
            "{} not found next to dabba: build it with `cargo build --release -p dabba-baseline`",
            path.display()
        )
    }
}
