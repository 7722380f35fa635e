//! Stored [`Limit`]s: put, list and delete (one row per scope and target,
//! the definition as JSON), the per-instance cache of the stored set
//! (at most [`LIMIT_CACHE_TTL`] old; a put or delete through the instance
//! clears it), the limited claim, and quotas at insert.
//!
//! **The limited claim** ([`claim`]) runs when a limit concerns the claim
//! (its queue's, or one of a name it may take) or the queue has tasks
//! with a fairness key. In one transaction it takes the schema's limits
//! advisory lock (only when limits concern it), so two limited claims
//! never see the same free slot; reads at most `limit × 10 + 100`
//! candidates per round (leaving out the names, key values or queue some
//! limit has no room for; see [`Saturated`]; a round that saturates some
//! is followed by another), row-locked with `SKIP LOCKED` like the fast claim (which
//! other claims of the queue may still run); reads per limit the running
//! count, the running count per key value (`input #> path`, compared as
//! JSON) and the starts in the rate window; then takes candidates
//! round-robin across fairness keys while every matching limit admits
//! them, and writes their start, one rate-log row per start under each
//! rate, and the served state of the keys.
//!
//! **Quotas** ([`insert_with_quotas`]): a batch with a fairness key whose
//! name or queue has `max_queued_per_key` is inserted in a transaction
//! (a savepoint of the caller's) holding one advisory lock per (scope,
//! target, key), after counting that key's waiting tasks.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use offload_store::{
    LIMIT_CACHE_TTL, LimitDeleteParams, LimitPutParams, LimitRecord, StoreError, StoreResult,
    TaskClaimParams,
};
use offload_types::{DEFAULT_QUEUE, Enqueued, Limit, LimitScope, NewTask, Task, TaskId};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};
use tokio::sync::Mutex;

use crate::PgStore;
use crate::codec::{self, after, json, task_columns};
use crate::error::{corrupt, map};
use crate::fairness;

/// The columns [`record`] reads, in its order.
const COLUMNS: &str = "scope, target, definition, updated_at";

/// Decodes a row of [`COLUMNS`].
fn record(row: &PgRow) -> StoreResult<LimitRecord> {
    let scope: String = row.try_get(0).map_err(map)?;
    let target: String = row.try_get(1).map_err(map)?;
    let definition: Value = row.try_get(2).map_err(map)?;
    let limit: Limit = serde_json::from_value(definition).map_err(|e| {
        corrupt(format!(
            "column limits.definition of limit {scope} {target:?}: {e}"
        ))
    })?;
    Ok(LimitRecord {
        limit,
        updated_at: row.try_get(3).map_err(map)?,
    })
}

/// The cached stored limits of one store instance.
#[derive(Debug, Default)]
pub(crate) struct LimitCache {
    state: Mutex<Option<(Instant, Arc<Vec<Limit>>)>>,
}

impl LimitCache {
    /// Forgets the cached set, so the next call reads the table.
    pub(crate) async fn invalidate(&self) {
        *self.state.lock().await = None;
    }
}

/// The stored limits, from the cache while it is younger than
/// [`LIMIT_CACHE_TTL`].
pub(crate) async fn cached(store: &PgStore) -> StoreResult<Arc<Vec<Limit>>> {
    let mut state = store.inner.limits.state.lock().await;
    if let Some((at, limits)) = state.as_ref()
        && at.elapsed() < LIMIT_CACHE_TTL
    {
        return Ok(limits.clone());
    }
    let limits = Arc::new(
        list(store)
            .await?
            .into_iter()
            .map(|r| r.limit)
            .collect::<Vec<_>>(),
    );
    *state = Some((Instant::now(), limits.clone()));
    Ok(limits)
}

/// `limit_put`: inserts or replaces the limit of its scope and target.
pub(crate) async fn put(store: &PgStore, p: &LimitPutParams) -> StoreResult<LimitRecord> {
    p.limit.validate()?;
    let sql = format!(
        "INSERT INTO {q}.limits (scope, target, definition, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (scope, target) DO UPDATE SET definition = excluded.definition, \
         updated_at = excluded.updated_at RETURNING {COLUMNS}",
        q = store.q()
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(p.limit.scope.as_str())
        .bind(&p.limit.target)
        .bind(json(&p.limit)?)
        .bind(p.now)
        .fetch_one(&store.inner.pool)
        .await
        .map_err(map);
    store.inner.limits.invalidate().await;
    record(&row?)
}

/// `limit_list`: every stored limit, `name` before `queue`, then by target.
pub(crate) async fn list(store: &PgStore) -> StoreResult<Vec<LimitRecord>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM {}.limits ORDER BY scope, target COLLATE \"C\"",
        store.q()
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .fetch_all(&store.inner.pool)
        .await
        .map_err(map)?;
    rows.iter().map(record).collect()
}

