//! Stored limits (`limits`, migration 5): put, list and delete, and the
//! per-store cache the claim and the insert read them through.
//!
//! The cache lives in the store (one per [`SqliteStore`](crate::SqliteStore)
//! instance) and is reloaded, on the writer thread inside the command's
//! transaction, when older than [`LIMIT_CACHE_TTL`]; a put or delete
//! through the same instance empties it at once. Beside the limits it
//! remembers, per queue, whether pending tasks with a fairness key may
//! exist (see [`LimitCache::may_be_fair`]), so a claim that neither a limit
//! nor fairness concerns runs the plain claim and nothing more.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use offload_store::{
    LIMIT_CACHE_TTL, LimitDeleteParams, LimitPutParams, LimitRecord, StoreError, StoreResult,
};
use offload_types::{Limit, LimitScope};
use rusqlite::{Connection, OptionalExtension, Row};

use crate::codec::{json, micros, time};
use crate::error::{corrupt, map};
use crate::write::{exec, stmt};
use crate::writer::WriteCtx;

// ---------------------------------------------------------------- rows

/// A `limits` row as SQLite returns it.
#[derive(Debug, Clone)]
pub(crate) struct RawLimit {
    scope: String,
    target: String,
    definition: String,
    updated_at: i64,
}

/// The columns [`RawLimit::from_row`] reads.
const COLUMNS: &str = "scope, target, definition, updated_at";

impl RawLimit {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            scope: row.get(0)?,
            target: row.get(1)?,
            definition: row.get(2)?,
            updated_at: row.get(3)?,
        })
    }

    /// The stored limit, checked against its row's scope and target.
    fn into_limit(self) -> StoreResult<(Limit, i64)> {
        let limit: Limit = serde_json::from_str(&self.definition).map_err(|e| {
            corrupt(format!(
                "column limits.definition of {}:{} holds a bad definition: {e}",
                self.scope, self.target
            ))
        })?;
        if limit.scope.as_str() != self.scope || limit.target != self.target {
            return Err(corrupt(format!(
                "limit {}:{} holds the definition of {}:{}",
                self.scope,
                self.target,
                limit.scope.as_str(),
                limit.target
            )));
        }
        Ok((limit, self.updated_at))
    }

    /// The record.
    pub(crate) fn into_record(self) -> StoreResult<LimitRecord> {
        let (limit, updated_at) = self.into_limit()?;
        Ok(LimitRecord {
            limit,
            updated_at: time(updated_at)?,
        })
    }
}

/// A put, encoded on the caller's thread.
#[derive(Debug, Clone)]
pub(crate) struct PutRow {
    scope: &'static str,
    target: String,
    definition: String,
    now: i64,
}

impl PutRow {
    /// Checks the limit (callers validate it already; the store refuses
    /// to keep one that would not read back) and encodes it.
    pub(crate) fn prepare(params: &LimitPutParams) -> StoreResult<Self> {
        params.limit.validate().map_err(StoreError::Invalid)?;
        Ok(Self {
            scope: params.limit.scope.as_str(),
            target: params.limit.target.clone(),
            definition: json(&params.limit)?,
            now: micros(params.now),
        })
    }
}

/// Stores `row` (replacing the limit of its scope and target) and empties
/// the cache; returns the limit as stored.
pub(crate) fn put(ctx: &mut WriteCtx<'_>, row: &PutRow) -> StoreResult<RawLimit> {
    let raw = stmt(
        ctx.conn,
        &format!(
            "INSERT INTO limits (scope, target, definition, updated_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (scope, target) DO UPDATE SET definition = excluded.definition, \
             updated_at = excluded.updated_at RETURNING {COLUMNS}"
        ),
    )?
    .query_row(
        rusqlite::params![row.scope, row.target, row.definition, row.now],
        RawLimit::from_row,
    )
    .map_err(map)?;
    ctx.limits.invalidate();
    Ok(raw)
}

