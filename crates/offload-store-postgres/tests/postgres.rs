//! What only the PostgreSQL store does: plans that stay on the partial
//! indexes with a million finished tasks, enqueue inside the
//! application's transaction, wake-ups across processes, migrations
//! racing, refusing foreign or newer schemas, and surviving terminated
//! connections.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chrono::Utc;
use offload_store::{
    EventFilter, EventKind, EventListParams, Notification, Store, StoreError, TaskClaimParams,
    TaskInsertParams,
};
use offload_store_postgres::{PgStore, sqlx};
use offload_test_support::PgSchema;
use offload_types::{NewTask, Status, TaskOptions};
use serde_json::json;
use sqlx::Row;

async fn open(schema: &PgSchema) -> PgStore {
    PgStore::open_url(&schema.url_with("pool_size=4"))
        .await
        .unwrap()
}

fn claim(queue: &str, limit: u32) -> TaskClaimParams {
    TaskClaimParams {
        queue: queue.to_owned(),
        names: None,
        limit,
        worker_id: "w".to_owned(),
        lease: Duration::from_secs(30),
        now: Utc::now(),
    }
}

/// Waits up to `secs` for a notification matching `want`.
async fn wait_for(
    rx: &mut tokio::sync::broadcast::Receiver<Notification>,
    secs: u64,
    want: impl Fn(&Notification) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(n)) if want(&n) => return true,
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(_)) | Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_statements_use_partial_indexes_with_a_million_finished_tasks() {
    let schema = PgSchema::new().await;
    let store = open(&schema).await;
    let q = format!("\"{}\"", schema.name());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {q}.tasks (id, name, queue, input, status, attempt, max_attempts, run_at, \
         created_at, started_at, finished_at, updated_at, output) \
         SELECT gen_random_uuid(), 'done', 'default', '{{}}', 'success', 1, 3, now(), now(), \
         now(), now(), now(), '{{}}' FROM generate_series(1, 1000000); \
         ANALYZE {q}.tasks;"
    )))
    .execute(store.pool())
    .await
    .unwrap();
    let mut tasks: Vec<NewTask> = (0..50)
        .map(|i| NewTask::new("ready", json!({ "i": i })))
        .collect();
    tasks.extend((0..50).map(|i| {
        NewTask::new("later", json!({ "i": i }))
            .options(TaskOptions::new().delay(Duration::from_secs(3600)))
    }));
    store
        .task_insert_many(&TaskInsertParams {
            tasks,
            now: Utc::now(),
        })
        .await
        .unwrap();
    for (statement, plan) in store.explain_hot().await.unwrap() {
        let text = plan.join("\n");
        assert!(!text.contains("Seq Scan on tasks"), "{statement}:\n{text}");
        match statement {
            "claim" | "claim_named" => {
                assert!(text.contains("tasks_pending"), "{statement}:\n{text}");
                assert!(text.contains("tasks_scheduled"), "{statement}:\n{text}");
            }
            // By id, or through the (small) running set.
            _ => assert!(
                text.contains("tasks_pkey") || text.contains("tasks_running"),
                "{statement}:\n{text}"
            ),
        }
    }
    let started = std::time::Instant::now();
    let claimed = store.task_claim(&claim("default", 100)).await.unwrap();
    assert_eq!(claimed.len(), 50, "only the ready ones");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a claim beside a million finished tasks took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_in_a_transaction_exists_only_if_it_commits() {
    let schema = PgSchema::new().await;
    let store = open(&schema).await;
    let other = open(&schema).await;
    let mut rx = other.notifier().subscribe();
    let pool = store.pool().clone();

    let rolled_back = NewTask::new("welcome", json!({"to": "a"}));
    let mut tx = pool.begin().await.unwrap();
    let ids = store
        .insert_in(&mut tx, std::slice::from_ref(&rolled_back), Utc::now())
        .await
        .unwrap();
    assert_eq!(ids, vec![offload_types::Enqueued::created(rolled_back.id)]);
    tx.rollback().await.unwrap();
    assert!(store.task_get(rolled_back.id).await.unwrap().is_none());

    let committed = NewTask::new("welcome", json!({"to": "b"}));
    let mut tx = pool.begin().await.unwrap();
    store
        .insert_in(&mut tx, std::slice::from_ref(&committed), Utc::now())
        .await
        .unwrap();
    assert!(
        other.task_get(committed.id).await.unwrap().is_none(),
        "not visible before commit"
    );
    tx.commit().await.unwrap();
    let task = other.task_get(committed.id).await.unwrap().unwrap();
    assert_eq!(task.status, Status::Pending);
    assert!(
        wait_for(
            &mut rx,
            5,
            |n| matches!(n, Notification::Available { queue: Some(q) } if q == "default")
        )
        .await,
        "the commit woke the other store"
    );
    // The store's own listener delivers it to its own subscribers too.
    let mut own = store.notifier().subscribe();
    let third = NewTask::new("welcome", json!({"to": "c"}));
    let mut tx = pool.begin().await.unwrap();
    store
        .insert_in(&mut tx, &[third], Utc::now())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(wait_for(&mut own, 5, |n| matches!(n, Notification::Available { .. })).await);

    // A bad task fails the statement and so the application's transaction.
    let mut tx = pool.begin().await.unwrap();
    let err = store
        .insert_in(&mut tx, &[NewTask::new("", json!({}))], Utc::now())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    tx.rollback().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_in_one_process_wake_another() {
    let schema = PgSchema::new().await;
    let a = open(&schema).await;
    let b = open(&schema).await;
    let mut rx = b.notifier().subscribe();
    let id = a
        .task_insert_many(&TaskInsertParams {
            tasks: vec![NewTask::new("x", json!(1)).options(TaskOptions::new().queue("mail"))],
            now: Utc::now(),
        })
        .await
        .unwrap()[0]
        .id;
    assert!(
        wait_for(&mut rx, 5, |n| *n
            == Notification::Available {
                queue: Some("mail".into())
            })
        .await
    );
    let t = a.task_claim(&claim("mail", 1)).await.unwrap().remove(0);
    a.task_abort(&offload_store::TaskAbortParams {
        id,
        reason: None,
        now: Utc::now(),
    })
    .await
    .unwrap();
    assert!(
        wait_for(&mut rx, 5, |n| *n
            == Notification::AbortRequested { ids: vec![id] })
        .await
    );
    let lease = offload_store::LeaseRef {
        id,
        lease_token: t.lease_token.unwrap(),
    };
    a.task_finish_many(&offload_store::TaskFinishParams {
        items: vec![offload_store::TaskFinish {
            lease,
            outcome: offload_store::FinishOutcome::Success { output: json!(2) },
        }],
        now: Utc::now(),
    })
    .await
    .unwrap();
    assert!(wait_for(&mut rx, 5, |n| n.concerns(id)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_opening_at_once_migrate_once() {
    let schema = PgSchema::new().await;
    let url = schema.url_with("pool_size=2");
    let opens = (0..6).map(|_| PgStore::open_url(&url));
    let stores = futures::future::join_all(opens).await;
    assert!(stores.iter().all(Result::is_ok), "{stores:?}");
    let store = stores.into_iter().next().unwrap().unwrap();
    let n: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{}\".offload_migrations",
        schema.name()
    )))
    .fetch_one(store.pool())
    .await
    .unwrap()
    .get(0);
    // one row per migration, each applied once
    assert_eq!(n, i64::from(offload_store_postgres::SCHEMA_VERSION));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_and_newer_schemas_are_refused_untouched() {
    let schema = PgSchema::new().await;
    let admin = sqlx::PgPool::connect(&offload_test_support::database_url())
        .await
        .unwrap();
    let q = format!("\"{}\"", schema.name());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA {q}; CREATE TABLE {q}.invoices (id int)"
    )))
    .execute(&admin)
    .await
    .unwrap();
    let err = PgStore::open_url(&schema.url()).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt(ref m) if m.contains("invoices")),
        "{err:?}"
    );
    let tables: i64 =
        sqlx::query("SELECT count(*) FROM information_schema.tables WHERE table_schema = $1")
            .bind(schema.name())
            .fetch_one(&admin)
            .await
            .unwrap()
            .get(0);
    assert_eq!(tables, 1, "nothing was created");

    let newer = PgSchema::new().await;
    let store = PgStore::open_url(&newer.url()).await.unwrap();
    drop(store);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO \"{}\".offload_migrations (version, name) VALUES (999, 'future')",
        newer.name()
    )))
    .execute(&admin)
    .await
    .unwrap();
    let err = PgStore::open_url(&newer.url()).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt(ref m) if m.contains("999")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_are_refused_with_the_field() {
    for url in [
        "postgres://127.0.0.1:5432/test?schema=No-Caps",
        "postgres://127.0.0.1:5432/test?pool_size=0",
    ] {
        let err = PgStore::open_url(url).await.unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{url}: {err:?}");
    }
    let err = PgStore::open_url("postgres://postgres@127.0.0.1:1/test?acquire_timeout=1s")
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_connections_are_replaced_and_the_listener_comes_back() {
    let schema = PgSchema::new().await;
    let app = format!("offload_{}", schema.name());
    let url = schema.url_with(&format!("application_name={app}"));
    let a = PgStore::open_url(&url).await.unwrap();
    let b = open(&schema).await;
    let mut rx = a.notifier().subscribe();
    let admin = sqlx::PgPool::connect(&offload_test_support::database_url())
        .await
        .unwrap();
    // Let the listener connect, then cut every session of store `a`.
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let n: i64 =
                sqlx::query("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
                    .bind(&app)
                    .fetch_one(&admin)
                    .await
                    .unwrap()
                    .get(0);
            if n >= 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    let killed: Vec<sqlx::postgres::PgRow> = sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&app)
    .fetch_all(&admin)
    .await
    .unwrap();
    assert!(!killed.is_empty());
    // Calls work again at once (dead pooled connections are replaced).
    let mut ok = false;
    for _ in 0..20 {
        if a.task_count(&Default::default()).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the store recovered");
    // The listener re-connects and then hears other processes again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut heard = false;
    while tokio::time::Instant::now() < deadline && !heard {
        b.task_insert_many(&TaskInsertParams {
            tasks: vec![NewTask::new("x", json!(1)).options(TaskOptions::new().queue("after"))],
            now: Utc::now(),
        })
        .await
        .unwrap();
        heard = wait_for(&mut rx, 1, |n| {
            *n == Notification::Available {
                queue: Some("after".into()),
            }
        })
        .await;
    }
    assert!(heard, "the listener came back");
}

/// An event of a transaction that commits late is never skipped: while an
/// application's transaction that enqueued a task is open, an event
/// committed after it began (later in the log's `(tx, seq)` order) is not
/// readable yet, so a reader polling meanwhile cannot move its cursor past
/// the open transaction's event; after the commit the reader gets both,
/// in log order, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_a_transaction_that_commits_late_are_not_skipped() {
    let schema = PgSchema::new().await;
    let store = open(&schema).await;
    let reader = open(&schema).await;
    let q = format!("\"{}\"", schema.name());
    let read = |after: Option<String>, names: Vec<String>| {
        let reader = reader.clone();
        async move {
            reader
                .event_list(&EventListParams {
                    after,
                    filter: EventFilter {
                        names,
                        ..EventFilter::default()
                    },
                    limit: 100,
                })
                .await
                .unwrap()
        }
    };

    let late = NewTask::new("late", json!(null));
    let mut tx = store.pool().begin().await.unwrap();
    store
        .insert_in(&mut tx, std::slice::from_ref(&late), Utc::now())
        .await
        .unwrap();
    let early = store
        .task_insert_many(&TaskInsertParams {
            tasks: vec![NewTask::new("early", json!(null))],
            now: Utc::now(),
        })
        .await
        .unwrap()[0]
        .id;
    let committed: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {q}.events WHERE name = 'early'"
    )))
    .fetch_one(reader.pool())
    .await
    .unwrap()
    .get(0);
    assert_eq!(committed, 1, "the later transaction's event has committed");

    let mut cursor = None;
    let mut filtered_cursor = None;
    for _ in 0..10 {
        let page = read(cursor.clone(), Vec::new()).await;
        assert!(
            page.events.is_empty(),
            "nothing is readable while an earlier transaction is open: {:?}",
            page.events
        );
        cursor = page.cursor;
        let page = read(filtered_cursor.clone(), vec!["early".to_owned()]).await;
        assert!(page.events.is_empty(), "{:?}", page.events);
        filtered_cursor = page.cursor;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cursor, None, "the cursor did not move");
    assert_eq!(filtered_cursor, None, "the filtered cursor did not move");
    assert_eq!(reader.event_cursor_latest().await.unwrap(), None);

    tx.commit().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut events = Vec::new();
    while events.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the events were not readable after the commit: {events:?}"
        );
        let page = read(cursor.clone(), Vec::new()).await;
        events.extend(page.events);
        cursor = page.cursor;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        events
            .iter()
            .map(|e| (e.task_id, e.kind))
            .collect::<Vec<_>>(),
        vec![(late.id, EventKind::Created), (early, EventKind::Created)],
        "the late transaction's event first, as the log orders it"
    );
    let page = read(filtered_cursor, vec!["early".to_owned()]).await;
    assert_eq!(
        page.events.iter().map(|e| e.task_id).collect::<Vec<_>>(),
        vec![early],
        "the filtered reader did not skip it either"
    );
    assert!(
        read(cursor, Vec::new()).await.events.is_empty(),
        "each event once"
    );
}
