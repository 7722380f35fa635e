//! Cases for the management calls: get, list (filters, newest first, cursor
//! pagination), count, update, delete, abort, manual retry, purge and the
//! attempt history. Every refused call must change nothing.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use offload_store::{
    FinishOutcome, StoreError, TaskAbortParams, TaskCountParams, TaskDeleteParams, TaskFilter,
    TaskListParams, TaskPurgeParams, TaskRetryParams, TaskUpdateParams,
};
use offload_types::{AttemptOutcome, DEFAULT_QUEUE, NewTask, Status, Task, TaskId, TaskOptions};
use serde_json::json;

use crate::harness::ok;
use crate::{Harness, lease_of};

async fn list(h: &Harness, filter: TaskFilter, limit: u32) -> Vec<TaskId> {
    let params = TaskListParams {
        filter,
        cursor: None,
        limit,
    };
    let page = ok("task_list", h.store.task_list(&params).await);
    assert!(page.tasks.len() <= limit as usize);
    if page.tasks.len() < limit as usize {
        assert_eq!(
            page.next_cursor, None,
            "a page that is not full is the last"
        );
    }
    page.tasks.iter().map(|t| t.id).collect()
}

async fn abort(h: &Harness, id: TaskId, reason: &str) -> Result<Task, StoreError> {
    let params = TaskAbortParams {
        id,
        reason: Some(reason.to_owned()),
        now: h.now(),
    };
    h.store.task_abort(&params).await
}

async fn retry(h: &Harness, id: TaskId) -> Result<Task, StoreError> {
    h.store
        .task_retry(&TaskRetryParams { id, now: h.now() })
        .await
}

async fn delete(h: &Harness, id: TaskId) -> Result<(), StoreError> {
    h.store
        .task_delete(&TaskDeleteParams { id, now: h.now() })
        .await
}

async fn update(h: &Harness, params: TaskUpdateParams) -> Result<Task, StoreError> {
    h.store.task_update(&params).await
}

/// A task's history is gone: no rows, or the store says the task is unknown.
async fn assert_no_history(h: &Harness, id: TaskId) {
    match h.store.task_attempts(id).await {
        Ok(rows) => assert!(rows.is_empty(), "history of {id} should be gone: {rows:?}"),
        Err(StoreError::NotFound(_)) => {}
        Err(e) => panic!("task_attempts of a removed task failed: {e}"),
    }
}

/// Inserts a task into `queue` and takes it through one attempt to a
/// terminal `status`.
async fn terminal_task(h: &Harness, name: &str, queue: &str, status: Status) -> TaskId {
    let id = h
        .insert_one(NewTask::new(name, json!(null)).options(TaskOptions::new().queue(queue)))
        .await;
    let mut params = h.claim_params(queue, 1);
    params.names = Some(vec![name.to_owned()]);
    let claimed = ok("task_claim", h.store.task_claim(&params).await);
    assert_eq!(claimed.iter().map(|t| t.id).collect::<Vec<_>>(), vec![id]);
    let outcome = match status {
        Status::Success => FinishOutcome::Success { output: json!(1) },
        Status::Failed => FinishOutcome::Fail {
            error: h.error("error", "it broke", 1),
        },
        Status::Aborted => FinishOutcome::Abort {
            error: h.error("aborted", "stopped", 1),
        },
        other => panic!("{other} is not terminal"),
    };
    let answer = h.finish(lease_of(&claimed[0]), outcome).await;
    assert_eq!(answer.status, Some(status));
    id
}

/// `task_get` of an unknown id is `None`, not an error.
pub async fn get_unknown_is_none(h: &Harness) {
    assert_eq!(h.try_get(TaskId::new()).await, None);
    h.insert_one(NewTask::new("other", json!(null))).await;
    assert_eq!(h.try_get(TaskId::new()).await, None);
}

