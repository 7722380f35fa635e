//! The worker's hot path: insert, claim, heartbeat, progress, finish and
//! rescue. Each is one statement (one round-trip, one commit) whatever the
//! batch size: batches bind one array per column and `unnest` them, and
//! the `pg_notify` that wakes other processes rides in the same statement,
//! so it is delivered exactly when the change commits.
//!
//! Dependencies, groups and unique keys stay off this path: a batch insert
//! using them goes to [`crate::flow`], and a finish that ends a task with
//! dependents is refused by the one statement and redone in a transaction
//! that settles them ([`finish`]), so tasks without them pay nothing.
//!
//! Likewise a claim that stored limits or fairness keys concern goes to
//! [`crate::limits::claim`], and an insert a quota bears on to
//! [`crate::limits::insert_with_quotas`]; every other claim and insert
//! runs the same one statement as before.

use sqlx::AssertSqlSafe;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use offload_store::{
    EventKind, FinishOutcome, FinishResult, LeaseState, Notification, RescuedTask, StoreError,
    StoreResult, TaskClaimParams, TaskFinishParams, TaskHeartbeatParams, TaskProgressParams,
    TaskRescueParams,
};
use offload_types::{AttemptOutcome, Enqueued, NewTask, Status, Task, TaskId, ValidationError};
use serde_json::Value;
use sqlx::{Executor, PgConnection, Postgres, Row};
use uuid::Uuid;

use crate::PgStore;
use crate::codec::{self, NewRows, after, json, task_columns, uuid};
use crate::deps::Settled;
use crate::error::{map, sqlstate};
use crate::events::{NewEvent, finish_event, rescue_event};
use crate::notify::{Payload, Plan};

/// The hot statements of one schema, built once per store.
#[derive(Debug)]
pub(crate) struct Statements {
    insert: Arc<str>,
    claim_any: Arc<str>,
    claim_named: Arc<str>,
    heartbeat: Arc<str>,
    progress: Arc<str>,
    finish: Arc<str>,
}

impl Statements {
    pub(crate) fn new(q: &str) -> Self {
        Self {
            insert: Arc::from(format!(
                "WITH ins AS (INSERT INTO {q}.tasks (id, name, queue, input, status, priority, \
                 max_attempts, run_at, timeout_ms, retry, tags, metadata, webhook, created_at, \
                 updated_at, fairness_key) \
                 SELECT u.id, u.name, u.queue, u.input, u.status, u.priority, u.max_attempts, \
                 u.run_at, u.timeout_ms, u.retry, coalesce(u.tags, '[]'), \
                 coalesce(u.metadata, '{{}}'), u.webhook, $13, $13, u.fairness_key \
                 FROM unnest($1::uuid[], \
                 $2::text[], $3::text[], $4::jsonb[], $5::text[], $6::int4[], $7::int4[], \
                 $8::timestamptz[], $9::int8[], $10::jsonb[], $11::jsonb[], $12::jsonb[], \
                 $16::text[], $17::text[]) \
                 AS u(id, name, queue, input, status, priority, max_attempts, run_at, \
                 timeout_ms, retry, tags, metadata, webhook, fairness_key) RETURNING id, name, queue, status), \
                 ev AS (INSERT INTO {q}.events (at, kind, task_id, name, queue, attempt, data) \
                 SELECT $13, 'task.created', id, name, queue, 0, \
                 jsonb_build_object('status', status) FROM ins) \
                 SELECT pg_notify($14, $15) WHERE $15 IS NOT NULL"
            )),
            claim_any: claim_sql(q, false).into(),
            claim_named: claim_sql(q, true).into(),
            heartbeat: Arc::from(format!(
                "UPDATE {q}.tasks t SET lease_expires_at = $3 \
                 FROM unnest($1::uuid[], $2::uuid[]) AS u(id, token) \
                 WHERE t.id = u.id AND t.lease_token = u.token AND t.status = 'running' \
                 RETURNING t.id, u.token, t.abort_requested_at IS NOT NULL"
            )),
            progress: Arc::from(format!(
                "WITH up AS (UPDATE {q}.tasks t SET progress = u.progress, updated_at = $4 \
                 FROM unnest($1::uuid[], $2::uuid[], $3::jsonb[]) AS u(id, token, progress) \
                 WHERE t.id = u.id AND t.lease_token = u.token AND t.status = 'running' \
                 RETURNING t.id, u.token, t.abort_requested_at IS NOT NULL AS abort, t.name, \
                 t.queue, t.attempt, u.progress), \
                 ev AS (INSERT INTO {q}.events (at, kind, task_id, name, queue, attempt, data) \
                 SELECT $4, 'task.progress', id, name, queue, attempt, progress FROM up) \
                 SELECT id, token, abort, (SELECT pg_notify($5, $6) WHERE $6 IS NOT NULL) IS NULL FROM up"
            )),
            finish: finish_sql(q).into(),
        }
    }
}

