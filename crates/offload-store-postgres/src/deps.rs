//! Dependencies between tasks: what happens to the tasks waiting on one
//! that reached its end, and the safety net that settles blocked tasks a
//! lost race or a crash left behind.
//!
//! An edge `task_deps (dep_id, task_id, kind)` says `task_id` waits for
//! `dep_id` to succeed (`success`) or to end whatever the outcome (`end`).
//! `tasks.deps_waiting` counts a task's edges that are not met yet and
//! `tasks.has_dependents` marks the tasks some edge points at, so that
//! everything here runs only for them ([`settle`] is never called on the
//! hot path of other tasks).
//!
//! **The race between a new edge and the end of its dependency.** Under
//! READ COMMITTED an insert adding an edge to `D` and a finish of `D` could
//! each miss the other. They cannot, because both take `D`'s row lock:
//!
//! - the insert sets `has_dependents` on `D` with an `UPDATE` (so it holds
//!   `D`'s row lock until it commits) and reads `D`'s status from that
//!   same `UPDATE`, i.e. the newest committed version;
//! - the finish's `UPDATE` of `D` waits for an insert holding the lock,
//!   then re-reads the row (so it sees `has_dependents`); it looks for the
//!   edges of `D` in a *later* statement of its transaction, whose
//!   snapshot includes every edge committed before the finish got the
//!   lock. An insert that comes after the finish got the lock waits for
//!   the finish to commit and then reads `D` as ended, so it counts the
//!   edge as met (or refuses it).
//!
//! Either way exactly one side accounts for the edge.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use offload_store::{EdgeKind, Notification, StoreError, StoreResult};
use offload_types::{Status, TaskId};
use serde_json::Value;
use sqlx::{AssertSqlSafe, PgConnection, Row};
use uuid::Uuid;

use crate::PgStore;
use crate::codec::{self, json, uuid};
use crate::error::map;
use crate::notify::Payload;

/// What settling dependents changed, for the notifications of the
/// transaction and for this process's subscribers after it commits.
#[derive(Debug, Default)]
pub(crate) struct Settled {
    /// Tasks aborted or unblocked.
    pub(crate) changed: Vec<TaskId>,
    /// Queues where a task became ready.
    pub(crate) queues: Vec<String>,
}

impl Settled {
    /// Whether nothing changed.
    pub(crate) fn is_empty(&self) -> bool {
        self.changed.is_empty()
    }

    /// Adds what changed to a `pg_notify` payload.
    pub(crate) fn add_to(&self, payload: &mut Payload) {
        if !self.changed.is_empty() {
            payload.changed(&self.changed);
        }
        for q in &self.queues {
            payload.available(q);
        }
    }

    /// The local notifications of what changed.
    pub(crate) fn notes(&self) -> Vec<Notification> {
        let mut notes = Vec::new();
        if !self.changed.is_empty() {
            notes.push(Notification::Changed {
                ids: Some(self.changed.clone()),
            });
        }
        notes.extend(self.queues.iter().map(|q| Notification::Available {
            queue: Some(q.clone()),
        }));
        notes
    }

    fn queue(&mut self, q: String) {
        if !self.queues.contains(&q) {
            self.queues.push(q);
        }
    }

    /// Adds another settlement.
    pub(crate) fn extend(&mut self, other: Settled) {
        self.changed.extend(other.changed);
        for q in other.queues {
            self.queue(q);
        }
    }
}

/// Settles the dependents of tasks that just ended, inside the caller's
/// transaction (whose earlier statements wrote those ends): `ended` holds
/// each task's id and final status (`None`: it was deleted while waiting).
///
/// Round by round (a worklist, so cascades of any depth are handled):
/// first every `blocked` task with a `success` edge to a dependency that
/// failed, was aborted or deleted is aborted with
/// [`dependency_record`](offload_store::dependency_record) and a
/// `task.aborted` event (those with dependents of their own go into the
/// next round); then the met edges (every edge of a dependency that
/// succeeded, the `end` edges of the others) decrement their `blocked`
/// dependents' `deps_waiting`, and a dependent reaching 0 becomes
/// [`unblocked_status`](offload_store::unblocked_status).
pub(crate) async fn settle(
    store: &PgStore,
    conn: &mut PgConnection,
    ended: Vec<(Uuid, Option<Status>)>,
    now: DateTime<Utc>,
) -> StoreResult<Settled> {
    let mut out = Settled::default();
    let mut seen: HashSet<Uuid> = HashSet::new();
    let mut round: Vec<(Uuid, Option<Status>)> = ended
        .into_iter()
        .filter(|(id, _)| seen.insert(*id))
        .collect();
    while !round.is_empty() {
        let failed: HashMap<Uuid, Option<Status>> = round
            .iter()
            .filter(|(_, s)| *s != Some(Status::Success))
            .copied()
            .collect();
        let mut next = Vec::new();
        if !failed.is_empty() {
            for (id, has_dependents) in abort_dependents(store, conn, &failed, now).await? {
                out.changed.push(TaskId(id));
                if has_dependents && seen.insert(id) {
                    next.push((id, Some(Status::Aborted)));
                }
            }
        }
        let all: Vec<Uuid> = round.iter().map(|(id, _)| *id).collect();
        let succeeded: Vec<Uuid> = round
            .iter()
            .filter(|(_, s)| *s == Some(Status::Success))
            .map(|(id, _)| *id)
            .collect();
        for (id, queue) in meet_edges(store, conn, &all, &succeeded, now).await? {
            out.changed.push(TaskId(id));
            out.queue(queue);
        }
        round = next;
    }
    Ok(out)
}

