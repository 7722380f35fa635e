//! How task fields are stored and read back: timestamps as UTC
//! microseconds, ids as 16-byte blobs, JSON as text, lease tokens as the
//! row's `rid` and a random 64-bit `lease_token` ([`Lease`]).
//! [`RawTask`] is a row as SQLite returns it; turning it into a [`Task`]
//! (JSON parsing) happens on the caller's thread, not the writer's, so the
//! single writer thread spends its time in SQLite only.

use std::time::Duration;

use chrono::{DateTime, Utc};
use offload_store::{StoreError, TaskRecord};
use offload_types::{
    Attempt, AttemptOutcome, DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY, DEFAULT_QUEUE, LeaseToken,
    NewTask, Status, Task, TaskId, TaskOptions, UniquePolicy, ValidationError,
};
use rusqlite::Row;
use uuid::Uuid;

use crate::error::corrupt;

/// The `tasks` columns every query that returns whole tasks selects, in
/// the order [`RawTask::from_row`] reads them.
pub(crate) const TASK_COLUMNS: &str = "id, name, queue, input, status, output, error, progress, \
     priority, attempt, max_attempts, run_at, timeout_ms, retry, tags, metadata, \
     abort_requested_at, worker_id, lease_token, lease_expires_at, created_at, started_at, \
     finished_at, updated_at, rid, webhook, unique_key, depends_on, \"after\", group_id, \
     fairness_key";

/// What a claim reads of each task it takes, in the order
/// [`RawClaimed::from_row`] reads them: what the row holds that the claim
/// does not set itself, as it will be once leased (the next attempt; the
/// lease token, drawn afterwards, is a placeholder).
pub(crate) const CLAIM_COLUMNS: &str = "rid, 0, id, name, input, output, error, priority, \
     attempt + 1, max_attempts, run_at, timeout_ms, retry, tags, metadata, abort_requested_at, \
     created_at, webhook, unique_key, depends_on, \"after\", group_id, fairness_key";

/// A lease as the store keeps it: the public [`LeaseToken`] is the task
/// row's `rid` (8 bytes, big-endian) followed by the attempt's random
/// `lease_token` (8 bytes). The `rid` half lets heartbeats and finishes
/// go straight to the row; the fencing check compares the row's id and
/// token, so a token that does not belong to the task matches nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lease {
    pub(crate) id: [u8; 16],
    pub(crate) rid: i64,
    pub(crate) token: i64,
}

impl Lease {
    /// The stored halves of a lease token.
    pub(crate) fn new(id: TaskId, token: LeaseToken) -> Self {
        let (rid, token) = token.0.as_u64_pair();
        Self {
            id: *id.as_bytes(),
            rid: rid.cast_signed(),
            token: token.cast_signed(),
        }
    }
}

/// The public lease token of a row's `rid` and `lease_token`.
pub(crate) fn lease_token(rid: i64, token: i64) -> LeaseToken {
    LeaseToken(Uuid::from_u64_pair(
        rid.cast_unsigned(),
        token.cast_unsigned(),
    ))
}

/// A time as stored: microseconds since the Unix epoch, UTC.
pub(crate) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// A stored time read back.
pub(crate) fn time(us: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| corrupt(format!("timestamp {us} out of range")))
}

fn opt_time(us: Option<i64>) -> Result<Option<DateTime<Utc>>, StoreError> {
    us.map(time).transpose()
}

/// A duration in microseconds, saturating at `i64::MAX`.
pub(crate) fn span_micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// `now + d` in stored form, saturating.
pub(crate) fn after(now: DateTime<Utc>, d: Duration) -> i64 {
    micros(now).saturating_add(span_micros(d))
}

/// JSON text of a serializable value.
pub(crate) fn json<T: serde::Serialize + ?Sized>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(StoreError::backend)
}

fn parse_json<T: serde::de::DeserializeOwned>(column: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(format!("column {column} holds bad JSON: {e}")))
}

fn opt_json<T: serde::de::DeserializeOwned>(
    column: &str,
    text: Option<&str>,
) -> Result<Option<T>, StoreError> {
    text.map(|t| parse_json(column, t)).transpose()
}

fn small<T: TryFrom<i64>>(column: &str, v: i64) -> Result<T, StoreError> {
    T::try_from(v).map_err(|_| corrupt(format!("column {column} holds {v}, out of range")))
}

