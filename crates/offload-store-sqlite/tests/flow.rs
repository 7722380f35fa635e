//! The SQLite store's own checks of dependencies and unique keys, beyond
//! the shared conformance suite: what happens to edges on retry, import,
//! delete and purge, fencing of a dependency's stale finish, the safety
//! net `task_resolve_blocked`, and the migration of a version-2 file.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{TempDb, claim_params, now};
use offload_store::{
    FinishOutcome, LeaseRef, Store, TaskExportParams, TaskFilter, TaskFinish, TaskFinishParams,
    TaskImportParams, TaskInsertParams, TaskPurgeParams, TaskRescueParams, TaskResolveParams,
    TaskRetryParams,
};
use offload_store_sqlite::SqliteStore;
use offload_types::{
    EnqueueOutcome, NewTask, Status, Task, TaskErrorRecord, TaskId, TaskOptions, UniquePolicy,
};
use serde_json::json;

fn task(name: &str) -> NewTask {
    NewTask::new(name, json!({})).options(TaskOptions::new().queue("flow"))
}

async fn insert(store: &SqliteStore, tasks: Vec<NewTask>) -> Vec<TaskId> {
    store
        .task_insert_many(&TaskInsertParams { tasks, now: now() })
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect()
}

async fn status(store: &SqliteStore, id: TaskId) -> Status {
    store.task_get(id).await.unwrap().unwrap().status
}

/// Claims the task `name` from the queue `flow`.
async fn claim(store: &SqliteStore, name: &str) -> Task {
    let mut params = claim_params("flow", 1, now());
    params.names = Some(vec![name.to_owned()]);
    let mut claimed = store.task_claim(&params).await.unwrap();
    assert_eq!(claimed.len(), 1, "claim {name}");
    claimed.remove(0)
}

async fn finish(store: &SqliteStore, t: &Task, outcome: FinishOutcome) -> bool {
    store
        .task_finish_many(&TaskFinishParams {
            items: vec![TaskFinish {
                lease: LeaseRef {
                    id: t.id,
                    lease_token: t.lease_token.unwrap(),
                },
                outcome,
            }],
            now: now(),
        })
        .await
        .unwrap()[0]
        .accepted
}

fn failure() -> FinishOutcome {
    FinishOutcome::Fail {
        error: TaskErrorRecord {
            kind: "boom".to_owned(),
            message: "it broke".to_owned(),
            attempt: 1,
            at: now(),
        },
    }
}

fn success() -> FinishOutcome {
    FinishOutcome::Success { output: json!(1) }
}

fn edges(db: &TempDb) -> i64 {
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    conn.query_row("SELECT count(*) FROM task_deps", [], |r| r.get(0))
        .unwrap()
}