/// Every stored limit, by scope (`name` before `queue`) then target.
pub(crate) fn list(conn: &Connection) -> StoreResult<Vec<RawLimit>> {
    let mut s = stmt(
        conn,
        &format!("SELECT {COLUMNS} FROM limits ORDER BY scope, target"),
    )?;
    let rows = s.query_map([], RawLimit::from_row).map_err(map)?;
    rows.collect::<rusqlite::Result<_>>().map_err(map)
}

/// Deletes a limit (and its rate log) and empties the cache; `false` if
/// there was none.
pub(crate) fn delete(ctx: &mut WriteCtx<'_>, params: &LimitDeleteParams) -> StoreResult<bool> {
    let n = exec(
        ctx.conn,
        "DELETE FROM limits WHERE scope = ?1 AND target = ?2",
        &[&params.scope.as_str(), &params.target],
    )?;
    // Its rate log goes with it.
    exec(
        ctx.conn,
        "DELETE FROM limit_starts WHERE scope = ?1 AND target = ?2",
        &[&params.scope.as_str(), &params.target],
    )?;
    ctx.limits.invalidate();
    Ok(n > 0)
}

// ---------------------------------------------------------------- cache

/// The stored limits, as the claim and the insert use them.
#[derive(Debug, Default)]
pub(crate) struct Limits {
    /// Every stored limit, by scope then target.
    pub(crate) all: Vec<Limit>,
}

impl Limits {
    /// The limit of `scope` and `target`, if stored.
    pub(crate) fn find(&self, scope: LimitScope, target: &str) -> Option<&Limit> {
        self.all
            .iter()
            .find(|l| l.scope == scope && l.target == target)
    }
}

/// Whether `l` restricts claims (not only inserts).
pub(crate) fn limits_claims(l: &Limit) -> bool {
    l.concurrency.is_some() || l.key_concurrency.is_some() || l.rate.is_some()
}

/// Loads every stored limit.
fn load(conn: &Connection) -> StoreResult<Limits> {
    let all = list(conn)?
        .into_iter()
        .map(|r| r.into_limit().map(|(l, _)| l))
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(Limits { all })
}

/// One store instance's cache of the stored limits and of which queues
/// may hold pending tasks with a fairness key.
#[derive(Debug, Default)]
pub(crate) struct LimitCache {
    state: Mutex<CacheState>,
}

#[derive(Debug, Default)]
struct CacheState {
    limits: Option<(Instant, Arc<Limits>)>,
    /// Per queue: when it was last looked at, and whether pending tasks
    /// with a fairness key may exist.
    fair: HashMap<String, (Instant, bool)>,
}

impl LimitCache {
    fn state(&self) -> MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets the limits (a put or delete through this instance).
    pub(crate) fn invalidate(&self) {
        self.state().limits = None;
    }

    /// The stored limits, read through `conn` when the cached copy is
    /// older than [`LIMIT_CACHE_TTL`].
    pub(crate) fn limits(&self, conn: &Connection) -> StoreResult<Arc<Limits>> {
        if let Some((at, limits)) = &self.state().limits
            && at.elapsed() < LIMIT_CACHE_TTL
        {
            return Ok(limits.clone());
        }
        let limits = Arc::new(load(conn)?);
        self.state().limits = Some((Instant::now(), limits.clone()));
        Ok(limits)
    }

    /// Whether `queue` may hold pending tasks with a fairness key: true
    /// once this instance inserted one there, or when a look (at most
    /// once per [`LIMIT_CACHE_TTL`] per queue, through the fairness index)
    /// finds one; a claim that finds none says so through
    /// [`LimitCache::set_fair`].
    pub(crate) fn may_be_fair(&self, conn: &Connection, queue: &str) -> StoreResult<bool> {
        if let Some((at, fair)) = self.state().fair.get(queue)
            && (*fair || at.elapsed() < LIMIT_CACHE_TTL)
        {
            return Ok(*fair);
        }
        let fair = stmt(
            conn,
            "SELECT 1 FROM tasks WHERE status = 'pending' AND queue = ?1 \
             AND fairness_key IS NOT NULL LIMIT 1",
        )?
        .query_row([queue], |_| Ok(()))
        .optional()
        .map_err(map)?
        .is_some();
        self.set_fair(queue, fair);
        Ok(fair)
    }