/// Lists come newest first; status, name, queue, tag and creation-time
/// filters combine.
pub async fn list_newest_first_with_filters(h: &Harness) {
    let t0 = h.now();
    let opts = |queue: &str, tags: &[&str]| {
        tags.iter()
            .fold(TaskOptions::new().queue(queue), |o, tag| o.tag(*tag))
    };
    let a = h
        .insert_one(NewTask::new("alpha", json!(1)).options(opts("q1", &["red"])))
        .await;
    let b = h
        .insert_one(NewTask::new("beta", json!(2)).options(opts("q2", &["red", "blue"])))
        .await;
    h.advance(Duration::from_secs(10));
    let c = h
        .insert_one(NewTask::new("alpha", json!(3)).options(opts("q2", &[])))
        .await;
    let d = h
        .insert_one(
            NewTask::new("gamma", json!(4))
                .options(opts("q1", &["blue"]).run_at(h.later(Duration::from_secs(600)))),
        )
        .await;
    let claimed = h.claim("q1", 10).await;
    assert_eq!(claimed.iter().map(|t| t.id).collect::<Vec<_>>(), vec![a]);

    let all = |f: TaskFilter| list(h, f, 100);
    let f = TaskFilter::default;
    assert_eq!(all(f()).await, vec![d, c, b, a], "newest first");
    assert_eq!(
        all(TaskFilter {
            statuses: vec![Status::Running],
            ..f()
        })
        .await,
        vec![a]
    );
    assert_eq!(
        all(TaskFilter {
            statuses: vec![Status::Pending, Status::Scheduled],
            ..f()
        })
        .await,
        vec![d, c, b]
    );
    assert_eq!(
        all(TaskFilter {
            statuses: vec![Status::Failed],
            ..f()
        })
        .await,
        Vec::<TaskId>::new()
    );
    assert_eq!(
        all(TaskFilter {
            names: vec!["alpha".to_owned()],
            ..f()
        })
        .await,
        vec![c, a]
    );
    assert_eq!(
        all(TaskFilter {
            names: vec!["beta".to_owned(), "gamma".to_owned()],
            ..f()
        })
        .await,
        vec![d, b]
    );
    assert_eq!(
        all(TaskFilter {
            queues: vec!["q2".to_owned()],
            ..f()
        })
        .await,
        vec![c, b]
    );
    assert_eq!(
        all(TaskFilter {
            tag: Some("red".to_owned()),
            ..f()
        })
        .await,
        vec![b, a]
    );
    assert_eq!(
        all(TaskFilter {
            tag: Some("blue".to_owned()),
            ..f()
        })
        .await,
        vec![d, b]
    );
    assert_eq!(
        all(TaskFilter {
            tag: Some("re".to_owned()),
            ..f()
        })
        .await,
        Vec::<TaskId>::new(),
        "a tag matches whole, not as a prefix"
    );
    assert_eq!(
        all(TaskFilter {
            names: vec!["alpha".to_owned()],
            queues: vec!["q1".to_owned()],
            ..f()
        })
        .await,
        vec![a],
        "filters combine"
    );
    let t10 = t0 + chrono::Duration::seconds(10);
    assert_eq!(
        all(TaskFilter {
            created_after: Some(t10),
            ..f()
        })
        .await,
        vec![d, c],
        "created_after is inclusive"
    );
    assert_eq!(
        all(TaskFilter {
            created_before: Some(t10),
            ..f()
        })
        .await,
        vec![b, a],
        "created_before is exclusive"
    );
    assert_eq!(list(h, f(), 2).await, vec![d, c], "limit");
}

