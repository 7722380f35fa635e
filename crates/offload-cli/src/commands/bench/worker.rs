//! The worker side of `offload bench`, and the driver's link to it.
//!
//! [`serve`] opens the store, starts an [`offload::Worker`] with
//! concurrency `BENCH_CONCURRENCY` and a no-op runner that counts each task
//! and, when the input carries `"t"`, records `now - t` (pickup latency),
//! then reports `ready`. It times from just before the store is opened
//! until every expected task has been handled **and** the store shows no
//! pending or running bench task (polled every 2 ms once the count is
//! reached; a standing backlog of delayed or blocked tasks stays), and
//! reports `done` with the elapsed time, the count and the latencies.
//!
//! As in the peer harness the worker is a separate process: the driver
//! starts this binary again as `offload bench --worker <mode> --expect <n>
//! --database-url <url>` ([`WorkerLink::spawn`]), which prints each
//! [`Report`] as one JSON line on stdout. The driver holds the worker's
//! stdin open; when it closes (the driver ended, even by `SIGKILL`) the
//! worker process exits at once, so an orphaned worker never takes tasks
//! from a later run's database (on PostgreSQL the schema has the same
//! name). With `--embedded` the same
//! [`serve`] runs as a task of the driver, on the driver's store, and
//! reports over a channel ([`WorkerLink::embedded`]).

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use offload::{Client, Context, Controller, Runner, Store, Task, TaskError, Worker, async_trait};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout};

use super::workloads::{ready_or_running, wall_clock_ms};
use super::{QUEUE, Settings, TASK_NAME};
use crate::output;

/// How often the worker re-counts unfinished tasks once all were handled.
const FINISHED_POLL: Duration = Duration::from_millis(2);
/// How long a worker may take to stop after it reported `done`.
const STOP_WAIT: Duration = Duration::from_secs(10);
/// Extra time the driver waits for a report beyond `BENCH_TIMEOUT`.
const REPORT_SLACK: Duration = Duration::from_secs(30);

/// Which workload a worker process serves (it behaves the same for both;
/// the mode names it in process listings and messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Mode {
    /// `drain`.
    Drain,
    /// `pickup_latency`.
    Latency,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Drain => "drain",
            Mode::Latency => "latency",
        }
    }
}

/// What the worker tells the driver, one JSON line each.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(super) enum Report {
    /// The worker has started.
    Ready,
    /// Every expected task ran and none is unfinished (or time ran out).
    Done {
        finished: bool,
        elapsed: f64,
        completed: u64,
        latencies: Vec<f64>,
        /// Why the worker stopped before the end, when not a timeout.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The worker could not start or check the store.
    Failed { error: String },
}

/// Counts handled tasks and keeps their pickup latencies.
struct Tally {
    expect: u64,
    handled: AtomicU64,
    all_handled: Notify,
    latencies: Mutex<Vec<f64>>,
}

impl Tally {
    fn new(expect: u64) -> Self {
        Self {
            expect,
            handled: AtomicU64::new(0),
            all_handled: Notify::new(),
            latencies: Mutex::new(Vec::new()),
        }
    }

    fn handled(&self, sent_at_ms: Option<f64>) {
        if let Some(t) = sent_at_ms {
            let latency = wall_clock_ms() - t;
            self.latencies
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(latency);
        }
        if self.handled.fetch_add(1, Ordering::SeqCst) + 1 == self.expect {
            // stores a permit if nobody waits yet
            self.all_handled.notify_one();
        }
    }

    fn count(&self) -> u64 {
        self.handled.load(Ordering::SeqCst)
    }

    async fn wait_all(&self) {
        if self.count() < self.expect {
            self.all_handled.notified().await;
        }
    }

