//! What the tests and benchmarks build before they start anything: the guest
//! components (as `cargo guests` builds them), the native baseline servers, and the
//! benchmark harness — each once per process, with the cargo that runs the tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The guest crates, by the file they build.
const GUESTS: &[(&str, &str)] = &[
    ("payment", "dabba-example-payment"),
    ("payment-smoke", "dabba-example-payment"),
    ("search", "dabba-example-search"),
    ("settlement", "dabba-example-settlement"),
    ("hello", "dabba-guest-hello"),
    ("hostile", "dabba-guest-hostile"),
    ("job", "dabba-guest-job"),
];

/// The workspace this crate is part of.
pub fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit/ is inside the workspace")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

/// Runs `cargo ARGS` in the workspace, once per process and `cell`; panics if it fails.
fn cargo_once(cell: &'static OnceLock<()>, what: &str, args: &[&str]) {
    cell.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(workspace())
            .args(args)
            .status()
            .unwrap_or_else(|e| panic!("running cargo to build {what}: {e}"));
        assert!(status.success(), "building {what} failed");
    });
}

/// The path of a guest component, building all guests once (the same build as
/// `cargo guests`).
pub fn guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let mut args = vec!["build", "--profile", "guest", "--target", "wasm32-wasip2"];
    let mut packages: Vec<&str> = GUESTS.iter().map(|(_, p)| *p).collect();
    packages.dedup();
    for package in packages {
        args.extend(["-p", package]);
    }
    cargo_once(&BUILT, "the guest components", &args);
    assert!(
        GUESTS.iter().any(|(n, _)| *n == name),
        "unknown guest {name}"
    );
    target_dir()
        .join("wasm32-wasip2/guest")
        .join(format!("{name}.wasm"))
}

/// The native servers the container images are built from (`payment-native`,
/// `search-native`), built once in the `container` profile; their directory.
pub fn native_servers() -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    cargo_once(
        &BUILT,
        "the native servers",
        &["build", "--profile", "container", "-p", "dabba-baseline"],
    );
    target_dir().join("container")
}

/// Makes sure `dabba-bench` is next to `dabba` (what `dabba bench` runs). `cargo test
/// --workspace` builds it (it has tests of its own), with the same features as
/// everything else; only when it is missing or older than `dabba` is it built here,
/// as `cargo test -p dabba` alone would leave it.
pub fn bench_harness(dabba: &Path) {
    static BUILT: OnceLock<()> = OnceLock::new();
    let harness = dabba.with_file_name("dabba-bench");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&harness).is_some_and(|h| modified(dabba).is_none_or(|d| h >= d)) {
        return;
    }
    cargo_once(
        &BUILT,
        "the benchmark harness",
        &["build", "-p", "dabba-bench"],
    );
}

/// `component` made `extra` bytes larger by a custom section at its end (named
/// `dabba-padding`): still a valid component that runs as before — how the tests and
/// benchmarks get components as large as real ones (a CPython or .NET runtime inside)
/// from the small guests built here.
pub fn padded_component(component: &[u8], extra: usize) -> Vec<u8> {
    fn leb128(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"dabba-padding";
    let mut content = Vec::with_capacity(extra + 16);
    leb128(name.len(), &mut content);
    content.extend_from_slice(name);
    content.resize(content.len() + extra, 0x5a);
    let mut out = Vec::with_capacity(component.len() + content.len() + 8);
    out.extend_from_slice(component);
    out.push(0); // a custom section
    leb128(content.len(), &mut out);
    out.extend_from_slice(&content);
    out
}

/// The componentize-py release the Python test component is built with (from PyPI).
const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

/// `tests/python/hello` built into a `wasi:http` component by componentize-py (about
/// 18 MB: CPython is inside), once per process. componentize-py is installed from PyPI
/// into a virtual environment under the target directory the first time; the WASI WIT
/// it builds against is the one the host itself implements (wasmtime-wasi-http's, found
/// with `cargo metadata`).
pub fn python_component() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = target_dir().join("python");
            let venv = dir.join("venv");
            let tool = venv.join("bin/componentize-py");
            if !tool.exists() {
                run(
                    Command::new("python3").args(["-m", "venv"]).arg(&venv),
                    "creating a Python virtual environment (Debian: apt install python3-venv)",
                );
                run(
                    Command::new(venv.join("bin/pip")).args([
                        "install",
                        "--quiet",
                        COMPONENTIZE_PY,
                    ]),
                    "installing componentize-py from PyPI",
                );
            }
            let out = dir.join("hello.wasm");
            run(
                Command::new(&tool)
                    .arg("-d")
                    .arg(wasi_http_wit())
                    .args(["-w", "wasi:http/proxy", "componentize", "-p"])
                    .arg(workspace().join("tests/python/hello"))
                    .args(["app", "-o"])
                    .arg(&out),
                "building the Python component with componentize-py",
            );
            out
        })
        .clone()
}

fn run(cmd: &mut Command, what: &str) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("{what}: cannot start {cmd:?}: {e}"));
    assert!(status.success(), "{what}: {cmd:?} failed ({status})");
}

/// The WIT directory of the wasmtime-wasi-http crate this workspace builds with.
fn wasi_http_wit() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace())
        .args(["metadata", "--format-version", "1"])
        .output()
        .expect("running cargo metadata");
    assert!(out.status.success(), "cargo metadata failed");
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("cargo metadata's JSON");
    let manifest = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "wasmtime-wasi-http")
        .and_then(|p| p["manifest_path"].as_str())
        .expect("wasmtime-wasi-http among the workspace's packages");
    Path::new(manifest)
        .parent()
        .expect("a crate directory")
        .join("wit")
}
