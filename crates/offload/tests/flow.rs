//! Flow control through the library with real workers, on SQLite and
//! PostgreSQL: a diamond of dependencies whose last task reads its
//! dependencies' outputs, a failure that aborts exactly what is downstream,
//! a group whose callback reads its members' outcomes, aborting a group,
//! and debounce (20 enqueues 100 ms apart → one run with the last input).

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use offload::{
    Client, Context, Controller, EnqueueOutcome, NewTask, Runner, Status, Task, TaskError,
    TaskOptions, UniquePolicy, Worker, WorkerHandle, async_trait,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// What the runners saw: (event, task name, input) in order.
type Log = Arc<Mutex<Vec<(&'static str, String, Value)>>>;

/// Records its start and end; fails when the input says `"fail": true`;
/// returns the input's `n` plus the outputs of its dependencies, and for a
/// group callback the members' statuses.
struct Recorder(Log);

#[async_trait]
impl Runner for Recorder {
    async fn run(&self, task: &Task, ctx: &Context, _: &Controller) -> Result<Value, TaskError> {
        self.0
            .lock()
            .unwrap()
            .push(("start", task.name.clone(), task.input.clone()));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let deps = ctx
            .dependencies()
            .await
            .map_err(|e| TaskError::new(e.to_string()))?;
        let members = ctx
            .group_results()
            .await
            .map_err(|e| TaskError::new(e.to_string()))?;
        self.0
            .lock()
            .unwrap()
            .push(("end", task.name.clone(), task.input.clone()));
        if task.input["fail"] == json!(true) {
            return Err(TaskError::fatal("asked to fail"));
        }
        let sum: i64 = task.input["n"].as_i64().unwrap_or(0)
            + deps
                .iter()
                .map(|d| d.output.as_ref().and_then(Value::as_i64).unwrap_or(0))
                .sum::<i64>();
        if task.after.is_empty() {
            Ok(json!(sum))
        } else {
            let statuses: Vec<String> = members.iter().map(|m| m.status.to_string()).collect();
            Ok(json!({ "members": statuses }))
        }
    }
}

fn start(client: &Client, log: &Log, names: &[&str]) -> WorkerHandle {
    let mut b = Worker::builder(client.store().clone())
        .poll_interval(Duration::from_millis(100))
        .concurrency(4);
    for name in names {
        b = b.runner(*name, Recorder(log.clone()));
    }
    b.build().unwrap().start()
}

fn task(name: &str, input: Value) -> NewTask {
    NewTask::new(name, input).options(TaskOptions::new().max_attempts(1))
}

fn after(mut t: NewTask, deps: &[&NewTask]) -> NewTask {
    t.options.depends_on = deps.iter().map(|d| d.id).collect();
    t
}

fn position(log: &Log, event: &str, n: i64) -> usize {
    log.lock()
        .unwrap()
        .iter()
        .position(|(e, _, input)| *e == event && input["n"] == json!(n))
        .unwrap_or_else(|| panic!("no {event} of n={n}"))
}

async fn diamond_runs_in_order_and_reads_outputs(client: Client, _other: Client) {
    let log: Log = Arc::default();
    // A(1) → B(10), C(100) → D(1000): D returns 1000 + (10 + 1) + (100 + 1)
    let a = task("step", json!({"n": 1}));
    let b = after(task("step", json!({"n": 10})), &[&a]);
    let c = after(task("step", json!({"n": 100})), &[&a]);
    let d = after(task("step", json!({"n": 1000})), &[&b, &c]);
    let d_id = d.id;
    let handles = client.trigger_many(vec![a, b, c, d]).await.unwrap();
    assert!(
        handles
            .iter()
            .all(|h| h.outcome() == EnqueueOutcome::Created)
    );
    assert_eq!(client.get(d_id).await.unwrap().status, Status::Blocked);
    let worker = start(&client, &log, &["step"]);
    let done = client.wait(d_id, WAIT).await.unwrap();
    worker.shutdown().await.unwrap();
    assert_eq!(done.status, Status::Success);
    assert_eq!(done.output, Some(json!(1112)));
    assert!(position(&log, "end", 1) < position(&log, "start", 10));
    assert!(position(&log, "end", 1) < position(&log, "start", 100));
    assert!(position(&log, "end", 10) < position(&log, "start", 1000));
    assert!(position(&log, "end", 100) < position(&log, "start", 1000));
}

async fn a_failed_branch_aborts_exactly_what_is_downstream(client: Client, _other: Client) {
    let log: Log = Arc::default();
    // A → B (fails) → D → E ; A → C → D ; F alone; G depends on C only
    let a = task("step", json!({"n": 1}));
    let b = after(task("step", json!({"n": 2, "fail": true})), &[&a]);
    let c = after(task("step", json!({"n": 3})), &[&a]);
    let d = after(task("step", json!({"n": 4})), &[&b, &c]);
    let e = after(task("step", json!({"n": 5})), &[&d]);
    let f = task("step", json!({"n": 6}));
    let g = after(task("step", json!({"n": 7})), &[&c]);
    let ids: Vec<_> = [&a, &b, &c, &d, &e, &f, &g].iter().map(|t| t.id).collect();
    client
        .trigger_many(vec![a, b, c, d, e, f, g])
        .await
        .unwrap();
    let worker = start(&client, &log, &["step"]);
    for id in &ids {
        client.wait(*id, WAIT).await.unwrap();
    }
    worker.shutdown().await.unwrap();
    let mut statuses = Vec::new();
    for id in &ids {
        statuses.push(client.get(*id).await.unwrap());
    }
    let s: Vec<Status> = statuses.iter().map(|t| t.status).collect();
    use Status::*;
    assert_eq!(
        s,
        [Success, Failed, Success, Aborted, Aborted, Success, Success]
    );
    for t in &statuses[3..5] {
        let error = t.error.as_ref().unwrap();
        assert_eq!(error.kind, "dependency_failed");
        assert_eq!(t.attempt, 0, "an aborted dependent never ran");
    }
    assert!(
        statuses[3]
            .error
            .as_ref()
            .unwrap()
            .message
            .contains(&ids[1].to_string())
    );
    assert!(
        statuses[4]
            .error
            .as_ref()
            .unwrap()
            .message
            .contains(&ids[3].to_string())
    );
    // nothing downstream of the failure started
    assert!(
        !log.lock()
            .unwrap()
            .iter()
            .any(|(_, _, i)| i["n"] == json!(4) || i["n"] == json!(5))
    );
}

async fn a_group_callback_reads_every_members_outcome(client: Client, _other: Client) {
    let log: Log = Arc::default();
    let members: Vec<NewTask> = (1..=5)
        .map(|n| task("part", json!({"n": n, "fail": n == 3})))
        .collect();
    let group = client
        .trigger_group(members, task("assemble", json!({})))
        .await
        .unwrap();
    let before = client.group(group.id()).await.unwrap();
    assert_eq!(before.size, 5);
    assert_eq!(before.ended, 0);
    assert_eq!(before.callback_status, Status::Blocked);
    let worker = start(&client, &log, &["part", "assemble"]);
    let done = client.wait(group.id(), WAIT).await.unwrap();
    worker.shutdown().await.unwrap();
    assert_eq!(done.status, Status::Success);
    assert_eq!(
        done.output,
        Some(json!({"members": ["success", "success", "failed", "success", "success"]}))
    );
    let after = client.group(group.id()).await.unwrap();
    assert_eq!((after.size, after.ended, after.percent), (5, 5, 100));
    assert_eq!(after.members.get(&Status::Failed), Some(&1));
    assert_eq!(after.callback_status, Status::Success);
    // the callback started after the last member ended
    let log = log.lock().unwrap();
    let callback_start = log
        .iter()
        .position(|(e, n, _)| *e == "start" && n == "assemble")
        .unwrap();
    let last_end = log
        .iter()
        .rposition(|(e, n, _)| *e == "end" && n == "part")
        .unwrap();
    assert!(last_end < callback_start);
}

async fn aborting_a_group_aborts_its_callback_and_waiting_members(client: Client, _other: Client) {
    let members: Vec<NewTask> = (1..=3).map(|n| task("part", json!({"n": n}))).collect();
    let group = client
        .trigger_group(members, task("assemble", json!({})))
        .await
        .unwrap();
    let status = client
        .abort_group(group.id(), Some("wrong month".into()))
        .await
        .unwrap();
    assert_eq!(status.callback_status, Status::Aborted);
    assert_eq!(status.members.get(&Status::Aborted), Some(&3));
    for m in &group.members {
        let t = m.task().await.unwrap();
        assert_eq!(t.error.unwrap().message, "wrong month");
    }
}

async fn debounce_runs_once_with_the_last_input(client: Client, _other: Client) {
    let log: Log = Arc::default();
    let worker = start(&client, &log, &["reindex"]);
    let policy = UniquePolicy::debounce(Duration::from_secs(1)).max_wait(Duration::from_secs(5));
    let mut ids = Vec::new();
    let began = Instant::now();
    for i in 0..20 {
        let h = client
            .trigger(
                "reindex",
                json!({"n": i}),
                TaskOptions::new()
                    .unique_key("reindex:all")
                    .unique(policy.clone()),
            )
            .await
            .unwrap();
        let expected = if i == 0 {
            EnqueueOutcome::Created
        } else {
            EnqueueOutcome::Debounced
        };
        assert_eq!(h.outcome(), expected, "enqueue {i}");
        ids.push(h.id());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "the machine is too slow for this test"
    );
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one task took every enqueue"
    );
    let done = client.wait(ids[0], WAIT).await.unwrap();
    // a little longer, for a second run that must not come
    tokio::time::sleep(Duration::from_millis(1500)).await;
    worker.shutdown().await.unwrap();
    assert_eq!(done.status, Status::Success);
    let starts: Vec<Value> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(e, _, _)| *e == "start")
        .map(|(_, _, i)| i.clone())
        .collect();
    assert_eq!(starts, [json!({"n": 19})]);
}

on_both!(
    diamond_runs_in_order_and_reads_outputs,
    a_failed_branch_aborts_exactly_what_is_downstream,
    a_group_callback_reads_every_members_outcome,
    aborting_a_group_aborts_its_callback_and_waiting_members,
    debounce_runs_once_with_the_last_input,
);
