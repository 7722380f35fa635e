//! Cases for the event log: which calls append which events (kind, task,
//! name, queue, attempt, data), that refused and management calls append
//! none, filters, cursor paging (every event once, in order; the cursor
//! moves past rows a filter leaves out), `event_cursor_latest`, invalid
//! cursors and limits, and `event_purge`.
//!
//! A store may show an event only some time after its write returned (the
//! PostgreSQL store shows it once every transaction that began writing
//! before it has ended, and other tests on the same server hold
//! transactions too). So the cases read the log through [`log`], which
//! first inserts a marker task and reads until the marker's event appears
//! (every earlier write is readable then), and leave markers out of what
//! they compare.

use std::time::Duration;

use offload_store::{
    EventFilter, EventKind, EventListParams, EventPage, FinishOutcome, IdempotencyKey, LeaseRef,
    MAX_EVENT_PAGE, ProgressUpdate, PurgeBeforeParams, StoreError, TaskAbortParams,
    TaskDeleteParams, TaskEvent, TaskExportParams, TaskImportParams, TaskInsertParams,
    TaskProgressParams, TaskPurgeParams, TaskRetryParams, TaskUpdateParams,
};
use offload_types::{DEFAULT_QUEUE, LeaseToken, NewTask, Progress, Status, TaskId, TaskOptions};
use serde_json::json;
use tokio::time::Instant;

use crate::harness::ok;
use crate::{Harness, LEASE, WORKER, lease_of};

const PAST_LEASE: Duration = Duration::from_secs(LEASE.as_secs() + 1);

/// The name and queue of marker tasks.
const MARKER: &str = "events-marker";

/// How long a written event may take to become readable.
const WAIT: Duration = Duration::from_secs(60);

/// The log as read up to a marker.
pub(crate) struct Log {
    /// Every event read, markers left out, oldest first.
    pub(crate) events: Vec<TaskEvent>,
    /// The cursor after the marker's event: the end of the log.
    pub(crate) end: String,
}

fn list(after: Option<String>, filter: EventFilter, limit: u32) -> EventListParams {
    EventListParams {
        after,
        filter,
        limit,
    }
}

async fn read(h: &Harness, params: &EventListParams) -> EventPage {
    ok("event_list", h.store.event_list(params).await)
}

/// Every event after `after` once every write made so far is readable
/// (see the module docs), markers left out.
async fn log_after(h: &Harness, after: Option<String>) -> Log {
    let marker = h
        .insert_one(NewTask::new(MARKER, json!(null)).options(TaskOptions::new().queue(MARKER)))
        .await;
    let deadline = Instant::now() + WAIT;
    let mut cursor = after;
    let mut events = Vec::new();
    loop {
        let page = read(h, &list(cursor.clone(), EventFilter::default(), 1000)).await;
        assert!(
            page.events.is_empty() || page.cursor.is_some(),
            "a page with events has a cursor"
        );
        if let Some(last) = page.events.last() {
            assert_eq!(
                page.cursor.as_deref(),
                Some(last.cursor.as_str()),
                "an unfiltered page ends at its last event"
            );
        }
        let mut found = false;
        for e in page.events {
            if e.task_id == marker {
                found = true;
            } else if e.name != MARKER {
                events.push(e);
            }
        }
        cursor = page.cursor;
        if found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the marker's task.created event was not readable within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Log {
        events,
        end: cursor.unwrap_or_default(),
    }
}

/// Every event of the log (see [`log_after`]).
pub(crate) async fn log(h: &Harness) -> Log {
    log_after(h, None).await
}

