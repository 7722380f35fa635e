//! Dependencies between tasks: the edges an insert stores (`task_deps`),
//! and what the end of a dependency does to the tasks blocked on it, in
//! the transaction of that end.
//!
//! The invariant kept here: a `blocked` task's `deps_waiting` is the
//! number of its edges not met by its dependencies' current statuses (a
//! `success` edge is met when the dependency succeeded, an `end` edge when
//! it is terminal). An insert and a retry compute it; a dependency
//! reaching a terminal status meets edges ([`settle`]: decrement, unblock
//! at 0, or abort on a failed `success` edge); a dependency retried from
//! `failed` or `aborted` makes its `end` edges unmet again ([`reopen`]).
//! Only tasks with `has_dependents` set ever get here, so a task without
//! dependents pays nothing.

use std::collections::VecDeque;

use offload_store::{
    EdgeKind, EventKind, StoreError, StoreResult, dependency_record, dependency_unmet,
    unblocked_status,
};
use offload_types::{Status, TaskId};
use rusqlite::{Connection, OptionalExtension};

use crate::codec::{json, time};
use crate::error::{corrupt, map};
use crate::events::{self, ForRow};
use crate::write::{check, exec, status_of, stmt, write_out_ended};
use crate::writer::WriteCtx;

/// Whether an edge of `kind` to a dependency in `status` still has to be
/// met (a `success` edge to a failed dependency counts as unmet).
pub(crate) fn edge_unmet(kind: EdgeKind, status: Status) -> bool {
    match kind {
        EdgeKind::Success => status != Status::Success,
        EdgeKind::End => !status.is_terminal(),
    }
}

/// The edges of a task: its `depends_on` as `success` edges, then its
/// `after` as `end` edges (an id in both is one `success` edge).
pub(crate) fn edges_of<'a>(
    depends_on: &'a [TaskId],
    after: &'a [TaskId],
) -> impl Iterator<Item = (TaskId, EdgeKind)> + 'a {
    depends_on.iter().map(|id| (*id, EdgeKind::Success)).chain(
        after
            .iter()
            .filter(|id| !depends_on.contains(id))
            .map(|id| (*id, EdgeKind::End)),
    )
}

/// The checked edges of a task about to be inserted.
#[derive(Debug, Default)]
pub(crate) struct NewEdges {
    edges: Vec<(TaskId, EdgeKind)>,
    /// How many are unmet (the task starts `blocked` when > 0).
    pub(crate) unmet: i64,
}

/// Checks the edges of a task being inserted against the stored tasks
/// (which include the batch's earlier tasks): each dependency must exist
/// and be able to meet its edge ([`dependency_unmet`]; `Invalid` otherwise).
pub(crate) fn check_new(
    conn: &Connection,
    depends_on: &[TaskId],
    after: &[TaskId],
) -> StoreResult<NewEdges> {
    let mut out = NewEdges::default();
    for (dep, kind) in edges_of(depends_on, after) {
        let status = status_of(conn, *dep.as_bytes())?.map(|c| c.status);
        if dependency_unmet(dep, kind, status).map_err(StoreError::Invalid)? {
            out.unmet += 1;
        }
        out.edges.push((dep, kind));
    }
    Ok(out)
}

/// Stores the edges of the task `task` and marks each dependency as
/// having dependents.
pub(crate) fn store_edges(conn: &Connection, task: [u8; 16], edges: &NewEdges) -> StoreResult<()> {
    for (dep, kind) in &edges.edges {
        link(conn, *dep.as_bytes(), task, *kind)?;
    }
    Ok(())
}

fn link(conn: &Connection, dep: [u8; 16], task: [u8; 16], kind: EdgeKind) -> StoreResult<()> {
    exec(
        conn,
        "INSERT INTO task_deps (dep_id, task_id, kind) VALUES (?1, ?2, ?3) \
         ON CONFLICT (dep_id, task_id) DO NOTHING",
        &[&dep, &task, &kind.as_str()],
    )?;
    exec(
        conn,
        "UPDATE tasks SET has_dependents = 1 WHERE id = ?1 AND has_dependents = 0",
        &[&dep],
    )?;
    Ok(())
}

