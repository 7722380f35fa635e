//! [`Client`]: trigger tasks and manage them (get, list, update, delete,
//! abort, retry, purge, wait), plus `wait_until` for in-request background work.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use offload_store::{
    Clock, Notification, Store, SystemClock, TaskAbortParams, TaskCount, TaskCountParams,
    TaskDeleteParams, TaskFilter, TaskInsertParams, TaskListParams, TaskPage, TaskPurgeParams,
    TaskRetryParams, TaskUpdateParams,
};
use offload_types::{Attempt, NewTask, Task, TaskId, TaskOptions};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::task::TaskTracker;

use crate::{Error, Result, TaskHandle};

/// How often a waiter re-reads a task when no notification arrives (a
/// safety net; notifications normally wake it at once).
const WAIT_SAFETY_POLL: Duration = Duration::from_millis(500);

/// Changes to a task that has not started yet; unset fields stay.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskUpdate {
    /// New priority.
    pub priority: Option<i32>,
    /// New earliest start.
    pub run_at: Option<DateTime<Utc>>,
    /// New input.
    pub input: Option<serde_json::Value>,
    /// New attempt limit.
    pub max_attempts: Option<u32>,
}

/// Triggers and manages tasks. Cheap to clone; clones share the store.
///
/// ```no_run
/// use offload::{Client, TaskOptions};
/// use serde_json::json;
/// use std::time::Duration;
///
/// # async fn demo() -> offload::Result<()> {
/// let client = Client::connect("sqlite://offload.db").await?;
/// let handle = client
///     .trigger("research", json!({"topic": "AI agents"}), TaskOptions::new().priority(5))
///     .await?;
/// let output = handle.result(Duration::from_secs(30)).await?;
/// println!("{output}");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    background: TaskTracker,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("store", &self.store.describe())
            .finish()
    }
}

