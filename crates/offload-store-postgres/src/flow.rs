//! Inserting tasks with dependencies, a group or a unique key (see
//! [`Store::task_insert_many`](offload_store::Store::task_insert_many)).
//!
//! A batch where no task has any of these takes the one-statement insert
//! of [`crate::hot`], unchanged. Otherwise one transaction (a savepoint
//! inside the caller's transaction) handles the tasks in order:
//!
//! 1. the advisory locks of every unique key of the batch, then the
//!    newest holder of each key ([`crate::unique`]);
//! 2. every stored dependency gets `has_dependents` set by an `UPDATE`
//!    that also reads its status: its row lock closes the race with a
//!    concurrent finish (see [`crate::deps`]);
//! 3. in memory, task by task: [`unique_action`] against the holder
//!    (an earlier task of the batch may be it), then
//!    [`dependency_unmet`](offload_store::dependency_unmet) per edge (an
//!    earlier task of the batch counts with the status it is inserted
//!    with); any error refuses the whole batch;
//! 4. the writes: the new rows with their `task.created` events in one
//!    statement, the edges in another, the merged holders in a third, and
//!    the wake-up.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use offload_store::{EdgeKind, Notification, StoreError, StoreResult};
use offload_types::{
    EnqueueOutcome, Enqueued, NewTask, Status, TaskId, UniqueAction, UniqueHolder, unique_action,
};
use serde_json::Value;
use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};
use uuid::Uuid;

use crate::PgStore;
use crate::codec::{self, NewRows, id_json, uuid};
use crate::error::map;
use crate::hot::{batch_rows, in_batch, insert_error};
use crate::notify::Payload;
use crate::unique::{self, HolderUpdate};

/// Whether a task needs this path: it has dependencies, a group or a
/// unique key.
pub(crate) fn needs_flow(t: &NewTask) -> bool {
    !t.options.depends_on.is_empty()
        || !t.after.is_empty()
        || t.options.unique_key.is_some()
        || t.group_id.is_some()
}

/// Inserts a batch that [`needs_flow`], all or nothing, through `conn` (in
/// a transaction of its own, or a savepoint of the caller's). `local`: as
/// in [`crate::hot::insert`].
pub(crate) async fn insert(
    store: &PgStore,
    conn: &mut PgConnection,
    tasks: &[NewTask],
    now: DateTime<Utc>,
    local: bool,
) -> StoreResult<Vec<Enqueued>> {
    batch_rows(tasks, now)?;
    let mut tx = conn.begin().await.map_err(map)?;
    match run(store, &mut tx, tasks, now, local).await {
        Ok((enqueued, notes)) => {
            tx.commit().await.map_err(map)?;
            if local {
                store.local(notes);
            }
            Ok(enqueued)
        }
        Err(e) => {
            if let Err(r) = tx.rollback().await {
                tracing::debug!(error = %r, "rolling back a refused insert failed");
            }
            Err(e)
        }
    }
}

/// The columns the flow path adds to [`NewRows`].
#[derive(Debug, Default)]
struct FlowCols {
    /// `depends_on` as a JSON array (`None`: empty).
    depends_on: Vec<Option<Value>>,
    /// `after` as a JSON array (`None`: empty).
    after: Vec<Option<Value>>,
    /// The group.
    group_ids: Vec<Option<Uuid>>,
    /// The unique key.
    unique_keys: Vec<Option<String>>,
    /// How many edges are unmet (the task is `blocked` when some are).
    deps_waiting: Vec<i32>,
    /// A later task of the batch depends on it.
    has_dependents: Vec<bool>,
}

