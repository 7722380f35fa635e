//! Dependencies, groups and unique keys through the real binary: the CLI
//! on the store itself and through `offload serve`, and the HTTP API, on
//! SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Env, assert_one_error};
use offload_test_support::PgSchema;
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

async fn body(r: Response) -> (StatusCode, Value) {
    let status = r.status();
    let text = r.text().await.unwrap();
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    (status, value)
}

async fn post(http: &Client, url: &str, v: Value) -> (StatusCode, Value) {
    body(http.post(url).json(&v).send().await.unwrap()).await
}

/// `offload enqueue` with a unique key and with dependencies, and what
/// `get` says a blocked or scheduled task waits for.
fn cli_unique_and_dependencies(env: &Env) {
    let first = env.enqueue(&[
        "--type",
        "import",
        "--data",
        r#"{"c": 7}"#,
        "--unique-key",
        "import:7",
    ]);
    let out = env.run(&[
        "enqueue",
        "--type",
        "import",
        "--data",
        r#"{"c": 8}"#,
        "--unique-key",
        "import:7",
    ]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), first);
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(note.contains("existing"), "{note}");
    assert_eq!(env.task(&first)["input"], json!({"c": 7}));
    assert_eq!(env.task(&first)["unique_key"], json!("import:7"));

    // replace: the waiting task takes the new input
    let replaced = env.enqueue(&[
        "--type",
        "import",
        "--data",
        r#"{"c": 9}"#,
        "--unique-key",
        "import:7",
        "--unique-mode",
        "replace",
    ]);
    assert_eq!(replaced, first);
    assert_eq!(env.task(&first)["input"], json!({"c": 9}));

    // a dependent is blocked, and get says on what
    let dependent = env.enqueue(&["--type", "report", "--depends-on", &first]);
    let task = env.task(&dependent);
    assert_eq!(task["status"], json!("blocked"));
    assert_eq!(task["depends_on"], json!([first]));
    let waiting = task["waiting_for"].as_str().unwrap();
    assert!(waiting.contains(&format!("{first} (pending)")), "{waiting}");
    let text = env.ok(&["get", &dependent]);
    assert!(text.contains("waiting_for"), "{text}");
    let later = env.enqueue(&["--type", "report", "--delay", "1h"]);
    assert!(
        env.task(&later)["waiting_for"]
            .as_str()
            .unwrap()
            .starts_with("its start time")
    );

    // aborting the dependency aborts the dependent
    env.ok(&["abort", &first, "--reason", "not needed"]);
    let task = env.task(&dependent);
    assert_eq!(task["status"], json!("aborted"));
    assert_eq!(task["error"]["kind"], json!("dependency_failed"));

    // bad input changes nothing
    let before = env.all_tasks().len();
    let missing = "01a2019e-0daa-735d-b2fc-158efc91655d";
    let out = env.run(&["enqueue", "--type", "report", "--depends-on", missing]);
    assert_one_error(&out, 2, "depends_on");
    let out = env.run(&["enqueue", "--type", "report", "--depends-on", &first]);
    assert_one_error(&out, 2, "can never succeed");
    let out = env.run(&[
        "enqueue",
        "--type",
        "r",
        "--unique-key",
        "k",
        "--unique-mode",
        "debounce",
    ]);
    assert_one_error(&out, 2, "window");
    let out = env.run(&["enqueue", "--type", "r", "--unique-mode", "replace"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(env.all_tasks().len(), before);
}

/// `offload groups enqueue|get|abort`.
fn cli_groups(env: &Env) {
    let file = env.path("group.json");
    std::fs::write(
        &file,
        r#"{"members": [{"name": "part", "input": {"p": 1}}, {"name": "part", "input": {"p": 2}}],
            "callback": {"name": "assemble", "input": {"report": 7}}}"#,
    )
    .unwrap();
    let id = env.ok(&["groups", "enqueue", "--file", file.to_str().unwrap()]);
    let id = id.trim();
    let status = env.json(&["groups", "get", id]);
    assert_eq!(status["size"], json!(2));
    assert_eq!(status["ended"], json!(0));
    assert_eq!(status["callback_status"], json!("blocked"));
    assert_eq!(status["members"], json!({"pending": 2}));
    let callback = env.task(id);
    assert_eq!(callback["group_id"], json!(id));
    assert_eq!(callback["after"].as_array().unwrap().len(), 2);
    let text = env.ok(&["groups", "get", id]);
    assert!(text.contains("0 of 2 members ended"), "{text}");

    let aborted = env.json(&["groups", "abort", id, "--reason", "wrong month"]);
    assert_eq!(aborted["callback_status"], json!("aborted"));
    assert_eq!(aborted["members"], json!({"aborted": 2}));
    let audit = env.json(&["audit", "--action", "group.abort"]);
    assert_eq!(
        audit["records"][0]["reason"],
        json!("wrong month"),
        "{audit}"
    );

    std::fs::write(&file, r#"{"members": [{"name": "part"}]}"#).unwrap();
    let out = env.run(&["groups", "enqueue", "--file", file.to_str().unwrap()]);
    assert_one_error(&out, 2, "callback");
    let out = env.run(&["groups", "get", "01a2019e-0daa-735d-b2fc-158efc91655d"]);
    assert_eq!(out.status.code(), Some(1));
}

/// The same over HTTP: outcomes and status codes, groups, 422s.
async fn http_flow(env: &Env) {
    let (_server, base) = env.serve(&["--no-worker"]);
    let http = Client::new();
    let tasks = format!("{base}/v1/tasks");
    let (s, a) = post(
        &http,
        &tasks,
        json!({"name": "sync", "unique_key": "sync:1"}),
    )
    .await;
    assert_eq!(
        (s, &a["outcome"]),
        (StatusCode::CREATED, &json!("created")),
        "{a}"
    );
    let (s, b) = post(
        &http,
        &tasks,
        json!({"name": "sync", "unique_key": "sync:1"}),
    )
    .await;
    assert_eq!(
        (s, &b["outcome"]),
        (StatusCode::OK, &json!("existing")),
        "{b}"
    );
    assert_eq!(a["id"], b["id"]);
    let (s, many) = post(
        &http,
        &tasks,
        json!([{"name": "sync", "unique_key": "sync:1", "unique": {"mode": "replace"}, "input": 2}, {"name": "other"}]),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{many}");
    assert_eq!(many["outcomes"], json!(["replaced", "created"]));
    let (s, dep) = post(
        &http,
        &tasks,
        json!({"name": "after", "depends_on": [a["id"]]}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{dep}");
    let (s, e) = post(
        &http,
        &tasks,
        json!({"name": "after", "depends_on": ["01a2019e-0daa-735d-b2fc-158efc91655d"]}),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(e["error"]["field"], json!("depends_on"), "{e}");
    let (s, e) = post(
        &http,
        &tasks,
        json!({"name": "x", "unique": {"mode": "replace"}}),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");

    let groups = format!("{base}/v1/groups");
    let (s, g) = post(
        &http,
        &groups,
        json!({"members": [{"name": "part"}, {"type": "part", "payload": 2}], "callback": {"name": "done"}}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{g}");
    assert_eq!(g["id"], g["callback"]);
    let id = g["id"].as_str().unwrap();
    let (s, st) = body(http.get(format!("{groups}/{id}")).send().await.unwrap()).await;
    assert_eq!(s, StatusCode::OK, "{st}");
    assert_eq!(
        (st["size"].clone(), st["members"].clone()),
        (json!(2), json!({"pending": 2}))
    );
    let (s, st) = body(
        http.post(format!("{groups}/{id}/abort?reason=stop"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{st}");
    assert_eq!(st["callback_status"], json!("aborted"));
    let member = g["members"][0].as_str().unwrap();
    let (_, t) = body(http.get(format!("{tasks}/{member}")).send().await.unwrap()).await;
    assert_eq!(t["status"], json!("aborted"));
    let (s, e) = post(
        &http,
        &groups,
        json!({"members": [{"name": "p"}], "callback": {"name": "c"}, "extra": 1}),
    )
    .await;
    assert_eq!(
        (s, &e["error"]["field"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("extra")),
        "{e}"
    );
    let (s, e) = post(
        &http,
        &groups,
        json!({"members": [{"name": "p", "unique_key": "k"}], "callback": {"name": "c"}}),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    let (s, e) = body(http.get(format!("{groups}/{member}")).send().await.unwrap()).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");

    // the CLI through the server
    let out = env
        .bare(&["groups", "get", id, "--json", "--server", &base])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["members"], json!({"aborted": 2}));
}

#[test]
fn cli_flow_on_sqlite() {
    let env = Env::new();
    cli_unique_and_dependencies(&env);
    cli_groups(&env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_flow_on_postgres() {
    let schema = PgSchema::new().await;
    let mut env = Env::new();
    env.database = Some(schema.url());
    tokio::task::spawn_blocking(move || {
        cli_unique_and_dependencies(&env);
        cli_groups(&env);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_flow_on_sqlite() {
    http_flow(&Env::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_flow_on_postgres() {
    let schema = PgSchema::new().await;
    let mut env = Env::new();
    env.database = Some(schema.url());
    http_flow(&env).await;
}
