//! Operators' calls: reads (get, attempts, list, count, next run) and the
//! changes of single tasks (abort, retry, update, delete) and purges. A
//! change locks its row (`FOR UPDATE`), checks the lifecycle, writes, and
//! sends its notification inside the same transaction.

use chrono::{DateTime, SubsecRound, Utc};
use offload_store::{
    Notification, StoreError, StoreResult, TaskAbortParams, TaskCount, TaskCountParams,
    TaskDeleteParams, TaskListParams, TaskNextRunAtParams, TaskPage, TaskPurgeParams,
    TaskRetryParams, TaskUpdateParams, parse_cursor,
};
use offload_types::{Attempt, MAX_ATTEMPTS_LIMIT, Status, Task, TaskId, ValidationError};
use sqlx::AssertSqlSafe;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};

use crate::PgStore;
use crate::codec::{self, ATTEMPT_COLUMNS, json, task_columns, uuid};
use crate::error::map;
use crate::filter::push_where;
use crate::notify::Payload;

/// Largest page `task_list` returns.
const MAX_PAGE: u32 = 1000;
/// Rows deleted per purge transaction.
const PURGE_BATCH: u64 = 1000;

/// One task, or `None`.
pub(crate) async fn get(store: &PgStore, id: TaskId) -> StoreResult<Option<Task>> {
    let sql = format!(
        "SELECT {} FROM {}.tasks WHERE id = $1",
        task_columns(""),
        store.q()
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(uuid(id))
        .fetch_optional(&store.inner.pool)
        .await
        .map_err(map)?;
    row.as_ref().map(codec::task).transpose()
}

/// A task's attempts, oldest first; the running one last.
pub(crate) async fn attempts(store: &PgStore, id: TaskId) -> StoreResult<Vec<Attempt>> {
    let q = store.q();
    let sql = format!(
        "SELECT 0 AS part, seq, {ATTEMPT_COLUMNS} FROM {q}.task_attempts WHERE task_id = $1 \
         UNION ALL \
         SELECT 1, history, attempt, coalesce(worker_id, ''), coalesce(started_at, updated_at), \
         NULL::timestamptz, CASE WHEN status = 'running' THEN 'running' END, NULL::jsonb \
         FROM {q}.tasks WHERE id = $1 \
         ORDER BY 1, 2"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(uuid(id))
        .fetch_all(&store.inner.pool)
        .await
        .map_err(map)?;
    let mut exists = false;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let part: i32 = r.try_get(0).map_err(map)?;
        if part == 1 {
            exists = true;
            let running: Option<String> = r.try_get(6).map_err(map)?;
            if running.is_none() {
                continue;
            }
        }
        out.push(codec::attempt(r, 2)?);
    }
    if !exists {
        return Err(StoreError::NotFound(id));
    }
    Ok(out)
}

/// One page, newest first.
pub(crate) async fn list(store: &PgStore, p: &TaskListParams) -> StoreResult<TaskPage> {
    let before = p.cursor.as_deref().map(parse_cursor).transpose()?;
    let limit = p.limit.min(MAX_PAGE);
    if limit == 0 {
        return Ok(TaskPage::default());
    }
    let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "SELECT {} FROM {}.tasks",
        task_columns(""),
        store.q()
    ));
    push_where(&mut qb, &p.filter);
    if let Some(id) = before {
        qb.push(" AND id < ").push_bind(uuid(id));
    }
    qb.push(" ORDER BY id DESC LIMIT ")
        .push_bind(i64::from(limit) + 1);
    let rows = qb.build().fetch_all(&store.inner.pool).await.map_err(map)?;
    let mut tasks = codec::tasks(&rows)?;
    let more = tasks.len() > limit as usize;
    tasks.truncate(limit as usize);
    let next_cursor = if more {
        tasks.last().map(|t| t.id.to_string())
    } else {
        None
    };
    Ok(TaskPage { tasks, next_cursor })
}

