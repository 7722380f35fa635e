//! Cases for unique keys (`options.unique_key` with `options.unique`): the
//! enqueue is matched against the newest task with the same key and,
//! following `unique_action`, inserts (`created`, or `throttled` when the
//! start moves one window on), answers the holder (`existing`), or merges
//! into the waiting holder (`replaced`, `debounced`, `throttled`: new input
//! and maybe a new start). Also: two tasks with one key in one batch,
//! concurrent inserts of one key, replays of idempotent inserts, and the
//! key reading back. Time comes from the `now` of each call.

use std::collections::HashSet;
use std::time::Duration;

use offload_store::{FinishOutcome, IdempotencyKey, TaskInsertParams};
use offload_types::{
    EnqueueOutcome, Enqueued, NewTask, Status, Task, TaskId, TaskOptions, UniquePolicy,
};
use serde_json::{Value, json};

use crate::harness::ok;
use crate::{Harness, lease_of};

/// The queue of every task in these cases.
const QUEUE: &str = "uniq";

const SECOND: Duration = Duration::from_secs(1);

/// A task with `key` (and `policy`, when given) and `input`.
fn keyed(key: &str, policy: Option<UniquePolicy>, input: Value) -> NewTask {
    let mut options = TaskOptions::new().queue(QUEUE).unique_key(key);
    if let Some(p) = policy {
        options = options.unique(p);
    }
    NewTask::new("job", input).options(options)
}

/// Enqueues one task; returns the store's answer for it.
async fn enqueue(h: &Harness, task: NewTask) -> Enqueued {
    let answer = h.enqueue(vec![task]).await;
    assert_eq!(answer.len(), 1, "one answer per task: {answer:?}");
    answer[0]
}

fn enqueued(id: TaskId, outcome: EnqueueOutcome) -> Enqueued {
    Enqueued { id, outcome }
}

/// Claims the one ready task of [`QUEUE`], which must be `id`.
async fn claim(h: &Harness, id: TaskId) -> Task {
    h.claim_one_from(QUEUE, id).await
}

async fn succeed(h: &Harness, task: &Task) {
    let answer = h
        .finish(lease_of(task), FinishOutcome::Success { output: json!(1) })
        .await;
    assert!(answer.accepted);
}

/// A second enqueue with the key of a waiting or running task (policy
/// `reject`, the default) stores nothing and answers that task with
/// `existing`; once it ended, the next enqueue creates a new task.
pub async fn unique_reject_returns_existing_until_holder_ends(h: &Harness) {
    let first = keyed("k", None, json!(1));
    let first_id = first.id;
    assert_eq!(enqueue(h, first).await, Enqueued::created(first_id));
    let before = h.get(first_id).await;
    assert_eq!(before.status, Status::Pending);

    h.advance(SECOND);
    let second = keyed("k", None, json!(2));
    let second_id = second.id;
    assert_eq!(
        enqueue(h, second).await,
        enqueued(first_id, EnqueueOutcome::Existing)
    );
    assert_eq!(h.try_get(second_id).await, None, "nothing new stored");
    assert_eq!(h.get(first_id).await, before, "the holder is untouched");
    assert_eq!(h.count_all().await, 1);

    let running = claim(h, first_id).await;
    let third = keyed("k", Some(UniquePolicy::reject()), json!(3));
    assert_eq!(
        enqueue(h, third).await,
        enqueued(first_id, EnqueueOutcome::Existing),
        "a running holder keeps the key"
    );
    assert_eq!(h.count_all().await, 1);

    h.advance(SECOND);
    succeed(h, &running).await;
    h.advance(SECOND);
    let fourth = keyed("k", None, json!(4));
    let fourth_id = fourth.id;
    assert_eq!(enqueue(h, fourth).await, Enqueued::created(fourth_id));
    assert_eq!(h.get(fourth_id).await.input, json!(4));
    assert_eq!(h.count_all().await, 2);
}