impl Client {
    /// A client over an open store.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            clock: Arc::new(SystemClock),
            background: TaskTracker::new(),
        }
    }

    /// Opens the store a URL names (see [`open`](crate::open)).
    pub async fn connect(url: &str) -> Result<Self> {
        Ok(Self::new(crate::open(url).await?))
    }

    /// Uses another clock (tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Enqueues one task. Returns once it is durably stored.
    pub async fn trigger(
        &self,
        name: &str,
        input: serde_json::Value,
        options: TaskOptions,
    ) -> Result<TaskHandle> {
        let task = NewTask::new(name, input).options(options);
        let mut handles = self.trigger_many(vec![task]).await?;
        handles.pop().ok_or_else(|| {
            Error::Store(offload_store::StoreError::Corrupt(
                "the store returned no id for an enqueued task".into(),
            ))
        })
    }

    /// Enqueues many tasks in one round-trip and one commit; all or nothing.
    pub async fn trigger_many(&self, tasks: Vec<NewTask>) -> Result<Vec<TaskHandle>> {
        for task in &tasks {
            task.validate()?;
        }
        let ids = self
            .store
            .task_insert_many(&TaskInsertParams {
                tasks,
                now: self.now(),
            })
            .await?;
        Ok(ids.into_iter().map(|e| self.enqueued(e)).collect())
    }

    /// Enqueues tasks like [`trigger_many`](Self::trigger_many), once per
    /// `key` for [`IDEMPOTENCY_KEY_LIFETIME`](offload_types::IDEMPOTENCY_KEY_LIFETIME):
    /// a repeat with the same key and `fingerprint` (a digest of the
    /// request) returns the first call's tasks and `true`; the same key
    /// with another fingerprint is refused as a conflict.
    pub async fn trigger_many_idempotent(
        &self,
        tasks: Vec<NewTask>,
        key: &str,
        fingerprint: &str,
    ) -> Result<(Vec<TaskHandle>, bool)> {
        for task in &tasks {
            task.validate()?;
        }
        let now = self.now();
        let lifetime = chrono::Duration::from_std(offload_types::IDEMPOTENCY_KEY_LIFETIME)
            .unwrap_or(chrono::Duration::MAX);
        let done = self
            .store
            .task_insert_idempotent(
                &TaskInsertParams { tasks, now },
                &offload_store::IdempotencyKey {
                    key: key.to_owned(),
                    fingerprint: fingerprint.to_owned(),
                    expires_at: now.checked_add_signed(lifetime).unwrap_or(now),
                },
            )
            .await?;
        let handles = done.tasks.into_iter().map(|e| self.enqueued(e)).collect();
        Ok((handles, done.replayed))
    }

    /// Reads the event log forward (see [`EventListParams`](offload_store::EventListParams)).
    pub async fn events(
        &self,
        params: &offload_store::EventListParams,
    ) -> Result<offload_store::EventPage> {
        Ok(self.store.event_list(params).await?)
    }

    /// A cursor at the end of the event log now (`None`: the log is empty).
    pub async fn event_cursor_latest(&self) -> Result<Option<String>> {
        Ok(self.store.event_cursor_latest().await?)
    }

    /// Enqueues tasks inside the application's own PostgreSQL transaction:
    /// they exist if and only if `tx` commits, and workers wake when it
    /// does. Pass the transaction as `&mut *tx` (any `PgConnection` works;
    /// outside a transaction the insert commits at once).
    ///
    /// Errors with [`Error::UnsupportedUrl`] when this client's store is not
    /// PostgreSQL. A failed enqueue (invalid task, duplicate id) aborts the
    /// transaction, like any failed statement in PostgreSQL.
    ///
    /// ```no_run
    /// use offload::{Client, NewTask};
    /// use offload::postgres::sqlx;
    /// use serde_json::json;
    ///
    /// # async fn demo(client: Client, pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = pool.begin().await?;
    /// sqlx::query("INSERT INTO users (email) VALUES ($1)")
    ///     .bind("ada@example.com")
    ///     .execute(&mut *tx)
    ///     .await?;
    /// client
    ///     .trigger_in_tx(&mut *tx, vec![NewTask::new("welcome-email", json!({"to": "ada@example.com"}))])
    ///     .await?;
    /// tx.commit().await?; // the task exists from here on, and a worker picks it up
    /// # Ok(()) }
    /// ```
    pub async fn trigger_in_tx(
        &self,
        tx: &mut offload_store_postgres::sqlx::PgConnection,
        tasks: Vec<NewTask>,
    ) -> Result<Vec<TaskHandle>> {
        let Some(pg) = self
            .store
            .as_any()
            .downcast_ref::<offload_store_postgres::PgStore>()
        else {
            return Err(Error::UnsupportedUrl(format!(
                "trigger_in_tx needs a PostgreSQL store; this client uses {}",
                self.store.describe()
            )));
        };
        for task in &tasks {
            task.validate()?;
        }
        let ids = pg.insert_in(tx, &tasks, self.now()).await?;
        Ok(ids.into_iter().map(|e| self.enqueued(e)).collect())
    }

    /// A handle on an existing task.
    pub fn handle(&self, id: TaskId) -> TaskHandle {
        TaskHandle::new(self.clone(), id)
    }

    fn enqueued(&self, e: offload_types::Enqueued) -> TaskHandle {
        TaskHandle::enqueued(self.clone(), e.id, e.outcome)
    }

    /// One task; [`Error::NotFound`] if there is none.
    pub async fn get(&self, id: TaskId) -> Result<Task> {
        self.store.task_get(id).await?.ok_or(Error::NotFound(id))
    }

    /// A task's attempts, oldest first.
    pub async fn attempts(&self, id: TaskId) -> Result<Vec<Attempt>> {
        let attempts = self.store.task_attempts(id).await?;
        if attempts.is_empty() {
            // distinguish "never ran" from "no such task"
            self.get(id).await?;
        }
        Ok(attempts)
    }

    /// One page of tasks, newest first.
    pub async fn list(&self, params: TaskListParams) -> Result<TaskPage> {
        Ok(self.store.task_list(&params).await?)
    }

    /// Task counts by name, queue and status.
    pub async fn count(&self, filter: TaskFilter) -> Result<Vec<TaskCount>> {
        Ok(self.store.task_count(&TaskCountParams { filter }).await?)
    }

    /// Changes a task that has not started.
    pub async fn update(&self, id: TaskId, update: TaskUpdate) -> Result<Task> {
        Ok(self
            .store
            .task_update(&TaskUpdateParams {
                id,
                priority: update.priority,
                run_at: update.run_at,
                input: update.input,
                max_attempts: update.max_attempts,
                now: self.now(),
            })
            .await?)
    }

    /// Deletes a task that is not running, with its history.
    pub async fn delete(&self, id: TaskId) -> Result<()> {
        Ok(self
            .store
            .task_delete(&TaskDeleteParams {
                id,
                now: self.now(),
            })
            .await?)
    }

    /// Aborts a task: at once if it is waiting; a running task is asked to
    /// stop and becomes `aborted` when its runner lets go.
    pub async fn abort(&self, id: TaskId, reason: Option<String>) -> Result<Task> {
        Ok(self
            .store
            .task_abort(&TaskAbortParams {
                id,
                reason,
                now: self.now(),
            })
            .await?)
    }

    /// Runs a `failed` or `aborted` task again, keeping its history.
    pub async fn retry(&self, id: TaskId) -> Result<Task> {
        Ok(self
            .store
            .task_retry(&TaskRetryParams {
                id,
                now: self.now(),
            })
            .await?)
    }

    /// Deletes terminal tasks matching `filter` (and finished before
    /// `finished_before`, if given). Returns how many.
    pub async fn purge(
        &self,
        filter: TaskFilter,
        finished_before: Option<DateTime<Utc>>,
    ) -> Result<u64> {
        Ok(self
            .store
            .task_purge(&TaskPurgeParams {
                filter,
                finished_before,
                limit: None,
            })
            .await?)
    }

    /// Deletes terminal tasks that finished more than `retention` ago.
    pub async fn prune(&self, retention: Duration) -> Result<u64> {
        let cutoff =
            self.now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        self.purge(TaskFilter::default(), Some(cutoff)).await
    }

    /// Waits until the task is terminal and returns it. Wakes on the store's
    /// change notifications (with a slow safety poll), never a tight loop.
    pub async fn wait(&self, id: TaskId, timeout: Duration) -> Result<Task> {
        let timeout = timeout.min(offload_types::MAX_DURATION);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.store.notifier().subscribe();
        loop {
            let task = self.get(id).await?;
            if task.status.is_terminal() {
                return Ok(task);
            }
            // wait for a change concerning this task, the safety poll, or the deadline
            let poll = tokio::time::sleep(WAIT_SAFETY_POLL.min(timeout));
            tokio::pin!(poll);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => return Err(Error::Timeout(timeout)),
                    _ = &mut poll => break,
                    msg = changes.recv() => match msg {
                        Ok(n) if n.concerns(id) => break,
                        Ok(Notification::Available { .. }) | Ok(_) => continue,
                        Err(RecvError::Lagged(_)) => break,
                        Err(RecvError::Closed) => {
                            changes = self.store.notifier().subscribe();
                            break;
                        }
                    },
                }
            }
        }
    }

    /// Runs `fut` in the background after the caller returns (e.g. after an
    /// HTTP response), tracked so [`Client::drain_background`] can wait for
    /// it at shutdown. For work that must survive a crash, trigger a task.
    pub fn wait_until(&self, fut: impl Future<Output = ()> + Send + 'static) {
        self.background.spawn(fut);
    }

    /// Waits (at most `timeout`) for work handed to [`Client::wait_until`].
    /// Returns `false` if some was still running when time ran out.
    pub async fn drain_background(&self, timeout: Duration) -> bool {
        self.background.close();
        let done = tokio::time::timeout(timeout, self.background.wait())
            .await
            .is_ok();
        self.background.reopen();
        done
    }
}
