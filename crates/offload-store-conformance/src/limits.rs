//! Cases for limits, fairness and quotas: `limit_put` (upsert by scope and
//! target), `limit_list` (name scope before queue, then target) and
//! `limit_delete`; claims under a limit of a name or a queue
//! (`concurrency`, `key_concurrency` by a value of the input, `rate` per
//! period) that leave the tasks over it pending and untouched and look past
//! them for others, even with many claimers at once; claims round-robin
//! across `fairness_key`s; the quota `max_queued_per_key` refusing a whole
//! batch at insert with `QuotaExceeded`; the limit cache of a store
//! instance; and `fairness_key` reading back and surviving a copy.
//!
//! Time comes from the `now` of each call; the only sleep waits out
//! [`LIMIT_CACHE_TTL`] for a limit set through the other handle.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use offload_store::{
    FinishOutcome, LIMIT_CACHE_TTL, LimitDeleteParams, LimitPutParams, LimitRecord, Store,
    StoreError, TaskClaimParams, TaskCountParams, TaskDeleteParams, TaskExportParams, TaskFilter,
    TaskImportParams, TaskInsertParams, TaskListParams,
};
use offload_types::{Limit, LimitScope, NewTask, Rate, Status, Task, TaskId, TaskOptions};
use serde_json::{Value, json};

use crate::harness::{ok, span};
use crate::{Harness, LEASE, lease_of};

const SECOND: Duration = Duration::from_secs(1);

fn ids_of(tasks: &[Task]) -> Vec<TaskId> {
    tasks.iter().map(|t| t.id).collect()
}

fn set_of(ids: &[TaskId]) -> HashSet<TaskId> {
    ids.iter().copied().collect()
}

/// A task `name` in `queue` with `input`.
fn task(name: &str, queue: &str, input: Value) -> NewTask {
    NewTask::new(name, input).options(TaskOptions::new().queue(queue))
}

/// A task `name` in `queue` with fairness key `key`.
fn fair(name: &str, queue: &str, key: &str) -> NewTask {
    NewTask::new(name, json!(null)).options(TaskOptions::new().queue(queue).fairness_key(key))
}

/// Stores `limit` through `store` at the harness's `now`.
async fn put_via(h: &Harness, store: &dyn Store, limit: Limit) -> LimitRecord {
    let params = LimitPutParams {
        limit,
        now: h.now(),
    };
    ok("limit_put", store.limit_put(&params).await)
}

/// Stores `limit` through `h.store`.
async fn put(h: &Harness, limit: Limit) -> LimitRecord {
    put_via(h, h.store.as_ref(), limit).await
}

async fn delete(h: &Harness, scope: LimitScope, target: &str) -> bool {
    let params = LimitDeleteParams {
        scope,
        target: target.to_owned(),
    };
    ok("limit_delete", h.store.limit_delete(&params).await)
}

async fn list(h: &Harness) -> Vec<LimitRecord> {
    ok("limit_list", h.store.limit_list().await)
}

/// The claim params of `queue` up to `limit` at `now`, for `worker`.
fn claim_params(h: &Harness, queue: &str, limit: u32, worker: &str) -> TaskClaimParams {
    TaskClaimParams {
        queue: queue.to_owned(),
        names: None,
        limit,
        worker_id: worker.to_owned(),
        lease: LEASE,
        now: h.now(),
    }
}

/// Claims up to `limit` tasks of `queue` through `store`.
async fn claim_via(h: &Harness, store: &dyn Store, queue: &str, limit: u32) -> Vec<Task> {
    let params = claim_params(h, queue, limit, "limits-worker");
    let claimed = ok("task_claim", store.task_claim(&params).await);
    assert!(
        claimed.len() <= limit as usize,
        "claim of limit {limit} returned {}",
        claimed.len()
    );
    for t in &claimed {
        assert_eq!(t.status, Status::Running, "claimed task {} runs", t.id);
        assert_eq!(t.queue, queue, "claimed task {} is of queue {queue}", t.id);
    }
    claimed
}

/// Claims up to `limit` tasks of `queue` through `h.store`.
async fn claim(h: &Harness, queue: &str, limit: u32) -> Vec<Task> {
    claim_via(h, h.store.as_ref(), queue, limit).await
}

async fn succeed(h: &Harness, task: &Task) {
    let answer = h
        .finish(lease_of(task), FinishOutcome::Success { output: json!(1) })
        .await;
    assert!(answer.accepted, "finish of {} accepted", task.id);
}

/// How many tasks of `queue` (all queues when `None`) are running.
async fn running(h: &Harness, queue: Option<&str>) -> u64 {
    let params = TaskCountParams {
        filter: TaskFilter {
            statuses: vec![Status::Running],
            queues: queue.map(|q| vec![q.to_owned()]).unwrap_or_default(),
            ..TaskFilter::default()
        },
    };
    let counts = ok("task_count", h.store.task_count(&params).await);
    counts.iter().map(|c| c.count).sum()
}

/// The stored tasks `ids`, in that order.
async fn snapshot(h: &Harness, ids: &[TaskId]) -> Vec<Task> {
    let mut tasks = Vec::with_capacity(ids.len());
    for id in ids {
        tasks.push(h.get(*id).await);
    }
    tasks
}

/// Each of `before` is still exactly as it was: pending, attempt 0,
/// nothing changed (a skipped candidate is left untouched).
async fn assert_untouched(h: &Harness, before: &[Task], why: &str) {
    for t in before {
        let now = h.get(t.id).await;
        assert_eq!(now.status, Status::Pending, "{why}: task {} waits", t.id);
        assert_eq!(now.attempt, 0, "{why}: task {} used no attempt", t.id);
        assert_eq!(&now, t, "{why}: task {} is untouched", t.id);
    }
    for t in before {
        assert!(
            h.attempts(t.id).await.is_empty(),
            "{why}: task {} has no attempt row",
            t.id
        );
    }
}

