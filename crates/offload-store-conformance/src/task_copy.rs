//! Cases for copying a store: `task_export` reads pages of whole tasks
//! (every field, the whole attempt history) in id order, and `task_import`
//! writes such records back exactly as given: same ids, statuses,
//! timestamps, output, errors, progress and history, a fresh lease token
//! for a running task (which keeps its lease expiry), ids already present
//! skipped and counted, all or nothing per call.
//!
//! Both harness handles see the same data, so an import cannot go to an
//! empty second store. The cases import records under fresh ids built from
//! exported ones (or after deleting the originals) and compare what the
//! store returns for them with what was exported.

use std::collections::HashSet;
use std::time::Duration;

use offload_store::{
    FinishOutcome, LeaseRef, MAX_EXPORT_PAGE, Notification, ProgressUpdate, Store, StoreError,
    StoreResult, TaskAbortParams, TaskDeleteParams, TaskExportParams, TaskImportParams,
    TaskImportResult, TaskProgressParams, TaskRecord, TaskRetryParams,
};
use offload_types::{
    AttemptOutcome, NewTask, Progress, RetryPolicy, Status, Task, TaskId, TaskOptions,
};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use crate::harness::ok;
use crate::{Harness, LEASE, lease_of};

/// The queue the copy cases use.
const QUEUE: &str = "copyq";

/// How long a case waits for a notification before failing.
const WAIT: Duration = Duration::from_secs(5);

async fn export_page(
    store: &dyn Store,
    after: Option<TaskId>,
    limit: u32,
) -> StoreResult<Vec<TaskRecord>> {
    store.task_export(&TaskExportParams { after, limit }).await
}

/// Every task of `store`, exported in pages of `page`.
async fn export_all(store: &dyn Store, page: u32) -> Vec<TaskRecord> {
    let mut all: Vec<TaskRecord> = Vec::new();
    loop {
        let after = all.last().map(|r| r.task.id);
        let records = ok("task_export", export_page(store, after, page).await);
        assert!(
            records.len() <= page as usize,
            "a page holds at most its limit"
        );
        let done = records.len() < page as usize;
        all.extend(records);
        if done {
            return all;
        }
    }
}

/// The exported records of `ids`, in the order of `ids`.
async fn export_of(h: &Harness, ids: &[TaskId]) -> Vec<TaskRecord> {
    let all = export_all(h.store.as_ref(), MAX_EXPORT_PAGE).await;
    ids.iter()
        .map(|id| match all.iter().find(|r| r.task.id == *id) {
            Some(r) => r.clone(),
            None => panic!("task {id} is missing from the export"),
        })
        .collect()
}

async fn import(store: &dyn Store, records: Vec<TaskRecord>) -> StoreResult<TaskImportResult> {
    store.task_import(&TaskImportParams { records }).await
}

/// The record under a fresh id, as a task of another store would be.
fn under_fresh_id(record: &TaskRecord) -> TaskRecord {
    let mut copy = record.clone();
    copy.task.id = TaskId::new();
    copy
}

/// The task with no lease token (a running task gets a fresh one on import).
fn without_token(task: &Task) -> Task {
    Task {
        lease_token: None,
        ..task.clone()
    }
}

/// Checks that the store holds `record` (under its id): every field as
/// exported, a fresh lease token if it is running, the same history.
async fn assert_holds(store: &dyn Store, record: &TaskRecord) {
    let id = record.task.id;
    let got = match ok("task_get", store.task_get(id).await) {
        Some(task) => task,
        None => panic!("imported task {id} ({}) is missing", record.task.name),
    };
    assert_eq!(
        without_token(&got),
        without_token(&record.task),
        "imported task {id} ({}) differs from the record",
        record.task.name
    );
    if record.task.status == Status::Running {
        assert!(
            got.lease_token.is_some(),
            "an imported running task has a lease token"
        );
        assert_ne!(
            got.lease_token, record.task.lease_token,
            "an imported running task gets a fresh lease token"
        );
    } else {
        assert_eq!(got.lease_token, None, "only running tasks carry a token");
    }
    let attempts = ok("task_attempts", store.task_attempts(id).await);
    assert_eq!(
        attempts, record.attempts,
        "history of imported task {id} ({}) differs from the record",
        record.task.name
    );
}

