//! Limits and fairness through the library with real workers, on SQLite
//! and PostgreSQL: a per-key concurrency limit of 1 is never exceeded by
//! two workers (recorded overlaps: none); a tenant with 10 tasks queued
//! behind another's 10,000 gets all of them started before the other's
//! 100th; a quota of waiting tasks per fairness key refuses the excess.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use offload::{
    Client, Context, Controller, Error, Limit, NewTask, Runner, Status, StoreError, Task,
    TaskError, TaskFilter, TaskOptions, Worker, WorkerHandle, async_trait,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// Records each run's input and its start and end instants.
struct Recorder {
    runs: Arc<Mutex<Vec<(Value, Instant, Instant)>>>,
    starts: Arc<Mutex<Vec<Value>>>,
    work: Duration,
}

#[async_trait]
impl Runner for Recorder {
    async fn run(&self, task: &Task, _: &Context, _: &Controller) -> Result<Value, TaskError> {
        let start = Instant::now();
        self.starts.lock().unwrap().push(task.input.clone());
        tokio::time::sleep(self.work).await;
        self.runs
            .lock()
            .unwrap()
            .push((task.input.clone(), start, Instant::now()));
        Ok(Value::Null)
    }
}

fn worker(client: &Client, recorder: Recorder, concurrency: usize) -> WorkerHandle {
    Worker::builder(client.store().clone())
        .poll_interval(Duration::from_millis(100))
        .concurrency(concurrency)
        .runner("job", recorder)
        .build()
        .unwrap()
        .start()
}

async fn wait_all(client: &Client, n: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let done: u64 = client
            .count(TaskFilter {
                statuses: vec![Status::Success],
                ..TaskFilter::default()
            })
            .await
            .unwrap()
            .iter()
            .map(|c| c.count)
            .sum();
        if done >= n {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{done}/{n} done");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn per_key_concurrency_of_one_is_never_exceeded(a: Client, b: Client) {
    a.set_limit(Limit::name("job").per_key("customer_id", 1))
        .await
        .unwrap();
    let tasks: Vec<NewTask> = (0..24)
        .map(|i| NewTask::new("job", json!({"customer_id": i % 3, "i": i})))
        .collect();
    a.trigger_many(tasks).await.unwrap();
    let runs = Arc::new(Mutex::new(Vec::new()));
    let starts = Arc::new(Mutex::new(Vec::new()));
    let make = || Recorder {
        runs: runs.clone(),
        starts: starts.clone(),
        work: Duration::from_millis(30),
    };
    let wa = worker(&a, make(), 8);
    let wb = worker(&b, make(), 8);
    wait_all(&a, 24).await;
    wa.shutdown().await.unwrap();
    wb.shutdown().await.unwrap();
    let runs = runs.lock().unwrap();
    assert_eq!(runs.len(), 24);
    let mut by_key: HashMap<i64, Vec<(Instant, Instant)>> = HashMap::new();
    for (input, s, e) in runs.iter() {
        by_key
            .entry(input["customer_id"].as_i64().unwrap())
            .or_default()
            .push((*s, *e));
    }
    let mut overlaps = 0;
    for spans in by_key.values_mut() {
        spans.sort();
        overlaps += spans.windows(2).filter(|w| w[1].0 < w[0].1).count();
    }
    assert_eq!(overlaps, 0, "runs of one customer overlapped");
    // the three customers did run side by side
    let mut all: Vec<_> = runs.iter().map(|(_, s, e)| (*s, *e)).collect();
    all.sort();
    assert!(
        all.windows(2).any(|w| w[1].0 < w[0].1),
        "no parallelism at all"
    );
}

async fn a_small_tenant_is_not_starved_by_a_large_one(a: Client, _b: Client) {
    for chunk in 0..10 {
        let tasks: Vec<NewTask> = (0..1000)
            .map(|i| {
                NewTask::new("job", json!({"tenant": "A", "i": chunk * 1000 + i}))
                    .options(TaskOptions::new().fairness_key("A"))
            })
            .collect();
        a.trigger_many(tasks).await.unwrap();
    }
    let b_tasks: Vec<NewTask> = (0..10)
        .map(|i| {
            NewTask::new("job", json!({"tenant": "B", "i": i}))
                .options(TaskOptions::new().fairness_key("B"))
        })
        .collect();
    a.trigger_many(b_tasks).await.unwrap();
    let runs = Arc::new(Mutex::new(Vec::new()));
    let starts = Arc::new(Mutex::new(Vec::new()));
    let w = worker(
        &a,
        Recorder {
            runs: runs.clone(),
            starts: starts.clone(),
            work: Duration::from_millis(2),
        },
        4,
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let n = starts.lock().unwrap().len();
        if n >= 150 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "only {n} started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.shutdown().await.unwrap();
    let starts = starts.lock().unwrap();
    let a_100th = starts
        .iter()
        .enumerate()
        .filter(|(_, v)| v["tenant"] == json!("A"))
        .nth(99)
        .map(|(i, _)| i)
        .unwrap();
    let b_started: Vec<usize> = starts
        .iter()
        .enumerate()
        .filter(|(_, v)| v["tenant"] == json!("B"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(b_started.len(), 10, "B's tasks started: {b_started:?}");
    assert!(
        b_started.iter().all(|i| *i < a_100th),
        "B started at {b_started:?}, A's 100th at {a_100th}"
    );
}

async fn a_quota_refuses_the_excess_and_frees_up(a: Client, _b: Client) {
    a.set_limit(Limit::queue("default").max_queued_per_key(3))
        .await
        .unwrap();
    let t =
        |key: &str| NewTask::new("job", json!({})).options(TaskOptions::new().fairness_key(key));
    a.trigger_many(vec![t("t1"), t("t1"), t("t1")])
        .await
        .unwrap();
    let refused = a.trigger_many(vec![t("t2"), t("t1")]).await;
    assert!(
        matches!(refused, Err(Error::Store(StoreError::QuotaExceeded(_)))),
        "{refused:?}"
    );
    let total: u64 = a
        .count(TaskFilter::default())
        .await
        .unwrap()
        .iter()
        .map(|c| c.count)
        .sum();
    assert_eq!(total, 3, "nothing of the refused batch was stored");
    a.trigger_many(vec![t("t2")]).await.unwrap();
    a.trigger_many(vec![NewTask::new("job", json!({}))])
        .await
        .unwrap();
    // run them: the key's waiting count drops and enqueues pass again
    let runs = Arc::new(Mutex::new(Vec::new()));
    let starts = Arc::new(Mutex::new(Vec::new()));
    let w = worker(
        &a,
        Recorder {
            runs,
            starts,
            work: Duration::ZERO,
        },
        4,
    );
    wait_all(&a, 5).await;
    w.shutdown().await.unwrap();
    a.trigger_many(vec![t("t1"), t("t1"), t("t1")])
        .await
        .unwrap();
}

on_both!(
    per_key_concurrency_of_one_is_never_exceeded,
    a_small_tenant_is_not_starved_by_a_large_one,
    a_quota_refuses_the_excess_and_frees_up,
);