fn rate(text: &str) -> Rate {
    match text.parse() {
        Ok(r) => r,
        Err(e) => panic!("rate {text}: {e}"),
    }
}

/// Inserts through `store`; returns the store's answer unchecked.
async fn try_insert(h: &Harness, tasks: Vec<NewTask>) -> Result<Vec<TaskId>, StoreError> {
    let params = TaskInsertParams {
        tasks,
        now: h.now(),
    };
    h.store
        .task_insert_many(&params)
        .await
        .map(|answer| answer.iter().map(|e| e.id).collect())
}

/// An insert the quota must refuse: `QuotaExceeded` whose message names
/// every string of `names`, and none of `tasks` stored.
#[track_caller]
fn refused(result: Result<Vec<TaskId>, StoreError>, names: &[&str], why: &str) {
    match result {
        Err(StoreError::QuotaExceeded(msg)) => {
            for n in names {
                assert!(
                    msg.contains(n),
                    "{why}: the quota message names {n:?}: {msg:?}"
                );
            }
        }
        Err(other) => panic!("{why}: expected QuotaExceeded, got {other} ({other:?})"),
        Ok(ids) => panic!("{why}: expected QuotaExceeded, the store inserted {ids:?}"),
    }
}

// ------------------------------------------------------------ put/list/delete

/// `limit_put` returns the record as stored (`updated_at` = now) and
/// replaces the limit of the same scope and target; `limit_list` is by
/// scope (`name` before `queue`) then target; `limit_delete` answers
/// whether there was one, and scope and target both identify it.
pub async fn limit_put_list_delete_round_trip(h: &Harness) {
    assert!(list(h).await.is_empty(), "a fresh store has no limits");

    let by_queue = Limit::queue("a-queue").concurrency(2);
    let full = Limit::name("z-import")
        .concurrency(10)
        .per_key("/customer/id", 1)
        .rate(rate("5/10s"))
        .max_queued_per_key(7);
    let simple = Limit::name("b-mail").rate(rate("50/s"));
    let t0 = h.now();
    let r = put(h, by_queue.clone()).await;
    assert_eq!(r.limit, by_queue);
    assert_eq!(r.updated_at, t0, "updated_at is the put's now");
    h.advance(SECOND);
    let r = put(h, full.clone()).await;
    assert_eq!(r.limit, full, "every field is stored");
    assert_eq!(r.updated_at, h.now());
    h.advance(SECOND);
    put(h, simple.clone()).await;
    // The same target in the other scope is another limit.
    let same_target_other_scope = Limit::queue("b-mail").max_queued_per_key(3);
    put(h, same_target_other_scope.clone()).await;

    let listed: Vec<Limit> = list(h).await.into_iter().map(|r| r.limit).collect();
    assert_eq!(
        listed,
        vec![
            simple.clone(),
            full.clone(),
            by_queue.clone(),
            same_target_other_scope.clone()
        ],
        "name scope first, then queue; by target within a scope"
    );
    let seen = ok("limit_list on second", h.second.limit_list().await);
    assert_eq!(
        seen.iter().map(|r| r.limit.clone()).collect::<Vec<_>>(),
        listed,
        "the other handle lists the same limits"
    );

    // Upsert: replaces every field, including dropping ones now unset.
    h.advance(SECOND);
    let replacement = Limit::name("z-import").max_queued_per_key(1);
    let r = put(h, replacement.clone()).await;
    assert_eq!(r.limit, replacement);
    let records = list(h).await;
    assert_eq!(records.len(), 4, "a put of an existing limit adds none");
    let stored = records
        .iter()
        .find(|r| r.limit.scope == LimitScope::Name && r.limit.target == "z-import");
    assert_eq!(
        stored.map(|r| (&r.limit, r.updated_at)),
        Some((&replacement, h.now())),
        "the put replaced the limit and its updated_at"
    );

    assert!(delete(h, LimitScope::Name, "z-import").await);
    assert!(
        !delete(h, LimitScope::Name, "z-import").await,
        "a second delete finds none"
    );
    assert!(
        !delete(h, LimitScope::Name, "a-queue").await,
        "a limit of queue a-queue is not one of name a-queue"
    );
    assert!(!delete(h, LimitScope::Queue, "nothing-here").await);
    assert!(delete(h, LimitScope::Queue, "b-mail").await);
    let listed: Vec<Limit> = list(h).await.into_iter().map(|r| r.limit).collect();
    assert_eq!(listed, vec![simple, by_queue]);
}

// ------------------------------------------------------------ no limits

/// Inserts tasks of several names with mixed priorities and start times
/// into `queue`; returns their ids in claim order (priority DESC, run_at, id).
async fn insert_ordering_set(h: &Harness, queue: &str) -> Vec<TaskId> {
    let opts = |priority: i32, secs_ago: u64| {
        TaskOptions::new()
            .queue(queue)
            .priority(priority)
            .run_at(h.earlier(Duration::from_secs(secs_ago)))
    };
    let a = NewTask::new("a", json!(null)).options(opts(0, 10));
    let b = NewTask::new("b", json!(null)).options(opts(5, 0));
    let c = NewTask::new("c", json!(null)).options(opts(0, 20));
    let d = NewTask::new("a", json!(null)).options(opts(0, 10));
    let e = NewTask::new("b", json!(null)).options(opts(-1, 100));
    let f = NewTask::new("c", json!(null)).options(opts(5, 1));
    let expected = vec![f.id, b.id, c.id, a.id, d.id, e.id];
    h.insert(vec![d, e, a, f, c, b]).await;
    expected
}