/// Following `next_cursor` visits every matching task exactly once, newest
/// first, and ends.
pub async fn list_pages_visit_every_task_once(h: &Harness) {
    let mut inserted = Vec::new();
    for round in 0..3 {
        let tasks = (0..8)
            .map(|i| {
                let name = if i % 2 == 0 { "even" } else { "odd" };
                NewTask::new(name, json!({ "round": round, "i": i }))
            })
            .collect();
        inserted.extend(h.insert(tasks).await);
        h.advance(Duration::from_secs(1));
    }
    let evens: Vec<TaskId> = inserted.iter().step_by(2).copied().collect();

    for (filter, expected, page_size) in [
        (TaskFilter::default(), inserted.clone(), 5u32),
        (TaskFilter::default(), inserted.clone(), 24),
        (
            TaskFilter {
                names: vec!["even".to_owned()],
                ..TaskFilter::default()
            },
            evens.clone(),
            4,
        ),
    ] {
        let mut seen = Vec::new();
        let mut cursor = None;
        let mut pages = 0;
        loop {
            pages += 1;
            assert!(pages <= 30, "pagination does not end");
            let params = TaskListParams {
                filter: filter.clone(),
                cursor: cursor.take(),
                limit: page_size,
            };
            let page = ok("task_list", h.store.task_list(&params).await);
            assert!(page.tasks.len() <= page_size as usize);
            seen.extend(page.tasks.iter().map(|t| t.id));
            match page.next_cursor {
                Some(next) => {
                    assert_eq!(
                        page.tasks.len(),
                        page_size as usize,
                        "only full pages have a next page"
                    );
                    cursor = Some(next);
                }
                None => break,
            }
        }
        let mut newest_first = expected.clone();
        newest_first.reverse();
        assert_eq!(
            seen, newest_first,
            "every task once, newest first (page {page_size})"
        );
        let unique: HashSet<_> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len());
    }
}

/// A cursor that no page produced is `Invalid`.
pub async fn list_bad_cursor_is_invalid(h: &Harness) {
    h.insert_n("job", DEFAULT_QUEUE, 3).await;
    let params = TaskListParams {
        filter: TaskFilter::default(),
        cursor: Some("not-a-cursor".to_owned()),
        limit: 10,
    };
    match h.store.task_list(&params).await {
        Err(StoreError::Invalid(e)) => assert_eq!(e.field, "cursor"),
        other => panic!("a bad cursor must be Invalid, got {other:?}"),
    }
}

/// Counts are grouped by name, queue and status, omit empty groups, and
/// honour the filter.
pub async fn count_groups_by_name_queue_status(h: &Harness) {
    h.insert_n("a", DEFAULT_QUEUE, 3).await;
    h.insert_n("b", DEFAULT_QUEUE, 2).await;
    h.insert_n("a", "other", 1).await;
    let mut params = h.claim_params(DEFAULT_QUEUE, 1);
    params.names = Some(vec!["a".to_owned()]);
    assert_eq!(ok("task_claim", h.store.task_claim(&params).await).len(), 1);

    let counts = |filter: TaskFilter| async move {
        let rows = ok(
            "task_count",
            h.store.task_count(&TaskCountParams { filter }).await,
        );
        let mut map = HashMap::new();
        for row in rows {
            assert!(row.count > 0, "no empty groups: {row:?}");
            let key = (row.name.clone(), row.queue.clone(), row.status);
            assert!(map.insert(key, row.count).is_none(), "one row per group");
        }
        map
    };
    let key = |n: &str, q: &str, s| (n.to_owned(), q.to_owned(), s);
    assert_eq!(
        counts(TaskFilter::default()).await,
        HashMap::from([
            (key("a", DEFAULT_QUEUE, Status::Pending), 2),
            (key("a", DEFAULT_QUEUE, Status::Running), 1),
            (key("b", DEFAULT_QUEUE, Status::Pending), 2),
            (key("a", "other", Status::Pending), 1),
        ])
    );
    assert_eq!(
        counts(TaskFilter {
            queues: vec!["other".to_owned()],
            ..TaskFilter::default()
        })
        .await,
        HashMap::from([(key("a", "other", Status::Pending), 1)])
    );
    assert_eq!(
        counts(TaskFilter {
            statuses: vec![Status::Running],
            ..TaskFilter::default()
        })
        .await,
        HashMap::from([(key("a", DEFAULT_QUEUE, Status::Running), 1)])
    );
}