/// The claim: up to `$2` ready tasks of queue `$1` (pending ones, and
/// scheduled ones whose `run_at` has come, which go straight to running),
/// in priority order, skipping rows other claimers hold; each gets a fresh
/// lease token, and its `task.started` event. `$3` worker, `$4` lease
/// expiry, `$5` now, `$6` names.
fn claim_sql(q: &str, named: bool) -> String {
    let names = if named { " AND name = ANY($6)" } else { "" };
    let cols = task_columns("t");
    format!(
        "WITH ready AS (SELECT id, priority, run_at FROM {q}.tasks \
         WHERE status = 'pending' AND queue = $1{names} \
         ORDER BY priority DESC, run_at, id LIMIT $2 FOR UPDATE SKIP LOCKED), \
         due AS (SELECT id, priority, run_at FROM {q}.tasks \
         WHERE status = 'scheduled' AND queue = $1 AND run_at <= $5{names} \
         ORDER BY priority DESC, run_at, id LIMIT $2 FOR UPDATE SKIP LOCKED), \
         picked AS (SELECT id FROM (SELECT * FROM ready UNION ALL SELECT * FROM due) c \
         ORDER BY priority DESC, run_at, id LIMIT $2), \
         claimed AS (UPDATE {q}.tasks t SET status = 'running', attempt = t.attempt + 1, \
         worker_id = $3, lease_token = gen_random_uuid(), lease_expires_at = $4, \
         started_at = $5, updated_at = $5, progress = NULL \
         FROM picked WHERE t.id = picked.id RETURNING {cols}), \
         ev AS (INSERT INTO {q}.events (at, kind, task_id, name, queue, attempt, data) \
         SELECT $5, 'task.started', id, name, queue, attempt, \
         jsonb_build_object('worker_id', $3::text) FROM claimed) \
         SELECT * FROM claimed"
    )
}

/// Ends attempts of live leases: the task's new state, the lease cleared,
/// one `task_attempts` row per attempt, and the event of each accepted
/// item that has one (kind `$13`, data `$14`; NULL kind: none), in one
/// statement, with the notification `$12` (when not NULL). Returns the
/// accepted tasks with their new status and whether they have dependents.
///
/// With `$15` false (the hot path, one statement on its own) a task with
/// dependents is not ended with a terminal status: its dependents must be
/// settled in the same commit, so such items are refused here and ended
/// again with `$15` true inside a transaction that settles them (see
/// [`finish`]). The row lock the `UPDATE` takes decides: an insert adding
/// an edge either committed `has_dependents` before (the re-checked row
/// shows it, the item goes the slow way) or waits for this commit and
/// then sees the task ended (see [`crate::deps`]).
fn finish_sql(q: &str) -> String {
    format!(
        "WITH u AS (SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::jsonb[], \
         $5::bool[], $6::jsonb[], $7::timestamptz[], $8::int4[], $9::text[], $13::text[], \
         $14::jsonb[]) \
         AS u(id, token, status, output, set_error, error, run_at, uncount, outcome, ev_kind, \
         ev_data)), \
         ended AS (UPDATE {q}.tasks t SET status = u.status, output = coalesce(u.output, t.output), \
         error = CASE WHEN u.set_error THEN u.error ELSE t.error END, \
         run_at = coalesce(u.run_at, t.run_at), attempt = t.attempt - u.uncount, \
         finished_at = CASE WHEN u.status IN ('success', 'failed', 'aborted') THEN $10 END, \
         lease_token = NULL, lease_expires_at = NULL, updated_at = $10, history = t.history + 1 \
         FROM u WHERE t.id = u.id AND t.lease_token = u.token AND t.status = 'running' \
         AND ($15 OR NOT t.has_dependents OR u.status NOT IN ('success', 'failed', 'aborted')) \
         RETURNING t.id, t.queue, t.status, t.history - 1 AS seq, t.attempt + u.uncount AS attempt, \
         t.worker_id, t.started_at, u.outcome, CASE WHEN u.set_error THEN u.error END AS error, \
         t.name, t.attempt AS now_attempt, u.ev_kind, u.ev_data, t.webhook, t.has_dependents), \
         hist AS (INSERT INTO {q}.task_attempts \
         (task_id, seq, attempt, worker_id, started_at, finished_at, outcome, error) \
         SELECT id, seq, attempt, coalesce(worker_id, ''), coalesce(started_at, $10), $10, \
         outcome, error FROM ended), \
         ev AS (INSERT INTO {q}.events (at, kind, task_id, name, queue, attempt, data) \
         SELECT $10, ev_kind, id, name, queue, now_attempt, \
         CASE WHEN webhook IS NOT NULL \
         AND ev_kind IN ('task.succeeded', 'task.failed', 'task.aborted') \
         THEN ev_data || jsonb_build_object('webhook', webhook) ELSE ev_data END FROM ended \
         WHERE ev_kind IS NOT NULL) \
         SELECT e.id, e.status, (SELECT pg_notify($11, $12) WHERE $12 IS NOT NULL) IS NULL, \
         e.has_dependents FROM ended e"
    )
}

