//! Several worker *processes* on one PostgreSQL schema: draining a large
//! backlog with no task run twice at once, leader failover after a
//! SIGKILL, and connection loss in the middle of a drain.
//!
//! Each worker is this test binary run again (`--exact child_worker
//! --ignored`) with a [`ChildSpec`] in its environment; its runner logs
//! every attempt (task, attempt, pid, start and end by the database's
//! `clock_timestamp()`) into a table of the test's schema, which the tests
//! read to check what ran where and when. Children are SIGKILLed by a drop
//! guard if a test fails, and exit by themselves when the test process
//! goes away (their stdin reaches end of file). Conditions are polled with
//! deadlines. The tests run one at a time (they share two cores with the
//! server), and each prints what it measured.

#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use offload::postgres::PgStore;
use offload::postgres::sqlx::{self, AssertSqlSafe, PgPool, Row};
use offload::{
    Client, Context, Controller, NewTask, Runner, Status, Store, Task, TaskError, TaskOptions,
    Worker, async_trait,
};
use offload_store::TaskClaimParams;
use offload_test_support::PgSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::time::Instant;

/// The environment variable that carries a child's [`ChildSpec`].
const CHILD_ENV: &str = "OFFLOAD_PG_PROCESSES_CHILD";
/// The task name every child runs.
const TASK: &str = "logged";
/// The leader name the worker's maintenance is elected under.
const LEADER: &str = "maintenance";

/// One test at a time: they share the machine's cores with the server, and
/// their timings are the point.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What a child worker process is to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChildSpec {
    url: String,
    schema: String,
    worker_id: String,
    concurrency: usize,
    lease_ms: u64,
    maintenance_ms: u64,
    leader_ttl_ms: Option<u64>,
}

// ------------------------------------------------------------------ child

/// A worker process: started by the tests below, not by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a worker process the other tests of this file start"]
async fn child_worker() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        eprintln!("child_worker runs only as a child process of this file's tests");
        return;
    };
    let spec: ChildSpec = serde_json::from_str(&spec).unwrap();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    // The parent holds our stdin open; end of file means it is gone.
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        eprintln!("child_worker: the test process is gone; exiting");
        std::process::exit(70);
    });
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    let store = offload::open(&spec.url).await.unwrap();
    let pool = pg(&store).pool().clone();
    let q = format!("\"{}\"", spec.schema);
    let pid = i32::try_from(std::process::id()).unwrap();
    let (log_tx, log_rx) = tokio::sync::mpsc::channel(4096);
    tokio::spawn(write_attempt_log(
        pool.clone(),
        q.clone(),
        pid,
        spec.worker_id.clone(),
        log_rx,
    ));
    let runner = LoggingRunner { log: log_tx };
    let mut builder = Worker::builder(store)
        .runner(TASK, runner)
        .worker_id(spec.worker_id.clone())
        .concurrency(spec.concurrency)
        .lease(Duration::from_millis(spec.lease_ms))
        .maintenance_interval(Duration::from_millis(spec.maintenance_ms))
        .poll_interval(Duration::from_millis(500))
        .shutdown_grace(Duration::from_secs(5))
        .abort_grace(Duration::from_secs(1));
    if let Some(ttl) = spec.leader_ttl_ms {
        builder = builder.leader_ttl(Duration::from_millis(ttl));
    }
    let worker = builder.build().unwrap().start();
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {q}.procs (worker_id, pid) VALUES ($1, $2)"
    )))
    .bind(&spec.worker_id)
    .bind(pid)
    .execute(&pool)
    .await
    .unwrap();
    term.recv().await;
    let stats = worker.stats();
    eprintln!("child_worker {}: SIGTERM; stats {stats:?}", spec.worker_id);
    worker.shutdown().await.unwrap();
}

/// Logs each attempt's start and end, by the database's clock, into the
/// test's `attempt_log`: it waits until its start is written before it
/// goes on, and returns only once its end is written, so the logged
/// interval holds the attempt's whole run.
struct LoggingRunner {
    log: tokio::sync::mpsc::Sender<LogEntry>,
}

/// One attempt's start or end, and who waits for it to be written.
struct LogEntry {
    end: bool,
    task: uuid::Uuid,
    attempt: i32,
    written: tokio::sync::oneshot::Sender<Result<(), String>>,
}

