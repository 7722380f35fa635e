//! The insert of a batch in which some task has a unique key,
//! dependencies or a group (the others take [`write::insert`]'s plain
//! multi-row path): task by task, in order, inside the command's
//! transaction, so a task may depend on one earlier in the batch and a
//! second task with a key sees the first. Per task: the unique key first
//! ([`unique`]: keep the holder, merge into it, or insert), then the
//! dependencies ([`deps`]: a task with an unmet edge starts `blocked`).
//! A refused task fails the whole command, which rolls back.

use offload_store::{EventKind, StoreError, StoreResult};
use offload_types::{EnqueueOutcome, Enqueued, Status, TaskId, UniqueAction, ValidationError};

use crate::codec::{NewRow, id_list, micros, time};
use crate::error::map;
use crate::events::{self, Known};
use crate::write::{self, status_of, stmt};
use crate::writer::WriteCtx;
use crate::{deps, unique};

/// The insert of `task_insert_many` for rows [`prepare_insert`]
/// checked: first the quotas of tasks with a fairness key
/// ([`crate::limits::check_quotas`]), then [`write::insert`]'s plain multi-row path when no task has a
/// unique key, dependencies or a group, else [`insert`]. Returns what each
/// enqueue did, in order. `schedule_fire` inserts its task through here
/// too, so a tick's task behaves as any enqueue.
///
/// [`prepare_insert`]: crate::idempotency::prepare_insert
pub(crate) fn insert_rows(
    ctx: &mut WriteCtx<'_>,
    rows: &[NewRow],
    now: i64,
) -> StoreResult<Vec<Enqueued>> {
    crate::limits::check_quotas(ctx, rows)?;
    if rows.iter().any(NewRow::has_flow) {
        return insert(ctx, rows, now);
    }
    write::insert(ctx, rows, now)?;
    Ok(rows
        .iter()
        .map(|row| Enqueued::created(TaskId::from_bytes(row.id)))
        .collect())
}

/// Inserts `rows` one by one; returns what each enqueue did, in order.
pub(crate) fn insert(
    ctx: &mut WriteCtx<'_>,
    rows: &[NewRow],
    now: i64,
) -> StoreResult<Vec<Enqueued>> {
    let many = rows.len() > 1;
    let mut out = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let done = if row.has_flow() {
            insert_one(ctx, row, now)
        } else {
            write::insert(ctx, std::slice::from_ref(row), now)
                .map(|()| Enqueued::created(TaskId::from_bytes(row.id)))
        };
        out.push(done.map_err(|e| in_batch(e, i, many))?);
    }
    Ok(out)
}

/// Says which task of a batch was refused.
fn in_batch(e: StoreError, i: usize, many: bool) -> StoreError {
    match e {
        StoreError::Invalid(v) if many => StoreError::Invalid(ValidationError::new(
            v.field,
            format!(
                "{} (task {i} of the batch; nothing was inserted)",
                v.message
            ),
        )),
        other => other,
    }
}

/// The row of a task with flow columns (`?14`: now, for `created_at` and
/// `updated_at`).
const INSERT_SQL: &str = "INSERT INTO tasks (id, name, queue, input, status, priority, \
     max_attempts, run_at, timeout_ms, retry, tags, metadata, webhook, created_at, updated_at, \
     unique_key, depends_on, \"after\", group_id, deps_waiting, fairness_key) VALUES (?1, ?2, \
     ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14, ?15, ?16, ?17, ?18, ?19, ?20)";

fn insert_one(ctx: &mut WriteCtx<'_>, row: &NewRow, now: i64) -> StoreResult<Enqueued> {
    let id = TaskId::from_bytes(row.id);
    let mut run_at = row.run_at;
    let mut outcome = EnqueueOutcome::Created;
    if let Some((key, policy)) = &row.unique {
        match unique::decide(ctx.conn, key, policy, run_at, time(now)?)? {
            UniqueAction::Keep { id } => {
                return Ok(Enqueued {
                    id,
                    outcome: EnqueueOutcome::Existing,
                });
            }
            UniqueAction::Update {
                id,
                run_at,
                outcome,
            } => {
                unique::merge(ctx, id, &row.input, run_at, now)?;
                return Ok(Enqueued { id, outcome });
            }
            UniqueAction::Insert {
                run_at: at,
                outcome: o,
            } => {
                run_at = micros(at);
                outcome = o;
            }
        }
    }
    let edges = deps::check_new(ctx.conn, &row.depends_on, &row.after)?;
    let status = if edges.unmet > 0 {
        Status::Blocked
    } else if run_at > now {
        Status::Scheduled
    } else {
        Status::Pending
    };
    let inserted = stmt(ctx.conn, INSERT_SQL)?.execute(rusqlite::params![
        row.id,
        row.name,
        row.queue,
        row.input,
        status.as_str(),
        row.priority,
        row.max_attempts,
        run_at,
        row.timeout_ms,
        row.retry,
        row.tags,
        row.metadata,
        row.webhook,
        now,
        row.unique.as_ref().map(|(key, _)| key),
        id_list(&row.depends_on)?,
        id_list(&row.after)?,
        row.group_id,
        edges.unmet,
        row.fairness_key,
    ]);
    match inserted {
        Ok(_) => {}
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) => {
            if status_of(ctx.conn, row.id)?.is_some() {
                return Err(StoreError::Conflict(format!(
                    "task {id} already exists; nothing was inserted"
                )));
            }
            return Err(map(e));
        }
        Err(e) => return Err(map(e)),
    }
    deps::store_edges(ctx.conn, row.id, &edges)?;
    let data = events::created_data(status.as_str())?;
    events::append_known(
        ctx.conn,
        &[Known {
            kind: EventKind::Created,
            task_id: row.id,
            name: &row.name,
            queue: &row.queue,
            attempt: 0,
            data: &data,
        }],
        now,
    )?;
    if status != Status::Blocked {
        ctx.notes.available(&row.queue);
    }
    Ok(Enqueued { id, outcome })
}
