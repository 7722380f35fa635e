//! What both drivers share: the schema, the statements, the data and the
//! untimed setup (done with rusqlite for both, so every measurement starts
//! from an identical file).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Rows of workload a (bulk insert) and tasks of workload c (claim/finish).
pub const BULK_ROWS: usize = 20_000;
/// Rows per transaction in workload a.
pub const BULK_TX_ROWS: usize = 1_000;
/// Single inserts of workload b, issued by [`SINGLE_TASKS`] tokio tasks.
pub const SINGLE_ROWS: usize = 2_000;
/// Concurrent tokio tasks of workload b.
pub const SINGLE_TASKS: usize = 100;
/// Tasks per claim (and per finish) in workload c.
pub const CLAIM_BATCH: usize = 100;
/// Upper bound of commands one group commit takes (the store uses 512).
pub const MAX_GROUP: usize = 512;

pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
pub const QUEUE: &str = "default";

/// The `tasks` table and its partial indexes, as in
/// crates/offload-store-sqlite/migrations/0001_init.sql (the attempt
/// history and leader tables are left out).
pub const SCHEMA: &str = "
CREATE TABLE tasks (
    id                 BLOB    NOT NULL PRIMARY KEY,
    name               TEXT    NOT NULL,
    queue              TEXT    NOT NULL,
    input              TEXT    NOT NULL,
    status             TEXT    NOT NULL,
    output             TEXT,
    error              TEXT,
    progress           TEXT,
    priority           INTEGER NOT NULL DEFAULT 0,
    attempt            INTEGER NOT NULL DEFAULT 0,
    max_attempts       INTEGER NOT NULL,
    run_at             INTEGER NOT NULL,
    timeout_ms         INTEGER,
    retry              TEXT,
    tags               TEXT    NOT NULL DEFAULT '[]',
    metadata           TEXT    NOT NULL DEFAULT '{}',
    abort_requested_at INTEGER,
    worker_id          TEXT,
    lease_token        BLOB,
    lease_expires_at   INTEGER,
    created_at         INTEGER NOT NULL,
    started_at         INTEGER,
    finished_at        INTEGER,
    updated_at         INTEGER NOT NULL
);
CREATE INDEX tasks_pending ON tasks (queue, priority DESC, run_at, id)
    WHERE status = 'pending';
CREATE INDEX tasks_scheduled ON tasks (queue, run_at)
    WHERE status = 'scheduled';
CREATE INDEX tasks_running ON tasks (lease_expires_at)
    WHERE status = 'running';
CREATE INDEX tasks_finished ON tasks (finished_at)
    WHERE finished_at IS NOT NULL;
";

/// ?1 id, ?2 name, ?3 queue, ?4 input, ?5 priority, ?6 run_at, ?7 now.
pub const INSERT_SQL: &str = "INSERT INTO tasks \
     (id, name, queue, input, status, priority, attempt, max_attempts, run_at, created_at, updated_at) \
     VALUES (?1, ?2, ?3, ?4, 'pending', ?5, 0, 3, ?6, ?7, ?7)";

/// ?1 queue, ?2 limit, ?3 worker id, ?4 lease token, ?5 lease expiry, ?6 now.
/// `LIMIT ?2 + 0` as in the store: a plain `LIMIT ?` makes SQLite
/// re-prepare the statement on every run.
pub const CLAIM_SQL: &str = "UPDATE tasks SET status = 'running', attempt = attempt + 1, \
     worker_id = ?3, lease_token = ?4, lease_expires_at = ?5, started_at = ?6, updated_at = ?6 \
     WHERE id IN (SELECT id FROM tasks WHERE status = 'pending' AND queue = ?1 AND run_at <= ?6 \
                  ORDER BY priority DESC, run_at, id LIMIT ?2 + 0) \
     RETURNING id, name, input, attempt";