/// Update changes priority, input and max_attempts of a waiting task and
/// leaves unset fields alone.
pub async fn update_changes_waiting_task(h: &Harness) {
    let id = h.insert_one(NewTask::new("job", json!({"v": 1}))).await;
    let before = h.get(id).await;
    h.advance(Duration::from_secs(1));
    let updated = match update(
        h,
        TaskUpdateParams {
            id,
            priority: Some(9),
            input: Some(json!({"v": 2})),
            max_attempts: Some(7),
            now: h.now(),
            ..TaskUpdateParams::default()
        },
    )
    .await
    {
        Ok(t) => t,
        Err(e) => panic!("update of a pending task failed: {e}"),
    };
    assert_eq!(updated.priority, 9);
    assert_eq!(updated.input, json!({"v": 2}));
    assert_eq!(updated.max_attempts, 7);
    assert_eq!(updated.updated_at, h.now());
    assert_eq!(updated.status, Status::Pending);
    assert_eq!(updated.run_at, before.run_at);
    assert_eq!(updated.name, before.name);
    assert_eq!(updated.created_at, before.created_at);
    assert_eq!(h.get(id).await, updated, "update returns the stored task");

    // Only the priority: the rest stays.
    let only = ok(
        "task_update",
        update(
            h,
            TaskUpdateParams {
                id,
                priority: Some(-1),
                now: h.now(),
                ..TaskUpdateParams::default()
            },
        )
        .await,
    );
    assert_eq!(only.priority, -1);
    assert_eq!(only.input, json!({"v": 2}));
    assert_eq!(only.max_attempts, 7);

    // A scheduled task can be updated too.
    let later = h
        .insert_one(
            NewTask::new("later", json!(0))
                .options(TaskOptions::new().run_at(h.later(Duration::from_secs(60)))),
        )
        .await;
    let changed = ok(
        "task_update",
        update(
            h,
            TaskUpdateParams {
                id: later,
                priority: Some(3),
                now: h.now(),
                ..TaskUpdateParams::default()
            },
        )
        .await,
    );
    assert_eq!(changed.priority, 3);
    assert_eq!(changed.status, Status::Scheduled);
}

/// A new `run_at` moves a waiting task between `scheduled` and `pending`.
pub async fn update_run_at_moves_between_pending_and_scheduled(h: &Harness) {
    let id = h.insert_one(NewTask::new("job", json!(null))).await;
    let at = h.later(Duration::from_secs(120));
    let moved = ok(
        "task_update",
        update(
            h,
            TaskUpdateParams {
                id,
                run_at: Some(at),
                now: h.now(),
                ..TaskUpdateParams::default()
            },
        )
        .await,
    );
    assert_eq!(moved.status, Status::Scheduled);
    assert_eq!(moved.run_at, at);
    assert!(h.claim(DEFAULT_QUEUE, 10).await.is_empty());

    let sooner = h.later(Duration::from_secs(30));
    let moved = ok(
        "task_update",
        update(
            h,
            TaskUpdateParams {
                id,
                run_at: Some(sooner),
                now: h.now(),
                ..TaskUpdateParams::default()
            },
        )
        .await,
    );
    assert_eq!(moved.status, Status::Scheduled);
    assert_eq!(moved.run_at, sooner);

    let now = h.now();
    let moved = ok(
        "task_update",
        update(
            h,
            TaskUpdateParams {
                id,
                run_at: Some(now),
                now,
                ..TaskUpdateParams::default()
            },
        )
        .await,
    );
    assert_eq!(moved.status, Status::Pending);
    assert_eq!(moved.run_at, now);
    h.claim_one(id).await;
}

/// Running and terminal tasks cannot be updated, and the refusal changes
/// nothing.
pub async fn update_refused_for_started_tasks(h: &Harness) {
    let done = terminal_task(h, "done", DEFAULT_QUEUE, Status::Success).await;
    let failed = terminal_task(h, "failed", DEFAULT_QUEUE, Status::Failed).await;
    let running = h.insert_and_claim("running", TaskOptions::new()).await.id;
    h.advance(Duration::from_secs(1));
    for id in [running, done, failed] {
        let before = h.get(id).await;
        let result = update(
            h,
            TaskUpdateParams {
                id,
                priority: Some(50),
                input: Some(json!("changed")),
                run_at: Some(h.later(Duration::from_secs(60))),
                max_attempts: Some(9),
                now: h.now(),
            },
        )
        .await;
        match result {
            Err(StoreError::InvalidTransition { id: got, from, .. }) => {
                assert_eq!(got, id);
                assert_eq!(from, before.status);
            }
            Err(StoreError::Conflict(_)) => {}
            other => panic!(
                "update of a {} task must be refused, got {other:?}",
                before.status
            ),
        }
        assert_eq!(h.get(id).await, before, "a refused update changes nothing");
    }
}

