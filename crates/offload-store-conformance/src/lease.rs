//! Cases for leases: heartbeats renew them, fencing refuses every write
//! made with a token that is no longer live, rescue puts expired tasks back
//! to work (or fails or aborts them) and never touches a task whose worker
//! heartbeats, abort requests reach the worker, progress needs a live lease.

use std::time::Duration;

use offload_store::{
    FinishOutcome, LeaseRef, ProgressUpdate, TaskAbortParams, TaskHeartbeatParams,
    TaskProgressParams, TaskRescueParams,
};
use offload_types::{
    AttemptOutcome, DEFAULT_QUEUE, LeaseToken, Progress, Status, TaskId, TaskOptions,
};
use serde_json::json;

use crate::harness::{ok, span};
use crate::{Harness, LEASE, lease_of};

/// A bit more than one lease.
const PAST_LEASE: Duration = Duration::from_secs(LEASE.as_secs() + 1);

async fn progress(h: &Harness, lease: LeaseRef, percent: u8, message: &str) -> bool {
    let params = TaskProgressParams {
        updates: vec![ProgressUpdate {
            lease,
            progress: Progress::new(percent, Some(message.to_owned())),
        }],
        now: h.now(),
    };
    let answers = ok(
        "task_progress_many",
        h.store.task_progress_many(&params).await,
    );
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].id, lease.id);
    answers[0].live
}

/// A heartbeat moves `lease_expires_at` to `now + lease`, so the task is
/// not rescued at its first expiry.
pub async fn heartbeat_renews_lease(h: &Harness) {
    let a = h.insert_and_claim("a", TaskOptions::new()).await;
    let b = h.insert_and_claim("b", TaskOptions::new()).await;
    h.advance(Duration::from_secs(20));
    let answers = h.heartbeat(&[lease_of(&b), lease_of(&a)]).await;
    assert_eq!(
        answers
            .iter()
            .map(|s| (s.id, s.live, s.abort_requested))
            .collect::<Vec<_>>(),
        vec![(b.id, true, false), (a.id, true, false)],
        "one answer per lease, in order"
    );
    let renewed = h.get(a.id).await;
    assert_eq!(renewed.lease_expires_at, Some(h.later(LEASE)));
    assert_eq!(
        renewed.lease_token, a.lease_token,
        "a heartbeat keeps the token"
    );
    assert_eq!(renewed.status, Status::Running);

    h.advance(Duration::from_secs(20)); // 40 s after the claim, 20 s after the heartbeat
    assert!(
        h.rescue().await.is_empty(),
        "renewed leases are not expired"
    );
    // The other handle renews too.
    let params = TaskHeartbeatParams {
        leases: vec![lease_of(&a)],
        lease: Duration::from_secs(100),
        now: h.now(),
    };
    let answers = ok(
        "heartbeat on second",
        h.second.task_heartbeat_many(&params).await,
    );
    assert!(answers[0].live);
    assert_eq!(
        h.get(a.id).await.lease_expires_at,
        Some(h.later(Duration::from_secs(100)))
    );
}

