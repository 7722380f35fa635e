//! Cases for notifications: after a commit the store's `Notifier` emits
//! `Available` for new, retried and released work, `Changed` for tasks
//! that finished, were aborted, updated or made progress, and
//! `AbortRequested` for running tasks asked to stop — and, when the backend
//! says `cross_process_notify`, also for changes made through the other
//! handle. Waits use real time with a deadline (the events are real); the
//! task clock stays manual.

use std::time::Duration;

use offload_store::{
    FinishOutcome, Notification, ProgressUpdate, TaskAbortParams, TaskClaimParams, TaskFinish,
    TaskFinishParams, TaskInsertParams, TaskProgressParams, TaskRetryParams, TaskUpdateParams,
};
use offload_types::{NewTask, Progress, TaskId, TaskOptions};
use serde_json::json;
use tokio::sync::broadcast::{Receiver, error::RecvError};
use tokio::time::Instant;

use crate::harness::ok;
use crate::{Harness, LEASE, WORKER, lease_of};

/// How long a case waits for a notification before failing.
const WAIT: Duration = Duration::from_secs(5);

/// Waits until a notification matching `wanted` arrives, for at most
/// `within`. Returns whether one did.
async fn arrives(
    rx: &mut Receiver<Notification>,
    within: Duration,
    wanted: impl Fn(&Notification) -> bool,
) -> bool {
    let deadline = Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => return false,
            Ok(Ok(n)) if wanted(&n) => return true,
            // Other hints, or a lag (hints are lossy by design): keep waiting.
            Ok(Ok(_) | Err(RecvError::Lagged(_))) => {}
            Ok(Err(RecvError::Closed)) => return false,
        }
    }
}

fn available_in(queue: &str) -> impl Fn(&Notification) -> bool + '_ {
    move |n| match n {
        Notification::Available { queue: q } => q.as_deref().is_none_or(|q| q == queue),
        _ => false,
    }
}

fn changed(id: TaskId) -> impl Fn(&Notification) -> bool {
    move |n| matches!(n, Notification::Changed { .. }) && n.concerns(id)
}

fn abort_requested(id: TaskId) -> impl Fn(&Notification) -> bool {
    move |n| matches!(n, Notification::AbortRequested { ids } if ids.contains(&id))
}

/// An insert is followed by `Available` for its queue.
pub async fn insert_notifies_available(h: &Harness) {
    let mut rx = h.store.notifier().subscribe();
    h.insert_n("job", "mailq", 2).await;
    assert!(
        arrives(&mut rx, WAIT, available_in("mailq")).await,
        "no Available notification after an insert"
    );
}

/// A finish is followed by `Changed` concerning the task.
pub async fn finish_notifies_changed(h: &Harness) {
    let t = h.insert_and_claim("job", TaskOptions::new()).await;
    let mut rx = h.store.notifier().subscribe();
    let answer = h
        .finish(lease_of(&t), FinishOutcome::Success { output: json!(1) })
        .await;
    assert!(answer.accepted);
    assert!(
        arrives(&mut rx, WAIT, changed(t.id)).await,
        "no Changed notification after a finish"
    );
}

/// Aborting a running task is followed by `AbortRequested` naming it.
pub async fn abort_running_notifies_abort_requested(h: &Harness) {
    let t = h.insert_and_claim("job", TaskOptions::new()).await;
    let mut rx = h.store.notifier().subscribe();
    let params = TaskAbortParams {
        id: t.id,
        reason: Some("stop".to_owned()),
        now: h.now(),
    };
    ok("task_abort", h.store.task_abort(&params).await);
    assert!(
        arrives(&mut rx, WAIT, abort_requested(t.id)).await,
        "no AbortRequested notification after aborting a running task"
    );
}