fn status(s: &str) -> Result<Status, StoreError> {
    s.parse()
        .map_err(|_| corrupt(format!("column status holds {s:?}")))
}

/// A `tasks` row as SQLite returns it, before any JSON is parsed.
#[derive(Debug, Clone)]
pub(crate) struct RawTask {
    id: [u8; 16],
    name: String,
    queue: String,
    input: String,
    status: String,
    output: Option<String>,
    error: Option<String>,
    progress: Option<String>,
    priority: i64,
    attempt: i64,
    max_attempts: i64,
    run_at: i64,
    timeout_ms: Option<i64>,
    retry: Option<String>,
    tags: String,
    metadata: String,
    abort_requested_at: Option<i64>,
    worker_id: Option<String>,
    lease_token: Option<i64>,
    lease_expires_at: Option<i64>,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    updated_at: i64,
    rid: i64,
    webhook: Option<String>,
    flow: RawFlow,
}

/// The dependency, group, unique-key and fairness-key columns of a row,
/// as stored (NULL for most tasks).
#[derive(Debug, Clone, Default)]
pub(crate) struct RawFlow {
    unique_key: Option<String>,
    depends_on: Option<String>,
    after: Option<String>,
    group_id: Option<[u8; 16]>,
    fairness_key: Option<String>,
}

impl RawFlow {
    /// Reads the five columns from `first` on (`unique_key, depends_on,
    /// "after", group_id, fairness_key`).
    fn from_row(row: &Row<'_>, first: usize) -> rusqlite::Result<Self> {
        Ok(Self {
            unique_key: row.get(first)?,
            depends_on: row.get(first + 1)?,
            after: row.get(first + 2)?,
            group_id: row.get(first + 3)?,
            fairness_key: row.get(first + 4)?,
        })
    }

    /// Fills the task's fields.
    fn apply(self, task: &mut Task) -> Result<(), StoreError> {
        task.unique_key = self.unique_key;
        task.depends_on = opt_json("depends_on", self.depends_on.as_deref())?.unwrap_or_default();
        task.after = opt_json("after", self.after.as_deref())?.unwrap_or_default();
        task.group_id = self.group_id.map(TaskId::from_bytes);
        task.fairness_key = self.fairness_key;
        Ok(())
    }
}

/// A list of ids as stored: a JSON array of id strings, `None` when empty.
pub(crate) fn id_list(ids: &[TaskId]) -> Result<Option<String>, StoreError> {
    if ids.is_empty() {
        Ok(None)
    } else {
        json(ids).map(Some)
    }
}

impl RawTask {
    /// Reads a row selected with [`TASK_COLUMNS`].
    pub(crate) fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            name: row.get(1)?,
            queue: row.get(2)?,
            input: row.get(3)?,
            status: row.get(4)?,
            output: row.get(5)?,
            error: row.get(6)?,
            progress: row.get(7)?,
            priority: row.get(8)?,
            attempt: row.get(9)?,
            max_attempts: row.get(10)?,
            run_at: row.get(11)?,
            timeout_ms: row.get(12)?,
            retry: row.get(13)?,
            tags: row.get(14)?,
            metadata: row.get(15)?,
            abort_requested_at: row.get(16)?,
            worker_id: row.get(17)?,
            lease_token: row.get(18)?,
            lease_expires_at: row.get(19)?,
            created_at: row.get(20)?,
            started_at: row.get(21)?,
            finished_at: row.get(22)?,
            updated_at: row.get(23)?,
            rid: row.get(24)?,
            webhook: row.get(25)?,
            flow: RawFlow::from_row(row, 26)?,
        })
    }

    /// The task's id.
    pub(crate) fn id(&self) -> TaskId {
        TaskId::from_bytes(self.id)
    }

    /// The task's row.
    pub(crate) fn rid(&self) -> i64 {
        self.rid
    }

    /// Parses the row into a [`Task`].
    pub(crate) fn into_task(self) -> Result<Task, StoreError> {
        let status = status(&self.status)?;
        // The column keeps the last attempt's worker; the task shows who
        // holds the lease, so only while running.
        let worker_id = self.worker_id.filter(|_| status == Status::Running);
        let mut task = Task {
            id: TaskId::from_bytes(self.id),
            name: self.name,
            queue: self.queue,
            input: parse_json("input", &self.input)?,
            status,
            output: opt_json("output", self.output.as_deref())?,
            error: opt_json("error", self.error.as_deref())?,
            progress: opt_json("progress", self.progress.as_deref())?,
            priority: small("priority", self.priority)?,
            attempt: small("attempt", self.attempt)?,
            max_attempts: small("max_attempts", self.max_attempts)?,
            run_at: time(self.run_at)?,
            timeout: self
                .timeout_ms
                .map(|ms| small::<u64>("timeout_ms", ms).map(Duration::from_millis))
                .transpose()?,
            retry: opt_json("retry", self.retry.as_deref())?,
            tags: parse_json("tags", &self.tags)?,
            metadata: parse_json("metadata", &self.metadata)?,
            webhook: self.webhook,
            depends_on: Vec::new(),
            after: Vec::new(),
            group_id: None,
            unique_key: None,
            fairness_key: None,
            abort_requested_at: opt_time(self.abort_requested_at)?,
            worker_id,
            lease_token: self.lease_token.map(|t| lease_token(self.rid, t)),
            lease_expires_at: opt_time(self.lease_expires_at)?,
            created_at: time(self.created_at)?,
            started_at: opt_time(self.started_at)?,
            finished_at: opt_time(self.finished_at)?,
            updated_at: time(self.updated_at)?,
        };
        self.flow.apply(&mut task)?;
        Ok(task)
    }
}

