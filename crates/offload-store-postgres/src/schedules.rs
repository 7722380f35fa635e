//! Cron schedules: one row per schedule (its definition as JSON, copies
//! of its `cron` and `time_zone`, and its state), plain statements for
//! put, get, list, pause, delete and due, and [`fire`], which claims one
//! tick of a schedule and enqueues its task in the same commit.
//!
//! **One task per tick.** [`fire`] moves the stored next tick with a
//! compare-and-set (`UPDATE … WHERE next_run_at = expected`) and inserts
//! the tick's task in the same transaction. Under READ COMMITTED a second
//! caller's `UPDATE` of the same row waits for the first transaction; when
//! it commits, PostgreSQL re-checks the second `UPDATE`'s `WHERE` against
//! the new row version, finds the tick moved and changes nothing, so that
//! caller is told it lost. When the first one rolls back (its insert was
//! refused), the second finds the row unchanged and wins. Times are stored
//! in whole microseconds, the precision callers read them back with, so
//! `expected` compares exactly.
//!
//! Schedules are not part of `task_export`/`task_import` (nor of
//! `offload store copy`).

use offload_store::{
    ScheduleDueParams, ScheduleFireParams, ScheduleFired, SchedulePauseParams, SchedulePutParams,
    ScheduleRecord, StoreError, StoreResult,
};
use offload_types::{Schedule, TaskId, ValidationError};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Row};
use uuid::Uuid;

use crate::PgStore;
use crate::codec::{json, uuid};
use crate::error::{corrupt, map, sqlstate};

/// The columns [`record`] reads, in its order.
const COLUMNS: &str =
    "name, definition, paused, next_run_at, last_run_at, last_task_id, created_at, updated_at";

/// Decodes a row of [`COLUMNS`].
fn record(row: &PgRow) -> StoreResult<ScheduleRecord> {
    let name: String = row.try_get(0).map_err(map)?;
    let definition: Value = row.try_get(1).map_err(map)?;
    let schedule: Schedule = serde_json::from_value(definition).map_err(|e| {
        corrupt(format!(
            "column schedules.definition of schedule {name:?}: {e}"
        ))
    })?;
    let last_task_id: Option<Uuid> = row.try_get(5).map_err(map)?;
    Ok(ScheduleRecord {
        schedule,
        paused: row.try_get(2).map_err(map)?,
        next_run_at: row.try_get(3).map_err(map)?,
        last_run_at: row.try_get(4).map_err(map)?,
        last_task_id: last_task_id.map(TaskId),
        created_at: row.try_get(6).map_err(map)?,
        updated_at: row.try_get(7).map_err(map)?,
    })
}

/// Maps the error of a statement writing a definition: text PostgreSQL
/// cannot store (such as `\u0000` in the input) is invalid input.
fn write_error(e: sqlx::Error) -> StoreError {
    match sqlstate(&e).as_deref() {
        Some("22P05") | Some("22021") => StoreError::Invalid(ValidationError::new(
            "input",
            format!("holds text PostgreSQL cannot store (such as \\u0000) ({e})"),
        )),
        _ => map(e),
    }
}