/// Update, abort of a waiting task and progress notify `Changed`; a manual
/// retry and a release notify `Available`.
pub async fn management_notifies(h: &Harness) {
    let waiting = h
        .insert_one(NewTask::new("job", json!(null)).options(TaskOptions::new().queue("side")))
        .await;
    let mut rx = h.store.notifier().subscribe();
    let params = TaskUpdateParams {
        id: waiting,
        priority: Some(4),
        now: h.now(),
        ..TaskUpdateParams::default()
    };
    ok("task_update", h.store.task_update(&params).await);
    assert!(
        arrives(&mut rx, WAIT, changed(waiting)).await,
        "no Changed after update"
    );

    let params = TaskAbortParams {
        id: waiting,
        reason: None,
        now: h.now(),
    };
    ok("task_abort", h.store.task_abort(&params).await);
    assert!(
        arrives(&mut rx, WAIT, changed(waiting)).await,
        "no Changed after aborting a waiting task"
    );

    let params = TaskRetryParams {
        id: waiting,
        now: h.now(),
    };
    ok("task_retry", h.store.task_retry(&params).await);
    assert!(
        arrives(&mut rx, WAIT, available_in("side")).await,
        "no Available after a manual retry"
    );

    let running = h.insert_and_claim("job", TaskOptions::new()).await;
    let mut rx = h.store.notifier().subscribe();
    let params = TaskProgressParams {
        updates: vec![ProgressUpdate {
            lease: lease_of(&running),
            progress: Progress::new(30, None),
        }],
        now: h.now(),
    };
    ok(
        "task_progress_many",
        h.store.task_progress_many(&params).await,
    );
    assert!(
        arrives(&mut rx, WAIT, changed(running.id)).await,
        "no Changed after progress"
    );

    h.finish(lease_of(&running), FinishOutcome::Release).await;
    assert!(
        arrives(&mut rx, WAIT, available_in(offload_types::DEFAULT_QUEUE)).await,
        "no Available after a release"
    );
}

/// With `cross_process_notify`, changes made through the second handle
/// reach subscribers of the first.
pub async fn notifications_cross_handles(h: &Harness) {
    if !h.store.capabilities().cross_process_notify {
        return;
    }
    let mut rx = h.store.notifier().subscribe();
    // The subscription may take a moment to reach other processes; until
    // the first hint arrives, repeat the insert (bounded by the deadline).
    let deadline = Instant::now() + WAIT;
    let mut inserted = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "no Available from the other handle within {WAIT:?}"
        );
        let params = TaskInsertParams {
            tasks: vec![
                NewTask::new("job", json!(null)).options(TaskOptions::new().queue("cross")),
            ],
            now: h.now(),
        };
        inserted.extend(
            ok(
                "task_insert_many on second",
                h.second.task_insert_many(&params).await,
            )
            .into_iter()
            .map(|e| e.id),
        );
        if arrives(&mut rx, Duration::from_millis(250), available_in("cross")).await {
            break;
        }
    }

    let params = TaskClaimParams {
        queue: "cross".to_owned(),
        names: None,
        limit: 1,
        worker_id: WORKER.to_owned(),
        lease: LEASE,
        now: h.now(),
    };
    let claimed = ok("task_claim on second", h.second.task_claim(&params).await);
    assert_eq!(claimed.len(), 1);
    let first = &claimed[0];
    let params = TaskAbortParams {
        id: first.id,
        reason: None,
        now: h.now(),
    };
    ok("task_abort on second", h.second.task_abort(&params).await);
    assert!(
        arrives(&mut rx, WAIT, abort_requested(first.id)).await,
        "no AbortRequested from the other handle"
    );
    let params = TaskFinishParams {
        items: vec![TaskFinish {
            lease: lease_of(first),
            outcome: FinishOutcome::Abort {
                error: h.error("aborted", "stop", 1),
            },
        }],
        now: h.now(),
    };
    let answers = ok(
        "task_finish_many on second",
        h.second.task_finish_many(&params).await,
    );
    assert!(answers[0].accepted);
    assert!(
        arrives(&mut rx, WAIT, changed(first.id)).await,
        "no Changed from the other handle"
    );
}