/// Parses many rows.
pub(crate) fn into_tasks(raw: Vec<RawTask>) -> Result<Vec<Task>, StoreError> {
    raw.into_iter().map(RawTask::into_task).collect()
}

/// A claimed task's row as the claim reads it ([`CLAIM_COLUMNS`]): only
/// what the claim did not set itself. The rest (status, queue, worker,
/// lease expiry, start) is the claim's own arguments, filled in by
/// [`RawClaimed::into_task`] on the caller's thread.
#[derive(Debug, Clone)]
pub(crate) struct RawClaimed {
    rid: i64,
    lease_token: i64,
    id: [u8; 16],
    name: String,
    input: String,
    output: Option<String>,
    error: Option<String>,
    priority: i64,
    attempt: i64,
    max_attempts: i64,
    run_at: i64,
    timeout_ms: Option<i64>,
    retry: Option<String>,
    /// `None`: the default, `[]`.
    tags: Option<String>,
    /// `None`: the default, `{}`.
    metadata: Option<String>,
    abort_requested_at: Option<i64>,
    created_at: i64,
    webhook: Option<String>,
    flow: RawFlow,
}

/// A JSON text column unless it holds `default` (most tasks' tags and
/// metadata), which is then not copied out of the row.
fn unless_default(row: &Row<'_>, i: usize, default: &str) -> rusqlite::Result<Option<String>> {
    match row.get_ref(i)? {
        rusqlite::types::ValueRef::Text(t) if t == default.as_bytes() => Ok(None),
        _ => row.get(i).map(Some),
    }
}

/// What a claim set on every task it took.
#[derive(Debug, Clone)]
pub(crate) struct ClaimedAs {
    pub(crate) queue: String,
    pub(crate) worker_id: String,
    pub(crate) lease_expires_at: i64,
    pub(crate) now: i64,
}