/// `schedule_put`: inserts the schedule, or replaces the definition of
/// the stored one (keeping its next tick while `cron` and `time_zone` are
/// unchanged, its pause unless `paused` is given, its last run and
/// `created_at`), in one statement.
pub(crate) async fn put(store: &PgStore, p: &SchedulePutParams) -> StoreResult<ScheduleRecord> {
    p.schedule.validate()?;
    let s = &p.schedule;
    let sql = format!(
        "INSERT INTO {q}.schedules AS s (name, cron, time_zone, definition, paused, \
         next_run_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, coalesce($5, false), $6, $7, $7) \
         ON CONFLICT (name) DO UPDATE SET cron = excluded.cron, \
         time_zone = excluded.time_zone, definition = excluded.definition, \
         paused = coalesce($5, s.paused), \
         next_run_at = CASE WHEN s.cron = excluded.cron AND s.time_zone = excluded.time_zone \
         THEN s.next_run_at ELSE excluded.next_run_at END, \
         updated_at = excluded.updated_at \
         RETURNING {COLUMNS}",
        q = store.q()
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(&s.name)
        .bind(&s.cron)
        .bind(&s.time_zone)
        .bind(json(s)?)
        .bind(p.paused)
        .bind(p.next_run_at)
        .bind(p.now)
        .fetch_one(&store.inner.pool)
        .await
        .map_err(write_error)?;
    record(&row)
}

/// `schedule_get`: one schedule by name, or `None`.
pub(crate) async fn get(store: &PgStore, name: &str) -> StoreResult<Option<ScheduleRecord>> {
    if name.contains('\0') {
        // PostgreSQL text cannot hold it, so no stored name does.
        return Ok(None);
    }
    let sql = format!(
        "SELECT {COLUMNS} FROM {}.schedules WHERE name = $1",
        store.q()
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(name)
        .fetch_optional(&store.inner.pool)
        .await
        .map_err(map)?;
    row.as_ref().map(record).transpose()
}

/// `schedule_list`: every schedule, by name (byte order, as the other
/// store sorts).
pub(crate) async fn list(store: &PgStore) -> StoreResult<Vec<ScheduleRecord>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM {}.schedules ORDER BY name COLLATE \"C\"",
        store.q()
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .fetch_all(&store.inner.pool)
        .await
        .map_err(map)?;
    rows.iter().map(record).collect()
}

/// `schedule_pause`: pausing keeps the next tick, resuming stores the
/// given one; `None` when no schedule has the name.
pub(crate) async fn pause(
    store: &PgStore,
    p: &SchedulePauseParams,
) -> StoreResult<Option<ScheduleRecord>> {
    if p.name.contains('\0') {
        return Ok(None);
    }
    let sql = format!(
        "UPDATE {}.schedules SET paused = $2, \
         next_run_at = CASE WHEN $2 THEN next_run_at ELSE $3 END, updated_at = $4 \
         WHERE name = $1 RETURNING {COLUMNS}",
        store.q()
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(&p.name)
        .bind(p.paused)
        .bind(p.next_run_at)
        .bind(p.now)
        .fetch_optional(&store.inner.pool)
        .await
        .map_err(map)?;
    row.as_ref().map(record).transpose()
}

/// `schedule_delete`: removes the schedule (never its tasks); `false`
/// when there was none.
pub(crate) async fn delete(store: &PgStore, name: &str) -> StoreResult<bool> {
    if name.contains('\0') {
        return Ok(false);
    }
    let sql = format!("DELETE FROM {}.schedules WHERE name = $1", store.q());
    let n = sqlx::query(AssertSqlSafe(sql))
        .bind(name)
        .execute(&store.inner.pool)
        .await
        .map_err(map)?
        .rows_affected();
    Ok(n > 0)
}

/// `schedule_due`: the active schedules whose next tick is at or before
/// `now`, earliest first (then by name), at most `limit`, through the
/// partial index `schedules_due`.
pub(crate) async fn due(
    store: &PgStore,
    p: &ScheduleDueParams,
) -> StoreResult<Vec<ScheduleRecord>> {
    if p.limit == 0 {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {COLUMNS} FROM {}.schedules \
         WHERE NOT paused AND next_run_at IS NOT NULL AND next_run_at <= $1 \
         ORDER BY next_run_at, name COLLATE \"C\" LIMIT $2",
        store.q()
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(p.now)
        .bind(i64::from(p.limit))
        .fetch_all(&store.inner.pool)
        .await
        .map_err(map)?;
    rows.iter().map(record).collect()
}

/// `schedule_fire`, one transaction: the compare-and-set on the stored
/// next tick (which also records the last run when a task is given),
/// then the task's insert through [`crate::hot::insert`] on the same
/// transaction (the path of `task_insert_many`: its checks, events,
/// dependencies, unique keys, and its `pg_notify` wake-up, delivered when
/// the transaction commits, to this process too through its listener),
/// then the commit. A refused insert rolls the move back and is returned.
pub(crate) async fn fire(store: &PgStore, p: &ScheduleFireParams) -> StoreResult<ScheduleFired> {
    if p.name.contains('\0') {
        return Ok(ScheduleFired::Lost);
    }
    let q = store.q();
    let task_id = p.task.as_ref().map(|t| uuid(t.id));
    let mut tx = store.inner.pool.begin().await.map_err(map)?;
    let sql = format!(
        "UPDATE {q}.schedules SET next_run_at = $3, updated_at = $4, \
         last_run_at = CASE WHEN $5 THEN $2 ELSE last_run_at END, \
         last_task_id = CASE WHEN $5 THEN $6 ELSE last_task_id END \
         WHERE name = $1 AND NOT paused AND next_run_at = $2"
    );
    let moved = sqlx::query(AssertSqlSafe(sql))
        .bind(&p.name)
        .bind(p.expected)
        .bind(p.next_run_at)
        .bind(p.now)
        .bind(task_id.is_some())
        .bind(task_id)
        .execute(&mut *tx)
        .await
        .map_err(map)?
        .rows_affected();
    if moved == 0 {
        // Nothing was written; a failed rollback only means the
        // connection broke, and the pool discards it.
        if let Err(e) = tx.rollback().await {
            tracing::debug!(error = %e, "rolling back a lost schedule fire failed");
        }
        return Ok(ScheduleFired::Lost);
    }
    let Some(task) = &p.task else {
        tx.commit().await.map_err(map)?;
        return Ok(ScheduleFired::Fired { task: None });
    };
    let inserted =
        match crate::hot::insert(store, &mut tx, std::slice::from_ref(task), p.now, false).await {
            Ok(inserted) => inserted,
            Err(e) => {
                if let Err(r) = tx.rollback().await {
                    tracing::debug!(error = %r, "rolling back a refused schedule fire failed");
                }
                return Err(e);
            }
        };
    // A unique key may answer with the task holding it instead: the last
    // run names the task that stands for the tick.
    let id = inserted.first().map(|e| e.id).unwrap_or(task.id);
    if id != task.id {
        let sql = format!("UPDATE {q}.schedules SET last_task_id = $2 WHERE name = $1");
        sqlx::query(AssertSqlSafe(sql))
            .bind(&p.name)
            .bind(uuid(id))
            .execute(&mut *tx)
            .await
            .map_err(map)?;
    }
    tx.commit().await.map_err(map)?;
    Ok(ScheduleFired::Fired { task: Some(id) })
}