/// Every event matching `filter`, paging `limit` at a time from the start
/// until the cursor stops moving, once every earlier write is readable;
/// markers left out. Also returns the final cursor.
async fn filtered(h: &Harness, filter: EventFilter, limit: u32) -> (Vec<TaskEvent>, String) {
    let end = log(h).await.end;
    let mut cursor = None;
    let mut events = Vec::new();
    loop {
        let page = read(h, &list(cursor.clone(), filter.clone(), limit)).await;
        assert!(
            page.events.len() <= limit as usize,
            "a page holds at most limit events"
        );
        if page.cursor == cursor {
            assert!(
                page.events.is_empty(),
                "a page with events moves the cursor"
            );
            break;
        }
        events.extend(page.events.into_iter().filter(|e| e.name != MARKER));
        cursor = page.cursor;
    }
    assert_eq!(
        cursor.as_deref(),
        Some(end.as_str()),
        "the filtered reads end where the log ends"
    );
    (events, end)
}

fn kinds(events: &[TaskEvent]) -> Vec<(TaskId, EventKind)> {
    events.iter().map(|e| (e.task_id, e.kind)).collect()
}

fn of(events: &[TaskEvent], id: TaskId) -> Vec<TaskEvent> {
    events.iter().filter(|e| e.task_id == id).cloned().collect()
}