    /// Records whether `queue` may hold pending tasks with a fairness key.
    pub(crate) fn set_fair(&self, queue: &str, fair: bool) {
        let mut state = self.state();
        match state.fair.get_mut(queue) {
            Some(entry) => *entry = (Instant::now(), fair),
            None => {
                state.fair.insert(queue.to_owned(), (Instant::now(), fair));
            }
        }
    }
}

// ---------------------------------------------------------------- claim

/// One limit a claim must respect, with what the store holds against it.
#[derive(Debug)]
struct Held<'l> {
    limit: &'l Limit,
    /// `limit.key_pointer()`, when it limits per key.
    pointer: Option<String>,
    /// Running tasks of the scope, plus those this claim took.
    running: u64,
    /// The same per key value (the value's JSON text).
    by_key: HashMap<String, u64>,
    /// Starts in the last period, plus this claim's.
    starts: u64,
    /// Tasks this claim took under the limit (rate-log rows to write).
    taken: u64,
}

/// The limits that concern one claim and their counts, so the claim can
/// ask of each candidate whether taking it keeps every limit
/// ([`Gate::admit`]). Built only when some stored limit concerns the
/// claim: a `queue` limit on its queue, or a `name` limit on a name it may
/// take.
#[derive(Debug)]
pub(crate) struct Gate<'l> {
    held: Vec<Held<'l>>,
}

/// Rate-log rows older than the period a claim deletes at most, per limit.
const PRUNE_BATCH: i64 = 1000;

/// The limits of `limits` that concern a claim of `queue` for `names`
/// (`None`: any name); `None` when there are none.
pub(crate) fn concerned<'l>(
    limits: &'l Limits,
    queue: &str,
    names: Option<&[String]>,
) -> Option<Vec<&'l Limit>> {
    let concerned: Vec<&Limit> = limits
        .all
        .iter()
        .filter(|l| limits_claims(l))
        .filter(|l| match l.scope {
            LimitScope::Queue => l.target == queue,
            LimitScope::Name => names.is_none_or(|ns| ns.contains(&l.target)),
        })
        .collect();
    (!concerned.is_empty()).then_some(concerned)
}

impl<'l> Gate<'l> {
    /// Reads what the store holds against each of `concerned` at `now`:
    /// running tasks (per key value too), starts in `(now - period, now]`
    /// (first deleting a bounded number of older rate-log rows).
    pub(crate) fn load(
        conn: &Connection,
        concerned: Vec<&'l Limit>,
        now: i64,
    ) -> StoreResult<Self> {
        let mut held = Vec::with_capacity(concerned.len());
        for limit in concerned {
            let pointer = limit.key_concurrency.and_then(|_| limit.key_pointer());
            let mut running = 0;
            let mut by_key = HashMap::new();
            if let Some(pointer) = &pointer {
                let mut s = stmt(conn, &running_sql(limit.scope, true))?;
                let mut rows = s.query([&limit.target]).map_err(map)?;
                while let Some(row) = rows.next().map_err(map)? {
                    running += 1;
                    let input: String = row.get(0).map_err(map)?;
                    if let Some(value) = key_value(&input, pointer)? {
                        *by_key.entry(value).or_insert(0) += 1;
                    }
                }
            } else if limit.concurrency.is_some() {
                running = stmt(conn, &running_sql(limit.scope, false))?
                    .query_row([&limit.target], |r| r.get::<_, i64>(0))
                    .map_err(map)?
                    .unsigned_abs();
            }
            let mut starts = 0;
            if let Some(rate) = &limit.rate {
                let since = now.saturating_sub(crate::codec::span_micros(rate.period));
                let scope = limit.scope.as_str();
                exec(
                    conn,
                    "DELETE FROM limit_starts WHERE rowid IN (SELECT rowid FROM limit_starts \
                     WHERE scope = ?1 AND target = ?2 AND at <= ?3 LIMIT ?4 + 0)",
                    &[&scope, &limit.target, &since, &PRUNE_BATCH],
                )?;
                starts = stmt(
                    conn,
                    "SELECT count(*) FROM limit_starts WHERE scope = ?1 AND target = ?2 \
                     AND at > ?3 AND at <= ?4",
                )?
                .query_row(rusqlite::params![scope, limit.target, since, now], |r| {
                    r.get::<_, i64>(0)
                })
                .map_err(map)?
                .unsigned_abs();
            }
            held.push(Held {
                limit,
                pointer,
                running,
                by_key,
                starts,
                taken: 0,
            });
        }
        Ok(Self { held })
    }