    fn take_latencies(&self) -> Vec<f64> {
        std::mem::take(&mut *self.latencies.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The no-op runner: counts the task and records its pickup latency.
struct Noop(Arc<Tally>);

#[async_trait]
impl Runner for Noop {
    async fn run(
        &self,
        task: &Task,
        _ctx: &Context,
        _ctl: &Controller,
    ) -> Result<serde_json::Value, TaskError> {
        self.0
            .handled(task.input.get("t").and_then(serde_json::Value::as_f64));
        Ok(serde_json::Value::Null)
    }
}

/// Where [`serve`] gets its store.
enum Source {
    /// Opens this URL (timed: connecting is part of the measurement).
    Url(String),
    /// The driver's open store (`--embedded`).
    Open(Arc<dyn Store>),
}

/// Runs a worker until `expect` tasks were handled and none is unfinished,
/// reporting through `report`.
async fn serve<F>(settings: &Settings, source: Source, expect: u64, report: F)
where
    F: Fn(Report) + Send + Sync,
{
    let tally = Arc::new(Tally::new(expect));
    let start = Instant::now();
    let started = async {
        let store = match source {
            Source::Url(url) => offload::open(&url)
                .await
                .with_context(|| format!("cannot open database {url}"))?,
            Source::Open(store) => store,
        };
        let worker = Worker::builder(store.clone())
            .queue(QUEUE, settings.concurrency)
            .runner(TASK_NAME, Noop(tally.clone()))
            .build()?
            .start();
        anyhow::Ok((Client::new(store), worker))
    }
    .await;
    let (client, worker) = match started {
        Ok(started) => started,
        Err(e) => {
            report(Report::Failed {
                error: format!("{e:#}"),
            });
            return;
        }
    };
    report(Report::Ready);
    let finished = timeout(settings.timeout, async {
        tally.wait_all().await;
        while ready_or_running(&client).await? > 0 {
            sleep(FINISHED_POLL).await;
        }
        anyhow::Ok(())
    })
    .await;
    let elapsed = start.elapsed().as_secs_f64();
    report(Report::Done {
        finished: matches!(finished, Ok(Ok(()))),
        elapsed,
        completed: tally.count(),
        latencies: tally.take_latencies(),
        error: match finished {
            Ok(Err(e)) => Some(format!("counting unfinished tasks failed: {e:#}")),
            _ => None,
        },
    });
    match timeout(STOP_WAIT, worker.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "bench worker: shutdown failed"),
        Err(_) => tracing::warn!("bench worker: did not stop within {STOP_WAIT:?}"),
    }
}

/// The worker process (`offload bench --worker ...`): reports on stdout.
pub(super) async fn process_main(
    settings: &Settings,
    url: &str,
    mode: Mode,
    expect: u64,
) -> anyhow::Result<()> {
    tracing::debug!(mode = mode.as_str(), expect, "bench worker process");
    exit_with_driver();
    serve(settings, Source::Url(url.to_owned()), expect, |r| {
        // stdout is the link to the driver; if it is gone, so is the driver
        let _ = serde_json::to_string(&r).map(|line| output::print(&line));
    })
    .await;
    Ok(())
}

/// Exits this process as soon as stdin reaches its end or fails: the
/// driver holds the other end and is gone then. A plain thread, since a
/// blocking read cannot be cancelled and must not hold up the runtime's
/// shutdown; it dies with the process.
fn exit_with_driver() {
    let watch = std::thread::Builder::new()
        .name("bench-driver-watch".into())
        .spawn(|| {
            let mut buf = [0u8; 64];
            loop {
                match std::io::Read::read(&mut std::io::stdin(), &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            tracing::warn!("bench worker: the driver is gone (stdin closed); exiting");
            std::process::exit(i32::from(crate::failure::code::FAILED));
        });
    if let Err(e) = watch {
        tracing::warn!(error = %e, "bench worker: cannot watch for the driver's end");
    }
}

/// The driver's end of a running bench worker.
pub(super) enum WorkerLink {
    /// A separate process reporting on its stdout.
    Process {
        child: Box<Child>,
        lines: Lines<BufReader<ChildStdout>>,
        /// Held open while the worker runs; its end stops the worker.
        _stdin: ChildStdin,
    },
    /// A task in this process reporting over a channel.
    Embedded {
        reports: mpsc::UnboundedReceiver<Report>,
        task: JoinHandle<()>,
    },
}

impl WorkerLink {
    /// Starts this program again as the bench's worker process.
    pub(super) fn spawn(url: &str, mode: Mode, expect: u64) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()
            .context("cannot find this program to start the bench worker process")?;
        let mut child = Command::new(exe)
            .args(["bench", "--worker", mode.as_str(), "--expect"])
            .arg(expect.to_string())
            .arg("--database-url")
            .arg(url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the bench worker process")?;
        let stdout = child
            .stdout
            .take()
            .context("the bench worker process has no stdout")?;
        let stdin = child
            .stdin
            .take()
            .context("the bench worker process has no stdin")?;
        Ok(Self::Process {
            child: Box::new(child),
            lines: BufReader::new(stdout).lines(),
            _stdin: stdin,
        })
    }

    /// Starts the bench's worker as a task of this process, on `store`.
    pub(super) fn embedded(settings: &Settings, store: Arc<dyn Store>, expect: u64) -> Self {
        let (tx, reports) = mpsc::unbounded_channel();
        let settings = settings.clone();
        let task = tokio::spawn(async move {
            serve(&settings, Source::Open(store), expect, move |r| {
                // the driver stopped listening: nothing to tell
                let _ = tx.send(r);
            })
            .await;
        });
        Self::Embedded { reports, task }
    }

    /// The next report, waiting at most `BENCH_TIMEOUT` + 30 s.
    pub(super) async fn next(&mut self, settings: &Settings) -> anyhow::Result<Report> {
        let wait = settings.timeout + REPORT_SLACK;
        let report = match self {
            Self::Process { lines, .. } => {
                let line = timeout(wait, lines.next_line())
                    .await
                    .context("no message from the bench worker process")?
                    .context("cannot read from the bench worker process")?
                    .context("the bench worker process exited early")?;
                serde_json::from_str(&line)
                    .with_context(|| format!("unexpected line from the worker: {line:?}"))?
            }
            Self::Embedded { reports, .. } => timeout(wait, reports.recv())
                .await
                .context("no message from the bench worker")?
                .context("the bench worker stopped early")?,
        };
        match report {
            Report::Failed { error } => Err(anyhow!("worker: {error}")),
            report => Ok(report),
        }
    }

    /// Gives the worker 10 s to stop by itself, then kills it.
    pub(super) async fn stop(self) {
        match self {
            Self::Process { mut child, .. } => {
                if timeout(STOP_WAIT, child.wait()).await.is_err() {
                    let _ = child.kill().await;
                }
            }
            Self::Embedded { task, .. } => {
                let abort = task.abort_handle();
                if timeout(STOP_WAIT, task).await.is_err() {
                    abort.abort();
                }
            }
        }
    }
}