/// After a lease expires and the task is rescued and claimed again, the
/// old token's heartbeat, progress and finish are all refused and change
/// nothing; the newer attempt's result stands.
pub async fn stale_lease_is_fenced_after_rescue(h: &Harness) {
    let first = h
        .insert_and_claim("fenced", TaskOptions::new().max_attempts(3))
        .await;
    let old = lease_of(&first);
    h.advance(PAST_LEASE);
    let rescued = h.rescue().await;
    assert_eq!(rescued.len(), 1);
    assert_eq!(
        (rescued[0].id, rescued[0].status),
        (first.id, Status::Pending)
    );
    let after_rescue = h.get(first.id).await;
    assert_eq!(after_rescue.lease_token, None);

    let beat = h.heartbeat(&[old]).await;
    assert!(!beat[0].live, "the rescued attempt's heartbeat is not live");
    assert_eq!(
        h.get(first.id).await,
        after_rescue,
        "a stale heartbeat writes nothing"
    );

    let second = h.claim_one(first.id).await;
    assert_eq!(second.attempt, 2);
    let new = lease_of(&second);
    assert_ne!(new.lease_token, old.lease_token);

    assert!(!h.heartbeat(&[old]).await[0].live);
    assert!(
        !progress(h, old, 99, "stale").await,
        "stale progress refused"
    );
    let stale = h
        .finish(
            old,
            FinishOutcome::Success {
                output: json!("stale"),
            },
        )
        .await;
    assert_eq!(stale.id, first.id);
    assert!(!stale.accepted, "a stale finish is refused");
    assert_eq!(stale.status, Some(Status::Running));
    let stale_fail = h
        .finish(
            old,
            FinishOutcome::Fail {
                error: h.error("error", "late failure", 1),
            },
        )
        .await;
    assert!(!stale_fail.accepted);
    assert_eq!(
        h.get(first.id).await,
        second,
        "stale heartbeat, progress and finishes changed nothing"
    );

    let fresh = h
        .finish(
            new,
            FinishOutcome::Success {
                output: json!("fresh"),
            },
        )
        .await;
    assert!(fresh.accepted);
    assert_eq!(fresh.status, Some(Status::Success));
    // A stale result arriving after the newer one still changes nothing,
    // through either handle.
    let late = h
        .finish(
            old,
            FinishOutcome::Success {
                output: json!("stale"),
            },
        )
        .await;
    assert!(!late.accepted);
    let done = h.get(first.id).await;
    let late_params = offload_store::TaskFinishParams {
        items: vec![offload_store::TaskFinish {
            lease: old,
            outcome: FinishOutcome::Success {
                output: json!("stale"),
            },
        }],
        now: h.now(),
    };
    let answers = ok(
        "finish on second",
        h.second.task_finish_many(&late_params).await,
    );
    assert!(!answers[0].accepted);
    let t = h.get(first.id).await;
    assert_eq!(t, done);
    assert_eq!(t.status, Status::Success);
    assert_eq!(t.output, Some(json!("fresh")));

    let history = h.attempts(first.id).await;
    assert_eq!(
        history
            .iter()
            .map(|a| (a.attempt, a.outcome))
            .collect::<Vec<_>>(),
        vec![
            (1, AttemptOutcome::LeaseExpired),
            (2, AttemptOutcome::Success)
        ]
    );
}

/// A task heartbeated every half lease for three lease periods is never
/// rescued; once the heartbeats stop, it is.
pub async fn heartbeating_task_is_never_rescued(h: &Harness) {
    let t = h.insert_and_claim("long", TaskOptions::new()).await;
    let lease = lease_of(&t);
    for step in 0..6 {
        h.advance(LEASE / 2);
        assert!(
            h.rescue().await.is_empty(),
            "rescued before heartbeat {step}"
        );
        assert!(h.heartbeat(&[lease]).await[0].live, "heartbeat {step}");
        assert!(
            h.rescue().await.is_empty(),
            "rescued after heartbeat {step}"
        );
    }
    let still = h.get(t.id).await;
    assert_eq!(still.status, Status::Running);
    assert_eq!(still.attempt, 1);
    assert_eq!(still.lease_token, t.lease_token);
    assert_eq!(h.attempts(t.id).await.len(), 1);

    h.advance(PAST_LEASE);
    assert_eq!(
        h.rescue().await.len(),
        1,
        "without heartbeats it is rescued"
    );
}

/// Rescue takes only leases that expired strictly before `now`.
pub async fn rescue_only_after_expiry(h: &Harness) {
    let t = h.insert_and_claim("job", TaskOptions::new()).await;
    h.advance(LEASE - Duration::from_secs(1));
    assert!(h.rescue().await.is_empty());
    h.advance(Duration::from_secs(1));
    assert_eq!(h.get(t.id).await.lease_expires_at, Some(h.now()));
    assert!(
        h.rescue().await.is_empty(),
        "a lease expiring exactly now is not yet expired"
    );
    h.advance(Duration::from_millis(1));
    assert_eq!(h.rescue().await.len(), 1);
    assert!(
        h.rescue().await.is_empty(),
        "a rescued task is not rescued again"
    );
}

