//! The write commands, each run on the writer thread inside a group-commit
//! transaction (see [`crate::writer`]). They take arguments already
//! validated and encoded on the caller's thread, check every status change
//! against [`Status::can_become`], record the notifications their change
//! produces, and return rows still unparsed ([`RawTask`]) so JSON parsing
//! happens off the writer thread.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use offload_store::{EventKind, StoreError, StoreResult};
use offload_types::{AttemptOutcome, Status, TaskId};
use rusqlite::types::Value;
use rusqlite::{CachedStatement, Connection, OptionalExtension, ToSql};

use crate::codec::{
    ATTEMPT_COLUMNS, CLAIM_COLUMNS, ClaimedAs, ENDED_ATTEMPT_COLUMNS, ImportRow, Lease, NewRow,
    RawClaimed, RawTask, TASK_COLUMNS, id_list, json, micros,
};
use crate::deps;
use crate::error::map;
use crate::events::{self, ForRow, Known, NewEvent};
use crate::read::Where;
use crate::writer::WriteCtx;

/// The cached statement of `sql`.
pub(crate) fn stmt<'c>(conn: &'c Connection, sql: &str) -> StoreResult<CachedStatement<'c>> {
    conn.prepare_cached(sql).map_err(map)
}

/// Binds `values` to `?1..` and runs the statement.
pub(crate) fn exec(conn: &Connection, sql: &str, values: &[&dyn ToSql]) -> StoreResult<usize> {
    stmt(conn, sql)?.execute(values).map_err(map)
}

fn query_task(conn: &Connection, sql: &str, values: &[&dyn ToSql]) -> StoreResult<RawTask> {
    let mut s = stmt(conn, sql)?;
    let mut rows = s.query(values).map_err(map)?;
    match rows.next().map_err(map)? {
        Some(row) => RawTask::from_row(row).map_err(map),
        None => Err(StoreError::Unavailable(
            "the task changed under the update; try again".to_owned(),
        )),
    }
}

/// What the write commands check of a task before changing it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Current {
    pub(crate) status: Status,
    pub(crate) attempt: i64,
    pub(crate) rid: i64,
    /// An edge to the task was stored: its end settles its dependents.
    pub(crate) has_dependents: bool,
}

/// The status, attempt and row of one task, or `None`.
pub(crate) fn status_of(conn: &Connection, id: [u8; 16]) -> StoreResult<Option<Current>> {
    let row: Option<(String, i64, i64, bool)> = stmt(
        conn,
        "SELECT status, attempt, rid, has_dependents FROM tasks WHERE id = ?1",
    )?
    .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
    .optional()
    .map_err(map)?;
    row.map(|(s, attempt, rid, has_dependents)| {
        s.parse::<Status>()
            .map(|status| Current {
                status,
                attempt,
                rid,
                has_dependents,
            })
            .map_err(|_| crate::error::corrupt(format!("column status holds {s:?}")))
    })
    .transpose()
}

/// Refuses a change the lifecycle does not allow.
pub(crate) fn check(id: TaskId, from: Status, to: Status) -> StoreResult<()> {
    if from.can_become(to) {
        Ok(())
    } else {
        Err(StoreError::InvalidTransition { id, from, to })
    }
}

// ---------------------------------------------------------------- insert

/// Rows per multi-row `INSERT`; larger batches are cut into chunks of
/// these sizes so only a few statement shapes are ever prepared. (Measured:
/// multi-row statements cost the writer about a fifth less than a cached
/// one-row statement run in a loop.)
const INSERT_CHUNKS: [usize; 3] = [32, 8, 1];
const INSERT_PARAMS_PER_ROW: usize = 14;

fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO tasks (id, name, queue, input, status, priority, max_attempts, run_at, \
         timeout_ms, retry, tags, metadata, webhook, fairness_key, created_at, updated_at) VALUES ",
    );
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        let base = 2 + r * INSERT_PARAMS_PER_ROW;
        sql.push('(');
        for p in 0..INSERT_PARAMS_PER_ROW {
            sql.push_str(&format!("?{}, ", base + p));
        }
        sql.push_str("?1, ?1)");
    }
    sql
}

fn bind_row(s: &mut CachedStatement<'_>, base: usize, row: &NewRow) -> rusqlite::Result<()> {
    s.raw_bind_parameter(base, row.id)?;
    s.raw_bind_parameter(base + 1, &row.name)?;
    s.raw_bind_parameter(base + 2, &row.queue)?;
    s.raw_bind_parameter(base + 3, &row.input)?;
    s.raw_bind_parameter(base + 4, row.status)?;
    s.raw_bind_parameter(base + 5, row.priority)?;
    s.raw_bind_parameter(base + 6, row.max_attempts)?;
    s.raw_bind_parameter(base + 7, row.run_at)?;
    s.raw_bind_parameter(base + 8, row.timeout_ms)?;
    s.raw_bind_parameter(base + 9, &row.retry)?;
    s.raw_bind_parameter(base + 10, &row.tags)?;
    s.raw_bind_parameter(base + 11, &row.metadata)?;
    s.raw_bind_parameter(base + 12, &row.webhook)?;
    s.raw_bind_parameter(base + 13, &row.fairness_key)?;
    Ok(())
}