/// Counts by name, queue and status.
pub(crate) async fn count(store: &PgStore, p: &TaskCountParams) -> StoreResult<Vec<TaskCount>> {
    let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "SELECT name, queue, status, count(*) FROM {}.tasks",
        store.q()
    ));
    push_where(&mut qb, &p.filter);
    qb.push(
        " GROUP BY name, queue, status \
         ORDER BY name COLLATE \"C\", queue COLLATE \"C\", status COLLATE \"C\"",
    );
    let rows = qb.build().fetch_all(&store.inner.pool).await.map_err(map)?;
    rows.iter()
        .map(|r| {
            let status: String = r.try_get(2).map_err(map)?;
            let n: i64 = r.try_get(3).map_err(map)?;
            Ok(TaskCount {
                name: r.try_get(0).map_err(map)?,
                queue: r.try_get(1).map_err(map)?,
                status: codec::status(&status)?,
                count: u64::try_from(n).unwrap_or(0),
            })
        })
        .collect()
}

/// The earliest `run_at` of a scheduled task.
pub(crate) async fn next_run_at(
    store: &PgStore,
    p: &TaskNextRunAtParams,
) -> StoreResult<Option<DateTime<Utc>>> {
    if p.names.as_ref().is_some_and(Vec::is_empty) {
        return Ok(None);
    }
    offload_store::check_claim_names(p.names.as_deref())?;
    let names = if p.names.is_some() {
        " AND name = ANY($2)"
    } else {
        ""
    };
    let sql = format!(
        "SELECT min(run_at) FROM {}.tasks WHERE status = 'scheduled' AND queue = $1{names}",
        store.q()
    );
    let mut query = sqlx::query(AssertSqlSafe(sql)).bind(&p.queue);
    if let Some(n) = &p.names {
        query = query.bind(n);
    }
    let row = query.fetch_one(&store.inner.pool).await.map_err(map)?;
    row.try_get(0).map_err(map)
}

// ---------------------------------------------------------------- changes

/// A locked task's status, attempt, queue and whether it has dependents.
struct Locked {
    status: Status,
    attempt: i32,
    queue: String,
    has_dependents: bool,
}

