//! Webhooks: subscriptions, the dispatcher's cursor and the task secret
//! (rows of `webhook_state`), and the durable queue of deliveries with
//! their attempts. Nothing here notifies.
//!
//! Each call is one statement (the task secret: at most two), so each is
//! its own transaction:
//!
//! - **enqueue** moves the cursor with a compare-and-set (an `UPDATE …
//!   WHERE value = expected`, or an `INSERT … ON CONFLICT DO NOTHING` when
//!   no cursor was expected) and inserts the deliveries only when that
//!   moved it. A second dispatcher racing with the same expected cursor
//!   waits on the first one's row lock (or its uncommitted insert), then
//!   sees the cursor moved and writes nothing. A delivery id that exists
//!   fails the statement, so nothing is written.
//! - **claim** takes due pending rows with `FOR UPDATE SKIP LOCKED`, so
//!   concurrent senders never take the same delivery, and moves them to
//!   the end of the lease.
//! - **record** advances the delivery only if it is still pending with
//!   exactly the attempts the sender saw, fencing a sender whose claim
//!   lapsed and was taken over.

use chrono::{DateTime, Utc};
use offload_store::{
    Delivery, DeliveryAttempt, DeliveryClaimParams, DeliveryListParams, DeliveryRecordParams,
    DeliveryStatus, EventKind, PurgeBeforeParams, StoreError, StoreResult, WebhookEnqueueParams,
    WebhookRecord,
};
use offload_types::TaskId;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Row};
use uuid::Uuid;

use crate::PgStore;
use crate::codec::{after, uuid};
use crate::error::{corrupt, map, sqlstate};

/// The `webhook_state` key of the dispatcher's cursor.
const CURSOR_KEY: &str = "cursor";
/// The `webhook_state` key of the secret of tasks' own webhooks.
const TASK_SECRET_KEY: &str = "task_secret";

// ---------------------------------------------------------------- subscriptions

const WEBHOOK_COLUMNS: &str = "id, url, secret, events, names, queues, created_at";