/// The multi-row `INSERT` of each size in [`INSERT_CHUNKS`].
static INSERT_SQL: LazyLock<[String; 3]> = LazyLock::new(|| INSERT_CHUNKS.map(insert_sql));

fn insert_chunk(conn: &Connection, chunk: &[NewRow], now: i64) -> StoreResult<()> {
    let sql = match INSERT_CHUNKS.iter().position(|&size| size == chunk.len()) {
        Some(i) => INSERT_SQL[i].as_str(),
        None => {
            return Err(StoreError::backend(crate::error::Message(format!(
                "internal error: no insert statement for {} rows",
                chunk.len()
            ))));
        }
    };
    let mut s = stmt(conn, sql)?;
    let run = (|| {
        s.raw_bind_parameter(1, now)?;
        for (r, row) in chunk.iter().enumerate() {
            bind_row(&mut s, 2 + r * INSERT_PARAMS_PER_ROW, row)?;
        }
        s.raw_execute()
    })();
    match run {
        Ok(_) => Ok(()),
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) => {
            // The chunk's statement inserted nothing: an id of the chunk
            // that exists already is the culprit.
            for row in chunk {
                if status_of(conn, row.id)?.is_some() {
                    return Err(StoreError::Conflict(format!(
                        "task {} already exists; nothing was inserted",
                        TaskId::from_bytes(row.id)
                    )));
                }
            }
            Err(map(e))
        }
        Err(e) => Err(map(e)),
    }
}

/// Inserts validated rows, all or nothing (a failing command's writes are
/// rolled back, see [`crate::writer`]).
pub(crate) fn insert(ctx: &mut WriteCtx<'_>, rows: &[NewRow], now: i64) -> StoreResult<()> {
    let mut rest = rows;
    for size in INSERT_CHUNKS {
        while rest.len() >= size {
            let (chunk, tail) = rest.split_at(size);
            insert_chunk(ctx.conn, chunk, now)?;
            rest = tail;
        }
    }
    let data = rows
        .iter()
        .map(|row| events::created_data(row.status))
        .collect::<StoreResult<Vec<_>>>()?;
    let created: Vec<Known<'_>> = rows
        .iter()
        .zip(&data)
        .map(|(row, data)| Known {
            kind: EventKind::Created,
            task_id: row.id,
            name: &row.name,
            queue: &row.queue,
            attempt: 0,
            data,
        })
        .collect();
    events::append_known(ctx.conn, &created, now)?;
    for row in rows {
        ctx.notes.available(&row.queue);
    }
    Ok(())
}

// ---------------------------------------------------------------- claim

/// A claim, encoded.
#[derive(Debug, Clone)]
pub(crate) struct ClaimArgs {
    /// Only these names (`None`: any name).
    pub(crate) names: Option<Vec<String>>,
    pub(crate) limit: u32,
    /// What the claim sets on every task it takes (queue, worker, lease
    /// expiry, start).
    pub(crate) set: ClaimedAs,
}

const PROMOTE_SQL: &str = "UPDATE tasks SET status = 'pending', updated_at = ?2 \
     WHERE status = 'scheduled' AND queue = ?1 AND run_at <= ?2";

/// Writes out the ended attempt the task row `rid` holds, if any, as its
/// `task_attempts` row ([`ENDED_ATTEMPT_COLUMNS`]), before something
/// overwrites its fields (see the schema).
pub(crate) fn write_out_ended(conn: &Connection, rid: i64) -> StoreResult<()> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "INSERT INTO task_attempts (task, seq, {ATTEMPT_COLUMNS}) \
             SELECT rid, history, {ENDED_ATTEMPT_COLUMNS} FROM tasks \
             WHERE rid = ?1 AND ended_outcome IS NOT NULL"
        )
    });
    if exec(conn, &SQL, &[&rid])? > 0 {
        exec(
            conn,
            "UPDATE tasks SET history = history + 1, ended_outcome = NULL, ended_at = NULL \
             WHERE rid = ?1",
            &[&rid],
        )?;
    }
    Ok(())
}

/// The claim's read: up to `?2` pending tasks of queue `?1` in claim
/// order, of the `names` task names bound from `?3` on (`None`: any name,
/// and one prepared statement per name count): what the caller needs of
/// them ([`CLAIM_COLUMNS`]) and whether each holds an ended attempt to
/// write out first (a retry). The pending index yields them in order and
/// checks the names without reading rows it skips.
///
/// Every `LIMIT` in this crate is written `LIMIT ? + 0`: SQLite's planner
/// peeks at a plain bound `LIMIT ?` and then re-prepares the statement on
/// every execution, which costs more than the query itself.
pub(crate) fn claim_sql(names: Option<usize>) -> String {
    let names = match names {
        None => String::new(),
        Some(n) => {
            let marks: Vec<String> = (0..n).map(|i| format!("?{}", 3 + i)).collect();
            format!(" AND name IN ({})", marks.join(", "))
        }
    };
    format!(
        "SELECT {CLAIM_COLUMNS}, ended_outcome IS NOT NULL FROM tasks \
         WHERE status = 'pending' AND queue = ?1{names} \
         ORDER BY priority DESC, run_at, id LIMIT ?2 + 0"
    )
}

