//! Export and import of whole tasks with their history, for
//! `offload store copy`.

use sqlx::AssertSqlSafe;
use std::collections::HashMap;

use offload_store::{
    EdgeKind, MAX_EXPORT_PAGE, Notification, StoreError, StoreResult, TaskExportParams,
    TaskImportParams, TaskImportResult, TaskRecord,
};
use offload_types::{AttemptOutcome, NewTask, Status, TaskOptions, ValidationError};
use serde_json::Value;
use sqlx::Row;
use uuid::Uuid;

use crate::PgStore;
use crate::codec::{self, ATTEMPT_COLUMNS, id_json, json, millis, task_columns, uuid};
use crate::error::map;
use crate::notify::Payload;

/// One page of tasks in id order, each with its attempts.
pub(crate) async fn export(store: &PgStore, p: &TaskExportParams) -> StoreResult<Vec<TaskRecord>> {
    if !(1..=MAX_EXPORT_PAGE).contains(&p.limit) {
        return Err(StoreError::Invalid(ValidationError::new(
            "limit",
            format!("must be between 1 and {MAX_EXPORT_PAGE}, got {}", p.limit),
        )));
    }
    let q = store.q();
    let sql = format!(
        "SELECT {} FROM {q}.tasks WHERE id > $1 ORDER BY id LIMIT $2",
        task_columns("")
    );
    let after = p.after.map(uuid).unwrap_or(Uuid::nil());
    let mut tx = store.inner.pool.begin().await.map_err(map)?;
    // One snapshot for the tasks and their history.
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(map)?;
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(after)
        .bind(i64::from(p.limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(map)?;
    let tasks = codec::tasks(&rows)?;
    let ids: Vec<Uuid> = tasks.iter().map(|t| uuid(t.id)).collect();
    let sql = format!(
        "SELECT task_id, {ATTEMPT_COLUMNS} FROM {q}.task_attempts WHERE task_id = ANY($1) \
         ORDER BY task_id, seq"
    );
    let history = sqlx::query(AssertSqlSafe(sql))
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(map)?;
    let sql = format!(
        "SELECT id, coalesce(worker_id, '') FROM {q}.tasks WHERE id = ANY($1) AND status = 'running'"
    );
    let workers: HashMap<Uuid, String> = sqlx::query(AssertSqlSafe(sql))
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(map)?
        .iter()
        .map(|r| Ok((r.try_get(0).map_err(map)?, r.try_get(1).map_err(map)?)))
        .collect::<StoreResult<_>>()?;
    tx.commit().await.map_err(map)?;
    let mut by_task: HashMap<Uuid, Vec<offload_types::Attempt>> = HashMap::new();
    for r in &history {
        let id: Uuid = r.try_get(0).map_err(map)?;
        by_task.entry(id).or_default().push(codec::attempt(r, 1)?);
    }
    Ok(tasks
        .into_iter()
        .map(|task| {
            let key = uuid(task.id);
            let mut attempts = by_task.remove(&key).unwrap_or_default();
            if task.status == Status::Running {
                attempts.push(offload_types::Attempt {
                    attempt: task.attempt,
                    worker_id: workers.get(&key).cloned().unwrap_or_default(),
                    started_at: task.started_at.unwrap_or(task.updated_at),
                    finished_at: None,
                    outcome: AttemptOutcome::Running,
                    error: None,
                });
            }
            TaskRecord { task, attempts }
        })
        .collect())
}

/// Checks what a stored task must satisfy, naming the record.
fn check(i: usize, r: &TaskRecord) -> StoreResult<()> {
    let t = &r.task;
    let mut options = TaskOptions::new().queue(t.queue.clone());
    options.priority = Some(t.priority);
    options.max_attempts = Some(t.max_attempts);
    options.metadata = Some(t.metadata.clone());
    options.tags = t.tags.clone();
    options.timeout = t.timeout;
    options.retry = t.retry.clone();
    options.webhook = t.webhook.clone();
    options.depends_on = t.depends_on.clone();
    options.unique_key = t.unique_key.clone();
    options.fairness_key = t.fairness_key.clone();
    let probe = NewTask {
        id: t.id,
        name: t.name.clone(),
        input: Value::Null,
        options,
        group_id: t.group_id,
        after: t.after.clone(),
    };
    probe.validate().map_err(|v| {
        StoreError::Invalid(ValidationError::new(
            v.field,
            format!(
                "{} (record {i}, task {}; nothing was imported)",
                v.message, t.id
            ),
        ))
    })
}

/// Writes records as they are, skipping ids that exist; all or nothing.
pub(crate) async fn import(store: &PgStore, p: &TaskImportParams) -> StoreResult<TaskImportResult> {
    if p.records.is_empty() {
        return Ok(TaskImportResult::default());
    }
    let mut t = TaskCols::default();
    let mut a = AttemptCols::default();
    let mut seen = std::collections::HashSet::new();
    for (i, r) in p.records.iter().enumerate() {
        check(i, r)?;
        if !seen.insert(r.task.id) {
            return Err(StoreError::Conflict(format!(
                "task id {} appears twice in the import; nothing was imported",
                r.task.id
            )));
        }
        let ended: Vec<_> = r
            .attempts
            .iter()
            .filter(|x| x.outcome != AttemptOutcome::Running)
            .collect();
        for (seq, x) in ended.iter().enumerate() {
            a.task_ids.push(uuid(r.task.id));
            a.seqs.push(i32::try_from(seq).unwrap_or(i32::MAX));
            a.attempts
                .push(i32::try_from(x.attempt).unwrap_or(i32::MAX));
            a.workers.push(x.worker_id.clone());
            a.started.push(x.started_at);
            a.finished.push(x.finished_at.unwrap_or(r.task.updated_at));
            a.outcomes.push(x.outcome.as_str());
            a.errors.push(x.error.as_ref().map(json).transpose()?);
        }
        let running = r
            .attempts
            .iter()
            .rev()
            .find(|x| x.outcome == AttemptOutcome::Running);
        t.push(r, i32::try_from(ended.len()).unwrap_or(i32::MAX), running)?;
    }
    let q = store.q();
    let mut tx = store.inner.pool.begin().await.map_err(map)?;
    let sql = format!(
        "WITH ins AS (INSERT INTO {q}.tasks (id, name, queue, input, status, output, error, \
         progress, priority, attempt, max_attempts, run_at, timeout_ms, retry, tags, metadata, \
         abort_requested_at, worker_id, lease_token, lease_expires_at, created_at, started_at, \
         finished_at, updated_at, history, webhook, unique_key, depends_on, after, group_id, \
         fairness_key) \
         SELECT id, name, queue, input, status, output, error, progress, priority, attempt, \
         max_attempts, run_at, timeout_ms, retry, tags, metadata, abort_requested_at, worker_id, \
         CASE WHEN status = 'running' THEN gen_random_uuid() END, lease_expires_at, created_at, \
         started_at, finished_at, updated_at, history, webhook, unique_key, depends_on, after, \
         group_id, fairness_key \
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::text[], $6::jsonb[], \
         $7::jsonb[], $8::jsonb[], $9::int4[], $10::int4[], $11::int4[], $12::timestamptz[], \
         $13::int8[], $14::jsonb[], $15::jsonb[], $16::jsonb[], $17::timestamptz[], $18::text[], \
         $19::timestamptz[], $20::timestamptz[], $21::timestamptz[], $22::timestamptz[], \
         $23::timestamptz[], $24::int4[], $33::text[], $34::text[], $35::jsonb[], \
         $36::jsonb[], $37::uuid[], $38::text[]) \
         AS u(id, name, queue, input, status, output, error, progress, priority, attempt, \
         max_attempts, run_at, timeout_ms, retry, tags, metadata, abort_requested_at, worker_id, \
         lease_expires_at, created_at, started_at, finished_at, updated_at, history, webhook, \
         unique_key, depends_on, after, group_id, fairness_key) \
         ON CONFLICT (id) DO NOTHING RETURNING id, queue, status), \
         hist AS (INSERT INTO {q}.task_attempts \
         (task_id, seq, attempt, worker_id, started_at, finished_at, outcome, error) \
         SELECT h.* FROM unnest($25::uuid[], $26::int4[], $27::int4[], $28::text[], \
         $29::timestamptz[], $30::timestamptz[], $31::text[], $32::jsonb[]) \
         AS h(task_id, seq, attempt, worker_id, started_at, finished_at, outcome, error) \
         WHERE h.task_id IN (SELECT id FROM ins)) \
         SELECT queue, status, id FROM ins"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(&t.ids)
        .bind(&t.names)
        .bind(&t.queues)
        .bind(&t.inputs)
        .bind(&t.statuses)
        .bind(&t.outputs)
        .bind(&t.errors)
        .bind(&t.progress)
        .bind(&t.priorities)
        .bind(&t.attempts)
        .bind(&t.max_attempts)
        .bind(&t.run_ats)
        .bind(&t.timeouts)
        .bind(&t.retries)
        .bind(&t.tags)
        .bind(&t.metadata)
        .bind(&t.abort_requested_at)
        .bind(&t.worker_ids)
        .bind(&t.lease_expires_at)
        .bind(&t.created_at)
        .bind(&t.started_at)
        .bind(&t.finished_at)
        .bind(&t.updated_at)
        .bind(&t.history)
        .bind(&a.task_ids)
        .bind(&a.seqs)
        .bind(&a.attempts)
        .bind(&a.workers)
        .bind(&a.started)
        .bind(&a.finished)
        .bind(&a.outcomes)
        .bind(&a.errors)
        .bind(&t.webhooks)
        .bind(&t.unique_keys)
        .bind(&t.depends_on)
        .bind(&t.after)
        .bind(&t.group_ids)
        .bind(&t.fairness_keys)
        .fetch_all(&mut *tx)
        .await
        .map_err(map)?;
    let inserted: Vec<Uuid> = rows
        .iter()
        .map(|r| r.try_get(2).map_err(map))
        .collect::<StoreResult<_>>()?;
    import_edges(store, &mut tx, &p.records, &inserted).await?;
    let mut payload = Payload::default();
    let mut notes = Vec::new();
    for r in &rows {
        let queue: String = r.try_get(0).map_err(map)?;
        let status: String = r.try_get(1).map_err(map)?;
        if matches!(status.as_str(), "pending" | "scheduled") {
            payload.available(&queue);
            let n = Notification::Available { queue: Some(queue) };
            if !notes.contains(&n) {
                notes.push(n);
            }
        }
    }
    crate::manage::send(store, &mut tx, &payload).await?;
    tx.commit().await.map_err(map)?;
    store.local(notes);
    let inserted = rows.len() as u64;
    Ok(TaskImportResult {
        inserted,
        skipped: p.records.len() as u64 - inserted,
    })
}

#[derive(Default)]
struct TaskCols {
    ids: Vec<Uuid>,
    names: Vec<String>,
    queues: Vec<String>,
    inputs: Vec<Value>,
    statuses: Vec<&'static str>,
    outputs: Vec<Option<Value>>,
    errors: Vec<Option<Value>>,
    progress: Vec<Option<Value>>,
    priorities: Vec<i32>,
    attempts: Vec<i32>,
    max_attempts: Vec<i32>,
    run_ats: Vec<chrono::DateTime<chrono::Utc>>,
    timeouts: Vec<Option<i64>>,
    retries: Vec<Option<Value>>,
    tags: Vec<Value>,
    metadata: Vec<Value>,
    abort_requested_at: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    worker_ids: Vec<Option<String>>,
    lease_expires_at: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    created_at: Vec<chrono::DateTime<chrono::Utc>>,
    started_at: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    finished_at: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    updated_at: Vec<chrono::DateTime<chrono::Utc>>,
    history: Vec<i32>,
    webhooks: Vec<Option<String>>,
    unique_keys: Vec<Option<String>>,
    depends_on: Vec<Option<Value>>,
    after: Vec<Option<Value>>,
    group_ids: Vec<Option<Uuid>>,
    fairness_keys: Vec<Option<String>>,
}

impl TaskCols {
    fn push(
        &mut self,
        r: &TaskRecord,
        history: i32,
        running: Option<&offload_types::Attempt>,
    ) -> StoreResult<()> {
        let t = &r.task;
        let small = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
        self.ids.push(uuid(t.id));
        self.names.push(t.name.clone());
        self.queues.push(t.queue.clone());
        self.inputs.push(t.input.clone());
        self.statuses.push(t.status.as_str());
        self.outputs.push(t.output.clone());
        self.errors.push(t.error.as_ref().map(json).transpose()?);
        self.progress
            .push(t.progress.as_ref().map(json).transpose()?);
        self.priorities.push(t.priority);
        self.attempts.push(small(t.attempt));
        self.max_attempts.push(small(t.max_attempts));
        self.run_ats.push(t.run_at);
        self.timeouts.push(t.timeout.map(millis));
        self.retries.push(t.retry.as_ref().map(json).transpose()?);
        self.tags.push(json(&t.tags)?);
        self.metadata.push(t.metadata.clone());
        self.abort_requested_at.push(t.abort_requested_at);
        // The worker of the running attempt; a waiting or finished task's
        // last worker is in its history.
        self.worker_ids.push(
            t.worker_id
                .clone()
                .or_else(|| running.map(|a| a.worker_id.clone())),
        );
        self.lease_expires_at.push(t.lease_expires_at);
        self.created_at.push(t.created_at);
        self.started_at.push(t.started_at);
        self.finished_at.push(t.finished_at);
        self.updated_at.push(t.updated_at);
        self.history.push(history);
        self.webhooks.push(t.webhook.clone());
        self.unique_keys.push(t.unique_key.clone());
        self.depends_on.push(id_json(&t.depends_on)?);
        self.after.push(id_json(&t.after)?);
        self.group_ids.push(t.group_id.map(uuid));
        self.fairness_keys.push(t.fairness_key.clone());
        Ok(())
    }
}

#[derive(Default)]
struct AttemptCols {
    task_ids: Vec<Uuid>,
    seqs: Vec<i32>,
    attempts: Vec<i32>,
    workers: Vec<String>,
    started: Vec<chrono::DateTime<chrono::Utc>>,
    finished: Vec<chrono::DateTime<chrono::Utc>>,
    outcomes: Vec<&'static str>,
    errors: Vec<Option<Value>>,
}

/// The dependency bookkeeping of imported tasks (`inserted`; skipped ones
/// keep what the target has): their edges are recreated from
/// `depends_on` and `after` (an id in both: one `success` edge), the
/// dependencies present get `has_dependents`, as does an imported task
/// that edges stored earlier point at, and `deps_waiting` counts the
/// unmet edges to dependencies present in the target (a dependency not
/// present counts as met).
async fn import_edges(
    store: &PgStore,
    conn: &mut sqlx::PgConnection,
    records: &[TaskRecord],
    inserted: &[Uuid],
) -> StoreResult<()> {
    if inserted.is_empty() {
        return Ok(());
    }
    let q = store.q();
    let new: std::collections::HashSet<Uuid> = inserted.iter().copied().collect();
    let (mut deps, mut tasks, mut kinds) = (Vec::new(), Vec::new(), Vec::new());
    let mut dependents = Vec::new();
    for r in records.iter().filter(|r| new.contains(&uuid(r.task.id))) {
        let t = &r.task;
        let success = t.depends_on.iter().map(|d| (*d, EdgeKind::Success));
        let end = t
            .after
            .iter()
            .filter(|d| !t.depends_on.contains(d))
            .map(|d| (*d, EdgeKind::End));
        let before = deps.len();
        for (dep, kind) in success.chain(end) {
            deps.push(uuid(dep));
            tasks.push(uuid(t.id));
            kinds.push(kind.as_str());
        }
        if deps.len() > before {
            dependents.push(uuid(t.id));
        }
    }
    if !deps.is_empty() {
        let sql = format!(
            "WITH e AS (INSERT INTO {q}.task_deps (dep_id, task_id, kind) \
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[]) ON CONFLICT DO NOTHING) \
             UPDATE {q}.tasks SET has_dependents = true WHERE id = ANY($1) AND NOT has_dependents"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(&deps)
            .bind(&tasks)
            .bind(&kinds)
            .execute(&mut *conn)
            .await
            .map_err(map)?;
        let sql = format!(
            "UPDATE {q}.tasks t SET deps_waiting = (SELECT count(*) FROM {q}.task_deps e \
             JOIN {q}.tasks d ON d.id = e.dep_id WHERE e.task_id = t.id AND NOT \
             (d.status = 'success' OR (e.kind = 'end' AND d.status IN ('failed', 'aborted')))) \
             WHERE t.id = ANY($1)"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(&dependents)
            .execute(&mut *conn)
            .await
            .map_err(map)?;
    }
    let sql = format!(
        "UPDATE {q}.tasks t SET has_dependents = true WHERE t.id = ANY($1) \
         AND NOT t.has_dependents AND EXISTS (SELECT 1 FROM {q}.task_deps e WHERE e.dep_id = t.id)"
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(inserted)
        .execute(&mut *conn)
        .await
        .map_err(map)?;
    Ok(())
}
