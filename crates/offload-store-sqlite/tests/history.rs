//! How the SQLite store keeps attempt history and lease tokens (see the
//! schema, `migrations/0001_init.sql`): the running attempt and the last
//! ended one live in the task row and are written to `task_attempts` only
//! when something would overwrite them; lease tokens carry the task's row
//! number. These cases check the public answers on the paths the shared
//! conformance suite does not reach, and the internal rows where the
//! design promises something (a first attempt that succeeds writes no
//! history row; deleting a task leaves none behind).

#![allow(clippy::unwrap_used)]

mod common;

use common::{TempDb, claim, insert_n, now};
use offload_store::{
    FinishOutcome, LeaseRef, Store, TaskAbortParams, TaskDeleteParams, TaskFinish,
    TaskFinishParams, TaskHeartbeatParams, TaskPurgeParams, TaskRetryParams,
};
use offload_types::{AttemptOutcome, LeaseToken, Status, Task, TaskErrorRecord, TaskId};
use serde_json::json;

fn lease_of(t: &Task) -> LeaseRef {
    LeaseRef {
        id: t.id,
        lease_token: t.lease_token.unwrap(),
    }
}

async fn finish(store: &impl Store, lease: LeaseRef, outcome: FinishOutcome) -> bool {
    store
        .task_finish_many(&TaskFinishParams {
            items: vec![TaskFinish { lease, outcome }],
            now: now(),
        })
        .await
        .unwrap()[0]
        .accepted
}

fn error(message: &str, attempt: u32) -> TaskErrorRecord {
    TaskErrorRecord {
        kind: "error".to_owned(),
        message: message.to_owned(),
        attempt,
        at: now(),
    }
}

/// Rows in `task_attempts`, read straight from the file.
fn history_rows(db: &TempDb) -> i64 {
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    conn.query_row("SELECT count(*) FROM task_attempts", [], |r| r.get(0))
        .unwrap()
}

fn outcomes(history: &[offload_types::Attempt]) -> Vec<(u32, AttemptOutcome)> {
    history.iter().map(|a| (a.attempt, a.outcome)).collect()
}

#[tokio::test]
async fn a_first_attempt_that_succeeds_writes_no_history_row() {
    let db = TempDb::new();
    let store = db.open().await;
    let ids = insert_n(&store, "default", 50).await;
    let claimed = claim(&store, "default", 50).await;
    for t in &claimed {
        assert!(
            finish(
                &store,
                lease_of(t),
                FinishOutcome::Success { output: json!(1) }
            )
            .await
        );
    }
    assert_eq!(history_rows(&db), 0);
    let history = store.task_attempts(ids[7]).await.unwrap();
    assert_eq!(outcomes(&history), vec![(1, AttemptOutcome::Success)]);
    assert_eq!(history[0].worker_id, "test-worker");
    assert!(history[0].finished_at.is_some());
    // The task shows a worker only while it runs.
    let done = store.task_get(ids[7]).await.unwrap().unwrap();
    assert_eq!(done.worker_id, None);
    assert_eq!(done.lease_token, None);
}

#[tokio::test]
async fn the_next_claim_writes_out_the_last_attempt() {
    let db = TempDb::new();
    let store = db.open().await;
    let id = insert_n(&store, "default", 1).await[0];
    let first = claim(&store, "default", 1).await.remove(0);
    let err = error("boom", 1);
    let retry = FinishOutcome::Retry {
        error: err.clone(),
        run_at: now(),
    };
    assert!(finish(&store, lease_of(&first), retry).await);
    assert_eq!(history_rows(&db), 0, "kept in the row until the next claim");
    let history = store.task_attempts(id).await.unwrap();
    assert_eq!(outcomes(&history), vec![(1, AttemptOutcome::Error)]);
    assert_eq!(history[0].error, Some(err.clone()));

    let second = claim(&store, "default", 1).await.remove(0);
    assert_eq!(second.attempt, 2);
    assert_eq!(
        second.error,
        Some(err.clone()),
        "the task keeps its last error"
    );
    assert_eq!(history_rows(&db), 1);
    let history = store.task_attempts(id).await.unwrap();
    assert_eq!(
        outcomes(&history),
        vec![(1, AttemptOutcome::Error), (2, AttemptOutcome::Running)]
    );
    assert_eq!(history[0].error, Some(err.clone()));
    assert_eq!(history[0].started_at, first.started_at.unwrap());

    assert!(
        finish(
            &store,
            lease_of(&second),
            FinishOutcome::Success { output: json!(2) }
        )
        .await
    );
    let history = store.task_attempts(id).await.unwrap();
    assert_eq!(
        outcomes(&history),
        vec![(1, AttemptOutcome::Error), (2, AttemptOutcome::Success)]
    );
    assert_eq!(history[0].error, Some(err));
    assert_eq!(history[1].error, None);
    assert_eq!(history[1].started_at, second.started_at.unwrap());
}