/// What the batch writes, decided in memory.
#[derive(Debug, Default)]
struct Plan {
    /// The rows to insert.
    rows: NewRows,
    /// Their flow columns.
    flow: FlowCols,
    /// Row index of each task of the batch that is inserted.
    row_of: HashMap<TaskId, usize>,
    /// The edges to insert: dependency, dependent and kind columns.
    edges: (Vec<Uuid>, Vec<Uuid>, Vec<&'static str>),
    /// Merges into stored holders, in first-touched order.
    updates: Vec<HolderUpdate>,
    /// The answer, one per task of the batch.
    out: Vec<Enqueued>,
}

/// Decides and writes the batch inside the transaction `conn`; returns
/// the answer and the local notifications for after commit.
async fn run(
    store: &PgStore,
    conn: &mut PgConnection,
    tasks: &[NewTask],
    now: DateTime<Utc>,
    local: bool,
) -> StoreResult<(Vec<Enqueued>, Vec<Notification>)> {
    let many = tasks.len() > 1;
    let mut keys: Vec<String> = tasks
        .iter()
        .filter_map(|t| t.options.unique_key.clone())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    unique::lock_keys(store, conn, &keys).await?;
    let mut holders = unique::holders(store, conn, &keys).await?;

    let in_batch_ids: HashSet<TaskId> = tasks.iter().map(|t| t.id).collect();
    let mut stored_deps: Vec<Uuid> = tasks
        .iter()
        .flat_map(|t| t.options.depends_on.iter().chain(&t.after))
        .filter(|id| !in_batch_ids.contains(id))
        .map(|id| uuid(*id))
        .collect();
    stored_deps.sort_unstable();
    stored_deps.dedup();
    let stored = flag_dependencies(store, conn, &stored_deps).await?;

    let mut plan = Plan::default();
    let mut batch_status: HashMap<TaskId, Status> = HashMap::new();
    for (i, task) in tasks.iter().enumerate() {
        let o = &task.options;
        let mut run_at = o.start_time(now);
        let mut outcome = EnqueueOutcome::Created;
        if let Some(key) = &o.unique_key {
            let policy = o.unique.clone().unwrap_or_default();
            match unique_action(&policy, run_at, holders.get(key), now) {
                UniqueAction::Keep { id } => {
                    plan.out.push(Enqueued {
                        id,
                        outcome: EnqueueOutcome::Existing,
                    });
                    continue;
                }
                UniqueAction::Update {
                    id,
                    run_at: new_run_at,
                    outcome,
                } => {
                    merge(&mut plan, &mut holders, key, task, new_run_at, now);
                    if let (Some(h), Some(s)) = (holders.get(key), batch_status.get_mut(&id)) {
                        *s = h.status;
                    }
                    plan.out.push(Enqueued { id, outcome });
                    continue;
                }
                UniqueAction::Insert {
                    run_at: at,
                    outcome: oc,
                } => {
                    run_at = at;
                    outcome = oc;
                }
            }
        }
        // Edges: depends_on (success) then after (end); an id in both
        // keeps only its success edge (the stricter one).
        let mut waiting = 0i32;
        let mut edges: Vec<(TaskId, EdgeKind)> = Vec::new();
        let success = o.depends_on.iter().map(|d| (*d, EdgeKind::Success));
        let end = task.after.iter().map(|d| (*d, EdgeKind::End));
        for (dep, kind) in success.chain(end) {
            let status = batch_status
                .get(&dep)
                .or_else(|| stored.get(&uuid(dep)))
                .copied();
            let unmet = offload_store::dependency_unmet(dep, kind, status)
                .map_err(|v| in_batch(StoreError::Invalid(v), i, many))?;
            if edges.iter().any(|(d, _)| *d == dep) {
                continue;
            }
            if unmet {
                waiting += 1;
            }
            edges.push((dep, kind));
        }
        let status = if waiting > 0 {
            Status::Blocked
        } else {
            offload_store::unblocked_status(run_at, now)
        };
        plan.rows.push(task, now)?;
        let row = plan.rows.ids.len() - 1;
        if let (Some(r), Some(s)) = (
            plan.rows.run_ats.get_mut(row),
            plan.rows.statuses.get_mut(row),
        ) {
            *r = run_at;
            *s = status.as_str();
        }
        let f = &mut plan.flow;
        f.depends_on.push(id_json(&o.depends_on)?);
        f.after.push(id_json(&task.after)?);
        f.group_ids.push(task.group_id.map(uuid));
        f.unique_keys.push(o.unique_key.clone());
        f.deps_waiting.push(waiting);
        f.has_dependents.push(false);
        for (dep, kind) in edges {
            if let Some(&r) = plan.row_of.get(&dep)
                && let Some(flag) = plan.flow.has_dependents.get_mut(r)
            {
                *flag = true;
            }
            plan.edges.0.push(uuid(dep));
            plan.edges.1.push(uuid(task.id));
            plan.edges.2.push(kind.as_str());
        }
        plan.row_of.insert(task.id, row);
        batch_status.insert(task.id, status);
        if let Some(key) = &o.unique_key {
            holders.insert(
                key.clone(),
                UniqueHolder {
                    id: task.id,
                    status,
                    created_at: now,
                    run_at,
                    started_at: None,
                },
            );
        }
        plan.out.push(Enqueued {
            id: task.id,
            outcome,
        });
    }
    write(store, conn, plan, now, local).await
}

/// Merges `task` into the waiting holder of `key` (new input; `run_at`
/// when given, with the status to match unless the holder is blocked):
/// in the batch's row when the holder is an earlier task of the batch,
/// else as an update of the stored holder.
fn merge(
    plan: &mut Plan,
    holders: &mut HashMap<String, UniqueHolder>,
    key: &str,
    task: &NewTask,
    run_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) {
    let Some(h) = holders.get_mut(key) else {
        return;
    };
    let moved = run_at.map(|at| {
        let status = if h.status == Status::Blocked {
            Status::Blocked
        } else {
            offload_store::unblocked_status(at, now)
        };
        h.run_at = at;
        h.status = status;
        (at, status)
    });
    if let Some(&row) = plan.row_of.get(&h.id) {
        if let Some(input) = plan.rows.inputs.get_mut(row) {
            *input = task.input.clone();
        }
        if let (Some((at, status)), Some(r), Some(s)) = (
            moved,
            plan.rows.run_ats.get_mut(row),
            plan.rows.statuses.get_mut(row),
        ) {
            *r = at;
            *s = status.as_str();
        }
        return;
    }
    match plan.updates.iter_mut().find(|u| u.id == h.id) {
        Some(u) => {
            u.input = task.input.clone();
            if moved.is_some() {
                u.run_at = moved;
            }
        }
        None => plan.updates.push(HolderUpdate {
            id: h.id,
            input: task.input.clone(),
            run_at: moved,
        }),
    }
}

/// Sets `has_dependents` on the stored tasks `ids` (sorted) and returns
/// their statuses; the `UPDATE` holds their row locks until commit, and
/// reads the newest committed status (see [`crate::deps`]). Ids that do
/// not exist are simply missing from the answer.
async fn flag_dependencies(
    store: &PgStore,
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> StoreResult<HashMap<Uuid, Status>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let q = store.q();
    let sql = format!(
        "UPDATE {q}.tasks t SET has_dependents = true FROM (SELECT id FROM {q}.tasks \
         WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE) l WHERE t.id = l.id \
         RETURNING t.id, t.status"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(map)?;
    rows.iter()
        .map(|r| {
            let s: String = r.try_get(1).map_err(map)?;
            Ok((r.try_get(0).map_err(map)?, codec::status(&s)?))
        })
        .collect()
}

/// The writes of a planned batch, and the wake-up: `pg_notify` inside the
/// transaction; the local notifications are returned for after commit.
async fn write(
    store: &PgStore,
    conn: &mut PgConnection,
    plan: Plan,
    now: DateTime<Utc>,
    local: bool,
) -> StoreResult<(Vec<Enqueued>, Vec<Notification>)> {
    let q = store.q();
    let rows = &plan.rows;
    let f = &plan.flow;
    if !rows.ids.is_empty() {
        let sql = format!(
            "WITH ins AS (INSERT INTO {q}.tasks (id, name, queue, input, status, priority, \
             max_attempts, run_at, timeout_ms, retry, tags, metadata, webhook, created_at, \
             updated_at, depends_on, after, group_id, unique_key, deps_waiting, has_dependents, \
             fairness_key) \
             SELECT u.id, u.name, u.queue, u.input, u.status, u.priority, u.max_attempts, \
             u.run_at, u.timeout_ms, u.retry, coalesce(u.tags, '[]'), \
             coalesce(u.metadata, '{{}}'), u.webhook, $13, $13, u.depends_on, u.after, \
             u.group_id, u.unique_key, u.deps_waiting, u.has_dependents, u.fairness_key \
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::text[], \
             $6::int4[], $7::int4[], $8::timestamptz[], $9::int8[], $10::jsonb[], \
             $11::jsonb[], $12::jsonb[], $14::text[], $15::jsonb[], $16::jsonb[], $17::uuid[], \
             $18::text[], $19::int4[], $20::bool[], $21::text[]) \
             AS u(id, name, queue, input, status, priority, max_attempts, run_at, timeout_ms, \
             retry, tags, metadata, webhook, depends_on, after, group_id, unique_key, \
             deps_waiting, has_dependents, fairness_key) RETURNING id, name, queue, status), \
             ev AS (INSERT INTO {q}.events (at, kind, task_id, name, queue, attempt, data) \
             SELECT $13, 'task.created', id, name, queue, 0, \
             jsonb_build_object('status', status) FROM ins) \
             SELECT count(*) FROM ins"
        );
        rows.bind_columns(sqlx::query(AssertSqlSafe(sql)))
            .bind(now)
            .bind(&rows.webhooks)
            .bind(&f.depends_on)
            .bind(&f.after)
            .bind(&f.group_ids)
            .bind(&f.unique_keys)
            .bind(&f.deps_waiting)
            .bind(&f.has_dependents)
            .bind(&rows.fairness_keys)
            .execute(&mut *conn)
            .await
            .map_err(insert_error)?;
    }
    if !plan.edges.0.is_empty() {
        let sql = format!(
            "INSERT INTO {q}.task_deps (dep_id, task_id, kind) \
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[])"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(&plan.edges.0)
            .bind(&plan.edges.1)
            .bind(&plan.edges.2)
            .execute(&mut *conn)
            .await
            .map_err(map)?;
    }
    let merged = unique::update_holders(store, conn, &plan.updates, now).await?;

    let mut payload = Payload::default();
    let mut queues: Vec<String> = Vec::new();
    let ready = |s: &str| s == Status::Pending.as_str() || s == Status::Scheduled.as_str();
    for (queue, status) in rows.queues.iter().zip(&rows.statuses) {
        if ready(status) && !queues.contains(queue) {
            queues.push(queue.clone());
        }
    }
    for (_, queue, status) in &merged {
        if ready(status.as_str()) && !queues.contains(queue) {
            queues.push(queue.clone());
        }
    }
    for q in &queues {
        payload.available(q);
    }
    let changed: Vec<TaskId> = merged.iter().map(|(id, _, _)| *id).collect();
    if !changed.is_empty() {
        payload.changed(&changed);
    }
    if !payload.is_empty() {
        // Inside the caller's transaction the payload comes from instance
        // "-", so this process's own listener delivers it too.
        let text = if local {
            store.payload(&payload)
        } else {
            format!("-\n{}", payload.body())
        };
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&store.inner.channel)
            .bind(text)
            .execute(&mut *conn)
            .await
            .map_err(map)?;
    }
    let mut notes: Vec<Notification> = queues
        .into_iter()
        .map(|q| Notification::Available { queue: Some(q) })
        .collect();
    if !changed.is_empty() {
        notes.push(Notification::Changed { ids: Some(changed) });
    }
    Ok((plan.out, notes))
}