/// Aborts the `blocked` tasks with a `success` edge to one of `failed`
/// (each with its dependency's final status); returns each aborted task
/// and whether it has dependents of its own.
async fn abort_dependents(
    store: &PgStore,
    conn: &mut PgConnection,
    failed: &HashMap<Uuid, Option<Status>>,
    now: DateTime<Utc>,
) -> StoreResult<Vec<(Uuid, bool)>> {
    let q = store.q();
    let deps: Vec<Uuid> = failed.keys().copied().collect();
    let sql = format!(
        "SELECT t.id, e.dep_id, t.attempt FROM {q}.task_deps e JOIN {q}.tasks t \
         ON t.id = e.task_id WHERE e.dep_id = ANY($1) AND e.kind = 'success' \
         AND t.status = 'blocked' ORDER BY t.id, e.dep_id FOR UPDATE OF t"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(&deps)
        .fetch_all(&mut *conn)
        .await
        .map_err(map)?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut victims = Victims::default();
    for r in &rows {
        let id: Uuid = r.try_get(0).map_err(map)?;
        if victims.ids.last() == Some(&id) {
            continue;
        }
        let dep: Uuid = r.try_get(1).map_err(map)?;
        let attempt: i32 = r.try_get(2).map_err(map)?;
        let dep_status = failed.get(&dep).copied().flatten();
        victims.push(id, dep, dep_status, attempt, now)?;
    }
    abort_victims(store, conn, &victims, now).await
}

/// Tasks to abort because of a dependency, with their error records.
#[derive(Debug, Default)]
pub(crate) struct Victims {
    /// The tasks.
    ids: Vec<Uuid>,
    /// Each one's error record (the `error` column).
    errors: Vec<Value>,
    /// Each one's `task.aborted` event data.
    data: Vec<Value>,
}

impl Victims {
    /// Adds task `id` (at `attempt`), aborted because `dep` ended
    /// `dep_status` (`None`: deleted).
    pub(crate) fn push(
        &mut self,
        id: Uuid,
        dep: Uuid,
        dep_status: Option<Status>,
        attempt: i32,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let record = offload_store::dependency_record(
            TaskId(dep),
            dep_status,
            u32::try_from(attempt).unwrap_or(0),
            now,
        );
        self.ids.push(id);
        self.data.push(crate::events::error_data(&record)?);
        self.errors.push(json(&record)?);
        Ok(())
    }
}

/// Aborts `victims` (still `blocked`) with their records and `task.aborted`
/// events, in one statement; returns each aborted task and whether it has
/// dependents.
async fn abort_victims(
    store: &PgStore,
    conn: &mut PgConnection,
    victims: &Victims,
    now: DateTime<Utc>,
) -> StoreResult<Vec<(Uuid, bool)>> {
    let q = store.q();
    let sql = format!(
        "WITH u AS (SELECT * FROM unnest($1::uuid[], $2::jsonb[], $3::jsonb[]) \
         AS u(id, error, data)), \
         aborted AS (UPDATE {q}.tasks t SET status = 'aborted', error = u.error, \
         finished_at = $4, updated_at = $4 FROM u WHERE t.id = u.id AND t.status = 'blocked' \
         RETURNING t.id, t.name, t.queue, t.attempt, t.webhook, t.has_dependents, u.data), \
         ev AS (INSERT INTO {q}.events (at, kind, task_id, name, queue, attempt, data) \
         SELECT $4, 'task.aborted', id, name, queue, attempt, \
         CASE WHEN webhook IS NOT NULL THEN data || jsonb_build_object('webhook', webhook) \
         ELSE data END FROM aborted) \
         SELECT id, has_dependents FROM aborted"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(&victims.ids)
        .bind(&victims.errors)
        .bind(&victims.data)
        .bind(now)
        .fetch_all(&mut *conn)
        .await
        .map_err(map)?;
    rows.iter()
        .map(|r| Ok((r.try_get(0).map_err(map)?, r.try_get(1).map_err(map)?)))
        .collect()
}

/// Meets the edges of dependencies that ended (`all`; every edge of those
/// in `succeeded`, only `end` edges of the others): each `blocked`
/// dependent's `deps_waiting` drops by its met edges, and one reaching 0
/// is unblocked. The dependents are locked in id order first, so two
/// transactions settling dependencies of the same tasks (a diamond) wait
/// for each other instead of deadlocking. Returns the unblocked tasks and
/// their queues.
async fn meet_edges(
    store: &PgStore,
    conn: &mut PgConnection,
    all: &[Uuid],
    succeeded: &[Uuid],
    now: DateTime<Utc>,
) -> StoreResult<Vec<(Uuid, String)>> {
    let q = store.q();
    let sql = format!(
        "WITH m AS (SELECT task_id, count(*)::int4 AS n FROM {q}.task_deps \
         WHERE dep_id = ANY($1) AND (kind = 'end' OR dep_id = ANY($2)) GROUP BY task_id), \
         l AS (SELECT t.id, m.n FROM {q}.tasks t JOIN m ON m.task_id = t.id \
         WHERE t.status = 'blocked' ORDER BY t.id FOR NO KEY UPDATE OF t), \
         up AS (UPDATE {q}.tasks t SET deps_waiting = t.deps_waiting - l.n, \
         status = CASE WHEN t.deps_waiting - l.n > 0 THEN t.status \
         WHEN t.run_at > $3 THEN 'scheduled' ELSE 'pending' END, \
         updated_at = CASE WHEN t.deps_waiting - l.n > 0 THEN t.updated_at ELSE $3 END \
         FROM l WHERE t.id = l.id AND t.status = 'blocked' \
         RETURNING t.id, t.queue, t.status) \
         SELECT id, queue FROM up WHERE status <> 'blocked' ORDER BY id"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(all)
        .bind(succeeded)
        .bind(now)
        .fetch_all(&mut *conn)
        .await
        .map_err(map)?;
    rows.iter()
        .map(|r| Ok((r.try_get(0).map_err(map)?, r.try_get(1).map_err(map)?)))
        .collect()
}

/// A task being retried that has dependents: its `end` edges were met
/// when it ended, and it waits again now, so each `blocked` dependent
/// waits for it again (`deps_waiting + 1`). (Its `success` edges were not
/// met: it had failed or been aborted.)
pub(crate) async fn unmeet_end_edges(
    store: &PgStore,
    conn: &mut PgConnection,
    id: TaskId,
) -> StoreResult<()> {
    let q = store.q();
    let sql = format!(
        "UPDATE {q}.tasks t SET deps_waiting = t.deps_waiting + 1 FROM {q}.task_deps e \
         WHERE e.dep_id = $1 AND e.kind = 'end' AND t.id = e.task_id AND t.status = 'blocked'"
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(uuid(id))
        .execute(&mut *conn)
        .await
        .map_err(map)?;
    Ok(())
}

/// How many of task `id`'s edges are unmet now, read with a share lock on
/// each dependency (so none ends unseen before the caller commits). A
/// `success` edge to a failed or aborted dependency is a `Conflict`
/// (retry that one first). Edges to tasks that no longer exist count as
/// met.
pub(crate) async fn unmet_edges(
    store: &PgStore,
    conn: &mut PgConnection,
    id: TaskId,
) -> StoreResult<i32> {
    let q = store.q();
    let sql = format!(
        "SELECT e.dep_id, e.kind, d.status FROM {q}.task_deps e JOIN {q}.tasks d \
         ON d.id = e.dep_id WHERE e.task_id = $1 ORDER BY e.dep_id FOR SHARE OF d"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(uuid(id))
        .fetch_all(&mut *conn)
        .await
        .map_err(map)?;
    let mut unmet = 0;
    for r in &rows {
        let dep: Uuid = r.try_get(0).map_err(map)?;
        let kind: String = r.try_get(1).map_err(map)?;
        let status: String = r.try_get(2).map_err(map)?;
        let kind = EdgeKind::parse(&kind)
            .ok_or_else(|| crate::error::corrupt(format!("task_deps.kind holds {kind:?}")))?;
        match offload_store::dependency_unmet(TaskId(dep), kind, Some(codec::status(&status)?)) {
            Ok(true) => unmet += 1,
            Ok(false) => {}
            Err(v) => {
                return Err(StoreError::Conflict(format!(
                    "task {id} cannot be retried: {}",
                    v.message
                )));
            }
        }
    }
    Ok(unmet)
}

/// `task_resolve_blocked`: settles up to `limit` `blocked` tasks whose
/// edges say they should not be blocked (every edge met: unblocked; a
/// `success` edge to a failed or aborted dependency: aborted, cascading),
/// skipping rows other transactions hold. One transaction; returns how
/// many tasks changed, cascades included.
pub(crate) async fn resolve_blocked(
    store: &PgStore,
    limit: u32,
    now: DateTime<Utc>,
) -> StoreResult<u64> {
    if limit == 0 {
        return Ok(0);
    }
    let q = store.q();
    // A met edge: its dependency succeeded, or ended and the edge is `end`.
    let met = "(d.status = 'success' OR (e.kind = 'end' AND d.status IN ('failed', 'aborted')))";
    let sql = format!(
        "SELECT t.id, t.attempt, t.run_at, t.queue, t.has_dependents, \
         (SELECT e.dep_id FROM {q}.task_deps e JOIN {q}.tasks d ON d.id = e.dep_id \
         WHERE e.task_id = t.id AND e.kind = 'success' AND d.status IN ('failed', 'aborted') \
         ORDER BY e.dep_id LIMIT 1) AS broken, \
         NOT EXISTS (SELECT 1 FROM {q}.task_deps e JOIN {q}.tasks d ON d.id = e.dep_id \
         WHERE e.task_id = t.id AND NOT {met}) AS ready \
         FROM {q}.tasks t WHERE t.status = 'blocked' AND (\
         EXISTS (SELECT 1 FROM {q}.task_deps e JOIN {q}.tasks d ON d.id = e.dep_id \
         WHERE e.task_id = t.id AND e.kind = 'success' AND d.status IN ('failed', 'aborted')) \
         OR NOT EXISTS (SELECT 1 FROM {q}.task_deps e JOIN {q}.tasks d ON d.id = e.dep_id \
         WHERE e.task_id = t.id AND NOT {met})) \
         ORDER BY t.id LIMIT $1 FOR UPDATE OF t SKIP LOCKED"
    );
    let mut tx = store.inner.pool.begin().await.map_err(map)?;
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(map)?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut victims = Victims::default();
    let mut broken_deps = Vec::new();
    let mut ready = Vec::new();
    for r in &rows {
        let id: Uuid = r.try_get(0).map_err(map)?;
        let attempt: i32 = r.try_get(1).map_err(map)?;
        let broken: Option<Uuid> = r.try_get(5).map_err(map)?;
        if let Some(dep) = broken {
            broken_deps.push((id, dep, attempt));
        } else if r.try_get::<bool, _>(6).map_err(map)? {
            ready.push(id);
        }
    }
    let mut out = Settled::default();
    if !broken_deps.is_empty() {
        let deps: Vec<Uuid> = broken_deps.iter().map(|(_, d, _)| *d).collect();
        let statuses = statuses(store, &mut tx, &deps).await?;
        for (id, dep, attempt) in &broken_deps {
            victims.push(*id, *dep, statuses.get(dep).copied(), *attempt, now)?;
        }
        let mut cascade = Vec::new();
        for (id, has_dependents) in abort_victims(store, &mut tx, &victims, now).await? {
            out.changed.push(TaskId(id));
            if has_dependents {
                cascade.push((id, Some(Status::Aborted)));
            }
        }
        out.extend(settle(store, &mut tx, cascade, now).await?);
    }
    if !ready.is_empty() {
        let sql = format!(
            "UPDATE {q}.tasks SET deps_waiting = 0, updated_at = $2, \
             status = CASE WHEN run_at > $2 THEN 'scheduled' ELSE 'pending' END \
             WHERE id = ANY($1) AND status = 'blocked' RETURNING id, queue"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(&ready)
            .bind(now)
            .fetch_all(&mut *tx)
            .await
            .map_err(map)?;
        for r in &rows {
            out.changed.push(TaskId(r.try_get(0).map_err(map)?));
            out.queue(r.try_get(1).map_err(map)?);
        }
    }
    let mut payload = Payload::default();
    out.add_to(&mut payload);
    crate::manage::send(store, &mut tx, &payload).await?;
    tx.commit().await.map_err(map)?;
    store.local(out.notes());
    Ok(out.changed.len() as u64)
}

/// The statuses of the tasks in `ids` that exist.
async fn statuses(
    store: &PgStore,
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> StoreResult<HashMap<Uuid, Status>> {
    let sql = format!(
        "SELECT id, status FROM {}.tasks WHERE id = ANY($1)",
        store.q()
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

/// Removes every edge from or to the tasks in `ids` (deleted or purged).
pub(crate) async fn forget_edges(
    store: &PgStore,
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> StoreResult<()> {
    let q = store.q();
    let sql = format!(
        "WITH a AS (DELETE FROM {q}.task_deps WHERE dep_id = ANY($1)) \
         DELETE FROM {q}.task_deps WHERE task_id = ANY($1) AND NOT dep_id = ANY($1)"
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(ids)
        .execute(&mut *conn)
        .await
        .map_err(map)?;
    Ok(())
}