// ---------------------------------------------------------------- insert

/// Inserts tasks in one statement, all or nothing. `local`: deliver the
/// wake-up to this process's subscribers now (the statement commits on
/// its own); otherwise the caller's transaction commits later and this
/// process's listener delivers it then.
pub(crate) async fn insert(
    store: &PgStore,
    conn: &mut PgConnection,
    tasks: &[NewTask],
    now: DateTime<Utc>,
    local: bool,
) -> StoreResult<Vec<Enqueued>> {
    if tasks.is_empty() {
        return Ok(Vec::new());
    }
    let quotas = crate::limits::quotas_for(store, tasks).await?;
    let result = if quotas.is_empty() {
        insert_unchecked(store, conn, tasks, now, local).await
    } else {
        crate::limits::insert_with_quotas(store, conn, tasks, &quotas, now).await
    };
    if result.is_ok() {
        store.inner.fair.inserted(
            tasks
                .iter()
                .filter(|t| t.options.fairness_key.is_some())
                .map(|t| {
                    t.options
                        .queue
                        .as_deref()
                        .unwrap_or(offload_types::DEFAULT_QUEUE)
                }),
        );
    }
    result
}

/// [`insert`] without the quota check: the flow path for a batch that
/// needs it, else one statement.
pub(crate) async fn insert_unchecked(
    store: &PgStore,
    conn: &mut PgConnection,
    tasks: &[NewTask],
    now: DateTime<Utc>,
    local: bool,
) -> StoreResult<Vec<Enqueued>> {
    if tasks.iter().any(crate::flow::needs_flow) {
        return crate::flow::insert(store, conn, tasks, now, local).await;
    }
    let rows = batch_rows(tasks, now)?;
    let ids: Vec<TaskId> = tasks.iter().map(|t| t.id).collect();
    let mut payload = Payload::default();
    for queue in &rows.queues {
        payload.available(queue);
    }
    // Inside the caller's transaction the notification must ride along
    // (commit time is unknown here), from instance "-" so this process's
    // own listener delivers it too. A standalone insert is debounced.
    let (plan, flight) = if local {
        let (plan, flight) = store.inner.debounce.plan(payload);
        (plan, Some(flight))
    } else {
        (Plan::Inline(payload), None)
    };
    let text = match &plan {
        Plan::Inline(p) if local => Some(store.payload(p)),
        Plan::Inline(p) => Some(format!("-\n{}", p.body())),
        Plan::Deferred => None,
    };
    let result = rows
        .bind_columns(sqlx::query(AssertSqlSafe(store.inner.sql.insert.clone())))
        .bind(now)
        .bind(&store.inner.channel)
        .bind(&text)
        .bind(&rows.webhooks)
        .bind(&rows.fairness_keys)
        .execute(&mut *conn)
        .await;
    drop(flight);
    if let Err(e) = result {
        if let (Plan::Inline(p), true) = (plan, local) {
            store.inner.debounce.restore(p);
            store.schedule_trailing();
        }
        return Err(insert_error(e));
    }
    if local {
        if matches!(plan, Plan::Deferred) {
            store.schedule_trailing();
        }
        let mut seen = HashSet::new();
        store.local(
            rows.queues
                .iter()
                .filter(|q| seen.insert(q.as_str()))
                .map(|q| Notification::Available {
                    queue: Some(q.clone()),
                }),
        );
    }
    Ok(ids.into_iter().map(Enqueued::created).collect())
}

/// A batch's column arrays: every task validated (an error names the
/// task's place in a batch of several), and no id twice.
pub(crate) fn batch_rows(tasks: &[NewTask], now: DateTime<Utc>) -> StoreResult<NewRows> {
    let many = tasks.len() > 1;
    let mut rows = NewRows::default();
    for (i, task) in tasks.iter().enumerate() {
        rows.push(task, now).map_err(|e| in_batch(e, i, many))?;
    }
    if many {
        let mut seen = HashSet::with_capacity(tasks.len());
        if let Some(dup) = tasks.iter().map(|t| t.id).find(|id| !seen.insert(*id)) {
            return Err(StoreError::Conflict(format!(
                "task id {dup} appears twice in the batch; nothing was inserted"
            )));
        }
    }
    Ok(rows)
}

