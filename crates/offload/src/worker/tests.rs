//! The worker's loops against a store that fails on request: claims,
//! heartbeats, finishes and elections that return `Unavailable` (as a
//! database restart or a cut connection does) are retried, attempts keep
//! running until their lease really runs out, and no outcome is lost.
//! The store underneath is a real SQLite store in a temporary directory.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use offload_store::{
    Capabilities, FinishResult, LeaderElectParams, LeaderResignParams, LeaseState, Notifier,
    RescuedTask, Store, StoreError, StoreResult, TaskAbortParams, TaskClaimParams, TaskCount,
    TaskCountParams, TaskDeleteParams, TaskExportParams, TaskFinishParams, TaskHeartbeatParams,
    TaskImportParams, TaskImportResult, TaskInsertParams, TaskListParams, TaskNextRunAtParams,
    TaskPage, TaskProgressParams, TaskPurgeParams, TaskRecord, TaskRescueParams, TaskRetryParams,
    TaskUpdateParams,
};
use offload_types::{Attempt, AttemptOutcome, Status, Task, TaskError, TaskId, TaskOptions};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::{Client, Context, Controller, Runner, Worker, WorkerBuilder};

const WAIT: Duration = Duration::from_secs(20);

/// One switch and one failure counter per store call the worker's loops make.
#[derive(Default)]
struct Fault {
    on: AtomicBool,
    failed: AtomicU64,
}

impl Fault {
    fn check(&self) -> StoreResult<()> {
        if self.on.load(Ordering::SeqCst) {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Unavailable(
                "injected: the database is away".into(),
            ));
        }
        Ok(())
    }

    fn set(&self, on: bool) {
        self.on.store(on, Ordering::SeqCst);
    }

    fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }
}

#[derive(Default)]
struct Faults {
    claim: Fault,
    heartbeat: Fault,
    finish: Fault,
    elect: Fault,
}

/// A store that answers `Unavailable` to the calls whose fault is on.
struct FlakyStore {
    inner: Arc<dyn Store>,
    faults: Arc<Faults>,
}