/// `limit_delete`: `false` if there was none.
pub(crate) async fn delete(store: &PgStore, p: &LimitDeleteParams) -> StoreResult<bool> {
    if p.target.contains('\0') {
        return Ok(false);
    }
    let sql = format!(
        "DELETE FROM {}.limits WHERE scope = $1 AND target = $2",
        store.q()
    );
    let done = sqlx::query(AssertSqlSafe(sql))
        .bind(p.scope.as_str())
        .bind(&p.target)
        .execute(&store.inner.pool)
        .await
        .map_err(map);
    store.inner.limits.invalidate().await;
    let deleted = done?.rows_affected() > 0;
    if deleted {
        // The rate log of a deleted limit is never read again.
        let sql = format!(
            "DELETE FROM {}.limit_starts WHERE scope = $1 AND target = $2",
            store.q()
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(p.scope.as_str())
            .bind(&p.target)
            .execute(&store.inner.pool)
            .await
            .map_err(map)?;
    }
    Ok(deleted)
}

// ---------------------------------------------------------------- claim

/// Whether `limit` bears on claims (quotas only bear on inserts).
fn bears_on_claims(limit: &Limit) -> bool {
    limit.concurrency.is_some() || limit.key_concurrency.is_some() || limit.rate.is_some()
}

/// The stored limits a claim of `p` may have to respect: its queue's, and
/// those of the names it may take.
pub(crate) async fn for_claim(store: &PgStore, p: &TaskClaimParams) -> StoreResult<Vec<Limit>> {
    let limits = cached(store).await?;
    Ok(limits
        .iter()
        .filter(|l| bears_on_claims(l))
        .filter(|l| match l.scope {
            LimitScope::Queue => l.target == p.queue,
            LimitScope::Name => p.names.as_ref().is_none_or(|n| n.contains(&l.target)),
        })
        .cloned()
        .collect())
}

/// A JSON pointer as the `text[]` path of `#>` (`/a~1b/c` → `{a/b, c}`).
pub(crate) fn pointer_path(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// The value of a task's input at `pointer`, as canonical JSON text (so
/// `1` and `"1"` differ), or `None` when the input lacks it.
fn key_value(input: &Value, pointer: &str) -> Option<String> {
    input.pointer(pointer).map(Value::to_string)
}

/// One limit as a claim applies it: the counts it read, plus what this
/// claim has taken.
#[derive(Debug)]
struct Applied {
    limit: Limit,
    pointer: Option<String>,
    /// Running tasks of its scope (plus taken).
    running: i64,
    /// Running tasks per key value (plus taken).
    by_key: HashMap<String, i64>,
    /// Starts in the rate window (plus taken).
    starts: i64,
    /// How many this claim took under it.
    taken: i64,
}

impl Applied {
    /// Whether the limit applies to `t`.
    fn matches(&self, t: &Task) -> bool {
        match self.limit.scope {
            LimitScope::Name => t.name == self.limit.target,
            LimitScope::Queue => t.queue == self.limit.target,
        }
    }

    /// The key value of `t` under this limit, if it has a key.
    fn key_of(&self, t: &Task) -> Option<String> {
        self.pointer.as_deref().and_then(|p| key_value(&t.input, p))
    }

    /// Whether taking `t` stays within the limit.
    fn admits(&self, t: &Task) -> bool {
        let l = &self.limit;
        if let Some(c) = l.concurrency
            && self.running >= i64::from(c)
        {
            return false;
        }
        if let (Some(c), Some(k)) = (l.key_concurrency, self.key_of(t))
            && self.by_key.get(&k).copied().unwrap_or(0) >= i64::from(c)
        {
            return false;
        }
        if let Some(r) = l.rate
            && self.starts >= i64::from(r.limit)
        {
            return false;
        }
        true
    }

    /// Whether the limit admits no task at all now, whatever its key:
    /// its concurrency is full or its rate has no room.
    fn full(&self) -> bool {
        let l = &self.limit;
        l.concurrency.is_some_and(|c| self.running >= i64::from(c))
            || l.rate.is_some_and(|r| self.starts >= i64::from(r.limit))
    }

    /// The key values (canonical JSON text) whose key concurrency is full.
    fn full_keys(&self) -> Vec<String> {
        let Some(c) = self.limit.key_concurrency else {
            return Vec::new();
        };
        let mut keys: Vec<String> = self
            .by_key
            .iter()
            .filter(|(_, n)| **n >= i64::from(c))
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort_unstable();
        keys
    }

    /// Counts `t` as taken.
    fn take(&mut self, t: &Task) {
        self.running += 1;
        self.starts += 1;
        self.taken += 1;
        if let Some(k) = self.key_of(t) {
            *self.by_key.entry(k).or_insert(0) += 1;
        }
    }
}

/// The column a scope's target names.
fn scope_column(scope: LimitScope) -> &'static str {
    match scope {
        LimitScope::Name => "name",
        LimitScope::Queue => "queue",
    }
}

/// What is saturated when a claim starts (read under the limits lock),
/// so its candidates leave out the tasks no limit would admit and its
/// bounded window is spent on tasks it can take: a task saturated at the
/// head of the queue (one key value, one name) never hides the others.
/// What saturates during the claim is still checked per candidate.
#[derive(Debug, Default)]
struct Saturated {
    /// A limit of the claim's queue admits nothing: take nothing.
    queue: bool,
    /// Names whose limit admits nothing.
    names: Vec<String>,
    /// Per limit with full key values: its name (`None` for a queue
    /// limit), the key's `#>` path, and the full values as JSON text.
    keys: Vec<(Option<String>, Vec<String>, Vec<String>)>,
    /// The tasks this claim took in earlier rounds (still waiting, and
    /// locked by it, until it starts them).
    taken: Vec<uuid::Uuid>,
}

impl Saturated {
    /// Works out what `applied` leaves no room for in a claim of `queue`.
    fn of(applied: &[Applied], queue: &str) -> Self {
        let mut out = Saturated::default();
        for a in applied {
            let name = match a.limit.scope {
                LimitScope::Queue if a.limit.target != queue => continue,
                LimitScope::Queue => None,
                LimitScope::Name => Some(a.limit.target.clone()),
            };
            if a.full() {
                match name {
                    None => out.queue = true,
                    Some(n) => out.names.push(n),
                }
                continue;
            }
            let keys = a.full_keys();
            if let (Some(pointer), false) = (&a.pointer, keys.is_empty()) {
                out.keys.push((name, pointer_path(pointer), keys));
            }
        }
        out
    }

    /// The candidate filter, its parameters numbered from `first` (bound
    /// by [`Saturated::bind`] in the same order). A task without the key
    /// (`input #> path` NULL) is never left out by it.
    fn sql(&self, first: usize) -> String {
        let mut n = first;
        let mut out = String::new();
        if !self.names.is_empty() {
            out.push_str(&format!(" AND name <> ALL(${n}::text[])"));
            n += 1;
        }
        if !self.taken.is_empty() {
            out.push_str(&format!(" AND id <> ALL(${n}::uuid[])"));
            n += 1;
        }
        for _ in &self.keys {
            out.push_str(&format!(
                " AND NOT ((${n}::text IS NULL OR name = ${n}::text) \
                 AND coalesce(input #> ${p}::text[] = ANY(${v}::text[]::jsonb[]), false))",
                p = n + 1,
                v = n + 2
            ));
            n += 3;
        }
        out
    }

    /// Binds the parameters of [`Saturated::sql`].
    fn bind<'q>(
        &self,
        mut query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        if !self.names.is_empty() {
            query = query.bind(self.names.clone());
        }
        if !self.taken.is_empty() {
            query = query.bind(self.taken.clone());
        }
        for (name, path, values) in &self.keys {
            query = query
                .bind(name.clone())
                .bind(path.clone())
                .bind(values.clone());
        }
        query
    }
}