#[track_caller]
fn only(events: &[TaskEvent], kind: EventKind) -> &TaskEvent {
    let found: Vec<&TaskEvent> = events.iter().filter(|e| e.kind == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} event expected in {events:#?}");
    found[0]
}

/// An insert appends one `task.created` per task, with the status it was
/// inserted in, attempt 0, its name and queue, at the insert's `now`; the
/// second handle reads the same log.
pub async fn events_insert_writes_created(h: &Harness) {
    let ids = h
        .insert(vec![
            NewTask::new("mail", json!({"to": "a"})).options(TaskOptions::new().queue("q1")),
            NewTask::new("report", json!(null))
                .options(TaskOptions::new().run_at(h.later(Duration::from_secs(60)))),
        ])
        .await;
    let log = log(h).await;
    assert_eq!(
        kinds(&log.events),
        vec![(ids[0], EventKind::Created), (ids[1], EventKind::Created)]
    );
    let (a, b) = (&log.events[0], &log.events[1]);
    assert_eq!((a.name.as_str(), a.queue.as_str()), ("mail", "q1"));
    assert_eq!(
        (b.name.as_str(), b.queue.as_str()),
        ("report", DEFAULT_QUEUE)
    );
    assert_eq!(a.data, json!({"status": "pending"}));
    assert_eq!(b.data, json!({"status": "scheduled"}));
    for e in [a, b] {
        assert_eq!(e.attempt, 0);
        assert_eq!(e.at, h.now());
    }
    assert_ne!(a.cursor, b.cursor);

    let page = ok(
        "event_list on second",
        h.second
            .event_list(&list(None, EventFilter::default(), 2))
            .await,
    );
    assert_eq!(page.events, log.events, "both handles read one log");
}

/// A claim appends `task.started` with the new attempt and the worker;
/// progress of a live lease appends `task.progress` with the progress
/// object, a stale lease's progress appends nothing.
pub async fn events_claim_and_progress_write_started_and_progress(h: &Harness) {
    let t = h
        .insert_and_claim("job", TaskOptions::new().queue("work"))
        .await;
    h.advance(Duration::from_secs(1));
    let progress = Progress {
        percent: 40,
        message: Some("copying".to_owned()),
        data: Some(json!({"rows": 12})),
    };
    let stale = LeaseRef {
        id: t.id,
        lease_token: LeaseToken::new(),
    };
    let params = TaskProgressParams {
        updates: vec![
            ProgressUpdate {
                lease: lease_of(&t),
                progress: progress.clone(),
            },
            ProgressUpdate {
                lease: stale,
                progress: Progress::new(90, None),
            },
        ],
        now: h.now(),
    };
    let answers = ok(
        "task_progress_many",
        h.store.task_progress_many(&params).await,
    );
    assert_eq!(
        answers.iter().map(|a| a.live).collect::<Vec<_>>(),
        vec![true, false]
    );
    let events = log(h).await.events;
    assert_eq!(
        kinds(&events),
        vec![
            (t.id, EventKind::Created),
            (t.id, EventKind::Started),
            (t.id, EventKind::Progress)
        ]
    );
    let started = &events[1];
    assert_eq!(started.attempt, 1);
    assert_eq!(started.data, json!({"worker_id": WORKER}));
    assert_eq!(
        (started.name.as_str(), started.queue.as_str()),
        ("job", "work")
    );
    assert_eq!(Some(started.at), t.started_at);
    let reported = &events[2];
    assert_eq!(reported.attempt, 1);
    assert_eq!(reported.data, json!(progress));
    assert_eq!(reported.at, h.now());
}

/// Each accepted finish appends its event: success `task.succeeded {}`,
/// retry `task.retrying` with the error and `run_at`, fail `task.failed`
/// and abort `task.aborted` with the error; snooze and release append
/// none. The next claim's `task.started` carries attempt 2.
pub async fn events_finish_outcomes_write_their_events(h: &Harness) {
    let names = ["ok", "again", "bad", "stop", "later", "back"];
    let mut tasks = Vec::new();
    for name in names {
        tasks.push(h.insert_and_claim(name, TaskOptions::new()).await);
    }
    h.advance(Duration::from_secs(3));
    let error = h.error("error", "upstream returned 503", 1);
    let run_at = h.later(Duration::from_secs(60));
    let outcomes = vec![
        FinishOutcome::Success {
            output: json!({"done": true}),
        },
        FinishOutcome::Retry {
            error: error.clone(),
            run_at,
        },
        FinishOutcome::Fail {
            error: error.clone(),
        },
        FinishOutcome::Abort {
            error: error.clone(),
        },
        FinishOutcome::Snooze { run_at },
        FinishOutcome::Release,
    ];
    let answers = h
        .finish_many(tasks.iter().map(lease_of).zip(outcomes).collect())
        .await;
    assert!(answers.iter().all(|a| a.accepted), "{answers:?}");
    let events = log(h).await.events;
    let ended: Vec<&TaskEvent> = events
        .iter()
        .filter(|e| !matches!(e.kind, EventKind::Created | EventKind::Started))
        .collect();
    assert_eq!(
        ended
            .iter()
            .map(|e| (e.task_id, e.kind))
            .collect::<Vec<_>>(),
        vec![
            (tasks[0].id, EventKind::Succeeded),
            (tasks[1].id, EventKind::Retrying),
            (tasks[2].id, EventKind::Failed),
            (tasks[3].id, EventKind::Aborted),
        ],
        "snooze and release write no event"
    );
    let error_json = json!(error);
    assert_eq!(ended[0].data, json!({}));
    assert_eq!(
        ended[1].data,
        json!({"error": error_json, "run_at": json!(run_at)})
    );
    assert_eq!(ended[2].data, json!({"error": error_json}));
    assert_eq!(ended[3].data, json!({"error": error_json}));
    for (e, name) in ended.iter().zip(names) {
        assert_eq!(e.attempt, 1);
        assert_eq!(e.at, h.now());
        assert_eq!((e.name.as_str(), e.queue.as_str()), (name, DEFAULT_QUEUE));
    }

    // The retried task runs again as attempt 2; the snoozed and released
    // ones gave their attempt back and run as attempt 1.
    h.advance(Duration::from_secs(60));
    let end = log(h).await.end;
    assert_eq!(h.claim(DEFAULT_QUEUE, 10).await.len(), 3);
    let later = log_after(h, Some(end)).await.events;
    for (t, attempt) in [(&tasks[1], 2), (&tasks[4], 1), (&tasks[5], 1)] {
        let started = only(&of(&later, t.id), EventKind::Started).clone();
        assert_eq!(started.attempt, attempt, "{}", t.name);
    }
}

/// A finish refused for a stale lease (finished already, or a token that
/// never was the task's) appends nothing.
pub async fn events_stale_finish_writes_nothing(h: &Harness) {
    let t = h.insert_and_claim("job", TaskOptions::new()).await;
    let first = h
        .finish(lease_of(&t), FinishOutcome::Success { output: json!(1) })
        .await;
    assert!(first.accepted);
    let before = log(h).await;
    let again = h
        .finish(lease_of(&t), FinishOutcome::Success { output: json!(2) })
        .await;
    assert!(!again.accepted);
    let forged = LeaseRef {
        id: t.id,
        lease_token: LeaseToken::new(),
    };
    let forged = h
        .finish(
            forged,
            FinishOutcome::Fail {
                error: h.error("error", "not mine", 1),
            },
        )
        .await;
    assert!(!forged.accepted);
    assert!(
        log_after(h, Some(before.end)).await.events.is_empty(),
        "refused finishes write no event"
    );
    assert_eq!(
        kinds(&before.events),
        vec![
            (t.id, EventKind::Created),
            (t.id, EventKind::Started),
            (t.id, EventKind::Succeeded)
        ]
    );
}

/// Aborting a waiting task appends `task.aborted` with the error the
/// store recorded; asking a running task to stop appends nothing, and its
/// worker's abort finish appends `task.aborted`.
pub async fn events_abort_waiting_and_running(h: &Harness) {
    let waiting = h.insert_one(NewTask::new("idle", json!(null))).await;
    let running = h
        .insert_and_claim("busy", TaskOptions::new().queue("other"))
        .await;
    h.advance(Duration::from_secs(2));
    for id in [waiting, running.id] {
        ok(
            "task_abort",
            h.store
                .task_abort(&TaskAbortParams {
                    id,
                    reason: Some("no longer needed".to_owned()),
                    now: h.now(),
                })
                .await,
        );
    }
    let events = log(h).await.events;
    let aborted = only(&events, EventKind::Aborted);
    assert_eq!(
        aborted.task_id, waiting,
        "only the waiting task is aborted yet"
    );
    assert_eq!(aborted.attempt, 0);
    assert_eq!(aborted.at, h.now());
    assert_eq!(aborted.name, "idle");
    let stored = h.get(waiting).await;
    assert_eq!(aborted.data, json!({"error": json!(stored.error)}));

    let error = h.error("aborted", "no longer needed", 1);
    let answer = h
        .finish(
            lease_of(&running),
            FinishOutcome::Abort {
                error: error.clone(),
            },
        )
        .await;
    assert!(answer.accepted);
    let events = log(h).await.events;
    let stopped = only(&of(&events, running.id), EventKind::Aborted).clone();
    assert_eq!(stopped.attempt, 1);
    assert_eq!(stopped.queue, "other");
    assert_eq!(stopped.data, json!({"error": json!(error)}));
}

/// A rescue appends `task.retrying` (`reason` and `run_at`) for a task put
/// back to pending, `task.failed` for one out of attempts and
/// `task.aborted` for one whose abort was asked, with the error the store
/// recorded.
pub async fn events_rescue_writes_retrying_failed_aborted(h: &Harness) {
    let retried = h
        .insert_and_claim("retried", TaskOptions::new().max_attempts(2))
        .await;
    let failed = h
        .insert_and_claim("failed", TaskOptions::new().max_attempts(1))
        .await;
    let aborted = h
        .insert_and_claim("aborted", TaskOptions::new().max_attempts(3))
        .await;
    ok(
        "task_abort",
        h.store
            .task_abort(&TaskAbortParams {
                id: aborted.id,
                reason: None,
                now: h.now(),
            })
            .await,
    );
    h.advance(PAST_LEASE);
    let mut rescued: Vec<(TaskId, Status)> =
        h.rescue().await.iter().map(|r| (r.id, r.status)).collect();
    rescued.sort_by_key(|(id, _)| *id);
    let mut expected = vec![
        (retried.id, Status::Pending),
        (failed.id, Status::Failed),
        (aborted.id, Status::Aborted),
    ];
    expected.sort_by_key(|(id, _)| *id);
    assert_eq!(rescued, expected);
    let events = log(h).await.events;

    let e = only(&of(&events, retried.id), EventKind::Retrying).clone();
    let task = h.get(retried.id).await;
    assert_eq!(
        e.data,
        json!({"reason": "lease expired", "run_at": json!(task.run_at)})
    );
    let e2 = only(&of(&events, failed.id), EventKind::Failed).clone();
    assert_eq!(
        e2.data,
        json!({"error": json!(h.get(failed.id).await.error)})
    );
    let e3 = only(&of(&events, aborted.id), EventKind::Aborted).clone();
    assert_eq!(
        e3.data,
        json!({"error": json!(h.get(aborted.id).await.error)})
    );
    for (e, name) in [(&e, "retried"), (&e2, "failed"), (&e3, "aborted")] {
        assert_eq!(e.attempt, 1);
        assert_eq!(e.at, h.now());
        assert_eq!(e.name, name);
    }
    assert_eq!(events.len(), 9, "created, started and one end per task");
}

/// Retry, update, delete, purge and import append no event.
pub async fn events_management_calls_write_none(h: &Harness) {
    let failing = h.insert_and_claim("fails", TaskOptions::new()).await;
    h.finish(
        lease_of(&failing),
        FinishOutcome::Fail {
            error: h.error("error", "boom", 1),
        },
    )
    .await;
    let waiting = h
        .insert_one(NewTask::new("waits", json!(1)).options(TaskOptions::new().queue("side")))
        .await;
    let done = h.insert_and_claim("done", TaskOptions::new()).await;
    h.finish(
        lease_of(&done),
        FinishOutcome::Success {
            output: json!(null),
        },
    )
    .await;
    let copied = ok(
        "task_export",
        h.store
            .task_export(&TaskExportParams {
                after: None,
                limit: 100,
            })
            .await,
    );
    let before = log(h).await;

    ok(
        "task_retry",
        h.store
            .task_retry(&TaskRetryParams {
                id: failing.id,
                now: h.now(),
            })
            .await,
    );
    ok(
        "task_update",
        h.store
            .task_update(&TaskUpdateParams {
                id: waiting,
                priority: Some(5),
                now: h.now(),
                ..TaskUpdateParams::default()
            })
            .await,
    );
    h.advance(Duration::from_secs(5));
    let purged = ok(
        "task_purge",
        h.store
            .task_purge(&TaskPurgeParams {
                filter: offload_store::TaskFilter {
                    names: vec!["done".to_owned()],
                    ..Default::default()
                },
                finished_before: Some(h.now()),
                limit: None,
            })
            .await,
    );
    assert_eq!(purged, 1);
    ok(
        "task_delete",
        h.store
            .task_delete(&TaskDeleteParams {
                id: waiting,
                now: h.now(),
            })
            .await,
    );
    let imported = ok(
        "task_import",
        h.store
            .task_import(&TaskImportParams { records: copied })
            .await,
    );
    assert_eq!(
        imported.inserted, 2,
        "the purged and the deleted task come back"
    );
    assert!(
        log_after(h, Some(before.end)).await.events.is_empty(),
        "management calls write no event"
    );
}

/// Filters by kind, name, queue and task id, each alone and combined
/// (all must match; within one, any value).
pub async fn events_filters_select_kinds_names_queues_tasks(h: &Harness) {
    let a = h
        .insert_and_claim("alpha", TaskOptions::new().queue("qa"))
        .await;
    let b = h
        .insert_and_claim("beta", TaskOptions::new().queue("qb"))
        .await;
    let c = h
        .insert_one(NewTask::new("alpha", json!(null)).options(TaskOptions::new().queue("qb")))
        .await;
    h.finish(
        lease_of(&a),
        FinishOutcome::Success {
            output: json!(null),
        },
    )
    .await;
    let all = log(h).await.events;
    assert_eq!(all.len(), 6);
    let check = |filter: EventFilter, expected: Vec<(TaskId, EventKind)>| {
        let want = expected;
        async move {
            for limit in [1, 1000] {
                let (got, _) = filtered(h, filter.clone(), limit).await;
                assert_eq!(kinds(&got), want, "filter {filter:?}, limit {limit}");
            }
        }
    };
    check(
        EventFilter {
            kinds: vec![EventKind::Started, EventKind::Succeeded],
            ..EventFilter::default()
        },
        vec![
            (a.id, EventKind::Started),
            (b.id, EventKind::Started),
            (a.id, EventKind::Succeeded),
        ],
    )
    .await;
    check(
        EventFilter {
            names: vec!["alpha".to_owned()],
            ..EventFilter::default()
        },
        vec![
            (a.id, EventKind::Created),
            (a.id, EventKind::Started),
            (c, EventKind::Created),
            (a.id, EventKind::Succeeded),
        ],
    )
    .await;
    check(
        EventFilter {
            queues: vec!["qb".to_owned()],
            ..EventFilter::default()
        },
        vec![
            (b.id, EventKind::Created),
            (b.id, EventKind::Started),
            (c, EventKind::Created),
        ],
    )
    .await;
    check(
        EventFilter {
            task_ids: vec![b.id, c],
            ..EventFilter::default()
        },
        vec![
            (b.id, EventKind::Created),
            (b.id, EventKind::Started),
            (c, EventKind::Created),
        ],
    )
    .await;
    check(
        EventFilter {
            kinds: vec![EventKind::Created],
            names: vec!["alpha".to_owned(), "beta".to_owned()],
            queues: vec!["qb".to_owned()],
            task_ids: vec![a.id, b.id, c],
        },
        vec![(b.id, EventKind::Created), (c, EventKind::Created)],
    )
    .await;
    check(
        EventFilter {
            names: vec!["nothing".to_owned()],
            ..EventFilter::default()
        },
        vec![],
    )
    .await;
}

/// Paging with a small limit returns every event exactly once, in log
/// order, the same events as one big read; each page ends at its last
/// event, and reading past the end returns nothing and keeps the cursor.
pub async fn events_pages_return_every_event_once_in_order(h: &Harness) {
    for i in 0..5 {
        let t = h
            .insert_and_claim(&format!("job{i}"), TaskOptions::new())
            .await;
        h.finish(lease_of(&t), FinishOutcome::Success { output: json!(i) })
            .await;
    }
    h.insert_n("more", DEFAULT_QUEUE, 7).await;
    let whole = log(h).await;
    assert_eq!(whole.events.len(), 22);
    let mut cursor = None;
    let mut paged = Vec::new();
    loop {
        let page = read(h, &list(cursor.clone(), EventFilter::default(), 4)).await;
        assert!(page.events.len() <= 4);
        if let Some(last) = page.events.last() {
            assert_eq!(page.cursor.as_deref(), Some(last.cursor.as_str()));
        }
        if page.events.is_empty() {
            assert_eq!(page.cursor, cursor, "nothing new keeps the cursor");
            break;
        }
        paged.extend(page.events.into_iter().filter(|e| e.name != MARKER));
        cursor = page.cursor;
    }
    assert_eq!(paged, whole.events, "every event once, in order");
    let mut seen = std::collections::HashSet::new();
    assert!(paged.iter().all(|e| seen.insert(e.cursor.clone())));
    assert_eq!(cursor.as_deref(), Some(whole.end.as_str()));

    // A read from any event's cursor returns exactly what follows it.
    let mid = &whole.events[10];
    let rest = log_after(h, Some(mid.cursor.clone())).await.events;
    assert_eq!(rest, whole.events[11..].to_vec());
}

/// A filtered read moves its cursor past the rows the filter left out:
/// when nothing matches, the cursor still reaches the end of the log, and
/// a read after it returns only what comes later.
pub async fn events_cursor_moves_past_filtered_out_rows(h: &Harness) {
    h.insert_n("noise", DEFAULT_QUEUE, 30).await;
    let wanted = EventFilter {
        names: vec!["signal".to_owned()],
        ..EventFilter::default()
    };
    let (none, end) = filtered(h, wanted.clone(), 5).await;
    assert!(none.is_empty());
    let one = read(h, &list(None, wanted.clone(), 5)).await;
    assert!(one.events.is_empty());
    assert_eq!(
        one.cursor.as_deref(),
        Some(end.as_str()),
        "the cursor moved past every row looked at"
    );

    let signal = h.insert_one(NewTask::new("signal", json!(null))).await;
    h.insert_n("noise", DEFAULT_QUEUE, 3).await;
    log(h).await;
    let page = read(h, &list(Some(end), wanted, 5)).await;
    assert_eq!(kinds(&page.events), vec![(signal, EventKind::Created)]);
}

/// `event_cursor_latest` is `None` on an empty log; after events, reading
/// after it returns only events written later.
pub async fn events_cursor_latest_then_only_later_events(h: &Harness) {
    assert_eq!(
        ok("event_cursor_latest", h.store.event_cursor_latest().await),
        None,
        "a fresh store has an empty log"
    );
    h.insert_n("old", DEFAULT_QUEUE, 3).await;
    log(h).await;
    let latest = ok("event_cursor_latest", h.store.event_cursor_latest().await);
    assert!(latest.is_some(), "the log is not empty");
    let fresh = h.insert_n("new", DEFAULT_QUEUE, 2).await;
    let later = log_after(h, latest).await.events;
    assert_eq!(
        kinds(&later),
        vec![
            (fresh[0], EventKind::Created),
            (fresh[1], EventKind::Created)
        ]
    );
}

#[track_caller]
fn assert_invalid(result: Result<EventPage, StoreError>, field: &str) {
    match result {
        Err(StoreError::Invalid(v)) => {
            assert_eq!(v.field, field, "{v:?}");
            assert!(!v.message.is_empty());
        }
        other => panic!("expected Invalid({field}), got {other:?}"),
    }
}

/// A cursor this store did not write is refused as invalid (field
/// `cursor`), as is a limit of 0 or above the maximum (field `limit`).
pub async fn events_bad_cursor_or_limit_is_invalid(h: &Harness) {
    h.insert_n("job", DEFAULT_QUEUE, 2).await;
    for bad in ["", "abc", "x.y", "-1", "1.2.3", " 7", "7 ", "1e3", "0x10"] {
        assert_invalid(
            h.store
                .event_list(&list(Some(bad.to_owned()), EventFilter::default(), 10))
                .await,
            "cursor",
        );
    }
    for limit in [0, MAX_EVENT_PAGE + 1, u32::MAX] {
        assert_invalid(
            h.store
                .event_list(&list(None, EventFilter::default(), limit))
                .await,
            "limit",
        );
    }
    let page = read(h, &list(None, EventFilter::default(), MAX_EVENT_PAGE)).await;
    assert!(page.events.len() <= 2);
}

/// `event_purge` deletes only events written before `before`, oldest
/// first, at most `limit` per call, and returns how many.
pub async fn events_purge_deletes_older_events_up_to_limit(h: &Harness) {
    let old = h.insert_n("old", DEFAULT_QUEUE, 3).await;
    h.advance(Duration::from_secs(10));
    let cut = h.now();
    let new = h.insert_n("new", DEFAULT_QUEUE, 2).await;
    h.advance(Duration::from_secs(10));
    let purge = |before, limit| {
        let params = PurgeBeforeParams { before, limit };
        async move { ok("event_purge", h.store.event_purge(&params).await) }
    };
    assert_eq!(purge(cut, 0).await, 0, "limit 0 deletes nothing");
    assert_eq!(purge(cut, 2).await, 2);
    let events = log(h).await.events;
    assert_eq!(
        kinds(&events),
        vec![
            (old[2], EventKind::Created),
            (new[0], EventKind::Created),
            (new[1], EventKind::Created)
        ],
        "the oldest go first"
    );
    assert_eq!(purge(cut, 10).await, 1);
    assert_eq!(purge(cut, 10).await, 0);
    assert_eq!(
        kinds(&log(h).await.events),
        vec![(new[0], EventKind::Created), (new[1], EventKind::Created)]
    );
    // The tasks are untouched.
    assert_eq!(h.get(old[0]).await.status, Status::Pending);
}

/// An idempotent insert appends `task.created` for the tasks it inserts;
/// a replay of the same request inserts nothing and appends nothing.
pub async fn events_idempotent_insert_writes_created_once(h: &Harness) {
    let key = IdempotencyKey {
        key: "order-42".to_owned(),
        fingerprint: "digest-1".to_owned(),
        expires_at: h.later(Duration::from_secs(3600)),
    };
    let params = TaskInsertParams {
        tasks: vec![
            NewTask::new("charge", json!({"order": 42})),
            NewTask::new("receipt", json!({"order": 42})),
        ],
        now: h.now(),
    };
    let first = ok(
        "task_insert_idempotent",
        h.store.task_insert_idempotent(&params, &key).await,
    );
    assert!(!first.replayed);
    let log1 = log(h).await;
    assert_eq!(
        kinds(&log1.events),
        vec![
            (first.tasks[0].id, EventKind::Created),
            (first.tasks[1].id, EventKind::Created)
        ]
    );
    let mut again = params.clone();
    for t in &mut again.tasks {
        t.id = TaskId::new();
    }
    let replay = ok(
        "task_insert_idempotent",
        h.store.task_insert_idempotent(&again, &key).await,
    );
    assert!(replay.replayed);
    assert_eq!(replay.tasks, first.tasks);
    assert!(
        log_after(h, Some(log1.end)).await.events.is_empty(),
        "a replay writes no event"
    );
}

/// A task's own webhook URL rides on its end events (succeeded, failed,
/// aborted), so it is delivered there even if the task is deleted first;
/// its other events, and tasks without one, carry none.
pub async fn events_end_events_carry_the_task_webhook(h: &Harness) {
    let url = "https://hooks.example.com/t";
    let hooked = |name: &str| {
        let name = name.to_owned();
        async move {
            h.insert_and_claim(&name, TaskOptions::new().webhook(url))
                .await
        }
    };
    let ok = hooked("ok").await;
    let bad = hooked("bad").await;
    let plain = h.insert_and_claim("plain", TaskOptions::new()).await;
    let error = h.error("error", "no", 1);
    let answers = h
        .finish_many(vec![
            (lease_of(&ok), FinishOutcome::Success { output: json!(1) }),
            (
                lease_of(&bad),
                FinishOutcome::Fail {
                    error: error.clone(),
                },
            ),
            (
                lease_of(&plain),
                FinishOutcome::Success { output: json!(2) },
            ),
        ])
        .await;
    assert!(answers.iter().all(|a| a.accepted), "{answers:?}");
    let events = log(h).await.events;
    assert_eq!(
        only(&of(&events, ok.id), EventKind::Succeeded).data["webhook"],
        json!(url)
    );
    assert_eq!(
        only(&of(&events, bad.id), EventKind::Failed).data["webhook"],
        json!(url)
    );
    assert!(
        only(&of(&events, plain.id), EventKind::Succeeded)
            .data
            .get("webhook")
            .is_none()
    );
    for e in of(&events, ok.id) {
        if e.kind != EventKind::Succeeded {
            assert!(e.data.get("webhook").is_none(), "{e:?}");
        }
    }
}
