//! Cases for `task_finish_many`: each outcome's status, timestamps, error
//! and attempt row; snooze and release not counting the attempt; and the
//! per-item fencing of a batch that mixes live and stale leases.

use std::time::Duration;

use offload_store::{FinishOutcome, LeaseRef};
use offload_types::{AttemptOutcome, DEFAULT_QUEUE, LeaseToken, Status, TaskId, TaskOptions};
use serde_json::json;

use crate::{Harness, lease_of};

/// `Success` stores the output, sets `finished_at`, clears the lease and
/// closes the attempt row as `success`.
pub async fn finish_success(h: &Harness) {
    let t = h.insert_and_claim("job", TaskOptions::new()).await;
    h.advance(Duration::from_secs(2));
    let answer = h
        .finish(
            lease_of(&t),
            FinishOutcome::Success {
                output: json!({"ok": true, "rows": [1, 2]}),
            },
        )
        .await;
    assert_eq!(answer.id, t.id);
    assert!(answer.accepted);
    assert_eq!(answer.status, Some(Status::Success));
    let done = h.get(t.id).await;
    assert_eq!(done.status, Status::Success);
    assert_eq!(done.output, Some(json!({"ok": true, "rows": [1, 2]})));
    assert_eq!(done.finished_at, Some(h.now()));
    assert_eq!(done.updated_at, h.now());
    assert_eq!(done.started_at, t.started_at);
    assert_eq!(done.attempt, 1);
    assert_eq!(done.error, None);
    assert_eq!(done.lease_token, None);
    assert_eq!(done.lease_expires_at, None);
    let history = h.attempts(t.id).await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].attempt, 1);
    assert_eq!(history[0].outcome, AttemptOutcome::Success);
    assert_eq!(history[0].finished_at, Some(h.now()));
    assert_eq!(history[0].error, None);
    assert!(h.claim(DEFAULT_QUEUE, 10).await.is_empty());
}

/// `Retry` with a future `run_at` makes the task `scheduled`, keeps the
/// error, counts the attempt; it is claimed again once `run_at` comes, as
/// attempt 2.
pub async fn finish_retry_schedules_next_attempt(h: &Harness) {
    let t = h
        .insert_and_claim("flaky", TaskOptions::new().max_attempts(3))
        .await;
    let error = h.error("error", "upstream returned 503", 1);
    let run_at = h.later(Duration::from_secs(60));
    let answer = h
        .finish(
            lease_of(&t),
            FinishOutcome::Retry {
                error: error.clone(),
                run_at,
            },
        )
        .await;
    assert!(answer.accepted);
    assert_eq!(answer.status, Some(Status::Scheduled));
    let waiting = h.get(t.id).await;
    assert_eq!(waiting.status, Status::Scheduled);
    assert_eq!(waiting.run_at, run_at);
    assert_eq!(waiting.error, Some(error.clone()));
    assert_eq!(waiting.attempt, 1, "the failed attempt counts");
    assert_eq!(waiting.finished_at, None);
    assert_eq!(waiting.lease_token, None);
    assert_eq!(waiting.lease_expires_at, None);
    let history = h.attempts(t.id).await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].outcome, AttemptOutcome::Error);
    assert_eq!(history[0].error, Some(error.clone()));
    assert_eq!(history[0].finished_at, Some(h.now()));

    assert!(
        h.claim(DEFAULT_QUEUE, 10).await.is_empty(),
        "not before run_at"
    );
    h.advance(Duration::from_secs(60));
    let again = h.claim_one(t.id).await;
    assert_eq!(again.attempt, 2);
    assert_ne!(again.lease_token, t.lease_token);
    let history = h.attempts(t.id).await;
    assert_eq!(
        history
            .iter()
            .map(|a| (a.attempt, a.outcome))
            .collect::<Vec<_>>(),
        vec![(1, AttemptOutcome::Error), (2, AttemptOutcome::Running)]
    );
    assert_eq!(
        history[0].error,
        Some(error),
        "history keeps the first error"
    );
}

/// `Retry` with `run_at <= now` makes the task `pending` at once.
pub async fn finish_retry_due_now_is_pending(h: &Harness) {
    let t = h.insert_and_claim("flaky", TaskOptions::new()).await;
    let answer = h
        .finish(
            lease_of(&t),
            FinishOutcome::Retry {
                error: h.error("timeout", "took too long", 1),
                run_at: h.now(),
            },
        )
        .await;
    assert!(answer.accepted);
    assert_eq!(answer.status, Some(Status::Pending));
    assert_eq!(h.get(t.id).await.status, Status::Pending);
    let again = h.claim_one(t.id).await;
    assert_eq!(again.attempt, 2);
}

