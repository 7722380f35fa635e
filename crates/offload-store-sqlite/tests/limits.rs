//! Limits, fairness and quotas on the SQLite store, beyond the shared
//! conformance cases: the acceptance case of fairness (a backlog of one
//! key does not starve another), claims filtered by name through the slow
//! path, quotas through the flow insert path, and a version-4 file gaining
//! the schema of limits.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;

use common::{TempDb, claim_params, now};
use offload_store::{
    FinishOutcome, LeaseRef, LimitPutParams, Store, StoreError, TaskFinish, TaskFinishParams,
    TaskInsertParams,
};
use offload_types::{Limit, NewTask, Task, TaskId, TaskOptions};
use serde_json::json;

fn fair(name: &str, queue: &str, key: &str) -> NewTask {
    NewTask::new(name, json!(null)).options(TaskOptions::new().queue(queue).fairness_key(key))
}

async fn insert(store: &impl Store, tasks: Vec<NewTask>) -> Result<Vec<TaskId>, StoreError> {
    store
        .task_insert_many(&TaskInsertParams { tasks, now: now() })
        .await
        .map(|e| e.into_iter().map(|e| e.id).collect())
}

async fn finish(store: &impl Store, tasks: &[Task]) {
    let items = tasks
        .iter()
        .map(|t| TaskFinish {
            lease: LeaseRef {
                id: t.id,
                lease_token: t.lease_token.unwrap(),
            },
            outcome: FinishOutcome::Success { output: json!(1) },
        })
        .collect();
    let done = store
        .task_finish_many(&TaskFinishParams { items, now: now() })
        .await
        .unwrap();
    assert!(done.iter().all(|r| r.accepted));
}

/// The acceptance case: 10,000 tasks of key A queued before 10 of key B;
/// a worker of concurrency 4 (claiming what it has room for, finishing
/// what it took) starts all of B before A's 100th.
#[tokio::test]
async fn a_backlog_of_one_key_does_not_starve_another() {
    let db = TempDb::new();
    let store = db.open().await;
    for _ in 0..10 {
        let a: Vec<NewTask> = (0..1000).map(|_| fair("job", "fair", "A")).collect();
        insert(&store, a).await.unwrap();
    }
    let b: HashSet<TaskId> = insert(&store, (0..10).map(|_| fair("job", "fair", "B")).collect())
        .await
        .unwrap()
        .into_iter()
        .collect();
    let (mut of_a, mut of_b) = (0, 0);
    let mut running: Vec<Task> = Vec::new();
    while of_b < b.len() {
        let room = 4 - u32::try_from(running.len()).unwrap();
        let got = store
            .task_claim(&claim_params("fair", room, now()))
            .await
            .unwrap();
        assert!(!got.is_empty());
        for t in &got {
            if b.contains(&t.id) {
                of_b += 1;
            } else {
                of_a += 1;
            }
        }
        assert!(of_a < 100, "A started {of_a} before B's last");
        running.extend(got);
        // The oldest two finish.
        let done: Vec<Task> = running.drain(..2.min(running.len())).collect();
        finish(&store, &done).await;
    }
    assert!(of_a <= 11, "round-robin: A started {of_a} meanwhile");
}

/// A claim for some names only, under a limit and with fairness keys,
/// takes only those names, round-robin.
#[tokio::test]
async fn a_claim_for_names_goes_through_limits_and_fairness() {
    let db = TempDb::new();
    let store = db.open().await;
    store
        .limit_put(&LimitPutParams {
            limit: Limit::name("wanted").concurrency(3),
            now: now(),
        })
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for key in ["x", "y"] {
        for name in ["wanted", "other"] {
            tasks.extend((0..3).map(|_| fair(name, "names", key)));
        }
    }
    insert(&store, tasks).await.unwrap();
    let mut params = claim_params("names", 10, now());
    params.names = Some(vec!["wanted".to_owned()]);
    let got = store.task_claim(&params).await.unwrap();
    assert_eq!(got.len(), 3, "the concurrency of wanted");
    assert!(got.iter().all(|t| t.name == "wanted"));
    let keys: Vec<&str> = got
        .iter()
        .filter_map(|t| t.fairness_key.as_deref())
        .collect();
    assert_eq!(keys, ["x", "y", "x"], "round-robin across the keys");
    assert!(store.task_claim(&params).await.unwrap().is_empty());
    params.names = Some(vec!["other".to_owned()]);
    assert_eq!(store.task_claim(&params).await.unwrap().len(), 6);
}