/// Claims the next task of scenario `name` (its queue is its name).
async fn claim_named(h: &Harness, name: &str, worker: &str) -> Task {
    let mut params = h.claim_params(name, 1);
    params.names = Some(vec![name.to_owned()]);
    params.worker_id = worker.to_owned();
    let mut claimed = ok("task_claim", h.store.task_claim(&params).await);
    assert_eq!(claimed.len(), 1, "one {name} task to claim");
    claimed.remove(0)
}

async fn finish(h: &Harness, task: &Task, outcome: FinishOutcome) {
    let answer = h.finish(lease_of(task), outcome).await;
    assert!(answer.accepted, "finish of {} refused", task.name);
}

async fn report_progress(h: &Harness, lease: LeaseRef, percent: u8) {
    let params = TaskProgressParams {
        updates: vec![ProgressUpdate {
            lease,
            progress: Progress::new(percent, Some(format!("{percent} done"))),
        }],
        now: h.now(),
    };
    let answers = ok(
        "task_progress_many",
        h.store.task_progress_many(&params).await,
    );
    assert!(answers.iter().all(|a| a.live));
}

async fn abort(h: &Harness, id: TaskId, reason: &str) -> Task {
    let params = TaskAbortParams {
        id,
        reason: Some(reason.to_owned()),
        now: h.now(),
    };
    ok("task_abort", h.store.task_abort(&params).await)
}

/// The options of a scenario's task: its own queue, named like the task,
/// so tasks left waiting by one scenario never stand in another's claims.
fn options(scenario: &str) -> TaskOptions {
    TaskOptions::new().queue(scenario)
}

