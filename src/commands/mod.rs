//! One module per subcommand (`apply`, `get`, `describe`, ...; `roles` runs the
//! long-lived processes: `controller`, `host`, `up`), and what they share: which
//! cluster to talk to (`target`) and how to print (`output`).

pub mod apply;
pub mod audit;
pub mod bench;
pub mod cluster;
pub mod cron;
pub mod delete;
pub mod describe;
pub mod get;
pub mod logs;
pub mod output;
pub mod rbac;
pub mod region;
pub mod roles;
pub mod rollout;
pub mod run;
pub mod scale;
pub mod secret;
pub mod serve;
pub mod target;
pub mod token;

use clap::ValueEnum;

/// What `describe` and `delete` act on.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ObjectKind {
    App,
    Cronjob,
    /// An analysis template applied on its own to a namespace.
    Analysistemplate,
    /// A secret (`describe` shows its keys and users, never a value).
    Secret,
    /// A namespace: its quota (used and allowed) and limit range.
    Namespace,
    /// A role (`delete`; `--cluster-wide` for a cluster-wide one).
    Role,
    /// A role binding (`delete`; `--cluster-wide` for a cluster-wide one).
    Rolebinding,
}

impl ObjectKind {
    /// The word for it in messages.
    pub fn noun(self) -> &'static str {
        match self {
            ObjectKind::App => "app",
            ObjectKind::Cronjob => "cronjob",
            ObjectKind::Analysistemplate => "analysistemplate",
            ObjectKind::Secret => "secret",
            ObjectKind::Namespace => "namespace",
            ObjectKind::Role => "role",
            ObjectKind::Rolebinding => "rolebinding",
        }
    }
}

/// Builds the async runtime the long-running commands run on: one worker per core.
pub fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("dabba-worker")
        .build()?)
}

/// Runs one API command to completion on a single thread.
pub fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