/// Without a limit that concerns the queue or its names, claims behave as
/// they always did: every ready task, priority DESC, run_at, id. Limits of
/// other queues and names, and a limit with only a quota, change nothing.
pub async fn limit_none_claims_as_before(h: &Harness) {
    let expected = insert_ordering_set(h, "plain").await;
    let mut got = Vec::new();
    for _ in 0..expected.len() {
        got.extend(ids_of(&claim(h, "plain", 1).await));
    }
    assert_eq!(got, expected, "no limits: one at a time in order");

    put(h, Limit::queue("elsewhere").concurrency(1)).await;
    put(h, Limit::name("unrelated").concurrency(1).rate(rate("1/h"))).await;
    let expected = insert_ordering_set(h, "plain2").await;
    assert_eq!(
        ids_of(&claim(h, "plain2", 100).await),
        expected,
        "limits of other queues and names: one batch in order"
    );

    put(h, Limit::queue("quota-only").max_queued_per_key(1)).await;
    let expected = insert_ordering_set(h, "quota-only").await;
    assert_eq!(
        ids_of(&claim(h, "quota-only", 4).await),
        expected[..4],
        "a quota alone limits no claim"
    );
    assert_eq!(ids_of(&claim(h, "quota-only", 4).await), expected[4..]);
    assert!(claim(h, "quota-only", 4).await.is_empty());
}

// ------------------------------------------------------------ concurrency

/// `concurrency` of a name: no more of that name run at once (in any
/// queue); the skipped ones stay pending and untouched; tasks of other
/// names are taken; a finish frees a slot.
pub async fn limit_concurrency_per_name(h: &Harness) {
    const Q: &str = "cq";
    put(h, Limit::name("capped").concurrency(2)).await;
    let capped = h.insert_n("capped", Q, 5).await;
    let free = h.insert_n("free", Q, 3).await;
    let waiting = snapshot(h, &capped[2..]).await;

    let first = claim(h, Q, 10).await;
    let mut expected = vec![capped[0], capped[1]];
    expected.extend(&free);
    assert_eq!(
        set_of(&ids_of(&first)),
        set_of(&expected),
        "two of capped (the first by order) and every free task"
    );
    assert!(claim(h, Q, 10).await.is_empty(), "no slot left");
    h.advance(SECOND);
    assert!(
        claim_via(h, h.second.as_ref(), Q, 10).await.is_empty(),
        "no slot left through the other handle either"
    );
    assert_untouched(h, &waiting, "over the concurrency").await;

    // The name scope covers every queue.
    let elsewhere = h.insert_one(task("capped", "cq-other", json!(0))).await;
    assert!(
        claim(h, "cq-other", 10).await.is_empty(),
        "capped tasks running in {Q} count in any queue"
    );

    let done = first
        .iter()
        .find(|t| t.name == "capped")
        .unwrap_or_else(|| panic!("a capped task was claimed"));
    succeed(h, done).await;
    let next = claim(h, Q, 10).await;
    assert_eq!(
        ids_of(&next),
        vec![capped[2]],
        "one slot: the next by order"
    );
    assert!(claim(h, "cq-other", 10).await.is_empty());
    succeed(h, &next[0]).await;
    assert_eq!(ids_of(&claim(h, "cq-other", 10).await), vec![elsewhere]);
    assert_eq!(running(h, None).await, 2 + 3, "2 capped and 3 free run");
}

/// `concurrency` of a queue counts every running task of the queue, of
/// any name, also those claimed before the limit existed; other queues
/// are not limited.
pub async fn limit_concurrency_per_queue(h: &Harness) {
    const Q: &str = "qcap";
    let early = h.insert_n("a", Q, 2).await;
    let early_running = claim(h, Q, 2).await;
    assert_eq!(set_of(&ids_of(&early_running)), set_of(&early));
    put(h, Limit::queue(Q).concurrency(3)).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let name = if i % 2 == 0 { "a" } else { "b" };
        ids.push(h.insert_one(task(name, Q, json!(i))).await);
    }
    let other = h.insert_n("a", "not-qcap", 4).await;
    let waiting = snapshot(h, &ids[1..]).await;

    let got = claim(h, Q, 10).await;
    assert_eq!(
        ids_of(&got),
        vec![ids[0]],
        "two ran before the limit was set: one slot"
    );
    assert!(claim(h, Q, 10).await.is_empty());
    assert_eq!(
        set_of(&ids_of(&claim(h, "not-qcap", 10).await)),
        set_of(&other),
        "another queue is not limited"
    );
    assert_untouched(h, &waiting, "queue full").await;

    for t in &got {
        succeed(h, t).await;
    }
    succeed(h, &early_running[0]).await;
    let got = claim(h, Q, 10).await;
    assert_eq!(ids_of(&got), ids[1..3], "two slots freed: the next two");
    assert_eq!(running(h, Some(Q)).await, 3);
    assert!(claim(h, Q, 10).await.is_empty());
}