/// The edges of an imported task: only to dependencies present in this
/// store (one that is not counts as met); sets its `deps_waiting`.
pub(crate) fn import_edges(
    conn: &Connection,
    task: [u8; 16],
    depends_on: &[TaskId],
    after: &[TaskId],
) -> StoreResult<()> {
    let mut unmet = 0i64;
    for (dep, kind) in edges_of(depends_on, after) {
        let Some(current) = status_of(conn, *dep.as_bytes())? else {
            continue;
        };
        link(conn, *dep.as_bytes(), task, kind)?;
        if edge_unmet(kind, current.status) {
            unmet += 1;
        }
    }
    exec(
        conn,
        "UPDATE tasks SET deps_waiting = ?2 WHERE id = ?1",
        &[&task, &unmet],
    )?;
    Ok(())
}

/// Deletes the edges of a task being deleted: those to its dependents
/// (`as_dep`) and those to its own dependencies (`as_dependent`).
pub(crate) fn forget(
    conn: &Connection,
    task: [u8; 16],
    as_dep: bool,
    as_dependent: bool,
) -> StoreResult<()> {
    if as_dep {
        exec(conn, "DELETE FROM task_deps WHERE dep_id = ?1", &[&task])?;
    }
    if as_dependent {
        exec(conn, "DELETE FROM task_deps WHERE task_id = ?1", &[&task])?;
    }
    Ok(())
}

