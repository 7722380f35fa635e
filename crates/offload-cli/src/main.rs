//! The `offload` binary: thin commands over the `offload` library.
//!
//! `main` parses the command line with clap, resolves the global options
//! (configuration file → `OFFLOAD_*` environment → flags), hands the command
//! to its module under [`commands`], and turns the outcome into an exit code
//! with at most one readable `error: ...` line on stderr.

mod commands;
mod config;
mod exec;
mod failure;
mod globals;
mod http_runner;
mod output;
mod server;
mod suggest;
mod tasks;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::failure::exit_code;
use crate::globals::{GlobalArgs, Globals};

/// Exit codes, shown in `--help`.
const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  the operation failed (task failed or aborted, task not found, database error)
  2  bad input (invalid JSON, malformed id, bad option, malformed offload.toml)
  3  the task has not finished yet (`result` without --wait)
  4  timed out waiting for the task (`--wait`, `watch --timeout`)
  5  the task was aborted (`watch`)";

/// Durable background tasks: enqueue, run, watch and manage them.
#[derive(Debug, Parser)]
#[command(name = "offload", version, after_help = EXIT_CODES_HELP)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// One variant per command; each lives in its own module under `commands/`.
#[derive(Debug, Subcommand)]
enum Command {
    /// Enqueue one task, or many from a JSON-lines file.
    #[command(after_help = commands::enqueue::ENQUEUE_HELP)]
    Enqueue(commands::enqueue::EnqueueArgs),
    /// List tasks, newest first.
    List(commands::list::ListArgs),
    /// Show one task with its error, progress and attempt history.
    Get(commands::get::GetArgs),
    /// Print a task's output (optionally waiting for it).
    #[command(after_help = commands::result::RESULT_HELP)]
    Result(commands::result::ResultArgs),
    /// Follow one task live until it ends; the exit code tells how it ended.
    #[command(after_help = commands::watch::WATCH_HELP)]
    Watch(commands::watch::WatchArgs),
    /// Abort a task (a running one is asked to stop).
    Abort(commands::abort::AbortArgs),
    /// Run a failed or aborted task again, keeping its history.
    Retry(commands::retry::RetryArgs),
    /// Delete a task that is not running, with its history.
    Delete(commands::delete::DeleteArgs),
    /// Delete finished tasks by status, name, queue or age.
    Purge(commands::purge::PurgeArgs),
    /// Serve the HTTP API (and run the runners of offload.toml) until SIGINT/SIGTERM.
    Serve(commands::serve::ServeArgs),
    /// Run the runners declared in offload.toml until SIGINT/SIGTERM.
    Worker(commands::worker::WorkerArgs),
    /// A live terminal view of the queue.
    Monitor(commands::monitor::MonitorArgs),
    /// Run the standard benchmark workloads (SPEC section 6) and print RESULT lines.
    Bench(commands::bench::BenchArgs),
    /// Work on a whole store: `store copy --from URL --to URL`.
    Store(commands::store::StoreArgs),
    /// Groups (fan-out / fan-in): enqueue members and a callback, see progress, abort.
    #[command(after_help = commands::groups::GROUPS_HELP)]
    Groups(commands::groups::GroupsArgs),
    /// Cron schedules: add, list (with next run times), pause, resume, delete.
    #[command(after_help = commands::schedules::SCHEDULES_HELP)]
    Schedules(commands::schedules::SchedulesArgs),
    /// Flow-control limits: concurrency, per-key concurrency, rate, quota per fairness key.
    #[command(after_help = commands::limits::LIMITS_HELP)]
    Limits(commands::limits::LimitsArgs),
    /// API tokens for `offload serve`: create, list, delete.
    Tokens(commands::tokens::TokensArgs),
    /// Webhook subscriptions and their deliveries: add, list, deliveries, delete, secret.
    Webhooks(commands::webhooks::WebhooksArgs),
    /// The log of operator actions (abort, retry, delete, purge, tokens), newest first.
    Audit(commands::audit::AuditArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_exit(e),
    };
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            output::error_line(&format!("cannot start the async runtime: {e}"));
            return ExitCode::from(failure::code::FAILED);
        }
    };
    let outcome = runtime.block_on(run(cli));
    // Do not wait for background threads of the store beyond this point.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let chain: Vec<String> = err.chain().map(|c| format!("{c:?}")).collect();
            tracing::debug!(?chain, "command failed");
            if let Some(message) = failure::message(&err) {
                output::error_line(&message);
            }
            ExitCode::from(exit_code(&err))
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let globals = Globals::resolve(cli.global)?;
    match cli.command {
        Command::Enqueue(args) => commands::enqueue::run(args, &globals).await,
        Command::List(args) => commands::list::run(args, &globals).await,
        Command::Get(args) => commands::get::run(args, &globals).await,
        Command::Result(args) => commands::result::run(args, &globals).await,
        Command::Watch(args) => commands::watch::run(args, &globals).await,
        Command::Abort(args) => commands::abort::run(args, &globals).await,
        Command::Retry(args) => commands::retry::run(args, &globals).await,
        Command::Delete(args) => commands::delete::run(args, &globals).await,
        Command::Purge(args) => commands::purge::run(args, &globals).await,
        Command::Serve(args) => commands::serve::run(args, &globals).await,
        Command::Worker(args) => commands::worker::run(args, &globals).await,
        Command::Monitor(args) => commands::monitor::run(args, &globals).await,
        Command::Bench(args) => commands::bench::run(args, &globals).await,
        Command::Store(args) => commands::store::run(args, &globals).await,
        Command::Groups(args) => commands::groups::run(args, &globals).await,
        Command::Schedules(args) => commands::schedules::run(args, &globals).await,
        Command::Limits(args) => commands::limits::run(args, &globals).await,
        Command::Tokens(args) => commands::tokens::run(args, &globals).await,
        Command::Audit(args) => commands::audit::run(args, &globals).await,
        Command::Webhooks(args) => commands::webhooks::run(args, &globals).await,
    }
}

/// Help and version go to stdout as clap prints them; a usage error becomes
/// one `error: ...` line (plus clap's tip, if any) and exit code 2.
fn clap_exit(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.use_stderr() {
                ExitCode::from(failure::code::USAGE)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            output::error_line(&clap_line(&e.to_string()));
            ExitCode::from(failure::code::USAGE)
        }
    }
}

/// clap's multi-line usage error as one line: the message, the arguments
/// it lists, and its tips (the usage block and the --help hint are dropped).
fn clap_line(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect();
    let Some((first, rest)) = lines.split_first() else {
        return "invalid arguments (see --help)".to_owned();
    };
    let first = first.trim_start_matches("error: ");
    if rest.is_empty() {
        first.to_owned()
    } else if first.ends_with(':') {
        format!("{first} {}", rest.join(", "))
    } else {
        format!("{first} ({})", rest.join("; "))
    }
}

/// Logs go to stderr; `RUST_LOG` chooses the level (default `warn`).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