/// A task under a name limit and a queue limit is taken only while both
/// have room; tasks only under the queue limit fill what the name limit
/// leaves.
pub async fn limit_name_and_queue_limits_both_apply(h: &Harness) {
    const Q: &str = "both";
    put(h, Limit::name("job").concurrency(1)).await;
    put(h, Limit::queue(Q).concurrency(3)).await;
    let jobs = h.insert_n("job", Q, 3).await;
    let others = h.insert_n("other", Q, 3).await;
    let jobs_waiting = snapshot(h, &jobs[1..]).await;

    let first = claim(h, Q, 10).await;
    assert_eq!(
        set_of(&ids_of(&first)),
        set_of(&[jobs[0], others[0], others[1]]),
        "one job (name limit), three in all (queue limit)"
    );
    assert!(claim(h, Q, 10).await.is_empty());
    assert_untouched(h, &jobs_waiting, "name full").await;

    let other0 = first
        .iter()
        .find(|t| t.id == others[0])
        .unwrap_or_else(|| panic!("others[0] claimed"));
    succeed(h, other0).await;
    assert_eq!(
        ids_of(&claim(h, Q, 10).await),
        vec![others[2]],
        "the queue has room but the name has not: the job waits"
    );

    let job0 = first
        .iter()
        .find(|t| t.id == jobs[0])
        .unwrap_or_else(|| panic!("jobs[0] claimed"));
    succeed(h, job0).await;
    assert_eq!(
        ids_of(&claim(h, Q, 10).await),
        vec![jobs[1]],
        "both have room for one"
    );
    assert!(claim(h, Q, 10).await.is_empty(), "the queue is full again");
    assert_eq!(running(h, Some(Q)).await, 3);

    // The name limit alone, in a queue without a limit.
    let elsewhere = h.insert_n("job", "both-other", 2).await;
    let elsewhere = snapshot(h, &elsewhere).await;
    assert!(
        claim(h, "both-other", 10).await.is_empty(),
        "a job runs already"
    );
    assert_untouched(h, &elsewhere, "name full, other queue").await;
}

// ------------------------------------------------------------ key concurrency

/// `key_concurrency` counts running tasks per value of the input at `key`:
/// one per customer runs; tasks without the field are not limited by key;
/// a JSON pointer reaches into objects; a number and a string are
/// different values.
pub async fn limit_key_concurrency_per_input_value(h: &Harness) {
    put(h, Limit::name("import").per_key("customer_id", 1)).await;
    let mut inputs = Vec::new();
    for i in 0..3 {
        inputs.push(json!({"customer_id": 1, "i": i}));
    }
    for i in 0..3 {
        inputs.push(json!({"customer_id": 2, "i": i}));
    }
    inputs.push(json!({"other": 1}));
    inputs.push(json!({"other": 2}));
    let ids = h
        .insert(
            inputs
                .into_iter()
                .map(|i| task("import", "keys", i))
                .collect(),
        )
        .await;
    let busy = snapshot(h, &[ids[1], ids[2], ids[4], ids[5]]).await;
    let got = claim(h, "keys", 10).await;
    assert_eq!(
        set_of(&ids_of(&got)),
        set_of(&[ids[0], ids[3], ids[6], ids[7]]),
        "the first of customer 1, the first of customer 2, both without the field"
    );
    assert!(claim(h, "keys", 10).await.is_empty());
    assert_untouched(h, &busy, "customer busy").await;
    let first_of_1 = got
        .iter()
        .find(|t| t.id == ids[0])
        .unwrap_or_else(|| panic!("customer 1's first task claimed"));
    succeed(h, first_of_1).await;
    assert_eq!(
        ids_of(&claim(h, "keys", 10).await),
        vec![ids[1]],
        "customer 1 has room again; customer 2 has not"
    );

    // A JSON pointer.
    put(h, Limit::name("nested").per_key("/customer/id", 1)).await;
    let nested = h
        .insert(
            [
                json!({"customer": {"id": 7}}),
                json!({"customer": {"id": 7}}),
                json!({"customer": {"id": 8}}),
                json!({"customer": {"id": 8}}),
                json!({"customer": {}}),
                json!({"customer_id": 7}),
            ]
            .into_iter()
            .map(|i| task("nested", "keys-nested", i))
            .collect(),
        )
        .await;
    assert_eq!(
        set_of(&ids_of(&claim(h, "keys-nested", 10).await)),
        set_of(&[nested[0], nested[2], nested[4], nested[5]]),
        "one of /customer/id 7, one of 8, and the two without /customer/id"
    );

    // JSON values: 1 and "1" differ.
    put(h, Limit::name("typed").per_key("customer_id", 1)).await;
    let typed = h
        .insert(
            [
                json!({"customer_id": 1}),
                json!({"customer_id": "1"}),
                json!({"customer_id": 1}),
                json!({"customer_id": "1"}),
                json!({"customer_id": {"a": 1}}),
                json!({"customer_id": {"a": 1}}),
            ]
            .into_iter()
            .map(|i| task("typed", "keys-typed", i))
            .collect(),
        )
        .await;
    assert_eq!(
        set_of(&ids_of(&claim(h, "keys-typed", 10).await)),
        set_of(&[typed[0], typed[1], typed[4]]),
        "number 1, string \"1\" and the object are three values, one each"
    );
}

/// A key with many blocked tasks ahead of another key's task does not hide
/// it: the claim looks further down the order.
pub async fn limit_skipped_candidates_do_not_block_others(h: &Harness) {
    put(h, Limit::name("import").per_key("customer_id", 1)).await;
    let busy: Vec<NewTask> = (0..20)
        .map(|i| task("import", "skip", json!({"customer_id": 1, "i": i})))
        .collect();
    let busy = h.insert(busy).await;
    h.advance(SECOND);
    let lone = h
        .insert_one(task("import", "skip", json!({"customer_id": 2})))
        .await;
    let got = claim(h, "skip", 2).await;
    assert_eq!(
        set_of(&ids_of(&got)),
        set_of(&[busy[0], lone]),
        "one of customer 1 and the one of customer 2"
    );
    assert!(claim(h, "skip", 2).await.is_empty());

    // Priority puts the blocked key first in order; still not hidden.
    let urgent: Vec<NewTask> = (0..20)
        .map(|i| {
            NewTask::new("import", json!({"customer_id": 3, "i": i}))
                .options(TaskOptions::new().queue("skip-prio").priority(9))
        })
        .collect();
    let urgent = h.insert(urgent).await;
    let other = h
        .insert_one(task("import", "skip-prio", json!({"customer_id": 4})))
        .await;
    let got = claim(h, "skip-prio", 5).await;
    assert_eq!(ids_of(&got), vec![urgent[0], other], "in claim order");
}