/// Tasks in every status and with every kind of history, through the
/// store's public calls; returns their ids. Each task has its own name
/// and queue (the scenario).
async fn every_status(h: &Harness) -> Vec<TaskId> {
    let second = Duration::from_secs(1);
    let mut ids = Vec::new();

    // Rescued after its lease expired: pending, one lease_expired attempt.
    // (First, so the clock moves past no other lease.)
    let t = h.insert_and_claim("rescued", options("rescued")).await;
    h.advance(LEASE + second);
    let rescued = h.rescue().await;
    assert_eq!(rescued.iter().map(|r| r.id).collect::<Vec<_>>(), vec![t.id]);
    ids.push(t.id);

    // Pending, every option set.
    let retry = RetryPolicy {
        initial: Duration::from_secs(2),
        max: Duration::from_secs(60),
        multiplier: 3.0,
        jitter: 0.25,
    };
    let rich = options("pending")
        .priority(-7)
        .max_attempts(5)
        .timeout(Duration::from_millis(1500))
        .retry(retry)
        .tag("copy")
        .tag("every-field")
        .metadata(json!({ "owner": "conformance", "n": [1, 2] }));
    ids.push(
        h.insert_one(
            NewTask::new("pending", json!({ "deep": { "x": [1, "two", null] } })).options(rich),
        )
        .await,
    );

    // Scheduled for later.
    ids.push(
        h.insert_one(
            NewTask::new("scheduled", json!("later"))
                .options(options("scheduled").run_at(h.later(Duration::from_secs(3600)))),
        )
        .await,
    );

    // Success with progress and output.
    h.advance(second);
    let t = h.insert_and_claim("success", options("success")).await;
    report_progress(h, lease_of(&t), 60).await;
    h.advance(second);
    finish(
        h,
        &t,
        FinishOutcome::Success {
            output: json!({ "rows": 3, "ok": true }),
        },
    )
    .await;
    ids.push(t.id);

    // Failed after retries: error, error, then fail.
    let id = h
        .insert_one(NewTask::new("failed", json!(null)).options(options("failed").max_attempts(3)))
        .await;
    for n in 1..=3u32 {
        h.advance(second);
        let t = claim_named(h, "failed", &format!("worker-{n}")).await;
        h.advance(second);
        let error = h.error("error", &format!("failure {n}"), n);
        let outcome = if n < 3 {
            FinishOutcome::Retry {
                error,
                run_at: h.now(),
            }
        } else {
            FinishOutcome::Fail { error }
        };
        finish(h, &t, outcome).await;
    }
    ids.push(id);

    // Aborted while waiting for its retry: an error attempt, then the abort.
    h.advance(second);
    let t = h.insert_and_claim("aborted", options("aborted")).await;
    h.advance(second);
    finish(
        h,
        &t,
        FinishOutcome::Retry {
            error: h.error("error", "first try broke", 1),
            run_at: h.later(Duration::from_secs(600)),
        },
    )
    .await;
    h.advance(second);
    abort(h, t.id, "no longer needed").await;
    ids.push(t.id);

    // Aborted while running (the worker finished it as aborted).
    h.advance(second);
    let t = h
        .insert_and_claim("aborted-running", options("aborted-running"))
        .await;
    abort(h, t.id, "stop now").await;
    finish(
        h,
        &t,
        FinishOutcome::Abort {
            error: h.error("aborted", "stop now", 1),
        },
    )
    .await;
    ids.push(t.id);

    // Snoozed: scheduled again, the attempt not counted.
    h.advance(second);
    let t = h.insert_and_claim("snoozed", options("snoozed")).await;
    finish(
        h,
        &t,
        FinishOutcome::Snooze {
            run_at: h.later(Duration::from_secs(900)),
        },
    )
    .await;
    ids.push(t.id);

    // Released at shutdown: pending again, the attempt not counted.
    h.advance(second);
    let t = h.insert_and_claim("released", options("released")).await;
    report_progress(h, lease_of(&t), 10).await;
    finish(h, &t, FinishOutcome::Release).await;
    ids.push(t.id);

    // Released, then claimed again: running, with a history.
    h.advance(second);
    let t = h.insert_and_claim("rerun", options("rerun")).await;
    finish(h, &t, FinishOutcome::Release).await;
    h.advance(second);
    let t = claim_named(h, "rerun", "worker-again").await;
    ids.push(t.id);

    // Running, with progress and an abort request.
    h.advance(second);
    let t = h.insert_and_claim("running", options("running")).await;
    report_progress(h, lease_of(&t), 42).await;
    abort(h, t.id, "please stop").await;
    ids.push(t.id);

    // Retried by hand after failing: pending, history kept.
    h.advance(second);
    let t = h
        .insert_and_claim("retried", options("retried").max_attempts(1))
        .await;
    finish(
        h,
        &t,
        FinishOutcome::Fail {
            error: h.error("error", "gave up", 1),
        },
    )
    .await;
    h.advance(second);
    ok(
        "task_retry",
        h.store
            .task_retry(&TaskRetryParams {
                id: t.id,
                now: h.now(),
            })
            .await,
    );
    ids.push(t.id);

    h.advance(second);
    ids
}

/// The statuses `every_status` reaches.
fn statuses(records: &[TaskRecord]) -> HashSet<Status> {
    records.iter().map(|r| r.task.status).collect()
}

/// Pages of any size visit every task exactly once, in ascending id
/// order, through either handle; the last page is short (or empty).
pub async fn export_pages_visit_every_task_once_in_id_order(h: &Harness) {
    let mut ids = h.insert_n("a", QUEUE, 12).await;
    ids.extend(h.insert_n("b", "otherq", 9).await);
    ids.extend(every_status(h).await);
    let mut sorted = ids.clone();
    sorted.sort();
    for page in [1, 4, 7, 21, 1000, MAX_EXPORT_PAGE] {
        for store in [&h.store, &h.second] {
            let all = export_all(store.as_ref(), page).await;
            let got: Vec<TaskId> = all.iter().map(|r| r.task.id).collect();
            assert_eq!(got, sorted, "pages of {page}: every task once, in id order");
        }
    }
    // After the last id there is nothing.
    let last = sorted.last().copied();
    assert!(ok("task_export", export_page(h.store.as_ref(), last, 10).await).is_empty());
    // `after` need not be a stored id (this one is newer than all).
    let after = Some(TaskId::new());
    assert!(
        ok(
            "task_export",
            export_page(h.store.as_ref(), after, 10).await
        )
        .is_empty()
    );
}