/// The column of [`claim_sql`] that says whether the task holds an ended
/// attempt.
pub(crate) const CLAIM_ENDED: usize = 23;

/// The claim's write, per task: its lease (`?1` rid, `?2` worker, `?3`
/// token, `?4` lease expiry, `?5` now). The running attempt needs no row
/// of its own (see the schema). One cached statement per task costs the
/// writer less than one set-based statement whose `RETURNING` rows SQLite
/// buffers in a temporary table.
const CLAIM_TAKE_SQL: &str = "UPDATE tasks SET status = 'running', attempt = attempt + 1, \
     worker_id = ?2, lease_token = ?3, lease_expires_at = ?4, started_at = ?5, updated_at = ?5, \
     progress = NULL WHERE rid = ?1";

/// [`claim_sql`] for `names` task names, built once per name count on
/// the writer thread (the text is also the statement cache's key).
fn claim_statement(names: Option<usize>) -> Rc<str> {
    thread_local! {
        static BUILT: RefCell<HashMap<Option<usize>, Rc<str>>> = RefCell::new(HashMap::new());
    }
    BUILT.with(|built| {
        built
            .borrow_mut()
            .entry(names)
            .or_insert_with(|| Rc::from(claim_sql(names)))
            .clone()
    })
}

/// Promotes due scheduled tasks, then leases up to `limit` pending ones:
/// reads them, then leases each with a fresh random token, first writing
/// out the ended attempt a retried task holds. When a stored limit
/// concerns the claim, or the queue may hold pending tasks with a
/// fairness key (both known from the store's cache, see
/// [`crate::limits`]), [`crate::fairness::select`] chooses the tasks
/// instead of the plain read.
pub(crate) fn claim(ctx: &mut WriteCtx<'_>, a: &ClaimArgs) -> StoreResult<Vec<RawClaimed>> {
    let conn = ctx.conn;
    let set = &a.set;
    let promoted = exec(conn, PROMOTE_SQL, &[&set.queue, &set.now])?;
    if a.limit == 0 {
        if promoted > 0 {
            ctx.notes.available(&set.queue);
        }
        return Ok(Vec::new());
    }
    let limits = ctx.limits.limits(conn)?;
    let concerned = crate::limits::concerned(&limits, &set.queue, a.names.as_deref());
    let fair = ctx.limits.may_be_fair(conn, &set.queue)?;
    if concerned.is_some() || fair {
        let tasks = crate::fairness::select(conn, ctx.limits, a, concerned, fair)?;
        return take(ctx, a, tasks, promoted);
    }
    let limit = i64::from(a.limit);
    let names: &[String] = a.names.as_deref().unwrap_or_default();
    let sql = claim_statement(a.names.as_ref().map(Vec::len));
    let mut values: Vec<&dyn ToSql> = Vec::with_capacity(2 + names.len());
    values.extend([&set.queue as &dyn ToSql, &limit]);
    values.extend(names.iter().map(|n| n as &dyn ToSql));
    let tasks: Vec<(RawClaimed, bool)> = {
        let mut s = stmt(conn, &sql)?;
        let rows = s
            .query_map(values.as_slice(), |r| {
                Ok((RawClaimed::from_row(r)?, r.get::<_, bool>(CLAIM_ENDED)?))
            })
            .map_err(map)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map)?
    };
    take(ctx, a, tasks, promoted)
}

/// Leases the chosen `tasks` of claim `a` and writes their `task.started`
/// events; `promoted` scheduled tasks became due in the claim.
fn take(
    ctx: &mut WriteCtx<'_>,
    a: &ClaimArgs,
    mut tasks: Vec<(RawClaimed, bool)>,
    promoted: usize,
) -> StoreResult<Vec<RawClaimed>> {
    let conn = ctx.conn;
    let set = &a.set;
    let mut take = stmt(conn, CLAIM_TAKE_SQL)?;
    for (task, ended) in &mut tasks {
        if *ended {
            write_out_ended(conn, task.rid())?;
        }
        let token: i64 = rand::random();
        take.execute(rusqlite::params![
            task.rid(),
            set.worker_id,
            token,
            set.lease_expires_at,
            set.now
        ])
        .map_err(map)?;
        task.set_lease_token(token);
    }
    drop(take);
    if !tasks.is_empty() {
        let data = events::started_data(&set.worker_id)?;
        let started: Vec<Known<'_>> = tasks
            .iter()
            .map(|(task, _)| {
                let (task_id, name, attempt) = task.event_fields();
                Known {
                    kind: EventKind::Started,
                    task_id,
                    name,
                    queue: &set.queue,
                    attempt,
                    data: &data,
                }
            })
            .collect();
        events::append_known(conn, &started, set.now)?;
    }
    // More became due than this claim took: wake the other claimers.
    if promoted > 0 && tasks.len() >= a.limit as usize {
        ctx.notes.available(&set.queue);
    }
    Ok(tasks.into_iter().map(|(t, _)| t).collect())
}

