//! One params struct per [`Store`](crate::Store) method, and the result
//! structs. Adding a field to a params struct changes no signature.

use std::time::Duration;

use chrono::{DateTime, Utc};
use offload_types::{
    Enqueued, LeaseToken, NewTask, Progress, Status, TaskErrorRecord, TaskId, ValidationError,
};
use serde::{Deserialize, Serialize};

use offload_types::Task;

use crate::StoreResult;

/// Insert many tasks in one round-trip and one commit.
#[derive(Debug, Clone)]
pub struct TaskInsertParams {
    /// The tasks; each must pass [`NewTask::validate`].
    pub tasks: Vec<NewTask>,
    /// Enqueue time.
    pub now: DateTime<Utc>,
}

/// Claim up to `limit` ready tasks, leasing each to `worker_id`.
/// Scheduled tasks whose `run_at` has come are promoted first. Tasks come
/// in order: priority (higher first), then `run_at`, then id.
#[derive(Debug, Clone)]
pub struct TaskClaimParams {
    /// Only from this queue.
    pub queue: String,
    /// Only these task names (`None`: any name).
    pub names: Option<Vec<String>>,
    /// At most this many.
    pub limit: u32,
    /// The claiming worker, recorded on the task and in its history.
    pub worker_id: String,
    /// How long the lease lasts without a heartbeat.
    pub lease: Duration,
    /// Claim time.
    pub now: DateTime<Utc>,
}

/// A lease: the task and the token its claim received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseRef {
    /// The task.
    pub id: TaskId,
    /// The claim's token.
    pub lease_token: LeaseToken,
}

/// Renew many leases at once.
#[derive(Debug, Clone)]
pub struct TaskHeartbeatParams {
    /// The leases to renew.
    pub leases: Vec<LeaseRef>,
    /// New lease length from `now`.
    pub lease: Duration,
    /// Heartbeat time.
    pub now: DateTime<Utc>,
}

/// The answer for one lease (heartbeat and progress calls).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseState {
    /// The task.
    pub id: TaskId,
    /// `false` when the lease is no longer this holder's (expired and
    /// rescued, or the task was deleted): the holder must stop the attempt.
    pub live: bool,
    /// Someone asked the task to stop.
    pub abort_requested: bool,
}

/// One progress report.
#[derive(Debug, Clone)]
pub struct ProgressUpdate {
    /// The lease it belongs to.
    pub lease: LeaseRef,
    /// The new progress.
    pub progress: Progress,
}

/// Record many progress reports at once.
#[derive(Debug, Clone)]
pub struct TaskProgressParams {
    /// The reports.
    pub updates: Vec<ProgressUpdate>,
    /// Report time.
    pub now: DateTime<Utc>,
}

/// How an attempt ended, as the store records it.
#[derive(Debug, Clone, PartialEq)]
pub enum FinishOutcome {
    /// `success`, with its output.
    Success {
        /// The output.
        output: serde_json::Value,
    },
    /// A failed attempt that will be retried at `run_at` (`scheduled`, or
    /// `pending` when `run_at` is not in the future).
    Retry {
        /// The attempt's error.
        error: TaskErrorRecord,
        /// When to try again.
        run_at: DateTime<Utc>,
    },
    /// `failed`: attempts exhausted or a non-retryable error.
    Fail {
        /// The attempt's error.
        error: TaskErrorRecord,
    },
    /// `aborted` on request.
    Abort {
        /// Why.
        error: TaskErrorRecord,
    },
    /// Run again at `run_at`; the attempt is not counted.
    Snooze {
        /// When.
        run_at: DateTime<Utc>,
    },
    /// Handed back to `pending` at shutdown; the attempt is not counted.
    Release,
}

/// One finished attempt.
#[derive(Debug, Clone)]
pub struct TaskFinish {
    /// The lease it ran under.
    pub lease: LeaseRef,
    /// How it ended.
    pub outcome: FinishOutcome,
}

/// Record many finished attempts in one commit.
#[derive(Debug, Clone)]
pub struct TaskFinishParams {
    /// The attempts.
    pub items: Vec<TaskFinish>,
    /// Finish time.
    pub now: DateTime<Utc>,
}

/// The answer for one finished attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinishResult {
    /// The task.
    pub id: TaskId,
    /// `false`: the lease was no longer live, so nothing was written (fencing).
    pub accepted: bool,
    /// The task's status after the call.
    pub status: Option<Status>,
}

/// Put tasks whose lease lapsed back to work.
#[derive(Debug, Clone)]
pub struct TaskRescueParams {
    /// Rescue time: leases that expired before it are rescued.
    pub now: DateTime<Utc>,
    /// At most this many per call.
    pub limit: u32,
}

/// One rescued task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RescuedTask {
    /// The task.
    pub id: TaskId,
    /// Its status now: `pending` (attempts left), `failed` (none left) or
    /// `aborted` (an abort was requested).
    pub status: Status,
}