/// A page size of 0 or above `MAX_EXPORT_PAGE` is `Invalid`.
pub async fn export_limit_out_of_range_is_invalid(h: &Harness) {
    h.insert_n("a", QUEUE, 2).await;
    for limit in [0, MAX_EXPORT_PAGE + 1, u32::MAX] {
        match export_page(h.store.as_ref(), None, limit).await {
            Err(StoreError::Invalid(_)) => {}
            other => panic!("export with limit {limit} should be Invalid, got {other:?}"),
        }
    }
    assert_eq!(
        ok(
            "task_export",
            export_page(h.store.as_ref(), None, MAX_EXPORT_PAGE).await
        )
        .len(),
        2
    );
}

/// Each exported record is the task as `task_get` returns it (a running
/// task with its lease token) and its history as `task_attempts` returns
/// it (a running task's current attempt last, `running`).
pub async fn export_records_match_get_and_attempts(h: &Harness) {
    let ids = every_status(h).await;
    let records = export_of(h, &ids).await;
    for record in &records {
        let id = record.task.id;
        assert_eq!(record.task, h.get(id).await, "export of {id} is the task");
        assert_eq!(
            record.attempts,
            h.attempts(id).await,
            "export of {id} carries its history"
        );
        if record.task.status == Status::Running {
            assert!(record.task.lease_token.is_some());
            assert_eq!(
                record.attempts.last().map(|a| a.outcome),
                Some(AttemptOutcome::Running)
            );
        }
    }
    let expected: HashSet<Status> = [
        Status::Pending,
        Status::Scheduled,
        Status::Running,
        Status::Success,
        Status::Failed,
        Status::Aborted,
    ]
    .into_iter()
    .collect();
    assert_eq!(statuses(&records), expected);
    let outcomes: HashSet<AttemptOutcome> = records
        .iter()
        .flat_map(|r| r.attempts.iter().map(|a| a.outcome))
        .collect();
    for outcome in [
        AttemptOutcome::Running,
        AttemptOutcome::Success,
        AttemptOutcome::Error,
        AttemptOutcome::Aborted,
        AttemptOutcome::Snoozed,
        AttemptOutcome::Released,
        AttemptOutcome::LeaseExpired,
    ] {
        assert!(
            outcomes.contains(&outcome),
            "no {outcome:?} attempt exported"
        );
    }
}

/// Records imported under fresh ids read back exactly as exported, in
/// every status and with every kind of history, through both handles.
pub async fn import_reproduces_every_status(h: &Harness) {
    let ids = every_status(h).await;
    let records = export_of(h, &ids).await;
    let copies: Vec<TaskRecord> = records.iter().map(under_fresh_id).collect();
    let n = copies.len() as u64;
    let result = ok(
        "task_import",
        import(h.store.as_ref(), copies.clone()).await,
    );
    assert_eq!(
        result,
        TaskImportResult {
            inserted: n,
            skipped: 0
        }
    );
    for copy in &copies {
        assert_holds(h.store.as_ref(), copy).await;
        assert_holds(h.second.as_ref(), copy).await;
    }
    // The originals are untouched.
    for record in &records {
        assert_eq!(h.get(record.task.id).await, record.task);
    }
    assert_eq!(h.count_all().await, 2 * n);
}

