//! The event log (see [`offload_store::EventKind`]): the events each
//! task-changing writer command appends inside its own transaction, and
//! the reads and purges of the log.
//!
//! Every write goes through one writer at a time (the writer thread, and
//! `BEGIN IMMEDIATE` across processes) and `seq` is the rowid (a new row
//! gets the largest seq + 1), so `seq` order is commit order; purges
//! never delete the newest event, so a seq is never reused: a reader that
//! saw seq `n` has seen every event up to `n`. A cursor is that seq in
//! decimal.
//!
//! What the hot path pays: each command appends its events at its end
//! with one multi-row `INSERT` per chunk of 32: an insert and a claim bind
//! the values (the writer knows them already); the others (finish,
//! progress, rescue, abort) bind the task's row, kind and data, and copy
//! name, queue and attempt from the task row they just wrote.

use std::borrow::Cow;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use offload_store::{
    EventData, EventFilter, EventKind, EventListParams, EventPage, FinishOutcome, MAX_EVENT_PAGE,
    StoreError, StoreResult, TaskEvent,
};
use offload_types::{Status, TaskErrorRecord, TaskId, ValidationError};
use rusqlite::Connection;
use rusqlite::types::Value;

use crate::codec::{json, time};
use crate::error::{corrupt, map};

// ---------------------------------------------------------------- data

/// An event to append for a task row: its kind and `data` as JSON text.
pub(crate) type NewEvent = (EventKind, String);

/// The `data` of `task.created` for a task inserted as `status`.
pub(crate) fn created_data(status: &str) -> StoreResult<Cow<'static, str>> {
    Ok(match status {
        "pending" => Cow::Borrowed(r#"{"status":"pending"}"#),
        "scheduled" => Cow::Borrowed(r#"{"status":"scheduled"}"#),
        "blocked" => Cow::Borrowed(r#"{"status":"blocked"}"#),
        other => Cow::Owned(json(&EventData::created(other))?),
    })
}

/// The `data` of `task.started` for a claim by `worker_id`.
pub(crate) fn started_data(worker_id: &str) -> StoreResult<String> {
    json(&EventData::started(worker_id))
}

/// The `data` of an event that only carries an error (`task.failed`,
/// `task.aborted`).
pub(crate) fn error_data(error: &TaskErrorRecord) -> StoreResult<String> {
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

// ---------------------------------------------------------------- append

/// One event for a task row the command just wrote: name, queue and
/// attempt are copied from the row as it is now.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ForRow<'a> {
    pub(crate) rid: i64,
    pub(crate) kind: EventKind,
    pub(crate) data: &'a str,
}

/// Rows per multi-row statement of [`append_for_rows`] and
/// [`append_known`]; longer lists are cut into chunks of these sizes, so
/// only three statements of each are prepared. (One statement for many
/// rows costs the writer less than a cached one-row statement per row.)
const CHUNKS: [usize; 3] = [32, 8, 1];
const FOR_ROW_PARAMS: usize = 3;

/// `CROSS JOIN` keeps the `VALUES` as the outer loop, so the events get
/// their seqs in the order given.
fn for_rows_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO events (at, kind, task_id, name, queue, attempt, data) \
         SELECT ?1, v.column2, t.id, t.name, t.queue, t.attempt, \
         CASE WHEN t.webhook IS NOT NULL \
         AND v.column2 IN ('task.succeeded', 'task.failed', 'task.aborted') \
         THEN json_set(v.column3, '$.webhook', t.webhook) ELSE v.column3 END FROM (VALUES ",
    );
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        let base = 2 + r * FOR_ROW_PARAMS;
        sql.push_str(&format!("(?{}, ?{}, ?{})", base, base + 1, base + 2));
    }
    sql.push_str(") AS v CROSS JOIN tasks AS t ON t.rid = v.column1");
    sql
}

static FOR_ROWS_SQL: LazyLock<[String; 3]> = LazyLock::new(|| CHUNKS.map(for_rows_sql));

