//! [`SqliteStore`]: opening, and the [`Store`] implementation. Each method
//! validates and encodes its arguments on the caller's task, sends one
//! command to the writer thread (or runs a read on the reader pool), and
//! parses the rows it gets back.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use offload_store::{
    Capabilities, FinishResult, LeaderElectParams, LeaderResignParams, LeaseState, MAX_EXPORT_PAGE,
    Notifier, NotifyHub, RescuedTask, Store, StoreError, StoreResult, TaskAbortParams,
    TaskClaimParams, TaskCount, TaskCountParams, TaskDeleteParams, TaskExportParams,
    TaskFinishParams, TaskHeartbeatParams, TaskImportParams, TaskImportResult, TaskInsertParams,
    TaskListParams, TaskNextRunAtParams, TaskPage, TaskProgressParams, TaskPurgeParams, TaskRecord,
    TaskRescueParams, TaskRetryParams, TaskUpdateParams, parse_cursor, purge_in_batches,
};
use offload_types::{Attempt, Enqueued, MAX_ATTEMPTS_LIMIT, Task, TaskId, ValidationError};
use rusqlite::types::Value;

use crate::checkpoint::{Checkpointer, FALLBACK_AUTOCHECKPOINT};
use crate::codec::{
    ClaimedAs, ImportRow, Lease, RawAttempt, after, into_tasks, json, micros, time,
};
use crate::limits::LimitCache;
use crate::options::{SqliteOptions, parse_url};
use crate::read::{self, Readers, Where};
use crate::wake::{Broadcaster, SqliteNotifier, WakeShared};
use crate::write::{self, ClaimArgs, EndRow, UpdateArgs};
use crate::writer::{Writer, WriterStats};

/// Rows deleted per purge transaction, so a large purge never holds the
/// write lock for long.
const PURGE_BATCH: u32 = 1000;
/// The writer's weight of a batch of `n` rows.
fn weight(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Largest page `task_list` returns.
const MAX_PAGE: u32 = 1000;

/// The embedded SQLite store: one file in WAL mode, one writer thread with
/// group commit, a pool of readers, cross-process wake-ups.
///
/// Cheap to clone (an `Arc` inside); dropping the last clone stops the
/// writer thread after its current batch and removes this process's
/// wake-up socket.
///
/// ```no_run
/// use offload_store::Store;
/// use offload_store_sqlite::{SqliteOptions, SqliteStore};
///
/// # async fn demo() -> Result<(), offload_store::StoreError> {
/// let store = SqliteStore::open("offload.db", SqliteOptions::default()).await?;
/// let same = SqliteStore::open_url("sqlite://offload.db?durability=full").await?;
/// assert_eq!(store.describe(), "sqlite:offload.db");
/// # drop(same);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    // Dropped first: the writer thread stops before the notifier goes.
    writer: Writer,
    readers: Arc<Readers>,
    notifier: Arc<SqliteNotifier>,
    /// The stored limits and which queues use fairness keys.
    limits: Arc<LimitCache>,
}