/// An `Invalid` error of task `i` of a batch of several, naming it.
pub(crate) fn in_batch(e: StoreError, i: usize, many: bool) -> StoreError {
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

/// Maps an insert's error: an existing id is a conflict naming it, text
/// PostgreSQL cannot store is invalid input.
pub(crate) fn insert_error(e: sqlx::Error) -> StoreError {
    match sqlstate(&e).as_deref() {
        Some("23505") => {
            let detail = match &e {
                sqlx::Error::Database(db) => db
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .and_then(|pg| pg.detail().map(str::to_owned)),
                _ => None,
            };
            let id = detail
                .as_deref()
                .and_then(|d| d.split_once("=(")?.1.split_once(')').map(|(id, _)| id))
                .unwrap_or("of the batch");
            StoreError::Conflict(format!("task {id} already exists; nothing was inserted"))
        }
        Some("22P05") | Some("22021") => StoreError::Invalid(ValidationError::new(
            "input",
            format!(
                "holds text PostgreSQL cannot store (such as \\u0000); nothing was inserted ({e})"
            ),
        )),
        _ => map(e),
    }
}

// ---------------------------------------------------------------- claim

fn claim_order(t: &Task) -> (std::cmp::Reverse<i32>, DateTime<Utc>, TaskId) {
    (std::cmp::Reverse(t.priority), t.run_at, t.id)
}

/// Leases up to `limit` ready tasks.
pub(crate) async fn claim(store: &PgStore, p: &TaskClaimParams) -> StoreResult<Vec<Task>> {
    if p.limit == 0 || p.names.as_ref().is_some_and(Vec::is_empty) {
        return Ok(Vec::new());
    }
    offload_store::check_claim_names(p.names.as_deref())?;
    let limits = crate::limits::for_claim(store, p).await?;
    let fair = crate::fairness::active(store, &p.queue, p.now).await?;
    if !limits.is_empty() || fair {
        return crate::limits::claim(store, p, limits, fair).await;
    }
    let sql = &store.inner.sql;
    let limit = i64::from(p.limit);
    let expires = after(p.now, p.lease);
    let query = match &p.names {
        None => sqlx::query(AssertSqlSafe(sql.claim_any.clone())),
        Some(_) => sqlx::query(AssertSqlSafe(sql.claim_named.clone())),
    };
    let mut query = query
        .bind(&p.queue)
        .bind(limit)
        .bind(&p.worker_id)
        .bind(expires)
        .bind(p.now);
    if let Some(names) = &p.names {
        query = query.bind(names);
    }
    let rows = query.fetch_all(&store.inner.pool).await.map_err(map)?;
    let mut tasks = codec::tasks(&rows)?;
    tasks.sort_unstable_by_key(claim_order);
    Ok(tasks)
}

/// `EXPLAIN` of each hot statement with sample arguments: (statement,
/// plan lines). `EXPLAIN` plans without running anything.
pub(crate) async fn explain_hot(store: &PgStore) -> StoreResult<Vec<(&'static str, Vec<String>)>> {
    let sql = &store.inner.sql;
    let mut conn = store.inner.pool.acquire().await.map_err(map)?;
    let now = Utc::now();
    let ids = vec![Uuid::now_v7(), Uuid::now_v7()];
    let tokens = vec![Uuid::new_v4(), Uuid::new_v4()];
    let lines = |rows: Vec<sqlx::postgres::PgRow>| -> StoreResult<Vec<String>> {
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(map))
            .collect()
    };
    let mut out = Vec::new();
    for (label, text, named) in [
        ("claim", &sql.claim_any, false),
        ("claim_named", &sql.claim_named, true),
    ] {
        let mut query = sqlx::query(AssertSqlSafe(format!("EXPLAIN {text}")))
            .bind("default")
            .bind(100i64)
            .bind("explain")
            .bind(now)
            .bind(now);
        if named {
            query = query.bind(vec!["a".to_owned(), "b".to_owned()]);
        }
        out.push((
            label,
            lines(query.fetch_all(&mut *conn).await.map_err(map)?)?,
        ));
    }
    let rows = sqlx::query(AssertSqlSafe(format!("EXPLAIN {}", sql.heartbeat)))
        .bind(&ids)
        .bind(&tokens)
        .bind(now)
        .fetch_all(&mut *conn)
        .await
        .map_err(map)?;
    out.push(("heartbeat", lines(rows)?));
    let rows = sqlx::query(AssertSqlSafe(format!("EXPLAIN {}", sql.finish)))
        .bind(&ids)
        .bind(&tokens)
        .bind(vec!["success", "success"])
        .bind(vec![Some(Value::Null), Some(Value::Null)])
        .bind(vec![true, true])
        .bind(vec![None::<Value>, None])
        .bind(vec![None::<DateTime<Utc>>, None])
        .bind(vec![0i32, 0])
        .bind(vec!["success", "success"])
        .bind(now)
        .bind(&store.inner.channel)
        .bind("explain")
        .bind(vec![Some("task.succeeded"), None])
        .bind(vec![Some(Value::Object(Default::default())), None])
        .bind(false)
        .fetch_all(&mut *conn)
        .await
        .map_err(map)?;
    out.push(("finish", lines(rows)?));
    Ok(out)
}