/// Records whose originals were deleted come back under their own ids.
pub async fn import_after_delete_restores_same_ids(h: &Harness) {
    let ids = every_status(h).await;
    let records = export_of(h, &ids).await;
    let waiting_or_done: Vec<TaskRecord> = records
        .into_iter()
        .filter(|r| r.task.status != Status::Running)
        .collect();
    for r in &waiting_or_done {
        ok(
            "task_delete",
            h.store
                .task_delete(&TaskDeleteParams {
                    id: r.task.id,
                    now: h.now(),
                })
                .await,
        );
        assert!(h.try_get(r.task.id).await.is_none());
    }
    let result = ok(
        "task_import",
        import(h.second.as_ref(), waiting_or_done.clone()).await,
    );
    assert_eq!(result.inserted, waiting_or_done.len() as u64);
    assert_eq!(result.skipped, 0);
    for r in &waiting_or_done {
        assert_holds(h.store.as_ref(), r).await;
    }
}

/// Importing the same records again skips every one and changes nothing
/// (a running task keeps the lease token of the first import); records
/// whose ids the store already held are skipped too, in a mixed batch.
pub async fn import_again_skips_and_changes_nothing(h: &Harness) {
    let ids = every_status(h).await;
    let records = export_of(h, &ids).await;
    let copies: Vec<TaskRecord> = records.iter().map(under_fresh_id).collect();
    let n = copies.len() as u64;
    ok(
        "task_import",
        import(h.store.as_ref(), copies.clone()).await,
    );
    let before = export_all(h.store.as_ref(), 1000).await;

    let again = ok(
        "task_import",
        import(h.store.as_ref(), copies.clone()).await,
    );
    assert_eq!(
        again,
        TaskImportResult {
            inserted: 0,
            skipped: n
        }
    );
    let originals = ok(
        "task_import",
        import(h.second.as_ref(), records.clone()).await,
    );
    assert_eq!(
        originals,
        TaskImportResult {
            inserted: 0,
            skipped: n
        }
    );
    assert_eq!(
        export_all(h.store.as_ref(), 1000).await,
        before,
        "a repeated import changes nothing"
    );

    // A batch of present and new records writes only the new ones.
    let fresh = under_fresh_id(&records[0]);
    let mixed = vec![copies[1].clone(), fresh.clone(), records[2].clone()];
    let result = ok("task_import", import(h.store.as_ref(), mixed).await);
    assert_eq!(
        result,
        TaskImportResult {
            inserted: 1,
            skipped: 2
        }
    );
    assert_holds(h.store.as_ref(), &fresh).await;
    assert_eq!(h.count_all().await, 2 * n + 1);
}

/// One invalid record (an empty name, a bad queue, metadata that is not
/// an object) fails the whole call with `Invalid`, and nothing is written.
pub async fn import_invalid_record_imports_nothing(h: &Harness) {
    let ids = every_status(h).await;
    let records = export_of(h, &ids).await;
    let count = h.count_all().await;
    let breakers: [fn(&mut Task); 3] = [
        |t| t.name = String::new(),
        |t| t.queue = "no spaces allowed".to_owned(),
        |t| t.metadata = json!([1, 2]),
    ];
    for (k, breaker) in breakers.iter().enumerate() {
        let mut batch: Vec<TaskRecord> = records.iter().map(under_fresh_id).collect();
        let bad = batch.len() / 2;
        breaker(&mut batch[bad].task);
        match import(h.store.as_ref(), batch.clone()).await {
            Err(StoreError::Invalid(_)) => {}
            other => {
                panic!("import with invalid record (case {k}) should be Invalid, got {other:?}")
            }
        }
        for r in &batch {
            assert!(
                h.try_get(r.task.id).await.is_none(),
                "nothing of a refused import is written (case {k})"
            );
        }
        assert_eq!(h.count_all().await, count);
    }
    // An empty import does nothing.
    assert_eq!(
        ok("task_import", import(h.store.as_ref(), Vec::new()).await),
        TaskImportResult::default()
    );
}