/// Filters of list, count and purge calls. Empty vectors match anything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskFilter {
    /// Any of these statuses.
    pub statuses: Vec<Status>,
    /// Any of these names.
    pub names: Vec<String>,
    /// Any of these queues.
    pub queues: Vec<String>,
    /// Carrying this tag.
    pub tag: Option<String>,
    /// Created at or after.
    pub created_after: Option<DateTime<Utc>>,
    /// Created before.
    pub created_before: Option<DateTime<Utc>>,
    /// Any of these ids.
    pub ids: Vec<TaskId>,
    /// In this group (members and callback).
    pub group: Option<TaskId>,
}

/// One page of tasks, newest first.
#[derive(Debug, Clone, Default)]
pub struct TaskListParams {
    /// Which tasks.
    pub filter: TaskFilter,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size.
    pub limit: u32,
}

/// A page of tasks.
#[derive(Debug, Clone, Default)]
pub struct TaskPage {
    /// The tasks, newest first.
    pub tasks: Vec<Task>,
    /// Pass it as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Cursors are the id of the last task of a page; this reads one back.
pub fn parse_cursor(cursor: &str) -> Result<TaskId, ValidationError> {
    cursor.parse().map_err(|_| {
        ValidationError::new(
            "cursor",
            format!("{cursor:?} is not a cursor from a previous page"),
        )
    })
}

/// Count tasks by name, queue and status.
#[derive(Debug, Clone, Default)]
pub struct TaskCountParams {
    /// Which tasks.
    pub filter: TaskFilter,
}

/// The number of tasks with one name, queue and status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCount {
    /// Task name.
    pub name: String,
    /// Queue.
    pub queue: String,
    /// Status.
    pub status: Status,
    /// How many.
    pub count: u64,
}

/// Change a task that has not started. Unset fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct TaskUpdateParams {
    /// The task.
    pub id: TaskId,
    /// New priority.
    pub priority: Option<i32>,
    /// New start time (the task becomes `scheduled` or `pending` to match).
    pub run_at: Option<DateTime<Utc>>,
    /// New input.
    pub input: Option<serde_json::Value>,
    /// New attempt limit (1 to 1000).
    pub max_attempts: Option<u32>,
    /// Update time.
    pub now: DateTime<Utc>,
}

/// Delete one task that is not running, with its history.
#[derive(Debug, Clone)]
pub struct TaskDeleteParams {
    /// The task.
    pub id: TaskId,
    /// Delete time (stamped on dependents the deletion aborts).
    pub now: DateTime<Utc>,
}

/// Stop a task: a waiting one becomes `aborted` at once; a running one gets
/// an abort request its worker acts on.
#[derive(Debug, Clone)]
pub struct TaskAbortParams {
    /// The task.
    pub id: TaskId,
    /// Recorded as the error message.
    pub reason: Option<String>,
    /// Abort time.
    pub now: DateTime<Utc>,
}

/// Settle `blocked` tasks whose dependencies are resolved (see
/// [`Store::task_resolve_blocked`](crate::Store::task_resolve_blocked)).
#[derive(Debug, Clone)]
pub struct TaskResolveParams {
    /// At most this many tasks per call.
    pub limit: u32,
    /// Now.
    pub now: DateTime<Utc>,
}

/// Run a `failed` or `aborted` task again, history kept.
#[derive(Debug, Clone)]
pub struct TaskRetryParams {
    /// The task.
    pub id: TaskId,
    /// Retry time (the task is `pending` from then).
    pub now: DateTime<Utc>,
}

/// Delete terminal tasks matching a filter, in bounded batches.
#[derive(Debug, Clone, Default)]
pub struct TaskPurgeParams {
    /// Which tasks; its statuses must all be terminal (empty: all terminal).
    pub filter: TaskFilter,
    /// Only tasks that finished before this time.
    pub finished_before: Option<DateTime<Utc>>,
    /// At most this many in this call (`None`: all).
    pub limit: Option<u64>,
}

/// The earliest `run_at` among scheduled tasks, so an idle worker can sleep
/// until then instead of polling.
#[derive(Debug, Clone)]
pub struct TaskNextRunAtParams {
    /// In this queue.
    pub queue: String,
    /// With one of these names (`None`: any).
    pub names: Option<Vec<String>>,
}

/// Become (or stay) the leader for `name` until `now + ttl`.
#[derive(Debug, Clone)]
pub struct LeaderElectParams {
    /// What is led, e.g. `maintenance`.
    pub name: String,
    /// Who asks.
    pub holder: String,
    /// How long the leadership lasts unless renewed.
    pub ttl: Duration,
    /// Election time.
    pub now: DateTime<Utc>,
}

