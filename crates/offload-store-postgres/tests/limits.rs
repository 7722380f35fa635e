//! Limits, fairness and quotas where only the PostgreSQL store can be
//! looked at closely: limited claims through two stores at once never
//! exceed a limit (the schema's advisory lock serialises them), unlimited
//! and fairness-only claims never wait for that lock, quotas hold under
//! concurrent producers, the rate log is trimmed by the claims, and the
//! acceptance case of fairness (10,000 tasks of one key before 10 of
//! another, a worker of concurrency 4).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use offload_store::{
    FinishOutcome, LeaseRef, LimitPutParams, Store, StoreError, TaskClaimParams, TaskFinish,
    TaskFinishParams, TaskInsertParams,
};
use offload_store_postgres::{PgStore, sqlx};
use offload_test_support::PgSchema;
use offload_types::{Limit, NewTask, Task, TaskOptions};
use serde_json::json;
use sqlx::Row;

async fn open(schema: &PgSchema) -> PgStore {
    PgStore::open_url(&schema.url_with("pool_size=8"))
        .await
        .unwrap()
}

/// Now, in whole microseconds (the precision stored times have).
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

async fn put(store: &PgStore, limit: Limit) {
    store
        .limit_put(&LimitPutParams { limit, now: now() })
        .await
        .unwrap();
}

async fn insert(store: &PgStore, tasks: Vec<NewTask>) -> Result<(), StoreError> {
    store
        .task_insert_many(&TaskInsertParams { tasks, now: now() })
        .await
        .map(|_| ())
}

fn claim_params(queue: &str, limit: u32, at: DateTime<Utc>) -> TaskClaimParams {
    TaskClaimParams {
        queue: queue.into(),
        names: None,
        limit,
        worker_id: "w".into(),
        lease: Duration::from_secs(60),
        now: at,
    }
}

async fn claim(store: &PgStore, queue: &str, limit: u32) -> Vec<Task> {
    store
        .task_claim(&claim_params(queue, limit, now()))
        .await
        .unwrap()
}

async fn succeed(store: &PgStore, tasks: &[Task]) {
    let items = tasks
        .iter()
        .map(|t| TaskFinish {
            lease: LeaseRef {
                id: t.id,
                lease_token: t.lease_token.unwrap(),
            },
            outcome: FinishOutcome::Success {
                output: json!(null),
            },
        })
        .collect();
    store
        .task_finish_many(&TaskFinishParams { items, now: now() })
        .await
        .unwrap();
}

fn task(queue: &str, input: serde_json::Value) -> NewTask {
    NewTask::new("job", input).options(TaskOptions::new().queue(queue))
}

fn fair(queue: &str, key: &str) -> NewTask {
    NewTask::new("job", json!(null)).options(TaskOptions::new().queue(queue).fairness_key(key))
}

/// Many claimers at once, through two stores (two pools, as two
/// processes), each taking as much as it can: the total never passes the
/// limit, round after round, for a concurrency, a per-key concurrency and
/// a rate limit.
#[tokio::test]
async fn concurrent_claimers_through_two_stores_never_exceed_a_limit() {
    let schema = PgSchema::new().await;
    let stores = [Arc::new(open(&schema).await), Arc::new(open(&schema).await)];
    for (queue, allowed) in [("conc", 3usize), ("keyed", 4), ("rated", 4)] {
        for round in 0..5 {
            let q = format!("{queue}-{round}");
            // a fresh queue (and its limit) per round
            let limit = match queue {
                "conc" => Limit::queue(q.clone()).concurrency(3),
                "keyed" => Limit::queue(q.clone()).per_key("customer", 2),
                _ => Limit::queue(q.clone()).rate("4/h".parse().unwrap()),
            };
            put(&stores[0], limit.clone()).await;
            put(&stores[1], limit).await;
            let tasks = (0..40)
                .map(|i| task(&q, json!({"customer": i % 2})))
                .collect();
            insert(&stores[0], tasks).await.unwrap();
            let claims = (0..16).map(|i| {
                let store = stores[i % 2].clone();
                let q = q.clone();
                async move { claim(&store, &q, 5).await.len() }
            });
            let taken: usize = futures::future::join_all(claims).await.into_iter().sum();
            assert_eq!(taken, allowed, "{q}: taken by 16 concurrent claimers");
        }
    }
}