/// An expired task with attempts left goes back to `pending`, the attempt
/// counted and its row closed as `lease_expired`; it can be claimed again.
pub async fn rescue_with_attempts_left_returns_to_pending(h: &Harness) {
    let t = h
        .insert_and_claim("job", TaskOptions::new().max_attempts(2))
        .await;
    h.advance(PAST_LEASE);
    let rescued = h.rescue().await;
    assert_eq!(
        rescued.iter().map(|r| (r.id, r.status)).collect::<Vec<_>>(),
        vec![(t.id, Status::Pending)]
    );
    let after = h.get(t.id).await;
    assert_eq!(after.status, Status::Pending);
    assert_eq!(after.attempt, 1, "the expired attempt counts");
    assert_eq!(after.lease_token, None);
    assert_eq!(after.lease_expires_at, None);
    assert_eq!(after.finished_at, None);
    let history = h.attempts(t.id).await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].outcome, AttemptOutcome::LeaseExpired);
    assert_eq!(history[0].finished_at, Some(h.now()));
    if let Some(e) = &history[0].error {
        assert_eq!(e.kind, "lease_expired");
    }

    let again = h.claim_one(t.id).await;
    assert_eq!(again.attempt, 2);
    h.advance(PAST_LEASE);
    let rescued = h.rescue().await;
    assert_eq!(
        rescued.iter().map(|r| (r.id, r.status)).collect::<Vec<_>>(),
        vec![(t.id, Status::Failed)],
        "the second expiry uses up the last attempt"
    );
}

/// An expired task with no attempt left fails with error kind `lease_expired`.
pub async fn rescue_without_attempts_left_fails(h: &Harness) {
    let t = h
        .insert_and_claim("job", TaskOptions::new().max_attempts(1))
        .await;
    h.advance(PAST_LEASE);
    let rescued = h.rescue().await;
    assert_eq!(
        rescued.iter().map(|r| (r.id, r.status)).collect::<Vec<_>>(),
        vec![(t.id, Status::Failed)]
    );
    let after = h.get(t.id).await;
    assert_eq!(after.status, Status::Failed);
    assert_eq!(after.finished_at, Some(h.now()));
    assert_eq!(after.lease_token, None);
    let error = match &after.error {
        Some(e) => e,
        None => panic!("a task failed by rescue records an error"),
    };
    assert_eq!(error.kind, "lease_expired");
    assert_eq!(error.attempt, 1);
    let history = h.attempts(t.id).await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].outcome, AttemptOutcome::LeaseExpired);
    assert!(h.claim(DEFAULT_QUEUE, 10).await.is_empty());
}

/// An expired task whose abort was requested becomes `aborted`.
pub async fn rescue_with_abort_requested_aborts(h: &Harness) {
    let t = h
        .insert_and_claim("job", TaskOptions::new().max_attempts(5))
        .await;
    let params = TaskAbortParams {
        id: t.id,
        reason: Some("operator said stop".to_owned()),
        now: h.now(),
    };
    let asked = ok("task_abort", h.store.task_abort(&params).await);
    assert_eq!(asked.status, Status::Running);
    h.advance(PAST_LEASE);
    let rescued = h.rescue().await;
    assert_eq!(
        rescued.iter().map(|r| (r.id, r.status)).collect::<Vec<_>>(),
        vec![(t.id, Status::Aborted)]
    );
    let after = h.get(t.id).await;
    assert_eq!(after.status, Status::Aborted);
    assert_eq!(after.finished_at, Some(h.now()));
    assert_eq!(after.lease_token, None);
    let history = h.attempts(t.id).await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].outcome, AttemptOutcome::LeaseExpired);
    assert!(h.claim(DEFAULT_QUEUE, 10).await.is_empty());
}

/// Rescue takes at most `limit` tasks per call.
pub async fn rescue_respects_limit(h: &Harness) {
    h.insert_n("job", DEFAULT_QUEUE, 5).await;
    assert_eq!(h.claim(DEFAULT_QUEUE, 5).await.len(), 5);
    h.advance(PAST_LEASE);
    let params = TaskRescueParams {
        now: h.now(),
        limit: 2,
    };
    for want in [2, 2, 1, 0] {
        let got = ok(
            "task_rescue_expired",
            h.store.task_rescue_expired(&params).await,
        );
        assert_eq!(got.len(), want);
    }
    assert_eq!(h.claim(DEFAULT_QUEUE, 10).await.len(), 5);
}

