//! Cron schedules (`schedules`, migration 4): the writes (put, pause,
//! delete, fire) run as writer commands, the reads (get, list, due) on the
//! reader pool. The store never reads the cron expression: callers give
//! every tick, computed from their `now`.
//!
//! A fire is one command, so one transaction: the compare-and-set on the
//! stored next tick, then the tick's task through the very insert of
//! `task_insert_many` ([`flow::insert_rows`]). A refused insert fails the
//! command, which rolls the move back with it; the single writer (and
//! `BEGIN IMMEDIATE` across processes) serialises racing fires, so the
//! second finds the tick moved and is lost.

use offload_store::{
    ScheduleFireParams, ScheduleFired, SchedulePauseParams, SchedulePutParams, ScheduleRecord,
    StoreError, StoreResult, TaskInsertParams,
};
use offload_types::{Schedule, TaskId};
use rusqlite::{Connection, OptionalExtension, Row};

use crate::codec::{NewRow, json, micros, time};
use crate::error::{corrupt, map};
use crate::flow;
use crate::write::{exec, stmt};
use crate::writer::WriteCtx;

/// The `schedules` columns every query returning whole schedules selects,
/// in the order [`RawSchedule::from_row`] reads them.
const COLUMNS: &str = "name, definition, paused, next_run_at, last_run_at, last_task_id, \
     created_at, updated_at";

/// A schedule row as SQLite returns it; [`RawSchedule::into_record`]
/// parses the definition on the caller's thread.
#[derive(Debug, Clone)]
pub(crate) struct RawSchedule {
    name: String,
    definition: String,
    paused: bool,
    next_run_at: Option<i64>,
    last_run_at: Option<i64>,
    last_task_id: Option<[u8; 16]>,
    created_at: i64,
    updated_at: i64,
}

impl RawSchedule {
    /// Reads a row selected with [`COLUMNS`].
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            name: row.get(0)?,
            definition: row.get(1)?,
            paused: row.get(2)?,
            next_run_at: row.get(3)?,
            last_run_at: row.get(4)?,
            last_task_id: row.get(5)?,
            created_at: row.get(6)?,
            updated_at: row.get(7)?,
        })
    }

    /// The record: the definition parsed, times and ids decoded.
    pub(crate) fn into_record(self) -> StoreResult<ScheduleRecord> {
        let schedule: Schedule = serde_json::from_str(&self.definition).map_err(|e| {
            corrupt(format!(
                "column schedules.definition of {:?} holds a bad definition: {e}",
                self.name
            ))
        })?;
        if schedule.name != self.name {
            return Err(corrupt(format!(
                "schedule {:?} holds the definition of {:?}",
                self.name, schedule.name
            )));
        }
        Ok(ScheduleRecord {
            schedule,
            paused: self.paused,
            next_run_at: self.next_run_at.map(time).transpose()?,
            last_run_at: self.last_run_at.map(time).transpose()?,
            last_task_id: self.last_task_id.map(TaskId::from_bytes),
            created_at: time(self.created_at)?,
            updated_at: time(self.updated_at)?,
        })
    }
}

/// Parses rows read off the writer thread.
pub(crate) fn into_records(raw: Vec<RawSchedule>) -> StoreResult<Vec<ScheduleRecord>> {
    raw.into_iter().map(RawSchedule::into_record).collect()
}

// ---------------------------------------------------------------- put

/// A put, encoded.
#[derive(Debug, Clone)]
pub(crate) struct PutRow {
    name: String,
    cron: String,
    time_zone: String,
    definition: String,
    paused: Option<bool>,
    next_run_at: Option<i64>,
    now: i64,
}

impl PutRow {
    /// Checks the definition (callers validate it already; the store
    /// refuses to keep one that would not parse back) and encodes it.
    pub(crate) fn prepare(params: &SchedulePutParams) -> StoreResult<Self> {
        let s = &params.schedule;
        s.validate().map_err(StoreError::Invalid)?;
        Ok(Self {
            name: s.name.clone(),
            cron: s.cron.clone(),
            time_zone: s.time_zone.clone(),
            definition: json(s)?,
            paused: params.paused,
            next_run_at: params.next_run_at.map(micros),
            now: micros(params.now),
        })
    }
}