impl SqliteStore {
    /// Opens (creating it if allowed) the database at `path` and applies
    /// pending migrations.
    ///
    /// Errors: `Unavailable` when the path cannot be reached (its directory
    /// is missing, permission is denied) or the file is locked past the
    /// busy timeout; `Corrupt` when the file is not an SQLite database, is
    /// another application's database, or has a schema newer than this
    /// build. A refused file is left unchanged.
    pub async fn open(path: impl AsRef<Path>, options: SqliteOptions) -> StoreResult<Self> {
        let path = path.as_ref().to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(path, options))
            .await
            .map_err(|e| {
                StoreError::backend(crate::error::Message(format!(
                    "opening the store failed: {e}"
                )))
            })?
    }

    /// Opens the store a `sqlite://` URL names: `sqlite://offload.db`,
    /// `sqlite://relative/dir/x.db`, `sqlite:///abs/path.db`, with optional
    /// `?durability=normal|full` (also `busy_timeout=5s`, `readers=4`,
    /// `create=false`). Unknown parameters are refused.
    pub async fn open_url(url: &str) -> StoreResult<Self> {
        let (path, options) = parse_url(url)?;
        Self::open(path, options).await
    }

    fn open_blocking(path: PathBuf, options: SqliteOptions) -> StoreResult<Self> {
        let conn = crate::conn::open_writer(&path, &options)?;
        let hub = NotifyHub::new();
        let wake = WakeShared::new(&path);
        let checkpointer = crate::conn::open_checkpointer(&path, &options)
            .and_then(|c| {
                Checkpointer::start(c).map_err(|e| {
                    StoreError::Unavailable(format!("cannot start the checkpoint thread: {e}"))
                })
            })
            .and_then(|c| {
                conn.pragma_update(None, "wal_autocheckpoint", FALLBACK_AUTOCHECKPOINT)
                    .map(|()| c)
                    .map_err(crate::error::map)
            });
        let checkpointer = match checkpointer {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "checkpoints run inside commits instead");
                None
            }
        };
        let limits = Arc::new(LimitCache::default());
        let writer = Writer::start(
            conn,
            hub.clone(),
            Broadcaster::new(wake.clone()),
            checkpointer,
            options.busy_timeout,
            limits.clone(),
        )?;
        let readers = Readers::new(path.clone(), options);
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                writer,
                readers,
                notifier: Arc::new(SqliteNotifier::new(hub, wake)),
                limits,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Starts listening for other processes' wake-ups now instead of on the
    /// first subscription. True when listening.
    pub fn listen(&self) -> bool {
        self.inner.notifier.listen()
    }

    /// The writer's counters (commits, commands), for tests.
    #[doc(hidden)]
    pub fn writer_stats(&self) -> WriterStats {
        self.inner.writer.stats()
    }

    /// `EXPLAIN QUERY PLAN` of the claim statement (filtered to `names`
    /// when given), one line per step, for tests that check it uses the
    /// pending index.
    #[doc(hidden)]
    pub async fn explain_claim(
        &self,
        queue: &str,
        names: Option<Vec<String>>,
    ) -> StoreResult<Vec<String>> {
        let queue = queue.to_owned();
        self.inner
            .readers
            .run(move |conn| {
                let select = write::claim_sql(names.as_ref().map(Vec::len));
                let mut stmt = conn
                    .prepare(&format!("EXPLAIN QUERY PLAN {select}"))
                    .map_err(crate::error::map)?;
                let limit = 100i64;
                let mut values: Vec<&dyn rusqlite::ToSql> = vec![&queue, &limit];
                if let Some(names) = &names {
                    values.extend(names.iter().map(|n| n as &dyn rusqlite::ToSql));
                }
                let rows = stmt
                    .query_map(values.as_slice(), |r| r.get::<_, String>(3))
                    .map_err(crate::error::map)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(crate::error::map)
            })
            .await
    }

    async fn write<T, F>(&self, weight: usize, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&mut crate::writer::WriteCtx<'_>) -> StoreResult<T> + Send + 'static,
    {
        self.inner.writer.call(weight, f).await
    }
}

fn lease(l: &offload_store::LeaseRef) -> Lease {
    Lease::new(l.id, l.lease_token)
}

/// Encodes one finish item on the caller's side.
fn end_row(item: &offload_store::TaskFinish, now: DateTime<Utc>) -> StoreResult<EndRow> {
    let e = offload_store::attempt_end(&item.outcome, now);
    Ok(EndRow {
        lease: lease(&item.lease),
        status: e.status,
        output: e.output.map(json).transpose()?,
        set_error: e.set_error,
        error: e.error.map(json).transpose()?,
        run_at: e.run_at.map(micros),
        uncount: e.uncount,
        outcome: e.outcome,
        event: crate::events::finish_event(&item.outcome)?,
    })
}

