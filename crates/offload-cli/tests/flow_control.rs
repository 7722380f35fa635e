//! Schedules and limits through real processes: a rate limit of 50/s
//! across three `offload worker` processes is never exceeded in any
//! one-second window (measured from the recorded start times) and still
//! drains the work; two workers with the same `[schedules]` enqueue one
//! task per tick; `offload schedules` and `offload limits` on the store
//! and through `offload serve`; a quota answers 429 over HTTP.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{Env, assert_one_error, sh_runner, wait_for};
use offload_test_support::PgSchema;
use serde_json::{Value, json};

/// These tests load both cores with several processes; one at a time.
static HEAVY: Mutex<()> = Mutex::new(());

fn env_on(database: Option<String>, config: &str) -> Env {
    let mut env = Env::with_config(config);
    env.database = database;
    env
}

fn started_at(tasks: &[Value]) -> Vec<DateTime<Utc>> {
    let mut times: Vec<DateTime<Utc>> = tasks
        .iter()
        .map(|t| t["started_at"].as_str().unwrap().parse().unwrap())
        .collect();
    times.sort();
    times
}

fn rate_across_three_workers(database: Option<String>) {
    let config = format!(
        "{}\n[limits.name.tick]\nrate = \"50/s\"\n",
        sh_runner("tick", "echo '{}'", "")
    );
    let env = env_on(database, &config);
    let file = env.path("tasks.jsonl");
    let text: String = (0..150)
        .map(|i| format!("{{\"name\": \"tick\", \"input\": {{\"i\": {i}}}}}\n"))
        .collect();
    std::fs::write(&file, text).unwrap();
    // the limit is stored before anything can run
    env.ok(&["limits", "set", "--name", "tick", "--rate", "50/s"]);
    env.ok(&["enqueue", "--file", file.to_str().unwrap()]);
    let workers: Vec<_> = (0..3)
        .map(|_| env.worker(&["--concurrency", "20"]))
        .collect();
    wait_for("every task to succeed", Duration::from_secs(90), || {
        (env.counts()["success"].as_u64().unwrap_or(0) == 150).then_some(())
    });
    drop(workers);
    let starts = started_at(&env.all_tasks());
    assert_eq!(starts.len(), 150);
    let mut worst = 0;
    for (i, t) in starts.iter().enumerate() {
        let in_window = starts[i..]
            .iter()
            .take_while(|u| **u - *t < chrono::Duration::seconds(1))
            .count();
        worst = worst.max(in_window);
    }
    assert!(worst <= 50, "{worst} starts within one second");
    let span = *starts.last().unwrap() - starts[0];
    assert!(
        span >= chrono::Duration::seconds(2),
        "150 starts took only {span}"
    );
}

