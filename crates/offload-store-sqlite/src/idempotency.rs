//! Inserts under an idempotency key, and the checks every insert shares.
//!
//! An idempotent insert is one writer command: it reads the key, and
//! either answers from it (replay or conflict, writing nothing) or runs the
//! very insert of `task_insert_many` ([`write::insert`], or
//! [`crate::flow::insert`] when a task has a unique key, dependencies or a
//! group) and stores the key beside the tasks. The single writer (and `BEGIN IMMEDIATE` across processes)
//! serialises commands, so two requests with one key never both insert.
//! Keys keep the task ids as one blob of 16-byte ids, in the caller's
//! order, and what each enqueue did (`outcomes`, a JSON array of outcome
//! names; NULL when every task was created, as plain batches are).

use chrono::{DateTime, Utc};
use offload_store::{IdempotencyKey, IdempotentInsert, StoreError, StoreResult, TaskInsertParams};
use offload_types::{EnqueueOutcome, Enqueued, TaskId, ValidationError};
use rusqlite::OptionalExtension;

use crate::codec::{NewRow, json, micros};
use crate::error::{corrupt, map};
use crate::write;
use crate::writer::WriteCtx;

/// Validates and encodes a batch for [`write::insert`] (all or nothing:
/// the first bad task fails the whole call), and refuses an id given twice.
/// Returns the rows and the ids in the caller's order.
pub(crate) fn prepare_insert(params: &TaskInsertParams) -> StoreResult<(Vec<NewRow>, Vec<TaskId>)> {
    let many = params.tasks.len() > 1;
    let mut rows = Vec::with_capacity(params.tasks.len());
    for (i, task) in params.tasks.iter().enumerate() {
        let row = NewRow::prepare(task, params.now).map_err(|e| match e {
            StoreError::Invalid(v) if many => StoreError::Invalid(ValidationError::new(
                v.field,
                format!(
                    "{} (task {i} of the batch; nothing was inserted)",
                    v.message
                ),
            )),
            other => other,
        })?;
        rows.push(row);
    }
    let ids: Vec<TaskId> = params.tasks.iter().map(|t| t.id).collect();
    if many {
        let mut seen = std::collections::HashSet::with_capacity(ids.len());
        if let Some(dup) = ids.iter().find(|id| !seen.insert(**id)) {
            return Err(StoreError::Conflict(format!(
                "task id {dup} appears twice in the batch; nothing was inserted"
            )));
        }
    }
    Ok((rows, ids))
}

/// An idempotency key in stored form.
#[derive(Debug, Clone)]
pub(crate) struct KeyRow {
    pub(crate) key: String,
    pub(crate) fingerprint: String,
    pub(crate) expires_at: i64,
}

impl KeyRow {
    /// Validates `key` and encodes it.
    pub(crate) fn prepare(key: &IdempotencyKey) -> StoreResult<Self> {
        key.validate()?;
        Ok(Self {
            key: key.key.clone(),
            fingerprint: key.fingerprint.clone(),
            expires_at: micros(key.expires_at),
        })
    }
}

