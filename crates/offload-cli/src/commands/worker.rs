//! `offload worker`: runs the `exec` and `http` runners that `offload.toml` declares
//! until SIGINT or SIGTERM.
//!
//! The first signal starts a graceful shutdown (stop claiming, let running
//! tasks finish within `--shutdown-grace`, then stop the rest and hand them
//! back as `pending`); a second signal kills every running command's process
//! group and exits at once (code 130).
//!
//! Queues: `--queue` (repeatable, or `OFFLOAD_QUEUES=a,b`), else
//! `[worker] queues`, else `default` plus every queue a runner names.
//! Concurrency (`--concurrency`, `OFFLOAD_CONCURRENCY`, `[worker]
//! concurrency`, default 10) is the number of tasks at once in this
//! process, shared out evenly between the queues (at least one each).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use offload::{Client, DEFAULT_QUEUE, Runner, Worker, WorkerBuilder};
use tokio::signal::unix::{SignalKind, signal};

use crate::commands::duration_arg;
use crate::config::{Config, RunnerKind};
use crate::exec::{ExecRunner, ProcessGroups};
use crate::failure::Failure;
use crate::globals::Globals;
use crate::http_runner::HttpRunner;
use crate::output;

/// Exit code after a forced exit (second signal).
const FORCED_EXIT: i32 = 130;

/// Arguments of `offload worker`.
#[derive(Debug, clap::Args)]
pub(crate) struct WorkerArgs {
    /// Tasks at once in this process [default: [worker] concurrency, else 10]
    #[arg(long, env = "OFFLOAD_CONCURRENCY", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    concurrency: Option<u32>,
    /// A queue to take tasks from (repeatable) [default: [worker] queues, else default + runner queues]
    #[arg(
        long = "queue",
        env = "OFFLOAD_QUEUES",
        value_name = "QUEUE",
        value_delimiter = ','
    )]
    queues: Vec<String>,
    /// Lease length: a task whose worker dies runs again after at most this long.
    #[arg(long, env = "OFFLOAD_LEASE", value_name = "DURATION", value_parser = duration_arg)]
    lease: Option<Duration>,
    /// How long running tasks may finish after SIGINT/SIGTERM before they are stopped.
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    shutdown_grace: Option<Duration>,
    /// Time between SIGTERM and SIGKILL of a command asked to stop.
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    kill_grace: Option<Duration>,
}

/// Runs `offload worker`.
pub(crate) async fn run(args: WorkerArgs, globals: &Globals) -> anyhow::Result<()> {
    // refused before the store is opened (or created)
    if !has_runners(&globals.config) {
        return Err(Failure::usage(NO_RUNNERS));
    }
    let client = globals.client().await?;
    let groups = ProcessGroups::default();
    let Some((builder, summary)) = build(&args, globals, &client, &groups) else {
        return Err(Failure::usage(NO_RUNNERS));
    };
    let worker = builder.build().context("cannot start the worker")?;
    let shutdown = shutdown_signal("offload worker", groups)?;
    output::note(&format!(
        "offload worker: {summary}, database {}",
        globals.database_url
    ));
    worker
        .run(shutdown)
        .await
        .context("the worker stopped with an error")?;
    output::note("offload worker: stopped");
    Ok(())
}

/// The message when `offload.toml` declares no runner to run.
pub(crate) const NO_RUNNERS: &str = "no runners configured: add one to offload.toml, e.g. \
     [runners.resize_image] exec = [\"python3\", \"resize.py\"] (or pass --config PATH)";

