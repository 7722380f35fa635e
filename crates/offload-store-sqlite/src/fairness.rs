//! The claim's slow path: the choice of tasks when a stored limit
//! concerns the claim or the queue holds pending tasks with a fairness
//! key (the plain claim of [`write::claim`] runs otherwise).
//!
//! - **Limits** ([`Gate`]): what is full already (a queue, a task name, a
//!   key value) is left out in the SQL that reads candidates, so a
//!   saturated key or name at the head of the queue does not hide the
//!   tasks behind it; each candidate read is then taken only if every
//!   limit matching it keeps room, and skipped ones stay pending,
//!   untouched. A read examines at most `limit * 10 + 100` candidates; when
//!   one turned candidates away and the claim has room left, what is full
//!   is worked out again and another read follows (a few at most), so the
//!   claim's cost stays bounded.
//! - **Fairness**: the pending tasks of the queue form one lane per
//!   fairness key (tasks without a key share one lane, stored as key `''`,
//!   found among the first candidates of the usual order). The claim
//!   serves the lanes round-robin, least recently served first (never
//!   served first, then by key), one task per lane per round, within a
//!   lane in the usual order (priority, run time, id); `fairness_served`
//!   records, in the claim's transaction, when each lane was last served.
//!
//! The writer thread serialises every claim of the process and `BEGIN
//! IMMEDIATE` those of other processes, so the counts a claim reads hold
//! until it commits.
//!
//! [`write::claim`]: crate::write::claim

use std::collections::VecDeque;

use offload_store::StoreResult;
use offload_types::Limit;
use rusqlite::{Connection, OptionalExtension, ToSql};

use crate::codec::{CLAIM_COLUMNS, RawClaimed};
use crate::error::map;
use crate::limits::{Gate, LimitCache, Saturated};
use crate::write::{ClaimArgs, exec, stmt};

/// Most fairness keys of one queue a claim considers (in key order).
const MAX_KEYS: usize = 1000;

/// Most reads of the usual order one limited claim makes (see
/// [`select`]).
const PASSES: usize = 4;

/// A candidate: the claimed row and whether it holds an ended attempt.
pub(crate) type Candidate = (RawClaimed, bool);

/// Reads the candidates `sql` selects (`CLAIM_COLUMNS` then the ended
/// flag) with `values` bound.
fn read(conn: &Connection, sql: &str, values: &[&dyn ToSql]) -> StoreResult<Vec<Candidate>> {
    let mut s = stmt(conn, sql)?;
    let rows = s
        .query_map(values, |r| {
            Ok((
                RawClaimed::from_row(r)?,
                r.get::<_, bool>(crate::write::CLAIM_ENDED)?,
            ))
        })
        .map_err(map)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map)
}

/// ` AND name IN (?first, ...)` for `n` names (empty for `None`).
fn names_filter(n: Option<usize>, first: usize) -> String {
    match n {
        None => String::new(),
        Some(n) => {
            let marks: Vec<String> = (0..n).map(|i| format!("?{}", first + i)).collect();
            format!(" AND name IN ({})", marks.join(", "))
        }
    }
}

/// Whether `gate` (if any) lets `task` start, counting it if so.
fn admit(gate: &mut Option<Gate<'_>>, task: &RawClaimed) -> StoreResult<bool> {
    match gate {
        None => Ok(true),
        Some(g) => {
            let (name, input) = task.name_input();
            g.admit(name, input)
        }
    }
}

