//! Inserts under an idempotency key, and the checks every insert shares.
//!
//! An idempotent insert is one writer command: it reads the key, and
//! either answers from it (replay or conflict, writing nothing) or runs the
//! very [`write::insert`] of `task_insert_many` and stores the key beside
//! the tasks. The single writer (and `BEGIN IMMEDIATE` across processes)
//! serialises commands, so two requests with one key never both insert.
//! Keys keep the task ids as one blob of 16-byte ids, in the caller's order.

use chrono::{DateTime, Utc};
use offload_store::{IdempotencyKey, IdempotentInsert, StoreError, StoreResult, TaskInsertParams};
use offload_types::{TaskId, ValidationError};
use rusqlite::OptionalExtension;

use crate::codec::{NewRow, micros};
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
/// or inserts `rows` (through [`write::insert`]) and stores the key.
pub(crate) fn insert(
    ctx: &mut WriteCtx<'_>,
    key: &KeyRow,
    rows: &[NewRow],
    now: i64,
) -> StoreResult<IdempotentInsert> {
    let held: Option<(String, Vec<u8>, i64)> = ctx
        .conn
        .prepare_cached(
            "SELECT fingerprint, task_ids, expires_at FROM idempotency_keys WHERE key = ?1",
        )
        .map_err(map)?
        .query_row([&key.key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()
        .map_err(map)?;
    if let Some((fingerprint, ids, expires_at)) = held
        && expires_at > now
    {
        if fingerprint != key.fingerprint {
            return Err(conflict(&key.key, expires_at));
        }
        return Ok(IdempotentInsert {
            ids: decode_ids(&ids)?,
            replayed: true,
        });
    }
    write::insert(ctx, rows, now)?;
    let ids: Vec<u8> = rows.iter().flat_map(|r| r.id).collect();
    ctx.conn
        .prepare_cached(
            "INSERT INTO idempotency_keys (key, fingerprint, task_ids, created_at, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint, \
             task_ids = excluded.task_ids, created_at = excluded.created_at, \
             expires_at = excluded.expires_at",
        )
        .map_err(map)?
        .execute(rusqlite::params![
            key.key,
            key.fingerprint,
            ids,
            now,
            key.expires_at
        ])
        .map_err(map)?;
    Ok(IdempotentInsert {
        ids: rows.iter().map(|r| TaskId::from_bytes(r.id)).collect(),
        replayed: false,
    })
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
