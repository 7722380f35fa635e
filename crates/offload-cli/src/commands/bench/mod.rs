//! `offload bench`: the four standard workloads of SPEC section 6
//! (`bulk_enqueue`, `drain`, `single_enqueue`, `pickup_latency`), measured
//! exactly as the peer harness in `shared/bench/peers/` measures other job
//! queues, and printed in its line format (`VERSION`, `RESULT`, `NOTE`) so
//! offload can run next to them in one `run-all`.
//!
//! Everything goes through the public library API and the real store: the
//! driver enqueues with [`offload::Client`], and the worker is an
//! [`offload::Worker`] with a no-op runner. As the peers do, the worker runs
//! in a separate process — this binary started again with hidden flags
//! (see [`worker`]) — unless `--embedded` puts it in the driver's process.
//! The workloads themselves live in [`workloads`].
//!
//! By default the bench uses a fresh file `offload-bench-sqlite/bench.db` in
//! the temp dir (`$TMPDIR`, else `/tmp`) and deletes only that folder,
//! before and after (refusing to start while another live bench run owns
//! it). `--database-url` measures another database instead,
//! which must hold no task at all: the bench never touches data it did not
//! create.
//!
//! `--backend postgres` measures the PostgreSQL store in a schema of its
//! own (default `offload_bench` in `postgres://postgres@127.0.0.1:5432/test`,
//! or `$OFFLOAD_BENCH_DATABASE_URL`, or `--database-url`; `?schema=NAME`
//! picks another schema), which it drops before each workload and at the
//! end, as the PostgreSQL peers do with theirs (see [`pg`] for what it
//! refuses to drop and how two runs on one schema are kept apart).

mod http;
mod pg;
mod worker;
mod workloads;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use offload::Status;

use crate::failure::{Failure, code};
use crate::globals::Globals;
use crate::output;

/// The queue every bench task goes to; cleaning up touches only this queue.
const QUEUE: &str = "offload_bench";
/// The name of every bench task.
const TASK_NAME: &str = "noop";
/// The folder under the temp dir that holds the default bench database.
const BENCH_DIR: &str = "offload-bench-sqlite";
/// The file in the bench folder naming the process that uses it, so two
/// runs at once do not delete each other's database.
const OWNER_FILE: &str = "owner.pid";
/// The statuses that count as "not finished yet".
const UNFINISHED: [Status; 4] = [
    Status::Scheduled,
    Status::Blocked,
    Status::Pending,
    Status::Running,
];

/// Arguments of `offload bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// The storage backend to measure.
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    backend: Backend,
    /// Run the worker inside this process instead of a separate one.
    #[arg(long, conflicts_with = "via")]
    embedded: bool,
    /// Measure through this interface: `http` runs `single_enqueue` and
    /// `pickup_latency` through `offload serve`'s API and pull protocol.
    #[arg(long, value_enum, value_name = "INTERFACE")]
    via: Option<Via>,
    /// Measure this database. SQLite: it must hold no task [default: a fresh file in
    /// $TMPDIR/offload-bench-sqlite/]. PostgreSQL: the bench uses (and drops) the schema
    /// offload_bench, or the URL's ?schema=NAME [default: $OFFLOAD_BENCH_DATABASE_URL, else
    /// postgres://postgres@127.0.0.1:5432/test]
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Internal: run as the bench's worker process (`drain` or `latency`).
    #[arg(long, hide = true, value_enum, requires = "expect")]
    worker: Option<worker::Mode>,
    /// Internal: how many tasks the worker process waits for.
    #[arg(long, hide = true)]
    expect: Option<u64>,
}

/// The interfaces `offload bench --via` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Via {
    /// `offload serve`'s HTTP API and pull protocol.
    Http,
}

/// The storage backends `offload bench` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Backend {
    /// The embedded SQLite store.
    Sqlite,
    /// The PostgreSQL store, in a schema of the bench's own.
    Postgres,
}

impl Backend {
    fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The harness's environment variables (`shared/bench/peers/README.md`).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    n: u64,
    single_n: u64,
    latency_n: u64,
    latency_rate: f64,
    concurrency: usize,
    batch: u64,
    timeout: Duration,
    workloads: Vec<String>,
    /// Tasks delayed by a day, standing in the queue during each workload.
    backlog_delayed: u64,
    /// Tasks blocked on a delayed one, standing in the queue likewise.
    backlog_blocked: u64,
}

