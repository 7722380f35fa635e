//! Rows to tasks and back: the column lists every statement reads, the
//! decoding of a row into a [`Task`] or [`Attempt`], and the column arrays
//! a batch insert binds.

use std::time::Duration;

use chrono::{DateTime, Utc};
use offload_store::{StoreError, StoreResult};
use offload_types::{
    Attempt, AttemptOutcome, DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY, DEFAULT_QUEUE, LeaseToken,
    NewTask, Status, Task, TaskId,
};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use crate::error::{corrupt, map};

/// The task columns, in the order [`task`] reads them, each prefixed with
/// `alias.` when an alias is given.
pub(crate) fn task_columns(alias: &str) -> String {
    const COLUMNS: [&str; 30] = [
        "id",
        "name",
        "queue",
        "input",
        "status",
        "output",
        "error",
        "progress",
        "priority",
        "attempt",
        "max_attempts",
        "run_at",
        "timeout_ms",
        "retry",
        "tags",
        "metadata",
        "abort_requested_at",
        "worker_id",
        "lease_token",
        "lease_expires_at",
        "created_at",
        "started_at",
        "finished_at",
        "updated_at",
        "webhook",
        "depends_on",
        "after",
        "group_id",
        "unique_key",
        "fairness_key",
    ];
    COLUMNS
        .iter()
        .map(|c| {
            if alias.is_empty() {
                (*c).to_owned()
            } else {
                format!("{alias}.{c}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn get<'r, T>(row: &'r PgRow, i: usize) -> StoreResult<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(i).map_err(map)
}

fn small<T: TryFrom<i64>>(what: &str, v: i64) -> StoreResult<T> {
    T::try_from(v).map_err(|_| corrupt(format!("column {what} holds {v}, out of range")))
}

fn from_json<T: DeserializeOwned>(what: &str, v: Value) -> StoreResult<T> {
    serde_json::from_value(v).map_err(|e| corrupt(format!("column {what}: {e}")))
}

fn opt_json<T: DeserializeOwned>(what: &str, v: Option<Value>) -> StoreResult<Option<T>> {
    v.map(|v| from_json(what, v)).transpose()
}

/// A JSON array of ids (`NULL`: none), as `depends_on` and `after` hold them.
fn id_list(what: &str, v: Option<Value>) -> StoreResult<Vec<TaskId>> {
    Ok(opt_json(what, v)?.unwrap_or_default())
}

/// Ids as the JSON array `depends_on` and `after` store (`None` when empty).
pub(crate) fn id_json(ids: &[TaskId]) -> StoreResult<Option<Value>> {
    if ids.is_empty() {
        Ok(None)
    } else {
        json(&ids).map(Some)
    }
}

pub(crate) fn status(s: &str) -> StoreResult<Status> {
    s.parse()
        .map_err(|_| corrupt(format!("column status holds {s:?}")))
}

/// Reads a row selected with [`task_columns`].
pub(crate) fn task(row: &PgRow) -> StoreResult<Task> {
    let status = status(&get::<String>(row, 4)?)?;
    let worker_id: Option<String> = get(row, 17)?;
    Ok(Task {
        id: TaskId::from_bytes(*get::<Uuid>(row, 0)?.as_bytes()),
        name: get(row, 1)?,
        queue: get(row, 2)?,
        input: get(row, 3)?,
        status,
        output: get(row, 5)?,
        error: opt_json("error", get(row, 6)?)?,
        progress: opt_json("progress", get(row, 7)?)?,
        priority: get(row, 8)?,
        attempt: small("attempt", i64::from(get::<i32>(row, 9)?))?,
        max_attempts: small("max_attempts", i64::from(get::<i32>(row, 10)?))?,
        run_at: get(row, 11)?,
        timeout: get::<Option<i64>>(row, 12)?
            .map(|ms| small::<u64>("timeout_ms", ms).map(Duration::from_millis))
            .transpose()?,
        retry: opt_json("retry", get(row, 13)?)?,
        tags: from_json("tags", get(row, 14)?)?,
        metadata: get(row, 15)?,
        webhook: get(row, 24)?,
        depends_on: id_list("depends_on", get(row, 25)?)?,
        after: id_list("after", get(row, 26)?)?,
        group_id: get::<Option<Uuid>>(row, 27)?.map(TaskId),
        unique_key: get(row, 28)?,
        fairness_key: get(row, 29)?,
        abort_requested_at: get(row, 16)?,
        // The column keeps the last attempt's worker; a task shows who
        // holds its lease, so only while running.
        worker_id: worker_id.filter(|_| status == Status::Running),
        lease_token: get::<Option<Uuid>>(row, 18)?.map(LeaseToken),
        lease_expires_at: get(row, 19)?,
        created_at: get(row, 20)?,
        started_at: get(row, 21)?,
        finished_at: get(row, 22)?,
        updated_at: get(row, 23)?,
    })
}

/// Many rows.
pub(crate) fn tasks(rows: &[PgRow]) -> StoreResult<Vec<Task>> {
    rows.iter().map(task).collect()
}

/// The attempt columns, in the order [`attempt`] reads them.
pub(crate) const ATTEMPT_COLUMNS: &str =
    "attempt, worker_id, started_at, finished_at, outcome, error";

/// Reads a row selected with [`ATTEMPT_COLUMNS`] (from column `first` on).
pub(crate) fn attempt(row: &PgRow, first: usize) -> StoreResult<Attempt> {
    let outcome: String = get(row, first + 4)?;
    Ok(Attempt {
        attempt: small("attempt", i64::from(get::<i32>(row, first)?))?,
        worker_id: get(row, first + 1)?,
        started_at: get(row, first + 2)?,
        finished_at: get(row, first + 3)?,
        outcome: AttemptOutcome::parse(&outcome)
            .ok_or_else(|| corrupt(format!("column outcome holds {outcome:?}")))?,
        error: opt_json("error", get(row, first + 5)?)?,
    })
}

/// A task id as the driver binds it.
pub(crate) fn uuid(id: TaskId) -> Uuid {
    Uuid::from_bytes(*id.as_bytes())
}

/// A value as JSON, for jsonb columns.
pub(crate) fn json<T: serde::Serialize>(v: &T) -> StoreResult<Value> {
    serde_json::to_value(v).map_err(StoreError::backend)
}

/// Milliseconds of a duration, saturating.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `now + d`, saturating at the far future.
pub(crate) fn after(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Column arrays of new tasks, bound as one parameter each so one
/// statement inserts any number of rows.
#[derive(Debug, Default)]
pub(crate) struct NewRows {
    pub(crate) ids: Vec<Uuid>,
    pub(crate) names: Vec<String>,
    pub(crate) queues: Vec<String>,
    pub(crate) inputs: Vec<Value>,
    pub(crate) statuses: Vec<&'static str>,
    pub(crate) priorities: Vec<i32>,
    pub(crate) max_attempts: Vec<i32>,
    pub(crate) run_ats: Vec<DateTime<Utc>>,
    pub(crate) timeouts: Vec<Option<i64>>,
    pub(crate) retries: Vec<Option<Value>>,
    /// `None`: no tags (`[]`, filled in by the statement).
    pub(crate) tags: Vec<Option<Value>>,
    /// `None`: no metadata (`{}`, filled in by the statement).
    pub(crate) metadata: Vec<Option<Value>>,
    /// The `webhook` option (`None`: none).
    pub(crate) webhooks: Vec<Option<String>>,
    /// The `fairness_key` option (`None`: none).
    pub(crate) fairness_keys: Vec<Option<String>>,
}

/// A statement with its arguments bound so far.
pub(crate) type Bound<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

impl NewRows {
    /// Binds the twelve column arrays every insert statement starts with,
    /// as `$1` to `$12`: ids, names, queues, inputs, statuses, priorities,
    /// max_attempts, run_ats, timeouts, retries, tags, metadata.
    pub(crate) fn bind_columns<'q>(&'q self, query: Bound<'q>) -> Bound<'q> {
        query
            .bind(&self.ids)
            .bind(&self.names)
            .bind(&self.queues)
            .bind(&self.inputs)
            .bind(&self.statuses)
            .bind(&self.priorities)
            .bind(&self.max_attempts)
            .bind(&self.run_ats)
            .bind(&self.timeouts)
            .bind(&self.retries)
            .bind(&self.tags)
            .bind(&self.metadata)
    }

    /// Validates `task` and appends it with the defaults filled in: queue
    /// `default`, priority 0, `max_attempts` 3, metadata `{}`; `scheduled`
    /// when it starts after `now`, else `pending`.
    pub(crate) fn push(&mut self, task: &NewTask, now: DateTime<Utc>) -> StoreResult<()> {
        task.validate()?;
        let o = &task.options;
        let run_at = o.start_time(now);
        self.ids.push(uuid(task.id));
        self.names.push(task.name.clone());
        self.queues
            .push(o.queue.clone().unwrap_or_else(|| DEFAULT_QUEUE.to_owned()));
        self.inputs.push(task.input.clone());
        self.statuses.push(if run_at > now {
            Status::Scheduled.as_str()
        } else {
            Status::Pending.as_str()
        });
        self.priorities.push(o.priority.unwrap_or(DEFAULT_PRIORITY));
        self.max_attempts.push(
            i32::try_from(o.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS)).unwrap_or(i32::MAX),
        );
        self.run_ats.push(run_at);
        self.timeouts.push(o.timeout.map(millis));
        self.retries.push(o.retry.as_ref().map(json).transpose()?);
        self.tags
            .push((!o.tags.is_empty()).then(|| json(&o.tags)).transpose()?);
        self.metadata.push(o.metadata.clone());
        self.webhooks.push(o.webhook.clone());
        self.fairness_keys.push(o.fairness_key.clone());
        Ok(())
    }
}
