//! `dabba`: the one binary. Library crates do the work; this is thin glue that parses
//! flags, wires the roles into a process, and reports errors once, with their causes.

mod commands;
mod flags;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// dabba runs WebAssembly components as serverless workloads: HTTP functions with a
/// fresh sandboxed instance per request, and jobs, under hard CPU, memory and time limits.
#[derive(Debug, Parser)]
#[command(name = "dabba", version, propagate_version = true)]
struct Cli {
    /// More log output (-v info, -vv debug). RUST_LOG overrides it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve one HTTP component (wasi:http) on a local port.
    Serve(commands::serve::ServeArgs),
    /// Run one job component (wasi:cli) to completion; exits with its exit code.
    Run(commands::run::RunArgs),
    /// Run a one-node platform in this process: controller, host and ingress.
    Up(commands::roles::up::UpArgs),
    /// Run a controller (one member of the replicated control plane).
    Controller(commands::roles::controller::ControllerArgs),
    /// Run a host: it registers with the controllers and runs the pods they assign.
    Host(commands::roles::host::HostArgs),
    /// Create or update an app or cron jobs from a manifest (uploading components).
    Apply(commands::apply::ApplyArgs),
    /// List apps, revisions, pods, hosts, cron jobs or job runs.
    Get(commands::get::GetArgs),
    /// Show everything about an app or a cron job.
    Describe(commands::describe::DescribeArgs),
    /// Delete an app and its pods, or a cron job and its runs.
    Delete(commands::delete::DeleteArgs),
    /// Set an app's replica count.
    Scale(commands::scale::ScaleArgs),
    /// Show recent output of an app's instances, or a job run's output.
    Logs(commands::logs::LogsArgs),
    /// Stop a cron job from starting runs.
    Suspend(commands::cron::CronArgs),
    /// Let a suspended cron job start runs again.
    Resume(commands::cron::CronArgs),
    /// Create a run of a cron job now (`job --from cronjob/NAME`), a role or a role
    /// binding.
    #[command(subcommand)]
    Create(commands::rbac::CreateCommand),
    /// Ask what this token may do: `dabba auth can-i VERB RESOURCE [-n NS]`.
    #[command(subcommand)]
    Auth(commands::rbac::AuthCommand),
    /// Watch and steer canary and blue-green rollouts: status, promote, abort, retry,
    /// pause, resume, undo.
    #[command(subcommand)]
    Rollout(commands::rollout::RolloutCommand),
    /// Move the apps placed in a region: failover, drain (planned), restore (failback).
    #[command(subcommand)]
    Region(commands::region::RegionCommand),
    /// Inspect and change the controller cluster.
    #[command(subcommand)]
    Cluster(commands::cluster::ClusterCommand),
    /// Create, list and revoke API tokens (admin only).
    #[command(subcommand)]
    Token(commands::token::TokenCommand),
    /// Set and remove secrets' keys, and rotate the key that seals them. Values go in
    /// and never come out; apps read them through wasi:config when they list them.
    #[command(subcommand)]
    Secret(commands::secret::SecretCommand),
    /// Show who changed what and who was refused (admin only), from the replicated,
    /// hash-chained audit log.
    Audit(commands::audit::AuditArgs),
    /// Measure dabba against its baselines on this machine: native servers, `wasmtime
    /// serve`, Docker containers (runs `dabba-bench`; `dabba bench --help` lists the
    /// suites).
    #[command(disable_help_flag = true)]
    Bench(commands::bench::BenchArgs),
}

/// jemalloc instead of glibc's malloc: a controller's memory must not grow with the
/// workload data it has read or written, and glibc keeps freed memory in per-thread
/// arenas (a controller that had served a large snapshot held on to hundreds of MiB it
/// no longer used); jemalloc gives unused pages back to the system after a few seconds.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Serve(args) => commands::serve::serve(args).map(|()| ExitCode::SUCCESS),
        Command::Run(args) => commands::run::run(args),
        Command::Bench(args) => commands::bench::bench(args),
        Command::Up(args) => commands::roles::up::up(args).map(|()| ExitCode::SUCCESS),
        Command::Controller(args) => {
            commands::roles::controller::controller(args).map(|()| ExitCode::SUCCESS)
        }
        Command::Host(args) => commands::roles::host::host(args).map(|()| ExitCode::SUCCESS),
        Command::Apply(args) => commands::apply::apply(args).map(|()| ExitCode::SUCCESS),
        Command::Get(args) => commands::get::get(args).map(|()| ExitCode::SUCCESS),
        Command::Describe(args) => commands::describe::describe(args).map(|()| ExitCode::SUCCESS),
        Command::Delete(args) => commands::delete::delete(args).map(|()| ExitCode::SUCCESS),
        Command::Scale(args) => commands::scale::scale(args).map(|()| ExitCode::SUCCESS),
        Command::Logs(args) => commands::logs::logs(args).map(|()| ExitCode::SUCCESS),
        Command::Suspend(args) => commands::cron::suspend(args).map(|()| ExitCode::SUCCESS),
        Command::Resume(args) => commands::cron::resume(args).map(|()| ExitCode::SUCCESS),
        Command::Create(cmd) => commands::rbac::create(cmd).map(|()| ExitCode::SUCCESS),
        Command::Auth(cmd) => commands::rbac::auth(cmd).map(|yes| {
            if yes {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }),
        Command::Rollout(cmd) => commands::rollout::rollout(cmd),
        Command::Region(cmd) => commands::region::region(cmd).map(|()| ExitCode::SUCCESS),
        Command::Cluster(cmd) => commands::cluster::cluster(cmd).map(|()| ExitCode::SUCCESS),
        Command::Token(cmd) => commands::token::token(cmd).map(|()| ExitCode::SUCCESS),
        Command::Secret(cmd) => commands::secret::secret(cmd).map(|()| ExitCode::SUCCESS),
        Command::Audit(args) => commands::audit::audit(args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // Print the error once, then each cause that adds something new (many
            // errors already include their source in their own message).
            let mut said = e.to_string();
            eprintln!("error: {said}");
            for cause in e.chain().skip(1) {
                let text = cause.to_string();
                if !said.contains(&text) {
                    eprintln!("  caused by: {text}");
                    said.push_str(&text);
                }
            }
            ExitCode::from(2)
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