// ------------------------------------------------------------ rate

/// `rate` 3 per 10 s: claims at one-second steps, alternating the two
/// handles, start at most 3 tasks in any window `(now - 10s, now]`; the
/// rest stay pending with no attempt; once starts leave the window, more
/// are taken.
pub async fn limit_rate_caps_starts_per_period(h: &Harness) {
    const Q: &str = "rated";
    put(h, Limit::queue(Q).rate(rate("3/10s"))).await;
    let ids = h.insert_n("r", Q, 12).await;
    let waiting = snapshot(h, &ids[6..]).await;
    let t0 = h.now();
    let mut starts: Vec<DateTime<Utc>> = Vec::new();
    let mut taken: Vec<Task> = Vec::new();
    let mut per_second = Vec::new();
    for s in 0..=14 {
        h.clock.set(t0 + span(Duration::from_secs(s)));
        let store = if s % 2 == 0 { &h.store } else { &h.second };
        let limit = if s < 4 { 1 } else { 10 };
        let got = claim_via(h, store.as_ref(), Q, limit).await;
        per_second.push(got.len());
        for t in &got {
            assert_eq!(t.started_at, Some(h.now()));
            starts.push(h.now());
        }
        taken.extend(got);
    }
    // Claims of limit 1 at 0, 1 and 2 s take one each; nothing until the
    // start at 0 s leaves the window at 10 s; then the ones at 1 s and 2 s
    // leave it at 11 s and 12 s.
    let mut expected = vec![1, 1, 1];
    expected.extend([0; 7]);
    expected.extend([1, 1, 1, 0, 0]);
    assert_eq!(
        per_second, expected,
        "tasks started per claim at t0 + 0..=14 s"
    );
    for s in &starts {
        let window = starts
            .iter()
            .filter(|o| **o > *s - span(Duration::from_secs(10)) && **o <= *s)
            .count();
        assert!(window <= 3, "{window} starts in the 10 s up to {s}");
    }
    assert_eq!(ids_of(&taken), ids[..6], "taken in order, on either handle");
    assert_untouched(h, &waiting, "over the rate").await;

    // Finishing does not give back starts: a rate is not a concurrency.
    for t in &taken {
        succeed(h, t).await;
    }
    assert!(claim(h, Q, 10).await.is_empty());
    h.clock.set(t0 + span(Duration::from_secs(100)));
    assert_eq!(
        ids_of(&claim(h, Q, 10).await),
        ids[6..9],
        "a whole period later: three more"
    );
}

// ------------------------------------------------------------ concurrent

/// Eight claims at once through both handles never start more than a
/// concurrency, a key concurrency or a rate allows, round after round.
pub async fn limit_concurrent_claimers_never_exceed_limits(h: &Harness) {
    put(h, Limit::queue("race").concurrency(3)).await;
    put(h, Limit::queue("race-rate").rate(rate("3/1h"))).await;
    put(h, Limit::name("race-key").per_key("k", 1)).await;
    h.insert_n("r", "race", 60).await;
    h.insert_n("r", "race-rate", 30).await;
    let keyed: Vec<NewTask> = (0..40)
        .map(|i| task("race-key", "race-key", json!({"k": i % 4})))
        .collect();
    h.insert(keyed).await;

    async fn race(h: &Harness, queue: &'static str) -> Vec<Task> {
        let mut claimers = tokio::task::JoinSet::new();
        for i in 0..8u32 {
            let store: Arc<dyn Store> = if i % 2 == 0 {
                h.store.clone()
            } else {
                h.second.clone()
            };
            let params = TaskClaimParams {
                worker_id: format!("racer-{i}"),
                ..claim_params(h, queue, 2, "")
            };
            claimers
                .spawn(async move { ok("concurrent task_claim", store.task_claim(&params).await) });
        }
        let mut all = Vec::new();
        while let Some(joined) = claimers.join_next().await {
            match joined {
                Ok(got) => all.extend(got),
                Err(e) => panic!("a claimer panicked: {e}"),
            }
        }
        let ids = ids_of(&all);
        assert_eq!(set_of(&ids).len(), ids.len(), "no task handed out twice");
        all
    }

    for round in 0..4 {
        h.advance(SECOND);
        let got = race(h, "race").await;
        assert_eq!(got.len(), 3, "round {round}: exactly the concurrency");
        assert_eq!(running(h, Some("race")).await, 3, "round {round}");
        for t in &got {
            succeed(h, t).await;
        }

        let got = race(h, "race-key").await;
        let mut per_key: HashMap<String, usize> = HashMap::new();
        for t in &got {
            *per_key.entry(t.input["k"].to_string()).or_default() += 1;
        }
        assert_eq!(
            per_key.len(),
            4,
            "round {round}: one of each key: {per_key:?}"
        );
        assert!(
            per_key.values().all(|n| *n == 1),
            "round {round}: one per key: {per_key:?}"
        );
        for t in &got {
            succeed(h, t).await;
        }
    }

    let got = race(h, "race-rate").await;
    assert_eq!(got.len(), 3, "exactly the rate");
    h.advance(SECOND);
    assert!(race(h, "race-rate").await.is_empty(), "the hour is used up");
}

