//! The [`Store`] trait, implemented once per backend.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use offload_types::{Attempt, Task, TaskId};
use std::sync::Arc;

use crate::access::*;
use crate::events::*;
use crate::params::*;
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

    /// Stops a task (see [`TaskAbortParams`]); returns it as it is afterwards.
    async fn task_abort(&self, params: &TaskAbortParams) -> StoreResult<Task>;

    /// A task's history of attempts, oldest first.
    async fn task_attempts(&self, id: TaskId) -> StoreResult<Vec<Attempt>>;

    /// Claims up to `limit` ready tasks; each returned task carries its `lease_token`.
    async fn task_claim(&self, params: &TaskClaimParams) -> StoreResult<Vec<Task>>;

    /// Counts tasks by name, queue and status.
    async fn task_count(&self, params: &TaskCountParams) -> StoreResult<Vec<TaskCount>>;

    /// Deletes one task that is not running.
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

    /// Inserts tasks in one commit; all or nothing. Returns their ids in order.
    async fn task_insert_many(&self, params: &TaskInsertParams) -> StoreResult<Vec<TaskId>>;

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

    /// Runs a `failed` or `aborted` task again.
    async fn task_retry(&self, params: &TaskRetryParams) -> StoreResult<Task>;

    /// Changes a task that has not started.
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