/// Invalid values are `Invalid` and change nothing; an unknown id is `NotFound`.
pub async fn update_invalid_values_change_nothing(h: &Harness) {
    let id = h.insert_one(NewTask::new("job", json!(1))).await;
    let before = h.get(id).await;
    for bad in [0, 1001] {
        let result = update(
            h,
            TaskUpdateParams {
                id,
                priority: Some(5),
                max_attempts: Some(bad),
                now: h.now(),
                ..TaskUpdateParams::default()
            },
        )
        .await;
        match result {
            Err(StoreError::Invalid(e)) => assert_eq!(e.field, "max_attempts"),
            other => panic!("max_attempts {bad} must be Invalid, got {other:?}"),
        }
        assert_eq!(
            h.get(id).await,
            before,
            "nothing changed (max_attempts {bad})"
        );
    }
    let unknown = TaskId::new();
    match update(
        h,
        TaskUpdateParams {
            id: unknown,
            priority: Some(1),
            now: h.now(),
            ..TaskUpdateParams::default()
        },
    )
    .await
    {
        Err(StoreError::NotFound(got)) => assert_eq!(got, unknown),
        other => panic!("update of an unknown task must be NotFound, got {other:?}"),
    }
}

/// Waiting and terminal tasks can be deleted, with their history.
pub async fn delete_waiting_and_terminal_tasks(h: &Harness) {
    let keep = h.insert_one(NewTask::new("keep", json!(null))).await;
    let pending = h.insert_one(NewTask::new("pending", json!(null))).await;
    let scheduled = h
        .insert_one(
            NewTask::new("scheduled", json!(null))
                .options(TaskOptions::new().run_at(h.later(Duration::from_secs(60)))),
        )
        .await;
    let done = terminal_task(h, "done", "elsewhere", Status::Success).await;
    let failed = terminal_task(h, "failed", "elsewhere", Status::Failed).await;
    assert_eq!(h.attempts(done).await.len(), 1);
    for id in [pending, scheduled, done] {
        ok("task_delete", delete(h, id).await);
        assert_eq!(h.try_get(id).await, None);
        assert_no_history(h, id).await;
    }
    // Through the other handle as well.
    ok(
        "task_delete on second",
        h.second
            .task_delete(&TaskDeleteParams {
                id: failed,
                now: h.now(),
            })
            .await,
    );
    assert_eq!(h.try_get(failed).await, None);
    assert_no_history(h, failed).await;
    assert_eq!(h.count_all().await, 1);
    assert_eq!(h.get(keep).await.status, Status::Pending);
}

/// A running task cannot be deleted (`Conflict`, nothing changes); an
/// unknown id is `NotFound`.
pub async fn delete_running_or_unknown_is_refused(h: &Harness) {
    let running = h.insert_and_claim("busy", TaskOptions::new()).await;
    match delete(h, running.id).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("deleting a running task must be Conflict, got {other:?}"),
    }
    assert_eq!(h.get(running.id).await, running);
    assert_eq!(h.attempts(running.id).await.len(), 1);
    let unknown = TaskId::new();
    match delete(h, unknown).await {
        Err(StoreError::NotFound(got)) => assert_eq!(got, unknown),
        other => panic!("deleting an unknown task must be NotFound, got {other:?}"),
    }
}

/// A waiting task is `aborted` at once, with error kind `aborted` and the
/// reason as message.
pub async fn abort_waiting_task_at_once(h: &Harness) {
    let pending = h.insert_one(NewTask::new("pending", json!(null))).await;
    let scheduled = h
        .insert_one(
            NewTask::new("scheduled", json!(null))
                .options(TaskOptions::new().run_at(h.later(Duration::from_secs(60)))),
        )
        .await;
    h.advance(Duration::from_secs(2));
    for id in [pending, scheduled] {
        let aborted = ok("task_abort", abort(h, id, "no longer needed").await);
        assert_eq!(aborted.status, Status::Aborted);
        assert_eq!(aborted.finished_at, Some(h.now()));
        let error = match &aborted.error {
            Some(e) => e,
            None => panic!("an aborted task records an error"),
        };
        assert_eq!(error.kind, "aborted");
        assert_eq!(error.message, "no longer needed");
        assert_eq!(error.at, h.now());
        assert_eq!(aborted.lease_token, None);
        assert_eq!(h.get(id).await, aborted, "abort returns the stored task");
    }
    h.advance(Duration::from_secs(120));
    assert!(h.claim(DEFAULT_QUEUE, 10).await.is_empty());
}