/// `Fail` makes the task `failed` with its error and `finished_at`.
pub async fn finish_fail(h: &Harness) {
    let t = h.insert_and_claim("doomed", TaskOptions::new()).await;
    let error = h.error("validation", "invalid email address", 1);
    let answer = h
        .finish(
            lease_of(&t),
            FinishOutcome::Fail {
                error: error.clone(),
            },
        )
        .await;
    assert!(answer.accepted);
    assert_eq!(answer.status, Some(Status::Failed));
    let done = h.get(t.id).await;
    assert_eq!(done.status, Status::Failed);
    assert_eq!(done.error, Some(error.clone()));
    assert_eq!(done.finished_at, Some(h.now()));
    assert_eq!(done.output, None);
    assert_eq!(done.lease_token, None);
    let history = h.attempts(t.id).await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].outcome, AttemptOutcome::Error);
    assert_eq!(history[0].error, Some(error));
    assert!(h.claim(DEFAULT_QUEUE, 10).await.is_empty());
}

/// `Abort` makes the task `aborted` with its error and `finished_at`.
pub async fn finish_abort(h: &Harness) {
    let t = h.insert_and_claim("stopped", TaskOptions::new()).await;
    let error = h.error("aborted", "cancelled by user", 1);
    let answer = h
        .finish(
            lease_of(&t),
            FinishOutcome::Abort {
                error: error.clone(),
            },
        )
        .await;
    assert!(answer.accepted);
    assert_eq!(answer.status, Some(Status::Aborted));
    let done = h.get(t.id).await;
    assert_eq!(done.status, Status::Aborted);
    assert_eq!(done.error, Some(error));
    assert_eq!(done.finished_at, Some(h.now()));
    assert_eq!(done.lease_token, None);
    let history = h.attempts(t.id).await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].outcome, AttemptOutcome::Aborted);
    assert!(h.claim(DEFAULT_QUEUE, 10).await.is_empty());
}

/// `Snooze` makes the task `scheduled` at `run_at` and gives the attempt
/// back: `attempt` returns to its value before the claim.
pub async fn finish_snooze_does_not_count_attempt(h: &Harness) {
    let t = h.insert_and_claim("patient", TaskOptions::new()).await;
    // A first, counted attempt, so "not counted" is visible as 2 → 1.
    let retry = FinishOutcome::Retry {
        error: h.error("error", "first try failed", 1),
        run_at: h.now(),
    };
    assert!(h.finish(lease_of(&t), retry).await.accepted);
    let second = h.claim_one(t.id).await;
    assert_eq!(second.attempt, 2);

    let run_at = h.later(Duration::from_secs(30));
    let answer = h
        .finish(lease_of(&second), FinishOutcome::Snooze { run_at })
        .await;
    assert!(answer.accepted);
    assert_eq!(answer.status, Some(Status::Scheduled));
    let snoozed = h.get(t.id).await;
    assert_eq!(snoozed.status, Status::Scheduled);
    assert_eq!(snoozed.run_at, run_at);
    assert_eq!(snoozed.attempt, 1, "a snoozed attempt is not counted");
    assert_eq!(snoozed.finished_at, None);
    assert_eq!(snoozed.lease_token, None);

    assert!(h.claim(DEFAULT_QUEUE, 10).await.is_empty());
    h.advance(Duration::from_secs(30));
    let third = h.claim_one(t.id).await;
    assert_eq!(
        third.attempt, 2,
        "the snoozed attempt runs again as attempt 2"
    );
    let history = h.attempts(t.id).await;
    assert_eq!(
        history
            .iter()
            .map(|a| (a.attempt, a.outcome))
            .collect::<Vec<_>>(),
        vec![
            (1, AttemptOutcome::Error),
            (2, AttemptOutcome::Snoozed),
            (2, AttemptOutcome::Running)
        ]
    );
}

/// `Release` puts the task back to `pending` at once without counting the
/// attempt (graceful shutdown).
pub async fn finish_release_does_not_count_attempt(h: &Harness) {
    let t = h.insert_and_claim("interrupted", TaskOptions::new()).await;
    let answer = h.finish(lease_of(&t), FinishOutcome::Release).await;
    assert!(answer.accepted);
    assert_eq!(answer.status, Some(Status::Pending));
    let released = h.get(t.id).await;
    assert_eq!(released.status, Status::Pending);
    assert_eq!(released.attempt, 0, "a released attempt is not counted");
    assert_eq!(released.lease_token, None);
    assert_eq!(released.lease_expires_at, None);
    assert_eq!(released.finished_at, None);
    let again = h.claim_one(t.id).await;
    assert_eq!(again.attempt, 1);
    let history = h.attempts(t.id).await;
    assert_eq!(
        history
            .iter()
            .map(|a| (a.attempt, a.outcome))
            .collect::<Vec<_>>(),
        vec![(1, AttemptOutcome::Released), (1, AttemptOutcome::Running)]
    );
}

