//! The SQLite store's own behaviour checks, beyond the shared conformance
//! suite: a full attempt round trip, fencing, rescue, abort, and what is
//! kept in the history.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{TempDb, claim, claim_params, insert_n, now};
use offload_store::{
    FinishOutcome, LeaseRef, Store, StoreError, TaskAbortParams, TaskFinish, TaskFinishParams,
    TaskHeartbeatParams, TaskRescueParams,
};
use offload_types::{AttemptOutcome, Status, TaskErrorRecord};
use serde_json::json;

#[tokio::test]
async fn insert_claim_finish_round_trip() {
    let db = TempDb::new();
    let store = db.open().await;
    let ids = insert_n(&store, "default", 3).await;
    let task = store.task_get(ids[0]).await.unwrap().unwrap();
    assert_eq!(task.status, Status::Pending);
    assert_eq!(task.input, json!({"i": 0}));
    assert_eq!(task.max_attempts, 3);
    assert_eq!(task.metadata, json!({}));

    let claimed = claim(&store, "default", 2).await;
    assert_eq!(
        claimed.iter().map(|t| t.id).collect::<Vec<_>>(),
        ids[..2].to_vec()
    );
    let t = &claimed[0];
    assert_eq!(t.status, Status::Running);
    assert_eq!(t.attempt, 1);
    assert_eq!(t.worker_id.as_deref(), Some("test-worker"));
    let token = t.lease_token.unwrap();
    assert_ne!(Some(token), claimed[1].lease_token);

    let at = now();
    let results = store
        .task_finish_many(&TaskFinishParams {
            items: vec![TaskFinish {
                lease: LeaseRef {
                    id: t.id,
                    lease_token: token,
                },
                outcome: FinishOutcome::Success {
                    output: json!({"ok": true}),
                },
            }],
            now: at,
        })
        .await
        .unwrap();
    assert!(results[0].accepted);
    assert_eq!(results[0].status, Some(Status::Success));
    let done = store.task_get(t.id).await.unwrap().unwrap();
    assert_eq!(done.status, Status::Success);
    assert_eq!(done.output, Some(json!({"ok": true})));
    assert_eq!(done.finished_at, Some(at));
    assert!(done.lease_token.is_none());

    let history = store.task_attempts(t.id).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].outcome, AttemptOutcome::Success);
    assert_eq!(history[0].finished_at, Some(at));

    // Finishing again with the same lease is refused and changes nothing.
    let again = store
        .task_finish_many(&TaskFinishParams {
            items: vec![TaskFinish {
                lease: LeaseRef {
                    id: t.id,
                    lease_token: token,
                },
                outcome: FinishOutcome::Release,
            }],
            now: now(),
        })
        .await
        .unwrap();
    assert!(!again[0].accepted);
    assert_eq!(again[0].status, Some(Status::Success));
}

#[tokio::test]
async fn rescue_then_stale_heartbeat_is_not_live() {
    let db = TempDb::new();
    let store = db.open().await;
    insert_n(&store, "default", 1).await;
    let t0 = now();
    let claimed = store
        .task_claim(&claim_params("default", 1, t0))
        .await
        .unwrap();
    let lease = LeaseRef {
        id: claimed[0].id,
        lease_token: claimed[0].lease_token.unwrap(),
    };
    let later = t0 + chrono::Duration::seconds(31);
    let rescued = store
        .task_rescue_expired(&TaskRescueParams {
            now: later,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(rescued.len(), 1);
    assert_eq!(rescued[0].status, Status::Pending);
    let beat = store
        .task_heartbeat_many(&TaskHeartbeatParams {
            leases: vec![lease],
            lease: Duration::from_secs(30),
            now: later,
        })
        .await
        .unwrap();
    assert!(!beat[0].live);
    let history = store.task_attempts(lease.id).await.unwrap();
    assert_eq!(history[0].outcome, AttemptOutcome::LeaseExpired);
    let again = store
        .task_claim(&claim_params("default", 1, later))
        .await
        .unwrap();
    assert_eq!(again[0].attempt, 2);
}

#[tokio::test]
async fn abort_waiting_and_running() {
    let db = TempDb::new();
    let store = db.open().await;
    let ids = insert_n(&store, "default", 2).await;
    let aborted = store
        .task_abort(&TaskAbortParams {
            id: ids[0],
            reason: Some("no longer needed".into()),
            now: now(),
        })
        .await
        .unwrap();
    assert_eq!(aborted.status, Status::Aborted);
    let err: &TaskErrorRecord = aborted.error.as_ref().unwrap();
    assert_eq!(err.kind, "aborted");
    assert_eq!(err.message, "no longer needed");

    let running = claim(&store, "default", 1).await;
    let asked = store
        .task_abort(&TaskAbortParams {
            id: running[0].id,
            reason: None,
            now: now(),
        })
        .await
        .unwrap();
    assert_eq!(asked.status, Status::Running);
    assert!(asked.abort_requested_at.is_some());

    let again = store
        .task_abort(&TaskAbortParams {
            id: ids[0],
            reason: None,
            now: now(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(again, StoreError::InvalidTransition { .. }),
        "{again:?}"
    );
}