/// Reads what each limit counts (inside the claim's transaction, under
/// its lock), and deletes a bounded number of rate-log rows that left the
/// window.
async fn load(
    store: &PgStore,
    conn: &mut PgConnection,
    limits: Vec<Limit>,
    now: DateTime<Utc>,
) -> StoreResult<Vec<Applied>> {
    let q = store.q();
    let mut out = Vec::with_capacity(limits.len());
    for limit in limits {
        let col = scope_column(limit.scope);
        let running: i64 = if limit.concurrency.is_some() {
            let sql =
                format!("SELECT count(*) FROM {q}.tasks WHERE status = 'running' AND {col} = $1");
            sqlx::query(AssertSqlSafe(sql))
                .bind(&limit.target)
                .fetch_one(&mut *conn)
                .await
                .map_err(map)?
                .try_get(0)
                .map_err(map)?
        } else {
            0
        };
        let pointer = limit.key_concurrency.and(limit.key_pointer());
        let mut by_key = HashMap::new();
        if let Some(pointer) = &pointer {
            let sql = format!(
                "SELECT input #> $2::text[], count(*) FROM {q}.tasks \
                 WHERE status = 'running' AND {col} = $1 AND input #> $2::text[] IS NOT NULL \
                 GROUP BY 1"
            );
            let rows = sqlx::query(AssertSqlSafe(sql))
                .bind(&limit.target)
                .bind(pointer_path(pointer))
                .fetch_all(&mut *conn)
                .await
                .map_err(map)?;
            for r in rows {
                let v: Value = r.try_get(0).map_err(map)?;
                let n: i64 = r.try_get(1).map_err(map)?;
                *by_key.entry(v.to_string()).or_insert(0) += n;
            }
        }
        let starts: i64 = if let Some(rate) = limit.rate {
            let since = now - chrono::Duration::from_std(rate.period).unwrap_or_default();
            let sql = format!(
                "DELETE FROM {q}.limit_starts WHERE ctid = ANY(ARRAY(SELECT ctid \
                 FROM {q}.limit_starts WHERE scope = $1 AND target = $2 AND at <= $3 LIMIT 1000))"
            );
            sqlx::query(AssertSqlSafe(sql))
                .bind(limit.scope.as_str())
                .bind(&limit.target)
                .bind(since)
                .execute(&mut *conn)
                .await
                .map_err(map)?;
            // Starts stamped after `now` count too: a claim's `now` is
            // taken before it waits for the lock, so a claim that got the
            // lock first may have logged a later time.
            let sql = format!(
                "SELECT count(*) FROM {q}.limit_starts \
                 WHERE scope = $1 AND target = $2 AND at > $3"
            );
            sqlx::query(AssertSqlSafe(sql))
                .bind(limit.scope.as_str())
                .bind(&limit.target)
                .bind(since)
                .fetch_one(&mut *conn)
                .await
                .map_err(map)?
                .try_get(0)
                .map_err(map)?
        } else {
            0
        };
        out.push(Applied {
            limit,
            pointer,
            running,
            by_key,
            starts,
            taken: 0,
        });
    }
    Ok(out)
}