/// A running task keeps running with `abort_requested_at` set; its worker
/// is told and finishes it as aborted.
pub async fn abort_running_task_requests_stop(h: &Harness) {
    let t = h.insert_and_claim("busy", TaskOptions::new()).await;
    h.advance(Duration::from_secs(1));
    let asked = ok("task_abort", abort(h, t.id, "stop").await);
    assert_eq!(asked.status, Status::Running);
    assert_eq!(asked.abort_requested_at, Some(h.now()));
    assert_eq!(asked.lease_token, t.lease_token);
    assert_eq!(asked.finished_at, None);
    assert_eq!(h.get(t.id).await, asked);
    assert!(h.heartbeat(&[lease_of(&t)]).await[0].abort_requested);
    let answer = h
        .finish(
            lease_of(&t),
            FinishOutcome::Abort {
                error: h.error("aborted", "stop", 1),
            },
        )
        .await;
    assert_eq!(answer.status, Some(Status::Aborted));
}

/// Terminal tasks cannot be aborted (`InvalidTransition`, nothing changes);
/// an unknown id is `NotFound`.
pub async fn abort_terminal_or_unknown_is_refused(h: &Harness) {
    for status in [Status::Success, Status::Failed, Status::Aborted] {
        let id = terminal_task(h, status.as_str(), DEFAULT_QUEUE, status).await;
        let before = h.get(id).await;
        h.advance(Duration::from_secs(1));
        match abort(h, id, "too late").await {
            Err(StoreError::InvalidTransition { id: got, from, to }) => {
                assert_eq!((got, from, to), (id, status, Status::Aborted));
            }
            other => panic!("abort of a {status} task must be InvalidTransition, got {other:?}"),
        }
        assert_eq!(h.get(id).await, before);
    }
    let unknown = TaskId::new();
    match abort(h, unknown, "who").await {
        Err(StoreError::NotFound(got)) => assert_eq!(got, unknown),
        other => panic!("abort of an unknown task must be NotFound, got {other:?}"),
    }
}

/// A failed or aborted task goes back to `pending` now, history and
/// attempt count kept, with at least one more attempt allowed.
pub async fn retry_failed_and_aborted_tasks(h: &Harness) {
    // Failed on its only attempt.
    let failed = h
        .insert_and_claim("once", TaskOptions::new().max_attempts(1))
        .await;
    let error = h.error("error", "it broke", 1);
    h.finish(
        lease_of(&failed),
        FinishOutcome::Fail {
            error: error.clone(),
        },
    )
    .await;
    h.advance(Duration::from_secs(5));
    let again = ok("task_retry", retry(h, failed.id).await);
    assert_eq!(again.status, Status::Pending);
    assert_eq!(again.run_at, h.now());
    assert_eq!(again.finished_at, None);
    assert_eq!(again.attempt, 1, "attempts made are kept");
    assert_eq!(again.max_attempts, 2, "room for one more attempt");
    assert_eq!(again.abort_requested_at, None);
    assert_eq!(again.lease_token, None);
    assert_eq!(
        h.get(failed.id).await,
        again,
        "retry returns the stored task"
    );
    let history = h.attempts(failed.id).await;
    assert_eq!(history.len(), 1, "history kept");
    assert_eq!(history[0].error, Some(error));
    let rerun = h.claim_one(failed.id).await;
    assert_eq!(rerun.attempt, 2);
    h.finish(
        lease_of(&rerun),
        FinishOutcome::Success { output: json!(2) },
    )
    .await;

    // Aborted while running, after an abort request.
    let stopped = h
        .insert_and_claim("stopped", TaskOptions::new().max_attempts(3))
        .await;
    ok("task_abort", abort(h, stopped.id, "stop").await);
    h.finish(
        lease_of(&stopped),
        FinishOutcome::Abort {
            error: h.error("aborted", "stop", 1),
        },
    )
    .await;
    let again = ok("task_retry", retry(h, stopped.id).await);
    assert_eq!(again.status, Status::Pending);
    assert_eq!(
        again.abort_requested_at, None,
        "the abort request is cleared"
    );
    assert_eq!(again.max_attempts, 3, "max(max_attempts, attempt + 1)");
    assert_eq!(again.attempt, 1);
    assert_eq!(again.finished_at, None);
    let rerun = h.claim_one(stopped.id).await;
    assert_eq!(rerun.attempt, 2);
    assert!(
        !h.heartbeat(&[lease_of(&rerun)]).await[0].abort_requested,
        "the new attempt is not asked to stop"
    );

    // Aborted before it ever ran; retried through the other handle.
    let waiting = h.insert_one(NewTask::new("never_ran", json!(null))).await;
    ok("task_abort", abort(h, waiting, "not now").await);
    let again = ok(
        "task_retry on second",
        h.second
            .task_retry(&TaskRetryParams {
                id: waiting,
                now: h.now(),
            })
            .await,
    );
    assert_eq!(again.status, Status::Pending);
    assert_eq!(again.attempt, 0);
    assert_eq!(again.max_attempts, 3);
    h.claim_one(waiting).await;
}

