//! A quick speed check of the SQLite store (not the standard benchmark,
//! which is `offload bench`): bulk insert, a drain through claim + batched
//! finish, and concurrent single inserts sharing commits.
//!
//! Run with: `cargo run --release -p offload-store-sqlite --example throughput [-- full] [-- N] [-- claim=C]`
//! (`C` tasks per claim, default 100; a worker with concurrency 100 claims
//! 25–100 at a time.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use offload_store::{
    FinishOutcome, LeaseRef, Store, TaskClaimParams, TaskFinish, TaskFinishParams, TaskInsertParams,
};
use offload_store_sqlite::{Durability, SqliteOptions, SqliteStore};
use offload_types::NewTask;
use serde_json::json;

const BATCH: usize = 1000;
/// Tasks per claim unless `claim=C` says otherwise.
const CLAIM: u32 = 100;

static CLAIM_SIZE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

fn claim_size() -> u32 {
    *CLAIM_SIZE.get().unwrap_or(&CLAIM)
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

async fn bulk_insert(store: &SqliteStore, n: usize) -> Duration {
    let start = Instant::now();
    let mut k = 0;
    while k < n {
        let tasks = (k..(k + BATCH).min(n))
            .map(|i| NewTask::new("noop", json!({ "i": i })))
            .collect();
        store
            .task_insert_many(&TaskInsertParams {
                tasks,
                now: Utc::now(),
            })
            .await
            .expect("insert");
        k += BATCH;
    }
    start.elapsed()
}

fn claim_params() -> TaskClaimParams {
    TaskClaimParams {
        queue: "default".into(),
        names: Some(vec!["noop".into()]),
        limit: claim_size(),
        worker_id: "bench".into(),
        lease: Duration::from_secs(30),
        now: Utc::now(),
    }
}

fn finishes(tasks: &[offload_types::Task]) -> TaskFinishParams {
    TaskFinishParams {
        items: tasks
            .iter()
            .map(|t| TaskFinish {
                lease: LeaseRef {
                    id: t.id,
                    lease_token: t.lease_token.expect("claimed"),
                },
                outcome: FinishOutcome::Success {
                    output: json!(null),
                },
            })
            .collect(),
        now: Utc::now(),
    }
}

/// Claim 100, finish those 100 in one call, repeat.
async fn drain_sequential(store: &SqliteStore) -> usize {
    let mut done = 0;
    let (mut in_claim, mut in_finish) = (Duration::ZERO, Duration::ZERO);
    loop {
        let t = Instant::now();
        let tasks = store.task_claim(&claim_params()).await.expect("claim");
        in_claim += t.elapsed();
        if tasks.is_empty() {
            println!("  time in claims {in_claim:?}, in finishes {in_finish:?}");
            return done;
        }
        let t = Instant::now();
        store
            .task_finish_many(&finishes(&tasks))
            .await
            .expect("finish");
        in_finish += t.elapsed();
        done += tasks.len();
    }
}

/// A worker's shape: a claimer keeps claiming while a completer writes
/// the previous batch's results, so claims and finishes share commits.
async fn drain_pipelined(store: &SqliteStore) -> usize {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<offload_types::Task>>(4);
    let completer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut done = 0;
            while let Some(tasks) = rx.recv().await {
                store
                    .task_finish_many(&finishes(&tasks))
                    .await
                    .expect("finish");
                done += tasks.len();
            }
            done
        })
    };
    loop {
        let tasks = store.task_claim(&claim_params()).await.expect("claim");
        if tasks.is_empty() {
            break;
        }
        tx.send(tasks).await.expect("completer alive");
    }
    drop(tx);
    completer.await.expect("completer")
}

async fn single_inserts(store: &SqliteStore, n: usize, callers: usize) -> Duration {
    let start = Instant::now();
    let per = n / callers;
    let mut handles = Vec::new();
    for c in 0..callers {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..per {
                store
                    .task_insert_many(&TaskInsertParams {
                        tasks: vec![NewTask::new("noop", json!({ "c": c, "i": i }))],
                        now: Utc::now(),
                    })
                    .await
                    .expect("insert");
            }
        }));
    }
    for h in handles {
        h.await.expect("caller");
    }
    start.elapsed()
}

fn report(
    before: offload_store_sqlite::WriterStats,
    after: offload_store_sqlite::WriterStats,
    done: usize,
) {
    let cpu = after
        .cpu
        .zip(before.cpu)
        .map(|(a, b)| a - b)
        .unwrap_or_default();
    println!(
        "  writer busy {:?} ({:.1} us/task), cpu {:.1} us/task, {} commits",
        after.busy - before.busy,
        (after.busy - before.busy).as_secs_f64() * 1e6 / done as f64,
        cpu.as_secs_f64() * 1e6 / done as f64,
        after.commits - before.commits
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let durability = if args.iter().any(|a| a == "full") {
        Durability::Full
    } else {
        Durability::Normal
    };
    let n: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(20_000);
    if let Some(c) = args
        .iter()
        .find_map(|a| a.strip_prefix("claim=")?.parse().ok())
    {
        let _ = CLAIM_SIZE.set(c);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(
        SqliteStore::open(
            dir.path().join("bench.db"),
            SqliteOptions {
                durability,
                ..SqliteOptions::default()
            },
        )
        .await
        .expect("open"),
    );
    println!("durability={} n={n}", durability.as_str());

    let before = store.writer_stats();
    let d = bulk_insert(&store, n).await;
    let after = store.writer_stats();
    report(before, after, n);
    println!(
        "bulk insert     {:>9.0} tasks/s ({n} in batches of {BATCH})",
        rate(n, d)
    );

    let start = Instant::now();
    let before = store.writer_stats();
    let done = drain_sequential(&store).await;
    let d = start.elapsed();
    let after = store.writer_stats();
    report(before, after, done);
    println!(
        "drain (serial)  {:>9.0} tasks/s (claim {c} + finish {c}, {done} tasks)",
        rate(done, d),
        c = claim_size()
    );

    bulk_insert(&store, n).await;
    let start = Instant::now();
    let before = store.writer_stats();
    let done = drain_pipelined(&store).await;
    let d = start.elapsed();
    let after = store.writer_stats();
    report(before, after, done);
    println!(
        "drain (pipe)    {:>9.0} tasks/s (claimer and completer concurrent, {done} tasks)",
        rate(done, d)
    );

    let before = store.writer_stats();
    let singles = 2000;
    let d = single_inserts(&store, singles, 100).await;
    let after = store.writer_stats();
    println!(
        "single inserts  {:>9.0} tasks/s (100 concurrent callers, {singles} inserts, {} commits)",
        rate(singles, d),
        after.commits - before.commits
    );
    let d = single_inserts(&store, singles, 1).await;
    println!(
        "single awaited  {:>9.0} tasks/s (one caller, {singles} inserts)",
        rate(singles, d)
    );
}
