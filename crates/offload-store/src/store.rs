//! The [`Store`] trait, implemented once per backend.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use offload_types::{Attempt, Enqueued, Task, TaskId};
use std::sync::Arc;

use crate::access::*;
use crate::events::*;
use crate::limits::*;
use crate::params::*;
use crate::schedules::*;
use crate::webhooks::*;
use crate::{Notifier, StoreResult};

/// What a backend can do; core code branches on these, never on a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Capabilities {
    /// Notifications reach other processes (not only this one).
    pub cross_process_notify: bool,
    /// Several machines may share the store.
    pub multi_host: bool,
}

/// The storage contract. Object-safe: `Client` and `Worker` hold an
/// `Arc<dyn Store>` chosen from a URL at run time. Every time-dependent
/// call takes `now` in its params. Every method that changes tasks checks
/// the change against [`Status::can_become`](offload_types::Status::can_become)
/// and emits [`Notification`](crate::Notification)s after it commits.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// Where this store's notifications come from.
    fn notifier(&self) -> Arc<dyn Notifier>;

    /// A short description for logs and `--version` output, e.g. `sqlite:offload.db`.
    fn describe(&self) -> String;

    /// The concrete store, so code that knows the backend (e.g. enqueueing
    /// inside an application's PostgreSQL transaction) can reach it.
    fn as_any(&self) -> &dyn std::any::Any;

    // ------------------------------------------------------------ leader

    /// Tries to become, or stay, the leader for `params.name`. True if the
    /// caller leads until `now + ttl`.
    async fn leader_attempt_elect(&self, params: &LeaderElectParams) -> StoreResult<bool>;

    /// Gives up leadership if the caller holds it.
    async fn leader_resign(&self, params: &LeaderResignParams) -> StoreResult<()>;

    // ------------------------------------------------------------ task

    /// Stops a task (see [`TaskAbortParams`]); returns it as it is
    /// afterwards. Aborting a waiting task cascades to what depends on it
    /// (see [`task_insert_many`](Self::task_insert_many)).
    async fn task_abort(&self, params: &TaskAbortParams) -> StoreResult<Task>;

    /// A task's history of attempts, oldest first.
    async fn task_attempts(&self, id: TaskId) -> StoreResult<Vec<Attempt>>;

    /// Claims up to `limit` ready tasks; each returned task carries its
    /// `lease_token`. The stored limits (see [`limit_put`](Self::limit_put))
    /// apply: a task is left `pending` when taking it would put more
    /// running tasks of its name or queue (or of its `key` value) than a
    /// `concurrency` (`key_concurrency`) allows, or more starts in the last
    /// `rate.period` than `rate.limit`; claims that such a limit concerns
    /// are serialised across every claimer, so no interleaving exceeds it.
    /// Among ready tasks with a `fairness_key`, claims go round-robin
    /// across keys (least recently served key first; tasks without a key
    /// share one key); within a key the usual order holds.
    async fn task_claim(&self, params: &TaskClaimParams) -> StoreResult<Vec<Task>>;

    /// Counts tasks by name, queue and status.
    async fn task_count(&self, params: &TaskCountParams) -> StoreResult<Vec<TaskCount>>;

    /// Deletes one task that is not running. Tasks blocked on it with a
    /// `Success` edge are aborted (cascading); `End` edges to it are met.
    async fn task_delete(&self, params: &TaskDeleteParams) -> StoreResult<()>;

    /// Records finished attempts; a stale lease is refused per item, not written.
    async fn task_finish_many(&self, params: &TaskFinishParams) -> StoreResult<Vec<FinishResult>>;

    /// One task, or `None`.
    async fn task_get(&self, id: TaskId) -> StoreResult<Option<Task>>;

    /// Renews leases; reports per lease whether it is still live and
    /// whether an abort was requested.
    async fn task_heartbeat_many(
        &self,
        params: &TaskHeartbeatParams,
    ) -> StoreResult<Vec<LeaseState>>;

    /// Inserts tasks in one commit; all or nothing. Returns, in order, the
    /// task that does each one's work and what the enqueue did.
    ///
    /// **Dependencies.** Every id in a task's `options.depends_on`
    /// (edges of kind [`EdgeKind::Success`](crate::EdgeKind)) and `after`
    /// ([`EdgeKind::End`](crate::EdgeKind)) must name a stored task or one
    /// earlier in the batch; [`dependency_unmet`](crate::dependency_unmet)
    /// decides per edge (an error refuses the whole batch as `Invalid`).
    /// A task with an unmet edge is inserted `blocked`; it becomes
    /// [`unblocked_status`](crate::unblocked_status) in the same commit as
    /// its last dependency is met (a `Success` edge when the dependency
    /// succeeds, an `End` edge when it reaches any terminal status). When
    /// a dependency ends `failed` or `aborted` — by a finish, a rescue, an
    /// abort, or a cascade — or a waiting dependency is deleted, each
    /// `blocked` task with a `Success` edge to it is `aborted` in the same
    /// commit with [`dependency_record`](crate::dependency_record), and
    /// that abort cascades in turn (an `End` edge to an aborted task is met
    /// instead). Every cascaded abort writes a `task.aborted` event.
    ///
    /// **Quotas.** A task with `options.fairness_key` whose name or queue
    /// has a limit with `max_queued_per_key` is refused, with the whole
    /// batch, as [`StoreError::QuotaExceeded`](crate::StoreError) when the
    /// waiting tasks (`scheduled`, `blocked`, `pending`) of that name or
    /// queue with that key, plus those of the batch, would exceed it.
    ///
    /// **Unique keys.** A task with `options.unique_key` is matched against
    /// the newest stored task with the same key; [`unique_action`](offload_types::unique_action)
    /// (with `options.unique`, default `reject`) says whether it is
    /// inserted, answered by the holder, or merged into the waiting holder
    /// (new input and maybe `run_at`; nothing else changes). Concurrent
    /// inserts of one key are serialised, so two never both insert while a
    /// holder would have been found. Tasks without a key take the plain
    /// batch path, which costs no more than before.
    async fn task_insert_many(&self, params: &TaskInsertParams) -> StoreResult<Vec<Enqueued>>;

    /// One page of tasks, newest first.
    async fn task_list(&self, params: &TaskListParams) -> StoreResult<TaskPage>;

    /// The earliest `run_at` of a scheduled task in a queue.
    async fn task_next_run_at(
        &self,
        params: &TaskNextRunAtParams,
    ) -> StoreResult<Option<DateTime<Utc>>>;

    /// Records progress reports of live leases.
    async fn task_progress_many(&self, params: &TaskProgressParams)
    -> StoreResult<Vec<LeaseState>>;

    /// Deletes terminal tasks matching the filter; returns how many.
    async fn task_purge(&self, params: &TaskPurgeParams) -> StoreResult<u64>;

    /// Puts tasks whose lease expired back to work (or fails them when out
    /// of attempts).
    async fn task_rescue_expired(&self, params: &TaskRescueParams)
    -> StoreResult<Vec<RescuedTask>>;

    /// One page of tasks with their history, in id order, for copying a
    /// store (see [`TaskExportParams`]).
    async fn task_export(&self, params: &TaskExportParams) -> StoreResult<Vec<TaskRecord>>;

    /// Writes exported tasks as they are, skipping ids that exist (see
    /// [`TaskImportParams`]).
    async fn task_import(&self, params: &TaskImportParams) -> StoreResult<TaskImportResult>;

    /// The safety net of dependencies: settles up to `params.limit`
    /// `blocked` tasks whose edges say they should not be blocked any more
    /// (every dependency met: unblocked; a `Success` dependency `failed`
    /// or `aborted`: aborted, cascading), as a finish would have. Returns
    /// how many tasks changed. Normally there are none; the worker's
    /// maintenance calls it so that no task stays blocked by a lost race
    /// or a crash between a commit and its cascade.
    async fn task_resolve_blocked(&self, params: &TaskResolveParams) -> StoreResult<u64>;

    /// Runs a `failed` or `aborted` task again. A task with dependencies
    /// is `blocked` again while some are unmet, and the retry is refused
    /// (`Conflict`) while a `Success` dependency is `failed` or `aborted`:
    /// that one must be retried first.
    async fn task_retry(&self, params: &TaskRetryParams) -> StoreResult<Task>;

    /// Changes a task that has not started. A new `run_at` leaves a
    /// `blocked` task blocked (it applies once the task is unblocked).
    async fn task_update(&self, params: &TaskUpdateParams) -> StoreResult<Task>;

    /// Inserts tasks like [`task_insert_many`](Self::task_insert_many),
    /// once per idempotency key: when `key.key` is held by a live key
    /// (`expires_at` after `params.now`) with the same fingerprint, nothing
    /// is inserted and the first insert's ids are returned (`replayed`);
    /// with another fingerprint the call fails with `Conflict`. An expired
    /// key is replaced. The key and the tasks commit together.
    async fn task_insert_idempotent(
        &self,
        params: &TaskInsertParams,
        key: &IdempotencyKey,
    ) -> StoreResult<IdempotentInsert>;

    /// Deletes idempotency keys that expired before `params.before`;
    /// returns how many.
    async fn idempotency_purge(&self, params: &PurgeBeforeParams) -> StoreResult<u64>;

    // ------------------------------------------------------------ event

    /// Reads the event log forward from a cursor (see [`EventListParams`]).
    /// Events appear in commit order: an event is returned only once every
    /// event before it in the log is visible, so following `cursor` never
    /// skips one.
    async fn event_list(&self, params: &EventListParams) -> StoreResult<EventPage>;

    /// A cursor at the end of the log now: reading after it returns only
    /// events written later. `None` when the log is empty.
    async fn event_cursor_latest(&self) -> StoreResult<Option<String>>;

    /// Deletes events written before `params.before`; returns how many.
    async fn event_purge(&self, params: &PurgeBeforeParams) -> StoreResult<u64>;

    // ------------------------------------------------------------ schedule

    /// Stores a schedule, or replaces the definition of the one with its
    /// name (see [`SchedulePutParams`] for what is kept); returns it as stored.
    async fn schedule_put(&self, params: &SchedulePutParams) -> StoreResult<ScheduleRecord>;

    /// One schedule by name, or `None`.
    async fn schedule_get(&self, name: &str) -> StoreResult<Option<ScheduleRecord>>;

    /// Every schedule, by name.
    async fn schedule_list(&self) -> StoreResult<Vec<ScheduleRecord>>;

    /// Pauses or resumes a schedule; `None` if there is none with the name.
    async fn schedule_pause(
        &self,
        params: &SchedulePauseParams,
    ) -> StoreResult<Option<ScheduleRecord>>;

    /// Deletes a schedule (not its tasks); `false` if there was none.
    async fn schedule_delete(&self, name: &str) -> StoreResult<bool>;

    /// Active schedules whose next tick is at or before `params.now`,
    /// earliest first.
    async fn schedule_due(&self, params: &ScheduleDueParams) -> StoreResult<Vec<ScheduleRecord>>;

    /// Handles one due tick: if the schedule exists, is active and its
    /// stored next tick is still `params.expected`, moves it to
    /// `params.next_run_at`, records `last_run_at` (the tick: `expected`)
    /// and `last_task_id` when a task is given, and inserts that task — all
    /// in one commit; otherwise changes nothing and answers
    /// [`ScheduleFired::Lost`].
    async fn schedule_fire(&self, params: &ScheduleFireParams) -> StoreResult<ScheduleFired>;

    // ------------------------------------------------------------ limit

    /// Stores a limit, replacing the one with the same scope and target;
    /// returns it as stored.
    async fn limit_put(&self, params: &LimitPutParams) -> StoreResult<LimitRecord>;

    /// Every stored limit, by scope then target.
    async fn limit_list(&self) -> StoreResult<Vec<LimitRecord>>;

    /// Deletes a limit; `false` if there was none.
    async fn limit_delete(&self, params: &LimitDeleteParams) -> StoreResult<bool>;

    // ------------------------------------------------------------ token

    /// Stores a new API token; `Conflict` if its id exists.
    async fn token_insert(&self, token: &TokenRecord) -> StoreResult<()>;

    /// One token by id, or `None`.
    async fn token_get(&self, id: &str) -> StoreResult<Option<TokenRecord>>;

    /// Every token, oldest first.
    async fn token_list(&self) -> StoreResult<Vec<TokenRecord>>;

    /// Deletes a token; `false` if there was none with that id.
    async fn token_delete(&self, id: &str) -> StoreResult<bool>;

    // ------------------------------------------------------------ audit

    /// Appends an operator action to the audit log; returns its `seq`.
    async fn audit_insert(&self, record: &NewAuditRecord) -> StoreResult<i64>;

    /// One page of the audit log, newest first.
    async fn audit_list(&self, params: &AuditListParams) -> StoreResult<AuditPage>;

    // ------------------------------------------------------------ webhook

    /// Stores a subscription; `Conflict` if its id exists.
    async fn webhook_insert(&self, webhook: &WebhookRecord) -> StoreResult<()>;

    /// Every subscription, oldest first.
    async fn webhook_list(&self) -> StoreResult<Vec<WebhookRecord>>;

    /// Deletes a subscription and its deliveries; `false` if there was none.
    async fn webhook_delete(&self, id: &str) -> StoreResult<bool>;

    /// The dispatcher's cursor in the event log (`None` before its first
    /// [`webhook_enqueue`](Self::webhook_enqueue)).
    async fn webhook_cursor(&self) -> StoreResult<Option<String>>;

    /// Stores deliveries and moves the cursor if it is still
    /// `expected_cursor`; returns `false` (and stores nothing) otherwise.
    async fn webhook_enqueue(&self, params: &WebhookEnqueueParams) -> StoreResult<bool>;

    /// Claims due deliveries (see [`DeliveryClaimParams`]); each comes with
    /// its attempts so far.
    async fn webhook_delivery_claim(
        &self,
        params: &DeliveryClaimParams,
    ) -> StoreResult<Vec<Delivery>>;

    /// Records an attempt of a `pending` delivery; `NotFound`-like
    /// `Conflict` if the delivery is gone or no longer pending.
    async fn webhook_delivery_record(&self, params: &DeliveryRecordParams) -> StoreResult<()>;

    /// Deliveries with their attempts, newest first.
    async fn webhook_delivery_list(
        &self,
        params: &DeliveryListParams,
    ) -> StoreResult<Vec<Delivery>>;

    /// Deletes delivered or failed deliveries made before `params.before`;
    /// returns how many.
    async fn webhook_delivery_purge(&self, params: &PurgeBeforeParams) -> StoreResult<u64>;

    /// The store's secret for tasks' own webhooks: `candidate` is stored
    /// and returned if there is none yet, else the stored one is returned.
    async fn webhook_task_secret(&self, candidate: &str) -> StoreResult<String>;
}