async fn resolve(store: &SqliteStore) -> u64 {
    store
        .task_resolve_blocked(&TaskResolveParams {
            limit: 100,
            now: now(),
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn retried_end_dependency_is_waited_for_again() {
    let db = TempDb::new();
    let store = db.open().await;
    let ids = insert(&store, vec![task("a"), task("b")]).await;
    let mut callback = task("callback");
    callback.after = ids.clone();
    let callback = insert(&store, vec![callback]).await[0];
    assert_eq!(status(&store, callback).await, Status::Blocked);

    let a = claim(&store, "a").await;
    assert!(finish(&store, &a, failure()).await);
    assert_eq!(status(&store, callback).await, Status::Blocked);
    store
        .task_retry(&TaskRetryParams {
            id: ids[0],
            now: now(),
        })
        .await
        .unwrap();
    // b ends while a runs again: the callback still waits for a.
    let b = claim(&store, "b").await;
    assert!(finish(&store, &b, success()).await);
    assert_eq!(status(&store, callback).await, Status::Blocked);
    let a = claim(&store, "a").await;
    assert!(finish(&store, &a, success()).await);
    assert_eq!(status(&store, callback).await, Status::Pending);
    assert_eq!(resolve(&store).await, 0);
}

#[tokio::test]
async fn stale_finish_of_a_dependency_settles_nothing() {
    let db = TempDb::new();
    let store = db.open().await;
    let dep = insert(&store, vec![task("dep")]).await[0];
    let dependent = insert(
        &store,
        vec![task("child").options(TaskOptions::new().queue("flow").depends_on(dep))],
    )
    .await[0];
    let first = claim(&store, "dep").await;
    let rescued = store
        .task_rescue_expired(&TaskRescueParams {
            now: now() + chrono::Duration::seconds(60),
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(rescued.len(), 1);
    assert_eq!(rescued[0].status, Status::Pending);
    assert!(!finish(&store, &first, failure()).await);
    assert_eq!(status(&store, dependent).await, Status::Blocked);
    let second = claim(&store, "dep").await;
    assert!(finish(&store, &second, success()).await);
    assert_eq!(status(&store, dependent).await, Status::Pending);
}

#[tokio::test]
async fn delete_and_purge_remove_edges() {
    let db = TempDb::new();
    let store = db.open().await;
    let dep = insert(&store, vec![task("dep")]).await[0];
    let mut after = task("after");
    after.after = vec![dep];
    let ids = insert(
        &store,
        vec![
            task("child").options(TaskOptions::new().queue("flow").depends_on(dep)),
            after,
        ],
    )
    .await;
    assert_eq!(edges(&db), 2);
    store
        .task_delete(&offload_store::TaskDeleteParams {
            id: ids[0],
            now: chrono::Utc::now(),
        })
        .await
        .unwrap();
    assert_eq!(edges(&db), 1);
    let d = claim(&store, "dep").await;
    assert!(finish(&store, &d, success()).await);
    assert_eq!(status(&store, ids[1]).await, Status::Pending);
    let purged = store
        .task_purge(&TaskPurgeParams {
            filter: TaskFilter::default(),
            finished_before: None,
            limit: None,
        })
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert_eq!(edges(&db), 0);
}

#[tokio::test]
async fn import_recreates_edges_and_resolve_settles_what_is_stuck() {
    let source_db = TempDb::new();
    let source = source_db.open().await;
    let dep = insert(&source, vec![task("dep")]).await[0];
    let child = insert(
        &source,
        vec![task("child").options(TaskOptions::new().queue("flow").depends_on(dep))],
    )
    .await[0];
    let records = source
        .task_export(&TaskExportParams {
            after: None,
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].task.depends_on, vec![dep]);

    // Both copied: the edge works as in the source.
    let whole_db = TempDb::new();
    let whole = whole_db.open().await;
    whole
        .task_import(&TaskImportParams {
            records: records.clone(),
        })
        .await
        .unwrap();
    assert_eq!(edges(&whole_db), 1);
    assert_eq!(resolve(&whole).await, 0);
    let d = claim(&whole, "dep").await;
    assert!(finish(&whole, &d, success()).await);
    assert_eq!(status(&whole, child).await, Status::Pending);

    // The dependent alone: its missing dependency counts as met.
    let alone_db = TempDb::new();
    let alone = alone_db.open().await;
    alone
        .task_import(&TaskImportParams {
            records: vec![records[1].clone()],
        })
        .await
        .unwrap();
    assert_eq!(status(&alone, child).await, Status::Blocked);
    assert_eq!(resolve(&alone).await, 1);
    assert_eq!(status(&alone, child).await, Status::Pending);

    // A dependency copied as failed: the dependent is aborted.
    let failed_db = TempDb::new();
    let failed = failed_db.open().await;
    let mut records = records;
    records[0].task.status = Status::Failed;
    records[0].task.finished_at = Some(now());
    failed
        .task_import(&TaskImportParams { records })
        .await
        .unwrap();
    assert_eq!(resolve(&failed).await, 1);
    let t = failed.task_get(child).await.unwrap().unwrap();
    assert_eq!(t.status, Status::Aborted);
    assert_eq!(t.error.unwrap().kind, "dependency_failed");
}

#[tokio::test]
async fn debounce_into_a_blocked_holder_keeps_it_blocked() {
    let db = TempDb::new();
    let store = db.open().await;
    let dep = insert(&store, vec![task("dep")]).await[0];
    let keyed = |n: i32| {
        NewTask::new("keyed", json!({ "n": n })).options(
            TaskOptions::new()
                .queue("flow")
                .depends_on(dep)
                .unique_key("k")
                .unique(UniquePolicy::debounce(Duration::from_secs(5))),
        )
    };
    let first = store
        .task_insert_many(&TaskInsertParams {
            tasks: vec![keyed(1)],
            now: now(),
        })
        .await
        .unwrap()[0];
    assert_eq!(first.outcome, EnqueueOutcome::Created);
    let second = store
        .task_insert_many(&TaskInsertParams {
            tasks: vec![keyed(2)],
            now: now(),
        })
        .await
        .unwrap()[0];
    assert_eq!(second.id, first.id);
    assert_eq!(second.outcome, EnqueueOutcome::Debounced);
    let holder = store.task_get(first.id).await.unwrap().unwrap();
    assert_eq!(holder.status, Status::Blocked);
    assert_eq!(holder.input, json!({ "n": 2 }));
    assert_eq!(holder.unique_key.as_deref(), Some("k"));
    let d = claim(&store, "dep").await;
    assert!(finish(&store, &d, success()).await);
    // Unblocked into its debounced start.
    assert_eq!(status(&store, first.id).await, Status::Scheduled);
}

#[tokio::test]
async fn a_version_2_file_is_migrated_with_its_tasks() {
    let db = TempDb::new();
    let store = db.open().await;
    let old = insert(&store, vec![task("old")]).await[0];
    drop(store);
    {
        // Back to schema version 2, as an older offload left it.
        let conn = rusqlite::Connection::open(db.path()).unwrap();
        conn.execute_batch(
            "DROP INDEX tasks_pending_fair; DROP INDEX tasks_waiting_fair_name; \
             DROP INDEX tasks_waiting_fair_queue; DROP TABLE limits; DROP TABLE limit_starts; \
             DROP TABLE fairness_served; ALTER TABLE tasks DROP COLUMN fairness_key; \
             DROP INDEX tasks_unique; DROP INDEX tasks_group; DROP INDEX tasks_blocked; \
             DROP TABLE task_deps; \
             ALTER TABLE tasks DROP COLUMN unique_key; ALTER TABLE tasks DROP COLUMN depends_on; \
             ALTER TABLE tasks DROP COLUMN \"after\"; ALTER TABLE tasks DROP COLUMN group_id; \
             ALTER TABLE tasks DROP COLUMN deps_waiting; \
             ALTER TABLE tasks DROP COLUMN has_dependents; \
             ALTER TABLE idempotency_keys DROP COLUMN outcomes; \
             DROP TABLE schedules; \
             DELETE FROM offload_migrations WHERE version >= 3;",
        )
        .unwrap();
    }
    let store = db.open().await;
    let t = store.task_get(old).await.unwrap().unwrap();
    assert!(t.depends_on.is_empty() && t.unique_key.is_none() && t.group_id.is_none());
    let child = insert(
        &store,
        vec![task("child").options(TaskOptions::new().queue("flow").depends_on(old))],
    )
    .await[0];
    assert_eq!(status(&store, child).await, Status::Blocked);
    let o = claim(&store, "old").await;
    assert!(finish(&store, &o, success()).await);
    assert_eq!(status(&store, child).await, Status::Pending);
}