/// The claim when limits or fairness bear on it: one transaction that
/// (when limits do) holds the schema's limits lock, so limited claims
/// never interleave; it reads the candidates (bounded, row-locked with
/// `SKIP LOCKED` as the fast claim does), takes those every limit
/// admits, round-robin across fairness keys, and writes their start, the
/// rate log and the served state.
pub(crate) async fn claim(
    store: &PgStore,
    p: &TaskClaimParams,
    limits: Vec<Limit>,
    fair: bool,
) -> StoreResult<Vec<Task>> {
    let mut tx = store.inner.pool.begin().await.map_err(map)?;
    let result = claim_in(store, &mut tx, p, limits, fair).await;
    match result {
        Ok(tasks) => {
            tx.commit().await.map_err(map)?;
            Ok(tasks)
        }
        Err(e) => {
            if let Err(r) = tx.rollback().await {
                tracing::debug!(error = %r, "rolling back a limited claim failed");
            }
            Err(e)
        }
    }
}

/// Most rounds of candidates one limited claim reads.
const MAX_CLAIM_ROUNDS: usize = 8;

/// How many candidates a claim of `limit` examines at most (per round).
fn candidate_bound(limit: u32) -> i64 {
    i64::from(limit) * 10 + 100
}

/// The body of [`claim`], inside its transaction `conn`.
async fn claim_in(
    store: &PgStore,
    conn: &mut PgConnection,
    p: &TaskClaimParams,
    limits: Vec<Limit>,
    fair: bool,
) -> StoreResult<Vec<Task>> {
    if !limits.is_empty() {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("{}:limits", store.inner.schema))
            .execute(&mut *conn)
            .await
            .map_err(map)?;
    }
    let mut applied = load(store, conn, limits, p.now).await?;
    let bound = candidate_bound(p.limit);
    let limit = usize::try_from(p.limit).unwrap_or(usize::MAX);
    let mut taken: Vec<Task> = Vec::new();
    let mut served = None;
    // Each round reads candidates leaving out what is saturated by then
    // (and what this claim took); a round that took some and refused
    // some (a key or name it saturated) is followed by another, so a
    // saturated head never hides the tasks behind it.
    for _ in 0..MAX_CLAIM_ROUNDS {
        let mut ex = Saturated::of(&applied, &p.queue);
        if ex.queue {
            break;
        }
        ex.taken = taken.iter().map(|t| codec::uuid(t.id)).collect();
        let (groups, base) = if fair {
            fair_candidates(store, conn, p, bound, &ex).await?
        } else {
            let mut all = pending(store, conn, p, bound, &ex).await?;
            all.extend(due(store, conn, p, bound, &ex).await?);
            all.sort_unstable_by_key(claim_order);
            all.truncate(usize::try_from(bound).unwrap_or(usize::MAX));
            (vec![VecDeque::from(all)], None)
        };
        served = served.or(base);
        let mut refused = false;
        let round = fairness::round_robin(groups, limit - taken.len(), |t| {
            let ok = applied.iter().filter(|a| a.matches(t)).all(|a| a.admits(t));
            if ok {
                for a in applied.iter_mut().filter(|a| a.matches(t)) {
                    a.take(t);
                }
            } else {
                refused = true;
            }
            ok
        });
        let more = !round.is_empty() && refused;
        taken.extend(round);
        if !more || taken.len() >= limit {
            break;
        }
    }
    if taken.is_empty() {
        return Ok(Vec::new());
    }
    let tasks = start(store, conn, p, &taken).await?;
    log_starts(store, conn, &applied, p.now).await?;
    if let Some(base) = served {
        mark_served(store, conn, &p.queue, &taken, base).await?;
    }
    let mut tasks = tasks;
    tasks.sort_unstable_by_key(claim_order);
    Ok(tasks)
}

