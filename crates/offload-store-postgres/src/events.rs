//! The event log (see [`offload_store::EventKind`]): the `data` of the
//! events the task-changing statements append (each inside the statement
//! or transaction of its change: a data-modifying CTE on the hot path),
//! and the reads and purges of the log.
//!
//! Transactions commit in another order than they draw `seq` values, so
//! `seq` alone cannot be a cursor: a reader could pass over an event whose
//! transaction commits after the reader looked. Each event also records
//! its transaction id (`tx`, `pg_current_xact_id()`), the log is ordered
//! by `(tx, seq)`, and readers only read events of transactions older
//! than the oldest one still running in their snapshot
//! (`pg_snapshot_xmin`): those have all finished, so no event can later
//! appear before a position a reader has passed. An event becomes
//! readable once every transaction that started writing before its own
//! has ended. A cursor is `<tx>.<seq>`.

use chrono::{DateTime, Utc};
use offload_store::{
    EventData, EventFilter, EventKind, EventListParams, EventPage, FinishOutcome, MAX_EVENT_PAGE,
    PurgeBeforeParams, StoreError, StoreResult, TaskEvent,
};
use offload_types::{Status, TaskErrorRecord, TaskId, ValidationError};
use serde_json::Value;
use sqlx::{AssertSqlSafe, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use crate::PgStore;
use crate::codec::{json, uuid};
use crate::error::{corrupt, map};

// ---------------------------------------------------------------- data

/// An event to append for a task: its kind and `data`.
pub(crate) type NewEvent = (EventKind, Value);

/// The `data` of an event that only carries an error (`task.failed`,
/// `task.aborted`).
pub(crate) fn error_data(error: &TaskErrorRecord) -> StoreResult<Value> {
    json(&EventData::error(error))
}

/// The event a finish outcome writes (`None`: snooze and release write
/// none).
pub(crate) fn finish_event(outcome: &FinishOutcome) -> StoreResult<Option<NewEvent>> {
    offload_store::finish_event(outcome)
        .map(|(kind, data)| Ok((kind, json(&data)?)))
        .transpose()
}

/// The event a rescue writes (see [`offload_store::rescue_event`]).
pub(crate) fn rescue_event(
    status: Status,
    error: &TaskErrorRecord,
    run_at: DateTime<Utc>,
) -> StoreResult<NewEvent> {
    let (kind, data) = offload_store::rescue_event(status, error, run_at);
    Ok((kind, json(&data)?))
}

// ---------------------------------------------------------------- read

/// Most rows one filtered read looks at: a filter that matches little
/// still costs a bounded read, and the cursor moves past what was looked
/// at.
const FILTER_SCAN: u32 = 10 * MAX_EVENT_PAGE;

/// Rows a purge batch may look past its limit for old events (events are
/// appended in about `at` order; one written with an earlier `now` than
/// its neighbours is found by a later purge).
const PURGE_SCAN_SLACK: u32 = 1000;

/// Only events of transactions that ended before every transaction still
/// running (see the module docs). (Statements that select `tx::text`
/// order by the qualified `e.tx`: a bare `tx` in `ORDER BY` would name the
/// text output column and sort as text.)
const SETTLED: &str = "tx < pg_snapshot_xmin(pg_current_snapshot())";

/// A position in the log: transaction id and seq.
type Position = (u64, i64);

fn invalid_cursor(cursor: &str) -> StoreError {
    StoreError::Invalid(ValidationError::new(
        "cursor",
        format!(
            "{cursor:?} is not a cursor of this event log (pass the `cursor` of an event or \
             page this store returned)"
        ),
    ))
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The position a cursor (`<tx>.<seq>`) names.
pub(crate) fn parse_cursor(cursor: &str) -> StoreResult<Position> {
    let (tx, seq) = cursor
        .split_once('.')
        .filter(|(tx, seq)| digits(tx) && digits(seq))
        .ok_or_else(|| invalid_cursor(cursor))?;
    let tx = tx.parse::<u64>().map_err(|_| invalid_cursor(cursor))?;
    let seq = seq.parse::<i64>().map_err(|_| invalid_cursor(cursor))?;
    Ok((tx, seq))
}

fn cursor_of((tx, seq): Position) -> String {
    format!("{tx}.{seq}")
}

/// Refuses a page size outside 1 to [`MAX_EVENT_PAGE`].
fn check_limit(limit: u32) -> StoreResult<()> {
    if (1..=MAX_EVENT_PAGE).contains(&limit) {
        Ok(())
    } else {
        Err(StoreError::Invalid(ValidationError::new(
            "limit",
            format!("must be between 1 and {MAX_EVENT_PAGE}, got {limit}"),
        )))
    }
}

fn is_empty(f: &EventFilter) -> bool {
    f.kinds.is_empty() && f.names.is_empty() && f.queues.is_empty() && f.task_ids.is_empty()
}

fn push_filter(qb: &mut QueryBuilder<Postgres>, f: &EventFilter) {
    if !f.kinds.is_empty() {
        let kinds: Vec<&'static str> = f.kinds.iter().map(|k| k.as_str()).collect();
        qb.push(" AND kind = ANY(").push_bind(kinds).push(")");
    }
    if !f.names.is_empty() {
        qb.push(" AND name = ANY(")
            .push_bind(f.names.clone())
            .push(")");
    }
    if !f.queues.is_empty() {
        qb.push(" AND queue = ANY(")
            .push_bind(f.queues.clone())
            .push(")");
    }
    if !f.task_ids.is_empty() {
        let ids: Vec<Uuid> = f.task_ids.iter().map(|id| uuid(*id)).collect();
        qb.push(" AND task_id = ANY(").push_bind(ids).push(")");
    }
}

fn position(row: &sqlx::postgres::PgRow) -> StoreResult<Position> {
    let tx: String = row.try_get(1).map_err(map)?;
    let tx = tx
        .parse::<u64>()
        .map_err(|_| corrupt(format!("event transaction id {tx:?}")))?;
    Ok((tx, row.try_get(2).map_err(map)?))
}

fn decode(row: &sqlx::postgres::PgRow, at: Position) -> StoreResult<TaskEvent> {
    let kind: String = row.try_get(4).map_err(map)?;
    let attempt: i32 = row.try_get(8).map_err(map)?;
    let task_id: Uuid = row.try_get(5).map_err(map)?;
    Ok(TaskEvent {
        cursor: cursor_of(at),
        at: row.try_get(3).map_err(map)?,
        kind: kind
            .parse()
            .map_err(|_| corrupt(format!("event {} has kind {kind:?}", cursor_of(at))))?,
        task_id: TaskId::from_bytes(*task_id.as_bytes()),
        name: row.try_get(6).map_err(map)?,
        queue: row.try_get(7).map_err(map)?,
        attempt: u32::try_from(attempt)
            .map_err(|_| corrupt(format!("event {} has attempt {attempt}", cursor_of(at))))?,
        data: row.try_get(9).map_err(map)?,
    })
}

/// One page of the log (see [`EventPage`]), in one statement: the rows
/// after the cursor in `(tx, seq)` order (at most `limit`, or at most
/// [`FILTER_SCAN`] with a filter), the filter applied to them in SQL, and
/// the position of the last row looked at, so the cursor moves past rows
/// the filter left out.
pub(crate) async fn list(store: &PgStore, p: &EventListParams) -> StoreResult<EventPage> {
    check_limit(p.limit)?;
    let after = p.after.as_deref().map(parse_cursor).transpose()?;
    let (tx, seq) = after.unwrap_or((0, 0));
    let filtered = !is_empty(&p.filter);
    let scan = if filtered {
        FILTER_SCAN.max(p.limit)
    } else {
        p.limit
    };
    let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "WITH scanned AS (SELECT tx, seq, at, kind, task_id, name, queue, attempt, data \
         FROM {}.events WHERE (tx, seq) > (",
        store.q()
    ));
    qb.push_bind(tx.to_string())
        .push("::text::xid8, ")
        .push_bind(seq)
        .push(format!(") AND {SETTLED} ORDER BY tx, seq LIMIT "))
        .push_bind(i64::from(scan))
        .push("), hits AS (SELECT * FROM scanned WHERE true");
    push_filter(&mut qb, &p.filter);
    qb.push(" ORDER BY tx, seq LIMIT ")
        .push_bind(i64::from(p.limit))
        .push(
            ") SELECT true, tx::text, seq, at, kind, task_id, name, queue, attempt, data \
             FROM hits UNION ALL (SELECT false, tx::text, seq, NULL, NULL, NULL, NULL, NULL, \
             NULL, NULL FROM scanned ORDER BY scanned.tx DESC, scanned.seq DESC LIMIT 1)",
        );
    let rows = qb.build().fetch_all(&store.inner.pool).await.map_err(map)?;
    let mut hits = Vec::with_capacity(rows.len());
    let mut last = None;
    for row in &rows {
        let at = position(row)?;
        if row.try_get::<bool, _>(0).map_err(map)? {
            hits.push((at, decode(row, at)?));
        } else {
            last = Some(at);
        }
    }
    hits.sort_by_key(|(at, _)| *at);
    // A full page ends at its last event (later rows were not returned);
    // a short one at the last row looked at.
    let end = if hits.len() >= p.limit as usize {
        hits.last().map(|(at, _)| *at)
    } else {
        last
    };
    Ok(EventPage {
        events: hits.into_iter().map(|(_, e)| e).collect(),
        cursor: end.map(cursor_of).or_else(|| p.after.clone()),
    })
}