/// `reject` with a window holds the key for that long after the holder's
/// creation, even after it ended; then the key is free.
pub async fn unique_reject_window_holds_key_after_end(h: &Harness) {
    let policy = UniquePolicy::reject().window(Duration::from_secs(60));
    let first = keyed("k", Some(policy.clone()), json!(1));
    let first_id = first.id;
    assert_eq!(enqueue(h, first).await, Enqueued::created(first_id));
    let running = claim(h, first_id).await;
    h.advance(SECOND);
    succeed(h, &running).await;

    h.advance(Duration::from_secs(50));
    assert_eq!(
        enqueue(h, keyed("k", Some(policy.clone()), json!(2))).await,
        enqueued(first_id, EnqueueOutcome::Existing),
        "51s after creation the key is held"
    );
    assert_eq!(h.count_all().await, 1);

    h.advance(Duration::from_secs(10));
    let late = keyed("k", Some(policy), json!(3));
    let late_id = late.id;
    assert_eq!(
        enqueue(h, late).await,
        Enqueued::created(late_id),
        "61s after creation the key is free"
    );
    assert_eq!(h.count_all().await, 2);
}

/// `replace` gives the waiting holder the new input (`replaced`); nothing
/// else of it changes but `updated_at`, and no task is added.
pub async fn unique_replace_updates_waiting_holder(h: &Harness) {
    let run_at = h.later(Duration::from_secs(30));
    let mut first = keyed("k", Some(UniquePolicy::replace()), json!({"v": 1}));
    first.options.run_at = Some(run_at);
    let first_id = first.id;
    assert_eq!(enqueue(h, first).await, Enqueued::created(first_id));
    let before = h.get(first_id).await;
    assert_eq!(before.status, Status::Scheduled);

    h.advance(SECOND);
    let second = keyed("k", Some(UniquePolicy::replace()), json!({"v": 2}));
    let second_id = second.id;
    assert_eq!(
        enqueue(h, second).await,
        enqueued(first_id, EnqueueOutcome::Replaced)
    );
    assert_eq!(h.try_get(second_id).await, None);
    let after = h.get(first_id).await;
    assert_eq!(
        after,
        Task {
            input: json!({"v": 2}),
            updated_at: h.now(),
            ..before
        },
        "only the input (and updated_at) changes"
    );
    assert_eq!(after.run_at, run_at);
    assert_eq!(h.count_all().await, 1);
}

/// `replace` while the holder runs creates a new task; the running one
/// keeps its input.
pub async fn unique_replace_of_running_holder_creates_new_task(h: &Harness) {
    let first = keyed("k", Some(UniquePolicy::replace()), json!(1));
    let first_id = first.id;
    assert_eq!(enqueue(h, first).await, Enqueued::created(first_id));
    claim(h, first_id).await;
    let second = keyed("k", Some(UniquePolicy::replace()), json!(2));
    let second_id = second.id;
    assert_eq!(enqueue(h, second).await, Enqueued::created(second_id));
    let running = h.get(first_id).await;
    assert_eq!(running.status, Status::Running);
    assert_eq!(running.input, json!(1));
    let new = h.get(second_id).await;
    assert_eq!(new.status, Status::Pending);
    assert_eq!(new.input, json!(2));
    assert_eq!(new.unique_key.as_deref(), Some("k"));
    assert_eq!(h.count_all().await, 2);
}

