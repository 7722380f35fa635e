//! Webhooks: subscriptions, the dispatcher's cursor and the task secret
//! (rows of `webhook_state`), and the durable queue of deliveries with
//! their attempts. Writes are writer commands (so the cursor's
//! compare-and-set, the claim and the record are serialised with every
//! other write, and across processes by `BEGIN IMMEDIATE`); lists run on
//! the reader pool. Rows come back unparsed and are decoded on the
//! caller's thread. Nothing here produces notifications.

use offload_store::{
    Delivery, DeliveryAttempt, DeliveryRecordParams, DeliveryStatus, EventKind, NewDelivery,
    StoreError, StoreResult, WebhookRecord,
};
use offload_types::TaskId;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row};

use crate::codec::{json, micros, time};
use crate::error::{corrupt, map};
use crate::writer::WriteCtx;

/// The `webhook_state` key of the dispatcher's cursor.
const CURSOR_KEY: &str = "cursor";
/// The `webhook_state` key of the secret of tasks' own webhooks.
const TASK_SECRET_KEY: &str = "task_secret";

// ---------------------------------------------------------------- subscriptions

/// A subscription in stored form.
#[derive(Debug, Clone)]
pub(crate) struct WebhookRow {
    id: String,
    url: String,
    secret: String,
    events: String,
    names: String,
    queues: String,
    created_at: i64,
}

impl WebhookRow {
    /// Validates `w` and encodes it (the lists as JSON arrays).
    pub(crate) fn prepare(w: &WebhookRecord) -> StoreResult<Self> {
        w.validate()?;
        let events: Vec<&str> = w.events.iter().map(|k| k.as_str()).collect();
        Ok(Self {
            id: w.id.clone(),
            url: w.url.clone(),
            secret: w.secret.clone(),
            events: json(&events)?,
            names: json(&w.names)?,
            queues: json(&w.queues)?,
            created_at: micros(w.created_at),
        })
    }
}

const WEBHOOK_COLUMNS: &str = "id, url, secret, events, names, queues, created_at";

/// A subscription row as read, before its lists and time are parsed.
pub(crate) type RawWebhook = (String, String, String, String, String, String, i64);

/// Stores a subscription; `Conflict` when its id is taken.
pub(crate) fn insert(ctx: &mut WriteCtx<'_>, w: &WebhookRow) -> StoreResult<()> {
    let n = ctx
        .conn
        .prepare_cached(&format!(
            "INSERT INTO webhooks ({WEBHOOK_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (id) DO NOTHING"
        ))
        .map_err(map)?
        .execute(rusqlite::params![
            w.id,
            w.url,
            w.secret,
            w.events,
            w.names,
            w.queues,
            w.created_at
        ])
        .map_err(map)?;
    if n == 0 {
        return Err(StoreError::Conflict(format!(
            "webhook {:?} already exists",
            w.id
        )));
    }
    Ok(())
}

/// Every subscription row, oldest first.
pub(crate) fn list(conn: &Connection) -> StoreResult<Vec<RawWebhook>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks ORDER BY created_at, id"
        ))
        .map_err(map)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .map_err(map)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map)
}

/// A JSON array of text read back.
fn text_list(column: &str, id: &str, text: &str) -> StoreResult<Vec<String>> {
    serde_json::from_str(text).map_err(|e| {
        corrupt(format!(
            "column {column} holds {text:?}, not a JSON array of text (webhook {id:?}): {e}"
        ))
    })
}

/// A stored subscription read back; an unknown event type is corruption.
pub(crate) fn into_webhook(raw: RawWebhook) -> StoreResult<WebhookRecord> {
    let (id, url, secret, events, names, queues, created_at) = raw;
    let events = text_list("webhooks.events", &id, &events)?
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
        names: text_list("webhooks.names", &id, &names)?,
        queues: text_list("webhooks.queues", &id, &queues)?,
        id,
        url,
        secret,
        events,
        created_at: time(created_at)?,
    })
}

/// Deletes a subscription with its deliveries and their attempts;
/// whether the subscription existed.
pub(crate) fn delete(ctx: &mut WriteCtx<'_>, id: &str) -> StoreResult<bool> {
    let conn = ctx.conn;
    conn.prepare_cached(
        "DELETE FROM webhook_delivery_attempts WHERE delivery_id IN \
         (SELECT id FROM webhook_deliveries WHERE webhook_id = ?1)",
    )
    .map_err(map)?
    .execute([id])
    .map_err(map)?;
    conn.prepare_cached("DELETE FROM webhook_deliveries WHERE webhook_id = ?1")
        .map_err(map)?
        .execute([id])
        .map_err(map)?;
    let n = conn
        .prepare_cached("DELETE FROM webhooks WHERE id = ?1")
        .map_err(map)?
        .execute([id])
        .map_err(map)?;
    Ok(n > 0)
}

