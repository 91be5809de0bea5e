//! The servers a benchmark compares, each started as its own process on a loopback port
//! (by `dabba-testkit`, as every dabba process is) and stopped when dropped: `dabba
//! serve`, the native baseline servers, and `wasmtime serve`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::bail;
use dabba_testkit::{Process, free_addr, start_server};

/// A running server.
pub struct Server {
    /// Held so that the server stops when this is dropped.
    #[expect(dead_code, reason = "held for its Drop")]
    process: Process,
    pub addr: SocketAddr,
}

/// Waits until the server at `addr` answers `GET /` over HTTP (any status): every
/// server is measured only once it serves, whenever it binds its port.
async fn until_answers(addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answered = tokio::task::spawn_blocking(move || {
            dabba_testkit::http::exchange(addr, "GET", "/", &[], b"", Duration::from_secs(5))
        })
        .await?;
        if answered.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what} on {addr} did not answer within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `dabba serve COMPONENT` with extra flags.
pub async fn dabba_serve(
    dabba: &Path,
    component: &Path,
    extra: &[&str],
    log_dir: &Path,
) -> anyhow::Result<Server> {
    let s = dabba_testkit::Served::start(dabba, component, extra, log_dir).await?;
    until_answers(s.addr, "dabba serve").await?;
    Ok(Server {
        process: s.process,
        addr: s.addr,
    })
}

/// A native baseline server binary that takes its listen address as first argument.
pub async fn native(binary: &Path, log_dir: &Path) -> anyhow::Result<Server> {
    let addr = free_addr()?;
    let name = binary
        .file_name()
        .map_or("native".into(), |n| n.to_string_lossy().into_owned());
    let process = start_server(&name, binary, &[addr.to_string()], &[], log_dir, addr).await?;
    until_answers(addr, &name).await?;
    Ok(Server { process, addr })
}

/// `wasmtime serve` on the same component, with WASI CLI interfaces enabled as Rust std
/// guests need.
pub async fn wasmtime_serve(
    wasmtime: &Path,
    component: &Path,
    log_dir: &Path,
) -> anyhow::Result<Server> {
    wasmtime_serve_with(wasmtime, component, &["-Scli"], log_dir).await
}

/// `wasmtime serve` on `component` with `flags` (which WASI interfaces to enable).
pub async fn wasmtime_serve_with(
    wasmtime: &Path,
    component: &Path,
    flags: &[&str],
    log_dir: &Path,
) -> anyhow::Result<Server> {
    let addr = free_addr()?;
    let mut args: Vec<String> = vec!["serve".into()];
    args.extend(flags.iter().map(|f| f.to_string()));
    args.extend(["--addr".into(), addr.to_string()]);
    args.push(component.display().to_string());
    let process = start_server("wasmtime-serve", wasmtime, &args, &[], log_dir, addr).await?;
    until_answers(addr, "wasmtime serve").await?;
    Ok(Server { process, addr })
}

/// Finds a program on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// A binary built from this workspace, next to this program.
pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(name);
    if path.is_file() {
        Ok(path)
    } else {
        let package = if name == "dabba" {
            "dabba"
        } else {
            "dabba-baseline"
        };
        bail!(
            "{} not found next to {}: build it with `cargo build --release -p {package}`",
            path.display(),
            exe.display()
        )
    }
}