/// `debounce` (window 1s, max_wait 5s): the first enqueue creates a task
/// starting 1s later; each later enqueue while it waits gives it the new
/// input and moves its start to 1s after that enqueue, but never past 5s
/// after the first. It then runs once with the latest input; an enqueue
/// while it runs creates a new debounced task.
pub async fn unique_debounce_pushes_start_up_to_max_wait(h: &Harness) {
    let policy = UniquePolicy::debounce(SECOND).max_wait(5 * SECOND);
    let t0 = h.now();
    let first = keyed("k", Some(policy.clone()), json!(0));
    let first_id = first.id;
    assert_eq!(enqueue(h, first).await, Enqueued::created(first_id));
    let t = h.get(first_id).await;
    assert_eq!(t.status, Status::Scheduled);
    assert_eq!(t.run_at, h.later(SECOND));
    assert_eq!(t.created_at, t0);

    // (advance by, expected start relative to t0 in ms)
    let steps = [(500, 1500), (2500, 4000), (1500, 5000), (400, 5000)];
    for (i, (advance, start)) in steps.into_iter().enumerate() {
        h.advance(Duration::from_millis(advance));
        let answer = enqueue(h, keyed("k", Some(policy.clone()), json!(i + 1))).await;
        assert_eq!(
            answer,
            enqueued(first_id, EnqueueOutcome::Debounced),
            "step {i}"
        );
        let t = h.get(first_id).await;
        let expected = t0 + chrono::Duration::milliseconds(start);
        assert_eq!(t.run_at, expected, "step {i}: the start moves, capped");
        assert_eq!(t.status, Status::Scheduled, "step {i}");
        assert_eq!(t.input, json!(i + 1), "step {i}: the latest input");
        assert_eq!(t.created_at, t0);
    }
    assert_eq!(h.count_all().await, 1);
    assert!(h.claim(QUEUE, 10).await.is_empty(), "not due yet");

    h.clock.set(t0 + chrono::Duration::seconds(5));
    let running = claim(h, first_id).await;
    assert_eq!(running.input, json!(steps.len()));

    let next = keyed("k", Some(policy), json!("next"));
    let next_id = next.id;
    assert_eq!(enqueue(h, next).await, Enqueued::created(next_id));
    let t = h.get(next_id).await;
    assert_eq!(t.status, Status::Scheduled);
    assert_eq!(t.run_at, h.later(SECOND));
    assert_eq!(h.count_all().await, 2);
}

/// `throttle` with the holder waiting: the holder gets the new input
/// (`throttled`), its start is unchanged, nothing is added.
pub async fn unique_throttle_waiting_holder_gets_new_input(h: &Harness) {
    let policy = UniquePolicy::throttle(10 * SECOND);
    let first = keyed("k", Some(policy.clone()), json!(1));
    let first_id = first.id;
    assert_eq!(enqueue(h, first).await, Enqueued::created(first_id));
    let before = h.get(first_id).await;
    assert_eq!(before.status, Status::Pending);
    h.advance(SECOND);
    assert_eq!(
        enqueue(h, keyed("k", Some(policy), json!(2))).await,
        enqueued(first_id, EnqueueOutcome::Throttled)
    );
    let after = h.get(first_id).await;
    assert_eq!(after.input, json!(2));
    assert_eq!(after.run_at, before.run_at);
    assert_eq!(after.status, Status::Pending);
    assert_eq!(h.count_all().await, 1);
}

/// `throttle` after the holder ran: a new task is scheduled one window
/// after the holder's start (`throttled`); enqueues until then update
/// that waiting task.
pub async fn unique_throttle_after_a_run_schedules_one_window_later(h: &Harness) {
    let policy = UniquePolicy::throttle(10 * SECOND);
    let first = keyed("k", Some(policy.clone()), json!(1));
    let first_id = first.id;
    assert_eq!(enqueue(h, first).await, Enqueued::created(first_id));
    h.advance(SECOND);
    let running = claim(h, first_id).await;
    let started = running.started_at;
    assert_eq!(started, Some(h.now()));
    let Some(started) = started else { return };
    h.advance(2 * SECOND);
    succeed(h, &running).await;

    h.advance(SECOND);
    let second = keyed("k", Some(policy.clone()), json!(2));
    let second_id = second.id;
    assert_eq!(
        enqueue(h, second).await,
        enqueued(second_id, EnqueueOutcome::Throttled)
    );
    let t = h.get(second_id).await;
    assert_eq!(t.status, Status::Scheduled);
    assert_eq!(t.run_at, started + chrono::Duration::seconds(10));
    assert_eq!(t.input, json!(2));

    h.advance(SECOND);
    assert_eq!(
        enqueue(h, keyed("k", Some(policy), json!(3))).await,
        enqueued(second_id, EnqueueOutcome::Throttled),
        "the waiting run takes later enqueues"
    );
    let t = h.get(second_id).await;
    assert_eq!(t.input, json!(3));
    assert_eq!(t.run_at, started + chrono::Duration::seconds(10));
    assert_eq!(h.count_all().await, 2);
}