// ------------------------------------------------------------ fairness

/// Claims go round-robin across fairness keys: 200 tasks of `A` queued
/// before 5 of `B` do not make `B` wait; claims of limit 4 take two of
/// each key while both have tasks. The state is shared by both handles.
pub async fn fairness_round_robin_across_keys(h: &Harness) {
    for (queue, limit) in [("fair-1", 1u32), ("fair-4", 4)] {
        let a: Vec<NewTask> = (0..200).map(|_| fair("job", queue, "A")).collect();
        let a = h.insert(a).await;
        h.advance(SECOND);
        let b: Vec<NewTask> = (0..5).map(|_| fair("job", queue, "B")).collect();
        let b = set_of(&h.insert(b).await);

        // Strict round-robin between two keys serves B's 5 within 10
        // claims of one task, or 3 claims of four (2 + 2 + 1).
        let max_claims = if limit == 1 { 10 } else { 3 };
        let mut got = Vec::new();
        let mut claims = 0;
        while got.iter().filter(|id| b.contains(id)).count() < 5 {
            claims += 1;
            assert!(
                claims <= max_claims,
                "queue {queue}: B not all served after {} claims ({} tasks)",
                claims - 1,
                got.len()
            );
            let store = if claims % 2 == 0 { &h.second } else { &h.store };
            let batch = ids_of(&claim_via(h, store.as_ref(), queue, limit).await);
            assert_eq!(batch.len(), limit as usize, "queue {queue}: a full claim");
            let of_b = batch.iter().filter(|id| b.contains(id)).count();
            if limit == 4 && claims <= 2 {
                assert_eq!(of_b, 2, "queue {queue}: two rounds of A, B: {batch:?}");
            }
            got.extend(batch);
        }
        let of_a: Vec<TaskId> = got.iter().copied().filter(|id| !b.contains(id)).collect();
        assert_eq!(of_a, a[..of_a.len()], "A's tasks in order");
        assert!(
            got.len() - 5 >= 4,
            "queue {queue}: A served meanwhile: {got:?}"
        );
    }
}

/// Tasks without a fairness key share one bucket, which takes its turn
/// like a key; within a bucket the usual order holds (priority DESC,
/// run_at, id).
pub async fn fairness_keyless_share_a_bucket_and_order_holds_within_a_key(h: &Harness) {
    const Q: &str = "fair-mix";
    let at = |secs_ago: u64| h.earlier(Duration::from_secs(secs_ago));
    let keyless: Vec<NewTask> = (0..6).map(|i| task("job", Q, json!(i))).collect();
    let keyless = h.insert(keyless).await;
    let opts = |priority: i32, secs_ago: u64| {
        TaskOptions::new()
            .queue(Q)
            .fairness_key("k")
            .priority(priority)
            .run_at(at(secs_ago))
    };
    let k1 = NewTask::new("job", json!("k1")).options(opts(0, 5));
    let k2 = NewTask::new("job", json!("k2")).options(opts(5, 0));
    let k3 = NewTask::new("job", json!("k3")).options(opts(0, 50));
    let k4 = NewTask::new("job", json!("k4")).options(opts(0, 5));
    let k5 = NewTask::new("job", json!("k5")).options(opts(-3, 500));
    let k6 = NewTask::new("job", json!("k6")).options(opts(1, 0));
    let k_order = vec![k2.id, k6.id, k3.id, k1.id, k4.id, k5.id];
    h.insert(vec![k4, k5, k1, k6, k3, k2]).await;
    let m: Vec<NewTask> = (0..6).map(|_| fair("job", Q, "m")).collect();
    let m = h.insert(m).await;

    let bucket = |id: TaskId| {
        if keyless.contains(&id) {
            0
        } else if k_order.contains(&id) {
            1
        } else {
            2
        }
    };
    let mut got = Vec::new();
    for round in 1..=6 {
        for _ in 0..3 {
            got.extend(ids_of(&claim(h, Q, 1).await));
        }
        for b in 0..3 {
            assert_eq!(
                got.iter().filter(|id| bucket(**id) == b).count(),
                round,
                "after {round} rounds each bucket served {round} times: {got:?}"
            );
        }
    }
    let seq = |b| -> Vec<TaskId> { got.iter().copied().filter(|id| bucket(*id) == b).collect() };
    assert_eq!(seq(0), keyless, "keyless in order");
    assert_eq!(seq(1), k_order, "key k: priority DESC, run_at, id");
    assert_eq!(seq(2), m, "key m in id order");
    assert!(claim(h, Q, 1).await.is_empty());
}

/// Fairness and limits together: a key whose tasks are over a limit does
/// not take a turn, and the claim fills up from other keys.
pub async fn fairness_with_a_limit_skips_blocked_keys(h: &Harness) {
    const Q: &str = "fair-limited";
    put(h, Limit::queue(Q).per_key("tenant", 1)).await;
    let of = |tenant: &str| {
        NewTask::new("job", json!({ "tenant": tenant }))
            .options(TaskOptions::new().queue(Q).fairness_key(tenant))
    };
    let a = h.insert((0..10).map(|_| of("a")).collect()).await;
    let b = h.insert((0..10).map(|_| of("b")).collect()).await;
    let c = h.insert((0..10).map(|_| of("c")).collect()).await;
    let got = claim(h, Q, 10).await;
    assert_eq!(
        set_of(&ids_of(&got)),
        set_of(&[a[0], b[0], c[0]]),
        "one per tenant by the key limit"
    );
    succeed(h, &got[0]).await;
    let next = claim(h, Q, 10).await;
    assert_eq!(next.len(), 1, "only the freed tenant has room");
    assert_eq!(
        next[0].fairness_key, got[0].fairness_key,
        "the freed tenant's next task"
    );
}