fn lease_states(ids: impl Iterator<Item = TaskId>, live: Vec<Option<bool>>) -> Vec<LeaseState> {
    ids.zip(live)
        .map(|(id, live)| LeaseState {
            id,
            live: live.is_some(),
            abort_requested: live.unwrap_or(false),
        })
        .collect()
}

#[async_trait]
impl Store for SqliteStore {
    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.cross_process_notify = true;
        caps.multi_host = false;
        caps
    }

    fn notifier(&self) -> Arc<dyn Notifier> {
        self.inner.notifier.clone()
    }

    fn describe(&self) -> String {
        format!("sqlite:{}", self.inner.path.display())
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    async fn leader_attempt_elect(&self, params: &LeaderElectParams) -> StoreResult<bool> {
        let name = params.name.clone();
        let holder = params.holder.clone();
        let now = micros(params.now);
        let expires_at = after(params.now, params.ttl);
        self.write(1, move |ctx| {
            write::leader_elect(ctx, &name, &holder, now, expires_at)
        })
        .await
    }

    async fn leader_resign(&self, params: &LeaderResignParams) -> StoreResult<()> {
        let name = params.name.clone();
        let holder = params.holder.clone();
        self.write(1, move |ctx| write::leader_resign(ctx, &name, &holder))
            .await
    }

    async fn task_abort(&self, params: &TaskAbortParams) -> StoreResult<Task> {
        let TaskAbortParams { id, reason, now } = params.clone();
        self.write(1, move |ctx| write::abort(ctx, id, reason.as_deref(), now))
            .await?
            .into_task()
    }

    async fn task_attempts(&self, id: TaskId) -> StoreResult<Vec<Attempt>> {
        let key = *id.as_bytes();
        let raw = self
            .inner
            .readers
            .run(move |conn| read::attempts(conn, key))
            .await?
            .ok_or(StoreError::NotFound(id))?;
        raw.into_iter().map(RawAttempt::into_attempt).collect()
    }

    async fn task_claim(&self, params: &TaskClaimParams) -> StoreResult<Vec<Task>> {
        let args = ClaimArgs {
            names: params.names.clone(),
            limit: params.limit,
            set: ClaimedAs {
                queue: params.queue.clone(),
                worker_id: params.worker_id.clone(),
                lease_expires_at: after(params.now, params.lease),
                now: micros(params.now),
            },
        };
        if params.names.as_ref().is_some_and(Vec::is_empty) {
            return Ok(Vec::new());
        }
        offload_store::check_claim_names(params.names.as_deref())?;
        let weight = usize::try_from(params.limit).unwrap_or(usize::MAX);
        let set = args.set.clone();
        let raw = self
            .write(weight, move |ctx| write::claim(ctx, &args))
            .await?;
        raw.into_iter().map(|t| t.into_task(&set)).collect()
    }

    async fn task_count(&self, params: &TaskCountParams) -> StoreResult<Vec<TaskCount>> {
        let w = Where::filter(&params.filter);
        self.inner
            .readers
            .run(move |conn| read::count(conn, &w))
            .await
    }

    async fn task_delete(&self, params: &TaskDeleteParams) -> StoreResult<()> {
        let id = params.id;
        let now = micros(params.now);
        self.write(1, move |ctx| write::delete(ctx, id, now)).await
    }

    async fn task_finish_many(&self, params: &TaskFinishParams) -> StoreResult<Vec<FinishResult>> {
        if params.items.is_empty() {
            return Ok(Vec::new());
        }
        let rows = params
            .items
            .iter()
            .map(|item| end_row(item, params.now))
            .collect::<StoreResult<Vec<_>>>()?;
        let now = micros(params.now);
        let results = self
            .write(rows.len(), move |ctx| write::finish(ctx, &rows, now))
            .await?;
        Ok(params
            .items
            .iter()
            .zip(results)
            .map(|(item, r)| FinishResult {
                id: item.lease.id,
                accepted: r.is_ok(),
                status: match r {
                    Ok(status) => Some(status),
                    Err(current) => current,
                },
            })
            .collect())
    }

    async fn task_get(&self, id: TaskId) -> StoreResult<Option<Task>> {
        let key = *id.as_bytes();
        self.inner
            .readers
            .run(move |conn| read::get(conn, key))
            .await?
            .map(|raw| raw.into_task())
            .transpose()
    }

    async fn task_heartbeat_many(
        &self,
        params: &TaskHeartbeatParams,
    ) -> StoreResult<Vec<LeaseState>> {
        if params.leases.is_empty() {
            return Ok(Vec::new());
        }
        let leases: Vec<Lease> = params.leases.iter().map(lease).collect();
        let expires_at = after(params.now, params.lease);
        let live = self
            .write(leases.len(), move |ctx| {
                write::heartbeat(ctx, &leases, expires_at)
            })
            .await?;
        Ok(lease_states(params.leases.iter().map(|l| l.id), live))
    }

    async fn task_insert_many(&self, params: &TaskInsertParams) -> StoreResult<Vec<Enqueued>> {
        if params.tasks.is_empty() {
            return Ok(Vec::new());
        }
        // Shared with `task_insert_idempotent` and `schedule_fire`: the
        // same checks, then the same insert.
        let (rows, _) = crate::idempotency::prepare_insert(params)?;
        let now = micros(params.now);
        self.write(rows.len(), move |ctx| {
            crate::flow::insert_rows(ctx, &rows, now)
        })
        .await
    }

    async fn task_list(&self, params: &TaskListParams) -> StoreResult<TaskPage> {
        let before = params
            .cursor
            .as_deref()
            .map(parse_cursor)
            .transpose()?
            .map(|id| *id.as_bytes());
        let limit = params.limit.min(MAX_PAGE);
        if limit == 0 {
            return Ok(TaskPage::default());
        }
        let w = Where::filter(&params.filter);
        let mut raw = self
            .inner
            .readers
            .run(move |conn| read::list(conn, w, before, limit + 1))
            .await?;
        let more = raw.len() > limit as usize;
        raw.truncate(limit as usize);
        let next_cursor = if more {
            raw.last().map(|t| t.id().to_string())
        } else {
            None
        };
        Ok(TaskPage {
            tasks: into_tasks(raw)?,
            next_cursor,
        })
    }

    async fn task_next_run_at(
        &self,
        params: &TaskNextRunAtParams,
    ) -> StoreResult<Option<DateTime<Utc>>> {
        let queue = params.queue.clone();
        let names = params.names.clone();
        if names.as_ref().is_some_and(Vec::is_empty) {
            return Ok(None);
        }
        offload_store::check_claim_names(names.as_deref())?;
        let next = self
            .inner
            .readers
            .run(move |conn| read::next_run_at(conn, &queue, names.as_deref()))
            .await?;
        next.map(time).transpose()
    }

    async fn task_progress_many(
        &self,
        params: &TaskProgressParams,
    ) -> StoreResult<Vec<LeaseState>> {
        if params.updates.is_empty() {
            return Ok(Vec::new());
        }
        let updates = params
            .updates
            .iter()
            .map(|u| {
                let mut p = u.progress.clone();
                p.percent = p.percent.min(100);
                Ok((lease(&u.lease), json(&p)?))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let now = micros(params.now);
        let live = self
            .write(updates.len(), move |ctx| {
                write::progress(ctx, &updates, now)
            })
            .await?;
        Ok(lease_states(
            params.updates.iter().map(|u| u.lease.id),
            live,
        ))
    }

    async fn task_purge(&self, params: &TaskPurgeParams) -> StoreResult<u64> {
        if let Some(s) = params.filter.statuses.iter().find(|s| !s.is_terminal()) {
            return Err(StoreError::Invalid(ValidationError::new(
                "status",
                format!("purge removes only terminal tasks (success, failed, aborted), got {s}"),
            )));
        }
        let mut w = Where::filter(&params.filter);
        if params.filter.statuses.is_empty() {
            w.raw("status IN ('success', 'failed', 'aborted')");
        }
        w.raw("finished_at IS NOT NULL");
        if let Some(before) = params.finished_before {
            w.push("finished_at < ?", Value::Integer(micros(before)));
        }
        let w = Arc::new(w);
        purge_in_batches(params.limit.unwrap_or(u64::MAX), PURGE_BATCH, |batch| {
            let w = w.clone();
            self.write(weight(batch), move |ctx| write::purge_batch(ctx, &w, batch))
        })
        .await
    }

    async fn task_rescue_expired(
        &self,
        params: &TaskRescueParams,
    ) -> StoreResult<Vec<RescuedTask>> {
        let (now, limit) = (params.now, params.limit);
        let weight = usize::try_from(limit).unwrap_or(usize::MAX);
        let rescued = self
            .write(weight, move |ctx| write::rescue(ctx, now, limit))
            .await?;
        Ok(rescued
            .into_iter()
            .map(|(id, status)| RescuedTask { id, status })
            .collect())
    }

    async fn task_export(&self, params: &TaskExportParams) -> StoreResult<Vec<TaskRecord>> {
        let limit = params.limit;
        if !(1..=MAX_EXPORT_PAGE).contains(&limit) {
            return Err(StoreError::Invalid(ValidationError::new(
                "limit",
                format!("must be between 1 and {MAX_EXPORT_PAGE}, got {limit}"),
            )));
        }
        let after = params.after.map(|id| *id.as_bytes());
        let raw = self
            .inner
            .readers
            .run(move |conn| read::export(conn, after, limit))
            .await?;
        raw.into_iter()
            .map(|(task, attempts)| {
                Ok(TaskRecord {
                    task: task.into_task()?,
                    attempts: attempts
                        .into_iter()
                        .map(RawAttempt::into_attempt)
                        .collect::<StoreResult<_>>()?,
                })
            })
            .collect()
    }

    async fn task_import(&self, params: &TaskImportParams) -> StoreResult<TaskImportResult> {
        if params.records.is_empty() {
            return Ok(TaskImportResult::default());
        }
        let mut rows = Vec::with_capacity(params.records.len());
        let mut seen = std::collections::HashSet::with_capacity(params.records.len());
        for (i, record) in params.records.iter().enumerate() {
            let id = record.task.id;
            let row = ImportRow::prepare(record).map_err(|e| match e {
                StoreError::Invalid(v) => StoreError::Invalid(ValidationError::new(
                    v.field,
                    format!(
                        "{} (record {i}, task {id}; nothing was imported)",
                        v.message
                    ),
                )),
                other => other,
            })?;
            if !seen.insert(id) {
                return Err(StoreError::Conflict(format!(
                    "task id {id} appears twice in the import; nothing was imported"
                )));
            }
            rows.push(row);
        }
        let weight = rows.iter().map(|r| 1 + r.ended.len()).sum();
        let (inserted, skipped) = self
            .write(weight, move |ctx| write::import(ctx, &rows))
            .await?;
        Ok(TaskImportResult { inserted, skipped })
    }

    async fn task_resolve_blocked(
        &self,
        params: &offload_store::TaskResolveParams,
    ) -> StoreResult<u64> {
        if params.limit == 0 {
            return Ok(0);
        }
        // Found on a reader (the scan does not hold the write lock), then
        // checked again and settled by the writer.
        let limit = params.limit;
        let ids = self
            .inner
            .readers
            .run(move |conn| crate::deps::stuck(conn, limit))
            .await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let now = micros(params.now);
        self.write(ids.len(), move |ctx| crate::deps::resolve(ctx, &ids, now))
            .await
    }

    async fn task_retry(&self, params: &TaskRetryParams) -> StoreResult<Task> {
        let id = params.id;
        let now = micros(params.now);
        self.write(1, move |ctx| write::retry(ctx, id, now))
            .await?
            .into_task()
    }

    async fn task_update(&self, params: &TaskUpdateParams) -> StoreResult<Task> {
        if let Some(n) = params.max_attempts
            && !(1..=MAX_ATTEMPTS_LIMIT).contains(&n)
        {
            return Err(StoreError::Invalid(ValidationError::new(
                "max_attempts",
                format!("must be between 1 and {MAX_ATTEMPTS_LIMIT}, got {n}"),
            )));
        }
        let args = UpdateArgs {
            id: params.id,
            priority: params.priority.map(i64::from),
            run_at: params.run_at.map(micros),
            input: params.input.as_ref().map(json).transpose()?,
            max_attempts: params.max_attempts.map(i64::from),
            now: micros(params.now),
        };
        self.write(1, move |ctx| write::update(ctx, &args))
            .await?
            .into_task()
    }
    async fn task_insert_idempotent(
        &self,
        params: &TaskInsertParams,
        key: &offload_store::IdempotencyKey,
    ) -> StoreResult<offload_store::IdempotentInsert> {
        let key = crate::idempotency::KeyRow::prepare(key)?;
        // The same checks and the same `write::insert` as `task_insert_many`.
        let (rows, _) = crate::idempotency::prepare_insert(params)?;
        let now = micros(params.now);
        self.write(rows.len() + 1, move |ctx| {
            crate::idempotency::insert(ctx, &key, &rows, now)
        })
        .await
    }

    async fn idempotency_purge(
        &self,
        params: &offload_store::PurgeBeforeParams,
    ) -> StoreResult<u64> {
        let before = micros(params.before);
        purge_in_batches(params.limit.into(), PURGE_BATCH, |batch| {
            self.write(weight(batch), move |ctx| {
                crate::idempotency::purge(ctx, before, batch)
            })
        })
        .await
    }

    async fn event_list(
        &self,
        params: &offload_store::EventListParams,
    ) -> StoreResult<offload_store::EventPage> {
        crate::events::check_limit(params.limit)?;
        if let Some(after) = &params.after {
            crate::events::parse_cursor(after)?;
        }
        let params = params.clone();
        self.inner
            .readers
            .run(move |conn| crate::events::page(conn, &params))
            .await
    }

    async fn event_cursor_latest(&self) -> StoreResult<Option<String>> {
        let latest = self.inner.readers.run(crate::events::latest).await?;
        Ok(latest.map(|seq| seq.to_string()))
    }

    async fn event_purge(&self, params: &offload_store::PurgeBeforeParams) -> StoreResult<u64> {
        let before = micros(params.before);
        purge_in_batches(params.limit.into(), PURGE_BATCH, |batch| {
            self.write(weight(batch), move |ctx| {
                crate::events::purge_batch(ctx.conn, before, batch)
            })
        })
        .await
    }

    async fn token_insert(&self, token: &offload_store::TokenRecord) -> StoreResult<()> {
        let row = crate::access::TokenRow::prepare(token)?;
        self.write(1, move |ctx| crate::access::token_insert(ctx, &row))
            .await
    }

    async fn token_get(&self, id: &str) -> StoreResult<Option<offload_store::TokenRecord>> {
        let id = id.to_owned();
        self.inner
            .readers
            .run(move |conn| crate::access::token_get(conn, &id))
            .await?
            .map(crate::access::into_token)
            .transpose()
    }

    async fn token_list(&self) -> StoreResult<Vec<offload_store::TokenRecord>> {
        self.inner
            .readers
            .run(crate::access::token_list)
            .await?
            .into_iter()
            .map(crate::access::into_token)
            .collect()
    }

    async fn token_delete(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_owned();
        self.write(1, move |ctx| crate::access::token_delete(ctx, &id))
            .await
    }

    async fn audit_insert(&self, record: &offload_store::NewAuditRecord) -> StoreResult<i64> {
        let row = crate::access::AuditRow::prepare(record)?;
        self.write(1, move |ctx| crate::access::audit_insert(ctx, &row))
            .await
    }

    async fn audit_list(
        &self,
        params: &offload_store::AuditListParams,
    ) -> StoreResult<offload_store::AuditPage> {
        params.validate()?;
        let limit = params.limit;
        let p = params.clone();
        let mut raw = self
            .inner
            .readers
            .run(move |conn| crate::access::audit_list(conn, &p, limit + 1))
            .await?;
        let more = raw.len() > limit as usize;
        raw.truncate(limit as usize);
        let records = raw
            .into_iter()
            .map(crate::access::into_audit)
            .collect::<StoreResult<Vec<_>>>()?;
        let next_cursor = if more {
            records.last().map(|r| r.seq)
        } else {
            None
        };
        Ok(offload_store::AuditPage {
            records,
            next_cursor,
        })
    }
    async fn schedule_put(
        &self,
        params: &offload_store::SchedulePutParams,
    ) -> StoreResult<offload_store::ScheduleRecord> {
        let row = crate::schedules::PutRow::prepare(params)?;
        self.write(1, move |ctx| crate::schedules::put(ctx, &row))
            .await?
            .into_record()
    }

    async fn schedule_get(&self, name: &str) -> StoreResult<Option<offload_store::ScheduleRecord>> {
        let name = name.to_owned();
        self.inner
            .readers
            .run(move |conn| crate::schedules::get(conn, &name))
            .await?
            .map(crate::schedules::RawSchedule::into_record)
            .transpose()
    }

    async fn schedule_list(&self) -> StoreResult<Vec<offload_store::ScheduleRecord>> {
        let raw = self.inner.readers.run(crate::schedules::list).await?;
        crate::schedules::into_records(raw)
    }

    async fn schedule_pause(
        &self,
        params: &offload_store::SchedulePauseParams,
    ) -> StoreResult<Option<offload_store::ScheduleRecord>> {
        let args = crate::schedules::PauseArgs::new(params);
        self.write(1, move |ctx| crate::schedules::pause(ctx, &args))
            .await?
            .map(crate::schedules::RawSchedule::into_record)
            .transpose()
    }

    async fn schedule_delete(&self, name: &str) -> StoreResult<bool> {
        let name = name.to_owned();
        self.write(1, move |ctx| crate::schedules::delete(ctx, &name))
            .await
    }

    async fn schedule_due(
        &self,
        params: &offload_store::ScheduleDueParams,
    ) -> StoreResult<Vec<offload_store::ScheduleRecord>> {
        if params.limit == 0 {
            return Ok(Vec::new());
        }
        let now = micros(params.now);
        let limit = params.limit;
        let raw = self
            .inner
            .readers
            .run(move |conn| crate::schedules::due(conn, now, limit))
            .await?;
        crate::schedules::into_records(raw)
    }

    async fn schedule_fire(
        &self,
        params: &offload_store::ScheduleFireParams,
    ) -> StoreResult<offload_store::ScheduleFired> {
        let args = crate::schedules::FireArgs::prepare(params)?;
        self.write(args.weight(), move |ctx| crate::schedules::fire(ctx, &args))
            .await
    }

    async fn limit_put(
        &self,
        params: &offload_store::LimitPutParams,
    ) -> StoreResult<offload_store::LimitRecord> {
        let row = crate::limits::PutRow::prepare(params)?;
        let raw = self
            .write(1, move |ctx| crate::limits::put(ctx, &row))
            .await?;
        // Also after the commit: a claim of the same batch may have
        // loaded the limits before the put.
        self.inner.limits.invalidate();
        raw.into_record()
    }

    async fn limit_list(&self) -> StoreResult<Vec<offload_store::LimitRecord>> {
        self.inner
            .readers
            .run(crate::limits::list)
            .await?
            .into_iter()
            .map(crate::limits::RawLimit::into_record)
            .collect()
    }

    async fn limit_delete(&self, params: &offload_store::LimitDeleteParams) -> StoreResult<bool> {
        let params = params.clone();
        let deleted = self
            .write(1, move |ctx| crate::limits::delete(ctx, &params))
            .await?;
        self.inner.limits.invalidate();
        Ok(deleted)
    }

    async fn webhook_insert(&self, webhook: &offload_store::WebhookRecord) -> StoreResult<()> {
        let row = crate::webhooks::WebhookRow::prepare(webhook)?;
        self.write(1, move |ctx| crate::webhooks::insert(ctx, &row))
            .await
    }

    async fn webhook_list(&self) -> StoreResult<Vec<offload_store::WebhookRecord>> {
        self.inner
            .readers
            .run(crate::webhooks::list)
            .await?
            .into_iter()
            .map(crate::webhooks::into_webhook)
            .collect()
    }

    async fn webhook_delete(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_owned();
        self.write(1, move |ctx| crate::webhooks::delete(ctx, &id))
            .await
    }

    async fn webhook_cursor(&self) -> StoreResult<Option<String>> {
        self.inner.readers.run(crate::webhooks::cursor).await
    }

    async fn webhook_enqueue(
        &self,
        params: &offload_store::WebhookEnqueueParams,
    ) -> StoreResult<bool> {
        params.check()?;
        let expected = params.expected_cursor.clone();
        let new_cursor = params.new_cursor.clone();
        let rows: Vec<_> = params
            .deliveries
            .iter()
            .map(crate::webhooks::DeliveryRow::new)
            .collect();
        self.write(rows.len() + 1, move |ctx| {
            crate::webhooks::enqueue(ctx, expected.as_deref(), &new_cursor, &rows)
        })
        .await
    }

    async fn webhook_delivery_claim(
        &self,
        params: &offload_store::DeliveryClaimParams,
    ) -> StoreResult<Vec<offload_store::Delivery>> {
        params.validate()?;
        let now = micros(params.now);
        let until = after(params.now, params.lease);
        let limit = params.limit;
        let weight = usize::try_from(limit).unwrap_or(usize::MAX);
        self.write(weight, move |ctx| {
            crate::webhooks::claim(ctx, now, until, limit)
        })
        .await?
        .into_iter()
        .map(crate::webhooks::into_delivery)
        .collect()
    }

    async fn webhook_delivery_record(
        &self,
        params: &offload_store::DeliveryRecordParams,
    ) -> StoreResult<()> {
        let row = crate::webhooks::RecordRow::prepare(params)?;
        self.write(1, move |ctx| crate::webhooks::record(ctx, &row))
            .await
    }

    async fn webhook_delivery_list(
        &self,
        params: &offload_store::DeliveryListParams,
    ) -> StoreResult<Vec<offload_store::Delivery>> {
        params.validate()?;
        let webhook_id = params.webhook_id.clone();
        let task_id = params.task_id;
        let limit = params.limit;
        self.inner
            .readers
            .run(move |conn| {
                crate::webhooks::list_deliveries(conn, webhook_id.as_deref(), task_id, limit)
            })
            .await?
            .into_iter()
            .map(crate::webhooks::into_delivery)
            .collect()
    }

    async fn webhook_delivery_purge(
        &self,
        params: &offload_store::PurgeBeforeParams,
    ) -> StoreResult<u64> {
        let before = micros(params.before);
        purge_in_batches(params.limit.into(), PURGE_BATCH, |batch| {
            self.write(weight(batch), move |ctx| {
                crate::webhooks::purge(ctx, before, batch)
            })
        })
        .await
    }

    async fn webhook_task_secret(&self, candidate: &str) -> StoreResult<String> {
        offload_store::check_task_secret(candidate)?;
        let candidate = candidate.to_owned();
        self.write(1, move |ctx| crate::webhooks::task_secret(ctx, &candidate))
            .await
    }
}