impl RawClaimed {
    /// Reads a row returned with [`CLAIM_COLUMNS`].
    pub(crate) fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            rid: row.get(0)?,
            lease_token: row.get(1)?,
            id: row.get(2)?,
            name: row.get(3)?,
            input: row.get(4)?,
            output: row.get(5)?,
            error: row.get(6)?,
            priority: row.get(7)?,
            attempt: row.get(8)?,
            max_attempts: row.get(9)?,
            run_at: row.get(10)?,
            timeout_ms: row.get(11)?,
            retry: row.get(12)?,
            tags: unless_default(row, 13, "[]")?,
            metadata: unless_default(row, 14, "{}")?,
            abort_requested_at: row.get(15)?,
            created_at: row.get(16)?,
            webhook: row.get(17)?,
            flow: RawFlow::from_row(row, 18)?,
        })
    }

    /// The task's row.
    pub(crate) fn rid(&self) -> i64 {
        self.rid
    }

    /// The task's id, name and attempt (the one the claim started), for
    /// its `task.started` event.
    pub(crate) fn event_fields(&self) -> ([u8; 16], &str, i64) {
        (self.id, &self.name, self.attempt)
    }

    /// The task's name and input (JSON text), for the claim's limits.
    pub(crate) fn name_input(&self) -> (&str, &str) {
        (&self.name, &self.input)
    }

    /// Sets the lease token the claim drew.
    pub(crate) fn set_lease_token(&mut self, token: i64) {
        self.lease_token = token;
    }

    /// Parses the row into the claimed [`Task`].
    pub(crate) fn into_task(self, set: &ClaimedAs) -> Result<Task, StoreError> {
        let now = time(set.now)?;
        let mut task = Task {
            id: TaskId::from_bytes(self.id),
            name: self.name,
            queue: set.queue.clone(),
            input: parse_json("input", &self.input)?,
            status: Status::Running,
            output: opt_json("output", self.output.as_deref())?,
            error: opt_json("error", self.error.as_deref())?,
            progress: None,
            priority: small("priority", self.priority)?,
            attempt: small("attempt", self.attempt)?,
            max_attempts: small("max_attempts", self.max_attempts)?,
            run_at: time(self.run_at)?,
            timeout: self
                .timeout_ms
                .map(|ms| small::<u64>("timeout_ms", ms).map(Duration::from_millis))
                .transpose()?,
            retry: opt_json("retry", self.retry.as_deref())?,
            tags: opt_json("tags", self.tags.as_deref())?.unwrap_or_default(),
            metadata: opt_json("metadata", self.metadata.as_deref())?
                .unwrap_or_else(|| serde_json::Value::Object(serde_json::Map::new())),
            webhook: self.webhook,
            depends_on: Vec::new(),
            after: Vec::new(),
            group_id: None,
            unique_key: None,
            fairness_key: None,
            abort_requested_at: opt_time(self.abort_requested_at)?,
            worker_id: Some(set.worker_id.clone()),
            lease_token: Some(lease_token(self.rid, self.lease_token)),
            lease_expires_at: Some(time(set.lease_expires_at)?),
            created_at: time(self.created_at)?,
            started_at: Some(now),
            finished_at: None,
            updated_at: now,
        };
        self.flow.apply(&mut task)?;
        Ok(task)
    }
}

/// A `task_attempts` row as SQLite returns it.
#[derive(Debug, Clone)]
pub(crate) struct RawAttempt {
    attempt: i64,
    worker_id: String,
    started_at: i64,
    finished_at: Option<i64>,
    outcome: String,
    error: Option<String>,
}

/// The `task_attempts` columns [`RawAttempt::from_row`] reads.
pub(crate) const ATTEMPT_COLUMNS: &str =
    "attempt, worker_id, started_at, finished_at, outcome, error";

/// The last ended attempt a `tasks` row holds (`ended_outcome` not NULL;
/// see the schema) as the [`ATTEMPT_COLUMNS`] of its history row. An
/// attempt given back (snoozed, released) did not count: the row's
/// `attempt` was lowered by one, and the task's error is an earlier
/// attempt's.
pub(crate) const ENDED_ATTEMPT_COLUMNS: &str = "attempt + (ended_outcome IN ('snoozed', 'released')), worker_id, started_at, ended_at, \
     ended_outcome, CASE WHEN ended_outcome IN ('snoozed', 'released') THEN NULL ELSE error END";

impl RawAttempt {
    /// Reads a row selected with [`ATTEMPT_COLUMNS`].
    pub(crate) fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            attempt: row.get(0)?,
            worker_id: row.get(1)?,
            started_at: row.get(2)?,
            finished_at: row.get(3)?,
            outcome: row.get(4)?,
            error: row.get(5)?,
        })
    }

    /// Parses the row into an [`Attempt`].
    pub(crate) fn into_attempt(self) -> Result<Attempt, StoreError> {
        Ok(Attempt {
            attempt: small("attempt", self.attempt)?,
            worker_id: self.worker_id,
            started_at: time(self.started_at)?,
            finished_at: opt_time(self.finished_at)?,
            outcome: AttemptOutcome::parse(&self.outcome)
                .ok_or_else(|| corrupt(format!("attempt outcome {:?}", self.outcome)))?,
            error: opt_json("error", self.error.as_deref())?,
        })
    }
}