/// Appends `events`, in order, at `at`.
pub(crate) fn append_for_rows(
    conn: &Connection,
    events: &[ForRow<'_>],
    at: i64,
) -> StoreResult<()> {
    let mut rest = events;
    for (size, sql) in CHUNKS.iter().zip(FOR_ROWS_SQL.iter()) {
        if rest.len() < *size {
            continue;
        }
        let mut s = conn.prepare_cached(sql).map_err(map)?;
        while rest.len() >= *size {
            let (chunk, tail) = rest.split_at(*size);
            let run = (|| {
                s.raw_bind_parameter(1, at)?;
                for (r, e) in chunk.iter().enumerate() {
                    let base = 2 + r * FOR_ROW_PARAMS;
                    s.raw_bind_parameter(base, e.rid)?;
                    s.raw_bind_parameter(base + 1, e.kind.as_str())?;
                    s.raw_bind_parameter(base + 2, e.data)?;
                }
                s.raw_execute()
            })();
            run.map_err(map)?;
            rest = tail;
        }
    }
    Ok(())
}

/// One event whose values the writer knows already.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Known<'a> {
    pub(crate) kind: EventKind,
    pub(crate) task_id: [u8; 16],
    pub(crate) name: &'a str,
    pub(crate) queue: &'a str,
    pub(crate) attempt: i64,
    pub(crate) data: &'a str,
}

const APPEND_PARAMS_PER_ROW: usize = 6;

fn append_sql(rows: usize) -> String {
    let mut sql =
        String::from("INSERT INTO events (at, kind, task_id, name, queue, attempt, data) VALUES ");
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        let base = 2 + r * APPEND_PARAMS_PER_ROW;
        sql.push_str("(?1");
        for p in 0..APPEND_PARAMS_PER_ROW {
            sql.push_str(&format!(", ?{}", base + p));
        }
        sql.push(')');
    }
    sql
}

static APPEND_SQL: LazyLock<[String; 3]> = LazyLock::new(|| CHUNKS.map(append_sql));