/// Inserts a schedule (active unless told otherwise), or replaces the
/// definition of the one with its name: the pause is kept unless given,
/// the next tick while `cron` and `time_zone` stay the same (the
/// assignments read the row as it was), the last run and `created_at`
/// always.
const PUT_SQL: &str = "INSERT INTO schedules (name, cron, time_zone, definition, paused, \
     next_run_at, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, coalesce(?5, 0), ?6, ?7, ?7) \
     ON CONFLICT (name) DO UPDATE SET cron = excluded.cron, time_zone = excluded.time_zone, \
     definition = excluded.definition, paused = coalesce(?5, schedules.paused), \
     next_run_at = CASE WHEN schedules.cron = excluded.cron \
     AND schedules.time_zone = excluded.time_zone THEN schedules.next_run_at \
     ELSE excluded.next_run_at END, updated_at = excluded.updated_at";

/// Stores `row`; returns the schedule as stored.
pub(crate) fn put(ctx: &mut WriteCtx<'_>, row: &PutRow) -> StoreResult<RawSchedule> {
    stmt(ctx.conn, &format!("{PUT_SQL} RETURNING {COLUMNS}"))?
        .query_row(
            rusqlite::params![
                row.name,
                row.cron,
                row.time_zone,
                row.definition,
                row.paused,
                row.next_run_at,
                row.now,
            ],
            RawSchedule::from_row,
        )
        .map_err(map)
}

// ---------------------------------------------------------------- pause

/// A pause or resume, encoded.
#[derive(Debug, Clone)]
pub(crate) struct PauseArgs {
    name: String,
    paused: bool,
    next_run_at: Option<i64>,
    now: i64,
}

impl PauseArgs {
    /// Encodes `params`.
    pub(crate) fn new(params: &SchedulePauseParams) -> Self {
        Self {
            name: params.name.clone(),
            paused: params.paused,
            next_run_at: params.next_run_at.map(micros),
            now: micros(params.now),
        }
    }
}

/// Pauses (keeping the next tick) or resumes (setting the given one) a
/// schedule; `None` when there is none with the name.
pub(crate) fn pause(ctx: &mut WriteCtx<'_>, a: &PauseArgs) -> StoreResult<Option<RawSchedule>> {
    stmt(
        ctx.conn,
        &format!(
            "UPDATE schedules SET paused = ?2, \
             next_run_at = CASE WHEN ?2 THEN next_run_at ELSE ?3 END, updated_at = ?4 \
             WHERE name = ?1 RETURNING {COLUMNS}"
        ),
    )?
    .query_row(
        rusqlite::params![a.name, a.paused, a.next_run_at, a.now],
        RawSchedule::from_row,
    )
    .optional()
    .map_err(map)
}

// ---------------------------------------------------------------- delete

/// Deletes a schedule (never a task); false when there was none.
pub(crate) fn delete(ctx: &mut WriteCtx<'_>, name: &str) -> StoreResult<bool> {
    Ok(exec(ctx.conn, "DELETE FROM schedules WHERE name = ?1", &[&name])? > 0)
}

// ---------------------------------------------------------------- fire

/// A fire, encoded: the tick's task already checked and encoded by the
/// checks of `task_insert_many`.
#[derive(Debug, Clone)]
pub(crate) struct FireArgs {
    name: String,
    expected: i64,
    next_run_at: Option<i64>,
    task: Option<NewRow>,
    now: i64,
}

impl FireArgs {
    /// Encodes `params`, refusing a task `task_insert_many` would refuse
    /// (before anything is written).
    pub(crate) fn prepare(params: &ScheduleFireParams) -> StoreResult<Self> {
        let task = match &params.task {
            None => None,
            Some(task) => {
                let (rows, _) = crate::idempotency::prepare_insert(&TaskInsertParams {
                    tasks: vec![task.clone()],
                    now: params.now,
                })?;
                rows.into_iter().next()
            }
        };
        Ok(Self {
            name: params.name.clone(),
            expected: micros(params.expected),
            next_run_at: params.next_run_at.map(micros),
            task,
            now: micros(params.now),
        })
    }