// ------------------------------------------------------------ quota

/// `max_queued_per_key` of a queue: waiting tasks (scheduled, blocked,
/// pending) per fairness key are capped; the insert that would pass the
/// cap is refused whole with `QuotaExceeded` and stores nothing; keys are
/// independent; running tasks do not count; tasks without a key are never
/// refused.
pub async fn quota_caps_waiting_tasks_per_fairness_key(h: &Harness) {
    const Q: &str = "tenants";
    put(h, Limit::queue(Q).max_queued_per_key(3)).await;
    let t1 = h
        .insert(vec![fair("job", Q, "t1"), fair("job", Q, "t1")])
        .await;
    let third = NewTask::new("job", json!(null)).options(
        TaskOptions::new()
            .queue(Q)
            .fairness_key("t1")
            .run_at(h.later(Duration::from_secs(60))),
    );
    let third = h.insert_one(third).await;
    assert_eq!(h.get(third).await.status, Status::Scheduled);
    assert_eq!(h.count_all().await, 3);

    let fourth = fair("job", Q, "t1");
    let fourth_id = fourth.id;
    refused(
        try_insert(h, vec![fourth]).await,
        &["t1", Q, "3"],
        "a 4th waiting task of t1 (one of them scheduled)",
    );
    assert_eq!(h.try_get(fourth_id).await, None);

    let ok_one = fair("job", Q, "t2");
    let ok_id = ok_one.id;
    let keyless = task("job", Q, json!(null));
    let keyless_id = keyless.id;
    let too_many = fair("job", Q, "t1");
    let too_many_id = too_many.id;
    refused(
        try_insert(h, vec![ok_one, keyless, too_many]).await,
        &["t1"],
        "a batch with one task over the quota",
    );
    for id in [ok_id, keyless_id, too_many_id] {
        assert_eq!(h.try_get(id).await, None, "nothing of the batch stored");
    }
    assert_eq!(h.count_all().await, 3);

    let batch: Vec<NewTask> = (0..4).map(|_| fair("job", Q, "t3")).collect();
    refused(
        try_insert(h, batch).await,
        &["t3"],
        "one batch of 4 of a fresh key",
    );
    assert_eq!(h.count_all().await, 3);
    let t2 = h
        .insert((0..3).map(|_| fair("job", Q, "t2")).collect())
        .await;
    assert_eq!(t2.len(), 3, "another key has its own quota");
    refused(
        try_insert(h, vec![fair("job", Q, "t2")]).await,
        &["t2"],
        "t2 full",
    );

    let keyless: Vec<NewTask> = (0..10).map(|i| task("job", Q, json!(i))).collect();
    assert_eq!(
        h.insert(keyless).await.len(),
        10,
        "tasks without a fairness key are never refused"
    );
    let other_queue: Vec<NewTask> = (0..5).map(|_| fair("job", "not-tenants", "t1")).collect();
    assert_eq!(
        h.insert(other_queue).await.len(),
        5,
        "other queue, no quota"
    );

    // Started tasks no longer wait: with t1's two pending tasks running,
    // only the scheduled one counts.
    let started = claim(h, Q, 100).await;
    assert_eq!(started.len(), 2 + 3 + 10, "every pending task of {Q}");
    let t1_running: Vec<&Task> = started
        .iter()
        .filter(|t| t.fairness_key.as_deref() == Some("t1"))
        .collect();
    assert_eq!(
        set_of(&t1_running.iter().map(|t| t.id).collect::<Vec<_>>()),
        set_of(&t1)
    );
    let again = h
        .insert(vec![fair("job", Q, "t1"), fair("job", Q, "t1")])
        .await;
    refused(
        try_insert(h, vec![fair("job", Q, "t1")]).await,
        &["t1"],
        "full again",
    );
    h.advance(SECOND);
    succeed(h, t1_running[0]).await;
    refused(
        try_insert(h, vec![fair("job", Q, "t1")]).await,
        &["t1"],
        "a finish frees nothing more",
    );
    // Deleting a waiting task frees a place.
    ok(
        "task_delete",
        h.store
            .task_delete(&TaskDeleteParams {
                id: again[0],
                now: h.now(),
            })
            .await,
    );
    h.insert_one(fair("job", Q, "t1")).await;
    refused(
        try_insert(h, vec![fair("job", Q, "t1")]).await,
        &["t1"],
        "full once more",
    );
}

/// A quota of a task name counts that name's waiting tasks per key in
/// every queue; other names with the same key are not counted.
pub async fn quota_of_a_name_counts_across_queues(h: &Harness) {
    put(h, Limit::name("upload").max_queued_per_key(2)).await;
    h.insert(vec![fair("upload", "qa", "user-9")]).await;
    h.insert(vec![fair("upload", "qb", "user-9")]).await;
    let mut before = h.count_all().await;
    refused(
        try_insert(h, vec![fair("upload", "qc", "user-9")]).await,
        &["user-9", "upload", "2"],
        "a third upload of u, in a third queue",
    );
    assert_eq!(h.count_all().await, before);
    assert_eq!(
        h.insert((0..4).map(|_| fair("download", "qa", "user-9")).collect())
            .await
            .len(),
        4,
        "another name is not counted"
    );
    before += 4;
    assert_eq!(h.count_all().await, before);
    h.insert(vec![fair("upload", "qa", "v"), fair("upload", "qc", "v")])
        .await;
}

// ------------------------------------------------------------ cache