/// ?1 id, ?2 output, ?3 now.
pub const FINISH_SQL: &str = "UPDATE tasks SET status = 'completed', output = ?2, \
     finished_at = ?3, updated_at = ?3, lease_token = NULL, lease_expires_at = NULL \
     WHERE id = ?1 AND status = 'running'";

pub const WORKER_ID: &str = "bench-worker-1";
pub const LEASE_TOKEN: [u8; 16] = [7; 16];
pub const OUTPUT: &str = "{\"ok\":true}";

/// One task to insert. Generated before timing starts, identical for both
/// drivers.
#[derive(Clone, Debug)]
pub struct NewTask {
    pub id: [u8; 16],
    pub name: &'static str,
    pub input: String,
    pub priority: i64,
    pub run_at: i64,
}

/// What a claim reads back per task.
#[derive(Debug)]
pub struct Claimed {
    pub id: Vec<u8>,
    pub name: String,
    pub input: String,
    pub attempt: i64,
}

/// Microseconds since the epoch of the (fixed) bench clock: all rows are due.
pub const T0: i64 = 1_800_000_000_000_000;
pub const NOW: i64 = T0 + 86_400_000_000;

/// `n` tasks as a queue sees them: time-ordered 16-byte ids (as UUIDv7),
/// run_at in enqueue order (10 µs apart), priority 1 for one task in ten
/// (else 0), and a small JSON input; pseudo-random parts from a fixed LCG.
pub fn tasks(tag: u64, n: usize) -> Vec<NewTask> {
    const NAMES: [&str; 3] = ["email.send", "report.build", "thumbnail"];
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64 ^ tag;
    (0..n)
        .map(|i| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let r = seed >> 33;
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&tag.to_be_bytes());
            id[8..].copy_from_slice(&(i as u64).to_be_bytes());
            NewTask {
                id,
                name: NAMES[i % NAMES.len()],
                input: format!("{{\"user\":{r},\"template\":\"welcome\",\"n\":{i}}}"),
                priority: i64::from(r.is_multiple_of(10)),
                run_at: T0 + 10 * i as i64,
            }
        })
        .collect()
}

/// Opens a rusqlite connection with the bench's pragmas (the sqlx side sets
/// the same ones through `SqliteConnectOptions`).
pub fn open_rusqlite(path: &Path) -> Result<rusqlite::Connection> {
    let conn =
        rusqlite::Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        bail!("journal_mode is {mode}, not wal");
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// Creates a fresh database at `path` with the schema and, if `preload` is
/// not empty, those tasks as pending rows. Untimed. Closing the connection
/// checkpoints and removes the WAL, so every run starts from the same state.
pub fn create_db(path: &Path, preload: &[NewTask]) -> Result<()> {
    let mut conn = open_rusqlite(path)?;
    conn.execute_batch(SCHEMA).context("creating the schema")?;
    for chunk in preload.chunks(BULK_TX_ROWS) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare_cached(INSERT_SQL)?;
            for t in chunk {
                stmt.execute(rusqlite::params![
                    &t.id[..],
                    t.name,
                    QUEUE,
                    t.input,
                    t.priority,
                    t.run_at,
                    T0
                ])?;
            }
        }
        tx.commit()?;
    }
    conn.close()
        .map_err(|(_, e)| e)
        .context("closing the setup connection")?;
    Ok(())
}

/// Untimed check after a workload: `SELECT count(*) FROM tasks WHERE <cond>`.
pub fn count(path: &Path, cond: &str) -> Result<i64> {
    let conn = open_rusqlite(path)?;
    let n = conn.query_row(
        &format!("SELECT count(*) FROM tasks WHERE {cond}"),
        [],
        |r| r.get(0),
    )?;
    Ok(n)
}

pub fn expect_count(path: &Path, cond: &str, want: usize) -> Result<()> {
    let got = count(path, cond)?;
    if usize::try_from(got).ok() != Some(want) {
        bail!("expected {want} rows with {cond}, found {got}");
    }
    Ok(())
}