// ---------------------------------------------------------------- leases

/// Finds a live lease: whether an abort was asked. The lease's `rid` takes
/// it straight to the row; the row's id and token must match too.
/// (Hot per-row statements avoid `RETURNING`, which makes SQLite build a
/// temporary table for every execution.)
const LIVE_LEASE_SQL: &str = "SELECT abort_requested_at IS NOT NULL FROM tasks \
     WHERE rid = ?1 AND id = ?2 AND lease_token = ?3 AND status = 'running'";

fn live_lease(s: &mut CachedStatement<'_>, l: &Lease) -> StoreResult<Option<bool>> {
    s.query_row(rusqlite::params![l.rid, l.id, l.token], |r| r.get(0))
        .optional()
        .map_err(map)
}

/// Renews leases; per lease `Some(abort_requested)` when live.
pub(crate) fn heartbeat(
    ctx: &mut WriteCtx<'_>,
    leases: &[Lease],
    expires_at: i64,
) -> StoreResult<Vec<Option<bool>>> {
    let mut find = stmt(ctx.conn, LIVE_LEASE_SQL)?;
    let mut renew = stmt(
        ctx.conn,
        "UPDATE tasks SET lease_expires_at = ?2 WHERE rid = ?1",
    )?;
    let mut out = Vec::with_capacity(leases.len());
    for l in leases {
        let live = live_lease(&mut find, l)?;
        if live.is_some() {
            renew
                .execute(rusqlite::params![l.rid, expires_at])
                .map_err(map)?;
        }
        out.push(live);
    }
    Ok(out)
}

/// Records progress of live leases; per update `Some(abort_requested)`
/// when live.
pub(crate) fn progress(
    ctx: &mut WriteCtx<'_>,
    updates: &[(Lease, String)],
    now: i64,
) -> StoreResult<Vec<Option<bool>>> {
    let mut find = stmt(ctx.conn, LIVE_LEASE_SQL)?;
    let mut write = stmt(
        ctx.conn,
        "UPDATE tasks SET progress = ?2, updated_at = ?3 WHERE rid = ?1",
    )?;
    let mut appended = Vec::with_capacity(updates.len());
    let mut out = Vec::with_capacity(updates.len());
    for (l, p) in updates {
        let live = live_lease(&mut find, l)?;
        if live.is_some() {
            write
                .execute(rusqlite::params![l.rid, p, now])
                .map_err(map)?;
            appended.push(ForRow {
                rid: l.rid,
                kind: EventKind::Progress,
                data: p,
            });
            ctx.notes.changed(TaskId::from_bytes(l.id));
        }
        out.push(live);
    }
    drop((find, write));
    events::append_for_rows(ctx.conn, &appended, now)?;
    Ok(out)
}

/// How one attempt ends, encoded: the task's new state and the attempt
/// row's outcome.
#[derive(Debug, Clone)]
pub(crate) struct EndRow {
    pub(crate) lease: Lease,
    pub(crate) status: Status,
    /// New output (`None`: keep).
    pub(crate) output: Option<String>,
    /// Whether to overwrite `error` (with `error`, which may be `None`).
    pub(crate) set_error: bool,
    pub(crate) error: Option<String>,
    /// New `run_at` (`None`: keep).
    pub(crate) run_at: Option<i64>,
    /// Give the attempt back (snooze, release).
    pub(crate) uncount: bool,
    pub(crate) outcome: AttemptOutcome,
    /// The event an accepted end appends (`None`: none).
    pub(crate) event: Option<NewEvent>,
}

/// Ends a live attempt (`?1` rid, `?2` id, `?3` token: the fencing check)
/// in one statement: the task's new state, the lease cleared, and the
/// attempt's end kept in the row (`ended_at`, `ended_outcome`) instead of
/// a `task_attempts` row (see the schema). The claim that started the
/// attempt wrote out any earlier ended attempt, so the row holds none.
const END_SQL: &str = "UPDATE tasks SET status = ?4, output = coalesce(?5, output), \
     error = CASE WHEN ?6 THEN ?7 ELSE error END, run_at = coalesce(?8, run_at), \
     attempt = attempt - ?9, finished_at = ?10, lease_token = NULL, lease_expires_at = NULL, \
     updated_at = ?11, ended_at = ?11, ended_outcome = ?12 \
     WHERE rid = ?1 AND id = ?2 AND lease_token = ?3 AND status = 'running'";