    /// Whether a task of `name` (in the claim's queue) with `input` may
    /// start under every limit; if so, counts it as taken.
    pub(crate) fn admit(&mut self, name: &str, input: &str) -> StoreResult<bool> {
        let mut keys: Vec<Option<String>> = Vec::with_capacity(self.held.len());
        for h in &self.held {
            if h.limit.scope == LimitScope::Name && h.limit.target != name {
                keys.push(None);
                continue;
            }
            if let Some(n) = h.limit.concurrency
                && h.running >= u64::from(n)
            {
                return Ok(false);
            }
            if let Some(rate) = &h.limit.rate
                && h.starts >= u64::from(rate.limit)
            {
                return Ok(false);
            }
            let key = match (&h.pointer, h.limit.key_concurrency) {
                (Some(pointer), Some(n)) => {
                    let key = key_value(input, pointer)?;
                    if let Some(k) = &key
                        && h.by_key.get(k).copied().unwrap_or(0) >= u64::from(n)
                    {
                        return Ok(false);
                    }
                    key
                }
                _ => None,
            };
            keys.push(key);
        }
        for (h, key) in self.held.iter_mut().zip(keys) {
            if h.limit.scope == LimitScope::Name && h.limit.target != name {
                continue;
            }
            h.running += 1;
            h.taken += 1;
            if h.limit.rate.is_some() {
                h.starts += 1;
            }
            if let Some(k) = key {
                *h.by_key.entry(k).or_insert(0) += 1;
            }
        }
        Ok(true)
    }

    /// What has no room before the claim reads its candidates, so the
    /// read skips it (see [`Saturated`]).
    pub(crate) fn saturated(&self) -> Saturated {
        let mut out = Saturated::default();
        let mut budget = MAX_EXCLUDED;
        for h in &self.held {
            let full = h
                .limit
                .concurrency
                .is_some_and(|n| h.running >= u64::from(n))
                || h.limit
                    .rate
                    .as_ref()
                    .is_some_and(|r| h.starts >= u64::from(r.limit));
            if full {
                if h.limit.scope == LimitScope::Queue {
                    out.queue = true;
                } else if budget > 0 && !out.names.contains(&h.limit.target) {
                    budget -= 1;
                    out.names.push(h.limit.target.clone());
                }
                continue;
            }
            let (Some(pointer), Some(n)) = (&h.pointer, h.limit.key_concurrency) else {
                continue;
            };
            let Some(path) = sql_path(pointer) else {
                continue;
            };
            let values: Vec<String> = h
                .by_key
                .iter()
                .filter(|(_, c)| **c >= u64::from(n))
                .map(|(k, _)| k.clone())
                .take(budget)
                .collect();
            if values.is_empty() {
                continue;
            }
            budget -= values.len();
            let name = (h.limit.scope == LimitScope::Name).then(|| h.limit.target.clone());
            out.keys.push((name, path, values));
        }
        out
    }

    /// Writes the rate-log rows of the tasks this claim took, at `now`.
    pub(crate) fn record(&self, conn: &Connection, now: i64) -> StoreResult<()> {
        let mut s = stmt(
            conn,
            "INSERT INTO limit_starts (scope, target, at) VALUES (?1, ?2, ?3)",
        )?;
        for h in self.held.iter().filter(|h| h.limit.rate.is_some()) {
            for _ in 0..h.taken {
                s.execute(rusqlite::params![
                    h.limit.scope.as_str(),
                    h.limit.target,
                    now
                ])
                .map_err(map)?;
            }
        }
        Ok(())
    }
}

/// Most names and key values a claim's read excludes (the per-candidate
/// checks still catch the rest).
const MAX_EXCLUDED: usize = 500;

