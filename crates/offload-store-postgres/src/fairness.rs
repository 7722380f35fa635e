//! Fairness across `fairness_key`s: whether a queue needs the fair claim
//! (cached per store instance), and the round-robin that orders a claim's
//! takes across keys, least recently served key first.
//!
//! Tasks without a key share one bucket, stored as the key `''` (a
//! fairness key has at least one character, so no real key is `''`).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use offload_store::{LIMIT_CACHE_TTL, StoreResult};
use offload_types::Task;
use sqlx::{AssertSqlSafe, Row};

use crate::PgStore;
use crate::error::map;

/// The bucket of the tasks without a fairness key.
pub(crate) const KEYLESS: &str = "";

/// Per queue, whether it had tasks with a fairness key when last looked
/// at (and when that was).
#[derive(Debug, Default)]
pub(crate) struct FairCache {
    queues: Mutex<HashMap<String, (Instant, bool)>>,
}

impl FairCache {
    /// The cached answer for `queue`, while younger than [`LIMIT_CACHE_TTL`].
    fn get(&self, queue: &str) -> Option<bool> {
        let queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues
            .get(queue)
            .filter(|(at, _)| at.elapsed() < LIMIT_CACHE_TTL)
            .map(|(_, fair)| *fair)
    }

    /// Records the answer for `queue`.
    fn set(&self, queue: &str, fair: bool) {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        if queues.len() > 10_000 {
            queues.retain(|_, (at, _)| at.elapsed() < LIMIT_CACHE_TTL);
        }
        queues.insert(queue.to_owned(), (Instant::now(), fair));
    }

    /// Marks the queues of tasks with a fairness key just inserted through
    /// this instance, so its next claim of them is fair at once.
    pub(crate) fn inserted<'a>(&self, queues: impl IntoIterator<Item = &'a str>) {
        for q in queues {
            self.set(q, true);
        }
    }
}

/// Whether a claim of `queue` must be fair: some pending task of it (or
/// a scheduled one whose time has come) has a fairness key. Cached for
/// [`LIMIT_CACHE_TTL`] per instance; inserts through this instance mark
/// their queues at once.
pub(crate) async fn active(
    store: &PgStore,
    queue: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> StoreResult<bool> {
    if let Some(fair) = store.inner.fair.get(queue) {
        return Ok(fair);
    }
    let q = store.q();
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM {q}.tasks WHERE status = 'pending' AND queue = $1 \
         AND fairness_key IS NOT NULL) \
         OR EXISTS (SELECT 1 FROM {q}.tasks WHERE status = 'scheduled' AND queue = $1 \
         AND run_at <= $2 AND fairness_key IS NOT NULL)"
    );
    let fair: bool = sqlx::query(AssertSqlSafe(sql))
        .bind(queue)
        .bind(now)
        .fetch_one(&store.inner.pool)
        .await
        .map_err(map)?
        .try_get(0)
        .map_err(map)?;
    store.inner.fair.set(queue, fair);
    Ok(fair)
}

/// The bucket of a task: its fairness key, or [`KEYLESS`].
pub(crate) fn bucket(t: &Task) -> &str {
    t.fairness_key.as_deref().unwrap_or(KEYLESS)
}

/// Orders keys for a claim: never served first, then least recently
/// served, then by key.
pub(crate) fn order_keys(keys: &mut [String], served: &HashMap<String, i64>) {
    keys.sort_by(|a, b| (served.get(a), a).cmp(&(served.get(b), b)));
}

/// Round-robin over `groups` (in their order; each group's candidates in
/// claim order): each round offers every group's next candidate to
/// `admit` until it takes one (refused candidates are dropped: what a
/// claim takes only adds to the counts that refused them), one take per
/// group per round, until `limit` are taken or no group takes any.
/// Returns the taken candidates in the order taken.
pub(crate) fn round_robin<T>(
    groups: Vec<VecDeque<T>>,
    limit: usize,
    mut admit: impl FnMut(&T) -> bool,
) -> Vec<T> {
    let mut groups = groups;
    let mut taken = Vec::new();
    while taken.len() < limit {
        let mut progress = false;
        for g in groups.iter_mut() {
            if taken.len() >= limit {
                break;
            }
            while let Some(c) = g.pop_front() {
                if admit(&c) {
                    taken.push(c);
                    progress = true;
                    break;
                }
            }
        }
        if !progress {
            break;
        }
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_takes_one_per_group_per_round() {
        let groups = vec![
            VecDeque::from(vec![1, 2, 3, 4, 5]),
            VecDeque::from(vec![10, 11]),
            VecDeque::from(vec![20]),
        ];
        assert_eq!(round_robin(groups, 6, |_| true), vec![1, 10, 20, 2, 11, 3]);
    }

    #[test]
    fn round_robin_skips_refused_candidates() {
        let groups = vec![VecDeque::from(vec![1, 2, 3]), VecDeque::from(vec![10, 11])];
        assert_eq!(
            round_robin(groups, 10, |c| *c != 1 && *c != 10),
            vec![2, 11, 3]
        );
    }

    #[test]
    fn keys_never_served_come_first() {
        let mut keys = vec![
            "b".to_owned(),
            "a".to_owned(),
            "c".to_owned(),
            "d".to_owned(),
        ];
        let served = HashMap::from([("a".to_owned(), 5), ("c".to_owned(), 2)]);
        order_keys(&mut keys, &served);
        assert_eq!(keys, vec!["b", "d", "c", "a"]);
    }
}