/// Give up leadership.
#[derive(Debug, Clone)]
pub struct LeaderResignParams {
    /// What was led.
    pub name: String,
    /// Who resigns; nothing happens if someone else leads.
    pub holder: String,
}

/// Read tasks with their whole history, in id order (oldest first), one
/// page at a time: what `offload store copy` reads from the source.
#[derive(Debug, Clone, Default)]
pub struct TaskExportParams {
    /// Only tasks whose id is greater than this (the last id of the previous page).
    pub after: Option<TaskId>,
    /// At most this many tasks (1 to 10,000).
    pub limit: u32,
}

/// One task as a store holds it, with every attempt of its history
/// (oldest first; a running task's current attempt last, with outcome
/// `running`).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    /// The task, every field as stored (a running task carries its lease token).
    pub task: Task,
    /// Its attempts, oldest first.
    pub attempts: Vec<offload_types::Attempt>,
}

/// Write tasks exactly as given (ids, statuses, history and timestamps
/// kept): what `offload store copy` writes to the destination. A task
/// whose id exists already is skipped and left unchanged, so a copy can be
/// run again without doubling anything. All-or-nothing per call.
#[derive(Debug, Clone, Default)]
pub struct TaskImportParams {
    /// The tasks. A running task keeps its lease expiry and gets a fresh
    /// lease token (its old holder cannot reach this store).
    pub records: Vec<TaskRecord>,
}

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskImportResult {
    /// Tasks written.
    pub inserted: u64,
    /// Tasks skipped because a task with the same id exists.
    pub skipped: u64,
}

/// Largest page [`TaskExportParams::limit`] allows.
pub const MAX_EXPORT_PAGE: u32 = 10_000;

/// An `Idempotency-Key` sent with an enqueue: the same key with the same
/// request within its lifetime returns the first request's tasks instead of
/// enqueueing again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The key as the caller scoped it (the server prefixes the token id).
    pub key: String,
    /// A digest of the request; the same key with another request is a
    /// conflict.
    pub fingerprint: String,
    /// Until when the key holds (a later request with it enqueues anew).
    pub expires_at: DateTime<Utc>,
}

impl IdempotencyKey {
    /// Longest key, in characters.
    pub const MAX_KEY_LEN: usize = 255;

    /// Checks the key (1 to [`MAX_KEY_LEN`](Self::MAX_KEY_LEN) characters,
    /// no NUL) and the fingerprint (not empty, no NUL).
    pub fn validate(&self) -> Result<(), ValidationError> {
        let len = self.key.chars().count();
        if len == 0 || len > Self::MAX_KEY_LEN {
            return Err(ValidationError::new(
                "idempotency_key",
                format!(
                    "must be 1 to {} characters, got {len} characters",
                    Self::MAX_KEY_LEN
                ),
            ));
        }
        if self.key.contains('\0') {
            return Err(ValidationError::new(
                "idempotency_key",
                "must not contain NUL characters",
            ));
        }
        if self.fingerprint.is_empty() || self.fingerprint.contains('\0') {
            return Err(ValidationError::new(
                "fingerprint",
                "must be a non-empty digest of the request without NUL characters",
            ));
        }
        Ok(())
    }
}

/// What an idempotent insert did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentInsert {
    /// The tasks: new ones, or those of the first request (whose
    /// outcomes are replayed as they were).
    pub tasks: Vec<Enqueued>,
    /// `true`: the key was known, nothing was inserted.
    pub replayed: bool,
}

/// Delete rows that ended before `before`, at most `limit` of them.
#[derive(Debug, Clone)]
pub struct PurgeBeforeParams {
    /// The cut-off (expired idempotency keys, events older than it).
    pub before: DateTime<Utc>,
    /// At most this many rows in this call.
    pub limit: u32,
}

/// Deletes in bounded batches, each its own call (and transaction): calls
/// `batch_fn(n)` with `n` at most `batch` until a call deletes fewer than
/// asked or `limit` rows are gone. Returns how many were deleted.
///
/// ```
/// # tokio_test_block_on(async {
/// let mut left = 2500u64;
/// let deleted = offload_store::purge_in_batches(u64::MAX, 1000, |n| {
///     let now = left.min(u64::from(n));
///     left -= now;
///     async move { Ok(now) }
/// })
/// .await
/// .unwrap();
/// assert_eq!(deleted, 2500);
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
pub async fn purge_in_batches<F, Fut>(limit: u64, batch: u32, mut batch_fn: F) -> StoreResult<u64>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = StoreResult<u64>>,
{
    let mut left = limit;
    let mut total = 0u64;
    while left > 0 {
        let n = u32::try_from(left.min(u64::from(batch))).unwrap_or(batch);
        let deleted = batch_fn(n).await?;
        total += deleted;
        left = left.saturating_sub(deleted);
        if deleted < u64::from(n) {
            break;
        }
    }
    Ok(total)
}