/// Aborting a running task leaves it running with `abort_requested_at`
/// set, and its next heartbeat says so.
pub async fn heartbeat_reports_abort_requested(h: &Harness) {
    let a = h.insert_and_claim("a", TaskOptions::new()).await;
    let b = h.insert_and_claim("b", TaskOptions::new()).await;
    h.advance(Duration::from_secs(1));
    let params = TaskAbortParams {
        id: a.id,
        reason: Some("enough".to_owned()),
        now: h.now(),
    };
    let asked = ok("task_abort", h.store.task_abort(&params).await);
    assert_eq!(asked.status, Status::Running);
    assert_eq!(asked.abort_requested_at, Some(h.now()));
    assert_eq!(asked.lease_token, a.lease_token);
    let answers = h.heartbeat(&[lease_of(&a), lease_of(&b)]).await;
    assert_eq!(
        answers
            .iter()
            .map(|s| (s.id, s.live, s.abort_requested))
            .collect::<Vec<_>>(),
        vec![(a.id, true, true), (b.id, true, false)]
    );
    let done = h
        .finish(
            lease_of(&a),
            FinishOutcome::Abort {
                error: h.error("aborted", "enough", 1),
            },
        )
        .await;
    assert!(done.accepted);
    assert_eq!(done.status, Some(Status::Aborted));
}

/// Heartbeats for unknown tasks, finished tasks or wrong tokens are
/// answered not live and renew nothing.
pub async fn heartbeat_of_finished_or_unknown_task_is_not_live(h: &Harness) {
    let done = h.insert_and_claim("done", TaskOptions::new()).await;
    let run = h.insert_and_claim("run", TaskOptions::new()).await;
    assert!(
        h.finish(lease_of(&done), FinishOutcome::Success { output: json!(1) })
            .await
            .accepted
    );
    h.advance(Duration::from_secs(5));
    let unknown = LeaseRef {
        id: TaskId::new(),
        lease_token: LeaseToken::new(),
    };
    let wrong = LeaseRef {
        id: run.id,
        lease_token: LeaseToken::new(),
    };
    let answers = h.heartbeat(&[unknown, lease_of(&done), wrong]).await;
    assert_eq!(
        answers.iter().map(|s| (s.id, s.live)).collect::<Vec<_>>(),
        vec![(unknown.id, false), (done.id, false), (run.id, false)]
    );
    assert_eq!(h.get(run.id).await, run, "a wrong token renews nothing");
    assert_eq!(
        h.get(run.id).await.lease_expires_at,
        Some(h.earlier(Duration::from_secs(5)) + span(LEASE))
    );
}

/// Progress with the live token is stored; with a stale token it is refused
/// and not stored.
pub async fn progress_needs_live_lease(h: &Harness) {
    let t = h.insert_and_claim("job", TaskOptions::new()).await;
    let live = lease_of(&t);
    assert!(progress(h, live, 50, "half way").await);
    let stored = h.get(t.id).await;
    assert_eq!(
        stored.progress,
        Some(Progress::new(50, Some("half way".to_owned())))
    );
    let stale = LeaseRef {
        id: t.id,
        lease_token: LeaseToken::new(),
    };
    assert!(!progress(h, stale, 90, "not mine").await);
    assert_eq!(h.get(t.id).await.progress, stored.progress);

    // Rescued and claimed again: the first attempt's token is stale now.
    h.advance(PAST_LEASE);
    assert_eq!(h.rescue().await.len(), 1);
    let again = h.claim_one(t.id).await;
    assert!(!progress(h, live, 70, "from the past").await);
    assert!(progress(h, lease_of(&again), 10, "second attempt").await);
    assert_eq!(
        h.get(t.id).await.progress,
        Some(Progress::new(10, Some("second attempt".to_owned())))
    );
    // With data.
    let params = TaskProgressParams {
        updates: vec![ProgressUpdate {
            lease: lease_of(&again),
            progress: Progress {
                percent: 100,
                message: None,
                data: Some(json!({"rows": 1234})),
            },
        }],
        now: h.now(),
    };
    let answers = ok(
        "task_progress_many",
        h.store.task_progress_many(&params).await,
    );
    assert!(answers[0].live);
    assert_eq!(
        h.get(t.id).await.progress,
        Some(params.updates[0].progress.clone())
    );
}