/// A validated [`NewTask`] in stored form, prepared on the caller's thread.
#[derive(Debug, Clone)]
pub(crate) struct NewRow {
    pub(crate) id: [u8; 16],
    pub(crate) name: String,
    pub(crate) queue: String,
    pub(crate) input: String,
    pub(crate) status: &'static str,
    pub(crate) priority: i64,
    pub(crate) max_attempts: i64,
    pub(crate) run_at: i64,
    pub(crate) timeout_ms: Option<i64>,
    pub(crate) retry: Option<String>,
    pub(crate) tags: String,
    pub(crate) metadata: String,
    pub(crate) webhook: Option<String>,
    /// The unique key and its policy (the default, `reject`, when unset).
    pub(crate) unique: Option<(String, UniquePolicy)>,
    /// Edges of kind `success`.
    pub(crate) depends_on: Vec<TaskId>,
    /// Edges of kind `end`.
    pub(crate) after: Vec<TaskId>,
    pub(crate) group_id: Option<[u8; 16]>,
    /// The key claims share their turns across.
    pub(crate) fairness_key: Option<String>,
}

impl NewRow {
    /// Whether the task needs more than the plain batch insert: a unique
    /// key, dependencies or a group.
    pub(crate) fn has_flow(&self) -> bool {
        self.unique.is_some()
            || !self.depends_on.is_empty()
            || !self.after.is_empty()
            || self.group_id.is_some()
    }

    /// Validates `task` and fills the defaults: queue `default`, priority
    /// 0, `max_attempts` 3, metadata `{}`; `scheduled` when it starts after
    /// `now`, else `pending`.
    pub(crate) fn prepare(task: &NewTask, now: DateTime<Utc>) -> Result<Self, StoreError> {
        task.validate()?;
        let o = &task.options;
        let run_at = o.start_time(now);
        let status = if run_at > now {
            Status::Scheduled
        } else {
            Status::Pending
        };
        Ok(Self {
            id: *task.id.as_bytes(),
            name: task.name.clone(),
            queue: o.queue.clone().unwrap_or_else(|| DEFAULT_QUEUE.to_owned()),
            input: json(&task.input)?,
            status: status.as_str(),
            priority: i64::from(o.priority.unwrap_or(DEFAULT_PRIORITY)),
            max_attempts: i64::from(o.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS)),
            run_at: micros(run_at),
            timeout_ms: o
                .timeout
                .map(|t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX)),
            retry: o.retry.as_ref().map(json).transpose()?,
            tags: json(&o.tags)?,
            metadata: match &o.metadata {
                Some(m) => json(m)?,
                None => "{}".to_owned(),
            },
            webhook: o.webhook.clone(),
            unique: o
                .unique_key
                .clone()
                .map(|key| (key, o.unique.clone().unwrap_or_default())),
            depends_on: o.depends_on.clone(),
            after: task.after.clone(),
            group_id: task.group_id.map(|g| *g.as_bytes()),
            fairness_key: o.fairness_key.clone(),
        })
    }
}

/// One ended attempt of an imported task, in stored form: its
/// `task_attempts` row ([`ATTEMPT_COLUMNS`]).
#[derive(Debug, Clone)]
pub(crate) struct ImportAttempt {
    pub(crate) attempt: i64,
    pub(crate) worker_id: String,
    pub(crate) started_at: i64,
    pub(crate) finished_at: i64,
    pub(crate) outcome: &'static str,
    pub(crate) error: Option<String>,
}

/// A validated [`TaskRecord`] in stored form, prepared on the caller's
/// thread: the task row as the record gives it (a running task's lease
/// token is drawn when it is written), and every ended attempt as a
/// `task_attempts` row. The running attempt of a running task is the
/// row's own `attempt`, `worker_id` and `started_at` (see the schema), so
/// it needs no row.
#[derive(Debug, Clone)]
pub(crate) struct ImportRow {
    pub(crate) id: [u8; 16],
    pub(crate) name: String,
    pub(crate) queue: String,
    pub(crate) input: String,
    pub(crate) status: Status,
    pub(crate) output: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) progress: Option<String>,
    pub(crate) priority: i64,
    pub(crate) attempt: i64,
    pub(crate) max_attempts: i64,
    pub(crate) run_at: i64,
    pub(crate) timeout_ms: Option<i64>,
    pub(crate) retry: Option<String>,
    pub(crate) tags: String,
    pub(crate) metadata: String,
    pub(crate) abort_requested_at: Option<i64>,
    pub(crate) worker_id: Option<String>,
    pub(crate) lease_expires_at: Option<i64>,
    pub(crate) created_at: i64,
    pub(crate) started_at: Option<i64>,
    pub(crate) finished_at: Option<i64>,
    pub(crate) updated_at: i64,
    pub(crate) webhook: Option<String>,
    pub(crate) unique_key: Option<String>,
    pub(crate) depends_on: Vec<TaskId>,
    pub(crate) after: Vec<TaskId>,
    pub(crate) group_id: Option<[u8; 16]>,
    pub(crate) fairness_key: Option<String>,
    pub(crate) ended: Vec<ImportAttempt>,
}

