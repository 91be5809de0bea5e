//! A child process that is killed when dropped, with its stdout and stderr appended to a
//! log file (read back for failure messages), and that can be killed and started again
//! with the same command line, as a crashed server is restarted.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::Context;

pub struct Process {
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    dir: Option<PathBuf>,
    child: Option<Child>,
    log: PathBuf,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("pid", &self.pid())
            .finish_non_exhaustive()
    }
}

impl Process {
    /// Starts `program args...` with `envs` in `dir` (default: the current one), its
    /// output appended to `log_dir/NAME.log`.
    ///
    /// Children run without `RUST_BACKTRACE`: with it set, every internal error on the
    /// hot path of a Rust server captures a backtrace, which halves its throughput.
    /// `DABBA_TEST_LOG`, when set, replaces the `RUST_LOG` a launcher asks for (e.g.
    /// `DABBA_TEST_LOG=warn,dabba_host=debug` to see where a flaky request went).
    pub fn start(
        name: &str,
        program: &Path,
        args: &[String],
        envs: &[(&str, &str)],
        dir: Option<&Path>,
        log_dir: &Path,
    ) -> anyhow::Result<Process> {
        std::fs::create_dir_all(log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;
        let log_filter = std::env::var("DABBA_TEST_LOG").ok();
        let mut p = Process {
            name: name.to_string(),
            program: program.to_path_buf(),
            args: args.to_vec(),
            envs: envs
                .iter()
                .map(|(k, v)| match &log_filter {
                    Some(filter) if *k == "RUST_LOG" => (k.to_string(), filter.clone()),
                    _ => (k.to_string(), v.to_string()),
                })
                .collect(),
            dir: dir.map(Path::to_path_buf),
            child: None,
            log: log_dir.join(format!("{name}.log")),
        };
        p.restart()?;
        Ok(p)
    }

    /// Starts the process (again), appending its output to its log file.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(d) = &self.dir {
            cmd.current_dir(d);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} ({})", self.name, self.program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The most memory the running process has held resident at once, in KiB.
    pub fn peak_memory_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status_kib(&status, "VmHWM")
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether the process has exited on its own, and how (an error to report).
    pub fn exited(&mut self) -> Option<String> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(format!(
            "{} exited ({status}); its log:\n{}",
            self.name,
            self.log()
        ))
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
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// What the process has printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A memory field (`VmRSS`: resident now, `VmHWM`: the most resident at once) of a
/// `/proc/PID/status` text, in KiB. Kernel threads have none.
pub fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_read_from_proc_status() {
        let status = "Name:\tdabba\nVmPeak:\t  9000 kB\nVmHWM:\t    7000 kB\nVmRSS:\t    5632 kB\nThreads:\t4\n";
        assert_eq!(status_kib(status, "VmRSS"), Some(5632));
        assert_eq!(status_kib(status, "VmHWM"), Some(7000));
        assert_eq!(status_kib(status, "VmRS"), None);
        assert_eq!(
            status_kib("Name:\tkworker\n", "VmRSS"),
            None,
            "kernel threads have none"
        );
    }
}
