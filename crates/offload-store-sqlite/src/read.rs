//! The pool of read-only connections and the read queries (get, list,
//! count, attempts, next run time). Reads run on tokio's blocking pool in
//! parallel with the writer: WAL mode gives each a consistent snapshot of
//! the last commit.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use offload_store::{StoreError, StoreResult, TaskCount, TaskFilter};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension};
use tokio::sync::Semaphore;

use crate::codec::{
    ATTEMPT_COLUMNS, ENDED_ATTEMPT_COLUMNS, RawAttempt, RawTask, TASK_COLUMNS, micros,
};
use crate::error::map;
use crate::options::SqliteOptions;

/// Read-only connections, opened lazily up to `options.readers`.
#[derive(Debug)]
pub(crate) struct Readers {
    path: PathBuf,
    options: SqliteOptions,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl Readers {
    /// A pool for the database at `path`.
    pub(crate) fn new(path: PathBuf, options: SqliteOptions) -> Arc<Self> {
        let size = options.readers.clamp(1, 64);
        Arc::new(Self {
            path,
            options,
            idle: Mutex::new(Vec::with_capacity(size)),
            permits: Arc::new(Semaphore::new(size)),
        })
    }

    /// Runs `f` on a pooled read connection on the blocking thread pool.
    pub(crate) async fn run<T, F>(self: &Arc<Self>, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("the store is closed".to_owned()))?;
        let this = self.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            crate::conn::set_thread_busy_timeout(this.options.busy_timeout);
            let pooled = this.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let conn = match pooled {
                Some(c) => c,
                None => crate::conn::open_reader(&this.path, &this.options)?,
            };
            let result = f(&conn);
            this.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn);
            result
        })
        .await;
        joined.map_err(|e| {
            StoreError::backend(crate::error::Message(format!("a store read failed: {e}")))
        })?
    }
}

/// One task row.
pub(crate) fn get(conn: &Connection, id: [u8; 16]) -> StoreResult<Option<RawTask>> {
    let mut stmt = conn
        .prepare_cached(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"))
        .map_err(map)?;
    let mut rows = stmt.query([id]).map_err(map)?;
    match rows.next().map_err(map)? {
        Some(row) => Ok(Some(RawTask::from_row(row).map_err(map)?)),
        None => Ok(None),
    }
}

/// A `WHERE` clause and its parameters for a [`TaskFilter`].
#[derive(Debug, Default)]
pub(crate) struct Where {
    clauses: Vec<String>,
    params: Vec<Value>,
}

impl Where {
    /// The clauses of `filter`.
    pub(crate) fn filter(filter: &TaskFilter) -> Self {
        let mut w = Self::default();
        match filter.statuses.as_slice() {
            // one status is written as a literal (status names are fixed
            // identifiers), so the planner can use that status's partial
            // index (`tasks_pending`, `tasks_running`, ...) instead of
            // reading every row
            [one] => w.clauses.push(format!("status = '{}'", one.as_str())),
            many => w.any_of("status", many.iter().map(|s| s.as_str().to_owned())),
        }
        w.any_of("name", filter.names.iter().cloned());
        w.any_of("queue", filter.queues.iter().cloned());
        if let Some(tag) = &filter.tag {
            w.push(
                "EXISTS (SELECT 1 FROM json_each(tasks.tags) WHERE json_each.value = ?)",
                Value::Text(tag.clone()),
            );
        }
        if let Some(t) = filter.created_after {
            w.push("created_at >= ?", Value::Integer(micros(t)));
        }
        if let Some(t) = filter.created_before {
            w.push("created_at < ?", Value::Integer(micros(t)));
        }
        if !filter.ids.is_empty() {
            let marks = vec!["?"; filter.ids.len()].join(", ");
            w.clauses.push(format!("id IN ({marks})"));
            w.params.extend(
                filter
                    .ids
                    .iter()
                    .map(|id| Value::Blob(id.as_bytes().to_vec())),
            );
        }
        if let Some(group) = filter.group {
            w.push("group_id = ?", Value::Blob(group.as_bytes().to_vec()));
        }
        w
    }

    /// Adds `clause` with one `?` bound to `value`.
    pub(crate) fn push(&mut self, clause: &str, value: Value) {
        self.clauses.push(clause.to_owned());
        self.params.push(value);
    }

    /// Adds a clause without parameters.
    pub(crate) fn raw(&mut self, clause: &str) {
        self.clauses.push(clause.to_owned());
    }

    fn any_of(&mut self, column: &str, values: impl Iterator<Item = String>) {
        let values: Vec<String> = values.collect();
        if values.is_empty() {
            return;
        }
        let marks = vec!["?"; values.len()].join(", ");
        self.clauses.push(format!("{column} IN ({marks})"));
        self.params.extend(values.into_iter().map(Value::Text));
    }

    /// ` WHERE a AND b` (or nothing).
    pub(crate) fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }

    /// The parameters, in order, then `extra`.
    pub(crate) fn params(&self, extra: &[Value]) -> Vec<Value> {
        let mut p = self.params.clone();
        p.extend_from_slice(extra);
        p
    }
}

