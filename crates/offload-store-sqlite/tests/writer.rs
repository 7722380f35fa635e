//! The writer: group commit batches concurrent callers into few commits, a
//! failing command rolls back only itself, two stores on one file (two
//! processes) never hand out the same task, and the claim uses the pending
//! index however many finished rows the table holds.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::{TempDb, claim_params, insert_n, now};
use futures::future::join_all;
use offload_store::{
    FinishOutcome, LeaseRef, Store, StoreError, TaskFinish, TaskFinishParams, TaskInsertParams,
};
use offload_types::{NewTask, TaskId};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_single_inserts_share_commits() {
    let db = TempDb::new();
    let store = db.open().await;
    let before = store.writer_stats();
    let inserts = (0..200).map(|i| {
        let store = store.clone();
        async move {
            store
                .task_insert_many(&TaskInsertParams {
                    tasks: vec![NewTask::new("noop", json!({ "i": i }))],
                    now: now(),
                })
                .await
        }
    });
    let results = join_all(inserts).await;
    assert!(results.iter().all(Result::is_ok));
    let after = store.writer_stats();
    assert_eq!(after.commands - before.commands, 200);
    let commits = after.commits - before.commits;
    assert!(
        commits < 50,
        "200 concurrent inserts should share commits, got {commits} commits"
    );
    assert_eq!(
        store
            .task_count(&Default::default())
            .await
            .unwrap()
            .iter()
            .map(|c| c.count)
            .sum::<u64>(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_rolls_back_only_itself() {
    let db = TempDb::new();
    let store = db.open().await;
    let existing = insert_n(&store, "default", 1).await[0];
    // Many inserts in flight at once, every fifth one reusing an id that
    // exists: those fail alone, whatever batch they share.
    let inserts = (0..100).map(|i| {
        let store = store.clone();
        async move {
            let mut task = NewTask::new("noop", json!({ "i": i }));
            if i % 5 == 0 {
                task.id = existing;
            }
            let id = task.id;
            let extra = NewTask::new("noop", json!({ "extra": i }));
            let extra_id = extra.id;
            let r = store
                .task_insert_many(&TaskInsertParams {
                    tasks: vec![extra, task],
                    now: now(),
                })
                .await;
            (i, id, extra_id, r)
        }
    });
    for (i, id, extra_id, result) in join_all(inserts).await {
        if i % 5 == 0 {
            let err = result.unwrap_err();
            assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
            // All or nothing: the batch's other task is not there either.
            assert!(store.task_get(extra_id).await.unwrap().is_none());
        } else {
            let ids: Vec<_> = result.unwrap().into_iter().map(|e| e.id).collect();
            assert_eq!(ids, vec![extra_id, id]);
            assert!(store.task_get(id).await.unwrap().is_some());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_never_claim_the_same_task() {
    let db = TempDb::new();
    let a = db.open().await;
    let b = db.open().await;
    let total = 10_000;
    let mut inserted = HashSet::new();
    for _ in 0..10 {
        inserted.extend(insert_n(&a, "default", total / 10).await);
    }
    let mut claimers = Vec::new();
    for store in [a.clone(), b.clone()] {
        for _ in 0..8 {
            let store = store.clone();
            claimers.push(tokio::spawn(async move {
                let mut mine: Vec<TaskId> = Vec::new();
                // Bounded: at most one round per task, then stop when empty.
                for _ in 0..total {
                    let claimed = store
                        .task_claim(&claim_params("default", 25, now()))
                        .await
                        .expect("claim");
                    if claimed.is_empty() {
                        break;
                    }
                    mine.extend(claimed.iter().map(|t| t.id));
                }
                mine
            }));
        }
    }
    let mut seen = HashSet::new();
    let mut count = 0;
    for claimer in claimers {
        for id in claimer.await.unwrap() {
            count += 1;
            assert!(seen.insert(id), "task {id} was claimed twice");
        }
    }
    assert_eq!(count, total);
    assert_eq!(seen, inserted);
}

#[tokio::test]
async fn claim_uses_the_pending_index_with_many_finished_rows() {
    let db = TempDb::new();
    let store = db.open().await;
    for _ in 0..10 {
        insert_n(&store, "default", 1000).await;
    }
    // Finish all 10,000.
    for _ in 0..100 {
        let claimed = store
            .task_claim(&claim_params("default", 100, now()))
            .await
            .unwrap();
        let items = claimed
            .iter()
            .map(|t| TaskFinish {
                lease: LeaseRef {
                    id: t.id,
                    lease_token: t.lease_token.unwrap(),
                },
                outcome: FinishOutcome::Success { output: json!(1) },
            })
            .collect();
        store
            .task_finish_many(&TaskFinishParams { items, now: now() })
            .await
            .unwrap();
    }
    insert_n(&store, "default", 10).await;
    // Let the planner see real statistics, as a long-lived database would.
    {
        let conn = rusqlite::Connection::open(db.path()).unwrap();
        conn.execute_batch("ANALYZE").unwrap();
    }
    for names in [None, Some(vec!["noop".to_owned()])] {
        let plan = store
            .explain_claim("default", names)
            .await
            .unwrap()
            .join("\n");
        assert!(plan.contains("USING INDEX tasks_pending"), "{plan}");
        assert!(!plan.contains("SCAN tasks"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }
    let claimed = store
        .task_claim(&claim_params("default", 100, now()))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_run_while_the_writer_is_busy() {
    let db = TempDb::new();
    let store = Arc::new(db.open().await);
    let ids = insert_n(&store, "default", 100).await;
    let writes = {
        let store = store.clone();
        tokio::spawn(async move {
            for _ in 0..20 {
                insert_n(&store, "other", 500).await;
            }
        })
    };
    for id in ids.iter().take(50) {
        assert!(store.task_get(*id).await.unwrap().is_some());
    }
    writes.await.unwrap();
}