/// An imported running task keeps its lease expiry under a fresh token:
/// that token heartbeats and finishes it, and rescue takes it back to
/// work once the lease expires.
pub async fn import_running_task_gets_fresh_lease_and_keeps_expiry(h: &Harness) {
    let a = h.insert_and_claim("held", options(QUEUE)).await;
    let b = h.insert_and_claim("lapsing", options(QUEUE)).await;
    let records = export_of(h, &[a.id, b.id]).await;
    let copies: Vec<TaskRecord> = records.iter().map(under_fresh_id).collect();
    ok(
        "task_import",
        import(h.store.as_ref(), copies.clone()).await,
    );
    let held = h.get(copies[0].task.id).await;
    let lapsing = h.get(copies[1].task.id).await;
    assert_eq!(held.lease_expires_at, a.lease_expires_at);
    assert_eq!(lapsing.lease_expires_at, b.lease_expires_at);

    // The new token is live; the original's token does not hold the copy.
    h.advance(LEASE / 2);
    let stale = LeaseRef {
        id: held.id,
        lease_token: lease_of(&a).lease_token,
    };
    let states = h.heartbeat(&[lease_of(&held), stale]).await;
    assert!(states[0].live, "the imported lease is live");
    assert!(!states[1].live, "the source's token does not hold the copy");

    // Past the original expiry, only the copy that was not renewed is rescued.
    h.advance(LEASE / 2 + Duration::from_secs(1));
    let rescued: HashSet<TaskId> = h.rescue().await.into_iter().map(|r| r.id).collect();
    assert!(rescued.contains(&lapsing.id));
    assert!(!rescued.contains(&held.id), "a renewed copy is not rescued");
    let after = h.attempts(lapsing.id).await;
    assert_eq!(
        after.last().map(|x| x.outcome),
        Some(AttemptOutcome::LeaseExpired)
    );
    finish(h, &held, FinishOutcome::Success { output: json!(7) }).await;
    assert_eq!(h.get(held.id).await.status, Status::Success);
}

/// Imported tasks keep working: a pending copy is claimed as its next
/// attempt with its history kept, a failed copy can be retried, and the
/// history grows after the imported attempts.
pub async fn imported_tasks_continue_their_history(h: &Harness) {
    let ids = every_status(h).await;
    let records = export_of(h, &ids).await;
    let pick = |name: &str| match records.iter().find(|r| r.task.name == name) {
        Some(r) => under_fresh_id(r),
        None => panic!("no {name} task"),
    };
    let released = pick("released");
    let failed = pick("failed");
    let snoozed = pick("snoozed");
    ok(
        "task_import",
        import(
            h.store.as_ref(),
            vec![released.clone(), failed.clone(), snoozed.clone()],
        )
        .await,
    );
    // Park the original released task so the claim takes the copy.
    abort(h, pick_id(&records, "released"), "keep out of the way").await;

    // The released copy: claimed as the same attempt number it gave back.
    h.advance(Duration::from_secs(1));
    let t = claim_named(h, "released", "worker-copy").await;
    assert_eq!(t.id, released.task.id);
    assert_eq!(t.attempt, released.task.attempt + 1);
    let history = h.attempts(t.id).await;
    assert_eq!(history.len(), released.attempts.len() + 1);
    assert_eq!(history[..released.attempts.len()], released.attempts[..]);
    assert_eq!(
        history.last().map(|a| a.outcome),
        Some(AttemptOutcome::Running)
    );
    finish(
        h,
        &t,
        FinishOutcome::Success {
            output: json!("ok"),
        },
    )
    .await;
    let history = h.attempts(t.id).await;
    assert_eq!(history[..released.attempts.len()], released.attempts[..]);
    assert_eq!(
        history.last().map(|a| a.outcome),
        Some(AttemptOutcome::Success)
    );

    // The failed copy: retried by hand, its history kept.
    let retried = ok(
        "task_retry",
        h.store
            .task_retry(&TaskRetryParams {
                id: failed.task.id,
                now: h.now(),
            })
            .await,
    );
    assert_eq!(retried.status, Status::Pending);
    assert_eq!(h.attempts(failed.task.id).await, failed.attempts);

    // The snoozed copy: aborted while waiting, its history kept.
    abort(h, snoozed.task.id, "not needed").await;
    let history = h.attempts(snoozed.task.id).await;
    assert_eq!(history, snoozed.attempts);
}

fn pick_id(records: &[TaskRecord], name: &str) -> TaskId {
    match records.iter().find(|r| r.task.name == name) {
        Some(r) => r.task.id,
        None => panic!("no {name} task"),
    }
}