/// [`END_SQL`] for a task without dependents: a terminal end runs this
/// first, so the end of a task nothing depends on stays one statement;
/// when it changes nothing (a task with dependents, or a stale lease),
/// [`END_SQL`] tells the two apart.
static END_LEAF_SQL: LazyLock<String> =
    LazyLock::new(|| format!("{END_SQL} AND has_dependents = 0"));

/// Ends attempts, with the statements prepared once per batch.
struct Ender<'c> {
    conn: &'c Connection,
    end: CachedStatement<'c>,
    end_leaf: CachedStatement<'c>,
}

/// What [`Ender::end`] reports for an accepted item.
struct Ended {
    /// The task's queue when it went back to waiting (not terminal).
    queue: Option<String>,
    /// The task ended terminal and has dependents to settle.
    dependents: bool,
}

impl<'c> Ender<'c> {
    fn new(conn: &'c Connection) -> StoreResult<Self> {
        Ok(Self {
            conn,
            end: stmt(conn, END_SQL)?,
            end_leaf: stmt(conn, &END_LEAF_SQL)?,
        })
    }

    /// Ends one attempt if its lease is live.
    fn end(&mut self, e: &EndRow, now: i64) -> StoreResult<Option<Ended>> {
        let id = TaskId::from_bytes(e.lease.id);
        check(id, Status::Running, e.status)?;
        let l = &e.lease;
        let terminal = e.status.is_terminal();
        let values = rusqlite::params![
            l.rid,
            l.id,
            l.token,
            e.status.as_str(),
            e.output,
            e.set_error,
            e.error,
            e.run_at,
            i64::from(e.uncount),
            terminal.then_some(now),
            now,
            e.outcome.as_str(),
        ];
        let mut dependents = false;
        let mut ended = if terminal {
            self.end_leaf.execute(values).map_err(map)?
        } else {
            0
        };
        if ended == 0 {
            ended = self.end.execute(values).map_err(map)?;
            dependents = terminal && ended > 0;
        }
        if ended == 0 {
            return Ok(None);
        }
        let queue = if terminal {
            None
        } else {
            Some(
                stmt(self.conn, "SELECT queue FROM tasks WHERE rid = ?1")?
                    .query_row([l.rid], |r| r.get(0))
                    .map_err(map)?,
            )
        };
        Ok(Some(Ended { queue, dependents }))
    }
}

/// Records finished attempts; per item `Ok(status)` when accepted, or
/// `Err(current status)` when its lease was not live.
pub(crate) fn finish(
    ctx: &mut WriteCtx<'_>,
    items: &[EndRow],
    now: i64,
) -> StoreResult<Vec<Result<Status, Option<Status>>>> {
    let mut out = Vec::with_capacity(items.len());
    let mut appended = Vec::with_capacity(items.len());
    let mut settle = Vec::new();
    let mut ender = Ender::new(ctx.conn)?;
    for item in items {
        match ender.end(item, now)? {
            Some(ended) => {
                if ended.dependents {
                    settle.push((item.lease.id, Some(item.status)));
                }
                if let Some((kind, data)) = &item.event {
                    appended.push(ForRow {
                        rid: item.lease.rid,
                        kind: *kind,
                        data,
                    });
                }
                let id = TaskId::from_bytes(item.lease.id);
                ctx.notes.changed(id);
                if let Some(queue) = &ended.queue {
                    ctx.notes.available(queue);
                }
                out.push(Ok(item.status));
            }
            None => out.push(Err(status_of(ctx.conn, item.lease.id)?.map(|c| c.status))),
        }
    }
    drop(ender);
    events::append_for_rows(ctx.conn, &appended, now)?;
    if !settle.is_empty() {
        deps::settle(ctx, &settle, now)?;
    }
    Ok(out)
}