/// Chooses the tasks of claim `a` (after promotion): through `concerned`
/// limits, and round-robin across fairness keys when `fair` says the queue
/// may hold keyed tasks. Writes the rate-log rows and the served state;
/// the caller leases the tasks returned.
pub(crate) fn select(
    conn: &Connection,
    cache: &LimitCache,
    a: &ClaimArgs,
    concerned: Option<Vec<&Limit>>,
    fair: bool,
) -> StoreResult<Vec<Candidate>> {
    let set = &a.set;
    let limit = a.limit as usize;
    let examine = limit.saturating_mul(10).saturating_add(100);
    let mut gate = concerned
        .map(|c| Gate::load(conn, c, set.now))
        .transpose()?;
    // What has no room now is left out of the candidates read, so one
    // saturated name or key ahead in the queue hides nothing behind it.
    let saturated = gate.as_ref().map(Gate::saturated).unwrap_or_default();
    if saturated.queue {
        return Ok(Vec::new());
    }
    let keys = if fair {
        keys(conn, &set.queue)?
    } else {
        Vec::new()
    };
    if fair && keys.is_empty() {
        cache.set_fair(&set.queue, false);
    }
    let names: &[String] = a.names.as_deref().unwrap_or_default();
    let n_names = a.names.as_ref().map(Vec::len);
    let out = if keys.is_empty() {
        // The usual order, through the limits. A candidate refused means
        // something saturated during the claim (taken here): another pass
        // reads past it, up to `PASSES` in all.
        let window =
            i64::try_from(if gate.is_some() { examine } else { limit }).unwrap_or(i64::MAX);
        let mut out: Vec<Candidate> = Vec::with_capacity(limit);
        let mut saturated = saturated;
        for _ in 0..PASSES {
            let (exclude, excluded) = saturated.filter(3 + names.len());
            let sql = limited_sql(n_names, &exclude);
            let mut values: Vec<&dyn ToSql> = vec![&set.queue, &window];
            values.extend(names.iter().map(|n| n as &dyn ToSql));
            values.extend(excluded.iter().map(|v| v as &dyn ToSql));
            let rows = read(conn, &sql, &values)?;
            let full = i64::try_from(rows.len()).unwrap_or(i64::MAX) >= window;
            let mut refused = false;
            for candidate in rows {
                if out.len() >= limit {
                    break;
                }
                let rid = candidate.0.rid();
                if out.iter().any(|(t, _)| t.rid() == rid) {
                    continue;
                }
                if admit(&mut gate, &candidate.0)? {
                    out.push(candidate);
                } else {
                    refused = true;
                }
            }
            if out.len() >= limit || !refused || !full {
                break;
            }
            saturated = gate.as_ref().map(Gate::saturated).unwrap_or_default();
            if saturated.queue {
                break;
            }
        }
        out
    } else {
        round_robin(conn, a, &mut gate, &saturated, keys, examine)?
    };
    if let Some(g) = &gate {
        g.record(conn, set.now)?;
    }
    Ok(out)
}

/// Up to `?2` pending tasks of queue `?1` in claim order (names from
/// `?3`), without those `exclude` (a [`Saturated::filter`]) leaves out.
fn limited_sql(names: Option<usize>, exclude: &str) -> String {
    format!(
        "SELECT {CLAIM_COLUMNS}, ended_outcome IS NOT NULL FROM tasks \
         WHERE status = 'pending' AND queue = ?1{}{exclude} \
         ORDER BY priority DESC, run_at, id LIMIT ?2 + 0",
        names_filter(names, 3)
    )
}

/// The first fairness key after `?2` of the pending tasks of queue `?1`.
const KEYS_SQL: &str = "SELECT fairness_key FROM tasks WHERE status = 'pending' AND queue = ?1 \
     AND fairness_key IS NOT NULL AND fairness_key > ?2 ORDER BY fairness_key LIMIT 1";

/// The pending tasks without a fairness key among the first `?2` of queue
/// `?1` in claim order (names from `?3`), without those `exclude` leaves
/// out: the pending index yields the window (reading rows only to match
/// excluded key values), then only the window's rows are read.
fn keyless_sql(names: Option<usize>, exclude: &str) -> String {
    format!(
        "SELECT {CLAIM_COLUMNS}, ended_outcome IS NOT NULL FROM tasks WHERE rid IN \
         (SELECT rid FROM tasks WHERE status = 'pending' AND queue = ?1{}{exclude} \
         ORDER BY priority DESC, run_at, id LIMIT ?2 + 0) AND fairness_key IS NULL \
         ORDER BY priority DESC, run_at, id",
        names_filter(names, 3)
    )
}

/// Up to `?3` pending tasks of queue `?1` with fairness key `?2` in claim
/// order, after the first `?4` (names from `?5`), without those `exclude`
/// leaves out, through the fairness index.
fn lane_sql(names: Option<usize>, exclude: &str) -> String {
    format!(
        "SELECT {CLAIM_COLUMNS}, ended_outcome IS NOT NULL FROM tasks \
         WHERE status = 'pending' AND queue = ?1 AND fairness_key = ?2{}{exclude} \
         ORDER BY priority DESC, run_at, id LIMIT ?3 + 0 OFFSET ?4",
        names_filter(names, 5)
    )
}