/// An import of ready tasks is followed by `Available` for their queue.
pub async fn import_notifies_available(h: &Harness) {
    let id = h
        .insert_one(NewTask::new("ready", json!(1)).options(TaskOptions::new().queue("importq")))
        .await;
    let records = export_of(h, &[id]).await;
    let mut rx = h.store.notifier().subscribe();
    ok(
        "task_import",
        import(h.store.as_ref(), vec![under_fresh_id(&records[0])]).await,
    );
    let deadline = Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => panic!("no Available notification after an import"),
            Ok(Ok(Notification::Available { queue }))
                if queue.as_deref().is_none_or(|q| q == "importq") =>
            {
                return;
            }
            Ok(Ok(_) | Err(RecvError::Lagged(_))) => {}
            Ok(Err(RecvError::Closed)) => panic!("the notifier closed"),
        }
    }
}

/// Export and import keep `depends_on`, `after`, `group_id` and
/// `unique_key`. Imported into a store without them, the dependency
/// edges are rebuilt: the blocked tasks stay blocked until their
/// dependency (imported too) succeeds, and the unique key holds.
pub async fn import_keeps_flow_fields_and_blocked_waits_for_dependency(h: &Harness) {
    let q = "flow";
    let dep = NewTask::new("flow_dep", json!(1)).options(options(q));
    let callback = NewTask::new("flow_callback", json!(3));
    let group = callback.id;
    let mut member = NewTask::new("flow_member", json!(2))
        .options(options(q).depends_on(dep.id).unique_key("flow-key"));
    member.group_id = Some(group);
    let mut callback = callback.options(options(q));
    callback.group_id = Some(group);
    callback.after = vec![dep.id, member.id];
    let ids = h.insert(vec![dep, member, callback]).await;
    let (dep, member, callback) = (ids[0], ids[1], ids[2]);

    let records = export_of(h, &ids).await;
    let m = &records[1].task;
    assert_eq!(m.status, Status::Blocked);
    assert_eq!(m.depends_on, vec![dep]);
    assert_eq!(m.group_id, Some(group));
    assert_eq!(m.unique_key.as_deref(), Some("flow-key"));
    let c = &records[2].task;
    assert_eq!(c.status, Status::Blocked);
    assert_eq!(c.after, vec![dep, member]);
    assert_eq!(c.group_id, Some(group));

    // Dependents first, so deleting the dependency aborts nothing.
    for id in [callback, member, dep] {
        ok(
            "task_delete",
            h.store
                .task_delete(&TaskDeleteParams { id, now: h.now() })
                .await,
        );
    }
    assert_eq!(h.count_all().await, 0);
    let result = ok(
        "task_import",
        import(h.second.as_ref(), records.clone()).await,
    );
    assert_eq!(result.inserted, 3);
    for r in &records {
        assert_holds(h.store.as_ref(), r).await;
    }

    let again =
        NewTask::new("flow_member", json!("again")).options(options(q).unique_key("flow-key"));
    assert_eq!(
        h.enqueue(vec![again]).await,
        vec![offload_types::Enqueued {
            id: member,
            outcome: offload_types::EnqueueOutcome::Existing
        }],
        "the imported task holds its unique key"
    );

    let mut claimed = h.claim(q, 10).await;
    assert_eq!(
        claimed.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![dep],
        "the imported blocked tasks are not claimed"
    );
    let dep_task = claimed.remove(0);
    h.advance(Duration::from_secs(1));
    finish(h, &dep_task, FinishOutcome::Success { output: json!(1) }).await;
    assert_eq!(h.get(member).await.status, Status::Pending);
    assert_eq!(
        h.get(callback).await.status,
        Status::Blocked,
        "the callback still waits for the member"
    );
    let member_task = h.claim_one_from(q, member).await;
    finish(h, &member_task, FinishOutcome::Success { output: json!(2) }).await;
    assert_eq!(h.get(callback).await.status, Status::Pending);
}