/// Retry of a task that is not `failed` or `aborted` is `InvalidTransition`
/// and changes nothing; an unknown id is `NotFound`.
pub async fn retry_other_statuses_is_refused(h: &Harness) {
    let done = terminal_task(h, "done", "q", Status::Success).await;
    let running = h.insert_and_claim("running", TaskOptions::new()).await.id;
    let pending = h.insert_one(NewTask::new("pending", json!(null))).await;
    let scheduled = h
        .insert_one(
            NewTask::new("scheduled", json!(null))
                .options(TaskOptions::new().run_at(h.later(Duration::from_secs(60)))),
        )
        .await;
    h.advance(Duration::from_secs(1));
    for id in [done, running, pending, scheduled] {
        let before = h.get(id).await;
        match retry(h, id).await {
            Err(StoreError::InvalidTransition { id: got, from, .. }) => {
                assert_eq!((got, from), (id, before.status));
            }
            other => panic!(
                "retry of a {} task must be InvalidTransition, got {other:?}",
                before.status
            ),
        }
        assert_eq!(h.get(id).await, before);
    }
    let unknown = TaskId::new();
    match retry(h, unknown).await {
        Err(StoreError::NotFound(got)) => assert_eq!(got, unknown),
        other => panic!("retry of an unknown task must be NotFound, got {other:?}"),
    }
}