/// What is saturated when a claim starts: it reads no candidate these
/// exclude, so its bounded window is spent on tasks it may take (the
/// per-candidate checks of [`Gate::admit`] still catch what saturates
/// during the claim).
#[derive(Debug, Default)]
pub(crate) struct Saturated {
    /// A limit of the queue itself has no room: the claim takes nothing.
    pub(crate) queue: bool,
    /// Names whose limit has no room.
    names: Vec<String>,
    /// Per-key limits: the name they apply to (`None`: the whole queue),
    /// the SQLite JSON path of the key and the values (JSON text) whose
    /// `key_concurrency` is full.
    keys: Vec<(Option<String>, String, Vec<String>)>,
}

impl Saturated {
    /// The condition (` AND ...`, empty when nothing is excluded) with its
    /// parameters numbered from `?first`, and their values in order. Key
    /// values compare as JSON text, both sides normalised by SQLite.
    pub(crate) fn filter(&self, first: usize) -> (String, Vec<String>) {
        let mut sql = String::new();
        let mut values: Vec<String> = Vec::new();
        let mark = |values: &mut Vec<String>, v: &str| {
            values.push(v.to_owned());
            format!("?{}", first + values.len() - 1)
        };
        if !self.names.is_empty() {
            let marks: Vec<String> = self.names.iter().map(|n| mark(&mut values, n)).collect();
            sql.push_str(&format!(" AND name NOT IN ({})", marks.join(", ")));
        }
        for (name, path, keys) in &self.keys {
            let path = mark(&mut values, path);
            let marks: Vec<String> = keys
                .iter()
                .map(|k| format!("json({})", mark(&mut values, k)))
                .collect();
            let held = format!("coalesce((input -> {path}) IN ({}), 0)", marks.join(", "));
            match name {
                None => sql.push_str(&format!(" AND NOT {held}")),
                Some(n) => {
                    let n = mark(&mut values, n);
                    sql.push_str(&format!(" AND NOT (name = {n} AND {held})"));
                }
            }
        }
        (sql, values)
    }
}

/// The SQLite JSON path of a JSON `pointer` whose segments are plain
/// labels (`/a/b` → `$.a.b`); `None` for others (array indexes, quoted
/// labels), which the claim then leaves to the per-candidate check.
fn sql_path(pointer: &str) -> Option<String> {
    let mut path = String::from("$");
    for segment in pointer.strip_prefix('/')?.split('/') {
        let mut chars = segment.chars();
        let plain = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !plain {
            return None;
        }
        path.push('.');
        path.push_str(segment);
    }
    Some(path)
}

/// The count of waiting tasks of `scope` target `?1` with fairness key
/// `?2`, through the scope's quota index.
fn waiting_sql(scope: LimitScope) -> String {
    format!(
        "SELECT count(*) FROM tasks WHERE {} = ?1 AND fairness_key = ?2 \
         AND status IN ('scheduled', 'blocked', 'pending')",
        scope_column(scope)
    )
}

/// The running tasks of `scope` target `?1` (their inputs when `inputs`,
/// else their count), through the (small) running index.
fn running_sql(scope: LimitScope, inputs: bool) -> String {
    format!(
        "SELECT {} FROM tasks WHERE status = 'running' AND {} = ?1",
        if inputs { "input" } else { "count(*)" },
        scope_column(scope)
    )
}

/// The `tasks` column a scope matches.
fn scope_column(scope: LimitScope) -> &'static str {
    match scope {
        LimitScope::Name => "name",
        LimitScope::Queue => "queue",
    }
}

/// The value at `pointer` in the JSON `input`, as compact JSON text (so
/// values compare as JSON: `1` and `"1"` differ); `None` when absent.
fn key_value(input: &str, pointer: &str) -> StoreResult<Option<String>> {
    let input: serde_json::Value = serde_json::from_str(input)
        .map_err(|e| corrupt(format!("column input holds bad JSON: {e}")))?;
    input.pointer(pointer).map(json).transpose()
}

// ---------------------------------------------------------------- quota

