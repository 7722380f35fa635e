//! Shared helpers of the SQLite store's integration tests: a fresh
//! database in a temporary directory, and small wrappers over the store.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::time::Duration;

use chrono::{DateTime, Utc};
use offload_store::{Store, TaskClaimParams, TaskInsertParams};
use offload_store_sqlite::{SqliteOptions, SqliteStore};
use offload_types::{NewTask, Task, TaskId, TaskOptions};
use serde_json::json;

/// A temporary directory holding `offload.db`.
pub struct TempDb {
    pub dir: tempfile::TempDir,
}

impl TempDb {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("offload.db")
    }

    pub async fn open(&self) -> SqliteStore {
        SqliteStore::open(self.path(), SqliteOptions::default())
            .await
            .unwrap()
    }
}

/// Now, truncated to whole microseconds (what the store keeps).
pub fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap()
}

pub async fn insert_n(store: &SqliteStore, queue: &str, n: usize) -> Vec<TaskId> {
    let tasks = (0..n)
        .map(|i| NewTask::new("noop", json!({ "i": i })).options(TaskOptions::new().queue(queue)))
        .collect();
    store
        .task_insert_many(&TaskInsertParams { tasks, now: now() })
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect()
}

pub fn claim_params(queue: &str, limit: u32, at: DateTime<Utc>) -> TaskClaimParams {
    TaskClaimParams {
        queue: queue.to_owned(),
        names: None,
        limit,
        worker_id: "test-worker".to_owned(),
        lease: Duration::from_secs(30),
        now: at,
    }
}

pub async fn claim(store: &SqliteStore, queue: &str, limit: u32) -> Vec<Task> {
    store
        .task_claim(&claim_params(queue, limit, now()))
        .await
        .unwrap()
}