impl Settings {
    /// How many backlog tasks stand in the queue (a blocked backlog waits
    /// on a delayed task, made if no delayed backlog was asked for).
    pub(crate) fn backlog(&self) -> u64 {
        let gate = u64::from(self.backlog_blocked > 0 && self.backlog_delayed == 0);
        self.backlog_delayed + self.backlog_blocked + gate
    }
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        fn var(name: &str, default: &str) -> String {
            std::env::var(name).unwrap_or_else(|_| default.to_owned())
        }
        fn num<T: std::str::FromStr>(name: &str, default: &str) -> anyhow::Result<T> {
            let text = var(name, default);
            text.trim()
                .parse()
                .map_err(|_| Failure::usage(format!("{name} must be a number, got {text:?}")))
        }
        let settings = Self {
            n: num("BENCH_N", "20000")?,
            single_n: num("BENCH_SINGLE_N", "2000")?,
            latency_n: num("BENCH_LATENCY_N", "1000")?,
            latency_rate: num("BENCH_LATENCY_RATE", "200")?,
            concurrency: num("BENCH_CONCURRENCY", "100")?,
            batch: num("BENCH_BATCH", "1000")?,
            timeout: Duration::try_from_secs_f64(num("BENCH_TIMEOUT", "120")?)
                .map_err(|e| Failure::usage(format!("BENCH_TIMEOUT: {e}")))?,
            workloads: var(
                "BENCH_WORKLOADS",
                "bulk_enqueue,drain,single_enqueue,pickup_latency",
            )
            .split(',')
            .map(|w| w.trim().to_owned())
            .filter(|w| !w.is_empty())
            .collect(),
            backlog_delayed: num("BENCH_BACKLOG_DELAYED", "0")?,
            backlog_blocked: num("BENCH_BACKLOG_BLOCKED", "0")?,
        };
        if settings.concurrency == 0 || settings.batch == 0 {
            return Err(Failure::usage(
                "BENCH_CONCURRENCY and BENCH_BATCH must be at least 1",
            ));
        }
        if !(settings.latency_rate > 0.0 && settings.latency_rate.is_finite()) {
            return Err(Failure::usage(format!(
                "BENCH_LATENCY_RATE must be a positive number, got {}",
                settings.latency_rate
            )));
        }
        Ok(settings)
    }
}

/// Runs `offload bench` (or, with the hidden `--worker`, its worker process).
pub(crate) async fn run(args: BenchArgs, _globals: &Globals) -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    if let Some(mode) = args.worker {
        let url = args
            .database_url
            .context("the bench worker process needs --database-url")?;
        let expect = args
            .expect
            .context("the bench worker process needs --expect")?;
        return worker::process_main(&settings, &url, mode, expect).await;
    }
    let peer = match (args.via, args.embedded) {
        (Some(Via::Http), _) => "offload-http",
        (None, true) => "offload-embedded",
        (None, false) => "offload",
    };
    let out = Out {
        peer,
        backend: args.backend.as_str(),
    };
    let target = match (args.backend, args.database_url) {
        (Backend::Postgres, url) => {
            let url = url
                .or_else(|| std::env::var(pg::URL_ENV).ok())
                .filter(|u| !u.trim().is_empty())
                .unwrap_or_else(|| pg::DEFAULT_URL.to_owned());
            Target::Postgres(pg::PgTarget::prepare(&url).await?)
        }
        (Backend::Sqlite, Some(url)) if is_postgres(&url) => {
            return Err(Failure::usage(format!(
                "{} is a PostgreSQL URL; measure it with --backend postgres",
                pg::redact(&url)
            )));
        }
        (Backend::Sqlite, Some(url)) => Target::Given(url),
        (Backend::Sqlite, None) => Target::TempDir(std::env::temp_dir().join(BENCH_DIR)),
    };
    target.prepare()?;
    let outcome = match args.via {
        Some(Via::Http) => drive_http(&out, &settings, &target).await,
        None => drive(&out, &settings, &target, args.embedded).await,
    };
    let cleaned = target.finish().await;
    outcome?;
    cleaned
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Opens the store, runs the workloads and removes the bench's tasks from a
/// database that stays. A signal ends the run early (the caller still
/// deletes the temp folder).
async fn drive(
    out: &Out,
    settings: &Settings,
    target: &Target,
    embedded: bool,
) -> anyhow::Result<()> {
    let mut bench = workloads::Bench::open(out, settings, target, embedded).await?;
    print_version(out, target, None).await;
    until_signal(out, bench.run_all()).await?;
    bench.finish().await;
    Ok(())
}

/// Runs the HTTP workloads (`--via http`); a signal ends the run early.
async fn drive_http(out: &Out, settings: &Settings, target: &Target) -> anyhow::Result<()> {
    print_version(out, target, Some("via=http")).await;
    until_signal(out, http::run_all(out, settings, target)).await
}

/// The `VERSION` line, with the server's version on PostgreSQL and `extra`.
async fn print_version(out: &Out, target: &Target, extra: Option<&str>) {
    let extra = extra.map(|e| format!(" {e}")).unwrap_or_default();
    match target {
        Target::Postgres(pg) => {
            let (durability, server) = pg.server().await;
            out.version(&durability, Some(&format!("postgresql={server}{extra}")));
        }
        _ => out.version(
            durability(&target.url()),
            Some(extra.trim()).filter(|e| !e.is_empty()),
        ),
    }
}