/// The position of the newest readable event (see the module docs).
pub(crate) async fn latest(store: &PgStore) -> StoreResult<Option<String>> {
    let sql = format!(
        "SELECT e.tx::text, e.seq FROM {}.events e WHERE {SETTLED} \
         ORDER BY e.tx DESC, e.seq DESC LIMIT 1",
        store.q()
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .fetch_optional(&store.inner.pool)
        .await
        .map_err(map)?;
    row.map(|r| {
        let tx: String = r.try_get(0).map_err(map)?;
        let seq: i64 = r.try_get(1).map_err(map)?;
        Ok(format!("{tx}.{seq}"))
    })
    .transpose()
}

/// Deletes up to `p.limit` events written before `p.before`, oldest first,
/// in statements of batches of 1000: each deletes the old events among the
/// first rows of the log (its limit plus [`PURGE_SCAN_SLACK`]), so a purge
/// never reads the whole log. Returns how many.
pub(crate) async fn purge(store: &PgStore, p: &PurgeBeforeParams) -> StoreResult<u64> {
    let sql = format!(
        "WITH victims AS (SELECT tx, seq FROM (SELECT tx, seq, at FROM {q}.events \
         ORDER BY tx, seq LIMIT $3) w WHERE at < $1 LIMIT $2) \
         DELETE FROM {q}.events e USING victims v WHERE e.tx = v.tx AND e.seq = v.seq",
        q = store.q()
    );
    crate::manage::delete_before_in_batches(store, &sql, p.before, p.limit, Some(PURGE_SCAN_SLACK))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_name_a_transaction_and_a_seq() {
        assert_eq!(parse_cursor("745.12").ok(), Some((745, 12)));
        assert_eq!(cursor_of((745, 12)), "745.12");
        for bad in [
            "",
            "12",
            ".",
            "1.",
            ".1",
            "1.2.3",
            "-1.2",
            "1.-2",
            "a.b",
            " 1.2",
            "1.2 ",
            "99999999999999999999999.1",
        ] {
            assert!(parse_cursor(bad).is_err(), "{bad:?}");
        }
    }
}
