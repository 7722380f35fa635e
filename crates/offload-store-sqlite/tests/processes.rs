//! Real processes on one database file: two claimer processes never get
//! the same task (SQLite's file locks and the busy handler serialise their
//! writers), and a commit in one process wakes a listener in another.
//!
//! The child processes are this test binary run again on the ignored
//! `child` test, with `OFFLOAD_TEST_ROLE` saying what to do.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;

use common::{TempDb, claim_params, insert_n, now};
use offload_store::{Notification, Store};
use offload_store_sqlite::{SqliteOptions, SqliteStore};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(30);

/// What a child process does, chosen by `OFFLOAD_TEST_ROLE`.
#[test]
#[ignore = "run by the other tests of this file as a child process"]
fn child() {
    let role = std::env::var("OFFLOAD_TEST_ROLE").unwrap();
    let path = std::env::var("OFFLOAD_TEST_DB").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let store = SqliteStore::open(&path, SqliteOptions::default())
            .await
            .unwrap();
        match role.as_str() {
            "claim" => {
                // Bounded: far more rounds than tasks, ends when empty.
                for _ in 0..100_000 {
                    let claimed = store
                        .task_claim(&claim_params("procs", 20, now()))
                        .await
                        .unwrap();
                    if claimed.is_empty() {
                        break;
                    }
                    for t in claimed {
                        println!("CLAIMED {}", t.id);
                    }
                }
            }
            "listen" => {
                let mut rx = store.notifier().subscribe();
                println!("READY");
                let woke = timeout(DEADLINE, async {
                    loop {
                        if let Ok(Notification::Available { queue: Some(q) }) = rx.recv().await
                            && q == "wake"
                        {
                            return;
                        }
                    }
                })
                .await;
                println!("{}", if woke.is_ok() { "WOKE" } else { "TIMEOUT" });
            }
            other => panic!("unknown role {other}"),
        }
    });
}

fn spawn(role: &str, db: &TempDb) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("OFFLOAD_TEST_ROLE", role)
        .env("OFFLOAD_TEST_DB", db.path())
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Every line the child prints until it exits successfully.
async fn lines_of(mut child: Child) -> Vec<String> {
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut out = Vec::new();
    timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            out.push(line);
        }
    })
    .await
    .expect("the child finishes in time");
    let status = timeout(DEADLINE, child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "child failed: {status}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_claimer_processes_never_share_a_task() {
    let db = TempDb::new();
    let store = db.open().await;
    let mut inserted = HashSet::new();
    for _ in 0..5 {
        inserted.extend(insert_n(&store, "procs", 1000).await);
    }
    let a = spawn("claim", &db);
    let b = spawn("claim", &db);
    let (a, b) = tokio::join!(lines_of(a), lines_of(b));
    let mut seen = HashSet::new();
    for line in a.iter().chain(&b) {
        // The test harness may print "test child ... " just before.
        if let Some((_, id)) = line.split_once("CLAIMED ") {
            let id = id.trim().parse().unwrap();
            assert!(seen.insert(id), "task {id} was claimed by both processes");
        }
    }
    assert_eq!(seen.len(), inserted.len(), "every task claimed once");
    assert!(seen == inserted, "the claimed tasks are the inserted ones");
    let running = store
        .task_count(&Default::default())
        .await
        .unwrap()
        .iter()
        .filter(|c| c.status == offload_types::Status::Running)
        .map(|c| c.count)
        .sum::<u64>();
    assert_eq!(running, 5000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_wakes_a_listener_in_another_process() {
    let db = TempDb::new();
    let store = db.open().await;
    let mut child = spawn("listen", &db);
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let ready = timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.ends_with("READY") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(ready, "the listener started");
    insert_n(&store, "wake", 1).await;
    let woke = timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.ends_with("WOKE") || line.ends_with("TIMEOUT") {
                return line;
            }
        }
        String::new()
    })
    .await
    .unwrap();
    assert!(woke.ends_with("WOKE"), "{woke}");
    assert!(child.wait().await.unwrap().success());
}