/// In one batch, live leases are applied and stale ones answered
/// `accepted: false` with nothing written for them; answers come in order.
pub async fn finish_batch_fences_stale_items(h: &Harness) {
    let a = h.insert_and_claim("a", TaskOptions::new()).await;
    let b = h.insert_and_claim("b", TaskOptions::new()).await;
    let c = h.insert_and_claim("c", TaskOptions::new()).await;
    let wrong_b = LeaseRef {
        id: b.id,
        lease_token: LeaseToken::new(),
    };
    let unknown = LeaseRef {
        id: TaskId::new(),
        lease_token: LeaseToken::new(),
    };
    let answers = h
        .finish_many(vec![
            (lease_of(&a), FinishOutcome::Success { output: json!("a") }),
            (wrong_b, FinishOutcome::Success { output: json!("b") }),
            (
                lease_of(&c),
                FinishOutcome::Fail {
                    error: h.error("error", "c broke", 1),
                },
            ),
            (unknown, FinishOutcome::Success { output: json!("?") }),
        ])
        .await;
    assert_eq!(
        answers
            .iter()
            .map(|r| (r.id, r.accepted, r.status))
            .collect::<Vec<_>>(),
        vec![
            (a.id, true, Some(Status::Success)),
            (b.id, false, Some(Status::Running)),
            (c.id, true, Some(Status::Failed)),
            (unknown.id, false, None),
        ]
    );
    assert_eq!(h.get(a.id).await.output, Some(json!("a")));
    assert_eq!(h.get(b.id).await, b, "nothing written for the stale item");
    assert_eq!(h.get(c.id).await.status, Status::Failed);
    assert_eq!(h.try_get(unknown.id).await, None);
    // b's real lease still works.
    let late = h
        .finish(lease_of(&b), FinishOutcome::Success { output: json!("b") })
        .await;
    assert!(late.accepted);
}

/// A lease is spent by its finish: finishing again with it is refused and
/// changes nothing.
pub async fn finish_twice_is_refused(h: &Harness) {
    let t = h.insert_and_claim("once", TaskOptions::new()).await;
    let lease = lease_of(&t);
    assert!(
        h.finish(lease, FinishOutcome::Success { output: json!(1) })
            .await
            .accepted
    );
    let done = h.get(t.id).await;
    h.advance(Duration::from_secs(1));
    for outcome in [
        FinishOutcome::Success { output: json!(2) },
        FinishOutcome::Release,
        FinishOutcome::Fail {
            error: h.error("error", "late", 1),
        },
    ] {
        let answer = h.finish(lease, outcome).await;
        assert!(!answer.accepted);
        assert_eq!(answer.status, Some(Status::Success));
    }
    assert_eq!(h.get(t.id).await, done);
    assert_eq!(h.attempts(t.id).await.len(), 1);
}

/// Hundreds of leases in one heartbeat, one progress call and one finish
/// call: one answer per item, in the order given, each applied.
pub async fn finish_large_batch_in_order(h: &Harness) {
    const N: usize = 600;
    h.insert_n("bulk", DEFAULT_QUEUE, N).await;
    let mut running = h.claim(DEFAULT_QUEUE, 400).await;
    running.extend(h.claim(DEFAULT_QUEUE, 400).await);
    assert_eq!(running.len(), N);
    // Not in id order, so "in order" means the caller's order.
    running.reverse();
    let leases: Vec<LeaseRef> = running.iter().map(lease_of).collect();
    let ids: Vec<TaskId> = leases.iter().map(|l| l.id).collect();

    h.advance(Duration::from_secs(1));
    let beats = h.heartbeat(&leases).await;
    assert_eq!(beats.iter().map(|s| s.id).collect::<Vec<_>>(), ids);
    assert!(beats.iter().all(|s| s.live && !s.abort_requested));

    let params = offload_store::TaskProgressParams {
        updates: leases
            .iter()
            .map(|&lease| offload_store::ProgressUpdate {
                lease,
                progress: offload_types::Progress::new(50, None),
            })
            .collect(),
        now: h.now(),
    };
    let answers = crate::harness::ok(
        "task_progress_many",
        h.store.task_progress_many(&params).await,
    );
    assert_eq!(answers.iter().map(|s| s.id).collect::<Vec<_>>(), ids);
    assert!(answers.iter().all(|s| s.live));

    let items = leases
        .iter()
        .enumerate()
        .map(|(i, &lease)| {
            let outcome = if i % 2 == 0 {
                FinishOutcome::Success { output: json!(i) }
            } else {
                FinishOutcome::Retry {
                    error: h.error("error", "odd one", 1),
                    run_at: h.later(Duration::from_secs(60)),
                }
            };
            (lease, outcome)
        })
        .collect();
    let answers = h.finish_many(items).await;
    assert_eq!(answers.iter().map(|r| r.id).collect::<Vec<_>>(), ids);
    for (i, answer) in answers.iter().enumerate() {
        let want = if i % 2 == 0 {
            Status::Success
        } else {
            Status::Scheduled
        };
        assert!(answer.accepted, "item {i}");
        assert_eq!(answer.status, Some(want), "item {i}");
    }
    assert_eq!(h.get(ids[0]).await.output, Some(json!(0)));
    assert_eq!(h.get(ids[N - 2]).await.output, Some(json!(N - 2)));
    assert_eq!(h.get(ids[N - 1]).await.status, Status::Scheduled);
}