/// How many edges of `task` are unmet now, for its retry; `Conflict`
/// when one can never be met (a `success` dependency failed or aborted).
pub(crate) fn recount(conn: &Connection, task: TaskId) -> StoreResult<i64> {
    let edges: Vec<([u8; 16], String, String)> = {
        let mut s = stmt(
            conn,
            "SELECT d.dep_id, d.kind, t.status FROM task_deps AS d \
             JOIN tasks AS t ON t.id = d.dep_id WHERE d.task_id = ?1",
        )?;
        let rows = s
            .query_map([task.as_bytes()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(map)?;
        rows.collect::<rusqlite::Result<_>>().map_err(map)?
    };
    let mut unmet = 0;
    for (dep, kind, status) in edges {
        let kind = parse_kind(&kind)?;
        let status = parse_status(&status)?;
        let dep = TaskId::from_bytes(dep);
        if dependency_unmet(dep, kind, Some(status))
            .map_err(|e| StoreError::Conflict(format!("task {task} cannot run: {}", e.message)))?
        {
            unmet += 1;
        }
    }
    Ok(unmet)
}

/// A dependency left its terminal status (a retry): the `end` edges from
/// it that were met are unmet again.
pub(crate) fn reopen(conn: &Connection, dep: [u8; 16]) -> StoreResult<()> {
    exec(
        conn,
        "UPDATE tasks SET deps_waiting = deps_waiting + 1 WHERE status = 'blocked' \
         AND id IN (SELECT task_id FROM task_deps WHERE dep_id = ?1 AND kind = 'end')",
        &[&dep],
    )?;
    Ok(())
}

fn parse_kind(s: &str) -> StoreResult<EdgeKind> {
    EdgeKind::parse(s).ok_or_else(|| corrupt(format!("column task_deps.kind holds {s:?}")))
}

fn parse_status(s: &str) -> StoreResult<Status> {
    s.parse()
        .map_err(|_| corrupt(format!("column status holds {s:?}")))
}

/// A blocked task with an edge from a dependency that just ended.
struct Dependent {
    rid: i64,
    id: [u8; 16],
    kind: String,
    attempt: i64,
    deps_waiting: i64,
    run_at: i64,
    queue: String,
    has_dependents: bool,
}

const DEPENDENTS_SQL: &str = "SELECT t.rid, t.id, d.kind, t.attempt, t.deps_waiting, t.run_at, \
     t.queue, t.has_dependents FROM task_deps AS d JOIN tasks AS t ON t.id = d.task_id \
     WHERE d.dep_id = ?1 AND t.status = 'blocked'";

fn blocked_dependents(conn: &Connection, dep: [u8; 16]) -> StoreResult<Vec<Dependent>> {
    let mut s = stmt(conn, DEPENDENTS_SQL)?;
    let rows = s
        .query_map([dep], |r| {
            Ok(Dependent {
                rid: r.get(0)?,
                id: r.get(1)?,
                kind: r.get(2)?,
                attempt: r.get(3)?,
                deps_waiting: r.get(4)?,
                run_at: r.get(5)?,
                queue: r.get(6)?,
                has_dependents: r.get(7)?,
            })
        })
        .map_err(map)?;
    rows.collect::<rusqlite::Result<_>>().map_err(map)
}

/// Settles the dependents of tasks that just ended: each `(id, status)`
/// is a task with dependents that reached terminal `status`, or was
/// deleted while waiting (`None`). Met edges count down (at 0 the task is
/// unblocked); a `success` edge to a task that did not succeed aborts the
/// dependent with [`dependency_record`] and a `task.aborted` event, and
/// that abort is settled in turn. Returns how many tasks changed status.
pub(crate) fn settle(
    ctx: &mut WriteCtx<'_>,
    ended: &[([u8; 16], Option<Status>)],
    now: i64,
) -> StoreResult<u64> {
    let mut work: VecDeque<([u8; 16], Option<Status>)> = ended.iter().copied().collect();
    let mut changed = 0;
    while let Some((dep, dep_status)) = work.pop_front() {
        for d in blocked_dependents(ctx.conn, dep)? {
            let kind = parse_kind(&d.kind)?;
            if kind == EdgeKind::Success && dep_status != Some(Status::Success) {
                abort_blocked(ctx, &d, TaskId::from_bytes(dep), dep_status, now)?;
                changed += 1;
                if d.has_dependents {
                    work.push_back((d.id, Some(Status::Aborted)));
                }
            } else if meet(ctx, &d, now)? {
                changed += 1;
            }
        }
    }
    Ok(changed)
}

/// One edge of a blocked task is met; true when that unblocked it.
fn meet(ctx: &mut WriteCtx<'_>, d: &Dependent, now: i64) -> StoreResult<bool> {
    if d.deps_waiting > 1 {
        exec(
            ctx.conn,
            "UPDATE tasks SET deps_waiting = deps_waiting - 1 WHERE rid = ?1",
            &[&d.rid],
        )?;
        return Ok(false);
    }
    unblock(ctx, d.rid, d.id, d.run_at, &d.queue, now)?;
    Ok(true)
}

/// A blocked task whose edges are all met becomes `pending` (or
/// `scheduled` until its `run_at`).
fn unblock(
    ctx: &mut WriteCtx<'_>,
    rid: i64,
    id: [u8; 16],
    run_at: i64,
    queue: &str,
    now: i64,
) -> StoreResult<()> {
    let task = TaskId::from_bytes(id);
    let to = unblocked_status(time(run_at)?, time(now)?);
    check(task, Status::Blocked, to)?;
    exec(
        ctx.conn,
        "UPDATE tasks SET status = ?2, deps_waiting = 0, updated_at = ?3 WHERE rid = ?1",
        &[&rid, &to.as_str(), &now],
    )?;
    ctx.notes.available(queue);
    ctx.notes.changed(task);
    Ok(())
}

/// Aborts a blocked task because `dep` ended `dep_status` (or was
/// deleted: `None`) and it had to succeed.
fn abort_blocked(
    ctx: &mut WriteCtx<'_>,
    d: &Dependent,
    dep: TaskId,
    dep_status: Option<Status>,
    now: i64,
) -> StoreResult<()> {
    let task = TaskId::from_bytes(d.id);
    check(task, Status::Blocked, Status::Aborted)?;
    // The error is about to change: the ended attempt the row may hold
    // (a retried task) still needs it.
    write_out_ended(ctx.conn, d.rid)?;
    let record = dependency_record(
        dep,
        dep_status,
        u32::try_from(d.attempt).unwrap_or(0),
        time(now)?,
    );
    let data = events::error_data(&record)?;
    let record = json(&record)?;
    exec(
        ctx.conn,
        "UPDATE tasks SET status = 'aborted', error = ?2, finished_at = ?3, updated_at = ?3, \
         deps_waiting = 0 WHERE rid = ?1",
        &[&d.rid, &record, &now],
    )?;
    events::append_for_rows(
        ctx.conn,
        &[ForRow {
            rid: d.rid,
            kind: EventKind::Aborted,
            data: &data,
        }],
        now,
    )?;
    ctx.notes.changed(task);
    Ok(())
}

/// Blocked tasks that should not be blocked any more, in id order, at
/// most `limit`: every edge met, or a `success` edge to a dependency that
/// failed or was aborted. Read on a reader connection; the writer checks
/// each again ([`resolve`]).
pub(crate) fn stuck(conn: &Connection, limit: u32) -> StoreResult<Vec<[u8; 16]>> {
    let mut s = stmt(
        conn,
        "SELECT t.id FROM tasks AS t WHERE t.status = 'blocked' AND (\
         EXISTS (SELECT 1 FROM task_deps AS d JOIN tasks AS p ON p.id = d.dep_id \
         WHERE d.task_id = t.id AND d.kind = 'success' AND p.status IN ('failed', 'aborted')) \
         OR NOT EXISTS (SELECT 1 FROM task_deps AS d JOIN tasks AS p ON p.id = d.dep_id \
         WHERE d.task_id = t.id AND p.status NOT IN ('success', 'failed', 'aborted'))) \
         ORDER BY t.id LIMIT ?1 + 0",
    )?;
    let rows = s.query_map([i64::from(limit)], |r| r.get(0)).map_err(map)?;
    rows.collect::<rusqlite::Result<_>>().map_err(map)
}

/// Settles the blocked tasks `ids` ([`stuck`] found them) as the end of
/// their dependencies would have; returns how many tasks changed status
/// (with cascaded aborts).
pub(crate) fn resolve(ctx: &mut WriteCtx<'_>, ids: &[[u8; 16]], now: i64) -> StoreResult<u64> {
    let mut changed = 0;
    for id in ids {
        changed += resolve_one(ctx, *id, now)?;
    }
    Ok(changed)
}

fn resolve_one(ctx: &mut WriteCtx<'_>, id: [u8; 16], now: i64) -> StoreResult<u64> {
    let conn = ctx.conn;
    let row: Option<(i64, i64, i64, String, bool)> = stmt(
        conn,
        "SELECT rid, attempt, run_at, queue, has_dependents FROM tasks \
         WHERE id = ?1 AND status = 'blocked'",
    )?
    .query_row([id], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })
    .optional()
    .map_err(map)?;
    let Some((rid, attempt, run_at, queue, has_dependents)) = row else {
        return Ok(0);
    };
    let failed: Option<([u8; 16], String)> = stmt(
        conn,
        "SELECT d.dep_id, p.status FROM task_deps AS d JOIN tasks AS p ON p.id = d.dep_id \
         WHERE d.task_id = ?1 AND d.kind = 'success' AND p.status IN ('failed', 'aborted') \
         LIMIT 1",
    )?
    .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
    .optional()
    .map_err(map)?;
    let d = Dependent {
        rid,
        id,
        kind: EdgeKind::Success.as_str().to_owned(),
        attempt,
        deps_waiting: 0,
        run_at,
        queue,
        has_dependents,
    };
    if let Some((dep, status)) = failed {
        let status = parse_status(&status)?;
        abort_blocked(ctx, &d, TaskId::from_bytes(dep), Some(status), now)?;
        let cascaded = if has_dependents {
            settle(ctx, &[(id, Some(Status::Aborted))], now)?
        } else {
            0
        };
        return Ok(1 + cascaded);
    }
    let unmet = unmet_count(conn, id)?;
    if unmet > 0 {
        // Still waiting: only the count was off.
        exec(
            conn,
            "UPDATE tasks SET deps_waiting = ?2 WHERE rid = ?1",
            &[&rid, &unmet],
        )?;
        return Ok(0);
    }
    unblock(ctx, rid, id, run_at, &d.queue, now)?;
    Ok(1)
}

/// How many edges of `task` are unmet (without refusing failed ones).
fn unmet_count(conn: &Connection, task: [u8; 16]) -> StoreResult<i64> {
    stmt(
        conn,
        "SELECT count(*) FROM task_deps AS d JOIN tasks AS p ON p.id = d.dep_id \
         WHERE d.task_id = ?1 AND CASE WHEN d.kind = 'success' THEN p.status <> 'success' \
         ELSE p.status NOT IN ('success', 'failed', 'aborted') END",
    )?
    .query_row([task], |r| r.get(0))
    .map_err(map)
}