/// Up to `limit` tasks matching `w` with ids below `before`, newest first.
pub(crate) fn list(
    conn: &Connection,
    mut w: Where,
    before: Option<[u8; 16]>,
    limit: u32,
) -> StoreResult<Vec<RawTask>> {
    if let Some(id) = before {
        w.push("id < ?", Value::Blob(id.to_vec()));
    }
    let sql = format!(
        "SELECT {TASK_COLUMNS} FROM tasks{} ORDER BY id DESC LIMIT ? + 0",
        w.sql()
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(map)?;
    let params = w.params(&[Value::Integer(i64::from(limit))]);
    let rows = stmt
        .query_map(rusqlite::params_from_iter(params), RawTask::from_row)
        .map_err(map)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map)
}

/// Counts by name, queue and status.
pub(crate) fn count(conn: &Connection, w: &Where) -> StoreResult<Vec<TaskCount>> {
    let sql = format!(
        "SELECT name, queue, status, count(*) FROM tasks{} GROUP BY name, queue, status ORDER BY name, queue, status",
        w.sql()
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(map)?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(w.params(&[])), |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .map_err(map)?;
    let mut out = Vec::new();
    for row in rows {
        let (name, queue, status, count) = row.map_err(map)?;
        out.push(TaskCount {
            name,
            queue,
            status: status
                .parse()
                .map_err(|_| crate::error::corrupt(format!("column status holds {status:?}")))?,
            count: u64::try_from(count).unwrap_or(0),
        });
    }
    Ok(out)
}

/// Runs `f` inside one read transaction, so every statement it runs sees
/// the same snapshot; the transaction ends however `f` does (the
/// connection goes back to the pool).
fn snapshot<T>(conn: &Connection, f: impl FnOnce() -> StoreResult<T>) -> StoreResult<T> {
    conn.execute_batch("BEGIN").map_err(map)?;
    let result = f();
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = conn.execute_batch(end).map_err(map);
    let value = result?;
    ended.map(|()| value)
}

/// A task's attempts, oldest first; `None` when the task does not exist.
pub(crate) fn attempts(conn: &Connection, id: [u8; 16]) -> StoreResult<Option<Vec<RawAttempt>>> {
    snapshot(conn, || {
        let rid: Option<i64> = conn
            .prepare_cached("SELECT rid FROM tasks WHERE id = ?1")
            .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
            .map_err(map)?;
        rid.map(|rid| attempts_of(conn, rid)).transpose()
    })
}

/// The attempts of the task of row `rid`, oldest first: the written
/// history (`task_attempts`), then what the task row holds (see the
/// schema): its last ended attempt not yet written out, and its running
/// attempt.
fn attempts_of(conn: &Connection, rid: i64) -> StoreResult<Vec<RawAttempt>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {ATTEMPT_COLUMNS}, seq FROM task_attempts WHERE task = ?1 \
             UNION ALL \
             SELECT {ENDED_ATTEMPT_COLUMNS}, history FROM tasks \
             WHERE rid = ?1 AND ended_outcome IS NOT NULL \
             UNION ALL \
             SELECT attempt, worker_id, started_at, NULL, 'running', NULL, history + 1 FROM tasks \
             WHERE rid = ?1 AND status = 'running' \
             ORDER BY 7"
        ))
        .map_err(map)?;
    let rows = stmt.query_map([rid], RawAttempt::from_row).map_err(map)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map)
}

/// Up to `limit` tasks with ids above `after`, in id order, each with its
/// attempts, from one snapshot.
pub(crate) fn export(
    conn: &Connection,
    after: Option<[u8; 16]>,
    limit: u32,
) -> StoreResult<Vec<(RawTask, Vec<RawAttempt>)>> {
    snapshot(conn, || {
        // Every id is 16 bytes, so each sorts after the empty blob.
        let after: Vec<u8> = after.map(|a| a.to_vec()).unwrap_or_default();
        let tasks = {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE id > ?1 ORDER BY id LIMIT ?2 + 0"
                ))
                .map_err(map)?;
            let rows = stmt
                .query_map(
                    rusqlite::params![after, i64::from(limit)],
                    RawTask::from_row,
                )
                .map_err(map)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map)?
        };
        tasks
            .into_iter()
            .map(|task| {
                let attempts = attempts_of(conn, task.rid())?;
                Ok((task, attempts))
            })
            .collect()
    })
}

/// The earliest `run_at` of a scheduled task of `queue` (and `names`,
/// when given).
pub(crate) fn next_run_at(
    conn: &Connection,
    queue: &str,
    names: Option<&[String]>,
) -> StoreResult<Option<i64>> {
    let mut sql =
        String::from("SELECT min(run_at) FROM tasks WHERE status = 'scheduled' AND queue = ?1");
    let mut params: Vec<&dyn rusqlite::ToSql> = vec![&queue];
    if let Some(names) = names {
        let marks: Vec<String> = (0..names.len()).map(|i| format!("?{}", 2 + i)).collect();
        sql.push_str(&format!(" AND name IN ({})", marks.join(", ")));
        params.extend(names.iter().map(|n| n as &dyn rusqlite::ToSql));
    }
    conn.prepare_cached(&sql)
        .and_then(|mut s| s.query_row(params.as_slice(), |r| r.get(0)))
        .map_err(map)
}