/// Appends `events`, in order, at `at`.
pub(crate) fn append_known(conn: &Connection, events: &[Known<'_>], at: i64) -> StoreResult<()> {
    let mut rest = events;
    for (size, sql) in CHUNKS.iter().zip(APPEND_SQL.iter()) {
        if rest.len() < *size {
            continue;
        }
        let mut s = conn.prepare_cached(sql).map_err(map)?;
        while rest.len() >= *size {
            let (chunk, tail) = rest.split_at(*size);
            let run = (|| {
                s.raw_bind_parameter(1, at)?;
                for (r, e) in chunk.iter().enumerate() {
                    let base = 2 + r * APPEND_PARAMS_PER_ROW;
                    s.raw_bind_parameter(base, e.kind.as_str())?;
                    s.raw_bind_parameter(base + 1, e.task_id)?;
                    s.raw_bind_parameter(base + 2, e.name)?;
                    s.raw_bind_parameter(base + 3, e.queue)?;
                    s.raw_bind_parameter(base + 4, e.attempt)?;
                    s.raw_bind_parameter(base + 5, e.data)?;
                }
                s.raw_execute()
            })();
            run.map_err(map)?;
            rest = tail;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- read

/// Most rows one filtered [`list`] looks at: a filter that matches little
/// still costs a bounded read, and the cursor moves past what was looked
/// at.
pub(crate) const FILTER_SCAN: u32 = 10 * MAX_EVENT_PAGE;

/// Rows a purge batch may look past its limit for old events (events are
/// appended in about `at` order; one written with an earlier `now` than
/// its neighbours is found by a later purge).
const PURGE_SCAN_SLACK: u32 = 1000;

fn invalid_cursor(cursor: &str) -> StoreError {
    StoreError::Invalid(ValidationError::new(
        "cursor",
        format!(
            "{cursor:?} is not a cursor of this event log (pass the `cursor` of an event or \
             page this store returned)"
        ),
    ))
}

/// The seq a cursor names.
pub(crate) fn parse_cursor(cursor: &str) -> StoreResult<i64> {
    if cursor.is_empty() || cursor.len() > 19 || !cursor.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid_cursor(cursor));
    }
    cursor.parse::<i64>().map_err(|_| invalid_cursor(cursor))
}

/// Refuses a page size outside 1 to [`MAX_EVENT_PAGE`].
pub(crate) fn check_limit(limit: u32) -> StoreResult<()> {
    if (1..=MAX_EVENT_PAGE).contains(&limit) {
        Ok(())
    } else {
        Err(StoreError::Invalid(ValidationError::new(
            "limit",
            format!("must be between 1 and {MAX_EVENT_PAGE}, got {limit}"),
        )))
    }
}

/// The filter as one SQL condition over an `events` row, its values bound
/// from `?first` on; `None` when it matches everything.
fn condition(filter: &EventFilter, first: usize) -> Option<(String, Vec<Value>)> {
    let mut clauses = Vec::new();
    let mut values = Vec::new();
    let mut any_of = |column: &str, items: Vec<Value>| {
        if items.is_empty() {
            return;
        }
        let marks: Vec<String> = (0..items.len())
            .map(|i| format!("?{}", first + values.len() + i))
            .collect();
        clauses.push(format!("{column} IN ({})", marks.join(", ")));
        values.extend(items);
    };
    any_of(
        "kind",
        filter
            .kinds
            .iter()
            .map(|k| Value::Text(k.as_str().to_owned()))
            .collect(),
    );
    any_of(
        "name",
        filter.names.iter().cloned().map(Value::Text).collect(),
    );
    any_of(
        "queue",
        filter.queues.iter().cloned().map(Value::Text).collect(),
    );
    any_of(
        "task_id",
        filter
            .task_ids
            .iter()
            .map(|id| Value::Blob(id.as_bytes().to_vec()))
            .collect(),
    );
    if clauses.is_empty() {
        None
    } else {
        Some((clauses.join(" AND "), values))
    }
}

/// One page of the log after seq `after` (see [`EventPage`]). Reads the
/// rows after `after` in seq order, at most `limit` of them without a
/// filter, at most [`FILTER_SCAN`] with one; the filter is evaluated by
/// SQLite, and only matching rows are decoded. The cursor is the last row
/// looked at.
pub(crate) fn list(
    conn: &Connection,
    after: i64,
    filter: &EventFilter,
    limit: u32,
) -> StoreResult<(Vec<TaskEvent>, Option<i64>)> {
    let (matched, values, scan) = match condition(filter, 3) {
        Some((sql, values)) => (sql, values, FILTER_SCAN.max(limit)),
        None => ("1".to_owned(), Vec::new(), limit),
    };
    let sql = format!(
        "SELECT seq, {matched}, at, kind, task_id, name, queue, attempt, data FROM events \
         WHERE seq > ?1 ORDER BY seq LIMIT ?2 + 0"
    );
    let mut s = conn.prepare_cached(&sql).map_err(map)?;
    let mut params: Vec<Value> = Vec::with_capacity(2 + values.len());
    params.push(Value::Integer(after));
    params.push(Value::Integer(i64::from(scan)));
    params.extend(values);
    let mut rows = s
        .query(rusqlite::params_from_iter(params.iter()))
        .map_err(map)?;
    let mut events = Vec::new();
    let mut last = None;
    while let Some(row) = rows.next().map_err(map)? {
        let seq: i64 = row.get(0).map_err(map)?;
        last = Some(seq);
        if !row.get::<_, bool>(1).map_err(map)? {
            continue;
        }
        events.push(decode(row, seq)?);
        if events.len() >= limit as usize {
            break;
        }
    }
    Ok((events, last))
}

/// Reads an event row of [`list`].
fn decode(row: &rusqlite::Row<'_>, seq: i64) -> StoreResult<TaskEvent> {
    let at: i64 = row.get(2).map_err(map)?;
    let kind: String = row.get(3).map_err(map)?;
    let task_id: [u8; 16] = row.get(4).map_err(map)?;
    let attempt: i64 = row.get(7).map_err(map)?;
    let data: String = row.get(8).map_err(map)?;
    Ok(TaskEvent {
        cursor: seq.to_string(),
        at: time(at)?,
        kind: kind
            .parse()
            .map_err(|_| corrupt(format!("event {seq} has kind {kind:?}")))?,
        task_id: TaskId::from_bytes(task_id),
        name: row.get(5).map_err(map)?,
        queue: row.get(6).map_err(map)?,
        attempt: u32::try_from(attempt)
            .map_err(|_| corrupt(format!("event {seq} has attempt {attempt}")))?,
        data: serde_json::from_str(&data)
            .map_err(|e| corrupt(format!("event {seq} holds bad JSON: {e}")))?,
    })
}

/// The page `params` asks for, on a read connection.
pub(crate) fn page(conn: &Connection, params: &EventListParams) -> StoreResult<EventPage> {
    let after = params.after.as_deref().map(parse_cursor).transpose()?;
    let (events, last) = list(conn, after.unwrap_or(0), &params.filter, params.limit)?;
    let cursor = match last {
        Some(seq) => Some(seq.to_string()),
        None => params.after.clone(),
    };
    Ok(EventPage { events, cursor })
}

/// The newest event's seq, if any.
pub(crate) fn latest(conn: &Connection) -> StoreResult<Option<i64>> {
    conn.prepare_cached("SELECT max(seq) FROM events")
        .map_err(map)?
        .query_row([], |r| r.get(0))
        .map_err(map)
}

/// Deletes up to `limit` events written before `before`, oldest first:
/// those among the first `limit` + [`PURGE_SCAN_SLACK`] rows in seq order
/// (so a purge never reads the whole log), never the newest event (which
/// keeps the next seq above every seq handed out). Returns how many.
pub(crate) fn purge_batch(conn: &Connection, before: i64, limit: u32) -> StoreResult<u64> {
    let deleted = conn
        .prepare_cached(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM \
             (SELECT seq, at FROM events WHERE seq < (SELECT max(seq) FROM events) \
             ORDER BY seq LIMIT ?3 + 0) WHERE at < ?1 LIMIT ?2 + 0)",
        )
        .map_err(map)?
        .execute(rusqlite::params![
            before,
            i64::from(limit),
            i64::from(limit) + i64::from(PURGE_SCAN_SLACK)
        ])
        .map_err(map)?;
    Ok(deleted as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_plain_decimal_seqs() {
        assert_eq!(parse_cursor("0").ok(), Some(0));
        assert_eq!(parse_cursor("12345").ok(), Some(12345));
        for bad in ["", "-1", "+1", " 1", "1.2", "abc", "99999999999999999999"] {
            assert!(parse_cursor(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn multi_row_appends_number_their_parameters_in_order() {
        let sql = append_sql(2);
        assert!(sql.ends_with("(?1, ?2, ?3, ?4, ?5, ?6, ?7), (?1, ?8, ?9, ?10, ?11, ?12, ?13)"));
        let sql = for_rows_sql(2);
        assert!(
            sql.contains("(VALUES (?2, ?3, ?4), (?5, ?6, ?7)) AS v CROSS JOIN"),
            "{sql}"
        );
    }

    #[test]
    fn filters_bind_after_the_list_parameters() {
        let filter = EventFilter {
            kinds: vec![EventKind::Created, EventKind::Failed],
            names: vec!["a".to_owned()],
            ..EventFilter::default()
        };
        let (sql, values) = condition(&filter, 3).unwrap_or_default();
        assert_eq!(sql, "kind IN (?3, ?4) AND name IN (?5)");
        assert_eq!(values.len(), 3);
        assert!(condition(&EventFilter::default(), 3).is_none());
    }
}