/// The claim order: priority DESC, run_at, id.
fn claim_order(t: &Task) -> (std::cmp::Reverse<i32>, DateTime<Utc>, TaskId) {
    (std::cmp::Reverse(t.priority), t.run_at, t.id)
}

/// ` AND name = ANY($n)` when the claim names its tasks.
fn names_filter(p: &TaskClaimParams, n: usize) -> String {
    if p.names.is_some() {
        format!(" AND name = ANY(${n})")
    } else {
        String::new()
    }
}

/// Up to `bound` pending tasks of the queue in claim order, row-locked.
async fn pending(
    store: &PgStore,
    conn: &mut PgConnection,
    p: &TaskClaimParams,
    bound: i64,
    ex: &Saturated,
) -> StoreResult<Vec<Task>> {
    let sql = format!(
        "SELECT {cols} FROM {q}.tasks WHERE status = 'pending' AND queue = $1{names}{ex} \
         ORDER BY priority DESC, run_at, id LIMIT $2 FOR UPDATE SKIP LOCKED",
        cols = task_columns(""),
        q = store.q(),
        names = names_filter(p, 3),
        ex = ex.sql(4)
    );
    let query = sqlx::query(AssertSqlSafe(sql))
        .bind(&p.queue)
        .bind(bound)
        .bind(&p.names);
    let rows = ex.bind(query).fetch_all(&mut *conn).await.map_err(map)?;
    codec::tasks(&rows)
}

/// Up to `bound` scheduled tasks of the queue whose time has come, in
/// claim order, row-locked.
async fn due(
    store: &PgStore,
    conn: &mut PgConnection,
    p: &TaskClaimParams,
    bound: i64,
    ex: &Saturated,
) -> StoreResult<Vec<Task>> {
    let sql = format!(
        "SELECT {cols} FROM {q}.tasks WHERE status = 'scheduled' AND queue = $1 \
         AND run_at <= $3{names}{ex} \
         ORDER BY priority DESC, run_at, id LIMIT $2 FOR UPDATE SKIP LOCKED",
        cols = task_columns(""),
        q = store.q(),
        names = names_filter(p, 4),
        ex = ex.sql(5)
    );
    let query = sqlx::query(AssertSqlSafe(sql))
        .bind(&p.queue)
        .bind(bound)
        .bind(p.now)
        .bind(&p.names);
    let rows = ex.bind(query).fetch_all(&mut *conn).await.map_err(map)?;
    codec::tasks(&rows)
}