/// Two tasks with one key in one batch: the second sees the first
/// (`reject`: answered with it; `replace`: merged into it).
pub async fn unique_same_key_twice_in_one_batch(h: &Harness) {
    let a = keyed("k", None, json!("a"));
    let b = keyed("k", None, json!("b"));
    let plain = NewTask::new("plain", json!(null)).options(TaskOptions::new().queue(QUEUE));
    let (a_id, b_id, plain_id) = (a.id, b.id, plain.id);
    assert_eq!(
        h.enqueue(vec![a, plain, b]).await,
        vec![
            Enqueued::created(a_id),
            Enqueued::created(plain_id),
            enqueued(a_id, EnqueueOutcome::Existing)
        ]
    );
    assert_eq!(h.try_get(b_id).await, None);
    assert_eq!(h.get(a_id).await.input, json!("a"));

    let x = keyed("r", Some(UniquePolicy::replace()), json!("x"));
    let y = keyed("r", Some(UniquePolicy::replace()), json!("y"));
    let (x_id, y_id) = (x.id, y.id);
    assert_eq!(
        h.enqueue(vec![x, y]).await,
        vec![
            Enqueued::created(x_id),
            enqueued(x_id, EnqueueOutcome::Replaced)
        ]
    );
    assert_eq!(h.try_get(y_id).await, None);
    assert_eq!(h.get(x_id).await.input, json!("y"));
    assert_eq!(h.count_all().await, 3);
}

/// Ten inserts of one key racing through both handles create exactly one
/// task; every other answer is that task with `existing`.
pub async fn unique_concurrent_inserts_create_one_task(h: &Harness) {
    let mut handles = Vec::new();
    for i in 0..10 {
        let store = if i % 2 == 0 {
            h.store.clone()
        } else {
            h.second.clone()
        };
        let params = TaskInsertParams {
            tasks: vec![keyed("race", None, json!(i))],
            now: h.now(),
        };
        handles.push(tokio::spawn(async move {
            store.task_insert_many(&params).await
        }));
    }
    let mut answers = Vec::new();
    for handle in handles {
        let answer = match handle.await {
            Ok(result) => ok("task_insert_many (racing)", result),
            Err(e) => panic!("a racing insert panicked: {e}"),
        };
        assert_eq!(answer.len(), 1);
        answers.push(answer[0]);
    }
    let created: Vec<&Enqueued> = answers
        .iter()
        .filter(|a| a.outcome == EnqueueOutcome::Created)
        .collect();
    assert_eq!(created.len(), 1, "exactly one insert creates: {answers:?}");
    let winner = created[0].id;
    assert!(
        answers.iter().all(|a| a.id == winner
            && matches!(
                a.outcome,
                EnqueueOutcome::Created | EnqueueOutcome::Existing
            )),
        "every other insert answers the winner: {answers:?}"
    );
    assert_eq!(h.count_all().await, 1);
}

