//! Cases for `task_insert_many`: ids in order, defaults, delayed tasks,
//! validation with all-or-nothing batches, and every field round-tripping.

use std::time::Duration;

use offload_store::{StoreError, TaskInsertParams};
use offload_types::{
    DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY, DEFAULT_QUEUE, NewTask, RetryPolicy, Status,
    TaskOptions,
};
use serde_json::json;

use crate::Harness;

/// Many tasks in one call come back as their own ids, in the order given.
pub async fn insert_many_returns_ids_in_order(h: &Harness) {
    let mut tasks: Vec<NewTask> = (0..5)
        .map(|i| NewTask::new(format!("job_{i}"), json!({ "i": i })))
        .collect();
    // Given in the reverse of id order: "in order" means the caller's order.
    tasks.reverse();
    let given: Vec<_> = tasks.iter().map(|t| t.id).collect();
    let ids = h.insert(tasks.clone()).await;
    assert_eq!(
        ids, given,
        "ids come back in the order the tasks were given"
    );
    for task in &tasks {
        let stored = h.get(task.id).await;
        assert_eq!(stored.name, task.name);
        assert_eq!(stored.input, task.input);
    }
    assert_eq!(h.count_all().await, 5);
}

/// A task with no options gets offload's defaults and is ready at once.
pub async fn insert_applies_defaults(h: &Harness) {
    let now = h.now();
    let id = h.insert_one(NewTask::new("plain", json!({"a": 1}))).await;
    let t = h.get(id).await;
    assert_eq!(t.id, id);
    assert_eq!(t.name, "plain");
    assert_eq!(t.queue, DEFAULT_QUEUE);
    assert_eq!(t.input, json!({"a": 1}));
    assert_eq!(t.status, Status::Pending);
    assert_eq!(t.priority, DEFAULT_PRIORITY);
    assert_eq!(t.attempt, 0);
    assert_eq!(t.max_attempts, DEFAULT_MAX_ATTEMPTS);
    assert_eq!(t.run_at, now, "run_at defaults to the enqueue time");
    assert_eq!(t.created_at, now);
    assert_eq!(t.updated_at, now);
    assert_eq!(t.output, None);
    assert_eq!(t.error, None);
    assert_eq!(t.progress, None);
    assert_eq!(t.timeout, None);
    assert_eq!(t.retry, None);
    assert!(t.tags.is_empty());
    assert_eq!(
        t.metadata,
        json!({}),
        "metadata is a JSON object, empty by default"
    );
    assert_eq!(t.abort_requested_at, None);
    assert_eq!(t.worker_id, None);
    assert_eq!(t.lease_token, None);
    assert_eq!(t.lease_expires_at, None);
    assert_eq!(t.started_at, None);
    assert_eq!(t.finished_at, None);
    assert!(h.attempts(id).await.is_empty(), "no history before a claim");
}

/// `run_at` or `delay` in the future makes a task `scheduled`; a `run_at`
/// in the past makes it `pending` and keeps the given time.
pub async fn insert_future_run_at_is_scheduled(h: &Harness) {
    let at = h.later(Duration::from_secs(60));
    let past = h.earlier(Duration::from_secs(60));
    let ids = h
        .insert(vec![
            NewTask::new("later", json!(null)).options(TaskOptions::new().run_at(at)),
            NewTask::new("delayed", json!(null))
                .options(TaskOptions::new().delay(Duration::from_secs(30))),
            NewTask::new("overdue", json!(null)).options(TaskOptions::new().run_at(past)),
        ])
        .await;
    let later = h.get(ids[0]).await;
    assert_eq!(later.status, Status::Scheduled);
    assert_eq!(later.run_at, at);
    let delayed = h.get(ids[1]).await;
    assert_eq!(delayed.status, Status::Scheduled);
    assert_eq!(delayed.run_at, h.later(Duration::from_secs(30)));
    let overdue = h.get(ids[2]).await;
    assert_eq!(overdue.status, Status::Pending);
    assert_eq!(overdue.run_at, past);
}

/// One invalid task makes the whole batch `Invalid` (naming the field), and
/// nothing from that batch is written.
pub async fn insert_invalid_task_inserts_nothing(h: &Harness) {
    let before = h.insert_one(NewTask::new("kept", json!(1))).await;
    let bad: Vec<(&str, NewTask)> = vec![
        ("name", NewTask::new("bad name", json!(null))),
        ("name", NewTask::new("", json!(null))),
        (
            "max_attempts",
            NewTask::new("ok", json!(null)).options(TaskOptions::new().max_attempts(0)),
        ),
        (
            "queue",
            NewTask::new("ok", json!(null)).options(TaskOptions::new().queue("no queue!")),
        ),
        (
            "metadata",
            NewTask::new("ok", json!(null)).options(TaskOptions::new().metadata(json!([1]))),
        ),
    ];
    for (field, task) in bad {
        let valid = NewTask::new("valid", json!({"first": true}));
        let valid_id = valid.id;
        let params = TaskInsertParams {
            tasks: vec![valid, task],
            now: h.now(),
        };
        match h.store.task_insert_many(&params).await {
            Err(StoreError::Invalid(e)) => {
                assert_eq!(e.field, field, "the error names the field: {e}")
            }
            other => panic!("a batch with an invalid {field} must be Invalid, got {other:?}"),
        }
        assert_eq!(
            h.try_get(valid_id).await,
            None,
            "the valid task of a refused batch must not be written (invalid {field})"
        );
        assert_eq!(h.count_all().await, 1, "only the earlier task exists");
    }
    assert_eq!(h.get(before).await.status, Status::Pending);
}