/// Sets up the worker for the runners of `offload.toml` with the
/// settings of `args`, and a line describing it; `None` when no runner is
/// configured.
pub(crate) fn build(
    args: &WorkerArgs,
    globals: &Globals,
    client: &Client,
    groups: &ProcessGroups,
) -> Option<(WorkerBuilder, String)> {
    let config = &globals.config;
    let kill_grace = args.kill_grace.unwrap_or(crate::exec::DEFAULT_KILL_GRACE);
    let runners = runners(config, groups, kill_grace);
    if runners.is_empty() {
        return None;
    }
    let worker_config = config.worker();
    let concurrency = args
        .concurrency
        .and_then(|n| usize::try_from(n).ok())
        .or(worker_config.concurrency)
        .unwrap_or(offload::DEFAULT_CONCURRENCY);
    let queues = queues(&args.queues, config);
    let shares = share(concurrency, queues.len());

    let mut builder = Worker::builder(client.store().clone())
        // The executor drops a runner that ignores a stop request after this
        // long; our own SIGKILL comes first.
        .abort_grace(kill_grace + Duration::from_secs(2));
    for (queue, n) in queues.iter().zip(&shares) {
        builder = builder.queue(queue.clone(), *n);
    }
    if let Some(lease) = args.lease {
        builder = builder.lease(lease);
    }
    if let Some(grace) = args.shutdown_grace {
        builder = builder.shutdown_grace(grace);
    }
    let names: Vec<&str> = runners.iter().map(|(n, _)| n.as_str()).collect();
    let summary = format!(
        "{} runner(s) [{}], queues [{}], concurrency {concurrency}",
        names.len(),
        names.join(", "),
        queues
            .iter()
            .zip(&shares)
            .map(|(q, n)| format!("{q}:{n}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    for (name, runner) in runners {
        builder = builder.runner_arc(name, runner);
    }
    for schedule in config.schedules() {
        builder = builder.schedule(schedule);
    }
    for limit in config.limits() {
        builder = builder.limit(limit);
    }
    Some((builder, summary))
}

/// One runner per `[runners.NAME]`: an [`ExecRunner`] for `exec`, an
/// [`HttpRunner`] for `http`.
fn runners(
    config: &Config,
    groups: &ProcessGroups,
    kill_grace: Duration,
) -> Vec<(String, Arc<dyn Runner>)> {
    let mut runners: Vec<(String, Arc<dyn Runner>)> = Vec::new();
    for (name, runner) in &config.runners {
        let runner = runner.get_ref();
        match runner.kind() {
            Some(RunnerKind::Exec(argv)) => {
                let exec = ExecRunner::new(argv.to_vec(), groups.clone())
                    .timeout(runner.timeout)
                    .kill_grace(kill_grace);
                runners.push((name.clone(), Arc::new(exec)));
            }
            Some(RunnerKind::Http(url)) => {
                runners.push((name.clone(), Arc::new(HttpRunner::new(url, runner.timeout))));
            }
            None => {}
        }
    }
    runners
}

/// Whether `offload.toml` declares a runner.
pub(crate) fn has_runners(config: &Config) -> bool {
    config
        .runners
        .values()
        .any(|r| r.get_ref().kind().is_some())
}

/// The queues to serve, in order, without duplicates.
fn queues(flags: &[String], config: &Config) -> Vec<String> {
    let flags: Vec<String> = flags
        .iter()
        .map(|q| q.trim().to_owned())
        .filter(|q| !q.is_empty())
        .collect();
    let chosen = if !flags.is_empty() {
        flags
    } else if let Some(queues) = config.worker().queues {
        queues
    } else {
        let mut all = vec![DEFAULT_QUEUE.to_owned()];
        all.extend(
            config
                .runners
                .values()
                .filter_map(|r| r.get_ref().queue.clone()),
        );
        all
    };
    let mut seen = BTreeSet::new();
    chosen
        .into_iter()
        .filter(|q| seen.insert(q.clone()))
        .collect()
}

/// Shares `total` slots between `n` queues as evenly as possible, at least one each.
fn share(total: usize, n: usize) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    let base = total / n;
    let extra = total % n;
    (0..n)
        .map(|i| (base + usize::from(i < extra)).max(1))
        .collect()
}

/// A future that resolves on the first SIGINT, SIGTERM or SIGHUP (a closed
/// terminal); a second one kills every command's process group and exits
/// the process. `who` starts the messages (`offload worker`).
pub(crate) fn shutdown_signal(
    who: &'static str,
    groups: ProcessGroups,
) -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
        output::note(&format!(
            "{who}: shutting down gracefully (signal again to force)"
        ));
        let _ = tx.send(());
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
        output::note(&format!("{who}: forced exit; killing running commands"));
        groups.kill_all();
        std::process::exit(FORCED_EXIT);
    });
    Ok(async move {
        let _ = rx.await;
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn shares_are_even_and_positive() {
        assert_eq!(share(10, 1), vec![10]);
        assert_eq!(share(10, 3), vec![4, 3, 3]);
        assert_eq!(share(1, 3), vec![1, 1, 1]);
    }

    #[test]
    fn queues_come_from_flags_file_or_runners() {
        let config = Config::parse(
            "[runners.a]\nexec = [\"x\"]\nqueue = \"images\"\n[runners.b]\nexec = [\"y\"]\n",
            Path::new("offload.toml"),
        )
        .unwrap();
        assert_eq!(queues(&[], &config), vec!["default", "images"]);
        assert_eq!(queues(&["q".into(), "q".into()], &config), vec!["q"]);
        let config = Config::parse("[worker]\nqueues = [\"z\"]\n", Path::new("x")).unwrap();
        assert_eq!(queues(&[], &config), vec!["z"]);
    }

    #[test]
    fn exec_and_http_runners_are_both_run() {
        let config = Config::parse(
            "[runners.a]\nhttp = \"http://127.0.0.1:9/x\"\n[runners.b]\nexec = [\"true\"]\n",
            Path::new("offload.toml"),
        )
        .unwrap();
        let names: Vec<String> =
            runners(&config, &ProcessGroups::default(), Duration::from_secs(1))
                .into_iter()
                .map(|(n, _)| n)
                .collect();
        assert_eq!(names, vec!["a", "b"]);
        assert!(has_runners(&config));
        assert!(!has_runners(&Config::parse("", Path::new("x")).unwrap()));
    }
}