/// Purge deletes only terminal tasks matching the filter and
/// `finished_before`, returns how many, and refuses non-terminal statuses.
pub async fn purge_terminal_tasks_by_filter(h: &Harness) {
    let t0 = h.now();
    let old_success = terminal_task(h, "a", "q", Status::Success).await;
    let old_failed = terminal_task(h, "b", "q", Status::Failed).await;
    let old_aborted = terminal_task(h, "a", "q", Status::Aborted).await;
    h.advance(Duration::from_secs(3600));
    let new_success = terminal_task(h, "a", "q", Status::Success).await;
    let running = h.insert_and_claim("a", TaskOptions::new()).await.id;
    let pending = h.insert_one(NewTask::new("a", json!(null))).await;
    let scheduled = h
        .insert_one(
            NewTask::new("a", json!(null))
                .options(TaskOptions::new().run_at(h.later(Duration::from_secs(60)))),
        )
        .await;
    let purge = |filter: TaskFilter, finished_before| async move {
        h.store
            .task_purge(&TaskPurgeParams {
                filter,
                finished_before,
                limit: None,
            })
            .await
    };

    for statuses in [
        vec![Status::Pending],
        vec![Status::Success, Status::Running],
        vec![Status::Scheduled],
    ] {
        let filter = TaskFilter {
            statuses: statuses.clone(),
            ..TaskFilter::default()
        };
        match purge(filter, None).await {
            Err(StoreError::Invalid(_)) => {}
            other => panic!("purge of {statuses:?} must be Invalid, got {other:?}"),
        }
    }
    assert_eq!(h.count_all().await, 7, "a refused purge deletes nothing");

    let half_hour = t0 + chrono::Duration::seconds(1800);
    let by_name = TaskFilter {
        names: vec!["a".to_owned()],
        ..TaskFilter::default()
    };
    assert_eq!(
        ok("task_purge", purge(by_name, Some(half_hour)).await),
        2,
        "old tasks named a"
    );
    assert_eq!(h.try_get(old_success).await, None);
    assert_eq!(h.try_get(old_aborted).await, None);
    assert_no_history(h, old_success).await;
    assert!(h.try_get(old_failed).await.is_some());
    assert!(h.try_get(new_success).await.is_some());

    let failed_only = TaskFilter {
        statuses: vec![Status::Failed],
        ..TaskFilter::default()
    };
    assert_eq!(ok("task_purge", purge(failed_only, None).await), 1);
    assert_eq!(h.try_get(old_failed).await, None);

    assert_eq!(
        ok(
            "task_purge",
            purge(TaskFilter::default(), Some(half_hour)).await
        ),
        0,
        "nothing old is left"
    );
    assert_eq!(
        ok("task_purge", purge(TaskFilter::default(), None).await),
        1,
        "all terminal tasks"
    );
    assert_eq!(h.try_get(new_success).await, None);
    for id in [running, pending, scheduled] {
        assert!(h.try_get(id).await.is_some(), "non-terminal tasks stay");
    }
    assert_eq!(h.count_all().await, 3);
}

/// Purge deletes at most `limit` tasks per call.
pub async fn purge_respects_limit(h: &Harness) {
    for _ in 0..5 {
        terminal_task(h, "done", "q", Status::Success).await;
    }
    let params = TaskPurgeParams {
        filter: TaskFilter::default(),
        finished_before: None,
        limit: Some(2),
    };
    for want in [2, 2, 1, 0] {
        assert_eq!(ok("task_purge", h.store.task_purge(&params).await), want);
    }
    assert_eq!(h.count_all().await, 0);
}

/// The history lists every attempt, oldest first, with its worker, times,
/// outcome and error.
pub async fn attempts_history_in_order(h: &Harness) {
    let id = h
        .insert_one(NewTask::new("flaky", json!(null)).options(TaskOptions::new().max_attempts(3)))
        .await;
    let mut starts = Vec::new();
    let mut errors = Vec::new();
    for n in 1..=3u32 {
        h.advance(Duration::from_secs(10));
        let mut params = h.claim_params(DEFAULT_QUEUE, 1);
        params.worker_id = format!("worker-{n}");
        let claimed = ok("task_claim", h.store.task_claim(&params).await);
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].attempt, n);
        starts.push(h.now());
        h.advance(Duration::from_secs(1));
        let outcome = if n < 3 {
            let error = h.error("error", &format!("failure {n}"), n);
            errors.push(Some(error.clone()));
            FinishOutcome::Retry {
                error,
                run_at: h.now(),
            }
        } else {
            errors.push(None);
            FinishOutcome::Success { output: json!(n) }
        };
        assert!(h.finish(lease_of(&claimed[0]), outcome).await.accepted);
    }
    let history = h.attempts(id).await;
    assert_eq!(history.len(), 3);
    for (i, a) in history.iter().enumerate() {
        let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
        assert_eq!(a.attempt, n);
        assert_eq!(a.worker_id, format!("worker-{n}"));
        assert_eq!(a.started_at, starts[i]);
        assert_eq!(
            a.finished_at,
            Some(starts[i] + chrono::Duration::seconds(1))
        );
        assert_eq!(a.error, errors[i]);
        let outcome = if n < 3 {
            AttemptOutcome::Error
        } else {
            AttemptOutcome::Success
        };
        assert_eq!(a.outcome, outcome);
    }
    // The history through the other handle is the same.
    assert_eq!(
        ok("task_attempts on second", h.second.task_attempts(id).await),
        history
    );
}