// ---------------------------------------------------------------- leases

/// Per lease, in input order: live (and abort requested) or not. Keyed
/// by id and token: a stale token of a live task is not live.
fn lease_states<'a>(
    leases: impl Iterator<Item = &'a offload_store::LeaseRef>,
    live: &HashMap<(Uuid, Uuid), bool>,
) -> Vec<LeaseState> {
    leases
        .map(|l| {
            let abort = live.get(&(uuid(l.id), l.lease_token.0));
            LeaseState {
                id: l.id,
                live: abort.is_some(),
                abort_requested: abort.copied().unwrap_or(false),
            }
        })
        .collect()
}

fn id_abort_rows(rows: &[sqlx::postgres::PgRow]) -> StoreResult<HashMap<(Uuid, Uuid), bool>> {
    rows.iter()
        .map(|r| {
            Ok((
                (r.try_get(0).map_err(map)?, r.try_get(1).map_err(map)?),
                r.try_get(2).map_err(map)?,
            ))
        })
        .collect()
}

/// Renews live leases.
pub(crate) async fn heartbeat(
    store: &PgStore,
    p: &TaskHeartbeatParams,
) -> StoreResult<Vec<LeaseState>> {
    if p.leases.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = p.leases.iter().map(|l| uuid(l.id)).collect();
    let tokens: Vec<Uuid> = p.leases.iter().map(|l| l.lease_token.0).collect();
    let rows = sqlx::query(AssertSqlSafe(store.inner.sql.heartbeat.clone()))
        .bind(&ids)
        .bind(&tokens)
        .bind(after(p.now, p.lease))
        .fetch_all(&store.inner.pool)
        .await
        .map_err(map)?;
    let live = id_abort_rows(&rows)?;
    Ok(lease_states(p.leases.iter(), &live))
}

/// Records progress of live leases.
pub(crate) async fn progress(
    store: &PgStore,
    p: &TaskProgressParams,
) -> StoreResult<Vec<LeaseState>> {
    if p.updates.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = p.updates.iter().map(|u| uuid(u.lease.id)).collect();
    let tokens: Vec<Uuid> = p.updates.iter().map(|u| u.lease.lease_token.0).collect();
    let progress = p
        .updates
        .iter()
        .map(|u| {
            let mut pr = u.progress.clone();
            pr.percent = pr.percent.min(100);
            json(&pr)
        })
        .collect::<StoreResult<Vec<Value>>>()?;
    let task_ids: Vec<TaskId> = p.updates.iter().map(|u| u.lease.id).collect();
    let mut payload = Payload::default();
    payload.changed(&task_ids);
    let (plan, flight) = store.inner.debounce.plan(payload);
    let rows = sqlx::query(AssertSqlSafe(store.inner.sql.progress.clone()))
        .bind(&ids)
        .bind(&tokens)
        .bind(&progress)
        .bind(p.now)
        .bind(&store.inner.channel)
        .bind(store.plan_text(&plan))
        .fetch_all(&store.inner.pool)
        .await;
    drop(flight);
    let rows = store.after_hot_write(plan, rows.map_err(map), |rows| !rows.is_empty())?;
    let live = id_abort_rows(&rows)?;
    let changed: Vec<TaskId> = live
        .keys()
        .map(|(id, _)| TaskId::from_bytes(*id.as_bytes()))
        .collect();
    if !changed.is_empty() {
        store.local([Notification::Changed { ids: Some(changed) }]);
    }
    Ok(lease_states(p.updates.iter().map(|u| &u.lease), &live))
}

// ---------------------------------------------------------------- finish

/// Column arrays of a finish batch.
#[derive(Debug, Default)]
struct Ends {
    ids: Vec<Uuid>,
    tokens: Vec<Uuid>,
    statuses: Vec<&'static str>,
    outputs: Vec<Option<Value>>,
    set_errors: Vec<bool>,
    errors: Vec<Option<Value>>,
    run_ats: Vec<Option<DateTime<Utc>>>,
    uncounts: Vec<i32>,
    outcomes: Vec<&'static str>,
    event_kinds: Vec<Option<&'static str>>,
    event_data: Vec<Option<Value>>,
}

/// How one attempt ends, as columns.
struct End {
    status: Status,
    output: Option<Value>,
    set_error: bool,
    error: Option<Value>,
    run_at: Option<DateTime<Utc>>,
    uncount: bool,
    outcome: AttemptOutcome,
    event: Option<NewEvent>,
}

impl End {
    fn of(outcome: &FinishOutcome, now: DateTime<Utc>) -> StoreResult<Self> {
        let e = offload_store::attempt_end(outcome, now);
        Ok(End {
            status: e.status,
            output: e.output.cloned(),
            set_error: e.set_error,
            error: e.error.map(json).transpose()?,
            run_at: e.run_at,
            uncount: e.uncount,
            outcome: e.outcome,
            event: finish_event(outcome)?,
        })
    }
}