/// The writer command of `task_insert_idempotent`: answers from a live key
/// or inserts `rows` (as `task_insert_many` does) and stores the key with
/// the ids and outcomes of the answer.
pub(crate) fn insert(
    ctx: &mut WriteCtx<'_>,
    key: &KeyRow,
    rows: &[NewRow],
    now: i64,
) -> StoreResult<IdempotentInsert> {
    type Held = (String, Vec<u8>, Option<String>, i64);
    let held: Option<Held> = ctx
        .conn
        .prepare_cached(
            "SELECT fingerprint, task_ids, outcomes, expires_at FROM idempotency_keys \
             WHERE key = ?1",
        )
        .map_err(map)?
        .query_row([&key.key], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()
        .map_err(map)?;
    if let Some((fingerprint, ids, outcomes, expires_at)) = held
        && expires_at > now
    {
        if fingerprint != key.fingerprint {
            return Err(conflict(&key.key, expires_at));
        }
        return Ok(IdempotentInsert {
            tasks: decode(&ids, outcomes.as_deref())?,
            replayed: true,
        });
    }
    let (tasks, outcomes) = if rows.iter().any(NewRow::has_flow) {
        let tasks = crate::flow::insert(ctx, rows, now)?;
        let names: Vec<&str> = tasks.iter().map(|t| t.outcome.as_str()).collect();
        (tasks, Some(json(&names)?))
    } else {
        write::insert(ctx, rows, now)?;
        let tasks = rows
            .iter()
            .map(|r| Enqueued::created(TaskId::from_bytes(r.id)))
            .collect();
        (tasks, None)
    };
    let ids: Vec<u8> = tasks.iter().flat_map(|t| *t.id.as_bytes()).collect();
    ctx.conn
        .prepare_cached(
            "INSERT INTO idempotency_keys (key, fingerprint, task_ids, outcomes, created_at, \
             expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint, \
             task_ids = excluded.task_ids, outcomes = excluded.outcomes, \
             created_at = excluded.created_at, expires_at = excluded.expires_at",
        )
        .map_err(map)?
        .execute(rusqlite::params![
            key.key,
            key.fingerprint,
            ids,
            outcomes,
            now,
            key.expires_at
        ])
        .map_err(map)?;
    Ok(IdempotentInsert {
        tasks,
        replayed: false,
    })
}

/// The stored answer of a key: its ids with their outcomes (all
/// `created` when none are stored).
fn decode(ids: &[u8], outcomes: Option<&str>) -> StoreResult<Vec<Enqueued>> {
    let ids = decode_ids(ids)?;
    let Some(outcomes) = outcomes else {
        return Ok(ids.into_iter().map(Enqueued::created).collect());
    };
    let outcomes: Vec<EnqueueOutcome> = serde_json::from_str(outcomes).map_err(|e| {
        corrupt(format!(
            "column idempotency_keys.outcomes holds bad JSON: {e}"
        ))
    })?;
    if outcomes.len() != ids.len() {
        return Err(corrupt(format!(
            "idempotency key holds {} ids but {} outcomes",
            ids.len(),
            outcomes.len()
        )));
    }
    Ok(ids
        .into_iter()
        .zip(outcomes)
        .map(|(id, outcome)| Enqueued { id, outcome })
        .collect())
}

/// The answer to a live key reused with another request.
fn conflict(key: &str, expires_at: i64) -> StoreError {
    let until = DateTime::<Utc>::from_timestamp_micros(expires_at)
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| expires_at.to_string());
    StoreError::Conflict(format!(
        "idempotency key {key:?} was used with a different request (another \
         fingerprint); it holds until {until}: send the same request again or use a new key"
    ))
}

/// The stored ids: 16 bytes each, in order.
fn decode_ids(blob: &[u8]) -> StoreResult<Vec<TaskId>> {
    let (chunks, rest) = blob.as_chunks::<16>();
    if !rest.is_empty() {
        return Err(corrupt(format!(
            "column idempotency_keys.task_ids holds {} bytes, not a multiple of 16",
            blob.len()
        )));
    }
    Ok(chunks.iter().map(|c| TaskId::from_bytes(*c)).collect())
}

/// Deletes up to `limit` keys that expired before `before`; returns how
/// many.
pub(crate) fn purge(ctx: &mut WriteCtx<'_>, before: i64, limit: u32) -> StoreResult<u64> {
    let n = ctx
        .conn
        .prepare_cached(
            "DELETE FROM idempotency_keys WHERE key IN (SELECT key FROM idempotency_keys \
             WHERE expires_at < ?1 ORDER BY expires_at LIMIT ?2)",
        )
        .map_err(map)?
        .execute(rusqlite::params![before, i64::from(limit)])
        .map_err(map)?;
    Ok(n as u64)
}