fn webhook(row: &PgRow) -> StoreResult<WebhookRecord> {
    let id: String = row.try_get(0).map_err(map)?;
    let events: Vec<String> = row.try_get(3).map_err(map)?;
    let events = events
        .into_iter()
        .map(|k| {
            k.parse::<EventKind>().map_err(|_| {
                corrupt(format!(
                    "column webhooks.events holds the unknown event type {k:?} (webhook {id:?})"
                ))
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(WebhookRecord {
        url: row.try_get(1).map_err(map)?,
        secret: row.try_get(2).map_err(map)?,
        events,
        names: row.try_get(4).map_err(map)?,
        queues: row.try_get(5).map_err(map)?,
        created_at: row.try_get(6).map_err(map)?,
        id,
    })
}

/// `webhook_insert`: `Conflict` when the id is taken.
pub(crate) async fn insert(store: &PgStore, w: &WebhookRecord) -> StoreResult<()> {
    w.validate()?;
    let events: Vec<&str> = w.events.iter().map(|k| k.as_str()).collect();
    let sql = format!(
        "INSERT INTO {}.webhooks ({WEBHOOK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (id) DO NOTHING",
        store.q()
    );
    let n = sqlx::query(AssertSqlSafe(sql))
        .bind(&w.id)
        .bind(&w.url)
        .bind(&w.secret)
        .bind(&events)
        .bind(&w.names)
        .bind(&w.queues)
        .bind(w.created_at)
        .execute(&store.inner.pool)
        .await
        .map_err(map)?
        .rows_affected();
    if n == 0 {
        return Err(StoreError::Conflict(format!(
            "webhook {:?} already exists",
            w.id
        )));
    }
    Ok(())
}

/// `webhook_list`: oldest first.
pub(crate) async fn list(store: &PgStore) -> StoreResult<Vec<WebhookRecord>> {
    let sql = format!(
        "SELECT {WEBHOOK_COLUMNS} FROM {}.webhooks ORDER BY created_at, id",
        store.q()
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .fetch_all(&store.inner.pool)
        .await
        .map_err(map)?;
    rows.iter().map(webhook).collect()
}

/// `webhook_delete`: the subscription and its deliveries (their attempts
/// go with them: `ON DELETE CASCADE`); whether the subscription existed.
pub(crate) async fn delete(store: &PgStore, id: &str) -> StoreResult<bool> {
    if id.contains('\0') {
        // PostgreSQL text cannot hold it, so no stored id does.
        return Ok(false);
    }
    let q = store.q();
    let sql = format!(
        "WITH gone AS (DELETE FROM {q}.webhook_deliveries WHERE webhook_id = $1) \
         DELETE FROM {q}.webhooks WHERE id = $1"
    );
    let n = sqlx::query(AssertSqlSafe(sql))
        .bind(id)
        .execute(&store.inner.pool)
        .await
        .map_err(map)?
        .rows_affected();
    Ok(n > 0)
}

// ---------------------------------------------------------------- state

/// `webhook_cursor`.
pub(crate) async fn cursor(store: &PgStore) -> StoreResult<Option<String>> {
    state_get(store, CURSOR_KEY).await
}

async fn state_get(store: &PgStore, key: &str) -> StoreResult<Option<String>> {
    let sql = format!(
        "SELECT value FROM {}.webhook_state WHERE key = $1",
        store.q()
    );
    sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(key)
        .fetch_optional(&store.inner.pool)
        .await
        .map_err(map)
}

/// `webhook_task_secret`: the first candidate stored wins. The insert
/// waits for a concurrent one to commit and then does nothing; the read
/// that follows is a new statement, so it sees the winner.
pub(crate) async fn task_secret(store: &PgStore, candidate: &str) -> StoreResult<String> {
    offload_store::check_task_secret(candidate)?;
    let sql = format!(
        "INSERT INTO {}.webhook_state (key, value) VALUES ($1, $2) \
         ON CONFLICT (key) DO NOTHING RETURNING value",
        store.q()
    );
    let inserted: Option<String> = sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(TASK_SECRET_KEY)
        .bind(candidate)
        .fetch_optional(&store.inner.pool)
        .await
        .map_err(map)?;
    if let Some(secret) = inserted {
        return Ok(secret);
    }
    state_get(store, TASK_SECRET_KEY).await?.ok_or_else(|| {
        StoreError::Unavailable("the task webhook secret vanished; try again".to_owned())
    })
}

// ---------------------------------------------------------------- enqueue

/// `webhook_enqueue`: one statement (see the module docs).
pub(crate) async fn enqueue(store: &PgStore, p: &WebhookEnqueueParams) -> StoreResult<bool> {
    p.check()?;
    let q = store.q();
    // $1 the new cursor, $2..$8 the deliveries' columns, $9 the expected
    // cursor (bound only when there is one).
    let cas = match p.expected_cursor {
        None => format!(
            "INSERT INTO {q}.webhook_state (key, value) VALUES ('{CURSOR_KEY}', $1) \
             ON CONFLICT (key) DO NOTHING RETURNING 1"
        ),
        Some(_) => format!(
            "UPDATE {q}.webhook_state SET value = $1 \
             WHERE key = '{CURSOR_KEY}' AND value = $9 RETURNING 1"
        ),
    };
    let sql = format!(
        "WITH cas AS ({cas}), \
         ins AS (INSERT INTO {q}.webhook_deliveries (id, webhook_id, url, event, task_id, \
         payload, status, created_at, next_attempt_at, attempts) \
         SELECT u.id, u.webhook_id, u.url, u.event, u.task_id, u.payload, 'pending', \
         u.created_at, u.created_at, 0 \
         FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::uuid[], $7::text[], \
         $8::timestamptz[]) AS u(id, webhook_id, url, event, task_id, payload, created_at) \
         WHERE EXISTS (SELECT 1 FROM cas)) \
         SELECT count(*) FROM cas"
    );
    let d = &p.deliveries;
    let ids: Vec<&str> = d.iter().map(|x| x.id.as_str()).collect();
    let webhook_ids: Vec<Option<&str>> = d.iter().map(|x| x.webhook_id.as_deref()).collect();
    let urls: Vec<&str> = d.iter().map(|x| x.url.as_str()).collect();
    let events: Vec<&str> = d.iter().map(|x| x.event.as_str()).collect();
    let task_ids: Vec<Uuid> = d.iter().map(|x| uuid(x.task_id)).collect();
    let payloads: Vec<&str> = d.iter().map(|x| x.payload.as_str()).collect();
    let created: Vec<DateTime<Utc>> = d.iter().map(|x| x.created_at).collect();
    let mut query = sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql))
        .bind(&p.new_cursor)
        .bind(&ids)
        .bind(&webhook_ids)
        .bind(&urls)
        .bind(&events)
        .bind(&task_ids)
        .bind(&payloads)
        .bind(&created);
    if let Some(expected) = &p.expected_cursor {
        query = query.bind(expected);
    }
    match query.fetch_one(&store.inner.pool).await {
        Ok(moved) => Ok(moved > 0),
        Err(e) if sqlstate(&e).as_deref() == Some("23505") => {
            Err(duplicate_delivery(store, &ids).await)
        }
        Err(e) => Err(map(e)),
    }
}

/// The answer to an enqueue that hit a delivery id that exists, naming it.
async fn duplicate_delivery(store: &PgStore, ids: &[&str]) -> StoreError {
    let sql = format!(
        "SELECT id FROM {}.webhook_deliveries WHERE id = ANY($1) ORDER BY id LIMIT 1",
        store.q()
    );
    let taken: Option<String> = sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(ids)
        .fetch_optional(&store.inner.pool)
        .await
        .ok()
        .flatten();
    StoreError::Conflict(match taken {
        Some(id) => format!("delivery {id:?} already exists; nothing was stored"),
        None => "a delivery id of the batch already exists; nothing was stored".to_owned(),
    })
}

// ---------------------------------------------------------------- deliveries

/// The delivery columns [`delivery`] reads, with alias `d`.
const DELIVERY_COLUMNS: &str = "d.id, d.webhook_id, d.url, d.event, d.task_id, d.payload, \
     d.status, d.created_at, d.next_attempt_at";

/// The attempts of delivery `d`, as arrays in attempt order (NULL when
/// it has none), for the columns after [`DELIVERY_COLUMNS`].
fn attempts_lateral(q: &str) -> String {
    format!(
        "LEFT JOIN LATERAL (SELECT array_agg(a.attempt ORDER BY a.attempt) AS attempt, \
         array_agg(a.at ORDER BY a.attempt) AS at, \
         array_agg(a.status_code ORDER BY a.attempt) AS status_code, \
         array_agg(a.latency_ms ORDER BY a.attempt) AS latency_ms, \
         array_agg(a.error ORDER BY a.attempt) AS error \
         FROM {q}.webhook_delivery_attempts a WHERE a.delivery_id = d.id) h ON true"
    )
}

/// The attempt columns of [`attempts_lateral`].
const ATTEMPT_ARRAYS: &str = "h.attempt, h.at, h.status_code, h.latency_ms, h.error";

fn in_range<T: TryFrom<i64>>(column: &str, id: &str, v: i64) -> StoreResult<T> {
    T::try_from(v).map_err(|_| {
        corrupt(format!(
            "column {column} holds {v}, out of range (delivery {id:?})"
        ))
    })
}

/// Reads a row of [`DELIVERY_COLUMNS`] and [`ATTEMPT_ARRAYS`].
fn delivery(row: &PgRow) -> StoreResult<Delivery> {
    let id: String = row.try_get(0).map_err(map)?;
    let event: String = row.try_get(3).map_err(map)?;
    let event = event.parse::<EventKind>().map_err(|_| {
        corrupt(format!(
            "column webhook_deliveries.event holds the unknown event type {event:?} \
             (delivery {id:?})"
        ))
    })?;
    let status: String = row.try_get(6).map_err(map)?;
    let status = status.parse::<DeliveryStatus>().map_err(|_| {
        corrupt(format!(
            "column webhook_deliveries.status holds {status:?} (delivery {id:?})"
        ))
    })?;
    let task_id: Uuid = row.try_get(4).map_err(map)?;
    let numbers: Vec<i32> = row
        .try_get::<Option<Vec<i32>>, _>(9)
        .map_err(map)?
        .unwrap_or_default();
    let ats: Vec<DateTime<Utc>> = row
        .try_get::<Option<Vec<DateTime<Utc>>>, _>(10)
        .map_err(map)?
        .unwrap_or_default();
    let codes: Vec<Option<i32>> = row
        .try_get::<Option<Vec<Option<i32>>>, _>(11)
        .map_err(map)?
        .unwrap_or_default();
    let latencies: Vec<i64> = row
        .try_get::<Option<Vec<i64>>, _>(12)
        .map_err(map)?
        .unwrap_or_default();
    let errors: Vec<Option<String>> = row
        .try_get::<Option<Vec<Option<String>>>, _>(13)
        .map_err(map)?
        .unwrap_or_default();
    let n = numbers.len();
    if [ats.len(), codes.len(), latencies.len(), errors.len()] != [n; 4] {
        return Err(corrupt(format!(
            "the attempts of delivery {id:?} did not read back whole"
        )));
    }
    let mut attempts = Vec::with_capacity(n);
    for ((((number, at), code), latency), error) in numbers
        .into_iter()
        .zip(ats)
        .zip(codes)
        .zip(latencies)
        .zip(errors)
    {
        attempts.push(DeliveryAttempt {
            attempt: in_range("webhook_delivery_attempts.attempt", &id, i64::from(number))?,
            at,
            status_code: code
                .map(|c| in_range("webhook_delivery_attempts.status_code", &id, i64::from(c)))
                .transpose()?,
            latency_ms: in_range("webhook_delivery_attempts.latency_ms", &id, latency)?,
            error,
        });
    }
    Ok(Delivery {
        webhook_id: row.try_get(1).map_err(map)?,
        url: row.try_get(2).map_err(map)?,
        event,
        task_id: TaskId::from_bytes(task_id.into_bytes()),
        payload: row.try_get(5).map_err(map)?,
        status,
        created_at: row.try_get(7).map_err(map)?,
        next_attempt_at: row.try_get(8).map_err(map)?,
        attempts,
        id,
    })
}

/// `webhook_delivery_claim`: one statement; due rows other senders hold
/// are skipped.
pub(crate) async fn claim(store: &PgStore, p: &DeliveryClaimParams) -> StoreResult<Vec<Delivery>> {
    p.validate()?;
    let q = store.q();
    let sql = format!(
        "WITH due AS (SELECT id, next_attempt_at AS was FROM {q}.webhook_deliveries \
         WHERE status = 'pending' AND next_attempt_at <= $1 \
         ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED), \
         d AS (UPDATE {q}.webhook_deliveries t SET next_attempt_at = $3 FROM due \
         WHERE t.id = due.id RETURNING t.*, due.was) \
         SELECT {DELIVERY_COLUMNS}, {ATTEMPT_ARRAYS} FROM d {} ORDER BY d.was, d.id",
        attempts_lateral(q)
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(p.now)
        .bind(i64::from(p.limit))
        .bind(after(p.now, p.lease))
        .fetch_all(&store.inner.pool)
        .await
        .map_err(map)?;
    rows.iter().map(delivery).collect()
}

/// `webhook_delivery_record`: one statement on the happy path; a refused
/// record reads the delivery again to say why.
pub(crate) async fn record(store: &PgStore, p: &DeliveryRecordParams) -> StoreResult<()> {
    p.validate()?;
    let q = store.q();
    let next_attempt_at = match p.status {
        DeliveryStatus::Pending => p.retry_at,
        DeliveryStatus::Delivered | DeliveryStatus::Failed => None,
    };
    let a = &p.attempt;
    let sql = format!(
        "WITH d AS (UPDATE {q}.webhook_deliveries SET status = $2, next_attempt_at = $3, \
         attempts = attempts + 1 \
         WHERE id = $1 AND status = 'pending' AND attempts = $4::int8 - 1 \
         RETURNING id, attempts), \
         a AS (INSERT INTO {q}.webhook_delivery_attempts \
         (delivery_id, attempt, at, status_code, latency_ms, error) \
         SELECT id, attempts, $5, $6, $7, $8 FROM d) \
         SELECT count(*) FROM d"
    );
    let done: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(&p.id)
        .bind(p.status.as_str())
        .bind(next_attempt_at)
        .bind(i64::from(a.attempt))
        .bind(a.at)
        .bind(a.status_code.map(i32::from))
        .bind(i64::try_from(a.latency_ms).unwrap_or(i64::MAX))
        .bind(&a.error)
        .fetch_one(&store.inner.pool)
        .await
        .map_err(map)?;
    if done > 0 {
        return Ok(());
    }
    let sql = format!("SELECT status, attempts FROM {q}.webhook_deliveries WHERE id = $1");
    let found = sqlx::query(AssertSqlSafe(sql))
        .bind(&p.id)
        .fetch_optional(&store.inner.pool)
        .await
        .map_err(map)?;
    let Some(row) = found else {
        return Err(StoreError::Conflict(format!(
            "delivery {:?} does not exist (it was purged, or its webhook was deleted)",
            p.id
        )));
    };
    let status: String = row.try_get(0).map_err(map)?;
    let recorded: i32 = row.try_get(1).map_err(map)?;
    if status != DeliveryStatus::Pending.as_str() {
        return Err(StoreError::Conflict(format!(
            "delivery {:?} is {status}; only a pending delivery records attempts",
            p.id
        )));
    }
    let next = i64::from(recorded) + 1;
    Err(StoreError::Conflict(format!(
        "delivery {:?} has {recorded} attempts recorded, so the next is attempt {next}, \
         not {} (another sender recorded it)",
        p.id, a.attempt
    )))
}

/// `webhook_delivery_list`: newest first, with the filters given.
pub(crate) async fn list_deliveries(
    store: &PgStore,
    p: &DeliveryListParams,
) -> StoreResult<Vec<Delivery>> {
    p.validate()?;
    let q = store.q();
    // Only the filters given, so each shape gets its own plan.
    let mut filters = String::new();
    let mut n = 1;
    if p.webhook_id.is_some() {
        n += 1;
        filters.push_str(&format!(" AND d.webhook_id = ${n}"));
    }
    if p.task_id.is_some() {
        n += 1;
        filters.push_str(&format!(" AND d.task_id = ${n}"));
    }
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS}, {ATTEMPT_ARRAYS} FROM \
         (SELECT * FROM {q}.webhook_deliveries d WHERE true{filters} \
         ORDER BY d.created_at DESC, d.id DESC LIMIT $1) d {} \
         ORDER BY d.created_at DESC, d.id DESC",
        attempts_lateral(q)
    );
    let mut query = sqlx::query(AssertSqlSafe(sql)).bind(i64::from(p.limit));
    if let Some(webhook_id) = &p.webhook_id {
        query = query.bind(webhook_id);
    }
    if let Some(task_id) = p.task_id {
        query = query.bind(uuid(task_id));
    }
    let rows = query.fetch_all(&store.inner.pool).await.map_err(map)?;
    rows.iter().map(delivery).collect()
}

/// `webhook_delivery_purge`: bounded batches, each its own statement
/// (attempts go with their deliveries); rows a sender holds are skipped.
pub(crate) async fn purge(store: &PgStore, p: &PurgeBeforeParams) -> StoreResult<u64> {
    let q = store.q();
    let sql = format!(
        "DELETE FROM {q}.webhook_deliveries WHERE id IN (SELECT id FROM {q}.webhook_deliveries \
         WHERE created_at < $1 AND status IN ('delivered', 'failed') \
         ORDER BY created_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)"
    );
    crate::manage::delete_before_in_batches(store, &sql, p.before, p.limit, None).await
}