async fn lock(store: &PgStore, conn: &mut PgConnection, id: TaskId) -> StoreResult<Locked> {
    let sql = format!(
        "SELECT status, attempt, queue, has_dependents FROM {}.tasks WHERE id = $1 FOR UPDATE",
        store.q()
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(uuid(id))
        .fetch_optional(&mut *conn)
        .await
        .map_err(map)?
        .ok_or(StoreError::NotFound(id))?;
    let status: String = row.try_get(0).map_err(map)?;
    Ok(Locked {
        status: codec::status(&status)?,
        attempt: row.try_get(1).map_err(map)?,
        queue: row.try_get(2).map_err(map)?,
        has_dependents: row.try_get(3).map_err(map)?,
    })
}

fn check(id: TaskId, from: Status, to: Status) -> StoreResult<()> {
    if from.can_become(to) {
        Ok(())
    } else {
        Err(StoreError::InvalidTransition { id, from, to })
    }
}

/// Sends `p` with `pg_notify` inside the transaction of `conn` (nothing
/// when empty).
pub(crate) async fn send(store: &PgStore, conn: &mut PgConnection, p: &Payload) -> StoreResult<()> {
    if p.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(&store.inner.channel)
        .bind(store.payload(p))
        .execute(&mut *conn)
        .await
        .map_err(map)?;
    Ok(())
}

async fn returning(
    conn: &mut PgConnection,
    sql: &str,
    bind: impl FnOnce(
        sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>,
) -> StoreResult<Task> {
    let row = bind(sqlx::query(AssertSqlSafe(sql.to_owned())))
        .fetch_one(&mut *conn)
        .await
        .map_err(map)?;
    codec::task(&row)
}

/// Aborts a waiting task at once, or asks a running one to stop.
pub(crate) async fn abort(store: &PgStore, p: &TaskAbortParams) -> StoreResult<Task> {
    let mut tx = store.inner.pool.begin().await.map_err(map)?;
    let cur = lock(store, &mut tx, p.id).await?;
    check(p.id, cur.status, Status::Aborted)?;
    let q = store.q();
    let cols = task_columns("");
    let mut payload = Payload::default();
    let mut notes = vec![Notification::Changed {
        ids: Some(vec![p.id]),
    }];
    let task = if cur.status == Status::Running {
        let sql = format!(
            "UPDATE {q}.tasks SET abort_requested_at = coalesce(abort_requested_at, $2), \
             updated_at = $2 WHERE id = $1 RETURNING {cols}"
        );
        let task = returning(&mut tx, &sql, |qy| qy.bind(uuid(p.id)).bind(p.now)).await?;
        payload.abort_requested(&[p.id]);
        notes.insert(0, Notification::AbortRequested { ids: vec![p.id] });
        task
    } else {
        let record = offload_store::abort_record(
            p.reason.as_deref(),
            u32::try_from(cur.attempt).unwrap_or(0),
            p.now,
        );
        let data = crate::events::error_data(&record)?;
        let record = json(&record)?;
        // The task and its `task.aborted` event in one statement.
        let sql = format!(
            "WITH aborted AS (UPDATE {q}.tasks SET status = 'aborted', error = $2, \
             finished_at = $3, updated_at = $3 WHERE id = $1 RETURNING {cols}), \
             ev AS (INSERT INTO {q}.events (at, kind, task_id, name, queue, attempt, data) \
             SELECT $3, 'task.aborted', id, name, queue, attempt, \
             CASE WHEN webhook IS NOT NULL \
             THEN $4::jsonb || jsonb_build_object('webhook', webhook) ELSE $4::jsonb END \
             FROM aborted) \
             SELECT * FROM aborted"
        );
        let task = returning(&mut tx, &sql, |qy| {
            qy.bind(uuid(p.id)).bind(record).bind(p.now).bind(data)
        })
        .await?;
        if cur.has_dependents {
            let settled = crate::deps::settle(
                store,
                &mut tx,
                vec![(uuid(p.id), Some(Status::Aborted))],
                p.now,
            )
            .await?;
            settled.add_to(&mut payload);
            notes.extend(settled.notes());
        }
        task
    };
    payload.changed(&[p.id]);
    send(store, &mut tx, &payload).await?;
    tx.commit().await.map_err(map)?;
    store.local(notes);
    Ok(task)
}

/// Runs a failed or aborted task again.
pub(crate) async fn retry(store: &PgStore, p: &TaskRetryParams) -> StoreResult<Task> {
    let mut tx = store.inner.pool.begin().await.map_err(map)?;
    let cur = lock(store, &mut tx, p.id).await?;
    if !matches!(cur.status, Status::Failed | Status::Aborted) {
        return Err(StoreError::InvalidTransition {
            id: p.id,
            from: cur.status,
            to: Status::Pending,
        });
    }
    // Its edges again: blocked while some are unmet (a Conflict while a
    // `success` dependency failed or was aborted).
    let waiting = crate::deps::unmet_edges(store, &mut tx, p.id).await?;
    let status = if waiting > 0 {
        Status::Blocked
    } else {
        Status::Pending
    };
    check(p.id, cur.status, status)?;
    if cur.has_dependents {
        crate::deps::unmeet_end_edges(store, &mut tx, p.id).await?;
    }
    let sql = format!(
        "UPDATE {}.tasks SET status = $3, deps_waiting = $4, run_at = $2, finished_at = NULL, \
         abort_requested_at = NULL, max_attempts = greatest(max_attempts, attempt + 1), \
         updated_at = $2 WHERE id = $1 RETURNING {}",
        store.q(),
        task_columns("")
    );
    let task = returning(&mut tx, &sql, |qy| {
        qy.bind(uuid(p.id))
            .bind(p.now)
            .bind(status.as_str())
            .bind(waiting)
    })
    .await?;
    let mut payload = Payload::default();
    let mut notes = Vec::new();
    if status == Status::Pending {
        payload.available(&cur.queue);
        notes.push(Notification::Available {
            queue: Some(cur.queue),
        });
    }
    payload.changed(&[p.id]);
    notes.push(Notification::Changed {
        ids: Some(vec![p.id]),
    });
    send(store, &mut tx, &payload).await?;
    tx.commit().await.map_err(map)?;
    store.local(notes);
    Ok(task)
}

/// Changes a task that has not started.
pub(crate) async fn update(store: &PgStore, p: &TaskUpdateParams) -> StoreResult<Task> {
    if let Some(n) = p.max_attempts
        && !(1..=MAX_ATTEMPTS_LIMIT).contains(&n)
    {
        return Err(StoreError::Invalid(ValidationError::new(
            "max_attempts",
            format!("must be between 1 and {MAX_ATTEMPTS_LIMIT}, got {n}"),
        )));
    }
    let mut tx = store.inner.pool.begin().await.map_err(map)?;
    let cur = lock(store, &mut tx, p.id).await?;
    if !cur.status.is_waiting() {
        return Err(StoreError::Conflict(format!(
            "task {} is {}; only scheduled, blocked or pending tasks can be updated",
            p.id, cur.status
        )));
    }
    let target = match (cur.status, p.run_at) {
        (Status::Scheduled | Status::Pending, Some(run_at)) if run_at > p.now => Status::Scheduled,
        (Status::Scheduled | Status::Pending, Some(_)) => Status::Pending,
        (s, _) => s,
    };
    if target != cur.status {
        check(p.id, cur.status, target)?;
    }
    let sql = format!(
        "UPDATE {}.tasks SET priority = coalesce($2, priority), run_at = coalesce($3, run_at), \
         input = coalesce($4, input), max_attempts = coalesce($5, max_attempts), \
         status = $6, updated_at = $7 WHERE id = $1 RETURNING {}",
        store.q(),
        task_columns("")
    );
    let max_attempts = p.max_attempts.map(|n| i32::try_from(n).unwrap_or(i32::MAX));
    let task = returning(&mut tx, &sql, |qy| {
        qy.bind(uuid(p.id))
            .bind(p.priority)
            .bind(p.run_at)
            .bind(p.input.clone())
            .bind(max_attempts)
            .bind(target.as_str())
            .bind(p.now)
    })
    .await
    .map_err(|e| match e {
        StoreError::Backend(inner) if inner.to_string().contains("Unicode") => {
            StoreError::Invalid(ValidationError::new(
                "input",
                "holds text PostgreSQL cannot store (such as \\u0000)",
            ))
        }
        other => other,
    })?;
    let mut payload = Payload::default();
    payload.changed(&[p.id]);
    let mut notes = vec![Notification::Changed {
        ids: Some(vec![p.id]),
    }];
    if matches!(target, Status::Pending | Status::Scheduled) {
        payload.available(&cur.queue);
        notes.push(Notification::Available {
            queue: Some(cur.queue.clone()),
        });
    }
    send(store, &mut tx, &payload).await?;
    tx.commit().await.map_err(map)?;
    store.local(notes);
    Ok(task)
}

/// Deletes one task that is not running, with its history.
pub(crate) async fn delete(store: &PgStore, p: &TaskDeleteParams) -> StoreResult<()> {
    let mut tx = store.inner.pool.begin().await.map_err(map)?;
    let cur = lock(store, &mut tx, p.id).await?;
    if cur.status == Status::Running {
        return Err(StoreError::Conflict(format!(
            "task {} is running; abort it first",
            p.id
        )));
    }
    let q = store.q();
    let mut payload = Payload::default();
    let mut notes = Vec::new();
    // A waiting task with dependents: they settle as if it had ended
    // without succeeding (`dependency_record(id, None, …)`).
    if cur.has_dependents && cur.status.is_waiting() {
        // Stamped in whole microseconds, as every stored time is, so the
        // error record's `at` equals the dependents' `finished_at`.
        let now = p.now.trunc_subsecs(6);
        let settled = crate::deps::settle(store, &mut tx, vec![(uuid(p.id), None)], now).await?;
        settled.add_to(&mut payload);
        notes.extend(settled.notes());
    }
    crate::deps::forget_edges(store, &mut tx, &[uuid(p.id)]).await?;
    let sql = format!(
        "WITH h AS (DELETE FROM {q}.task_attempts WHERE task_id = $1) \
         DELETE FROM {q}.tasks WHERE id = $1"
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(uuid(p.id))
        .execute(&mut *tx)
        .await
        .map_err(map)?;
    payload.changed(&[p.id]);
    send(store, &mut tx, &payload).await?;
    tx.commit().await.map_err(map)?;
    notes.insert(
        0,
        Notification::Changed {
            ids: Some(vec![p.id]),
        },
    );
    store.local(notes);
    Ok(())
}

/// Runs a bounded `DELETE` (`$1` = the cut-off time, `$2` = the batch
/// size, `$3` = the batch size plus `scan_slack` when given) until a batch
/// comes back short or `limit` rows are gone; each batch its own statement.
pub(crate) async fn delete_before_in_batches(
    store: &PgStore,
    sql: &str,
    before: chrono::DateTime<chrono::Utc>,
    limit: u32,
    scan_slack: Option<u32>,
) -> StoreResult<u64> {
    let batch = u32::try_from(PURGE_BATCH).unwrap_or(u32::MAX);
    offload_store::purge_in_batches(limit.into(), batch, |n| async move {
        let mut query = sqlx::query(AssertSqlSafe(sql.to_owned()))
            .bind(before)
            .bind(i64::from(n));
        if let Some(slack) = scan_slack {
            query = query.bind(i64::from(n) + i64::from(slack));
        }
        Ok(query
            .execute(&store.inner.pool)
            .await
            .map_err(map)?
            .rows_affected())
    })
    .await
}

/// Deletes terminal tasks matching the filter in batches of
/// [`PURGE_BATCH`], each its own transaction.
pub(crate) async fn purge(store: &PgStore, p: &TaskPurgeParams) -> StoreResult<u64> {
    if let Some(s) = p.filter.statuses.iter().find(|s| !s.is_terminal()) {
        return Err(StoreError::Invalid(ValidationError::new(
            "status",
            format!("purge removes only terminal tasks (success, failed, aborted), got {s}"),
        )));
    }
    let q = store.q();
    let mut left = p.limit.unwrap_or(u64::MAX);
    let mut total = 0u64;
    while left > 0 {
        let batch = left.min(PURGE_BATCH);
        let mut qb: QueryBuilder<Postgres> =
            QueryBuilder::new(format!("WITH victims AS (SELECT id FROM {q}.tasks"));
        push_where(&mut qb, &p.filter);
        if p.filter.statuses.is_empty() {
            qb.push(" AND status IN ('success', 'failed', 'aborted')");
        }
        qb.push(" AND finished_at IS NOT NULL");
        if let Some(before) = p.finished_before {
            qb.push(" AND finished_at < ").push_bind(before);
        }
        qb.push(" LIMIT ")
            .push_bind(i64::try_from(batch).unwrap_or(i64::MAX));
        qb.push(format!(
            " FOR UPDATE SKIP LOCKED), \
             h AS (DELETE FROM {q}.task_attempts WHERE task_id IN (SELECT id FROM victims)), \
             d AS (DELETE FROM {q}.tasks WHERE id IN (SELECT id FROM victims) RETURNING id) \
             SELECT id FROM d"
        ));
        let mut tx = store.inner.pool.begin().await.map_err(map)?;
        let rows = qb.build().fetch_all(&mut *tx).await.map_err(map)?;
        let ids = rows
            .iter()
            .map(|r| {
                r.try_get::<uuid::Uuid, _>(0)
                    .map(|u| TaskId::from_bytes(*u.as_bytes()))
                    .map_err(map)
            })
            .collect::<StoreResult<Vec<TaskId>>>()?;
        let mut payload = Payload::default();
        if !ids.is_empty() {
            let gone: Vec<uuid::Uuid> = ids.iter().map(|id| uuid(*id)).collect();
            crate::deps::forget_edges(store, &mut tx, &gone).await?;
            payload.changed(&ids);
        }
        send(store, &mut tx, &payload).await?;
        tx.commit().await.map_err(map)?;
        let deleted = ids.len() as u64;
        if deleted > 0 {
            store.local([Notification::Changed {
                ids: if ids.len() > 128 { None } else { Some(ids) },
            }]);
        }
        total += deleted;
        left = left.saturating_sub(deleted);
        if deleted < batch {
            break;
        }
    }
    Ok(total)
}
