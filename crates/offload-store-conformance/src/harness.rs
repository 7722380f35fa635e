//! [`Fixture`], what a backend hands the suite, and [`Harness`], what every
//! case receives: the two store handles, a [`ManualClock`] that is the only
//! source of time, and short helpers so cases read as the behaviour they
//! check. Helpers panic with the store's error when a call that must
//! succeed fails: in this crate a panic is a failed test.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use offload_store::{
    Clock, FinishOutcome, FinishResult, LeaseRef, LeaseState, ManualClock, RescuedTask, Store,
    StoreResult, TaskClaimParams, TaskCountParams, TaskFinish, TaskFinishParams,
    TaskHeartbeatParams, TaskInsertParams, TaskRescueParams,
};
use offload_types::{
    Attempt, DEFAULT_QUEUE, Enqueued, NewTask, Task, TaskErrorRecord, TaskId, TaskOptions,
};
use serde_json::json;

/// The lease every harness claim and heartbeat asks for.
pub const LEASE: Duration = Duration::from_secs(30);

/// The worker id harness claims record.
pub const WORKER: &str = "conformance-worker";

/// What a backend hands the suite for one case.
pub struct Fixture {
    /// A fresh, empty store.
    pub store: Arc<dyn Store>,
    /// An independent handle onto the same data (for SQLite: a second store
    /// opened on the same file). It stands in for another process.
    pub second: Arc<dyn Store>,
    /// Keeps temporary files, directories or schemas alive for the case.
    pub guard: Box<dyn Any + Send + Sync>,
}

/// What every case receives: the store, a second handle onto the same data,
/// and the clock all time comes from.
pub struct Harness {
    /// The store under test.
    pub store: Arc<dyn Store>,
    /// Another handle onto the same data ("another process").
    pub second: Arc<dyn Store>,
    /// The only source of `now` in the cases; move it with `advance`.
    pub clock: ManualClock,
    _guard: Box<dyn Any + Send + Sync>,
}

/// Unwraps a store result that the contract says must succeed.
#[track_caller]
pub(crate) fn ok<T>(what: &str, result: StoreResult<T>) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("{what} failed: {e} ({e:?})"),
    }
}

/// The lease a claimed task carries.
///
/// # Panics
///
/// When the task has no lease token (the store broke the claim contract).
#[track_caller]
pub fn lease_of(task: &Task) -> LeaseRef {
    match task.lease_token {
        Some(lease_token) => LeaseRef {
            id: task.id,
            lease_token,
        },
        None => panic!("task {} ({}) carries no lease token", task.id, task.status),
    }
}

impl Harness {
    /// Wraps a fixture, with a manual clock stopped at the current time
    /// (whole microseconds, the precision stores keep).
    pub fn new(fixture: Fixture) -> Self {
        let clock = ManualClock::new();
        clock.set(Utc::now().trunc_subsecs(6));
        Self {
            store: fixture.store,
            second: fixture.second,
            clock,
            _guard: fixture.guard,
        }
    }

    /// The harness clock's time.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// `now + by`.
    pub fn later(&self, by: Duration) -> DateTime<Utc> {
        self.now() + span(by)
    }

    /// `now - by`.
    pub fn earlier(&self, by: Duration) -> DateTime<Utc> {
        self.now() - span(by)
    }

    /// Inserts tasks through `store` at `now`; returns their ids.
    pub async fn insert(&self, tasks: Vec<NewTask>) -> Vec<TaskId> {
        self.enqueue(tasks).await.iter().map(|e| e.id).collect()
    }

    /// Inserts tasks through `store` at `now`; returns the store's answer
    /// (id and outcome per task).
    pub async fn enqueue(&self, tasks: Vec<NewTask>) -> Vec<Enqueued> {
        let params = TaskInsertParams {
            tasks,
            now: self.now(),
        };
        ok(
            "task_insert_many",
            self.store.task_insert_many(&params).await,
        )
    }

    /// Inserts one task; returns its id.
    pub async fn insert_one(&self, task: NewTask) -> TaskId {
        let ids = self.insert(vec![task]).await;
        assert_eq!(ids.len(), 1, "one task inserted, got ids {ids:?}");
        ids[0]
    }

    /// Inserts `n` tasks named `name` into `queue`, with input `{"i": k}`.
    pub async fn insert_n(&self, name: &str, queue: &str, n: usize) -> Vec<TaskId> {
        let tasks = (0..n)
            .map(|i| NewTask::new(name, json!({ "i": i })).options(TaskOptions::new().queue(queue)))
            .collect();
        self.insert(tasks).await
    }

