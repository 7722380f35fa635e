//! The pull protocol of `offload serve` for remote workers: over real HTTP
//! on SQLite and PostgreSQL, and the README's Python worker (standard
//! library only) run with `python3`, SIGKILLed mid-task.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Env, Proc};
use nix::sys::signal::Signal;
use offload_test_support::PgSchema;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

async fn post(http: &Client, url: &str, v: Value) -> (StatusCode, Value) {
    let r = http.post(url).json(&v).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

async fn get(http: &Client, url: &str) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// Lease, heartbeat, progress, complete, fail, abort, stale tokens, long-poll.
async fn protocol(env: &Env) {
    let (_server, base) = env.serve(&["--no-worker"]);
    let http = Client::new();
    let lease = format!("{base}/v1/lease");
    let tasks = format!("{base}/v1/tasks");

    let (s, none) = post(&http, &lease, json!({})).await;
    assert_eq!(s, StatusCode::OK, "{none}");
    assert_eq!(none["tasks"], json!([]));

    let (_, made) = post(
        &http,
        &tasks,
        json!([{"name": "job", "input": 1}, {"name": "job", "input": 2, "max_attempts": 1}, {"name": "other"}]),
    )
    .await;
    let ids: Vec<String> = made["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let (s, got) = post(
        &http,
        &lease,
        json!({"names": ["job"], "max": 5, "lease": "20s", "worker_id": "test-worker"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{got}");
    let leased = got["tasks"].as_array().unwrap();
    assert_eq!(leased.len(), 2, "{got}");
    let token = |i: usize| leased[i]["lease_token"].as_str().unwrap().to_owned();
    let id = |i: usize| leased[i]["id"].as_str().unwrap().to_owned();
    assert!(leased.iter().all(|t| t["status"] == json!("running")));
    assert!(
        leased
            .iter()
            .all(|t| t["worker_id"] == json!("test-worker"))
    );
    // the token is only in the lease answer
    let shown = get(&http, &format!("{tasks}/{}", id(0))).await;
    assert!(shown.get("lease_token").is_none(), "{shown}");

    // heartbeat; an abort request shows in the next answer; the worker ends it aborted
    let beat = format!("{tasks}/{}/heartbeat", id(0));
    let (s, b) = post(&http, &beat, json!({"lease_token": token(0)})).await;
    assert_eq!(
        (s, b.clone()),
        (StatusCode::OK, json!({"abort_requested": false}))
    );
    let (s, _) = post(
        &http,
        &format!("{tasks}/{}/abort", id(0)),
        json!({"reason": "stop"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (_, b) = post(
        &http,
        &beat,
        json!({"lease_token": token(0), "lease": "10s"}),
    )
    .await;
    assert_eq!(b, json!({"abort_requested": true}));
    let (s, f) = post(
        &http,
        &format!("{tasks}/{}/fail", id(0)),
        json!({"lease_token": token(0), "aborted": true}),
    )
    .await;
    assert_eq!((s, f), (StatusCode::OK, json!({"status": "aborted"})));

    // progress, then a wrong token and a failure with no attempt left
    let (s, p) = post(
        &http,
        &format!("{tasks}/{}/progress", id(1)),
        json!({"lease_token": token(1), "percent": 40, "message": "halfway"}),
    )
    .await;
    assert_eq!((s, p), (StatusCode::OK, json!({"abort_requested": false})));
    let shown = get(&http, &format!("{tasks}/{}", id(1))).await;
    assert_eq!(shown["progress"]["percent"], json!(40), "{shown}");
    let wrong = "00000000-0000-4000-8000-000000000000";
    for route in ["heartbeat", "complete", "progress"] {
        let body = if route == "progress" {
            json!({"lease_token": wrong, "percent": 1})
        } else {
            json!({"lease_token": wrong})
        };
        let (s, e) = post(&http, &format!("{tasks}/{}/{route}", id(1)), body).await;
        assert_eq!(s, StatusCode::CONFLICT, "{route}: {e}");
        assert_eq!(e["error"]["code"], json!("lease_lost"), "{e}");
    }
    let (s, f) = post(
        &http,
        &format!("{tasks}/{}/fail", id(1)),
        json!({"lease_token": token(1), "error": {"message": "boom", "kind": "io"}}),
    )
    .await;
    assert_eq!((s, f), (StatusCode::OK, json!({"status": "failed"})));
    let shown = get(&http, &format!("{tasks}/{}", id(1))).await;
    assert_eq!(shown["error"]["message"], json!("boom"), "{shown}");
    assert_eq!(shown["error"]["kind"], json!("io"), "{shown}");
    // the attempt is over: its token is stale now
    let (s, _) = post(
        &http,
        &format!("{tasks}/{}/complete", id(1)),
        json!({"lease_token": token(1), "output": 1}),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);

    // malformed protocol calls
    let (s, e) = post(&http, &lease, json!({"max": 0})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(e["error"]["field"], json!("max"), "{e}");
    let (s, e) = post(&http, &lease, json!({"wait": "2h"})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    let (s, e) = post(&http, &format!("{tasks}/{}/complete", ids[2]), json!({})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");

    // long-poll: a lease waiting for work gets a task enqueued later
    let waiting = {
        let http = http.clone();
        let lease = lease.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let (_, got) = post(&http, &lease, json!({"names": ["late"], "wait": "20s"})).await;
            (started.elapsed(), got)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, _) = post(&http, &tasks, json!({"name": "late", "input": "x"})).await;
    assert_eq!(s, StatusCode::CREATED);
    let (took, got) = waiting.await.unwrap();
    assert_eq!(got["tasks"][0]["input"], json!("x"), "{got}");
    assert!(
        took < Duration::from_secs(10),
        "the long-poll woke after {took:?}"
    );
    let (s, c) = post(
        &http,
        &format!(
            "{tasks}/{}/complete",
            got["tasks"][0]["id"].as_str().unwrap()
        ),
        json!({"lease_token": got["tasks"][0]["lease_token"], "output": {"ok": true}}),
    )
    .await;
    assert_eq!((s, c), (StatusCode::OK, json!({"status": "success"})));
}

#[tokio::test]
async fn protocol_on_sqlite() {
    protocol(&Env::new()).await;
}

#[tokio::test]
async fn protocol_on_postgres() {
    let schema = PgSchema::new().await;
    let mut env = Env::new();
    env.database = Some(schema.url());
    protocol(&env).await;
}

fn python_worker(env: &Env, base: &str, token: &str) -> Proc {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/remote/worker.py");
    let log = env.path(&format!("python-{}.log", std::process::id()));
    let child = Command::new("python3")
        .arg(script)
        .env("OFFLOAD_SERVER", base)
        .env("OFFLOAD_TOKEN", token)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("python3 runs");
    Proc { child, log }
}

/// The README's Python worker runs a task with progress; SIGKILLed mid-task,
/// its task is rescued and another Python worker completes it. The server
/// asks for tokens: the workers present a `worker` one.
#[tokio::test]
async fn python_worker_survives_a_sigkill_through_another() {
    let env = Env::new();
    let worker_token = env.json(&["tokens", "create", "--role", "worker"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let producer = env.json(&["tokens", "create", "--role", "producer"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_server, base) = env.serve(&["--no-worker"]);
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "authorization",
        format!("Bearer {producer}").parse().unwrap(),
    );
    let http = Client::builder().default_headers(headers).build().unwrap();
    let tasks = format!("{base}/v1/tasks");

    let first = python_worker(&env, &base, &worker_token);
    let (_, quick) = post(
        &http,
        &tasks,
        json!({"name": "shout", "input": {"text": "hi", "seconds": 0.4}}),
    )
    .await;
    let quick = quick["id"].as_str().unwrap().to_owned();
    let (s, done) = {
        let r = http
            .get(format!("{tasks}/{quick}/result?wait=30s"))
            .send()
            .await
            .unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(
        s,
        StatusCode::OK,
        "{done}; worker log: {}",
        first.log_text()
    );
    assert_eq!(done["output"], json!({"text": "HI"}));
    let shown = get(&http, &format!("{tasks}/{quick}")).await;
    assert_eq!(shown["progress"]["percent"], json!(100), "{shown}");

    // a slow one: kill its worker once it has reported progress
    let (_, slow) = post(
        &http,
        &tasks,
        json!({"name": "shout", "input": {"text": "again", "seconds": 8}}),
    )
    .await;
    let slow = slow["id"].as_str().unwrap().to_owned();
    let url = format!("{tasks}/{slow}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = get(&http, &url).await;
        if t["status"] == json!("running") && t["progress"]["percent"].as_u64().unwrap_or(0) >= 25 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never ran: {t}; log: {}",
            first.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut first = first;
    first.signal(Signal::SIGKILL);
    first.wait_exit(Duration::from_secs(10));

    let second = python_worker(&env, &base, &worker_token);
    let r = http
        .get(format!("{url}/result?wait=60s"))
        .send()
        .await
        .unwrap();
    let done: Value = r.json().await.unwrap();
    assert_eq!(
        done["status"],
        json!("success"),
        "{done}; log: {}",
        second.log_text()
    );
    assert_eq!(done["output"], json!({"text": "AGAIN"}));
    let t = get(&http, &url).await;
    let outcomes: Vec<&Value> = t["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["outcome"])
        .collect();
    assert_eq!(
        outcomes,
        vec![&json!("lease_expired"), &json!("success")],
        "{t}"
    );
    let workers: Vec<&Value> = t["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["worker_id"])
        .collect();
    assert_ne!(workers[0], workers[1], "{t}");
    drop(second);
}