/// Puts tasks whose lease expired before `now` back to work.
pub(crate) fn rescue(
    ctx: &mut WriteCtx<'_>,
    now: DateTime<Utc>,
    limit: u32,
) -> StoreResult<Vec<(TaskId, Status)>> {
    let now_us = micros(now);
    type Expired = (i64, [u8; 16], i64, i64, i64, bool, i64);
    let expired: Vec<Expired> = {
        let mut s = stmt(
            ctx.conn,
            "SELECT rid, id, lease_token, attempt, max_attempts, abort_requested_at IS NOT NULL, \
             run_at FROM tasks WHERE status = 'running' AND lease_expires_at < ?1 \
             ORDER BY lease_expires_at LIMIT ?2 + 0",
        )?;
        let rows = s
            .query_map(rusqlite::params![now_us, i64::from(limit)], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })
            .map_err(map)?;
        rows.collect::<rusqlite::Result<_>>().map_err(map)?
    };
    let mut out = Vec::with_capacity(expired.len());
    let mut ends = Vec::with_capacity(expired.len());
    let mut settle = Vec::new();
    let mut ender = Ender::new(ctx.conn)?;
    for (rid, id, token, attempt, max_attempts, abort_requested, run_at) in expired {
        let (status, record) = offload_store::rescue_outcome(
            u32::try_from(attempt).unwrap_or(0),
            u32::try_from(max_attempts).unwrap_or(0),
            abort_requested,
            now,
        );
        let end = EndRow {
            lease: Lease { id, rid, token },
            status,
            output: None,
            set_error: true,
            error: Some(json(&record)?),
            run_at: None,
            uncount: false,
            outcome: AttemptOutcome::LeaseExpired,
            event: Some(events::rescue_event(
                status,
                &record,
                crate::codec::time(run_at)?,
            )?),
        };
        if let Some(ended) = ender.end(&end, now_us)? {
            if ended.dependents {
                settle.push((id, Some(status)));
            }
            let task = TaskId::from_bytes(id);
            ctx.notes.changed(task);
            if let Some(queue) = &ended.queue {
                ctx.notes.available(queue);
            }
            out.push((task, status));
            ends.push(end);
        }
    }
    drop(ender);
    let appended: Vec<ForRow<'_>> = ends
        .iter()
        .filter_map(|e| {
            e.event.as_ref().map(|(kind, data)| ForRow {
                rid: e.lease.rid,
                kind: *kind,
                data,
            })
        })
        .collect();
    events::append_for_rows(ctx.conn, &appended, now_us)?;
    if !settle.is_empty() {
        deps::settle(ctx, &settle, now_us)?;
    }
    Ok(out)
}

// ---------------------------------------------------------------- manage

fn returning(sql: &str) -> String {
    format!("{sql} RETURNING {TASK_COLUMNS}")
}

fn existing(conn: &Connection, id: TaskId) -> StoreResult<Current> {
    status_of(conn, *id.as_bytes())?.ok_or(StoreError::NotFound(id))
}