impl Ends {
    fn push(&mut self, id: TaskId, token: Uuid, e: End) {
        self.ids.push(uuid(id));
        self.tokens.push(token);
        self.statuses.push(e.status.as_str());
        self.outputs.push(e.output);
        self.set_errors.push(e.set_error);
        self.errors.push(e.error);
        self.run_ats.push(e.run_at);
        self.uncounts.push(i32::from(e.uncount));
        self.outcomes.push(e.outcome.as_str());
        let (kind, data) = e.event.unzip();
        self.event_kinds.push(kind.map(EventKind::as_str));
        self.event_data.push(data);
    }
}

/// An accepted end: the task's new status and whether it has dependents.
type Accepted = HashMap<Uuid, (Status, bool)>;

/// Runs the finish statement on `conn` (`settle`: also end tasks with
/// dependents, see [`finish_sql`]); per accepted task its new status and
/// whether it has dependents.
async fn end_attempts<'e, E>(
    store: &PgStore,
    conn: E,
    ends: &Ends,
    now: DateTime<Utc>,
    note: Option<String>,
    settle: bool,
) -> StoreResult<Accepted>
where
    E: Executor<'e, Database = Postgres>,
{
    let rows = sqlx::query(AssertSqlSafe(store.inner.sql.finish.clone()))
        .bind(&ends.ids)
        .bind(&ends.tokens)
        .bind(&ends.statuses)
        .bind(&ends.outputs)
        .bind(&ends.set_errors)
        .bind(&ends.errors)
        .bind(&ends.run_ats)
        .bind(&ends.uncounts)
        .bind(&ends.outcomes)
        .bind(now)
        .bind(&store.inner.channel)
        .bind(note)
        .bind(&ends.event_kinds)
        .bind(&ends.event_data)
        .bind(settle)
        .fetch_all(conn)
        .await
        .map_err(map)?;
    rows.iter()
        .map(|r| {
            let id: Uuid = r.try_get(0).map_err(map)?;
            let status: String = r.try_get(1).map_err(map)?;
            let has_dependents: bool = r.try_get(3).map_err(map)?;
            Ok((id, (codec::status(&status)?, has_dependents)))
        })
        .collect()
}

/// Ends attempts inside the transaction `conn` and settles the dependents
/// of the tasks that reached a terminal status and have some, in the same
/// transaction (whose later statements see every edge committed before the
/// finish locked its rows, see [`crate::deps`]). `payload` (plus what
/// settling changed) is sent with `pg_notify` before the caller commits.
async fn end_and_settle(
    store: &PgStore,
    conn: &mut PgConnection,
    ends: &Ends,
    now: DateTime<Utc>,
    mut payload: Payload,
) -> StoreResult<(Accepted, Settled)> {
    let accepted = end_attempts(store, &mut *conn, ends, now, None, true).await?;
    let ended: Vec<(Uuid, Option<Status>)> = accepted
        .iter()
        .filter(|(_, (s, deps))| *deps && s.is_terminal())
        .map(|(id, (s, _))| (*id, Some(*s)))
        .collect();
    let settled = if ended.is_empty() {
        Settled::default()
    } else {
        crate::deps::settle(store, conn, ended, now).await?
    };
    if !accepted.is_empty() {
        settled.add_to(&mut payload);
        crate::manage::send(store, conn, &payload).await?;
    }
    Ok((accepted, settled))
}

/// Local notifications for ended attempts: the tasks changed, and the
/// queues of those waiting again have work.
fn ended_notes(
    accepted: &[(TaskId, Status)],
    queues: impl Iterator<Item = String>,
) -> Vec<Notification> {
    let mut notes = vec![Notification::Changed {
        ids: Some(accepted.iter().map(|(id, _)| *id).collect()),
    }];
    let mut seen = HashSet::new();
    for q in queues {
        if seen.insert(q.clone()) {
            notes.push(Notification::Available { queue: Some(q) });
        }
    }
    notes
}

/// What other processes hear of a finish: the tasks changed, and (when
/// some attempt puts its task back to waiting) that some queue has work.
fn ends_payload(items: &[offload_store::TaskFinish]) -> Payload {
    let ids: Vec<TaskId> = items.iter().map(|i| i.lease.id).collect();
    let mut payload = Payload::default();
    payload.changed(&ids);
    if items.iter().any(|i| {
        matches!(
            i.outcome,
            FinishOutcome::Retry { .. } | FinishOutcome::Snooze { .. } | FinishOutcome::Release
        )
    }) {
        payload.available_somewhere();
    }
    payload
}

