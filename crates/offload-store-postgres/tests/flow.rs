//! Dependencies and unique keys where only the PostgreSQL store can be
//! looked at closely: the edge rows and counters behind them, the safety
//! net repairing a state a lost race would leave, enqueueing with
//! dependencies inside the application's transaction, many processes
//! racing an insert against a finish, copying edges between stores, and
//! idempotency rows written before outcomes were stored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chrono::Utc;
use offload_store::{
    FinishOutcome, IdempotencyKey, LeaseRef, Store, StoreError, TaskClaimParams, TaskDeleteParams,
    TaskExportParams, TaskFinish, TaskFinishParams, TaskImportParams, TaskInsertParams,
    TaskPurgeParams, TaskResolveParams, TaskRetryParams,
};
use offload_store_postgres::{PgStore, sqlx};
use offload_test_support::PgSchema;
use offload_types::{NewTask, Status, Task, TaskErrorRecord, TaskId, TaskOptions};
use serde_json::json;
use sqlx::Row;

async fn open(schema: &PgSchema) -> PgStore {
    PgStore::open_url(&schema.url_with("pool_size=4"))
        .await
        .unwrap()
}

fn q(schema: &PgSchema) -> String {
    format!("\"{}\"", schema.name())
}

async fn insert(store: &PgStore, tasks: Vec<NewTask>) -> Result<Vec<TaskId>, StoreError> {
    let out = store
        .task_insert_many(&TaskInsertParams {
            tasks,
            now: Utc::now(),
        })
        .await?;
    Ok(out.into_iter().map(|e| e.id).collect())
}

fn task(name: &str) -> NewTask {
    NewTask::new(name, json!({}))
}

fn after(name: &str, deps: &[TaskId]) -> NewTask {
    let mut t = task(name);
    t.after = deps.to_vec();
    t
}

fn depends(name: &str, deps: &[TaskId]) -> NewTask {
    let mut o = TaskOptions::new();
    for d in deps {
        o = o.depends_on(*d);
    }
    task(name).options(o)
}

async fn get(store: &PgStore, id: TaskId) -> Task {
    store.task_get(id).await.unwrap().unwrap()
}

/// Claims the one pending task named `name` and finishes it with `outcome`.
async fn run(store: &PgStore, name: &str, outcome: FinishOutcome) -> TaskId {
    let claimed = store
        .task_claim(&TaskClaimParams {
            queue: "default".to_owned(),
            names: Some(vec![name.to_owned()]),
            limit: 1,
            worker_id: "w".to_owned(),
            lease: Duration::from_secs(30),
            now: Utc::now(),
        })
        .await
        .unwrap();
    let t = claimed.into_iter().next().expect("a claimable task");
    let r = store
        .task_finish_many(&TaskFinishParams {
            items: vec![TaskFinish {
                lease: LeaseRef {
                    id: t.id,
                    lease_token: t.lease_token.unwrap(),
                },
                outcome,
            }],
            now: Utc::now(),
        })
        .await
        .unwrap();
    assert!(r[0].accepted, "{r:?}");
    t.id
}

/// Unblocked: `pending`, or `scheduled` when its `run_at` was later than
/// the `now` of the call that unblocked it.
fn ready(s: Status) -> bool {
    matches!(s, Status::Pending | Status::Scheduled)
}

fn ok() -> FinishOutcome {
    FinishOutcome::Success { output: json!(1) }
}

fn fail() -> FinishOutcome {
    FinishOutcome::Fail {
        error: TaskErrorRecord {
            kind: "boom".to_owned(),
            message: "boom".to_owned(),
            attempt: 1,
            at: Utc::now(),
        },
    }
}

async fn edges(store: &PgStore, schema: &PgSchema) -> i64 {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {}.task_deps",
        q(schema)
    )))
    .fetch_one(store.pool())
    .await
    .unwrap()
    .get(0)
}

