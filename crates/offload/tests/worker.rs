//! Worker behaviour on a real SQLite store: retries, timeouts, panics,
//! aborts, progress, hooks, priorities, delays, shutdown and lease loss.
//! No sleeps to wait: results are awaited through change notifications and
//! conditions are polled with deadlines.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use offload::{
    AttemptResult, Client, Context, Controller, Hook, RetryPolicy, Runner, Status, Task, TaskError,
    TaskOptions, Worker, WorkerBuilder, async_trait,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

struct Fixture {
    _dir: tempfile::TempDir,
    client: Client,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("offload.db").display());
    let client = Client::connect(&url).await.unwrap();
    Fixture { _dir: dir, client }
}

fn builder(f: &Fixture) -> WorkerBuilder {
    Worker::builder(f.client.store().clone())
        .poll_interval(Duration::from_millis(200))
        .abort_grace(Duration::from_millis(500))
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

fn runner<F, Fut>(f: F) -> FnRunner<F>
where
    F: Fn(Task, Controller) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Value, TaskError>> + Send,
{
    FnRunner(f)
}

async fn wait_for(mut cond: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_returns_output_on_completion() {
    let f = fixture().await;
    let worker = builder(&f)
        .runner(
            "double",
            runner(|t, _| async move { Ok(json!(t.input["n"].as_i64().unwrap_or(0) * 2)) }),
        )
        .build()
        .unwrap()
        .start();
    let handle = f
        .client
        .trigger("double", json!({"n": 21}), TaskOptions::new())
        .await
        .unwrap();
    assert_eq!(handle.result(WAIT).await.unwrap(), json!(42));
    let task = handle.task().await.unwrap();
    assert_eq!(task.status, Status::Success);
    assert_eq!(task.attempt, 1);
    assert!(task.finished_at.is_some());
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_times_out_while_pending() {
    let f = fixture().await;
    let handle = f
        .client
        .trigger("nobody_runs_this", json!({}), TaskOptions::new())
        .await
        .unwrap();
    let err = handle.result(Duration::from_millis(200)).await.unwrap_err();
    assert!(matches!(err, offload::Error::Timeout(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_with_backoff_then_succeeds() {
    let f = fixture().await;
    let worker = builder(&f)
        .runner(
            "flaky",
            runner(|_, ctl: Controller| async move {
                if ctl.attempt() < 3 {
                    Err(TaskError::new("upstream 503"))
                } else {
                    Ok(json!("ok"))
                }
            }),
        )
        .build()
        .unwrap()
        .start();
    let backoff = RetryPolicy {
        initial: Duration::from_millis(300),
        max: Duration::from_secs(5),
        multiplier: 2.0,
        jitter: 0.0,
    };
    let handle = f
        .client
        .trigger("flaky", json!({}), TaskOptions::new().retry(backoff))
        .await
        .unwrap();
    assert_eq!(handle.result(WAIT).await.unwrap(), json!("ok"));
    let attempts = f.client.attempts(handle.id()).await.unwrap();
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[0].error.as_ref().unwrap().message, "upstream 503");
    // back-off: 300 ms after the first failure, 600 ms after the second
    let gap1 = attempts[1].started_at - attempts[0].finished_at.unwrap();
    let gap2 = attempts[2].started_at - attempts[1].finished_at.unwrap();
    assert!(gap1.num_milliseconds() >= 290, "gap1 {gap1}");
    assert!(gap2.num_milliseconds() >= 590, "gap2 {gap2}");
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_attempts_fail_with_last_error() {
    let f = fixture().await;
    let worker = builder(&f)
        .runner(
            "always_fails",
            runner(|_, ctl: Controller| async move {
                Err(TaskError::new(format!("boom {}", ctl.attempt())))
            }),
        )
        .build()
        .unwrap()
        .start();
    let handle = f
        .client
        .trigger(
            "always_fails",
            json!({}),
            TaskOptions::new()
                .max_attempts(2)
                .retry(RetryPolicy::immediate()),
        )
        .await
        .unwrap();
    let err = handle.result(WAIT).await.unwrap_err();
    match err {
        offload::Error::TaskFailed(e) => {
            assert_eq!(e.message, "boom 2");
            assert_eq!(e.attempt, 2);
        }
        other => panic!("unexpected {other}"),
    }
    assert_eq!(f.client.attempts(handle.id()).await.unwrap().len(), 2);
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_retryable_error_fails_at_once() {
    let f = fixture().await;
    let worker = builder(&f)
        .runner(
            "bad_input",
            runner(|_, _| async move {
                Err(TaskError::fatal("email address is invalid").kind("validation"))
            }),
        )
        .build()
        .unwrap()
        .start();
    let handle = f
        .client
        .trigger("bad_input", json!({}), TaskOptions::new().max_attempts(5))
        .await
        .unwrap();
    assert!(
        matches!(handle.result(WAIT).await, Err(offload::Error::TaskFailed(e)) if e.kind == "validation")
    );
    let task = handle.task().await.unwrap();
    assert_eq!((task.status, task.attempt), (Status::Failed, 1));
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_fails_the_attempt_and_retries() {
    let f = fixture().await;
    let worker = builder(&f)
        .runner(
            "slow",
            runner(|_, ctl: Controller| async move {
                if ctl.attempt() == 1 {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                Ok(json!("fast enough"))
            }),
        )
        .build()
        .unwrap()
        .start();
    let handle = f
        .client
        .trigger(
            "slow",
            json!({}),
            TaskOptions::new()
                .timeout(Duration::from_millis(300))
                .retry(RetryPolicy::immediate()),
        )
        .await
        .unwrap();
    assert_eq!(handle.result(WAIT).await.unwrap(), json!("fast enough"));
    let attempts = f.client.attempts(handle.id()).await.unwrap();
    assert_eq!(attempts[0].error.as_ref().unwrap().kind, "timeout");
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_is_a_failed_attempt_and_the_worker_lives_on() {
    let f = fixture().await;
    let worker = builder(&f)
        .runner(
            "panics",
            runner(|t, _| async move {
                if t.input["panic"] == json!(true) {
                    panic!("index out of bounds in the runner");
                }
                Ok(json!("fine"))
            }),
        )
        .build()
        .unwrap()
        .start();
    let bad = f
        .client
        .trigger(
            "panics",
            json!({"panic": true}),
            TaskOptions::new().max_attempts(1),
        )
        .await
        .unwrap();
    match bad.result(WAIT).await.unwrap_err() {
        offload::Error::TaskFailed(e) => {
            assert_eq!(e.kind, "panic");
            assert!(e.message.contains("index out of bounds"), "{}", e.message);
        }
        other => panic!("unexpected {other}"),
    }
    let good = f
        .client
        .trigger("panics", json!({"panic": false}), TaskOptions::new())
        .await
        .unwrap();
    assert_eq!(good.result(WAIT).await.unwrap(), json!("fine"));
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_of_a_pending_task_is_immediate() {
    let f = fixture().await;
    let handle = f
        .client
        .trigger("never", json!({}), TaskOptions::new())
        .await
        .unwrap();
    let task = handle.abort().await.unwrap();
    assert_eq!(task.status, Status::Aborted);
    assert!(matches!(
        handle.result(WAIT).await,
        Err(offload::Error::TaskAborted(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_of_a_running_task_resolves_aborted_and_ends_it() {
    let f = fixture().await;
    let saw_abort = Arc::new(Mutex::new(None));
    let seen = saw_abort.clone();
    let worker = builder(&f)
        .runner(
            "long",
            runner(move |_, ctl: Controller| {
                let seen = seen.clone();
                async move {
                    let reason = ctl.aborted().await;
                    *seen.lock().unwrap() = Some(reason);
                    Err(TaskError::new("stopped"))
                }
            }),
        )
        .build()
        .unwrap()
        .start();
    let handle = f
        .client
        .trigger("long", json!({}), TaskOptions::new())
        .await
        .unwrap();
    wait_for(async || handle.status().await.unwrap() == Status::Running).await;
    f.client
        .abort(handle.id(), Some("operator changed their mind".into()))
        .await
        .unwrap();
    assert!(matches!(
        handle.result(WAIT).await,
        Err(offload::Error::TaskAborted(_))
    ));
    assert_eq!(*saw_abort.lock().unwrap(), Some(offload::StopReason::Abort));
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_drops_a_runner_that_ignores_it() {
    let f = fixture().await;
    let worker = builder(&f)
        .runner(
            "stubborn",
            runner(|_, _| async move {
                tokio::time::sleep(Duration::from_secs(600)).await;
                Ok(json!(null))
            }),
        )
        .build()
        .unwrap()
        .start();
    let handle = f
        .client
        .trigger("stubborn", json!({}), TaskOptions::new())
        .await
        .unwrap();
    wait_for(async || handle.status().await.unwrap() == Status::Running).await;
    handle.abort().await.unwrap();
    assert!(matches!(
        handle.result(WAIT).await,
        Err(offload::Error::TaskAborted(_))
    ));
    // the attempt leaves the worker's table once its outcome is stored
    wait_for(async || worker.stats().running == 0).await;
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_updates_are_stored() {
    let f = fixture().await;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let gate = Arc::new(tokio::sync::Mutex::new(Some(rx)));
    let worker = builder(&f)
        .runner(
            "report",
            runner(move |_, ctl: Controller| {
                let gate = gate.clone();
                async move {
                    ctl.progress(40, Some("rendering charts".into()))
                        .await
                        .map_err(|e| TaskError::new(e.to_string()))?;
                    if let Some(rx) = gate.lock().await.take() {
                        let _ = rx.await;
                    }
                    ctl.progress(100, None)
                        .await
                        .map_err(|e| TaskError::new(e.to_string()))?;
                    Ok(json!("done"))
                }
            }),
        )
        .build()
        .unwrap()
        .start();
    let handle = f
        .client
        .trigger("report", json!({}), TaskOptions::new())
        .await
        .unwrap();
    wait_for(async || {
        handle
            .task()
            .await
            .unwrap()
            .progress
            .is_some_and(|p| p.percent == 40)
    })
    .await;
    let p = handle.task().await.unwrap().progress.unwrap();
    assert_eq!(p.message.as_deref(), Some("rendering charts"));
    tx.send(()).unwrap();
    handle.result(WAIT).await.unwrap();
    assert_eq!(handle.task().await.unwrap().progress.unwrap().percent, 100);
    worker.shutdown().await.unwrap();
}

struct Recorder {
    label: &'static str,
    log: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl Hook for Recorder {
    async fn on_before_run(&self, _task: &Task, _ctx: &Context) -> Result<(), TaskError> {
        self.log
            .lock()
            .unwrap()
            .push(format!("{}:before", self.label));
        Ok(())
    }
    async fn on_after_run(&self, _task: &Task, _result: &AttemptResult, _ctx: &Context) {
        self.log
            .lock()
            .unwrap()
            .push(format!("{}:after", self.label));
    }
    async fn on_success(&self, _task: &Task, _output: &Value, _ctx: &Context) {
        self.log
            .lock()
            .unwrap()
            .push(format!("{}:success", self.label));
    }
    async fn on_failure(&self, _task: &Task, _error: &TaskError, _ctx: &Context) {
        self.log
            .lock()
            .unwrap()
            .push(format!("{}:failure", self.label));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_in_middleware_order() {
    let f = fixture().await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let in_run = log.clone();
    let worker = builder(&f)
        .runner(
            "hooked",
            runner(move |t, _| {
                let log = in_run.clone();
                async move {
                    log.lock().unwrap().push("run".into());
                    if t.input["fail"] == json!(true) {
                        Err(TaskError::fatal("no"))
                    } else {
                        Ok(json!(1))
                    }
                }
            }),
        )
        .hook(Recorder {
            label: "outer",
            log: log.clone(),
        })
        .runner_hook(
            "hooked",
            Recorder {
                label: "inner",
                log: log.clone(),
            },
        )
        .build()
        .unwrap()
        .start();
    f.client
        .trigger("hooked", json!({}), TaskOptions::new())
        .await
        .unwrap()
        .result(WAIT)
        .await
        .unwrap();
    // hooks after the run happen before the outcome is written, so they are complete here
    assert_eq!(
        *log.lock().unwrap(),
        [
            "outer:before",
            "inner:before",
            "run",
            "inner:after",
            "inner:success",
            "outer:after",
            "outer:success"
        ]
    );
    log.lock().unwrap().clear();
    let _ = f
        .client
        .trigger("hooked", json!({"fail": true}), TaskOptions::new())
        .await
        .unwrap()
        .result(WAIT)
        .await;
    assert_eq!(
        *log.lock().unwrap(),
        [
            "outer:before",
            "inner:before",
            "run",
            "inner:after",
            "inner:failure",
            "outer:after",
            "outer:failure"
        ]
    );
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_runs_first() {
    let f = fixture().await;
    let order = Arc::new(Mutex::new(Vec::new()));
    let seen = order.clone();
    for (i, priority) in [(0, 0), (1, 10), (2, -5), (3, 10), (4, 3)] {
        f.client
            .trigger(
                "ordered",
                json!({"i": i}),
                TaskOptions::new().priority(priority),
            )
            .await
            .unwrap();
    }
    let worker = builder(&f)
        .concurrency(1)
        .claim_batch(1)
        .runner(
            "ordered",
            runner(move |t, _| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(t.input["i"].as_i64().unwrap());
                    Ok(json!(null))
                }
            }),
        )
        .build()
        .unwrap()
        .start();
    wait_for(async || order.lock().unwrap().len() == 5).await;
    // priority 10 first (in enqueue order), then 3, 0, -5
    assert_eq!(*order.lock().unwrap(), vec![1, 3, 4, 0, 2]);
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_task_starts_at_its_time() {
    let f = fixture().await;
    let worker = builder(&f)
        .poll_interval(Duration::from_secs(30)) // the start must come from run_at, not the poll
        .runner("later", runner(|_, _| async move { Ok(json!(null)) }))
        .build()
        .unwrap()
        .start();
    let handle = f
        .client
        .trigger(
            "later",
            json!({}),
            TaskOptions::new().delay(Duration::from_millis(800)),
        )
        .await
        .unwrap();
    assert_eq!(handle.status().await.unwrap(), Status::Scheduled);
    handle.result(WAIT).await.unwrap();
    let task = handle.task().await.unwrap();
    let waited = task.started_at.unwrap() - task.created_at;
    assert!(waited.num_milliseconds() >= 800, "started after {waited}");
    assert!(waited.num_milliseconds() < 5000, "started after {waited}");
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snooze_reschedules_without_using_an_attempt() {
    let f = fixture().await;
    let runs = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = runs.clone();
    let worker = builder(&f)
        .runner(
            "snoozer",
            runner(move |_, ctl: Controller| {
                let counter = counter.clone();
                async move {
                    if counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                        ctl.snooze(Duration::from_millis(200));
                        std::future::pending::<()>().await;
                    }
                    Ok(json!("woke up"))
                }
            }),
        )
        .build()
        .unwrap()
        .start();
    let handle = f
        .client
        .trigger("snoozer", json!({}), TaskOptions::new().max_attempts(1))
        .await
        .unwrap();
    // a snoozed attempt is not counted, so one allowed attempt is enough
    assert_eq!(handle.result(WAIT).await.unwrap(), json!("woke up"));
    let attempts = f.client.attempts(handle.id()).await.unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].outcome, offload::AttemptOutcome::Snoozed);
    let gap = attempts[1].started_at - attempts[0].finished_at.unwrap();
    assert!(gap.num_milliseconds() >= 190, "snoozed for {gap}");
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 2);
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_unfinished_tasks_as_pending() {
    let f = fixture().await;
    let worker = Worker::builder(f.client.store().clone())
        .shutdown_grace(Duration::from_millis(200))
        .abort_grace(Duration::from_millis(200))
        .runner(
            "endless",
            runner(|_, ctl: Controller| async move {
                ctl.aborted().await;
                Err(TaskError::new("interrupted"))
            }),
        )
        .build()
        .unwrap()
        .start();
    let handles = f
        .client
        .trigger_many(
            (0..3)
                .map(|i| offload::NewTask::new("endless", json!({"i": i})))
                .collect(),
        )
        .await
        .unwrap();
    wait_for(async || worker.stats().running == 3).await;
    worker.shutdown().await.unwrap();
    for h in handles {
        let task = h.task().await.unwrap();
        assert_eq!(task.status, Status::Pending, "{task:?}");
        assert_eq!(task.attempt, 0, "a released attempt is not counted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_state_and_typed_tasks() {
    use offload::TaskType;
    use serde::{Deserialize, Serialize};

    struct Greeting(&'static str);
    #[derive(Serialize, Deserialize)]
    struct Person {
        name: String,
    }
    struct Greet;
    impl TaskType for Greet {
        const NAME: &'static str = "greet";
        type Input = Person;
        type Output = String;
        async fn run(
            &self,
            input: Person,
            ctx: &Context,
            _ctl: &Controller,
        ) -> Result<String, TaskError> {
            let greeting = ctx
                .state::<Greeting>()
                .ok_or_else(|| TaskError::fatal("no greeting"))?;
            Ok(format!("{}, {}!", greeting.0, input.name))
        }
    }

    let f = fixture().await;
    let worker = builder(&f)
        .state(Greeting("Hello"))
        .task(Greet)
        .build()
        .unwrap()
        .start();
    let handle = Greet::enqueue(&f.client, Person { name: "Ada".into() })
        .await
        .unwrap();
    assert_eq!(handle.result(WAIT).await.unwrap(), "Hello, Ada!");
    // input that does not match the type fails without retry
    let bad = f
        .client
        .trigger("greet", json!({"nom": 1}), TaskOptions::new())
        .await
        .unwrap();
    assert!(
        matches!(bad.result(WAIT).await, Err(offload::Error::TaskFailed(e)) if e.kind == "input")
    );
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_until_runs_and_is_drained() {
    let f = fixture().await;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    f.client.wait_until(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    assert!(f.client.drain_background(WAIT).await);
    assert!(done.load(std::sync::atomic::Ordering::SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_lease_stops_the_attempt_and_the_task_runs_again() {
    let f = fixture().await;
    let first_dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    struct SetOnDrop(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let flag = first_dropped.clone();
    let worker = builder(&f)
        .lease(Duration::from_millis(300))
        .runner(
            "rescued",
            runner(move |_, ctl: Controller| {
                let flag = flag.clone();
                async move {
                    if ctl.attempt() == 1 {
                        let _guard = SetOnDrop(flag);
                        std::future::pending::<()>().await;
                    }
                    Ok(json!("fresh"))
                }
            }),
        )
        .build()
        .unwrap()
        .start();
    let handle = f
        .client
        .trigger("rescued", json!({}), TaskOptions::new())
        .await
        .unwrap();
    wait_for(async || handle.status().await.unwrap() == Status::Running).await;
    // another process's maintenance, far in the future, rescues the lease
    let rescued = f
        .client
        .store()
        .task_rescue_expired(&offload_store::TaskRescueParams {
            now: chrono::Utc::now() + chrono::Duration::hours(1),
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(rescued.len(), 1);
    assert_eq!(handle.result(WAIT).await.unwrap(), json!("fresh"));
    // the first attempt's runner was dropped when its heartbeat found the lease gone
    wait_for(async || first_dropped.load(std::sync::atomic::Ordering::SeqCst)).await;
    let attempts = f.client.attempts(handle.id()).await.unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].outcome, offload::AttemptOutcome::LeaseExpired);
    assert_eq!(
        worker.stats().stale,
        0,
        "no result was offered for the lost attempt"
    );
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_all_succeed_once() {
    let f = fixture().await;
    let worker = builder(&f)
        .concurrency(50)
        .runner("noop", runner(|_, _| async move { Ok(json!(null)) }))
        .build()
        .unwrap()
        .start();
    let tasks: Vec<_> = (0..3000)
        .map(|i| offload::NewTask::new("noop", json!({"i": i})))
        .collect();
    for chunk in tasks.chunks(1000) {
        f.client.trigger_many(chunk.to_vec()).await.unwrap();
    }
    wait_for(async || {
        let counts = f
            .client
            .count(offload::TaskFilter::default())
            .await
            .unwrap();
        counts
            .iter()
            .filter(|c| c.status == Status::Success)
            .map(|c| c.count)
            .sum::<u64>()
            == 3000
    })
    .await;
    let stats = worker.stats();
    assert_eq!(stats.claimed, 3000);
    assert_eq!(stats.succeeded, 3000);
    worker.shutdown().await.unwrap();
}

struct PanickingHook;

#[async_trait]
impl Hook for PanickingHook {
    async fn on_before_run(&self, task: &Task, _ctx: &Context) -> Result<(), TaskError> {
        if task.input["panic"] == json!(true) {
            panic!("hook exploded");
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_hook_fails_the_attempt_instead_of_leaving_it_running() {
    let f = fixture().await;
    let worker = builder(&f)
        .hook(PanickingHook)
        .runner("hooked", runner(|_, _| async move { Ok(json!("ran")) }))
        .build()
        .unwrap()
        .start();
    let bad = f
        .client
        .trigger(
            "hooked",
            json!({"panic": true}),
            TaskOptions::new().max_attempts(1),
        )
        .await
        .unwrap();
    match bad.result(WAIT).await.unwrap_err() {
        offload::Error::TaskFailed(e) => {
            assert_eq!(e.kind, "panic");
            assert!(e.message.contains("hook exploded"), "{}", e.message);
        }
        other => panic!("unexpected {other}"),
    }
    // the worker lives on and its slot and lease table are clean
    let good = f
        .client
        .trigger("hooked", json!({}), TaskOptions::new())
        .await
        .unwrap();
    assert_eq!(good.result(WAIT).await.unwrap(), json!("ran"));
    wait_for(async || worker.stats().running == 0).await;
    worker.shutdown().await.unwrap();
    let running = f
        .client
        .count(offload::TaskFilter {
            statuses: vec![Status::Running],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(running.is_empty(), "{running:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_settings_are_refused() {
    let f = fixture().await;
    let build = |b: WorkerBuilder| {
        b.runner("x", runner(|_, _| async move { Ok(json!(null)) }))
            .build()
    };
    for (b, word) in [
        (builder(&f).lease(Duration::from_millis(10)), "lease"),
        (builder(&f).lease(Duration::from_secs(10_000_000)), "lease"),
        (builder(&f).concurrency(0), "concurrency"),
        (builder(&f).abort_grace(Duration::MAX), "abort_grace"),
    ] {
        let err = build(b).unwrap_err().to_string();
        assert!(err.contains(word), "{err}");
    }
    // a wait far past what the clock can count is simply a long wait
    let handle = f
        .client
        .trigger("x", json!({}), TaskOptions::new())
        .await
        .unwrap();
    handle.abort().await.unwrap();
    assert!(matches!(
        handle.result(Duration::MAX).await,
        Err(offload::Error::TaskAborted(_))
    ));
}