/// An idempotent insert with unique keys answers each task's outcome, and
/// its replay answers the same ids and outcomes without changing anything.
pub async fn unique_idempotent_insert_replays_outcomes(h: &Harness) {
    let holder = keyed("k", None, json!(0));
    let holder_id = holder.id;
    assert_eq!(enqueue(h, holder).await, Enqueued::created(holder_id));

    let key = IdempotencyKey {
        key: "idem-unique".to_owned(),
        fingerprint: "fp".to_owned(),
        expires_at: h.later(Duration::from_secs(3600)),
    };
    let batch = || {
        vec![
            keyed("k", None, json!(1)),
            keyed("fresh", Some(UniquePolicy::replace()), json!(2)),
            keyed("fresh", Some(UniquePolicy::replace()), json!(3)),
        ]
    };
    let tasks = batch();
    let fresh_id = tasks[1].id;
    let params = TaskInsertParams {
        tasks,
        now: h.now(),
    };
    let first = ok(
        "task_insert_idempotent",
        h.store.task_insert_idempotent(&params, &key).await,
    );
    assert!(!first.replayed);
    let expected = vec![
        enqueued(holder_id, EnqueueOutcome::Existing),
        Enqueued::created(fresh_id),
        enqueued(fresh_id, EnqueueOutcome::Replaced),
    ];
    assert_eq!(first.tasks, expected);
    assert_eq!(h.count_all().await, 2);
    let stored = h.get(fresh_id).await;
    assert_eq!(stored.input, json!(3));

    h.advance(SECOND);
    for store in [h.store.as_ref(), h.second.as_ref()] {
        let again = TaskInsertParams {
            tasks: batch(),
            now: h.now(),
        };
        let replay = ok(
            "task_insert_idempotent (replay)",
            store.task_insert_idempotent(&again, &key).await,
        );
        assert!(replay.replayed);
        assert_eq!(replay.tasks, expected, "the outcomes are replayed");
    }
    assert_eq!(h.count_all().await, 2);
    assert_eq!(h.get(fresh_id).await, stored, "a replay changes nothing");
}

/// The unique key reads back through get, list and claim; a task without
/// one has none.
pub async fn unique_key_reads_back(h: &Harness) {
    let keyed_task = keyed("order:42", None, json!(1));
    let plain = NewTask::new("plain", json!(2)).options(TaskOptions::new().queue("plainq"));
    let (keyed_id, plain_id) = (keyed_task.id, plain.id);
    h.enqueue(vec![keyed_task, plain]).await;
    assert_eq!(
        h.get(keyed_id).await.unique_key.as_deref(),
        Some("order:42")
    );
    assert_eq!(h.get(plain_id).await.unique_key, None);
    let page = ok(
        "task_list",
        h.store
            .task_list(&offload_store::TaskListParams {
                limit: 10,
                ..Default::default()
            })
            .await,
    );
    let keys: HashSet<(TaskId, Option<String>)> = page
        .tasks
        .iter()
        .map(|t| (t.id, t.unique_key.clone()))
        .collect();
    assert_eq!(
        keys,
        HashSet::from([(keyed_id, Some("order:42".to_owned())), (plain_id, None)])
    );
    let claimed = claim(h, keyed_id).await;
    assert_eq!(claimed.unique_key.as_deref(), Some("order:42"));
}

/// Different keys do not affect each other.
pub async fn unique_different_keys_are_independent(h: &Harness) {
    let a = keyed("a", None, json!(1));
    let b = keyed("b", None, json!(1));
    let (a_id, b_id) = (a.id, b.id);
    assert_eq!(enqueue(h, a).await, Enqueued::created(a_id));
    assert_eq!(enqueue(h, b).await, Enqueued::created(b_id));
    assert_eq!(
        enqueue(h, keyed("a", None, json!(2))).await,
        enqueued(a_id, EnqueueOutcome::Existing)
    );
    assert_eq!(
        enqueue(h, keyed("b", None, json!(2))).await,
        enqueued(b_id, EnqueueOutcome::Existing)
    );
    let c = keyed("c", Some(UniquePolicy::replace()), json!(1));
    let c_id = c.id;
    assert_eq!(enqueue(h, c).await, Enqueued::created(c_id));
    assert_eq!(h.get(a_id).await.input, json!(1));
    assert_eq!(h.get(b_id).await.input, json!(1));
    assert_eq!(h.count_all().await, 3);
}