/// A limit set through one handle applies to claims through the other
/// within [`LIMIT_CACHE_TTL`]; a limit set or deleted through a handle
/// applies to its very next claim.
pub async fn limit_cache_other_handle_within_ttl_own_at_once(h: &Harness) {
    const Q: &str = "cached";
    let ids = h.insert_n("job", Q, 8).await;
    // Warm the store's cache with "no limits".
    let first = claim(h, Q, 1).await;
    assert_eq!(ids_of(&first), vec![ids[0]]);

    put_via(h, h.second.as_ref(), Limit::queue(Q).concurrency(1)).await;
    tokio::time::sleep(LIMIT_CACHE_TTL + Duration::from_millis(300)).await;
    h.advance(SECOND);
    assert!(
        claim(h, Q, 10).await.is_empty(),
        "the limit set through the other handle applies after the TTL"
    );

    put(h, Limit::queue(Q).concurrency(3)).await;
    assert_eq!(
        ids_of(&claim(h, Q, 10).await),
        ids[1..3],
        "raised through this handle: its next claim"
    );
    put(h, Limit::queue(Q).concurrency(1)).await;
    succeed(h, &first[0]).await;
    assert!(
        claim(h, Q, 10).await.is_empty(),
        "lowered through this handle: its next claim"
    );
    assert!(delete(h, LimitScope::Queue, Q).await);
    assert_eq!(
        ids_of(&claim(h, Q, 10).await),
        ids[3..],
        "deleted through this handle: its next claim"
    );
}

/// A quota set through a handle applies to its very next insert.
pub async fn quota_set_applies_to_the_next_insert(h: &Harness) {
    const Q: &str = "quota-now";
    h.insert(vec![fair("job", Q, "t"), fair("job", Q, "t")])
        .await;
    put(h, Limit::queue(Q).max_queued_per_key(2)).await;
    refused(
        try_insert(h, vec![fair("job", Q, "t")]).await,
        &["t"],
        "set through this handle",
    );
    assert!(delete(h, LimitScope::Queue, Q).await);
    h.insert(vec![fair("job", Q, "t")]).await;
}

// ------------------------------------------------------------ read back

/// `fairness_key` reads back through get, list and claim, and an export
/// and import keeps it.
pub async fn fairness_key_reads_back_and_survives_copy(h: &Harness) {
    const Q: &str = "readback";
    let with = NewTask::new("job", json!(1))
        .options(TaskOptions::new().queue(Q).fairness_key("tenant/ä 1"));
    let without = task("job", Q, json!(2));
    let with_id = with.id;
    let without_id = without.id;
    h.insert(vec![with, without]).await;
    assert_eq!(
        h.get(with_id).await.fairness_key.as_deref(),
        Some("tenant/ä 1")
    );
    assert_eq!(h.get(without_id).await.fairness_key, None);
    let seen = ok("task_get on second", h.second.task_get(with_id).await);
    assert_eq!(
        seen.and_then(|t| t.fairness_key).as_deref(),
        Some("tenant/ä 1")
    );

    let page = ok(
        "task_list",
        h.store
            .task_list(&TaskListParams {
                filter: TaskFilter {
                    queues: vec![Q.to_owned()],
                    ..TaskFilter::default()
                },
                cursor: None,
                limit: 10,
            })
            .await,
    );
    let listed: HashMap<TaskId, Option<String>> = page
        .tasks
        .iter()
        .map(|t| (t.id, t.fairness_key.clone()))
        .collect();
    assert_eq!(
        listed,
        HashMap::from([(with_id, Some("tenant/ä 1".to_owned())), (without_id, None)])
    );

    let claimed = claim(h, Q, 10).await;
    assert_eq!(claimed.len(), 2);
    for t in &claimed {
        let want = (t.id == with_id).then(|| "tenant/ä 1".to_owned());
        assert_eq!(t.fairness_key, want, "claimed task {}", t.id);
    }
    let finished = claimed
        .iter()
        .find(|t| t.id == with_id)
        .unwrap_or_else(|| panic!("claimed {with_id}"));
    succeed(h, finished).await;
    let waiting = h
        .insert_one(
            NewTask::new("job", json!(3)).options(TaskOptions::new().queue(Q).fairness_key("w")),
        )
        .await;

    let records = ok(
        "task_export",
        h.store
            .task_export(&TaskExportParams {
                after: None,
                limit: 100,
            })
            .await,
    );
    let mine: Vec<_> = records
        .into_iter()
        .filter(|r| r.task.id == with_id || r.task.id == waiting)
        .collect();
    assert_eq!(mine.len(), 2);
    for r in &mine {
        let want = if r.task.id == with_id {
            "tenant/ä 1"
        } else {
            "w"
        };
        assert_eq!(
            r.task.fairness_key.as_deref(),
            Some(want),
            "exported {}",
            r.task.id
        );
        ok(
            "task_delete",
            h.store
                .task_delete(&TaskDeleteParams {
                    id: r.task.id,
                    now: h.now(),
                })
                .await,
        );
        assert_eq!(h.try_get(r.task.id).await, None);
    }
    let result = ok(
        "task_import",
        h.store
            .task_import(&TaskImportParams {
                records: mine.clone(),
            })
            .await,
    );
    assert_eq!(result.inserted, 2);
    for r in &mine {
        assert_eq!(
            h.get(r.task.id).await.fairness_key,
            r.task.fairness_key,
            "imported {}",
            r.task.id
        );
    }
    let claimed = claim(h, Q, 10).await;
    assert_eq!(ids_of(&claimed), vec![waiting]);
    assert_eq!(claimed[0].fairness_key.as_deref(), Some("w"));
}