#[tokio::test]
async fn aborting_a_waiting_task_keeps_its_last_attempts_error() {
    let db = TempDb::new();
    let store = db.open().await;
    let id = insert_n(&store, "default", 1).await[0];
    let t = claim(&store, "default", 1).await.remove(0);
    let err = error("first failure", 1);
    let later = now() + chrono::Duration::hours(1);
    let retry = FinishOutcome::Retry {
        error: err.clone(),
        run_at: later,
    };
    assert!(finish(&store, lease_of(&t), retry).await);
    let aborted = store
        .task_abort(&TaskAbortParams {
            id,
            reason: Some("no longer needed".to_owned()),
            now: now(),
        })
        .await
        .unwrap();
    assert_eq!(aborted.status, Status::Aborted);
    assert_eq!(aborted.error.as_ref().unwrap().kind, "aborted");
    let history = store.task_attempts(id).await.unwrap();
    assert_eq!(outcomes(&history), vec![(1, AttemptOutcome::Error)]);
    assert_eq!(history[0].error, Some(err), "not the abort's record");

    // Run it again by hand: the history goes on.
    store
        .task_retry(&TaskRetryParams { id, now: now() })
        .await
        .unwrap();
    let again = claim(&store, "default", 1).await.remove(0);
    assert!(
        finish(
            &store,
            lease_of(&again),
            FinishOutcome::Success { output: json!(3) }
        )
        .await
    );
    let history = store.task_attempts(id).await.unwrap();
    assert_eq!(
        outcomes(&history),
        vec![(1, AttemptOutcome::Error), (2, AttemptOutcome::Success)]
    );
}

#[tokio::test]
async fn attempts_given_back_keep_their_number_and_no_error() {
    let db = TempDb::new();
    let store = db.open().await;
    let id = insert_n(&store, "default", 1).await[0];
    let t = claim(&store, "default", 1).await.remove(0);
    let err = error("flaky", 1);
    let retry = FinishOutcome::Retry {
        error: err.clone(),
        run_at: now(),
    };
    assert!(finish(&store, lease_of(&t), retry).await);
    let t = claim(&store, "default", 1).await.remove(0);
    assert!(finish(&store, lease_of(&t), FinishOutcome::Release).await);
    let t = claim(&store, "default", 1).await.remove(0);
    assert_eq!(t.attempt, 2, "the released attempt did not count");
    assert_eq!(t.error, Some(err.clone()));
    let history = store.task_attempts(id).await.unwrap();
    assert_eq!(
        outcomes(&history),
        vec![
            (1, AttemptOutcome::Error),
            (2, AttemptOutcome::Released),
            (2, AttemptOutcome::Running)
        ]
    );
    assert_eq!(history[0].error, Some(err));
    assert_eq!(history[1].error, None);
}

#[tokio::test]
async fn deleted_tasks_leave_no_history_behind() {
    let db = TempDb::new();
    let store = db.open().await;
    let ids = insert_n(&store, "default", 2).await;
    for _ in 0..2 {
        for t in claim(&store, "default", 2).await {
            let retry = FinishOutcome::Retry {
                error: error("again", t.attempt),
                run_at: now(),
            };
            assert!(finish(&store, lease_of(&t), retry).await);
        }
    }
    for t in claim(&store, "default", 2).await {
        let fail = FinishOutcome::Fail {
            error: error("gave up", t.attempt),
        };
        assert!(finish(&store, lease_of(&t), fail).await);
    }
    assert_eq!(history_rows(&db), 4);
    store
        .task_delete(&TaskDeleteParams {
            id: ids[1],
            now: chrono::Utc::now(),
        })
        .await
        .unwrap();
    assert_eq!(history_rows(&db), 2);
    // A new task may take the deleted one's row number: it starts clean.
    let fresh = insert_n(&store, "default", 1).await[0];
    assert!(store.task_attempts(fresh).await.unwrap().is_empty());
    let t = claim(&store, "default", 1).await.remove(0);
    assert_eq!(t.id, fresh);
    assert_eq!(
        outcomes(&store.task_attempts(fresh).await.unwrap()),
        vec![(1, AttemptOutcome::Running)]
    );
    let purged = store
        .task_purge(&TaskPurgeParams {
            filter: offload_store::TaskFilter {
                statuses: vec![Status::Failed],
                ..Default::default()
            },
            finished_before: None,
            limit: None,
        })
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert_eq!(history_rows(&db), 0);
}

#[tokio::test]
async fn a_lease_token_only_fences_its_own_task() {
    let db = TempDb::new();
    let store = db.open().await;
    insert_n(&store, "default", 2).await;
    let claimed = claim(&store, "default", 2).await;
    let (a, b) = (&claimed[0], &claimed[1]);
    // b's id with a's token (which names a's row): not b's lease.
    let crossed = LeaseRef {
        id: b.id,
        lease_token: a.lease_token.unwrap(),
    };
    // b's row and a token drawn by no claim.
    let mut bytes = *b.lease_token.unwrap().0.as_bytes();
    bytes[15] ^= 1;
    let forged = LeaseRef {
        id: b.id,
        lease_token: LeaseToken(uuid::Uuid::from_bytes(bytes)),
    };
    // Nonsense: a row that does not exist.
    let nowhere = LeaseRef {
        id: TaskId::new(),
        lease_token: LeaseToken(uuid::Uuid::from_bytes([0xff; 16])),
    };
    for lease in [crossed, forged, nowhere] {
        let live = store
            .task_heartbeat_many(&TaskHeartbeatParams {
                leases: vec![lease],
                lease: std::time::Duration::from_secs(30),
                now: now(),
            })
            .await
            .unwrap();
        assert!(!live[0].live, "{lease:?}");
        assert!(!finish(&store, lease, FinishOutcome::Success { output: json!(0) }).await);
    }
    for t in [a, b] {
        assert_eq!(
            store.task_get(t.id).await.unwrap().unwrap().status,
            Status::Running
        );
        assert!(
            finish(
                &store,
                lease_of(t),
                FinishOutcome::Success { output: json!(1) }
            )
            .await
        );
    }
}