impl LoggingRunner {
    async fn log(&self, end: bool, task: &Task, attempt: i32) -> Result<(), TaskError> {
        let (written, wait) = tokio::sync::oneshot::channel();
        let entry = LogEntry {
            end,
            task: task.id.0,
            attempt,
            written,
        };
        let gone = || TaskError::new("the attempt log writer is gone");
        self.log.send(entry).await.map_err(|_| gone())?;
        wait.await
            .map_err(|_| gone())?
            .map_err(|e| TaskError::new(format!("could not log the attempt: {e}")))
    }
}

#[async_trait]
impl Runner for LoggingRunner {
    async fn run(&self, task: &Task, _ctx: &Context, ctl: &Controller) -> Result<Value, TaskError> {
        let attempt = i32::try_from(ctl.attempt()).unwrap_or(i32::MAX);
        self.log(false, task, attempt).await?;
        self.log(true, task, attempt).await?;
        Ok(json!({ "pid": std::process::id() }))
    }
}

/// Writes log entries in batches (one statement for the starts, one for
/// the ends of each batch; `clock_timestamp()` is read as each row is
/// written), retrying a batch after a lost connection (bounded). Ends
/// when the runner, and with it the worker, is gone.
async fn write_attempt_log(
    pool: PgPool,
    q: String,
    pid: i32,
    worker_id: String,
    mut entries: tokio::sync::mpsc::Receiver<LogEntry>,
) {
    let start_sql: Arc<str> = format!(
        "INSERT INTO {q}.attempt_log (task_id, attempt, pid, worker_id, started_at) \
         SELECT t, a, $3, $4, clock_timestamp() FROM unnest($1::uuid[], $2::int4[]) AS u(t, a) \
         ON CONFLICT (task_id, attempt, pid) DO NOTHING"
    )
    .into();
    let end_sql: Arc<str> = format!(
        "UPDATE {q}.attempt_log l SET ended_at = clock_timestamp() \
         FROM unnest($1::uuid[], $2::int4[]) AS u(t, a) \
         WHERE l.task_id = u.t AND l.attempt = u.a AND l.pid = $3 AND l.worker_id = $4"
    )
    .into();
    let worker_id: Arc<str> = worker_id.into();
    // a few batches in flight at once
    let in_flight = Arc::new(tokio::sync::Semaphore::new(3));
    while let Some(first) = entries.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < 1000 {
            match entries.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        let permit = Arc::new(permit);
        let (starts, ends): (Vec<LogEntry>, Vec<LogEntry>) =
            batch.into_iter().partition(|e| !e.end);
        for (part, sql) in [(starts, start_sql.clone()), (ends, end_sql.clone())] {
            if part.is_empty() {
                continue;
            }
            let (pool, worker_id, permit) = (pool.clone(), worker_id.clone(), permit.clone());
            tokio::spawn(async move {
                let result = write_log_batch(&pool, &sql, &part, pid, &worker_id).await;
                drop(permit);
                for e in part {
                    let _ = e.written.send(result.clone());
                }
            });
        }
    }
}

/// One batch of starts or of ends, tried again after a lost connection
/// (at most 200 times, for at most 30 s).
async fn write_log_batch(
    pool: &PgPool,
    sql: &Arc<str>,
    part: &[LogEntry],
    pid: i32,
    worker_id: &str,
) -> Result<(), String> {
    let (tasks, attempts): (Vec<uuid::Uuid>, Vec<i32>) =
        part.iter().map(|e| (e.task, e.attempt)).unzip();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut wait = Duration::from_millis(10);
    let mut result = Ok(());
    for _ in 0..200 {
        let done = sqlx::query(AssertSqlSafe(sql.clone()))
            .bind(&tasks)
            .bind(&attempts)
            .bind(pid)
            .bind(worker_id)
            .execute(pool)
            .await;
        result = done.map(|_| ()).map_err(|e| e.to_string());
        if result.is_ok() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(500));
    }
    result
}

fn pg(store: &Arc<dyn Store>) -> &PgStore {
    store.as_any().downcast_ref::<PgStore>().unwrap()
}

// ----------------------------------------------------------------- parent

/// The test's schema, its store, and the tables the children log into.
struct Db {
    schema: PgSchema,
    client: Client,
    pool: PgPool,
    q: String,
}