fn schedules_cli_and_two_scheduling_workers(database: Option<String>) {
    let config = format!(
        "{}\n[schedules.every-second]\ncron = \"* * * * * *\"\ntask = \"tick\"\ninput = {{ n = 1 }}\n",
        sh_runner("tick", "echo '{}'", "")
    );
    let env = env_on(database, &config);
    // the CLI on the store
    let added = env.json(&[
        "schedules",
        "add",
        "nightly",
        "--cron",
        "0 3 * * *",
        "--time-zone",
        "Europe/Berlin",
        "--type",
        "report",
        "--data",
        r#"{"kind": "daily"}"#,
    ]);
    let nightly = &added["schedules"][0];
    assert_eq!(nightly["time_zone"], json!("Europe/Berlin"));
    assert_eq!(nightly["upcoming"].as_array().unwrap().len(), 1);
    let list = env.ok(&["schedules", "list", "--next", "3"]);
    assert!(
        list.contains("nightly") && list.contains("Europe/Berlin"),
        "{list}"
    );
    let paused = env.json(&["schedules", "pause", "nightly", "--reason", "migration"]);
    assert_eq!(paused["schedules"][0]["paused"], json!(true));
    let resumed = env.json(&["schedules", "resume", "nightly"]);
    assert_eq!(resumed["schedules"][0]["paused"], json!(false));
    let out = env.run(&[
        "schedules",
        "add",
        "bad",
        "--cron",
        "0 25 * * *",
        "--type",
        "x",
    ]);
    assert_one_error(&out, 2, "cron");
    let out = env.run(&["schedules", "pause", "nope"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.ok(&["schedules", "delete", "nightly"]);
    let out = env.run(&["schedules", "delete", "nightly"]);
    assert_eq!(out.status.code(), Some(1));

    // two worker processes state the same schedule and share its ticks
    let first = env.worker(&[]);
    let second = env.worker(&[]);
    std::thread::sleep(Duration::from_millis(4500));
    drop(first);
    drop(second);
    let mut by_tick: BTreeMap<String, usize> = BTreeMap::new();
    for t in env.all_tasks() {
        assert_eq!(t["name"], json!("tick"));
        let tick = t["metadata"]["schedule"]["tick"]
            .as_str()
            .unwrap()
            .to_owned();
        *by_tick.entry(tick).or_default() += 1;
    }
    assert!(by_tick.len() >= 3, "{by_tick:?}");
    assert!(by_tick.values().all(|n| *n == 1), "{by_tick:?}");
    let ticks: Vec<DateTime<Utc>> = by_tick.keys().map(|t| t.parse().unwrap()).collect();
    for pair in ticks.windows(2) {
        assert_eq!(pair[1] - pair[0], chrono::Duration::seconds(1), "{ticks:?}");
    }
    let listed = env.json(&["schedules", "list"]);
    assert_eq!(listed["schedules"][0]["name"], json!("every-second"));
    assert!(listed["schedules"][0]["last_task_id"].is_string());
}

async fn limits_and_schedules_through_the_server(database: Option<String>) {
    let env = env_on(database, "");
    let (_server, base) = env.serve(&["--no-worker"]);
    let remote = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--server", base.as_str(), "--json"]);
        let out = env.bare(&all).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let set = remote(&[
        "limits",
        "set",
        "--queue",
        "default",
        "--max-queued-per-key",
        "2",
    ]);
    assert_eq!(set["limits"][0]["max_queued_per_key"], json!(2));
    remote(&[
        "limits",
        "set",
        "--name",
        "import",
        "--key",
        "customer_id",
        "--key-concurrency",
        "1",
    ]);
    let listed = remote(&["limits", "list"]);
    assert_eq!(listed["limits"].as_array().unwrap().len(), 2);
    remote(&[
        "schedules",
        "add",
        "hourly",
        "--cron",
        "@hourly",
        "--type",
        "report",
    ]);
    let s = remote(&["schedules", "list"]);
    assert_eq!(s["schedules"][0]["cron"], json!("@hourly"));
    remote(&["schedules", "pause", "hourly"]);
    remote(&["schedules", "delete", "hourly"]);

    // a quota answers 429 with Retry-After and stores nothing
    let http = reqwest::Client::new();
    let url = format!("{base}/v1/tasks");
    for _ in 0..2 {
        let r = http
            .post(&url)
            .json(&json!({"name": "x", "fairness_key": "t1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let r = http
        .post(&url)
        .json(&json!({"name": "x", "fairness_key": "t1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], json!("quota_exceeded"));
    let r = http
        .post(&url)
        .json(&json!({"name": "x", "fairness_key": "t2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .post(format!("{base}/v1/limits"))
        .json(&json!({"scope": "queue", "target": "default"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = http
        .delete(format!("{base}/v1/limits/queue/default"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = http
        .delete(format!("{base}/v1/limits/queue/default"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http
        .delete(format!("{base}/v1/limits/tenant/default"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    // a pending task's get names the limits that apply to it
    let id = env.enqueue(&["--type", "import", "--data", r#"{"customer_id": 1}"#]);
    let task = env.task(&id);
    let waiting = task["waiting_for"].as_str().unwrap();
    assert!(waiting.contains("1 running per customer_id"), "{waiting}");
}

#[test]
fn rate_limit_across_three_workers_on_sqlite() {
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    rate_across_three_workers(None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_across_three_workers_on_postgres() {
    let schema = PgSchema::new().await;
    let url = schema.url();
    tokio::task::spawn_blocking(move || {
        let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
        rate_across_three_workers(Some(url));
    })
    .await
    .unwrap();
}

#[test]
fn schedules_on_sqlite() {
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    schedules_cli_and_two_scheduling_workers(None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_on_postgres() {
    let schema = PgSchema::new().await;
    let url = schema.url();
    tokio::task::spawn_blocking(move || {
        let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
        schedules_cli_and_two_scheduling_workers(Some(url));
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_schedules_through_the_server_on_sqlite() {
    limits_and_schedules_through_the_server(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_schedules_through_the_server_on_postgres() {
    let schema = PgSchema::new().await;
    limits_and_schedules_through_the_server(Some(schema.url())).await;
}