/// The candidates of a fair claim, grouped by key in serving order, and
/// the queue's served counter before this claim.
///
/// The keys with pending tasks are found by a skip scan of
/// `tasks_pending_fair` (one probe per key); the first keys in serving
/// order get up to `bound / keys` candidates each. Keyless tasks are
/// looked for among the first `10 × bound` pending tasks of the queue,
/// and due scheduled tasks among the first `bound`.
async fn fair_candidates(
    store: &PgStore,
    conn: &mut PgConnection,
    p: &TaskClaimParams,
    bound: i64,
    ex: &Saturated,
) -> StoreResult<(Vec<VecDeque<Task>>, Option<i64>)> {
    let q = store.q();
    let sql = format!(
        "WITH RECURSIVE keys(k) AS ( \
         (SELECT fairness_key FROM {q}.tasks WHERE status = 'pending' AND queue = $1 \
         AND fairness_key IS NOT NULL ORDER BY fairness_key LIMIT 1) \
         UNION ALL \
         SELECT (SELECT t.fairness_key FROM {q}.tasks t WHERE t.status = 'pending' \
         AND t.queue = $1 AND t.fairness_key > keys.k ORDER BY t.fairness_key LIMIT 1) \
         FROM keys WHERE keys.k IS NOT NULL) \
         SELECT k FROM keys WHERE k IS NOT NULL LIMIT {MAX_FAIR_KEYS}"
    );
    let mut keys: Vec<String> = sqlx::query(AssertSqlSafe(sql))
        .bind(&p.queue)
        .fetch_all(&mut *conn)
        .await
        .map_err(map)?
        .iter()
        .map(|r| r.try_get::<String, _>(0).map_err(map))
        .collect::<StoreResult<_>>()?;
    let due = due(store, conn, p, bound, ex).await?;
    keys.push(fairness::KEYLESS.to_owned());
    for t in &due {
        keys.push(fairness::bucket(t).to_owned());
    }
    keys.sort_unstable();
    keys.dedup();

    let sql = format!(
        "SELECT key, served FROM {q}.fairness_served WHERE queue = $1 AND key = ANY($2) \
         UNION ALL SELECT NULL, coalesce(max(served), 0) FROM {q}.fairness_served \
         WHERE queue = $1"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(&p.queue)
        .bind(&keys)
        .fetch_all(&mut *conn)
        .await
        .map_err(map)?;
    let mut served = HashMap::new();
    let mut base = 0i64;
    for r in rows {
        let key: Option<String> = r.try_get(0).map_err(map)?;
        let n: i64 = r.try_get(1).map_err(map)?;
        match key {
            Some(k) => {
                served.insert(k, n);
            }
            None => base = n,
        }
    }
    fairness::order_keys(&mut keys, &served);
    keys.truncate(usize::try_from(bound).unwrap_or(usize::MAX));
    let per_key = (bound / i64::try_from(keys.len()).unwrap_or(1).max(1)).max(1);

    let keyed: Vec<&String> = keys.iter().filter(|k| !k.is_empty()).collect();
    let mut all = due;
    if !keyed.is_empty() {
        let sql = format!(
            "SELECT {cols} FROM {q}.tasks t WHERE t.id IN (SELECT x.id \
             FROM unnest($2::text[]) AS k(key), LATERAL (SELECT id FROM {q}.tasks \
             WHERE status = 'pending' AND queue = $1 AND fairness_key = k.key{names}{ex} \
             ORDER BY priority DESC, run_at, id LIMIT $3) x) \
             AND t.status = 'pending' FOR UPDATE OF t SKIP LOCKED",
            cols = task_columns("t"),
            names = names_filter(p, 4),
            ex = ex.sql(5)
        );
        let query = sqlx::query(AssertSqlSafe(sql))
            .bind(&p.queue)
            .bind(&keyed)
            .bind(per_key)
            .bind(&p.names);
        let rows = ex.bind(query).fetch_all(&mut *conn).await.map_err(map)?;
        all.extend(codec::tasks(&rows)?);
    }
    if keys.iter().any(String::is_empty) {
        let sql = format!(
            "SELECT {cols} FROM {q}.tasks t WHERE t.id IN (SELECT w.id FROM (SELECT id, \
             fairness_key, priority, run_at FROM {q}.tasks WHERE status = 'pending' \
             AND queue = $1{names}{ex} ORDER BY priority DESC, run_at, id LIMIT $2) w \
             WHERE w.fairness_key IS NULL ORDER BY w.priority DESC, w.run_at, w.id LIMIT $3) \
             AND t.status = 'pending' FOR UPDATE OF t SKIP LOCKED",
            cols = task_columns("t"),
            names = names_filter(p, 4),
            ex = ex.sql(5)
        );
        let query = sqlx::query(AssertSqlSafe(sql))
            .bind(&p.queue)
            .bind(bound.saturating_mul(10))
            .bind(per_key)
            .bind(&p.names);
        let rows = ex.bind(query).fetch_all(&mut *conn).await.map_err(map)?;
        all.extend(codec::tasks(&rows)?);
    }
    all.sort_unstable_by_key(claim_order);
    let mut by_key: HashMap<String, VecDeque<Task>> = HashMap::new();
    for t in all {
        by_key
            .entry(fairness::bucket(&t).to_owned())
            .or_default()
            .push_back(t);
    }
    let groups = keys
        .iter()
        .filter_map(|k| by_key.remove(k))
        .collect::<Vec<_>>();
    Ok((groups, Some(base)))
}

/// Most fairness keys of one queue a fair claim looks at.
const MAX_FAIR_KEYS: i64 = 10_000;

/// Starts the taken tasks (re-checking that they still wait) with their
/// `task.started` events; returns them as started.
async fn start(
    store: &PgStore,
    conn: &mut PgConnection,
    p: &TaskClaimParams,
    taken: &[Task],
) -> StoreResult<Vec<Task>> {
    let q = store.q();
    let ids: Vec<uuid::Uuid> = taken.iter().map(|t| codec::uuid(t.id)).collect();
    let sql = format!(
        "WITH claimed AS (UPDATE {q}.tasks t SET status = 'running', attempt = t.attempt + 1, \
         worker_id = $2, lease_token = gen_random_uuid(), lease_expires_at = $3, \
         started_at = $4, updated_at = $4, progress = NULL \
         WHERE t.id = ANY($1) AND t.status IN ('pending', 'scheduled') RETURNING {cols}), \
         ev AS (INSERT INTO {q}.events (at, kind, task_id, name, queue, attempt, data) \
         SELECT $4, 'task.started', id, name, queue, attempt, \
         jsonb_build_object('worker_id', $2::text) FROM claimed) \
         SELECT * FROM claimed",
        cols = task_columns("t")
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(&ids)
        .bind(&p.worker_id)
        .bind(after(p.now, p.lease))
        .bind(p.now)
        .fetch_all(&mut *conn)
        .await
        .map_err(map)?;
    codec::tasks(&rows)
}

/// Writes one rate-log row per start under each rate limit.
async fn log_starts(
    store: &PgStore,
    conn: &mut PgConnection,
    applied: &[Applied],
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let mut scopes = Vec::new();
    let mut targets = Vec::new();
    for a in applied.iter().filter(|a| a.limit.rate.is_some()) {
        for _ in 0..a.taken {
            scopes.push(a.limit.scope.as_str());
            targets.push(a.limit.target.as_str());
        }
    }
    if scopes.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO {}.limit_starts (scope, target, at) \
         SELECT s, t, $3 FROM unnest($1::text[], $2::text[]) AS u(s, t)",
        store.q()
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(&scopes)
        .bind(&targets)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(map)?;
    Ok(())
}

/// Records when each key was served: the queue's counter goes on from
/// `base`, one step per task taken, and a key keeps its last step.
async fn mark_served(
    store: &PgStore,
    conn: &mut PgConnection,
    queue: &str,
    taken: &[Task],
    base: i64,
) -> StoreResult<()> {
    // Sorted: concurrent claims upsert the rows in the same order, so
    // they never wait on each other in a cycle.
    let mut last: BTreeMap<&str, i64> = BTreeMap::new();
    for (i, t) in taken.iter().enumerate() {
        last.insert(
            fairness::bucket(t),
            base + 1 + i64::try_from(i).unwrap_or(i64::MAX - base - 1),
        );
    }
    let (keys, steps): (Vec<&str>, Vec<i64>) = last.into_iter().unzip();
    let sql = format!(
        "INSERT INTO {}.fairness_served (queue, key, served) \
         SELECT $1, k, s FROM unnest($2::text[], $3::int8[]) AS u(k, s) \
         ON CONFLICT (queue, key) DO UPDATE SET served = excluded.served",
        store.q()
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(queue)
        .bind(&keys)
        .bind(&steps)
        .execute(&mut *conn)
        .await
        .map_err(map)?;
    Ok(())
}

// ---------------------------------------------------------------- quota

/// One quota a batch must respect: scope, target, fairness key, the
/// limit's `max_queued_per_key`, and how many tasks of the batch it
/// counts.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Quota {
    scope: LimitScope,
    target: String,
    key: String,
    max: u32,
    batch: i64,
}

/// The quotas that bear on `tasks` (empty when no task has a fairness
/// key, without reading the limits).
pub(crate) async fn quotas_for(store: &PgStore, tasks: &[NewTask]) -> StoreResult<Vec<Quota>> {
    if tasks.iter().all(|t| t.options.fairness_key.is_none()) {
        return Ok(Vec::new());
    }
    let limits = cached(store).await?;
    let mut quotas: Vec<Quota> = Vec::new();
    for t in tasks {
        let Some(key) = &t.options.fairness_key else {
            continue;
        };
        let queue = t.options.queue.as_deref().unwrap_or(DEFAULT_QUEUE);
        for l in limits.iter() {
            let Some(max) = l.max_queued_per_key else {
                continue;
            };
            let hit = match l.scope {
                LimitScope::Name => l.target == t.name,
                LimitScope::Queue => l.target == queue,
            };
            if !hit {
                continue;
            }
            match quotas
                .iter_mut()
                .find(|q| q.scope == l.scope && q.target == l.target && &q.key == key)
            {
                Some(q) => q.batch += 1,
                None => quotas.push(Quota {
                    scope: l.scope,
                    target: l.target.clone(),
                    key: key.clone(),
                    max,
                    batch: 1,
                }),
            }
        }
    }
    quotas.sort();
    Ok(quotas)
}

/// Inserts a batch some quota bears on, all or nothing, in a transaction
/// (a savepoint of the caller's): the advisory lock of each (scope,
/// target, key) in a fixed order, then the count of its waiting tasks;
/// any count plus the batch's share over the quota refuses the batch with
/// `QuotaExceeded`. The insert itself is the usual one; its wake-up is
/// delivered by the listener once the transaction commits.
pub(crate) async fn insert_with_quotas(
    store: &PgStore,
    conn: &mut PgConnection,
    tasks: &[NewTask],
    quotas: &[Quota],
    now: DateTime<Utc>,
) -> StoreResult<Vec<Enqueued>> {
    crate::hot::batch_rows(tasks, now)?;
    let mut tx = conn.begin().await.map_err(map)?;
    let result = async {
        check_quotas(store, &mut tx, quotas).await?;
        crate::hot::insert_unchecked(store, &mut tx, tasks, now, false).await
    }
    .await;
    match result {
        Ok(enqueued) => {
            tx.commit().await.map_err(map)?;
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

/// Locks and counts each quota's waiting tasks; `QuotaExceeded` for the
/// first the batch would pass.
async fn check_quotas(
    store: &PgStore,
    conn: &mut PgConnection,
    quotas: &[Quota],
) -> StoreResult<()> {
    let q = store.q();
    for quota in quotas {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!(
                "{}:quota:{}:{}:{}",
                store.inner.schema,
                quota.scope.as_str(),
                quota.target,
                quota.key
            ))
            .execute(&mut *conn)
            .await
            .map_err(map)?;
    }
    for quota in quotas {
        let col = scope_column(quota.scope);
        let sql = format!(
            "SELECT count(*) FROM {q}.tasks WHERE fairness_key = $1 AND {col} = $2 \
             AND status IN ('scheduled', 'blocked', 'pending')"
        );
        let count: i64 = sqlx::query(AssertSqlSafe(sql))
            .bind(&quota.key)
            .bind(&quota.target)
            .fetch_one(&mut *conn)
            .await
            .map_err(map)?
            .try_get(0)
            .map_err(map)?;
        if count + quota.batch > i64::from(quota.max) {
            return Err(StoreError::QuotaExceeded(format!(
                "fairness key {:?} of {} {:?} has {count} waiting tasks; {} more would pass \
                 its quota max_queued_per_key = {}; nothing was inserted",
                quota.key,
                quota.scope.as_str(),
                quota.target,
                quota.batch,
                quota.max
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_become_text_paths() {
        assert_eq!(pointer_path("/customer_id"), vec!["customer_id"]);
        assert_eq!(pointer_path("/customer/id"), vec!["customer", "id"]);
        assert_eq!(pointer_path("/a~1b/c~0d"), vec!["a/b", "c~d"]);
        let l = Limit::name("i").per_key("a/b", 1);
        assert_eq!(
            l.key_pointer().map(|p| pointer_path(&p)),
            Some(vec!["a/b".to_owned()])
        );
    }

    #[test]
    fn key_values_compare_as_json() {
        let one = key_value(&serde_json::json!({"k": 1}), "/k");
        let text = key_value(&serde_json::json!({"k": "1"}), "/k");
        assert!(one.is_some() && text.is_some() && one != text);
        assert_eq!(key_value(&serde_json::json!({"x": 1}), "/k"), None);
    }
}