/// Records finished attempts; stale leases are refused per item.
///
/// The hot path is the one finish statement of [`finish_sql`], committing
/// on its own. It refuses to end a task that has dependents with a
/// terminal status (as it refuses a stale lease); every refused item is
/// tried once more in a transaction that ends it and settles its
/// dependents in the same commit ([`end_and_settle`]). So a batch of
/// tasks without dependents costs exactly what it did, and only tasks
/// with dependents (or stale leases, which are refused again) pay for a
/// transaction.
pub(crate) async fn finish(
    store: &PgStore,
    p: &TaskFinishParams,
) -> StoreResult<Vec<FinishResult>> {
    if p.items.is_empty() {
        return Ok(Vec::new());
    }
    let mut ends = Ends::default();
    let mut seen = HashSet::with_capacity(p.items.len());
    let mut first = Vec::with_capacity(p.items.len());
    for item in &p.items {
        let end = End::of(&item.outcome, p.now)?;
        if !Status::Running.can_become(end.status) {
            return Err(StoreError::InvalidTransition {
                id: item.lease.id,
                from: Status::Running,
                to: end.status,
            });
        }
        // A task twice in one batch: the first item counts, the second
        // finds the lease gone, as if sent in a later call.
        if seen.insert(item.lease.id) {
            first.push((item, end));
        }
    }
    // Bound in id order, so the rows are locked in the order the
    // settling of dependencies locks them (see [`crate::flow`]): two
    // batches, or a batch and a settle, never wait on each other in a
    // cycle.
    first.sort_unstable_by_key(|(item, _)| item.lease.id);
    let first: Vec<&offload_store::TaskFinish> = first
        .into_iter()
        .map(|(item, end)| {
            ends.push(item.lease.id, item.lease.lease_token.0, end);
            item
        })
        .collect();
    let (plan, flight) = store.inner.debounce.plan(ends_payload(&p.items));
    let accepted = end_attempts(
        store,
        &store.inner.pool,
        &ends,
        p.now,
        store.plan_text(&plan),
        false,
    )
    .await;
    drop(flight);
    let mut accepted = store.after_hot_write(plan, accepted, |a| !a.is_empty())?;
    let mut settled = Settled::default();
    let again: Vec<&&offload_store::TaskFinish> = first
        .iter()
        .filter(|i| !accepted.contains_key(&uuid(i.lease.id)))
        .collect();
    if !again.is_empty() {
        let mut slow = Ends::default();
        for item in &again {
            slow.push(
                item.lease.id,
                item.lease.lease_token.0,
                End::of(&item.outcome, p.now)?,
            );
        }
        let items: Vec<offload_store::TaskFinish> = again.iter().map(|i| (**i).clone()).collect();
        let mut tx = store.inner.pool.begin().await.map_err(map)?;
        let (more, s) = end_and_settle(store, &mut tx, &slow, p.now, ends_payload(&items)).await?;
        if more.is_empty() {
            // Only stale leases: nothing was written.
            if let Err(e) = tx.rollback().await {
                tracing::debug!(error = %e, "rolling back an empty finish failed");
            }
        } else {
            tx.commit().await.map_err(map)?;
        }
        accepted.extend(more);
        settled = s;
    }
    let mut out = Vec::with_capacity(p.items.len());
    let mut counted = HashSet::new();
    let mut refused = Vec::new();
    for item in &p.items {
        let key = uuid(item.lease.id);
        match accepted.get(&key) {
            Some((status, _)) if counted.insert(key) => out.push(FinishResult {
                id: item.lease.id,
                accepted: true,
                status: Some(*status),
            }),
            _ => {
                refused.push(key);
                out.push(FinishResult {
                    id: item.lease.id,
                    accepted: false,
                    status: None,
                });
            }
        }
    }
    // The finish has committed: what follows only informs, and must not
    // turn a stored outcome into an error if the connection drops now.
    if !refused.is_empty() {
        match statuses_of(store, &refused).await {
            Ok(current) => {
                for r in out.iter_mut().filter(|r| !r.accepted) {
                    r.status = current.get(&uuid(r.id)).copied();
                }
            }
            Err(e) => tracing::debug!(error = %e, "statuses of refused finishes unknown"),
        }
    }
    if !accepted.is_empty() {
        let acc: Vec<(TaskId, Status)> = accepted
            .iter()
            .map(|(id, (s, _))| (TaskId::from_bytes(*id.as_bytes()), *s))
            .collect();
        notify_ended(store, &acc).await;
    }
    if !settled.is_empty() {
        store.local(settled.notes());
    }
    Ok(out)
}

/// Tells local subscribers about ended attempts (after commit; best
/// effort: when the queues of retried tasks cannot be read, every queue is
/// woken).
async fn notify_ended(store: &PgStore, acc: &[(TaskId, Status)]) {
    let notes = match waiting_queues(store, acc).await {
        Ok(queues) => ended_notes(acc, queues.into_iter()),
        Err(e) => {
            tracing::debug!(error = %e, "queues of retried tasks unknown; waking every queue");
            let mut notes = ended_notes(acc, std::iter::empty());
            notes.push(Notification::Available { queue: None });
            notes
        }
    };
    store.local(notes);
}

