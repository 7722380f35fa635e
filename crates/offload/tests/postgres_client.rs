//! The library on PostgreSQL: a worker runs what a client enqueues (and a
//! waiter in another "process" hears the result through LISTEN/NOTIFY),
//! and `trigger_in_tx` enqueues exactly when the application's transaction
//! commits.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use offload::postgres::sqlx;
use offload::{Client, Context, Controller, NewTask, Runner, Status, Task, TaskError, Worker};
use offload_test_support::PgSchema;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

struct Double;

#[offload::async_trait]
impl Runner for Double {
    async fn run(
        &self,
        task: &Task,
        _ctx: &Context,
        _ctl: &Controller,
    ) -> Result<Value, TaskError> {
        Ok(json!(task.input["n"].as_i64().unwrap_or(0) * 2))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_runs_tasks_and_another_client_hears_the_results() {
    let schema = PgSchema::new().await;
    let url = schema.url_with("pool_size=4");
    let producer = Client::connect(&url).await.unwrap();
    let observer = Client::connect(&url).await.unwrap();
    let worker = Worker::builder(offload::open(&url).await.unwrap())
        .runner("double", Double)
        .concurrency(8)
        .build()
        .unwrap()
        .start();
    let handles = producer
        .trigger_many(
            (0..50)
                .map(|n| NewTask::new("double", json!({ "n": n })))
                .collect(),
        )
        .await
        .unwrap();
    for (n, h) in handles.iter().enumerate() {
        let seen = observer.handle(h.id());
        assert_eq!(seen.result(WAIT).await.unwrap(), json!(n * 2));
    }
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_in_tx_enqueues_only_when_the_transaction_commits() {
    let schema = PgSchema::new().await;
    let url = schema.url_with("pool_size=4");
    let client = Client::connect(&url).await.unwrap();
    let app = sqlx::PgPool::connect(&offload_test_support::database_url())
        .await
        .unwrap();
    let signups = format!("\"{}\".signups", schema.name());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {signups} (email text)"
    )))
    .execute(&app)
    .await
    .unwrap();

    let mut tx = app.begin().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {signups} VALUES ($1)"
    )))
    .bind("rolled-back@example.com")
    .execute(&mut *tx)
    .await
    .unwrap();
    let gone = client
        .trigger_in_tx(&mut tx, vec![NewTask::new("welcome", json!({"n": 1}))])
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert!(matches!(
        gone[0].task().await,
        Err(offload::Error::NotFound(_))
    ));

    let worker = Worker::builder(client.store().clone())
        .runner("welcome", Double)
        .build()
        .unwrap()
        .start();
    let mut tx = app.begin().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {signups} VALUES ($1)"
    )))
    .bind("kept@example.com")
    .execute(&mut *tx)
    .await
    .unwrap();
    let kept = client
        .trigger_in_tx(&mut tx, vec![NewTask::new("welcome", json!({"n": 21}))])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(kept[0].result(WAIT).await.unwrap(), json!(42));
    assert_eq!(kept[0].task().await.unwrap().status, Status::Success);
    worker.shutdown().await.unwrap();

    let count = client.count(Default::default()).await.unwrap();
    let total: u64 = count.iter().map(|c| c.count).sum();
    assert_eq!(total, 1, "only the committed task exists");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_in_tx_on_sqlite_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::connect(&format!("sqlite://{}", dir.path().join("o.db").display()))
        .await
        .unwrap();
    let schema = PgSchema::new().await;
    let pool = sqlx::PgPool::connect(&offload_test_support::database_url())
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let err = client
        .trigger_in_tx(&mut conn, vec![NewTask::new("x", json!(1))])
        .await
        .unwrap_err();
    assert!(matches!(err, offload::Error::UnsupportedUrl(_)), "{err:?}");
    drop(schema);
}