/// Tasks with a unique key take the flow insert path; the quota applies
/// to them too, and a refused batch stores nothing.
#[tokio::test]
async fn quotas_apply_on_the_flow_insert_path() {
    let db = TempDb::new();
    let store = db.open().await;
    store
        .limit_put(&LimitPutParams {
            limit: Limit::queue("quota").max_queued_per_key(2),
            now: now(),
        })
        .await
        .unwrap();
    let unique = |k: &str| {
        NewTask::new("job", json!(null)).options(
            TaskOptions::new()
                .queue("quota")
                .fairness_key("t")
                .unique_key(k),
        )
    };
    insert(&store, vec![unique("u1"), unique("u2")])
        .await
        .unwrap();
    let err = insert(&store, vec![unique("u3")]).await.unwrap_err();
    assert!(matches!(err, StoreError::QuotaExceeded(_)), "{err:?}");
    let keyless = NewTask::new("job", json!(null)).options(TaskOptions::new().queue("quota"));
    let keyless_id = keyless.id;
    let err = insert(&store, vec![keyless, fair("job", "quota", "t")])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::QuotaExceeded(_)), "{err:?}");
    assert!(store.task_get(keyless_id).await.unwrap().is_none());
}

/// A file of schema version 4 gains the fairness column and the tables of
/// limits on open; its tasks read back without a fairness key.
#[tokio::test]
async fn a_version_4_file_gains_limits() {
    let db = TempDb::new();
    let store = db.open().await;
    let old = common::insert_n(&store, "default", 1).await[0];
    drop(store);
    {
        let conn = rusqlite::Connection::open(db.path()).unwrap();
        conn.execute_batch(
            "DROP INDEX tasks_pending_fair; DROP INDEX tasks_waiting_fair_name; \
             DROP INDEX tasks_waiting_fair_queue; DROP TABLE limits; DROP TABLE limit_starts; \
             DROP TABLE fairness_served; ALTER TABLE tasks DROP COLUMN fairness_key; \
             DELETE FROM offload_migrations WHERE version = 5;",
        )
        .unwrap();
    }
    let store = db.open().await;
    assert_eq!(
        store.task_get(old).await.unwrap().unwrap().fairness_key,
        None
    );
    assert!(store.limit_list().await.unwrap().is_empty());
    let id = insert(&store, vec![fair("job", "default", "k")])
        .await
        .unwrap()[0];
    assert_eq!(
        store
            .task_get(id)
            .await
            .unwrap()
            .unwrap()
            .fairness_key
            .as_deref(),
        Some("k")
    );
}

/// A saturated key at the head of the queue hides nothing behind it:
/// under `key_concurrency` 1, 500 pending tasks of customer A queued
/// before one of customer B, one claim of 2 takes one A and the B.
#[tokio::test]
async fn a_saturated_key_ahead_does_not_hide_another() {
    let db = TempDb::new();
    let store = db.open().await;
    store
        .limit_put(&LimitPutParams {
            limit: Limit::name("import").per_key("customer", 1),
            now: now(),
        })
        .await
        .unwrap();
    let task = |c: &str| {
        NewTask::new("import", json!({ "customer": c }))
            .options(TaskOptions::new().queue("imports"))
    };
    insert(&store, (0..500).map(|_| task("A")).collect())
        .await
        .unwrap();
    let b = insert(&store, vec![task("B")]).await.unwrap()[0];
    let got = store
        .task_claim(&claim_params("imports", 2, now()))
        .await
        .unwrap();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got.iter().filter(|t| t.id == b).count(), 1);
    assert_eq!(got.iter().filter(|t| t.input["customer"] == "A").count(), 1);
    // A stays saturated while its task runs: nothing more to take.
    assert!(
        store
            .task_claim(&claim_params("imports", 2, now()))
            .await
            .unwrap()
            .is_empty()
    );
}

/// The same for a saturated name ahead of another name in a shared queue.
#[tokio::test]
async fn a_saturated_name_ahead_does_not_hide_another() {
    let db = TempDb::new();
    let store = db.open().await;
    store
        .limit_put(&LimitPutParams {
            limit: Limit::name("heavy").concurrency(1),
            now: now(),
        })
        .await
        .unwrap();
    let task =
        |name: &str| NewTask::new(name, json!(null)).options(TaskOptions::new().queue("shared"));
    insert(&store, (0..500).map(|_| task("heavy")).collect())
        .await
        .unwrap();
    let light = insert(&store, vec![task("light")]).await.unwrap()[0];
    let got = store
        .task_claim(&claim_params("shared", 2, now()))
        .await
        .unwrap();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got.iter().filter(|t| t.id == light).count(), 1);
    assert_eq!(got.iter().filter(|t| t.name == "heavy").count(), 1);
    assert!(
        store
            .task_claim(&claim_params("shared", 2, now()))
            .await
            .unwrap()
            .is_empty()
    );
}