    /// The claim params the helpers use: `queue`, up to `limit`, any name,
    /// worker [`WORKER`], lease [`LEASE`], at `now`.
    pub fn claim_params(&self, queue: &str, limit: u32) -> TaskClaimParams {
        TaskClaimParams {
            queue: queue.to_owned(),
            names: None,
            limit,
            worker_id: WORKER.to_owned(),
            lease: LEASE,
            now: self.now(),
        }
    }

    /// Claims up to `limit` tasks of `queue` through `store`.
    pub async fn claim(&self, queue: &str, limit: u32) -> Vec<Task> {
        let params = self.claim_params(queue, limit);
        ok("task_claim", self.store.task_claim(&params).await)
    }

    /// Claims exactly one task of the default queue and checks it is `id`.
    pub async fn claim_one(&self, id: TaskId) -> Task {
        self.claim_one_from(DEFAULT_QUEUE, id).await
    }

    /// Claims exactly one task of `queue` and checks it is `id`.
    pub async fn claim_one_from(&self, queue: &str, id: TaskId) -> Task {
        let mut claimed = self.claim(queue, 1).await;
        assert_eq!(
            claimed.iter().map(|t| t.id).collect::<Vec<_>>(),
            vec![id],
            "claim of queue {queue} should hand out task {id}"
        );
        claimed.remove(0)
    }

    /// Inserts one task with `options` and claims it (it must be the next
    /// ready task of its queue); returns the running task.
    pub async fn insert_and_claim(&self, name: &str, options: TaskOptions) -> Task {
        let queue = options
            .queue
            .clone()
            .unwrap_or_else(|| DEFAULT_QUEUE.to_owned());
        let id = self
            .insert_one(NewTask::new(name, json!({})).options(options))
            .await;
        self.claim_one_from(&queue, id).await
    }

    /// Finishes one attempt through `store`; returns the store's answer.
    pub async fn finish(&self, lease: LeaseRef, outcome: FinishOutcome) -> FinishResult {
        let answers = self.finish_many(vec![(lease, outcome)]).await;
        assert_eq!(answers.len(), 1, "one answer per finished item");
        answers[0]
    }

    /// Finishes many attempts in one call through `store`.
    pub async fn finish_many(&self, items: Vec<(LeaseRef, FinishOutcome)>) -> Vec<FinishResult> {
        let params = TaskFinishParams {
            items: items
                .into_iter()
                .map(|(lease, outcome)| TaskFinish { lease, outcome })
                .collect(),
            now: self.now(),
        };
        ok(
            "task_finish_many",
            self.store.task_finish_many(&params).await,
        )
    }

    /// Renews leases through `store` for [`LEASE`] from `now`.
    pub async fn heartbeat(&self, leases: &[LeaseRef]) -> Vec<LeaseState> {
        let params = TaskHeartbeatParams {
            leases: leases.to_vec(),
            lease: LEASE,
            now: self.now(),
        };
        ok(
            "task_heartbeat_many",
            self.store.task_heartbeat_many(&params).await,
        )
    }

    /// Rescues expired leases through `store` at `now` (up to 1000).
    pub async fn rescue(&self) -> Vec<RescuedTask> {
        let params = TaskRescueParams {
            now: self.now(),
            limit: 1000,
        };
        ok(
            "task_rescue_expired",
            self.store.task_rescue_expired(&params).await,
        )
    }

    /// The task, which must exist.
    pub async fn get(&self, id: TaskId) -> Task {
        match self.try_get(id).await {
            Some(task) => task,
            None => panic!("task {id} should exist"),
        }
    }

    /// The task, or `None`.
    pub async fn try_get(&self, id: TaskId) -> Option<Task> {
        ok("task_get", self.store.task_get(id).await)
    }

    /// The task's history of attempts.
    pub async fn attempts(&self, id: TaskId) -> Vec<Attempt> {
        ok("task_attempts", self.store.task_attempts(id).await)
    }

    /// How many tasks the store holds, all statuses.
    pub async fn count_all(&self) -> u64 {
        let counts = ok(
            "task_count",
            self.store.task_count(&TaskCountParams::default()).await,
        );
        counts.iter().map(|c| c.count).sum()
    }

    /// An error record for `attempt`, at `now`.
    pub fn error(&self, kind: &str, message: &str, attempt: u32) -> TaskErrorRecord {
        TaskErrorRecord {
            kind: kind.to_owned(),
            message: message.to_owned(),
            attempt,
            at: self.now(),
        }
    }
}

/// A std duration as a chrono one (test durations are small).
pub(crate) fn span(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}