/// The advisory lock is what serialises limited claims: while another
/// session holds it, a limited claim waits; an unlimited claim and a
/// fairness-only claim do not.
#[tokio::test]
async fn only_limited_claims_take_the_limits_lock() {
    let schema = PgSchema::new().await;
    let store = open(&schema).await;
    put(&store, Limit::queue("limited").concurrency(5)).await;
    insert(&store, vec![task("limited", json!(1))])
        .await
        .unwrap();
    insert(&store, vec![task("free", json!(1))]).await.unwrap();
    insert(&store, vec![fair("fair", "a"), fair("fair", "b")])
        .await
        .unwrap();

    let mut holder = store.pool().begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("{}:limits", store.schema()))
        .execute(&mut *holder)
        .await
        .unwrap();

    let quick = Duration::from_secs(2);
    let free = tokio::time::timeout(quick, claim(&store, "free", 5)).await;
    assert_eq!(free.map(|t| t.len()).ok(), Some(1), "unlimited claim");
    let fair_claim = tokio::time::timeout(quick, claim(&store, "fair", 5)).await;
    assert_eq!(fair_claim.map(|t| t.len()).ok(), Some(2), "fairness only");
    let limited = tokio::time::timeout(Duration::from_millis(500), claim(&store, "limited", 5));
    assert!(
        limited.await.is_err(),
        "the limited claim waits for the lock"
    );

    holder.rollback().await.unwrap();
    assert_eq!(claim(&store, "limited", 5).await.len(), 1);
}

/// Two producers racing on one key with a quota of 5: the waiting tasks
/// of the key never pass it; the refused batches store nothing.
#[tokio::test]
async fn quota_holds_under_concurrent_producers() {
    let schema = PgSchema::new().await;
    let stores = [Arc::new(open(&schema).await), Arc::new(open(&schema).await)];
    put(&stores[0], Limit::queue("q").max_queued_per_key(5)).await;
    put(&stores[1], Limit::queue("q").max_queued_per_key(5)).await;
    let inserts = (0..12).map(|i| {
        let store = stores[i % 2].clone();
        async move { insert(&store, vec![fair("q", "t"), fair("q", "t")]).await }
    });
    let results = futures::future::join_all(inserts).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(()) | Err(StoreError::QuotaExceeded(_)))),
        "{results:?}"
    );
    assert_eq!(ok, 2, "two batches of two fit in a quota of five");
    let n: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{}\".tasks WHERE fairness_key = 't'",
        stores[0].schema()
    )))
    .fetch_one(stores[0].pool())
    .await
    .unwrap()
    .get(0);
    assert_eq!(n, 4);
    // Another key and keyless tasks are not concerned.
    insert(&stores[0], vec![fair("q", "u"); 1]).await.unwrap();
    insert(&stores[0], (0..10).map(|i| task("q", json!(i))).collect())
        .await
        .unwrap();
}

/// Every start under a rate writes a rate-log row; rows older than the
/// period are deleted by later claims.
#[tokio::test]
async fn the_rate_log_is_written_and_trimmed_by_claims() {
    let schema = PgSchema::new().await;
    let store = open(&schema).await;
    put(&store, Limit::queue("r").rate("2/s".parse().unwrap())).await;
    insert(&store, (0..6).map(|i| task("r", json!(i))).collect())
        .await
        .unwrap();
    let log = || async {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM \"{}\".limit_starts",
            store.schema()
        )))
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get::<i64, _>(0)
    };
    let t0 = now();
    let got = store.task_claim(&claim_params("r", 10, t0)).await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(log().await, 2);
    let later = t0 + chrono::Duration::seconds(5);
    let got = store
        .task_claim(&claim_params("r", 10, later))
        .await
        .unwrap();
    assert_eq!(got.len(), 2, "a new window");
    assert_eq!(
        log().await,
        2,
        "the old starts are gone, the new ones logged"
    );
}