/// The queues of the tasks in `acc` that wait again (for local wake-ups).
async fn waiting_queues(store: &PgStore, acc: &[(TaskId, Status)]) -> StoreResult<Vec<String>> {
    let waiting: Vec<Uuid> = acc
        .iter()
        .filter(|(_, s)| !s.is_terminal())
        .map(|(id, _)| uuid(*id))
        .collect();
    if waiting.is_empty() || !store.inner.notifier.hub.has_subscribers() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT DISTINCT queue FROM {}.tasks WHERE id = ANY($1)",
        store.q()
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(&waiting)
        .fetch_all(&store.inner.pool)
        .await
        .map_err(map)?;
    rows.iter()
        .map(|r| r.try_get::<String, _>(0).map_err(map))
        .collect()
}

/// The current status of each of `ids` that exists.
async fn statuses_of(store: &PgStore, ids: &[Uuid]) -> StoreResult<HashMap<Uuid, Status>> {
    let sql = format!(
        "SELECT id, status FROM {}.tasks WHERE id = ANY($1)",
        store.q()
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(ids)
        .fetch_all(&store.inner.pool)
        .await
        .map_err(map)?;
    rows.iter()
        .map(|r| {
            let id: Uuid = r.try_get(0).map_err(map)?;
            let s: String = r.try_get(1).map_err(map)?;
            Ok((id, codec::status(&s)?))
        })
        .collect()
}

// ---------------------------------------------------------------- rescue

/// Puts tasks whose lease expired before `now` back to work, fails them
/// when no attempts are left, or aborts them when an abort was asked.
pub(crate) async fn rescue(store: &PgStore, p: &TaskRescueParams) -> StoreResult<Vec<RescuedTask>> {
    if p.limit == 0 {
        return Ok(Vec::new());
    }
    // Most rounds find nothing: one statement, no transaction, then.
    let probe = format!(
        "SELECT EXISTS (SELECT 1 FROM {}.tasks WHERE status = 'running' \
         AND lease_expires_at < $1)",
        store.q()
    );
    let any: bool = sqlx::query(AssertSqlSafe(probe))
        .bind(p.now)
        .fetch_one(&store.inner.pool)
        .await
        .map_err(map)?
        .try_get(0)
        .map_err(map)?;
    if !any {
        return Ok(Vec::new());
    }
    let mut tx = store.inner.pool.begin().await.map_err(map)?;
    let sql = format!(
        "SELECT id, lease_token, attempt, max_attempts, abort_requested_at IS NOT NULL, run_at \
         FROM {}.tasks WHERE status = 'running' AND lease_expires_at < $1 \
         ORDER BY lease_expires_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        store.q()
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(p.now)
        .bind(i64::from(p.limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(map)?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut ends = Ends::default();
    for r in &rows {
        let id: Uuid = r.try_get(0).map_err(map)?;
        let token: Option<Uuid> = r.try_get(1).map_err(map)?;
        let attempt: i32 = r.try_get(2).map_err(map)?;
        let max_attempts: i32 = r.try_get(3).map_err(map)?;
        let abort: bool = r.try_get(4).map_err(map)?;
        let run_at: DateTime<Utc> = r.try_get(5).map_err(map)?;
        let Some(token) = token else { continue };
        let (status, record) = offload_store::rescue_outcome(
            u32::try_from(attempt).unwrap_or(0),
            u32::try_from(max_attempts).unwrap_or(0),
            abort,
            p.now,
        );
        ends.push(
            TaskId::from_bytes(*id.as_bytes()),
            token,
            End {
                status,
                output: None,
                set_error: true,
                error: Some(json(&record)?),
                run_at: None,
                uncount: false,
                outcome: AttemptOutcome::LeaseExpired,
                event: Some(rescue_event(status, &record, run_at)?),
            },
        );
    }
    let mut note = Payload::default();
    let rescued_ids: Vec<TaskId> = ends
        .ids
        .iter()
        .map(|id| TaskId::from_bytes(*id.as_bytes()))
        .collect();
    note.changed(&rescued_ids).available_somewhere();
    let (accepted, settled) = end_and_settle(store, &mut tx, &ends, p.now, note).await?;
    tx.commit().await.map_err(map)?;
    if !settled.is_empty() {
        store.local(settled.notes());
    }
    let rescued: Vec<RescuedTask> = ends
        .ids
        .iter()
        .filter_map(|id| {
            accepted.get(id).map(|(s, _)| RescuedTask {
                id: TaskId::from_bytes(*id.as_bytes()),
                status: *s,
            })
        })
        .collect();
    let acc: Vec<(TaskId, Status)> = rescued.iter().map(|r| (r.id, r.status)).collect();
    if !acc.is_empty() {
        notify_ended(store, &acc).await;
    }
    Ok(rescued)
}