/// Aborts a waiting task at once, or asks a running one to stop.
pub(crate) fn abort(
    ctx: &mut WriteCtx<'_>,
    id: TaskId,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> StoreResult<RawTask> {
    let conn = ctx.conn;
    let Current {
        status,
        attempt,
        rid,
        has_dependents,
    } = existing(conn, id)?;
    check(id, status, Status::Aborted)?;
    let now_us = micros(now);
    let key = *id.as_bytes();
    if status == Status::Running {
        let task = query_task(
            conn,
            &returning(
                "UPDATE tasks SET abort_requested_at = coalesce(abort_requested_at, ?2), \
                 updated_at = ?2 WHERE id = ?1",
            ),
            &[&key, &now_us],
        )?;
        ctx.notes.abort_requested(id);
        ctx.notes.changed(id);
        return Ok(task);
    }
    // The task's error is about to change: the ended attempt the row may
    // hold still needs it.
    write_out_ended(conn, rid)?;
    let record = offload_store::abort_record(reason, u32::try_from(attempt).unwrap_or(0), now);
    let data = events::error_data(&record)?;
    let record = json(&record)?;
    let task = query_task(
        conn,
        &returning(
            "UPDATE tasks SET status = 'aborted', error = ?2, finished_at = ?3, updated_at = ?3 \
             WHERE id = ?1",
        ),
        &[&key, &record, &now_us],
    )?;
    events::append_for_rows(
        conn,
        &[ForRow {
            rid,
            kind: EventKind::Aborted,
            data: &data,
        }],
        now_us,
    )?;
    ctx.notes.changed(id);
    if has_dependents {
        deps::settle(ctx, &[(key, Some(Status::Aborted))], now_us)?;
    }
    Ok(task)
}

/// Runs a failed or aborted task again: `pending`, or `blocked` while
/// some of its dependencies are unmet (refused while one can never be).
pub(crate) fn retry(ctx: &mut WriteCtx<'_>, id: TaskId, now: i64) -> StoreResult<RawTask> {
    let conn = ctx.conn;
    let current = existing(conn, id)?;
    let status = current.status;
    if !matches!(status, Status::Failed | Status::Aborted) {
        return Err(StoreError::InvalidTransition {
            id,
            from: status,
            to: Status::Pending,
        });
    }
    let unmet = deps::recount(conn, id)?;
    let target = if unmet > 0 {
        Status::Blocked
    } else {
        Status::Pending
    };
    check(id, status, target)?;
    let task = query_task(
        conn,
        &returning(
            "UPDATE tasks SET status = ?3, deps_waiting = ?4, run_at = ?2, finished_at = NULL, \
             abort_requested_at = NULL, max_attempts = max(max_attempts, attempt + 1), \
             updated_at = ?2 WHERE id = ?1",
        ),
        &[id.as_bytes(), &now, &target.as_str(), &unmet],
    )?;
    if current.has_dependents {
        deps::reopen(conn, *id.as_bytes())?;
    }
    if target == Status::Pending {
        ctx.notes.available(&task_queue(conn, id)?);
    }
    ctx.notes.changed(id);
    Ok(task)
}

fn task_queue(conn: &Connection, id: TaskId) -> StoreResult<String> {
    stmt(conn, "SELECT queue FROM tasks WHERE id = ?1")?
        .query_row([id.as_bytes()], |r| r.get(0))
        .map_err(map)
}

/// An update, encoded and validated.
#[derive(Debug, Clone)]
pub(crate) struct UpdateArgs {
    pub(crate) id: TaskId,
    pub(crate) priority: Option<i64>,
    pub(crate) run_at: Option<i64>,
    pub(crate) input: Option<String>,
    pub(crate) max_attempts: Option<i64>,
    pub(crate) now: i64,
}

/// Changes a task that has not started.
pub(crate) fn update(ctx: &mut WriteCtx<'_>, a: &UpdateArgs) -> StoreResult<RawTask> {
    let conn = ctx.conn;
    let status = existing(conn, a.id)?.status;
    if !status.is_waiting() {
        return Err(StoreError::Conflict(format!(
            "task {} is {status}; only scheduled, blocked or pending tasks can be updated",
            a.id
        )));
    }
    let target = match (status, a.run_at) {
        (Status::Scheduled | Status::Pending, Some(run_at)) if run_at > a.now => Status::Scheduled,
        (Status::Scheduled | Status::Pending, Some(_)) => Status::Pending,
        _ => status,
    };
    if target != status {
        check(a.id, status, target)?;
    }
    let task = query_task(
        conn,
        &returning(
            "UPDATE tasks SET priority = coalesce(?2, priority), run_at = coalesce(?3, run_at), \
             input = coalesce(?4, input), max_attempts = coalesce(?5, max_attempts), \
             status = ?6, updated_at = ?7 WHERE id = ?1",
        ),
        &[
            a.id.as_bytes(),
            &a.priority,
            &a.run_at,
            &a.input,
            &a.max_attempts,
            &target.as_str(),
            &a.now,
        ],
    )?;
    ctx.notes.changed(a.id);
    if matches!(target, Status::Pending | Status::Scheduled) {
        ctx.notes.available(&task_queue(conn, a.id)?);
    }
    Ok(task)
}

/// Deletes the task of row `rid` with its history.
fn delete_rows(conn: &Connection, rid: i64) -> StoreResult<()> {
    exec(conn, "DELETE FROM task_attempts WHERE task = ?1", &[&rid])?;
    exec(conn, "DELETE FROM tasks WHERE rid = ?1", &[&rid])?;
    Ok(())
}

/// Deletes one task that is not running, with its history and edges. A
/// waiting task's dependents are settled first, as if it had been
/// aborted except that their error says it was deleted.
pub(crate) fn delete(ctx: &mut WriteCtx<'_>, id: TaskId, now: i64) -> StoreResult<()> {
    let Current {
        status,
        rid,
        has_dependents,
        ..
    } = existing(ctx.conn, id)?;
    if status == Status::Running {
        return Err(StoreError::Conflict(format!(
            "task {id} is running; abort it first"
        )));
    }
    let key = *id.as_bytes();
    if has_dependents && status.is_waiting() {
        deps::settle(ctx, &[(key, None)], now)?;
    }
    deps::forget(ctx.conn, key, has_dependents, true)?;
    delete_rows(ctx.conn, rid)?;
    ctx.notes.changed(id);
    Ok(())
}

/// Deletes up to `limit` terminal tasks matching `w`; returns how many.
pub(crate) fn purge_batch(ctx: &mut WriteCtx<'_>, w: &Where, limit: u32) -> StoreResult<u64> {
    let sql = format!(
        "SELECT rid, id, has_dependents, depends_on IS NOT NULL OR \"after\" IS NOT NULL \
         FROM tasks{} LIMIT ? + 0",
        w.sql()
    );
    let rows: Vec<(i64, [u8; 16], bool, bool)> = {
        let mut s = stmt(ctx.conn, &sql)?;
        let rows = s
            .query_map(
                rusqlite::params_from_iter(w.params(&[Value::Integer(i64::from(limit))])),
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .map_err(map)?;
        rows.collect::<rusqlite::Result<_>>().map_err(map)?
    };
    for (rid, id, as_dep, as_dependent) in &rows {
        deps::forget(ctx.conn, *id, *as_dep, *as_dependent)?;
        delete_rows(ctx.conn, *rid)?;
    }
    if rows.len() > 128 {
        ctx.notes.changed_all();
    } else {
        for (_, id, _, _) in &rows {
            ctx.notes.changed(TaskId::from_bytes(*id));
        }
    }
    Ok(rows.len() as u64)
}

// ---------------------------------------------------------------- copy

/// The task row of an import, every column as given (`?24`: the running
/// attempt's lease token, NULL for a task that is not running).
const IMPORT_TASK_SQL: &str = "INSERT INTO tasks (id, name, queue, input, status, output, error, \
     progress, priority, attempt, max_attempts, run_at, timeout_ms, retry, tags, metadata, \
     abort_requested_at, worker_id, lease_expires_at, created_at, started_at, finished_at, \
     updated_at, lease_token, history, webhook, unique_key, depends_on, \"after\", group_id, \
     fairness_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
     ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31)";

/// One ended attempt of an imported task.
const IMPORT_ATTEMPT_SQL: &str = "INSERT INTO task_attempts (task, seq, attempt, worker_id, \
     started_at, finished_at, outcome, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// Writes imported tasks as they are, skipping ids present already;
/// returns how many were written and skipped. The history goes to
/// `task_attempts` whole (the row holds no ended attempt), so the store's
/// later writes (claims, aborts) find the row as they expect.
pub(crate) fn import(ctx: &mut WriteCtx<'_>, rows: &[ImportRow]) -> StoreResult<(u64, u64)> {
    let conn = ctx.conn;
    let (mut inserted, mut skipped) = (0u64, 0u64);
    let mut linked = Vec::new();
    let mut task = stmt(conn, IMPORT_TASK_SQL)?;
    let mut attempt = stmt(conn, IMPORT_ATTEMPT_SQL)?;
    for r in rows {
        if status_of(conn, r.id)?.is_some() {
            skipped += 1;
            continue;
        }
        // A fresh token: whoever held the lease on the source cannot
        // reach this store.
        let token = (r.status == Status::Running).then(rand::random::<i64>);
        let history = i64::try_from(r.ended.len()).unwrap_or(i64::MAX);
        task.execute(rusqlite::params![
            r.id,
            r.name,
            r.queue,
            r.input,
            r.status.as_str(),
            r.output,
            r.error,
            r.progress,
            r.priority,
            r.attempt,
            r.max_attempts,
            r.run_at,
            r.timeout_ms,
            r.retry,
            r.tags,
            r.metadata,
            r.abort_requested_at,
            r.worker_id,
            r.lease_expires_at,
            r.created_at,
            r.started_at,
            r.finished_at,
            r.updated_at,
            token,
            history,
            r.webhook,
            r.unique_key,
            id_list(&r.depends_on)?,
            id_list(&r.after)?,
            r.group_id,
            r.fairness_key,
        ])
        .map_err(map)?;
        let rid = conn.last_insert_rowid();
        for (seq, a) in r.ended.iter().enumerate() {
            attempt
                .execute(rusqlite::params![
                    rid,
                    i64::try_from(seq).unwrap_or(i64::MAX),
                    a.attempt,
                    a.worker_id,
                    a.started_at,
                    a.finished_at,
                    a.outcome,
                    a.error,
                ])
                .map_err(map)?;
        }
        inserted += 1;
        if matches!(r.status, Status::Pending | Status::Scheduled) {
            ctx.notes.available(&r.queue);
        }
        if r.fairness_key.is_some() {
            ctx.limits.set_fair(&r.queue, true);
        }
        if !r.depends_on.is_empty() || !r.after.is_empty() {
            linked.push(r);
        }
    }
    drop((task, attempt));
    // After every row, so an edge to a task later in the import is kept.
    for r in linked {
        deps::import_edges(conn, r.id, &r.depends_on, &r.after)?;
    }
    Ok((inserted, skipped))
}

// ---------------------------------------------------------------- leader

/// Takes or renews leadership of `name` when free, expired or ours.
pub(crate) fn leader_elect(
    ctx: &mut WriteCtx<'_>,
    name: &str,
    holder: &str,
    now: i64,
    expires_at: i64,
) -> StoreResult<bool> {
    let changed = exec(
        ctx.conn,
        "INSERT INTO leaders (name, holder, expires_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
         WHERE leaders.holder = excluded.holder OR leaders.expires_at <= ?4",
        &[&name, &holder, &expires_at, &now],
    )?;
    Ok(changed > 0)
}

/// Gives up leadership of `name` if `holder` has it.
pub(crate) fn leader_resign(ctx: &mut WriteCtx<'_>, name: &str, holder: &str) -> StoreResult<()> {
    exec(
        ctx.conn,
        "DELETE FROM leaders WHERE name = ?1 AND holder = ?2",
        &[&name, &holder],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sql_names_the_outcomes_of_attempts_given_back() {
        for outcome in [AttemptOutcome::Snoozed, AttemptOutcome::Released] {
            let quoted = format!("'{}'", outcome.as_str());
            assert!(ENDED_ATTEMPT_COLUMNS.contains(&quoted), "{quoted}");
        }
    }

    #[test]
    fn the_claim_reads_the_ended_flag_after_the_task_columns() {
        assert_eq!(CLAIM_COLUMNS.split(',').count(), CLAIM_ENDED);
    }

    #[test]
    fn claim_statements_bind_names_after_their_own_parameters() {
        let read = claim_sql(Some(2));
        assert!(read.contains("name IN (?3, ?4)"), "{read}");
        assert!(!claim_sql(None).contains("name IN"));
    }
}
