//! Unique keys: the newest task holding a key, what
//! [`unique_action`](offload_types::unique_action) says to do about a new
//! task with that key, and the merge of a new enqueue into a waiting
//! holder. The single writer serialises every insert, so two enqueues of
//! one key never both miss each other.

use chrono::{DateTime, Utc};
use offload_store::{StoreError, StoreResult};
use offload_types::{Status, TaskId, UniqueAction, UniqueHolder, UniquePolicy, unique_action};
use rusqlite::{Connection, OptionalExtension};

use crate::codec::{micros, time};
use crate::error::{corrupt, map};
use crate::write::{check, exec, status_of, stmt};
use crate::writer::WriteCtx;

/// The newest task with `key` (`created_at`, then id), if any.
fn holder(conn: &Connection, key: &str) -> StoreResult<Option<UniqueHolder>> {
    type Row = ([u8; 16], String, i64, i64, Option<i64>);
    let row: Option<Row> = stmt(
        conn,
        "SELECT id, status, created_at, run_at, started_at FROM tasks \
         WHERE unique_key = ?1 ORDER BY created_at DESC, id DESC LIMIT 1",
    )?
    .query_row([key], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })
    .optional()
    .map_err(map)?;
    row.map(|(id, status, created_at, run_at, started_at)| {
        Ok(UniqueHolder {
            id: TaskId::from_bytes(id),
            status: status
                .parse()
                .map_err(|_| corrupt(format!("column status holds {status:?}")))?,
            created_at: time(created_at)?,
            run_at: time(run_at)?,
            started_at: started_at.map(time).transpose()?,
        })
    })
    .transpose()
}

/// What to do with a new task holding `key` under `policy` that would
/// start at `run_at` (stored form), enqueued at `now`.
pub(crate) fn decide(
    conn: &Connection,
    key: &str,
    policy: &UniquePolicy,
    run_at: i64,
    now: DateTime<Utc>,
) -> StoreResult<UniqueAction> {
    let holder = holder(conn, key)?;
    Ok(unique_action(policy, time(run_at)?, holder.as_ref(), now))
}

/// Gives the waiting holder `id` the new `input` and, when set, the new
/// start `run_at` (a `scheduled` or `pending` holder moves between the
/// two to match; a `blocked` one stays blocked).
pub(crate) fn merge(
    ctx: &mut WriteCtx<'_>,
    id: TaskId,
    input: &str,
    run_at: Option<DateTime<Utc>>,
    now: i64,
) -> StoreResult<()> {
    let conn = ctx.conn;
    let current = status_of(conn, *id.as_bytes())?.ok_or(StoreError::NotFound(id))?;
    let run_at = run_at.map(micros);
    let target = match (current.status, run_at) {
        (Status::Scheduled | Status::Pending, Some(at)) if at > now => Status::Scheduled,
        (Status::Scheduled | Status::Pending, Some(_)) => Status::Pending,
        (status, _) => status,
    };
    if target != current.status {
        check(id, current.status, target)?;
    }
    exec(
        conn,
        "UPDATE tasks SET input = ?2, updated_at = ?3, run_at = coalesce(?4, run_at), \
         status = ?5 WHERE rid = ?1",
        &[&current.rid, &input, &now, &run_at, &target.as_str()],
    )?;
    ctx.notes.changed(id);
    if matches!(target, Status::Pending | Status::Scheduled) {
        let queue: String = stmt(conn, "SELECT queue FROM tasks WHERE rid = ?1")?
            .query_row([current.rid], |r| r.get(0))
            .map_err(map)?;
        ctx.notes.available(&queue);
    }
    Ok(())
}
