//! `offload serve`, the real binary on a loopback port, exercised over HTTP
//! on SQLite and on PostgreSQL: every task route, the error answers, and
//! the listening rules.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Env, sh_runner, wait_for};
use offload_test_support::PgSchema;
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

/// A runner `echo` that prints its input, and nothing for `idle` (its tasks
/// stay pending).
fn config() -> String {
    sh_runner("echo", "cat", "")
}

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

async fn get(http: &Client, url: &str) -> (StatusCode, Value) {
    body(http.get(url).send().await.unwrap()).await
}

fn assert_error(got: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["error"]["code"], json!(code), "{}", got.1);
    assert!(got.1["error"]["message"].is_string(), "{}", got.1);
}

/// Every task route against one server.
async fn task_routes(env: &Env) {
    let (_server, base) = env.serve(&["--concurrency", "4"]);
    let http = Client::new();
    let tasks = format!("{base}/v1/tasks");

    // enqueue one, with either spelling; the worker runs it
    let (s, one) = post(&http, &tasks, json!({"name": "echo", "input": {"a": 1}})).await;
    assert_eq!(s, StatusCode::CREATED, "{one}");
    let id = one["id"].as_str().unwrap().to_owned();
    let (s, two) = post(
        &http,
        &tasks,
        json!({"type": "echo", "payload": {"b": 2}, "priority": 5, "tags": ["t"]}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{two}");
    let (s, done) = get(&http, &format!("{tasks}/{id}/result?wait=20s")).await;
    assert_eq!(s, StatusCode::OK, "{done}");
    assert_eq!(done["status"], json!("success"));
    assert_eq!(done["output"], json!({"a": 1}));

    // one task with its attempts
    let (s, task) = get(&http, &format!("{tasks}/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{task}");
    assert_eq!(task["name"], json!("echo"));
    assert_eq!(task["attempts"][0]["outcome"], json!("success"), "{task}");

    // many, all or nothing
    let (s, many) = post(
        &http,
        &tasks,
        json!([{"name": "idle", "input": 1}, {"name": "idle", "input": 2}, {"name": "idle", "input": 3}]),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{many}");
    assert_eq!(many["ids"].as_array().unwrap().len(), 3);
    let bad = post(
        &http,
        &tasks,
        json!([{"name": "idle"}, {"name": "idle", "bogus": true}]),
    )
    .await;
    assert_error(&bad, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    assert_eq!(bad.1["error"]["field"], json!("[1].bogus"), "{}", bad.1);
    let bad = post(&http, &tasks, json!([{"name": "idle"}, {"name": ""}])).await;
    assert_error(&bad, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    assert_eq!(bad.1["error"]["field"], json!("[1].name"), "{}", bad.1);

    // list: filters and cursor pages, newest first
    let (s, page) = get(&http, &format!("{tasks}?name=idle&limit=2")).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let first: Vec<Value> = page["tasks"].as_array().unwrap().clone();
    assert_eq!(first.len(), 2);
    assert_eq!(first[0]["input"], json!(3));
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, page) = get(&http, &format!("{tasks}?name=idle&limit=2&cursor={cursor}")).await;
    assert_eq!(page["tasks"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["tasks"][0]["input"], json!(1));
    assert!(page["next_cursor"].is_null(), "{page}");
    let (_, waiting) = get(&http, &format!("{tasks}?status=pending,scheduled")).await;
    assert_eq!(waiting["tasks"].as_array().unwrap().len(), 3, "{waiting}");
    assert_error(
        &get(&http, &format!("{tasks}?status=done")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_input",
    );
    assert_error(
        &get(&http, &format!("{tasks}?limit=0")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_input",
    );
    assert_error(
        &get(&http, &format!("{tasks}?colour=red")).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );

    // a waiting task: result not yet (202), update, abort, retry, delete
    let idle = first[0]["id"].as_str().unwrap().to_owned();
    let (s, pending) = get(&http, &format!("{tasks}/{idle}/result")).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{pending}");
    assert_eq!(pending["status"], json!("pending"));
    let (s, changed) = body(
        http.patch(format!("{tasks}/{idle}"))
            .json(&json!({"priority": 7, "input": {"new": true}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{changed}");
    assert_eq!(changed["priority"], json!(7));
    assert_eq!(changed["input"], json!({"new": true}));
    let (s, aborted) = post(
        &http,
        &format!("{tasks}/{idle}/abort"),
        json!({"reason": "not needed"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{aborted}");
    assert_eq!(aborted["status"], json!("aborted"));
    assert_eq!(
        aborted["error"]["message"],
        json!("not needed"),
        "{aborted}"
    );
    let (s, again) = body(
        http.post(format!("{tasks}/{idle}/retry"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(again["status"], json!("pending"));
    let r = http.delete(format!("{tasks}/{idle}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_error(
        &get(&http, &format!("{tasks}/{idle}")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // a finished task cannot be changed
    let conflict = body(
        http.patch(format!("{tasks}/{id}"))
            .json(&json!({"priority": 1}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&conflict, StatusCode::CONFLICT, "conflict");

    // counts by queue and status (the second echo task ends soon too)
    wait_for("the second task to finish", Duration::from_secs(20), || {
        let c = env.counts();
        (common_count(&c, "success") == 2).then_some(())
    });
    let (s, queues) = get(&http, &format!("{base}/v1/queues")).await;
    assert_eq!(s, StatusCode::OK, "{queues}");
    assert_eq!(queues["queues"]["default"]["success"], json!(2), "{queues}");
    assert_eq!(queues["queues"]["default"]["pending"], json!(2), "{queues}");

    // health
    assert_eq!(
        get(&http, &format!("{base}/healthz")).await.0,
        StatusCode::OK
    );
    let (s, ready) = get(&http, &format!("{base}/readyz")).await;
    assert_eq!(s, StatusCode::OK, "{ready}");
}

fn common_count(counts: &Value, status: &str) -> u64 {
    counts[status].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn task_routes_on_sqlite() {
    let env = Env::with_config(&config());
    task_routes(&env).await;
}

#[tokio::test]
async fn task_routes_on_postgres() {
    let schema = PgSchema::new().await;
    let mut env = Env::with_config(&config());
    env.database = Some(schema.url());
    task_routes(&env).await;
}

/// Malformed requests get the documented error and change nothing.
#[tokio::test]
async fn malformed_requests_are_answered_and_change_nothing() {
    let env = Env::with_config(&config());
    let (_server, base) = env.serve(&["--no-worker", "--body-limit", "2000"]);
    let http = Client::new();
    let tasks = format!("{base}/v1/tasks");
    let send = |req: reqwest::RequestBuilder| async move { body(req.send().await.unwrap()).await };

    let cases = [
        (
            send(
                http.post(&tasks)
                    .header("content-type", "application/json")
                    .body("{\"name\":"),
            )
            .await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            send(http.post(&tasks).body("{\"name\":\"echo\"}")).await,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            send(
                http.post(&tasks)
                    .json(&json!({"name": "x", "input": "a".repeat(5000)})),
            )
            .await,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            send(http.post(&tasks).json(&json!({"input": 1}))).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            send(http.post(&tasks).json(&json!({"name": "x", "type": "y"}))).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            send(
                http.post(&tasks)
                    .json(&json!({"name": "x", "delay": "soon"})),
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            send(http.post(&tasks).json(&json!([]))).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            send(http.post(&tasks).json(&json!(42))).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            send(http.get(format!("{tasks}/not-an-id"))).await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            send(http.get(format!("{tasks}/01a241c8-f99d-760d-9b91-bf6c6424583b"))).await,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            send(http.get(format!(
                "{tasks}/01a241c8-f99d-760d-9b91-bf6c6424583b/result?wait=forever"
            )))
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            send(http.put(&tasks)).await,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            send(http.get(format!("{base}/v2/tasks"))).await,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (got, status, code) in &cases {
        assert_error(got, *status, code);
    }
    assert_eq!(
        cases[3].0.1["error"]["field"],
        json!("name"),
        "{}",
        cases[3].0.1
    );
    assert_eq!(
        cases[5].0.1["error"]["field"],
        json!("delay"),
        "{}",
        cases[5].0.1
    );
    let (_, all) = get(&http, &tasks).await;
    assert_eq!(all["tasks"], json!([]), "a malformed request stored a task");
}

#[test]
fn a_non_loopback_address_is_refused_without_insecure() {
    let env = Env::new();
    let out = env.run(&["serve", "--listen", "0.0.0.0:0", "--no-worker"]);
    let err = common::assert_one_error(&out, 2, "--insecure");
    assert!(err.contains("refusing to listen on 0.0.0.0:0"), "{err}");
    assert!(err.contains("offload tokens create"), "{err}");
    assert!(!env.db.exists(), "the store was created before the refusal");
    // an existing store without tokens is refused the same way
    env.enqueue(&["--type", "x"]);
    let out = env.run(&["serve", "--listen", "0.0.0.0:0", "--no-worker"]);
    common::assert_one_error(&out, 2, "no API token");
}

/// `/v1/openapi.json` is an OpenAPI 3.1 document that has every route with
/// its error answers, and passes `openapi-spec-validator`.
#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let env = Env::new();
    let (_server, base) = env.serve(&["--no-worker"]);
    let http = Client::new();
    let (s, doc) = get(&http, &format!("{base}/v1/openapi.json")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["openapi"], json!("3.1.0"));
    let routes = [
        ("post", "/v1/tasks"),
        ("get", "/v1/tasks"),
        ("get", "/v1/tasks/{id}"),
        ("patch", "/v1/tasks/{id}"),
        ("delete", "/v1/tasks/{id}"),
        ("post", "/v1/tasks/{id}/abort"),
        ("post", "/v1/tasks/{id}/retry"),
        ("get", "/v1/tasks/{id}/result"),
        ("get", "/v1/queues"),
        ("post", "/v1/lease"),
        ("post", "/v1/tasks/{id}/heartbeat"),
        ("post", "/v1/tasks/{id}/progress"),
        ("post", "/v1/tasks/{id}/complete"),
        ("post", "/v1/tasks/{id}/fail"),
        ("post", "/v1/purge"),
        ("get", "/v1/events"),
        ("get", "/v1/tokens"),
        ("post", "/v1/tokens"),
        ("delete", "/v1/tokens/{id}"),
        ("get", "/v1/audit"),
        ("get", "/v1/webhooks"),
        ("post", "/v1/webhooks"),
        ("delete", "/v1/webhooks/{id}"),
        ("get", "/v1/webhooks/deliveries"),
        ("post", "/v1/groups"),
        ("get", "/v1/groups/{id}"),
        ("post", "/v1/groups/{id}/abort"),
        ("get", "/v1/schedules"),
        ("post", "/v1/schedules"),
        ("get", "/v1/schedules/{name}"),
        ("delete", "/v1/schedules/{name}"),
        ("post", "/v1/schedules/{name}/pause"),
        ("post", "/v1/schedules/{name}/resume"),
        ("get", "/v1/limits"),
        ("post", "/v1/limits"),
        ("delete", "/v1/limits/{scope}/{target}"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
    ];
    // lists without any parameter cannot be malformed
    let no_input = [
        ("get", "/v1/tokens"),
        ("get", "/v1/webhooks"),
        ("get", "/v1/schedules"),
        ("get", "/v1/schedules/{name}"),
        ("get", "/v1/limits"),
    ];
    // actions that take only a query (`?reason=`), no body
    let query_only = [
        "/v1/tasks/{id}/retry",
        "/v1/groups/{id}/abort",
        "/v1/schedules/{name}/pause",
        "/v1/schedules/{name}/resume",
    ];
    let ops: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert_eq!(
        ops,
        routes.len(),
        "operations in the document: {}",
        doc["paths"]
    );
    for (method, path) in routes {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not in the document");
        let responses = op["responses"].as_object().unwrap();
        if path.starts_with("/v1/") {
            if !no_input.contains(&(method, path)) {
                assert!(responses.contains_key("400"), "{method} {path}: no 400");
            }
            assert!(responses.contains_key("503"), "{method} {path}: no 503");
        }
        // every route but health needs a token once the store has one
        if !["/healthz", "/readyz"].contains(&path) {
            assert!(responses.contains_key("401"), "{method} {path}: no 401");
            assert!(responses.contains_key("403"), "{method} {path}: no 403");
            assert_eq!(op["security"][0]["bearer"], json!([]), "{method} {path}");
        }
        if path.contains("{id}") {
            assert!(responses.contains_key("404"), "{method} {path}: no 404");
            assert_eq!(op["parameters"][0]["name"], json!("id"), "{method} {path}");
        }
        if ["post", "patch"].contains(&method) && !query_only.contains(&path) {
            assert!(op["requestBody"].is_object(), "{method} {path}: no body");
        }
    }
    // the request bodies' schemas name their fields
    let schemas = &doc["components"]["schemas"];
    for (schema, field) in [
        ("Task", "status"),
        ("LeaseBody", "wait"),
        ("FailBody", "aborted"),
        ("ErrorDetail", "field"),
    ] {
        assert!(
            schemas[schema]["properties"][field].is_object(),
            "{schema}.{field} missing: {}",
            schemas[schema]
        );
    }

    // a validator of the OpenAPI 3.1 specification agrees (.ci/run installs it)
    let file = env.path("openapi.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let has_validator = std::process::Command::new("python3")
        .args(["-c", "import openapi_spec_validator"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_validator {
        assert!(
            std::env::var("CI").is_err(),
            "openapi-spec-validator is missing in CI"
        );
        eprintln!(
            "openapi-spec-validator not installed: validation skipped (pip install openapi-spec-validator)"
        );
        return;
    }
    let out = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "invalid OpenAPI document: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `/metrics` parses as the Prometheus text format (with the reference
/// parser, `prometheus_client` for Python, which .ci/run installs) and
/// counts what happened.
#[tokio::test]
async fn metrics_parse_and_count() {
    let env = Env::with_config(&config());
    let (_server, base) = env.serve(&[]);
    let http = Client::new();
    let tasks = format!("{base}/v1/tasks");
    let (_, made) = post(
        &http,
        &tasks,
        json!([{"name": "echo", "input": 1}, {"name": "echo", "input": 2}, {"name": "idle"}]),
    )
    .await;
    for id in made["ids"].as_array().unwrap().iter().take(2) {
        let id = id.as_str().unwrap();
        let (s, _) = get(&http, &format!("{tasks}/{id}/result?wait=20s")).await;
        assert_eq!(s, StatusCode::OK);
    }
    let r = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let kind = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    let text = r.text().await.unwrap();
    let file = env.path("metrics.txt");
    std::fs::write(&file, &text).unwrap();

    let has_parser = std::process::Command::new("python3")
        .args(["-c", "import prometheus_client"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_parser {
        assert!(
            std::env::var("CI").is_err(),
            "prometheus_client is missing in CI"
        );
        eprintln!(
            "prometheus_client not installed: parse check skipped (pip install prometheus-client)"
        );
        return;
    }
    let script = "import json, sys\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        samples = [dict(name=s.name, labels=s.labels, value=s.value)\n\
                   for f in text_string_to_metric_families(open(sys.argv[1]).read()) for s in f.samples]\n\
        print(json.dumps(samples))";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "not Prometheus text format: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let value = |name: &str, labels: Value| -> f64 {
        samples
            .iter()
            .find(|s| s["name"] == json!(name) && s["labels"] == labels)
            .and_then(|s| s["value"].as_f64())
            .unwrap_or_else(|| panic!("no {name} {labels} in\n{text}"))
    };
    assert_eq!(
        value(
            "offload_tasks",
            json!({"queue": "default", "status": "success"})
        ),
        2.0
    );
    assert_eq!(
        value(
            "offload_tasks",
            json!({"queue": "default", "status": "pending"})
        ),
        1.0
    );
    assert_eq!(
        value("offload_queue_depth", json!({"queue": "default"})),
        1.0
    );
    assert_eq!(value("offload_enqueued_total", json!({})), 3.0);
    assert_eq!(
        value("offload_attempts_total", json!({"outcome": "success"})),
        2.0
    );
    assert_eq!(
        value(
            "offload_attempt_duration_seconds_count",
            json!({"name": "echo"})
        ),
        2.0
    );
    assert_eq!(
        value(
            "offload_pickup_latency_seconds_count",
            json!({"queue": "default"})
        ),
        2.0
    );
}

/// Bodies no route accepts: not JSON at all, JSON of the wrong shape, and
/// objects whose fields have the wrong types or names.
fn malformed_bodies() -> Vec<Vec<u8>> {
    let mut bodies: Vec<Vec<u8>> = [
        "",
        " ",
        "{",
        "}",
        "[",
        "]",
        "{\"",
        "nul",
        "tru",
        "-",
        "1e99999",
        "\"\\ud800\"",
        "{\"name\": }",
        "{,}",
        "[1,]",
        "{\"a\":1,}",
        "\u{0}",
        "{\"name\": \"x\"",
        "\"unterminated",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let values = [
        json!(null),
        json!(true),
        json!(-1),
        json!(1.5e308),
        json!("text"),
        serde_json::from_str::<Value>(&format!("{}1{}", "[".repeat(64), "]".repeat(64))).unwrap(),
        json!({"name": 7}),
        json!({"name": ["x"]}),
        json!({"type": {}}),
        json!({"name": "", "input": 1}),
        json!({"name": "x".repeat(10_000)}),
        json!({"name": "x", "priority": "high"}),
        json!({"name": "x", "priority": 1e20}),
        json!({"name": "x", "max_attempts": -3}),
        json!({"name": "x", "max_attempts": 0}),
        json!({"name": "x", "delay": "-5s"}),
        json!({"name": "x", "delay": -30}),
        json!({"name": "x", "run_at": "yesterday"}),
        json!({"name": "x", "delay": "1s", "run_at": "2030-01-01T00:00:00Z"}),
        json!({"name": "x", "timeout": "forever"}),
        json!({"name": "x", "retry": {"initial": "1s"}}),
        json!({"name": "x", "tags": "a"}),
        json!({"name": "x", "tags": [1]}),
        json!({"name": "x", "metadata": [1]}),
        json!({"name": "x", "queue": ""}),
        json!({"name": "x", "queue": 5}),
        json!({"name": "x", "input": 1, "payload": 2}),
        json!({"name": "x", "unknown": 1}),
        json!({"name": "x\u{0}y"}),
        json!([{"name": "ok"}, 5]),
        json!([{"name": "ok"}, {"name": "ok", "priority": "x"}]),
        json!({"lease_token": "nope"}),
        json!({"lease_token": 5, "percent": 500}),
        json!({"lease_token": "00000000-0000-4000-8000-000000000000", "percent": 101}),
        json!({"lease_token": "00000000-0000-4000-8000-000000000000", "bogus": 1}),
        json!({"max": 0}),
        json!({"max": 100000}),
        json!({"wait": "10h"}),
        json!({"lease": "1ms"}),
        json!({"queues": []}),
        json!({"queues": [""]}),
        json!({"names": "x"}),
        json!({"worker_id": ""}),
        json!({"priority": "x"}),
        json!({"max_attempts": 5000}),
        json!({"reason": 5}),
    ]
    .map(|v| v.to_string().into_bytes());
    bodies.extend(values);
    // random bytes from a fixed seed (xorshift), so a failure can be rerun
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for len in [1_usize, 7, 64, 300, 2048] {
        let mut bytes = Vec::with_capacity(len);
        for _ in 0..len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            bytes.push(state.to_le_bytes()[0]);
        }
        bodies.push(bytes);
    }
    bodies
}

/// Every route gets every malformed body (and query): never a 5xx, and
/// the stored tasks do not change.
async fn fuzz_routes(env: &Env) {
    let (_server, base) = env.serve(&["--no-worker"]);
    let http = Client::new();
    let tasks = format!("{base}/v1/tasks");
    let (_, made) = post(
        &http,
        &tasks,
        json!([{"name": "idle", "input": 1}, {"name": "idle", "input": 2, "delay": "1h"}]),
    )
    .await;
    let real = made["ids"][0].as_str().unwrap().to_owned();
    let snapshot = || async {
        let (_, page) = get(&http, &format!("{tasks}?limit=1000")).await;
        page["tasks"].clone()
    };
    let before = snapshot().await;
    let ids = [
        real.as_str(),
        "01a241c8-f99d-760d-9b91-bf6c6424583b",
        "not-an-id",
        "%00",
        "..",
    ];
    let bodies = malformed_bodies();
    let mut sent = 0;
    for body in &bodies {
        let query = String::from_utf8_lossy(body);
        let mut requests = vec![
            http.post(&tasks),
            http.post(format!("{base}/v1/lease")),
            http.get(format!("{tasks}?{query}")),
            http.post(format!("{base}/v1/purge")),
            http.get(format!("{base}/v1/events?{query}")),
            http.post(format!("{base}/v1/tokens")),
            http.get(format!("{base}/v1/audit?{query}")),
            http.post(format!("{base}/v1/webhooks")),
            http.get(format!("{base}/v1/webhooks/deliveries?{query}")),
        ];
        for id in ids {
            let one = format!("{tasks}/{id}");
            requests.push(http.patch(&one));
            for route in ["heartbeat", "progress", "complete", "fail"] {
                requests.push(http.post(format!("{one}/{route}")));
            }
            requests.push(http.get(format!(
                "{one}/result?wait={}",
                String::from_utf8_lossy(body)
            )));
            requests.push(http.delete(format!("{base}/v1/tokens/{id}")));
            requests.push(http.delete(format!("{base}/v1/webhooks/{id}")));
            // these change a real task given an empty or valid body
            if id != real {
                requests.push(http.delete(&one));
                requests.push(http.post(format!("{one}/retry")));
                requests.push(http.post(format!("{one}/abort")));
            }
        }
        for request in requests {
            let r = request
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            sent += 1;
            let status = r.status();
            let text = r.text().await.unwrap();
            assert!(
                !status.is_server_error(),
                "{status} for body {:?}: {text}",
                String::from_utf8_lossy(body)
            );
        }
    }
    assert!(sent > 1000, "only {sent} requests");
    assert_eq!(
        snapshot().await,
        before,
        "a malformed request changed the stored tasks"
    );
    assert_eq!(env.json(&["tokens", "list"]), json!([]), "a token was made");
    assert_eq!(
        env.json(&["webhooks", "list"]),
        json!([]),
        "a webhook was made"
    );
}

#[tokio::test]
async fn fuzzed_requests_get_no_5xx_and_change_nothing_on_sqlite() {
    fuzz_routes(&Env::new()).await;
}

#[tokio::test]
async fn fuzzed_requests_get_no_5xx_and_change_nothing_on_postgres() {
    let schema = PgSchema::new().await;
    let mut env = Env::new();
    env.database = Some(schema.url());
    fuzz_routes(&env).await;
}