/// Runs `work` unless SIGINT or SIGTERM comes first (then a `NOTE` line
/// and an error).
async fn until_signal(out: &Out, work: impl Future<Output = ()>) -> anyhow::Result<()> {
    let interrupted = tokio::select! {
        () = work => None,
        signal = stop_signal() => Some(signal),
    };
    if let Some(signal) = interrupted {
        out.note(&format!("interrupted_by={signal}"));
        return Err(Failure::with_code(
            code::FAILED,
            format!("interrupted by {signal}"),
        ));
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM, with the signal's name.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// Where the bench stores its tasks.
pub(super) enum Target {
    /// A fresh database in this folder (deleted before and after).
    TempDir(PathBuf),
    /// A database the user named; must be empty.
    Given(String),
    /// A PostgreSQL schema of the bench's own (dropped before and after).
    Postgres(pg::PgTarget),
}

impl Target {
    /// Makes the temp folder empty and ours (refusing while another live
    /// bench run owns it); nothing to do for a given database.
    fn prepare(&self) -> anyhow::Result<()> {
        match self {
            Target::TempDir(dir) => {
                if let Some(pid) = running_owner(dir) {
                    return Err(Failure::with_code(
                        code::FAILED,
                        format!(
                            "another offload bench (pid {pid}) is using {}; wait for it to end \
                             or point TMPDIR at another folder",
                            dir.display()
                        ),
                    ));
                }
                remove_dir(dir)?;
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                write_owner(dir)
            }
            Target::Given(_) | Target::Postgres(_) => Ok(()),
        }
    }

    /// Replaces the temp folder's database or the bench's PostgreSQL schema
    /// with a fresh one (the store must be closed; a PostgreSQL store
    /// creates its schema again when it opens); false for a given
    /// database, which is never replaced.
    async fn fresh(&self) -> anyhow::Result<bool> {
        match self {
            Target::TempDir(dir) => {
                remove_dir(dir)?;
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                write_owner(dir)?;
                Ok(true)
            }
            Target::Given(_) => Ok(false),
            Target::Postgres(pg) => pg.drop_schema().await.map(|()| true),
        }
    }

    fn url(&self) -> String {
        match self {
            Target::TempDir(dir) => format!("sqlite://{}", dir.join("bench.db").display()),
            Target::Given(url) => url.clone(),
            Target::Postgres(pg) => pg.url().to_owned(),
        }
    }

    async fn finish(self) -> anyhow::Result<()> {
        match self {
            Target::TempDir(dir) => remove_dir(&dir),
            Target::Given(_) => Ok(()),
            Target::Postgres(pg) => pg.finish().await,
        }
    }
}

/// Marks `dir` as this process's.
fn write_owner(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::write(dir.join(OWNER_FILE), std::process::id().to_string())
        .with_context(|| format!("cannot write into {}", dir.display()))
}

/// The bench run that owns `dir`, if its process is still alive.
fn running_owner(dir: &std::path::Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(dir.join(OWNER_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
    (alive && u32::try_from(pid).ok() != Some(std::process::id())).then_some(pid)
}

fn remove_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            bail!("cannot delete the bench folder {}: {e}", dir.display())
        }
        _ => Ok(()),
    }
}

/// The harness's output lines, for one peer name.
#[derive(Debug, Clone, Copy)]
struct Out {
    peer: &'static str,
    backend: &'static str,
}

impl Out {
    fn line(text: &str) {
        // stdout is the report; a closed pipe only loses the report
        let _ = output::print(text);
    }

    fn version(&self, durability: &str, server: Option<&str>) {
        let server = server.map(|s| format!(" {s}")).unwrap_or_default();
        Self::line(&format!(
            "VERSION peer={} packages=offload-{} rustc={} durability={durability}{server}",
            self.peer,
            env!("CARGO_PKG_VERSION"),
            env!("OFFLOAD_RUSTC_VERSION"),
        ));
    }

    fn result(&self, workload: &str, value: f64, unit: &str) {
        Self::line(&format!(
            "RESULT peer={} backend={} workload={workload} value={value:.3} unit={unit}",
            self.peer, self.backend
        ));
    }

    fn note(&self, message: &str) {
        Self::line(&format!("NOTE peer={} {message}", self.peer));
    }
}

/// The durability a SQLite URL asks for (`normal` unless `durability=full`).
fn durability(url: &str) -> &'static str {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    if query
        .split('&')
        .any(|pair| pair.eq_ignore_ascii_case("durability=full"))
    {
        "full"
    } else {
        "normal"
    }
}

/// The first 200 characters of an error message, for a NOTE line.
fn short(message: &str) -> String {
    message.chars().take(200).collect()
}