async fn counters(store: &PgStore, schema: &PgSchema, id: TaskId) -> (i32, bool) {
    let r = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT deps_waiting, has_dependents FROM {}.tasks WHERE id = $1",
        q(schema)
    )))
    .bind(id.0)
    .fetch_one(store.pool())
    .await
    .unwrap();
    (r.get(0), r.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_and_counters_follow_the_tasks() {
    let schema = PgSchema::new().await;
    let store = open(&schema).await;
    let plain = insert(&store, vec![task("plain")]).await.unwrap()[0];
    assert_eq!(counters(&store, &schema, plain).await, (0, false));
    let d = task("d");
    let d_id = d.id;
    let t = depends("t", &[d_id]);
    let t_id = t.id;
    insert(&store, vec![d, t]).await.unwrap();
    assert_eq!(counters(&store, &schema, d_id).await, (0, true));
    assert_eq!(counters(&store, &schema, t_id).await, (1, false));
    assert_eq!(edges(&store, &schema).await, 1);
    assert_eq!(get(&store, t_id).await.status, Status::Blocked);

    run(&store, "d", ok()).await;
    assert_eq!(get(&store, t_id).await.status, Status::Pending);
    assert_eq!(counters(&store, &schema, t_id).await.0, 0);
    run(&store, "t", ok()).await;
    let purged = store.task_purge(&TaskPurgeParams::default()).await.unwrap();
    assert_eq!(purged, 2);
    assert_eq!(edges(&store, &schema).await, 0, "purge removes the edges");

    // Deleting a blocked dependent removes its edge too.
    let d = task("d2");
    let d_id = d.id;
    let t = depends("t2", &[d_id]);
    let t_id = t.id;
    insert(&store, vec![d, t]).await.unwrap();
    store
        .task_delete(&TaskDeleteParams {
            id: t_id,
            now: chrono::Utc::now(),
        })
        .await
        .unwrap();
    assert_eq!(edges(&store, &schema).await, 0);
    // d2 still finishes normally (its flag is stale, nothing waits).
    run(&store, "d2", ok()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_blocked_repairs_what_a_lost_race_would_leave() {
    let schema = PgSchema::new().await;
    let store = open(&schema).await;
    let q = q(&schema);
    let d = task("d");
    let d_id = d.id;
    let t = depends("t", &[d_id]);
    let t_id = t.id;
    insert(&store, vec![d, t]).await.unwrap();
    run(&store, "d", ok()).await;
    // As if the finish had missed the edge.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {q}.tasks SET status = 'blocked', deps_waiting = 1 WHERE id = $1"
    )))
    .bind(t_id.0)
    .execute(store.pool())
    .await
    .unwrap();
    let params = TaskResolveParams {
        limit: 10,
        now: Utc::now(),
    };
    assert_eq!(store.task_resolve_blocked(&params).await.unwrap(), 1);
    assert_eq!(get(&store, t_id).await.status, Status::Pending);
    assert_eq!(store.task_resolve_blocked(&params).await.unwrap(), 0);

    // A dependency that failed: the blocked dependent is aborted, and the
    // abort cascades to what depends on it.
    let f = task("f");
    let f_id = f.id;
    let a = depends("a", &[f_id]);
    let a_id = a.id;
    let b = depends("b", &[a_id]);
    let b_id = b.id;
    let c = after("c", &[a_id]);
    let c_id = c.id;
    insert(&store, vec![f, a, b, c]).await.unwrap();
    // The failure is written behind the store's back, so no cascade ran.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {q}.tasks SET status = 'failed', finished_at = now() WHERE id = $1"
    )))
    .bind(f_id.0)
    .execute(store.pool())
    .await
    .unwrap();
    assert_eq!(store.task_resolve_blocked(&params).await.unwrap(), 3);
    let a = get(&store, a_id).await;
    assert_eq!(a.status, Status::Aborted);
    let error = a.error.unwrap();
    assert_eq!(error.kind, "dependency_failed");
    assert!(error.message.contains(&f_id.to_string()), "{error:?}");
    assert_eq!(get(&store, b_id).await.status, Status::Aborted);
    assert!(ready(get(&store, c_id).await.status));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_an_ended_dependency_makes_after_edges_wait_again() {
    let schema = PgSchema::new().await;
    let store = open(&schema).await;
    let d1 = task("d1");
    let d2 = task("d2");
    let (d1_id, d2_id) = (d1.id, d2.id);
    let cb = after("cb", &[d1_id, d2_id]);
    let cb_id = cb.id;
    insert(&store, vec![d1, d2, cb]).await.unwrap();
    run(&store, "d1", fail()).await;
    assert_eq!(counters(&store, &schema, cb_id).await.0, 1);
    store
        .task_retry(&TaskRetryParams {
            id: d1_id,
            now: Utc::now(),
        })
        .await
        .unwrap();
    assert_eq!(counters(&store, &schema, cb_id).await.0, 2);
    run(&store, "d2", ok()).await;
    assert_eq!(get(&store, cb_id).await.status, Status::Blocked);
    run(&store, "d1", fail()).await;
    assert_eq!(get(&store, cb_id).await.status, Status::Pending);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_in_with_dependencies_uses_a_savepoint() {
    let schema = PgSchema::new().await;
    let store = open(&schema).await;
    let d = insert(&store, vec![task("d")]).await.unwrap()[0];
    let mut tx = store.pool().begin().await.unwrap();
    let plain = task("plain");
    store
        .insert_in(&mut tx, std::slice::from_ref(&plain), Utc::now())
        .await
        .unwrap();
    let err = store
        .insert_in(&mut tx, &[depends("t", &[TaskId::new()])], Utc::now())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    let t = depends("t", &[d]);
    let out = store
        .insert_in(&mut tx, std::slice::from_ref(&t), Utc::now())
        .await
        .unwrap();
    assert_eq!(out[0].id, t.id);
    tx.commit().await.unwrap();
    assert_eq!(get(&store, plain.id).await.status, Status::Pending);
    assert_eq!(get(&store, t.id).await.status, Status::Blocked);
    run(&store, "d", ok()).await;
    assert_eq!(get(&store, t.id).await.status, Status::Pending);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_racing_finishes_across_processes_never_leave_a_task_blocked() {
    let schema = PgSchema::new().await;
    let a = open(&schema).await;
    let b = open(&schema).await;
    for round in 0..25 {
        let name = format!("d{round}");
        let d = insert(&a, vec![task(&name)]).await.unwrap()[0];
        let claimed = a
            .task_claim(&TaskClaimParams {
                queue: "default".to_owned(),
                names: Some(vec![name.clone()]),
                limit: 1,
                worker_id: "w".to_owned(),
                lease: Duration::from_secs(30),
                now: Utc::now(),
            })
            .await
            .unwrap();
        let token = claimed[0].lease_token.unwrap();
        let outcome = if round % 2 == 0 { ok() } else { fail() };
        let params = TaskFinishParams {
            items: vec![TaskFinish {
                lease: LeaseRef {
                    id: d,
                    lease_token: token,
                },
                outcome,
            }],
            now: Utc::now(),
        };
        let finish = a.task_finish_many(&params);
        let dependent = after("t", &[d]);
        let t_id = dependent.id;
        let (finished, inserted) = tokio::join!(finish, insert(&b, vec![dependent]));
        assert!(finished.unwrap()[0].accepted);
        inserted.unwrap();
        let t = get(&a, t_id).await;
        // Scheduled when the finish's `now` came before the insert's.
        assert!(ready(t.status), "round {round}: {t:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copied_edges_keep_waiting_in_the_target() {
    let from_schema = PgSchema::new().await;
    let to_schema = PgSchema::new().await;
    let from = open(&from_schema).await;
    let to = open(&to_schema).await;
    let d = task("d");
    let d_id = d.id;
    let t = depends("t", &[d_id]);
    let t_id = t.id;
    let mut g = after("g", &[d_id]);
    g.group_id = Some(t_id);
    let g_id = g.id;
    insert(&from, vec![d, t, g]).await.unwrap();
    let records = from
        .task_export(&TaskExportParams {
            after: None,
            limit: 100,
        })
        .await
        .unwrap();
    let result = to.task_import(&TaskImportParams { records }).await.unwrap();
    assert_eq!(result.inserted, 3);
    assert_eq!(edges(&to, &to_schema).await, 2);
    assert_eq!(counters(&to, &to_schema, d_id).await, (0, true));
    assert_eq!(counters(&to, &to_schema, t_id).await, (1, false));
    let copied = get(&to, g_id).await;
    assert_eq!(copied.after, vec![d_id]);
    assert_eq!(copied.group_id, Some(t_id));
    run(&to, "d", ok()).await;
    assert_eq!(get(&to, t_id).await.status, Status::Pending);
    assert_eq!(get(&to, g_id).await.status, Status::Pending);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_rows_without_outcomes_replay_created() {
    let schema = PgSchema::new().await;
    let store = open(&schema).await;
    let id = TaskId::new();
    let expires_at = Utc::now() + chrono::Duration::hours(1);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {}.idempotency_keys (key, fingerprint, task_ids, created_at, expires_at) \
         VALUES ('k', 'f', $1, now(), $2)",
        q(&schema)
    )))
    .bind(vec![id.0])
    .bind(expires_at)
    .execute(store.pool())
    .await
    .unwrap();
    let replay = store
        .task_insert_idempotent(
            &TaskInsertParams {
                tasks: vec![task("x")],
                now: Utc::now(),
            },
            &IdempotencyKey {
                key: "k".to_owned(),
                fingerprint: "f".to_owned(),
                expires_at,
            },
        )
        .await
        .unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.tasks, vec![offload_types::Enqueued::created(id)]);
}

/// Claims the pending tasks named `names` (one each).
async fn claim_named(store: &PgStore, names: &[&str]) -> Vec<Task> {
    let tasks = store
        .task_claim(&TaskClaimParams {
            queue: "default".to_owned(),
            names: Some(names.iter().map(|n| (*n).to_owned()).collect()),
            limit: u32::try_from(names.len()).unwrap(),
            worker_id: "w".to_owned(),
            lease: Duration::from_secs(30),
            now: Utc::now(),
        })
        .await
        .unwrap();
    assert_eq!(tasks.len(), names.len());
    tasks
}

fn finish_of(t: &Task, outcome: FinishOutcome) -> TaskFinish {
    TaskFinish {
        lease: LeaseRef {
            id: t.id,
            lease_token: t.lease_token.unwrap(),
        },
        outcome,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_finish_batch_mixes_tasks_with_and_without_dependents() {
    let schema = PgSchema::new().await;
    let store = open(&schema).await;
    let plain = task("plain");
    let d = task("d");
    let stale = task("stale");
    let t = depends("t", &[d.id]);
    let t_id = t.id;
    insert(&store, vec![plain, d, stale, t]).await.unwrap();
    let claimed = claim_named(&store, &["plain", "d", "stale"]).await;
    let mut items: Vec<TaskFinish> = claimed.iter().map(|t| finish_of(t, ok())).collect();
    // A stale lease is refused, on both paths.
    if let Some(i) = items.iter_mut().find(|i| {
        claimed
            .iter()
            .any(|c| c.id == i.lease.id && c.name == "stale")
    }) {
        i.lease.lease_token = offload_types::LeaseToken(uuid::Uuid::new_v4());
    }
    let results = store
        .task_finish_many(&TaskFinishParams {
            items,
            now: Utc::now(),
        })
        .await
        .unwrap();
    for (r, c) in results.iter().zip(&claimed) {
        assert_eq!(r.id, c.id);
        if c.name == "stale" {
            assert!(!r.accepted);
            assert_eq!(r.status, Some(Status::Running));
        } else {
            assert!(r.accepted, "{r:?}");
            assert_eq!(r.status, Some(Status::Success));
        }
    }
    assert!(ready(get(&store, t_id).await.status));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_of_a_diamond_finishing_at_once_do_not_deadlock() {
    let schema = PgSchema::new().await;
    let a = open(&schema).await;
    let b = open(&schema).await;
    for round in 0..10 {
        let d1 = task("d1");
        let d2 = task("d2");
        let deps = [d1.id, d2.id];
        let x = after("x", &deps);
        let y = depends("y", &deps);
        let z = after("z", &[deps[1], deps[0]]);
        let ids = [x.id, y.id, z.id];
        insert(&a, vec![d1, d2, x, y, z]).await.unwrap();
        let claimed = claim_named(&a, &["d1", "d2"]).await;
        let p1 = TaskFinishParams {
            items: vec![finish_of(&claimed[0], ok())],
            now: Utc::now(),
        };
        let p2 = TaskFinishParams {
            items: vec![finish_of(&claimed[1], ok())],
            now: Utc::now(),
        };
        let (r1, r2) = tokio::join!(a.task_finish_many(&p1), b.task_finish_many(&p2));
        assert!(r1.unwrap()[0].accepted, "round {round}");
        assert!(r2.unwrap()[0].accepted, "round {round}");
        for id in ids {
            let t = get(&a, id).await;
            assert!(ready(t.status), "round {round}: {t:?}");
        }
        // Drain them for the next round.
        let done = claim_named(&a, &["x", "y", "z"]).await;
        a.task_finish_many(&TaskFinishParams {
            items: done.iter().map(|t| finish_of(t, ok())).collect(),
            now: Utc::now(),
        })
        .await
        .unwrap();
    }
}