fn invalid(field: &str, message: impl Into<String>) -> StoreError {
    StoreError::Invalid(ValidationError::new(field, message))
}

impl ImportRow {
    /// Checks `record` (the rules of an insert for name, queue, tags,
    /// metadata, timeout and retry policy; a history a store can hold) and
    /// encodes it.
    pub(crate) fn prepare(record: &TaskRecord) -> Result<Self, StoreError> {
        let t = &record.task;
        let mut options = TaskOptions::new().queue(t.queue.clone());
        // A store keeps whole milliseconds: a sub-millisecond timeout it
        // accepted reads back as 0, which an insert would refuse.
        options.timeout = t.timeout.filter(|d| !d.is_zero());
        options.retry = t.retry.clone();
        options.tags = t.tags.clone();
        options.metadata = Some(t.metadata.clone());
        options.webhook = t.webhook.clone();
        options.depends_on = t.depends_on.clone();
        options.unique_key = t.unique_key.clone();
        options.fairness_key = t.fairness_key.clone();
        NewTask {
            id: t.id,
            name: t.name.clone(),
            input: serde_json::Value::Null,
            options,
            group_id: t.group_id,
            after: t.after.clone(),
        }
        .validate()?;
        if t.max_attempts == 0 {
            return Err(invalid("max_attempts", "must be at least 1, got 0"));
        }
        let running = t.status == Status::Running;
        if running {
            for (field, missing) in [
                ("lease_expires_at", t.lease_expires_at.is_none()),
                ("worker_id", t.worker_id.is_none()),
                ("started_at", t.started_at.is_none()),
            ] {
                if missing {
                    return Err(invalid(field, "a running task needs one"));
                }
            }
        }
        let mut ended = Vec::with_capacity(record.attempts.len());
        for (i, a) in record.attempts.iter().enumerate() {
            let last = i + 1 == record.attempts.len();
            if a.outcome == AttemptOutcome::Running {
                if running && last {
                    // The row's own fields are the running attempt.
                    continue;
                }
                return Err(invalid(
                    "attempts",
                    format!(
                        "attempt {i} is running, but only the last attempt of a running task can be"
                    ),
                ));
            }
            let Some(finished_at) = a.finished_at else {
                return Err(invalid(
                    "attempts",
                    format!(
                        "attempt {i} ended ({}) but has no finished_at",
                        a.outcome.as_str()
                    ),
                ));
            };
            ended.push(ImportAttempt {
                attempt: i64::from(a.attempt),
                worker_id: a.worker_id.clone(),
                started_at: micros(a.started_at),
                finished_at: micros(finished_at),
                outcome: a.outcome.as_str(),
                error: a.error.as_ref().map(json).transpose()?,
            });
        }
        Ok(Self {
            id: *t.id.as_bytes(),
            name: t.name.clone(),
            queue: t.queue.clone(),
            input: json(&t.input)?,
            status: t.status,
            output: t.output.as_ref().map(json).transpose()?,
            error: t.error.as_ref().map(json).transpose()?,
            progress: t.progress.as_ref().map(json).transpose()?,
            priority: i64::from(t.priority),
            attempt: i64::from(t.attempt),
            max_attempts: i64::from(t.max_attempts),
            run_at: micros(t.run_at),
            timeout_ms: t
                .timeout
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            retry: t.retry.as_ref().map(json).transpose()?,
            tags: json(&t.tags)?,
            metadata: json(&t.metadata)?,
            abort_requested_at: t.abort_requested_at.map(micros),
            worker_id: t.worker_id.clone(),
            lease_expires_at: t.lease_expires_at.map(micros),
            created_at: micros(t.created_at),
            started_at: t.started_at.map(micros),
            finished_at: t.finished_at.map(micros),
            updated_at: micros(t.updated_at),
            webhook: t.webhook.clone(),
            unique_key: t.unique_key.clone(),
            depends_on: t.depends_on.clone(),
            after: t.after.clone(),
            group_id: t.group_id.map(|g| *g.as_bytes()),
            fairness_key: t.fairness_key.clone(),
            ended,
        })
    }
}
