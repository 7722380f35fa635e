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
//!   the tasks together; a failing insert rolls the key back too;
//! - it did not: a live key holds the row, which this request now has
//!   locked, so reading it (a new statement sees the committed winner)
//!   gives a stable answer: the same fingerprint replays its ids, another
//!   is a conflict. Nothing is written.

use offload_store::{
    IdempotencyKey, IdempotentInsert, PurgeBeforeParams, StoreError, StoreResult, TaskInsertParams,
};
use offload_types::TaskId;
use sqlx::{AssertSqlSafe, Row};
use uuid::Uuid;

use crate::PgStore;
use crate::codec::uuid;
use crate::error::map;

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
        tx.commit().await.map_err(map)?;
        return Ok(IdempotentInsert {
            ids: inserted,
            replayed: false,
        });
    }
    // A live key: the upsert locked its row, so this read is the answer.
    let read = format!(
        "SELECT fingerprint, task_ids, expires_at FROM {q}.idempotency_keys WHERE key = $1"
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
    Ok(IdempotentInsert {
        ids: stored
            .into_iter()
            .map(|u| TaskId::from_bytes(u.into_bytes()))
            .collect(),
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