/// A batch reusing an existing id is refused as a whole; the existing task
/// is untouched.
pub async fn insert_duplicate_id_inserts_nothing(h: &Harness) {
    let existing = h.insert_one(NewTask::new("first", json!(1))).await;
    let before = h.get(existing).await;
    let fresh = NewTask::new("fresh", json!(2));
    let fresh_id = fresh.id;
    let mut clash = NewTask::new("clash", json!(3));
    clash.id = existing;
    let params = TaskInsertParams {
        tasks: vec![fresh, clash],
        now: h.now(),
    };
    match h.store.task_insert_many(&params).await {
        Err(StoreError::Conflict(_) | StoreError::Invalid(_)) => {}
        other => panic!("a duplicate id must be Conflict (or Invalid), got {other:?}"),
    }
    assert_eq!(h.try_get(fresh_id).await, None, "all or nothing");
    assert_eq!(
        h.get(existing).await,
        before,
        "the existing task is untouched"
    );
    assert_eq!(h.count_all().await, 1);
}

/// Every option and the input survive the store exactly.
pub async fn insert_round_trips_fields(h: &Harness) {
    let run_at = h.later(Duration::from_secs(3600));
    let retry = RetryPolicy {
        initial: Duration::from_millis(1500),
        max: Duration::from_secs(90),
        multiplier: 1.5,
        jitter: 0.25,
    };
    let input = json!({
        "text": "héllo \"wörld\" ✓",
        "nested": {"list": [1, -2, 3.5, null, true, "x"], "empty": {}},
        "big": 9_007_199_254_740_993_i64,
    });
    let metadata = json!({"tenant": "acme", "n": 7, "deep": {"k": ["v"]}});
    let task = NewTask::new("report/monthly:v2", input.clone()).options(
        TaskOptions::new()
            .queue("reports.eu-1")
            .priority(-7)
            .run_at(run_at)
            .max_attempts(9)
            .timeout(Duration::from_secs(95))
            .retry(retry.clone())
            .tag("nightly")
            .tag("billing")
            .metadata(metadata.clone()),
    );
    let high = NewTask::new("urgent", json!("just a string"))
        .options(TaskOptions::new().priority(i32::MAX).max_attempts(1000));
    let ids = h.insert(vec![task, high]).await;

    let t = h.get(ids[0]).await;
    assert_eq!(t.name, "report/monthly:v2");
    assert_eq!(t.queue, "reports.eu-1");
    assert_eq!(t.input, input);
    assert_eq!(t.priority, -7);
    assert_eq!(t.run_at, run_at);
    assert_eq!(t.status, Status::Scheduled);
    assert_eq!(t.max_attempts, 9);
    assert_eq!(t.timeout, Some(Duration::from_secs(95)));
    assert_eq!(t.retry, Some(retry));
    assert_eq!(t.tags, vec!["nightly".to_owned(), "billing".to_owned()]);
    assert_eq!(t.metadata, metadata);

    let u = h.get(ids[1]).await;
    assert_eq!(u.input, json!("just a string"));
    assert_eq!(u.priority, i32::MAX);
    assert_eq!(u.max_attempts, 1000);

    // The same through the other handle.
    let seen = h.second.task_get(ids[0]).await;
    assert_eq!(crate::harness::ok("task_get on second", seen), Some(t));
}

/// An empty batch is fine and writes nothing.
pub async fn insert_empty_batch(h: &Harness) {
    let ids = h.insert(Vec::new()).await;
    assert!(ids.is_empty());
    assert_eq!(h.count_all().await, 0);
}

/// A large batch goes in whole, in one call, ids in order.
pub async fn insert_large_batch(h: &Harness) {
    let tasks: Vec<NewTask> = (0..1500)
        .map(|i| NewTask::new(format!("bulk_{}", i % 3), json!({ "i": i })))
        .collect();
    let given: Vec<_> = tasks.iter().map(|t| t.id).collect();
    let ids = h.insert(tasks).await;
    assert_eq!(ids, given);
    assert_eq!(h.count_all().await, 1500);
    let last = h.get(given[1499]).await;
    assert_eq!(last.input, json!({"i": 1499}));
}