impl Db {
    async fn new() -> Self {
        let schema = PgSchema::new().await;
        let store = offload::open(&schema.url()).await.unwrap();
        let pool = pg(&store).pool().clone();
        let q = format!("\"{}\"", schema.name());
        for sql in [
            format!(
                "CREATE TABLE {q}.attempt_log (task_id uuid NOT NULL, attempt int NOT NULL, \
                 pid int NOT NULL, worker_id text NOT NULL, started_at timestamptz NOT NULL, \
                 ended_at timestamptz, PRIMARY KEY (task_id, attempt, pid))"
            ),
            format!(
                "CREATE TABLE {q}.procs (worker_id text PRIMARY KEY, pid int NOT NULL, \
                 ready_at timestamptz NOT NULL DEFAULT clock_timestamp())"
            ),
        ] {
            sqlx::raw_sql(AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .unwrap();
        }
        Self {
            schema,
            client: Client::new(store),
            pool,
            q,
        }
    }

    fn store(&self) -> &Arc<dyn Store> {
        self.client.store()
    }

    fn spec(&self, url: &str, worker_id: &str) -> ChildSpec {
        ChildSpec {
            url: url.to_owned(),
            schema: self.schema.name().to_owned(),
            worker_id: worker_id.to_owned(),
            concurrency: 16,
            lease_ms: 5_000,
            maintenance_ms: 200,
            leader_ttl_ms: None,
        }
    }

    async fn scalar_i64(&self, sql: String) -> i64 {
        sqlx::query(AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await
            .unwrap()
            .try_get::<i64, _>(0)
            .unwrap()
    }

    async fn count_status(&self, status: &str) -> i64 {
        self.scalar_i64(format!(
            "SELECT count(*) FROM {}.tasks WHERE status = '{status}'",
            self.q
        ))
        .await
    }

    /// Enqueues `n` tasks in batches of 1000.
    async fn enqueue(&self, n: usize) {
        let mut left = n;
        while left > 0 {
            let batch = left.min(1000);
            let tasks = (0..batch)
                .map(|i| NewTask::new(TASK, json!({ "i": i })).options(TaskOptions::new()))
                .collect();
            self.client.trigger_many(tasks).await.unwrap();
            left -= batch;
        }
    }

    async fn leader(&self) -> Option<String> {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT holder FROM {}.leaders WHERE name = $1",
            self.q
        )))
        .bind(LEADER)
        .fetch_optional(&self.pool)
        .await
        .unwrap()
        .map(|r| r.try_get::<String, _>(0).unwrap())
    }

    /// The checks every drain ends with: `n` tasks, all `success`, each
    /// with exactly one successful attempt in its history and a log entry
    /// of that attempt.
    async fn assert_all_succeeded_once(&self, n: i64) {
        let q = &self.q;
        assert_eq!(
            self.scalar_i64(format!("SELECT count(*) FROM {q}.tasks"))
                .await,
            n
        );
        assert_eq!(
            self.count_status("success").await,
            n,
            "every task ends success"
        );
        let not_once = self
            .scalar_i64(format!(
                "SELECT count(*) FROM {q}.tasks t WHERE (SELECT count(*) FROM {q}.task_attempts a \
                 WHERE a.task_id = t.id AND a.outcome = 'success') <> 1"
            ))
            .await;
        assert_eq!(not_once, 0, "tasks without exactly one successful attempt");
        let unlogged = self
            .scalar_i64(format!(
                "SELECT count(*) FROM {q}.task_attempts a WHERE a.outcome = 'success' AND NOT EXISTS \
                 (SELECT 1 FROM {q}.attempt_log l WHERE l.task_id = a.task_id \
                 AND l.attempt = a.attempt AND l.ended_at IS NOT NULL)"
            ))
            .await;
        assert_eq!(
            unlogged, 0,
            "successful attempts that the runner did not log"
        );
    }

    /// Pairs of logged attempts of one task whose [start, end] overlap (an
    /// attempt with no end runs on for ever).
    async fn overlapping_attempts(&self) -> i64 {
        self.scalar_i64(format!(
            "SELECT count(*) FROM {q}.attempt_log a JOIN {q}.attempt_log b \
             ON a.task_id = b.task_id AND (a.attempt, a.pid) < (b.attempt, b.pid) \
             WHERE a.started_at < coalesce(b.ended_at, 'infinity') \
             AND b.started_at < coalesce(a.ended_at, 'infinity')",
            q = self.q
        ))
        .await
    }
}

