//! Docker, driven through its CLI: images built here from our own binaries (no registry),
//! containers published on loopback only, and what each container costs in memory.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use tokio::process::Command;

/// `docker ARGS…`; its trimmed stdout, or an error with its stderr.
pub async fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running docker (is Docker installed and its daemon running?)")?;
    if !out.status.success() {
        bail!(
            "docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The engine's version, e.g. `20.10.24+dfsg1`.
pub async fn version() -> anyhow::Result<String> {
    docker(&["version", "--format", "{{.Server.Version}}"]).await
}

/// The shared libraries `binary` loads, as `ldd` lists them (none for a static binary).
fn libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(PathBuf::from)
        .collect())
}

/// Builds image `tag` holding `binary` as `/server` and the libraries it links, nothing
/// else (`FROM scratch`), in a context under `dir`. Returns the image's size in bytes.
pub async fn build_image(tag: &str, binary: &Path, dir: &Path) -> anyhow::Result<u64> {
    let context = dir.join(tag.replace(['/', ':'], "_"));
    let rootfs = context.join("rootfs");
    let _ = std::fs::remove_dir_all(&context);
    std::fs::create_dir_all(&rootfs)?;
    std::fs::copy(binary, rootfs.join("server"))
        .with_context(|| format!("copying {}", binary.display()))?;
    for lib in libraries(binary)? {
        let to = rootfs.join(lib.strip_prefix("/").unwrap_or(&lib));
        std::fs::create_dir_all(to.parent().expect("a library path has a parent"))?;
        std::fs::copy(&lib, &to).with_context(|| format!("copying {}", lib.display()))?;
    }
    std::fs::write(
        context.join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nEXPOSE 8080\nENTRYPOINT [\"/server\"]\n",
    )?;
    docker(&["build", "-q", "-t", tag, &context.display().to_string()]).await?;
    let size = docker(&["image", "inspect", "--format", "{{.Size}}", tag]).await?;
    size.parse()
        .with_context(|| format!("image size `{size}` of {tag}"))
}

/// Starts a container of `image` with its port 8080 published on `127.0.0.1:port`;
/// its id.
pub async fn run(image: &str, port: u16, env: &[(&str, &str)]) -> anyhow::Result<String> {
    let publish = format!("127.0.0.1:{port}:8080");
    let mut args = vec![
        "run",
        "-d",
        "--rm",
        "--label",
        "dabba-bench=1",
        "-p",
        &publish,
    ];
    let pairs: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    for p in &pairs {
        args.extend(["-e", p.as_str()]);
    }
    args.push(image);
    docker(&args).await
}

/// Removes containers (stopping them at once).
pub async fn remove(ids: &[String]) -> anyhow::Result<()> {
    for chunk in ids.chunks(50) {
        let mut args = vec!["rm", "-f"];
        args.extend(chunk.iter().map(String::as_str));
        docker(&args).await?;
    }
    Ok(())
}

/// Removes every container an earlier, interrupted benchmark left behind.
pub async fn remove_leftovers() -> anyhow::Result<()> {
    let ids = docker(&["ps", "-aq", "--filter", "label=dabba-bench=1"]).await?;
    let ids: Vec<String> = ids.split_whitespace().map(str::to_string).collect();
    remove(&ids).await
}

/// The memory a container's cgroup charges (cgroup v1 or v2), in bytes.
pub fn memory_bytes(id: &str) -> anyhow::Result<u64> {
    let candidates = [
        format!("/sys/fs/cgroup/memory/docker/{id}/memory.usage_in_bytes"),
        format!("/sys/fs/cgroup/system.slice/docker-{id}.scope/memory.current"),
        format!("/sys/fs/cgroup/docker/{id}/memory.current"),
    ];
    for c in &candidates {
        if let Ok(text) = std::fs::read_to_string(c) {
            return text.trim().parse().with_context(|| format!("reading {c}"));
        }
    }
    bail!("no memory cgroup found for container {id}")
}

/// Resident memory of the per-container runtime processes (`containerd-shim*`,
/// `docker-proxy`), in KiB: what each container costs outside its own cgroup.
pub fn runtime_overhead_kib() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .filter(|status| {
            status.lines().next().is_some_and(|l| {
                let name = l.trim_start_matches("Name:").trim();
                name.starts_with("containerd-shim") || name == "docker-proxy"
            })
        })
        .filter_map(|status| crate::probe::vm_rss_kib(&status))
        .sum()
}
