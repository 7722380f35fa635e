//! Inserts under an idempotency key.
//!
//! One transaction: first an upsert takes the key row, writing this
//! request's fingerprint and task ids only when the key is absent or
//! expired (`ON CONFLICT (key) DO UPDATE … WHERE expires_at <= now`). That
//! statement locks the key row whichever way it goes, and a second request
//! with the same key waits on the first one's uncommitted row (unique index
//! insertion) until it commits or rolls back. So exactly one request wins:
//!
//! - the upsert wrote the row: this request inserts its tasks through the
//!   very [`crate::hot::insert`] of `insert_in` (same checks, same
//!   notification, riding in the transaction), then commits the key and
//!   the tasks together; a failing insert rolls the key back too. When
//!   unique keys made the insert answer with other tasks or outcomes than
//!   "created", the key row stores those (ids and `outcomes`) instead;
//! - it did not: a live key holds the row, which this request now has
//!   locked, so reading it (a new statement sees the committed winner)
//!   gives a stable answer: the same fingerprint replays its ids and
//!   outcomes (a row without `outcomes`, written before they were stored,
//!   replays `created`), another is a conflict. Nothing is written.

use offload_store::{
    IdempotencyKey, IdempotentInsert, PurgeBeforeParams, StoreError, StoreResult, TaskInsertParams,
};
use offload_types::{EnqueueOutcome, Enqueued, TaskId};
use sqlx::{AssertSqlSafe, Row};
use uuid::Uuid;

use crate::PgStore;
use crate::codec::{json, uuid};
use crate::error::{corrupt, map};

/// `task_insert_idempotent`.
pub(crate) async fn insert(
    store: &PgStore,
    params: &TaskInsertParams,
    key: &IdempotencyKey,
) -> StoreResult<IdempotentInsert> {
    key.validate()?;
    let q = store.q();
    let ids: Vec<Uuid> = params.tasks.iter().map(|t| uuid(t.id)).collect();
    let mut tx = store.inner.pool.begin().await.map_err(map)?;
    let take = format!(
        "INSERT INTO {q}.idempotency_keys AS k (key, fingerprint, task_ids, created_at, \
         expires_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint, \
         task_ids = excluded.task_ids, created_at = excluded.created_at, \
         expires_at = excluded.expires_at WHERE k.expires_at <= $4 \
         RETURNING true"
    );
    let taken = sqlx::query(AssertSqlSafe(take))
        .bind(&key.key)
        .bind(&key.fingerprint)
        .bind(&ids)
        .bind(params.now)
        .bind(key.expires_at)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map)?
        .is_some();
    if taken {
        let inserted = crate::hot::insert(store, &mut tx, &params.tasks, params.now, false).await?;
        // Unique keys may answer with other tasks or other outcomes: the
        // key then stores what the insert returned, to replay it.
        let plain = inserted
            .iter()
            .zip(&params.tasks)
            .all(|(e, t)| *e == Enqueued::created(t.id));
        if !plain {
            let ids: Vec<Uuid> = inserted.iter().map(|e| uuid(e.id)).collect();
            let outcomes: Vec<&'static str> = inserted.iter().map(|e| e.outcome.as_str()).collect();
            let sql = format!(
                "UPDATE {q}.idempotency_keys SET task_ids = $2, outcomes = $3 WHERE key = $1"
            );
            sqlx::query(AssertSqlSafe(sql))
                .bind(&key.key)
                .bind(&ids)
                .bind(json(&outcomes)?)
                .execute(&mut *tx)
                .await
                .map_err(map)?;
        }
        tx.commit().await.map_err(map)?;
        return Ok(IdempotentInsert {
            tasks: inserted,
            replayed: false,
        });
    }
    // A live key: the upsert locked its row, so this read is the answer.
    let read = format!(
        "SELECT fingerprint, task_ids, expires_at, outcomes FROM {q}.idempotency_keys \
         WHERE key = $1"
    );
    let row = sqlx::query(AssertSqlSafe(read))
        .bind(&key.key)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map)?;
    // Nothing was written; a failed rollback only means the connection
    // broke, and the pool discards it.
    if let Err(e) = tx.rollback().await {
        tracing::debug!(error = %e, "rolling back an idempotency read failed");
    }
    let Some(row) = row else {
        return Err(StoreError::Unavailable(format!(
            "idempotency key {:?} changed during the request; try again",
            key.key
        )));
    };
    let fingerprint: String = row.try_get(0).map_err(map)?;
    let stored: Vec<Uuid> = row.try_get(1).map_err(map)?;
    let expires_at: chrono::DateTime<chrono::Utc> = row.try_get(2).map_err(map)?;
    if fingerprint != key.fingerprint {
        return Err(StoreError::Conflict(format!(
            "idempotency key {:?} was used with a different request (another \
             fingerprint); it holds until {}: send the same request again or use a new key",
            key.key,
            expires_at.to_rfc3339()
        )));
    }
    let outcomes: Option<Vec<EnqueueOutcome>> = row
        .try_get::<Option<serde_json::Value>, _>(3)
        .map_err(map)?
        .map(|v| {
            serde_json::from_value(v)
                .map_err(|e| corrupt(format!("idempotency key {:?} outcomes: {e}", key.key)))
        })
        .transpose()?;
    let tasks = match outcomes {
        // Rows written before outcomes were stored: every task was created.
        None => stored
            .into_iter()
            .map(|u| Enqueued::created(TaskId(u)))
            .collect(),
        Some(outcomes) if outcomes.len() == stored.len() => stored
            .into_iter()
            .zip(outcomes)
            .map(|(u, outcome)| Enqueued {
                id: TaskId(u),
                outcome,
            })
            .collect(),
        Some(outcomes) => {
            return Err(corrupt(format!(
                "idempotency key {:?} holds {} task ids and {} outcomes",
                key.key,
                stored.len(),
                outcomes.len()
            )));
        }
    };
    Ok(IdempotentInsert {
        tasks,
        replayed: true,
    })
}

/// `idempotency_purge`: bounded batches, each its own statement; keys an
/// insert holds right now are skipped.
pub(crate) async fn purge(store: &PgStore, p: &PurgeBeforeParams) -> StoreResult<u64> {
    let q = store.q();
    let sql = format!(
        "DELETE FROM {q}.idempotency_keys WHERE key IN (SELECT key FROM {q}.idempotency_keys \
         WHERE expires_at < $1 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
    );
    crate::manage::delete_before_in_batches(store, &sql, p.before, p.limit, None).await
}