/// Polls `cond` every 10 ms until it holds; fails after `limit`.
async fn wait_for(what: &str, limit: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The child worker processes of one test. Dropping it SIGKILLs those
/// still running (and, when the test failed, prints the end of each log).
struct Procs {
    dir: tempfile::TempDir,
    children: Vec<Proc>,
}

struct Proc {
    worker_id: String,
    child: Child,
    log: PathBuf,
}

impl Procs {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            children: Vec::new(),
        }
    }

    /// Starts a worker process; returns its index.
    fn spawn(&mut self, spec: &ChildSpec) -> usize {
        let log = self.dir.path().join(format!("{}.log", spec.worker_id));
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_worker",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, serde_json::to_string(spec).unwrap())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        self.children.push(Proc {
            worker_id: spec.worker_id.clone(),
            child,
            log,
        });
        self.children.len() - 1
    }

    fn index_of(&self, worker_id: &str) -> Option<usize> {
        self.children.iter().position(|p| p.worker_id == worker_id)
    }

    fn alive(&mut self, i: usize) -> bool {
        self.children[i].child.try_wait().unwrap().is_none()
    }

    /// Fails the test if a child has exited.
    fn assert_all_alive(&mut self) {
        for i in 0..self.children.len() {
            if let Some(status) = self.children[i].child.try_wait().unwrap() {
                panic!(
                    "worker {} exited early: {status:?}\n{}",
                    self.children[i].worker_id,
                    self.log_tail(i)
                );
            }
        }
    }

    /// Waits until every child has registered in `procs`.
    async fn wait_ready(&mut self, db: &Db) {
        let n = i64::try_from(self.children.len()).unwrap();
        let sql = format!("SELECT count(*) FROM {}.procs", db.q);
        wait_for(
            "the workers to start",
            Duration::from_secs(60),
            async || {
                self.assert_all_alive();
                db.scalar_i64(sql.clone()).await == n
            },
        )
        .await;
    }

    fn sigkill(&mut self, i: usize) -> ExitStatus {
        let p = &mut self.children[i];
        p.child.kill().unwrap();
        p.child.wait().unwrap()
    }

    /// SIGTERM, then waits (bounded) for the process to exit.
    async fn sigterm(&mut self, i: usize) -> ExitStatus {
        let pid = i32::try_from(self.children[i].child.id()).unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.children[i].child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "worker {} did not exit within 30 s of SIGTERM\n{}",
                self.children[i].worker_id,
                self.log_tail(i)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(&self.children[i].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(40);
        format!(
            "--- last lines of {} ---\n{}",
            self.children[i].worker_id,
            lines[from..].join("\n")
        )
    }

    /// Lines of a child's log that contain `needle`.
    fn log_lines_with(&self, i: usize, needle: &str) -> usize {
        std::fs::read_to_string(&self.children[i].log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for p in &mut self.children {
            if let Ok(None) = p.child.try_wait() {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
        if std::thread::panicking() {
            for i in 0..self.children.len() {
                eprintln!("{}", self.log_tail(i));
            }
        }
    }
}

// ------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_drain_20k_tasks_each_exactly_once() {
    const N: usize = 20_000;
    let _serial = SERIAL.lock().await;
    let db = Db::new().await;
    let mut procs = Procs::new();
    let url = db.schema.url_with("pool_size=8");
    for w in ["drain-a", "drain-b", "drain-c"] {
        procs.spawn(&ChildSpec {
            concurrency: 32,
            ..db.spec(&url, w)
        });
    }
    procs.wait_ready(&db).await;

    let began = Instant::now();
    db.enqueue(N).await;
    let enqueued = began.elapsed();
    wait_for(
        "20,000 tasks to succeed",
        Duration::from_secs(90),
        async || {
            procs.assert_all_alive();
            db.count_status("success").await == i64::try_from(N).unwrap()
        },
    )
    .await;
    let drained = began.elapsed();

    db.assert_all_succeeded_once(i64::try_from(N).unwrap())
        .await;
    assert_eq!(
        db.overlapping_attempts().await,
        0,
        "a task ran on two workers at once"
    );
    let per_worker: Vec<(String, i64)> = sqlx::query(AssertSqlSafe(format!(
        "SELECT worker_id, count(*) FROM {}.attempt_log GROUP BY worker_id ORDER BY worker_id",
        db.q
    )))
    .fetch_all(&db.pool)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    assert_eq!(
        per_worker.len(),
        3,
        "every process took part: {per_worker:?}"
    );
    println!(
        "drained {N} tasks with 3 worker processes in {drained:.2?} \
         ({:.0} tasks/s; enqueue took {enqueued:.2?}); attempts per worker: {per_worker:?}",
        N as f64 / drained.as_secs_f64()
    );
    for i in 0..3 {
        let status = procs.sigterm(i).await;
        assert!(
            status.success(),
            "exit status {status:?}\n{}",
            procs.log_tail(i)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failover_after_sigkill_rescues_an_expired_lease() {
    let _serial = SERIAL.lock().await;
    let db = Db::new().await;
    let mut procs = Procs::new();
    let url = db.schema.url_with("pool_size=4");
    for w in ["failover-a", "failover-b"] {
        procs.spawn(&ChildSpec {
            concurrency: 4,
            lease_ms: 1_000,
            maintenance_ms: 100,
            leader_ttl_ms: Some(1_000),
            ..db.spec(&url, w)
        });
    }
    procs.wait_ready(&db).await;
    let mut leader = None;
    wait_for("a leader", Duration::from_secs(10), async || {
        leader = db.leader().await;
        leader.is_some()
    })
    .await;
    let leader_id = leader.unwrap();
    let leader_ix = procs
        .index_of(&leader_id)
        .unwrap_or_else(|| panic!("unknown leader {leader_id}"));
    let survivor_ix = 1 - leader_ix;
    let survivor_id = procs.children[survivor_ix].worker_id.clone();

    // A task claimed by a worker that never heartbeats: the test itself,
    // with a 1 s lease. The workers must not get it first, so it is
    // scheduled a second ahead (room for a loaded machine) and claimed at
    // once with `now` = its run_at (the store takes the time from its
    // caller); its lease therefore runs out 2 s from now, and only a
    // leader's rescue brings it back.
    let ahead = Duration::from_secs(1);
    let run_at = chrono::Utc::now() + chrono::Duration::from_std(ahead).unwrap();
    let handle = db
        .client
        .trigger(TASK, json!({}), TaskOptions::new().run_at(run_at))
        .await
        .unwrap();
    let claimed = db
        .store()
        .task_claim(&TaskClaimParams {
            queue: "default".into(),
            names: None,
            limit: 1,
            worker_id: "ghost".into(),
            lease: Duration::from_secs(1),
            now: run_at,
        })
        .await
        .unwrap();
    assert_eq!(
        claimed.len(),
        1,
        "the test claims the task before any worker"
    );
    assert_eq!(claimed[0].id, handle.id());
    let lease_ends = Instant::now() + ahead + Duration::from_secs(1);

    let killed_at = Instant::now();
    let status = procs.sigkill(leader_ix);
    assert!(!status.success(), "{status:?}");

    let mut now_leader = None;
    wait_for("the survivor to lead", Duration::from_secs(5), async || {
        now_leader = db.leader().await;
        now_leader.as_deref() == Some(survivor_id.as_str())
    })
    .await;
    let takeover = killed_at.elapsed();

    let mut task = None;
    wait_for(
        "the rescued task to succeed",
        Duration::from_secs(10),
        async || {
            let t = db.client.get(handle.id()).await.unwrap();
            let done = t.status == Status::Success;
            task = Some(t);
            done
        },
    )
    .await;
    let done_at = Instant::now();
    let rescued_in = done_at.duration_since(killed_at);
    let after_lease = done_at.saturating_duration_since(lease_ends);
    let task = task.unwrap();
    assert_eq!(task.attempt, 2, "{task:?}");
    let logged: Vec<String> = sqlx::query(AssertSqlSafe(format!(
        "SELECT worker_id FROM {}.attempt_log WHERE task_id = $1",
        db.q
    )))
    .bind(handle.id().0)
    .fetch_all(&db.pool)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert_eq!(logged, [survivor_id.as_str()], "only the survivor ran it");
    let history = db.client.attempts(handle.id()).await.unwrap();
    let seen: Vec<(String, String)> = history
        .iter()
        .map(|a| (a.worker_id.clone(), a.outcome.as_str().to_owned()))
        .collect();
    assert_eq!(
        seen,
        [
            ("ghost".to_owned(), "lease_expired".to_owned()),
            (survivor_id.clone(), "success".to_owned())
        ]
    );
    assert!(
        takeover < Duration::from_secs(3),
        "takeover took {takeover:?}"
    );
    assert!(
        rescued_in < ahead + Duration::from_millis(4_700),
        "rescue and run took {rescued_in:?}"
    );
    println!(
        "leader {leader_id} SIGKILLed; {survivor_id} led {takeover:.2?} later; the expired \
         task succeeded {rescued_in:.2?} after the kill ({after_lease:.2?} after its lease ran out)"
    );
    assert!(procs.alive(survivor_ix));
    let status = procs.sigterm(survivor_ix).await;
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        procs.log_tail(survivor_ix)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_loss_during_a_drain_loses_nothing() {
    const N: usize = 5_000;
    let _serial = SERIAL.lock().await;
    let db = Db::new().await;
    let mut procs = Procs::new();
    // A name of this test's own, so terminating its workers' sessions
    // leaves every other test's alone.
    let app = format!("offload_{}", db.schema.name());
    let url = db
        .schema
        .url_with(&format!("pool_size=8&application_name={app}"));
    for w in ["cut-a", "cut-b"] {
        procs.spawn(&ChildSpec {
            lease_ms: 2_000,
            ..db.spec(&url, w)
        });
    }
    procs.wait_ready(&db).await;
    let sessions = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}' \
         AND datname = current_database()"
    );
    let open = db.scalar_i64(sessions.clone()).await;
    assert!(
        open >= 2,
        "the workers' sessions carry the URL's application_name ({open} found)"
    );

    let began = Instant::now();
    db.enqueue(N).await;
    let mut cuts = Vec::new();
    for round in 1..=3_i64 {
        // cut when the drain is a fifth, two fifths, three fifths done
        let target = round * i64::try_from(N).unwrap() / 5;
        wait_for(
            "the drain to progress",
            Duration::from_secs(60),
            async || db.count_status("success").await >= target,
        )
        .await;
        let terminated = db
            .scalar_i64(format!(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = '{app}' AND pid <> pg_backend_pid() \
                 AND datname = current_database()) t"
            ))
            .await;
        let done = db.count_status("success").await;
        cuts.push((terminated, done));
    }
    assert!(
        cuts.iter().all(|(t, _)| *t > 0),
        "every cut terminated sessions: {cuts:?}"
    );
    assert!(
        cuts.iter()
            .any(|(_, done)| *done < i64::try_from(N).unwrap()),
        "the cuts came during the drain: {cuts:?}"
    );
    wait_for(
        "5,000 tasks to succeed",
        Duration::from_secs(60),
        async || {
            procs.assert_all_alive();
            db.count_status("success").await == i64::try_from(N).unwrap()
        },
    )
    .await;
    let drained = began.elapsed();
    db.assert_all_succeeded_once(i64::try_from(N).unwrap())
        .await;
    let rerun = db
        .scalar_i64(format!(
            "SELECT count(*) FROM {}.tasks WHERE attempt > 1",
            db.q
        ))
        .await;
    let reconnects: usize = (0..2)
        .map(|i| procs.log_lines_with(i, "retrying") + procs.log_lines_with(i, "reconnecting"))
        .sum();
    println!(
        "drained {N} tasks with 2 worker processes in {drained:.2?} through 3 cuts \
         (sessions terminated, tasks done at the time: {cuts:?}); {rerun} tasks ran more than \
         once (claims lost with a connection, rescued); {reconnects} retry/reconnect log lines"
    );
    for i in 0..2 {
        assert!(procs.alive(i), "{}", procs.log_tail(i));
    }
    for i in 0..2 {
        let status = procs.sigterm(i).await;
        assert!(
            status.success(),
            "exit status {status:?}\n{}",
            procs.log_tail(i)
        );
    }
}