/// The distinct fairness keys of the queue's pending tasks, in key order,
/// at most [`MAX_KEYS`]: one index seek each.
fn keys(conn: &Connection, queue: &str) -> StoreResult<Vec<String>> {
    let mut s = stmt(conn, KEYS_SQL)?;
    let mut keys: Vec<String> = Vec::new();
    while keys.len() < MAX_KEYS {
        let after = keys.last().map_or("", String::as_str);
        let next: Option<String> = s
            .query_row(rusqlite::params![queue, after], |r| r.get(0))
            .optional()
            .map_err(map)?;
        match next {
            Some(k) => keys.push(k),
            None => break,
        }
    }
    Ok(keys)
}

/// One fairness key's pending tasks, read a chunk at a time.
struct Lane {
    /// The key (`''`: the tasks without one).
    key: String,
    rows: VecDeque<Candidate>,
    /// Rows of the key read so far (the next chunk's offset); `None` for
    /// the lane without a key, read once.
    read: Option<i64>,
    /// Nothing more to read.
    done: bool,
    /// When it was last served (`None`: never).
    served: Option<i64>,
    /// Candidates of the lane this claim skipped.
    skipped: usize,
    /// The claim's last take from the lane (its place in the sequence).
    last_take: Option<usize>,
}

/// The claim across fairness lanes (see the module docs).
fn round_robin(
    conn: &Connection,
    a: &ClaimArgs,
    gate: &mut Option<Gate<'_>>,
    saturated: &Saturated,
    keys: Vec<String>,
    examine: usize,
) -> StoreResult<Vec<Candidate>> {
    let set = &a.set;
    let limit = a.limit as usize;
    let names: &[String] = a.names.as_deref().unwrap_or_default();
    let n_names = a.names.as_ref().map(Vec::len);
    let chunk = i64::try_from(limit.clamp(1, 100)).unwrap_or(100);

    // The tasks without a key, among the first candidates of the usual
    // order (the pending index gives their rows without reading others).
    let (exclude, excluded) = saturated.filter(3 + names.len());
    let keyless_sql = keyless_sql(n_names, &exclude);
    let window = i64::try_from(examine).unwrap_or(i64::MAX);
    let mut values: Vec<&dyn ToSql> = vec![&set.queue, &window];
    values.extend(names.iter().map(|n| n as &dyn ToSql));
    values.extend(excluded.iter().map(|v| v as &dyn ToSql));
    let keyless: VecDeque<Candidate> = read(conn, &keyless_sql, &values)?.into();

    let mut served = stmt(
        conn,
        "SELECT served FROM fairness_served WHERE queue = ?1 AND key = ?2",
    )?;
    let mut lanes: Vec<Lane> = Vec::with_capacity(keys.len() + 1);
    if !keyless.is_empty() {
        lanes.push(Lane {
            key: String::new(),
            rows: keyless,
            read: None,
            done: true,
            served: None,
            skipped: 0,
            last_take: None,
        });
    }
    for key in keys {
        lanes.push(Lane {
            key,
            rows: VecDeque::new(),
            read: Some(0),
            done: false,
            served: None,
            skipped: 0,
            last_take: None,
        });
    }
    for lane in &mut lanes {
        lane.served = served
            .query_row(rusqlite::params![set.queue, lane.key], |r| r.get(0))
            .optional()
            .map_err(map)?;
    }
    drop(served);
    lanes.sort_by(|x, y| (x.served, &x.key).cmp(&(y.served, &y.key)));

    let (lane_exclude, lane_excluded) = saturated.filter(5 + names.len());
    let lane_sql = lane_sql(n_names, &lane_exclude);
    // A lane whose candidates the limits keep refusing gives up its turn
    // after this many.
    let lane_skips = limit.saturating_add(10);
    let mut budget = examine;
    let mut out: Vec<Candidate> = Vec::with_capacity(limit);
    'rounds: while out.len() < limit && budget > 0 {
        let mut progressed = false;
        for lane in &mut lanes {
            if out.len() >= limit || budget == 0 {
                break 'rounds;
            }
            loop {
                if lane.rows.is_empty() && !lane.done {
                    let offset = lane.read.unwrap_or(0);
                    let mut values: Vec<&dyn ToSql> = vec![&set.queue, &lane.key, &chunk, &offset];
                    values.extend(names.iter().map(|n| n as &dyn ToSql));
                    values.extend(lane_excluded.iter().map(|v| v as &dyn ToSql));
                    let rows = read(conn, &lane_sql, &values)?;
                    let got = i64::try_from(rows.len()).unwrap_or(i64::MAX);
                    lane.done = got < chunk;
                    lane.read = Some(offset.saturating_add(got));
                    lane.rows.extend(rows);
                }
                let Some(candidate) = lane.rows.pop_front() else {
                    lane.done = true;
                    break;
                };
                budget -= 1;
                if admit(gate, &candidate.0)? {
                    lane.last_take = Some(out.len());
                    out.push(candidate);
                    progressed = true;
                    break;
                }
                lane.skipped += 1;
                if lane.skipped >= lane_skips {
                    lane.rows.clear();
                    lane.done = true;
                    break;
                }
                if budget == 0 {
                    break 'rounds;
                }
            }
        }
        if !progressed {
            break;
        }
    }

    // The served state: the lanes this claim took from, in the order of
    // their last take, after every lane served before.
    let mut taken: Vec<(usize, &str)> = lanes
        .iter()
        .filter_map(|l| l.last_take.map(|t| (t, l.key.as_str())))
        .collect();
    if !taken.is_empty() {
        taken.sort_unstable();
        let base: i64 = stmt(
            conn,
            "SELECT coalesce(max(served), 0) FROM fairness_served WHERE queue = ?1",
        )?
        .query_row([&set.queue], |r| r.get(0))
        .map_err(map)?;
        for (i, (_, key)) in taken.iter().enumerate() {
            let at = base
                .saturating_add(i64::try_from(i).unwrap_or(i64::MAX))
                .saturating_add(1);
            exec(
                conn,
                "INSERT INTO fairness_served (queue, key, served) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (queue, key) DO UPDATE SET served = excluded.served",
                &[&set.queue, key, &at],
            )?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A migrated in-memory database with a backlog of keyed and keyless
    /// tasks, analysed as a long-lived database would be.
    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        crate::schema::migrate(&conn, std::path::Path::new(":memory:"))
            .unwrap_or_else(|e| panic!("{e}"));
        conn.execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) \
             INSERT INTO tasks (id, name, queue, input, status, priority, max_attempts, run_at, \
             tags, metadata, created_at, updated_at, fairness_key) \
             SELECT randomblob(16), 'job', 'q', 'null', \
             CASE WHEN i % 3 = 0 THEN 'succeeded' ELSE 'pending' END, 0, 3, i, '[]', '{}', \
             i, i, CASE WHEN i % 2 = 0 THEN 'k' || (i % 50) END FROM n; ANALYZE;",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        conn
    }

    fn plan(conn: &Connection, sql: &str) -> String {
        let mut s = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let n = s.parameter_count();
        let values: Vec<Box<dyn ToSql>> =
            (0..n).map(|_| Box::new(1i64) as Box<dyn ToSql>).collect();
        let refs: Vec<&dyn ToSql> = values.iter().map(AsRef::as_ref).collect();
        let rows = s
            .query_map(refs.as_slice(), |r| r.get::<_, String>(3))
            .unwrap_or_else(|e| panic!("{e}"));
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .unwrap_or_else(|e| panic!("{e}"))
            .join("\n")
    }

    #[test]
    fn the_slow_claim_reads_through_indexes() {
        let conn = db();
        let keys = plan(&conn, KEYS_SQL);
        assert!(
            keys.contains("USING COVERING INDEX tasks_pending_fair"),
            "{keys}"
        );
        assert!(!keys.contains("TEMP B-TREE"), "{keys}");
        for names in [None, Some(2)] {
            let lane = plan(&conn, &lane_sql(names, ""));
            assert!(lane.contains("USING INDEX tasks_pending_fair"), "{lane}");
            assert!(!lane.contains("SCAN tasks"), "{lane}");
            assert!(!lane.contains("TEMP B-TREE"), "{lane}");
            let keyless = plan(&conn, &keyless_sql(names, ""));
            assert!(keyless.contains("tasks_pending"), "{keyless}");
            assert!(!keyless.contains("SCAN tasks"), "{keyless}");
        }
    }

    #[test]
    fn keys_are_found_one_seek_each() {
        let conn = db();
        let keys = keys(&conn, "q").unwrap_or_else(|e| panic!("{e}"));
        // i even and not a multiple of 3 (pending): every i % 50 that is even.
        assert_eq!(keys.len(), 25, "{keys:?}");
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }
}