#[async_trait]
impl Store for FlakyStore {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn notifier(&self) -> Arc<dyn Notifier> {
        self.inner.notifier()
    }
    fn describe(&self) -> String {
        format!("flaky:{}", self.inner.describe())
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    async fn leader_attempt_elect(&self, p: &LeaderElectParams) -> StoreResult<bool> {
        self.faults.elect.check()?;
        self.inner.leader_attempt_elect(p).await
    }
    async fn leader_resign(&self, p: &LeaderResignParams) -> StoreResult<()> {
        self.inner.leader_resign(p).await
    }
    async fn task_abort(&self, p: &TaskAbortParams) -> StoreResult<Task> {
        self.inner.task_abort(p).await
    }
    async fn task_attempts(&self, id: TaskId) -> StoreResult<Vec<Attempt>> {
        self.inner.task_attempts(id).await
    }
    async fn task_claim(&self, p: &TaskClaimParams) -> StoreResult<Vec<Task>> {
        self.faults.claim.check()?;
        self.inner.task_claim(p).await
    }
    async fn task_count(&self, p: &TaskCountParams) -> StoreResult<Vec<TaskCount>> {
        self.inner.task_count(p).await
    }
    async fn task_delete(&self, p: &TaskDeleteParams) -> StoreResult<()> {
        self.inner.task_delete(p).await
    }
    async fn task_finish_many(&self, p: &TaskFinishParams) -> StoreResult<Vec<FinishResult>> {
        self.faults.finish.check()?;
        self.inner.task_finish_many(p).await
    }
    async fn task_get(&self, id: TaskId) -> StoreResult<Option<Task>> {
        self.inner.task_get(id).await
    }
    async fn task_heartbeat_many(&self, p: &TaskHeartbeatParams) -> StoreResult<Vec<LeaseState>> {
        self.faults.heartbeat.check()?;
        self.inner.task_heartbeat_many(p).await
    }
    async fn task_insert_many(
        &self,
        p: &TaskInsertParams,
    ) -> StoreResult<Vec<offload_types::Enqueued>> {
        self.inner.task_insert_many(p).await
    }
    async fn task_list(&self, p: &TaskListParams) -> StoreResult<TaskPage> {
        self.inner.task_list(p).await
    }
    async fn task_next_run_at(
        &self,
        p: &TaskNextRunAtParams,
    ) -> StoreResult<Option<DateTime<Utc>>> {
        self.inner.task_next_run_at(p).await
    }
    async fn task_progress_many(&self, p: &TaskProgressParams) -> StoreResult<Vec<LeaseState>> {
        self.inner.task_progress_many(p).await
    }
    async fn task_purge(&self, p: &TaskPurgeParams) -> StoreResult<u64> {
        self.inner.task_purge(p).await
    }
    async fn task_rescue_expired(&self, p: &TaskRescueParams) -> StoreResult<Vec<RescuedTask>> {
        self.inner.task_rescue_expired(p).await
    }
    async fn task_export(&self, p: &TaskExportParams) -> StoreResult<Vec<TaskRecord>> {
        self.inner.task_export(p).await
    }
    async fn task_import(&self, p: &TaskImportParams) -> StoreResult<TaskImportResult> {
        self.inner.task_import(p).await
    }
    async fn schedule_put(
        &self,
        p: &offload_store::SchedulePutParams,
    ) -> StoreResult<offload_store::ScheduleRecord> {
        self.inner.schedule_put(p).await
    }
    async fn schedule_get(&self, name: &str) -> StoreResult<Option<offload_store::ScheduleRecord>> {
        self.inner.schedule_get(name).await
    }
    async fn schedule_list(&self) -> StoreResult<Vec<offload_store::ScheduleRecord>> {
        self.inner.schedule_list().await
    }
    async fn schedule_pause(
        &self,
        p: &offload_store::SchedulePauseParams,
    ) -> StoreResult<Option<offload_store::ScheduleRecord>> {
        self.inner.schedule_pause(p).await
    }
    async fn schedule_delete(&self, name: &str) -> StoreResult<bool> {
        self.inner.schedule_delete(name).await
    }
    async fn schedule_due(
        &self,
        p: &offload_store::ScheduleDueParams,
    ) -> StoreResult<Vec<offload_store::ScheduleRecord>> {
        self.inner.schedule_due(p).await
    }
    async fn schedule_fire(
        &self,
        p: &offload_store::ScheduleFireParams,
    ) -> StoreResult<offload_store::ScheduleFired> {
        self.inner.schedule_fire(p).await
    }
    async fn limit_put(
        &self,
        p: &offload_store::LimitPutParams,
    ) -> StoreResult<offload_store::LimitRecord> {
        self.inner.limit_put(p).await
    }
    async fn limit_list(&self) -> StoreResult<Vec<offload_store::LimitRecord>> {
        self.inner.limit_list().await
    }
    async fn limit_delete(&self, p: &offload_store::LimitDeleteParams) -> StoreResult<bool> {
        self.inner.limit_delete(p).await
    }
    async fn task_resolve_blocked(&self, p: &offload_store::TaskResolveParams) -> StoreResult<u64> {
        self.inner.task_resolve_blocked(p).await
    }
    async fn task_retry(&self, p: &TaskRetryParams) -> StoreResult<Task> {
        self.inner.task_retry(p).await
    }
    async fn task_update(&self, p: &TaskUpdateParams) -> StoreResult<Task> {
        self.inner.task_update(p).await
    }
    async fn task_insert_idempotent(
        &self,
        p: &TaskInsertParams,
        key: &offload_store::IdempotencyKey,
    ) -> StoreResult<offload_store::IdempotentInsert> {
        self.inner.task_insert_idempotent(p, key).await
    }
    async fn idempotency_purge(&self, p: &offload_store::PurgeBeforeParams) -> StoreResult<u64> {
        self.inner.idempotency_purge(p).await
    }
    async fn event_list(
        &self,
        p: &offload_store::EventListParams,
    ) -> StoreResult<offload_store::EventPage> {
        self.inner.event_list(p).await
    }
    async fn event_cursor_latest(&self) -> StoreResult<Option<String>> {
        self.inner.event_cursor_latest().await
    }
    async fn event_purge(&self, p: &offload_store::PurgeBeforeParams) -> StoreResult<u64> {
        self.inner.event_purge(p).await
    }
    async fn token_insert(&self, t: &offload_store::TokenRecord) -> StoreResult<()> {
        self.inner.token_insert(t).await
    }
    async fn token_get(&self, id: &str) -> StoreResult<Option<offload_store::TokenRecord>> {
        self.inner.token_get(id).await
    }
    async fn token_list(&self) -> StoreResult<Vec<offload_store::TokenRecord>> {
        self.inner.token_list().await
    }
    async fn token_delete(&self, id: &str) -> StoreResult<bool> {
        self.inner.token_delete(id).await
    }
    async fn audit_insert(&self, r: &offload_store::NewAuditRecord) -> StoreResult<i64> {
        self.inner.audit_insert(r).await
    }
    async fn audit_list(
        &self,
        p: &offload_store::AuditListParams,
    ) -> StoreResult<offload_store::AuditPage> {
        self.inner.audit_list(p).await
    }
    async fn webhook_insert(&self, w: &offload_store::WebhookRecord) -> StoreResult<()> {
        self.inner.webhook_insert(w).await
    }
    async fn webhook_list(&self) -> StoreResult<Vec<offload_store::WebhookRecord>> {
        self.inner.webhook_list().await
    }
    async fn webhook_delete(&self, id: &str) -> StoreResult<bool> {
        self.inner.webhook_delete(id).await
    }
    async fn webhook_cursor(&self) -> StoreResult<Option<String>> {
        self.inner.webhook_cursor().await
    }
    async fn webhook_enqueue(&self, p: &offload_store::WebhookEnqueueParams) -> StoreResult<bool> {
        self.inner.webhook_enqueue(p).await
    }
    async fn webhook_delivery_claim(
        &self,
        p: &offload_store::DeliveryClaimParams,
    ) -> StoreResult<Vec<offload_store::Delivery>> {
        self.inner.webhook_delivery_claim(p).await
    }
    async fn webhook_delivery_record(
        &self,
        p: &offload_store::DeliveryRecordParams,
    ) -> StoreResult<()> {
        self.inner.webhook_delivery_record(p).await
    }
    async fn webhook_delivery_list(
        &self,
        p: &offload_store::DeliveryListParams,
    ) -> StoreResult<Vec<offload_store::Delivery>> {
        self.inner.webhook_delivery_list(p).await
    }
    async fn webhook_delivery_purge(
        &self,
        p: &offload_store::PurgeBeforeParams,
    ) -> StoreResult<u64> {
        self.inner.webhook_delivery_purge(p).await
    }
    async fn webhook_task_secret(&self, candidate: &str) -> StoreResult<String> {
        self.inner.webhook_task_secret(candidate).await
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    /// Straight to the SQLite store: never fails.
    client: Client,
    faults: Arc<Faults>,
    flaky: Arc<dyn Store>,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("offload.db").display());
    let inner = crate::open(&url).await.unwrap();
    let faults = Arc::new(Faults::default());
    let flaky: Arc<dyn Store> = Arc::new(FlakyStore {
        inner: inner.clone(),
        faults: faults.clone(),
    });
    Fixture {
        _dir: dir,
        client: Client::new(inner),
        faults,
        flaky,
    }
}

fn builder(f: &Fixture) -> WorkerBuilder {
    Worker::builder(f.flaky.clone())
        .poll_interval(Duration::from_millis(100))
        .maintenance_interval(Duration::from_millis(100))
        .abort_grace(Duration::from_millis(300))
        .shutdown_grace(Duration::from_secs(5))
}

/// A runner made of a closure.
struct FnRunner<F>(F);

#[async_trait]
impl<F, Fut> Runner for FnRunner<F>
where
    F: Fn(Task, Controller) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Value, TaskError>> + Send,
{
    async fn run(&self, task: &Task, _ctx: &Context, ctl: &Controller) -> Result<Value, TaskError> {
        (self.0)(task.clone(), ctl.clone()).await
    }
}

async fn wait_for(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn status(f: &Fixture, id: TaskId) -> Status {
    f.client.get(id).await.unwrap().status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_loop_survives_a_store_outage_and_the_work_gets_done() {
    let f = fixture().await;
    for fault in [
        &f.faults.claim,
        &f.faults.heartbeat,
        &f.faults.finish,
        &f.faults.elect,
    ] {
        fault.set(true);
    }
    let worker = builder(&f)
        .runner("echo", FnRunner(|t: Task, _| async move { Ok(t.input) }))
        .build()
        .unwrap()
        .start();
    let mut ids = Vec::new();
    for i in 0..20 {
        let h = f
            .client
            .trigger("echo", json!({ "i": i }), TaskOptions::new())
            .await
            .unwrap();
        ids.push(h.id());
    }
    wait_for("claims and elections to fail a few times", async || {
        f.faults.claim.failed() >= 3 && f.faults.elect.failed() >= 3
    })
    .await;
    for id in &ids {
        assert_eq!(status(&f, *id).await, Status::Pending);
    }
    for fault in [
        &f.faults.claim,
        &f.faults.heartbeat,
        &f.faults.finish,
        &f.faults.elect,
    ] {
        fault.set(false);
    }
    for id in &ids {
        wait_for("the task to succeed", async || {
            status(&f, *id).await == Status::Success
        })
        .await;
    }
    let stats = worker.stats();
    assert_eq!(stats.succeeded, 20);
    assert_eq!(stats.stale, 0);
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_outage_shorter_than_the_lease_leaves_attempts_running() {
    let f = fixture().await;
    let started = Arc::new(AtomicBool::new(false));
    let release = Arc::new(tokio::sync::Notify::new());
    let (s, r) = (started.clone(), release.clone());
    // lease 3 s: heartbeats every second
    let worker = builder(&f)
        .lease(Duration::from_secs(3))
        .runner(
            "hold",
            FnRunner(move |_, ctl: Controller| {
                let (s, r) = (s.clone(), r.clone());
                async move {
                    s.store(true, Ordering::SeqCst);
                    r.notified().await;
                    Ok(json!({ "stopped": format!("{:?}", ctl.stop_reason()) }))
                }
            }),
        )
        .build()
        .unwrap()
        .start();
    let h = f
        .client
        .trigger("hold", json!({}), TaskOptions::new())
        .await
        .unwrap();
    wait_for("the attempt to start", async || {
        started.load(Ordering::SeqCst)
    })
    .await;
    f.faults.heartbeat.set(true);
    // four failures in a row: the next interval's beat, then retries after
    // 50, 100 and 200 ms; the lease (3 s from the last renewal, at most an
    // interval before the outage) is far from over
    wait_for("heartbeats to fail four times", async || {
        f.faults.heartbeat.failed() >= 4
    })
    .await;
    f.faults.heartbeat.set(false);
    let failed = f.faults.heartbeat.failed();
    assert!(failed <= 6, "retried {failed} times; back-off expected");
    release.notify_one();
    let task = f.client.wait(h.id(), WAIT).await.unwrap();
    assert_eq!(task.status, Status::Success);
    assert_eq!(task.attempt, 1);
    assert_eq!(task.output, Some(json!({ "stopped": "None" })));
    assert_eq!(worker.stats().stale, 0);
    worker.shutdown().await.unwrap();
}

/// Records when it is dropped (the executor drops a runner whose lease is lost).
struct DropClock(Arc<std::sync::Mutex<Option<Instant>>>);

impl Drop for DropClock {
    fn drop(&mut self) {
        *self.0.lock().unwrap() = Some(Instant::now());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_stop_only_once_the_lease_really_ran_out_then_the_task_is_rescued() {
    let f = fixture().await;
    f.faults.heartbeat.set(true);
    let lease = Duration::from_millis(600);
    let started_at = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let dropped_at = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let (s, d) = (started_at.clone(), dropped_at.clone());
    let worker = builder(&f)
        .lease(lease)
        .runner(
            "stuck_once",
            FnRunner(move |_, ctl: Controller| {
                let (s, d) = (s.clone(), d.clone());
                async move {
                    if ctl.attempt() > 1 {
                        return Ok(json!("second time lucky"));
                    }
                    *s.lock().unwrap() = Some(Instant::now());
                    let _clock = DropClock(d);
                    std::future::pending::<()>().await;
                    Ok(json!("unreachable"))
                }
            }),
        )
        .build()
        .unwrap()
        .start();
    let h = f
        .client
        .trigger("stuck_once", json!({}), TaskOptions::new())
        .await
        .unwrap();
    wait_for("the attempt to be dropped", async || {
        dropped_at.lock().unwrap().is_some()
    })
    .await;
    let ran = dropped_at.lock().unwrap().unwrap() - started_at.lock().unwrap().unwrap();
    // the lease counts from just before the claim, a little before the start
    assert!(
        ran >= lease - Duration::from_millis(150),
        "stopped after {ran:?}, before the {lease:?} lease ran out"
    );
    assert!(f.faults.heartbeat.failed() >= 3);
    // nothing was written for the dropped attempt; once the store answers,
    // the leader rescues the task and it runs again
    f.faults.heartbeat.set(false);
    let task = f.client.wait(h.id(), WAIT).await.unwrap();
    assert_eq!(task.status, Status::Success, "{task:?}");
    assert_eq!(task.attempt, 2);
    let outcomes: Vec<AttemptOutcome> = f
        .client
        .attempts(h.id())
        .await
        .unwrap()
        .iter()
        .map(|a| a.outcome)
        .collect();
    assert_eq!(
        outcomes,
        [AttemptOutcome::LeaseExpired, AttemptOutcome::Success]
    );
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_completer_retries_a_finish_until_it_is_stored_while_the_lease_is_renewed() {
    let f = fixture().await;
    f.faults.finish.set(true);
    let lease = Duration::from_millis(600);
    let worker = builder(&f)
        .lease(lease)
        .runner("quick", FnRunner(|_, _| async { Ok(json!("done")) }))
        .build()
        .unwrap()
        .start();
    let h = f
        .client
        .trigger("quick", json!({}), TaskOptions::new())
        .await
        .unwrap();
    // 50 + 100 + 200 + 400 + 800 ms of failed writes: well past the lease
    wait_for("finishes to fail six times", async || {
        f.faults.finish.failed() >= 6
    })
    .await;
    let task = f.client.get(h.id()).await.unwrap();
    assert_eq!(
        task.status,
        Status::Running,
        "heartbeats keep the lease: {task:?}"
    );
    assert!(
        task.lease_expires_at
            .is_some_and(|at| at > Utc::now() - chrono::Duration::milliseconds(100))
    );
    f.faults.finish.set(false);
    let task = f.client.wait(h.id(), WAIT).await.unwrap();
    assert_eq!(task.status, Status::Success);
    assert_eq!(task.attempt, 1, "the outcome was kept, not run again");
    assert_eq!(f.client.attempts(h.id()).await.unwrap().len(), 1);
    let stats = worker.stats();
    assert_eq!((stats.succeeded, stats.stale), (1, 0));
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_a_store_outage_is_prompt() {
    let f = fixture().await;
    let worker = builder(&f)
        .runner("quick", FnRunner(|_, _| async { Ok(json!("done")) }))
        .build()
        .unwrap()
        .start();
    for fault in [&f.faults.claim, &f.faults.heartbeat, &f.faults.elect] {
        fault.set(true);
    }
    wait_for("a failed claim", async || f.faults.claim.failed() >= 1).await;
    let began = Instant::now();
    worker.shutdown().await.unwrap();
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
}

#[tokio::test]
async fn leader_ttl_defaults_to_three_intervals_and_must_exceed_the_interval() {
    let f = fixture().await;
    let base =
        || Worker::builder(f.flaky.clone()).runner("x", FnRunner(|_, _| async { Ok(Value::Null) }));
    let ttl = |b: WorkerBuilder| b.build().map(|w| w.shared.config.leader_ttl);
    assert_eq!(ttl(base()).unwrap(), Duration::from_secs(15));
    assert_eq!(
        ttl(base().maintenance_interval(Duration::from_millis(100))).unwrap(),
        Duration::from_secs(2),
        "at least 2 s"
    );
    assert_eq!(
        ttl(base()
            .maintenance_interval(Duration::from_millis(100))
            .leader_ttl(Duration::from_millis(300)))
        .unwrap(),
        Duration::from_millis(300)
    );
    let err = ttl(base().leader_ttl(Duration::from_secs(5))).unwrap_err();
    assert!(err.to_string().contains("leader_ttl"), "{err}");
}