/// Refuses the batch when a task with a fairness key would put more
/// waiting tasks (`scheduled`, `blocked`, `pending`) of its name or queue
/// under that key than the scope's `max_queued_per_key`; also notes the
/// queues of tasks with a fairness key as possibly fair for the claims.
/// Rows without a fairness key cost nothing here.
pub(crate) fn check_quotas(
    ctx: &mut WriteCtx<'_>,
    rows: &[crate::codec::NewRow],
) -> StoreResult<()> {
    if rows.iter().all(|r| r.fairness_key.is_none()) {
        return Ok(());
    }
    for row in rows.iter().filter(|r| r.fairness_key.is_some()) {
        ctx.limits.set_fair(&row.queue, true);
    }
    let limits = ctx.limits.limits(ctx.conn)?;
    if !limits.all.iter().any(|l| l.max_queued_per_key.is_some()) {
        return Ok(());
    }
    // (scope, target, key) -> tasks of the batch, in first-seen order.
    let mut batch: Vec<((LimitScope, &str, &str), u64, u32)> = Vec::new();
    for row in rows {
        let Some(key) = row.fairness_key.as_deref() else {
            continue;
        };
        for (scope, target) in [
            (LimitScope::Name, row.name.as_str()),
            (LimitScope::Queue, row.queue.as_str()),
        ] {
            let Some(quota) = limits
                .find(scope, target)
                .and_then(|l| l.max_queued_per_key)
            else {
                continue;
            };
            match batch
                .iter_mut()
                .find(|(k, _, _)| *k == (scope, target, key))
            {
                Some((_, n, _)) => *n += 1,
                None => batch.push(((scope, target, key), 1, quota)),
            }
        }
    }
    for ((scope, target, key), n, quota) in batch {
        let waiting = stmt(ctx.conn, &waiting_sql(scope))?
            .query_row([target, key], |r| r.get::<_, i64>(0))
            .map_err(map)?
            .unsigned_abs();
        if waiting + n > u64::from(quota) {
            return Err(StoreError::QuotaExceeded(format!(
                "fairness key {key:?} has {waiting} waiting tasks of {} {target:?}, and {n} more \
                 would exceed its quota of {quota} (max_queued_per_key); nothing was inserted",
                scope.as_str()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(conn: &Connection, sql: &str) -> String {
        let mut s = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let rows = s
            .query_map(["x", "y"], |r| r.get::<_, String>(3))
            .unwrap_or_else(|e| panic!("{e}"));
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .unwrap_or_else(|e| panic!("{e}"))
            .join("\n")
    }

    #[test]
    fn quotas_and_running_counts_read_through_indexes() {
        let conn = Connection::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        crate::schema::migrate(&conn, std::path::Path::new(":memory:"))
            .unwrap_or_else(|e| panic!("{e}"));
        let name = plan(&conn, &waiting_sql(LimitScope::Name));
        assert!(name.contains("tasks_waiting_fair_name"), "{name}");
        let queue = plan(&conn, &waiting_sql(LimitScope::Queue));
        assert!(queue.contains("tasks_waiting_fair_queue"), "{queue}");
        for scope in [LimitScope::Name, LimitScope::Queue] {
            for inputs in [true, false] {
                let sql = running_sql(scope, inputs).replace("?1", "'x'");
                let p = conn
                    .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .and_then(|mut s| {
                        s.query_map([], |r| r.get::<_, String>(3))?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .unwrap_or_else(|e| panic!("{e}"))
                    .join("\n");
                assert!(p.contains("INDEX"), "{p}");
            }
        }
    }

    #[test]
    fn key_values_compare_as_json() {
        let value = |input: &str, p: &str| key_value(input, p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(value(r#"{"c": 1}"#, "/c"), Some("1".to_owned()));
        assert_eq!(value(r#"{"c": "1"}"#, "/c"), Some("\"1\"".to_owned()));
        assert_eq!(
            value(r#"{"c": {"id": [2]}}"#, "/c/id/0"),
            Some("2".to_owned())
        );
        assert_eq!(value(r#"{"d": 1}"#, "/c"), None);
        assert_eq!(value("null", "/c"), None);
        assert!(key_value("{", "/c").is_err());
    }
}