/// The acceptance case: 10,000 tasks of key A queued before 10 of key B,
/// a worker of concurrency 4 (it claims what it has room for and
/// finishes what it holds): all of B start before A's 100th.
#[tokio::test]
async fn fairness_serves_a_small_key_behind_a_large_backlog() {
    let schema = PgSchema::new().await;
    let store = open(&schema).await;
    for _ in 0..10 {
        insert(&store, (0..1000).map(|_| fair("big", "A")).collect())
            .await
            .unwrap();
    }
    insert(&store, (0..10).map(|_| fair("big", "B")).collect())
        .await
        .unwrap();
    let (mut a, mut b) = (0, 0);
    let mut held: Vec<Task> = Vec::new();
    while b < 10 {
        let got = claim(&store, "big", 4 - u32::try_from(held.len()).unwrap()).await;
        assert!(!got.is_empty(), "ready tasks remain");
        for t in &got {
            match t.fairness_key.as_deref() {
                Some("A") => a += 1,
                Some("B") => b += 1,
                other => panic!("key {other:?}"),
            }
        }
        held.extend(got);
        // the worker finishes its oldest task, freeing one slot
        let done = held.remove(0);
        succeed(&store, &[done]).await;
    }
    assert!(a < 100, "all of B started before A's 100th ({a} of A)");
}

/// A fair claim restricted to some names takes only tasks of those names,
/// from every key.
#[tokio::test]
async fn fair_claims_by_names_respect_the_names() {
    let schema = PgSchema::new().await;
    let store = open(&schema).await;
    insert(
        &store,
        vec![
            fair("n", "a"),
            NewTask::new("other", json!(null))
                .options(TaskOptions::new().queue("n").fairness_key("b")),
            task("n", json!(1)),
        ],
    )
    .await
    .unwrap();
    let mut p = claim_params("n", 10, now());
    p.names = Some(vec!["job".into()]);
    let got = store.task_claim(&p).await.unwrap();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|t| t.name == "job"));
}

/// One saturated key value at the head of a queue hides nothing: with
/// `key_concurrency` 1, 500 tasks of customer A queued before one of
/// customer B, a claim of 2 takes one A and the B; once both run, a
/// later task of customer C is still found behind the 499 waiting A.
#[tokio::test]
async fn a_saturated_key_at_the_head_hides_nothing() {
    let schema = PgSchema::new().await;
    let store = open(&schema).await;
    put(&store, Limit::queue("keyed").per_key("customer", 1)).await;
    insert(
        &store,
        (0..500)
            .map(|_| task("keyed", json!({"customer": "A"})))
            .collect(),
    )
    .await
    .unwrap();
    insert(&store, vec![task("keyed", json!({"customer": "B"}))])
        .await
        .unwrap();
    let got = claim(&store, "keyed", 2).await;
    let mut customers: Vec<String> = got
        .iter()
        .map(|t| t.input["customer"].as_str().unwrap().to_owned())
        .collect();
    customers.sort();
    assert_eq!(customers, ["A", "B"]);
    insert(
        &store,
        vec![
            task("keyed", json!({"other": 1})),
            task("keyed", json!({"customer": "C"})),
        ],
    )
    .await
    .unwrap();
    let got = claim(&store, "keyed", 5).await;
    assert_eq!(got.len(), 2, "the keyless task and C, no more A or B");
    assert!(got.iter().all(|t| t.input["customer"] != "A"));
    assert!(claim(&store, "keyed", 5).await.is_empty());
}

/// One saturated name at the head of a shared queue hides nothing: a
/// name of concurrency 1 with 500 tasks queued before one of another
/// name; a claim of 2 takes one of each, and the next claim none.
#[tokio::test]
async fn a_saturated_name_at_the_head_hides_nothing() {
    let schema = PgSchema::new().await;
    let store = open(&schema).await;
    put(&store, Limit::name("big").concurrency(1)).await;
    insert(
        &store,
        (0..500)
            .map(|_| NewTask::new("big", json!(null)).options(TaskOptions::new().queue("shared")))
            .collect(),
    )
    .await
    .unwrap();
    insert(
        &store,
        vec![NewTask::new("small", json!(null)).options(TaskOptions::new().queue("shared"))],
    )
    .await
    .unwrap();
    let got = claim(&store, "shared", 2).await;
    let mut names: Vec<&str> = got.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["big", "small"]);
    insert(
        &store,
        vec![NewTask::new("small", json!(null)).options(TaskOptions::new().queue("shared"))],
    )
    .await
    .unwrap();
    let got = claim(&store, "shared", 2).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].name, "small");
}