// ---------------------------------------------------------------- state

fn state_get(conn: &Connection, key: &str) -> StoreResult<Option<String>> {
    conn.prepare_cached("SELECT value FROM webhook_state WHERE key = ?1")
        .map_err(map)?
        .query_row([key], |r| r.get(0))
        .optional()
        .map_err(map)
}

/// The dispatcher's cursor.
pub(crate) fn cursor(conn: &Connection) -> StoreResult<Option<String>> {
    state_get(conn, CURSOR_KEY)
}

/// Stores `candidate` as the task secret unless there is one; returns the
/// stored secret.
pub(crate) fn task_secret(ctx: &mut WriteCtx<'_>, candidate: &str) -> StoreResult<String> {
    ctx.conn
        .prepare_cached(
            "INSERT INTO webhook_state (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
        )
        .map_err(map)?
        .execute([TASK_SECRET_KEY, candidate])
        .map_err(map)?;
    state_get(ctx.conn, TASK_SECRET_KEY)?.ok_or_else(|| {
        StoreError::Unavailable("the task webhook secret vanished; try again".to_owned())
    })
}

// ---------------------------------------------------------------- enqueue

/// A delivery in stored form.
#[derive(Debug, Clone)]
pub(crate) struct DeliveryRow {
    id: String,
    webhook_id: Option<String>,
    url: String,
    event: &'static str,
    task_id: [u8; 16],
    payload: String,
    created_at: i64,
}

impl DeliveryRow {
    /// Encodes a delivery the caller validated
    /// ([`WebhookEnqueueParams::check`](offload_store::WebhookEnqueueParams::check)).
    pub(crate) fn new(d: &NewDelivery) -> Self {
        Self {
            id: d.id.clone(),
            webhook_id: d.webhook_id.clone(),
            url: d.url.clone(),
            event: d.event.as_str(),
            task_id: *d.task_id.as_bytes(),
            payload: d.payload.clone(),
            created_at: micros(d.created_at),
        }
    }
}

/// The writer command of `webhook_enqueue`: compares the stored cursor
/// with `expected` (both `None`: no cursor yet); when they differ writes
/// nothing and answers `false`, else stores `deliveries` (pending, due at
/// their creation) and the new cursor. A delivery id that exists is a
/// `Conflict` (the command's savepoint undoes what it wrote).
pub(crate) fn enqueue(
    ctx: &mut WriteCtx<'_>,
    expected: Option<&str>,
    new_cursor: &str,
    deliveries: &[DeliveryRow],
) -> StoreResult<bool> {
    let conn = ctx.conn;
    if cursor(conn)?.as_deref() != expected {
        return Ok(false);
    }
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO webhook_deliveries (id, webhook_id, url, event, task_id, payload, \
             status, created_at, next_attempt_at, attempts) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?7, 0)",
        )
        .map_err(map)?;
    for d in deliveries {
        let done = insert.execute(rusqlite::params![
            d.id,
            d.webhook_id,
            d.url,
            d.event,
            d.task_id,
            d.payload,
            d.created_at
        ]);
        match done {
            Ok(_) => {}
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) => {
                return Err(StoreError::Conflict(format!(
                    "delivery {:?} already exists; nothing was stored",
                    d.id
                )));
            }
            Err(e) => return Err(map(e)),
        }
    }
    conn.prepare_cached(
        "INSERT INTO webhook_state (key, value) VALUES (?1, ?2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .map_err(map)?
    .execute([CURSOR_KEY, new_cursor])
    .map_err(map)?;
    Ok(true)
}

// ---------------------------------------------------------------- deliveries

/// A delivery row as read, with its attempt rows, before anything is
/// parsed.
#[derive(Debug, Clone)]
pub(crate) struct RawDelivery {
    id: String,
    webhook_id: Option<String>,
    url: String,
    event: String,
    task_id: Vec<u8>,
    payload: String,
    status: String,
    created_at: i64,
    next_attempt_at: Option<i64>,
    attempts: Vec<RawAttempt>,
}

/// An attempt row as read.
type RawAttempt = (i64, i64, Option<i64>, i64, Option<String>);

const DELIVERY_COLUMNS: &str =
    "id, webhook_id, url, event, task_id, payload, status, created_at, next_attempt_at";

fn raw_delivery(r: &Row<'_>) -> rusqlite::Result<RawDelivery> {
    Ok(RawDelivery {
        id: r.get(0)?,
        webhook_id: r.get(1)?,
        url: r.get(2)?,
        event: r.get(3)?,
        task_id: r.get(4)?,
        payload: r.get(5)?,
        status: r.get(6)?,
        created_at: r.get(7)?,
        next_attempt_at: r.get(8)?,
        attempts: Vec::new(),
    })
}

