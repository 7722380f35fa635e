//! Unique keys: serialising the inserts of one key, finding the task that
//! holds it, and merging a new enqueue into a waiting holder.
//!
//! Every insert of a task with a key first takes a transaction-scoped
//! advisory lock on `hashtextextended(<schema> || ':unique:' || key, 0)`,
//! so two inserts of one key never both decide from the same holder; the
//! locks of a batch are taken in one statement in the order of their
//! hashes, so batches sharing keys cannot deadlock on each other. The
//! lock is held until the transaction ends (for
//! [`PgStore::insert_in`](crate::PgStore::insert_in): the application's).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use offload_store::StoreResult;
use offload_types::{Status, TaskId, UniqueHolder};
use serde_json::Value;
use sqlx::{AssertSqlSafe, PgConnection, Row};
use uuid::Uuid;

use crate::PgStore;
use crate::codec;
use crate::error::map;

/// Takes the advisory locks of `keys` (in one statement, in hash order).
pub(crate) async fn lock_keys(
    store: &PgStore,
    conn: &mut PgConnection,
    keys: &[String],
) -> StoreResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    // The aggregate consumes the sorted subquery row by row, so the locks
    // are taken in hash order.
    let sql = "SELECT count(pg_advisory_xact_lock(h)) FROM (SELECT DISTINCT \
               hashtextextended($1 || ':unique:' || k, 0) AS h FROM unnest($2::text[]) AS k \
               ORDER BY 1) s";
    sqlx::query(sql)
        .bind(&store.inner.schema)
        .bind(keys)
        .execute(&mut *conn)
        .await
        .map_err(map)?;
    Ok(())
}

/// The newest task holding each of `keys` (`ORDER BY created_at DESC, id
/// DESC`), read after [`lock_keys`], so no other insert can add a newer
/// one before this transaction ends. Waiting holders are then locked and
/// read again (a claim could have started one meanwhile), so merging an
/// enqueue into one cannot race with its claim.
pub(crate) async fn holders(
    store: &PgStore,
    conn: &mut PgConnection,
    keys: &[String],
) -> StoreResult<HashMap<String, UniqueHolder>> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let q = store.q();
    let sql = format!(
        "SELECT k, h.id, h.status, h.created_at, h.run_at, h.started_at \
         FROM unnest($1::text[]) AS k CROSS JOIN LATERAL (SELECT id, status, created_at, \
         run_at, started_at FROM {q}.tasks WHERE unique_key = k \
         ORDER BY created_at DESC, id DESC LIMIT 1) h"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(keys)
        .fetch_all(&mut *conn)
        .await
        .map_err(map)?;
    let mut out = HashMap::with_capacity(rows.len());
    for r in &rows {
        let key: String = r.try_get(0).map_err(map)?;
        out.insert(key, holder(r, 1)?);
    }
    let waiting: Vec<Uuid> = out
        .values()
        .filter(|h| h.status.is_waiting())
        .map(|h| codec::uuid(h.id))
        .collect();
    if waiting.is_empty() {
        return Ok(out);
    }
    let sql = format!(
        "SELECT id, status, created_at, run_at, started_at FROM {q}.tasks \
         WHERE id = ANY($1) ORDER BY id FOR UPDATE"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(&waiting)
        .fetch_all(&mut *conn)
        .await
        .map_err(map)?;
    let fresh: HashMap<TaskId, UniqueHolder> = rows
        .iter()
        .map(|r| holder(r, 0).map(|h| (h.id, h)))
        .collect::<StoreResult<_>>()?;
    // A holder deleted meanwhile is gone; its key has no holder then.
    out.retain(|_, h| !h.status.is_waiting() || fresh.contains_key(&h.id));
    for h in out.values_mut() {
        if let Some(f) = fresh.get(&h.id) {
            *h = *f;
        }
    }
    Ok(out)
}

/// Reads a holder from columns `first..first + 5` (id, status,
/// created_at, run_at, started_at).
fn holder(r: &sqlx::postgres::PgRow, first: usize) -> StoreResult<UniqueHolder> {
    let id: Uuid = r.try_get(first).map_err(map)?;
    let status: String = r.try_get(first + 1).map_err(map)?;
    Ok(UniqueHolder {
        id: TaskId(id),
        status: codec::status(&status)?,
        created_at: r.try_get(first + 2).map_err(map)?,
        run_at: r.try_get(first + 3).map_err(map)?,
        started_at: r.try_get(first + 4).map_err(map)?,
    })
}

/// A stored waiting holder's new input and maybe `run_at` (with the status
/// to match).
#[derive(Debug, Clone)]
pub(crate) struct HolderUpdate {
    /// The holder.
    pub(crate) id: TaskId,
    /// Its new input.
    pub(crate) input: Value,
    /// Its new start time and status, when they change.
    pub(crate) run_at: Option<(DateTime<Utc>, Status)>,
}

/// Writes merged enqueues into their stored holders (locked by
/// [`holders`]); returns each holder's id, queue and status afterwards.
pub(crate) async fn update_holders(
    store: &PgStore,
    conn: &mut PgConnection,
    updates: &[HolderUpdate],
    now: DateTime<Utc>,
) -> StoreResult<Vec<(TaskId, String, Status)>> {
    if updates.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = updates.iter().map(|u| codec::uuid(u.id)).collect();
    let inputs: Vec<Value> = updates.iter().map(|u| u.input.clone()).collect();
    let run_ats: Vec<Option<DateTime<Utc>>> =
        updates.iter().map(|u| u.run_at.map(|(r, _)| r)).collect();
    let statuses: Vec<Option<&'static str>> = updates
        .iter()
        .map(|u| u.run_at.map(|(_, s)| s.as_str()))
        .collect();
    let sql = format!(
        "UPDATE {}.tasks t SET input = u.input, run_at = coalesce(u.run_at, t.run_at), \
         status = coalesce(u.status, t.status), updated_at = $5 \
         FROM unnest($1::uuid[], $2::jsonb[], $3::timestamptz[], $4::text[]) \
         AS u(id, input, run_at, status) WHERE t.id = u.id \
         RETURNING t.id, t.queue, t.status",
        store.q()
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(&ids)
        .bind(&inputs)
        .bind(&run_ats)
        .bind(&statuses)
        .bind(now)
        .fetch_all(&mut *conn)
        .await
        .map_err(crate::hot::insert_error)?;
    rows.iter()
        .map(|r| {
            let id: Uuid = r.try_get(0).map_err(map)?;
            let status: String = r.try_get(2).map_err(map)?;
            Ok((
                TaskId(id),
                r.try_get(1).map_err(map)?,
                codec::status(&status)?,
            ))
        })
        .collect()
}