    /// The writer's weight of the command.
    pub(crate) fn weight(&self) -> usize {
        1 + usize::from(self.task.is_some())
    }
}

/// The compare-and-set of a fire: moves the next tick of an active
/// schedule still at `?2`, recording the tick as the last run when a task
/// (`?5`, its id) is given.
const FIRE_SQL: &str = "UPDATE schedules SET next_run_at = ?3, updated_at = ?4, \
     last_run_at = CASE WHEN ?5 IS NULL THEN last_run_at ELSE ?2 END, \
     last_task_id = coalesce(?5, last_task_id) \
     WHERE name = ?1 AND paused = 0 AND next_run_at = ?2";

/// Handles one tick: the compare-and-set, then (when it won and a task is
/// given) the task's insert, in this command's transaction.
pub(crate) fn fire(ctx: &mut WriteCtx<'_>, a: &FireArgs) -> StoreResult<ScheduleFired> {
    let given = a.task.as_ref().map(|row| row.id);
    let moved = exec(
        ctx.conn,
        FIRE_SQL,
        &[&a.name, &a.expected, &a.next_run_at, &a.now, &given],
    )?;
    if moved == 0 {
        return Ok(ScheduleFired::Lost);
    }
    let Some(row) = &a.task else {
        return Ok(ScheduleFired::Fired { task: None });
    };
    let enqueued = flow::insert_rows(ctx, std::slice::from_ref(row), a.now)?;
    let Some(id) = enqueued.first().map(|e| e.id) else {
        return Err(StoreError::backend(crate::error::Message(
            "internal error: the insert of a schedule's task answered nothing".to_owned(),
        )));
    };
    if *id.as_bytes() != row.id {
        // A unique key kept (or merged into) the task holding it: that is
        // the tick's task.
        exec(
            ctx.conn,
            "UPDATE schedules SET last_task_id = ?2 WHERE name = ?1",
            &[&a.name, id.as_bytes()],
        )?;
    }
    Ok(ScheduleFired::Fired { task: Some(id) })
}

// ---------------------------------------------------------------- reads

/// The schedule named `name`, or `None`.
pub(crate) fn get(conn: &Connection, name: &str) -> StoreResult<Option<RawSchedule>> {
    stmt(
        conn,
        &format!("SELECT {COLUMNS} FROM schedules WHERE name = ?1"),
    )?
    .query_row([name], RawSchedule::from_row)
    .optional()
    .map_err(map)
}

/// Every schedule, by name.
pub(crate) fn list(conn: &Connection) -> StoreResult<Vec<RawSchedule>> {
    let mut s = stmt(
        conn,
        &format!("SELECT {COLUMNS} FROM schedules ORDER BY name"),
    )?;
    let rows = s.query_map([], RawSchedule::from_row).map_err(map)?;
    rows.collect::<rusqlite::Result<_>>().map_err(map)
}

/// Up to `limit` active schedules whose next tick is at or before `now`,
/// earliest first (the `schedules_due` index gives the order).
pub(crate) fn due(conn: &Connection, now: i64, limit: u32) -> StoreResult<Vec<RawSchedule>> {
    let mut s = stmt(
        conn,
        &format!(
            "SELECT {COLUMNS} FROM schedules \
             WHERE paused = 0 AND next_run_at IS NOT NULL AND next_run_at <= ?1 \
             ORDER BY next_run_at, name LIMIT ?2 + 0"
        ),
    )?;
    let rows = s
        .query_map(
            rusqlite::params![now, i64::from(limit)],
            RawSchedule::from_row,
        )
        .map_err(map)?;
    rows.collect::<rusqlite::Result<_>>().map_err(map)
}