/// Fills in each delivery's attempts, oldest first.
fn with_attempts(conn: &Connection, deliveries: &mut [RawDelivery]) -> StoreResult<()> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT attempt, at, status_code, latency_ms, error FROM webhook_delivery_attempts \
             WHERE delivery_id = ?1 ORDER BY attempt",
        )
        .map_err(map)?;
    for d in deliveries {
        let rows = stmt
            .query_map([&d.id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .map_err(map)?;
        d.attempts = rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map)?;
    }
    Ok(())
}

fn in_range<T: TryFrom<i64>>(column: &str, id: &str, v: i64) -> StoreResult<T> {
    T::try_from(v).map_err(|_| {
        corrupt(format!(
            "column {column} holds {v}, out of range (delivery {id:?})"
        ))
    })
}

/// A stored delivery read back; an unknown event type or status is
/// corruption.
pub(crate) fn into_delivery(raw: RawDelivery) -> StoreResult<Delivery> {
    let id = raw.id;
    let event = raw.event.parse::<EventKind>().map_err(|_| {
        corrupt(format!(
            "column webhook_deliveries.event holds the unknown event type {:?} (delivery {id:?})",
            raw.event
        ))
    })?;
    let status = raw.status.parse::<DeliveryStatus>().map_err(|_| {
        corrupt(format!(
            "column webhook_deliveries.status holds {:?} (delivery {id:?})",
            raw.status
        ))
    })?;
    let task_id = <[u8; 16]>::try_from(raw.task_id.as_slice()).map_err(|_| {
        corrupt(format!(
            "column webhook_deliveries.task_id holds {} bytes, not 16 (delivery {id:?})",
            raw.task_id.len()
        ))
    })?;
    let attempts = raw
        .attempts
        .into_iter()
        .map(|(attempt, at, status_code, latency_ms, error)| {
            Ok(DeliveryAttempt {
                attempt: in_range("webhook_delivery_attempts.attempt", &id, attempt)?,
                at: time(at)?,
                status_code: status_code
                    .map(|c| in_range("webhook_delivery_attempts.status_code", &id, c))
                    .transpose()?,
                latency_ms: in_range("webhook_delivery_attempts.latency_ms", &id, latency_ms)?,
                error,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(Delivery {
        webhook_id: raw.webhook_id,
        url: raw.url,
        event,
        task_id: TaskId::from_bytes(task_id),
        payload: raw.payload,
        status,
        created_at: time(raw.created_at)?,
        next_attempt_at: raw.next_attempt_at.map(time).transpose()?,
        attempts,
        id,
    })
}

/// The writer command of `webhook_delivery_claim`: up to `limit` pending
/// deliveries due at `now`, oldest due first, each moved to `until` (the
/// end of the claim's lease) and returned as it is afterwards, with its
/// attempts.
pub(crate) fn claim(
    ctx: &mut WriteCtx<'_>,
    now: i64,
    until: i64,
    limit: u32,
) -> StoreResult<Vec<RawDelivery>> {
    let conn = ctx.conn;
    let mut due = {
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
                 WHERE status = 'pending' AND next_attempt_at <= ?1 \
                 ORDER BY next_attempt_at, id LIMIT ?2 + 0"
            ))
            .map_err(map)?;
        let rows = stmt
            .query_map(rusqlite::params![now, i64::from(limit)], raw_delivery)
            .map_err(map)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map)?
    };
    let mut take = conn
        .prepare_cached("UPDATE webhook_deliveries SET next_attempt_at = ?2 WHERE id = ?1")
        .map_err(map)?;
    for d in &mut due {
        take.execute(rusqlite::params![d.id, until]).map_err(map)?;
        d.next_attempt_at = Some(until);
    }
    with_attempts(conn, &mut due)?;
    Ok(due)
}

/// An attempt to record, in stored form.
#[derive(Debug, Clone)]
pub(crate) struct RecordRow {
    id: String,
    attempt: u32,
    at: i64,
    status_code: Option<i64>,
    latency_ms: i64,
    error: Option<String>,
    status: &'static str,
    next_attempt_at: Option<i64>,
}

impl RecordRow {
    /// Validates `p` and encodes it (a `retry_at` only for `Pending`).
    pub(crate) fn prepare(p: &DeliveryRecordParams) -> StoreResult<Self> {
        p.validate()?;
        let a = &p.attempt;
        Ok(Self {
            id: p.id.clone(),
            attempt: a.attempt,
            at: micros(a.at),
            status_code: a.status_code.map(i64::from),
            latency_ms: i64::try_from(a.latency_ms).unwrap_or(i64::MAX),
            error: a.error.clone(),
            status: p.status.as_str(),
            next_attempt_at: match p.status {
                DeliveryStatus::Pending => p.retry_at.map(micros),
                DeliveryStatus::Delivered | DeliveryStatus::Failed => None,
            },
        })
    }
}

/// The writer command of `webhook_delivery_record`: the delivery must
/// exist, be pending and have `attempt - 1` attempts recorded (a sender
/// whose claim lapsed and was taken over is refused); then the attempt is
/// stored and the delivery moves on.
pub(crate) fn record(ctx: &mut WriteCtx<'_>, r: &RecordRow) -> StoreResult<()> {
    let conn = ctx.conn;
    let found: Option<(String, i64)> = conn
        .prepare_cached("SELECT status, attempts FROM webhook_deliveries WHERE id = ?1")
        .map_err(map)?
        .query_row([&r.id], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()
        .map_err(map)?;
    let Some((status, recorded)) = found else {
        return Err(StoreError::Conflict(format!(
            "delivery {:?} does not exist (it was purged, or its webhook was deleted)",
            r.id
        )));
    };
    if status != DeliveryStatus::Pending.as_str() {
        return Err(StoreError::Conflict(format!(
            "delivery {:?} is {status}; only a pending delivery records attempts",
            r.id
        )));
    }
    let next = recorded.saturating_add(1);
    if i64::from(r.attempt) != next {
        return Err(StoreError::Conflict(format!(
            "delivery {:?} has {recorded} attempts recorded, so the next is attempt {next}, \
             not {} (another sender recorded it)",
            r.id, r.attempt
        )));
    }
    conn.prepare_cached(
        "INSERT INTO webhook_delivery_attempts \
         (delivery_id, attempt, at, status_code, latency_ms, error) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .map_err(map)?
    .execute(rusqlite::params![
        r.id,
        next,
        r.at,
        r.status_code,
        r.latency_ms,
        r.error
    ])
    .map_err(map)?;
    conn.prepare_cached(
        "UPDATE webhook_deliveries SET status = ?2, next_attempt_at = ?3, attempts = ?4 \
         WHERE id = ?1",
    )
    .map_err(map)?
    .execute(rusqlite::params![r.id, r.status, r.next_attempt_at, next])
    .map_err(map)?;
    Ok(())
}

/// Up to `limit` deliveries, newest first, of one subscription and/or one
/// task when given, each with its attempts.
pub(crate) fn list_deliveries(
    conn: &Connection,
    webhook_id: Option<&str>,
    task_id: Option<TaskId>,
    limit: u32,
) -> StoreResult<Vec<RawDelivery>> {
    let mut sql = format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE 1 = 1");
    let mut values: Vec<Value> = Vec::new();
    if let Some(webhook_id) = webhook_id {
        values.push(Value::Text(webhook_id.to_owned()));
        sql.push_str(&format!(" AND webhook_id = ?{}", values.len()));
    }
    if let Some(task_id) = task_id {
        values.push(Value::Blob(task_id.as_bytes().to_vec()));
        sql.push_str(&format!(" AND task_id = ?{}", values.len()));
    }
    values.push(Value::Integer(i64::from(limit)));
    sql.push_str(&format!(
        " ORDER BY created_at DESC, id DESC LIMIT ?{} + 0",
        values.len()
    ));
    let mut found = {
        let mut stmt = conn.prepare_cached(&sql).map_err(map)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(values), raw_delivery)
            .map_err(map)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map)?
    };
    with_attempts(conn, &mut found)?;
    Ok(found)
}

/// Deletes up to `limit` delivered or failed deliveries made before
/// `before`, with their attempts; returns how many.
pub(crate) fn purge(ctx: &mut WriteCtx<'_>, before: i64, limit: u32) -> StoreResult<u64> {
    let conn = ctx.conn;
    let ids: Vec<String> = {
        let mut stmt = conn
            .prepare_cached(
                "SELECT id FROM webhook_deliveries \
                 WHERE created_at < ?1 AND status IN ('delivered', 'failed') \
                 ORDER BY created_at, id LIMIT ?2 + 0",
            )
            .map_err(map)?;
        let rows = stmt
            .query_map(rusqlite::params![before, i64::from(limit)], |r| r.get(0))
            .map_err(map)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map)?
    };
    let mut attempts = conn
        .prepare_cached("DELETE FROM webhook_delivery_attempts WHERE delivery_id = ?1")
        .map_err(map)?;
    let mut delivery = conn
        .prepare_cached("DELETE FROM webhook_deliveries WHERE id = ?1")
        .map_err(map)?;
    for id in &ids {
        attempts.execute([id]).map_err(map)?;
        delivery.execute([id]).map_err(map)?;
    }
    Ok(ids.len() as u64)
}
