//! Access control of `offload serve` over real HTTP, on SQLite and on
//! PostgreSQL: tokens made with `offload tokens create`, 401 and 403 per
//! role, tokens made and deleted through the API, the audit log from both
//! the API and the CLI, and `Idempotency-Key` on enqueue.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Env, sh_runner};
use offload_test_support::PgSchema;
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::{Value, json};

async fn send(req: RequestBuilder) -> (StatusCode, Value) {
    let r = req.send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    (status, value)
}

fn code(got: &(StatusCode, Value)) -> &str {
    got.1["error"]["code"].as_str().unwrap_or("")
}

/// `offload tokens create --role ROLE --json` → (id, token).
fn create(env: &Env, role: &str) -> (String, String) {
    let made = env.json(&["tokens", "create", "--role", role, "--label", role]);
    assert_eq!(made["role"], json!(role), "{made}");
    (
        made["id"].as_str().unwrap().to_owned(),
        made["token"].as_str().unwrap().to_owned(),
    )
}

async fn access(env: &Env) {
    // no token yet: listing says the API is open
    let none = env.ok(&["tokens", "list"]);
    assert!(none.contains("no tokens"), "{none}");
    let (admin_id, admin) = create(env, "admin");
    let (_, producer) = create(env, "producer");
    let (worker_id, worker) = create(env, "worker");
    let (_, read) = create(env, "read");
    let listed = env.json(&["tokens", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 4, "{listed}");
    assert!(
        !listed.to_string().contains(&admin[20..]),
        "a list shows no secret"
    );

    let (server, base) = env.serve(&["--concurrency", "2"]);
    let http = Client::new();
    let tasks = format!("{base}/v1/tasks");

    // no token, a malformed header, an unknown token: 401 with a challenge
    let r = http.get(&tasks).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let got = send(http.get(&tasks).header("authorization", "Basic eDp5")).await;
    assert_eq!(got.0, StatusCode::UNAUTHORIZED, "{}", got.1);
    assert_eq!(code(&got), "unauthorized");
    let forged = format!(
        "{}{}",
        &admin[..admin.len() - 1],
        if admin.ends_with('0') { "1" } else { "0" }
    );
    let got = send(http.get(&tasks).bearer_auth(&forged)).await;
    assert_eq!(got.0, StatusCode::UNAUTHORIZED, "{}", got.1);
    let got = send(http.get(&tasks).bearer_auth("ofl_nonsense")).await;
    assert_eq!(got.0, StatusCode::UNAUTHORIZED, "{}", got.1);

    // open routes stay open
    for open in ["/healthz", "/readyz", "/v1/openapi.json"] {
        let r = http.get(format!("{base}{open}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{open}");
    }
    let r = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = http
        .get(format!("{base}/metrics"))
        .bearer_auth(&read)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // read: reads, nothing else
    let got = send(http.get(&tasks).bearer_auth(&read)).await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    let got = send(
        http.post(&tasks)
            .bearer_auth(&read)
            .json(&json!({"name": "idle"})),
    )
    .await;
    assert_eq!(got.0, StatusCode::FORBIDDEN, "{}", got.1);
    assert_eq!(code(&got), "forbidden");
    assert!(got.1["error"]["message"].as_str().unwrap().contains("read"));

    // producer: enqueues and aborts, may not delete or lease
    let got = send(
        http.post(&tasks)
            .bearer_auth(&producer)
            .json(&json!({"name": "idle", "input": 1})),
    )
    .await;
    assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
    let id = got.1["id"].as_str().unwrap().to_owned();
    let got = send(http.delete(format!("{tasks}/{id}")).bearer_auth(&producer)).await;
    assert_eq!(got.0, StatusCode::FORBIDDEN, "{}", got.1);
    let got = send(
        http.post(format!("{base}/v1/lease"))
            .bearer_auth(&producer)
            .json(&json!({"names": ["idle"]})),
    )
    .await;
    assert_eq!(got.0, StatusCode::FORBIDDEN, "{}", got.1);
    let got = send(
        http.post(format!("{tasks}/{id}/abort"))
            .bearer_auth(&producer)
            .json(&json!({"reason": "customer cancelled"})),
    )
    .await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    assert_eq!(got.1["status"], json!("aborted"));

    // worker: leases, may not read the audit log or make tokens
    let got = send(
        http.post(format!("{base}/v1/lease"))
            .bearer_auth(&worker)
            .json(&json!({"names": ["nothing-here"], "wait": "0s"})),
    )
    .await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    let got = send(http.get(format!("{base}/v1/audit")).bearer_auth(&worker)).await;
    assert_eq!(got.0, StatusCode::FORBIDDEN, "{}", got.1);
    let got = send(
        http.post(format!("{base}/v1/tokens"))
            .bearer_auth(&worker)
            .json(&json!({"role": "admin"})),
    )
    .await;
    assert_eq!(got.0, StatusCode::FORBIDDEN, "{}", got.1);

    // admin: retries and deletes (with reasons), makes and deletes tokens
    let got = send(
        http.post(format!("{tasks}/{id}/retry?reason=try%20again"))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    let got = send(
        http.delete(format!("{tasks}/{id}?reason=cleanup"))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(got.0, StatusCode::NO_CONTENT, "{}", got.1);
    let got = send(
        http.post(format!("{base}/v1/tokens"))
            .bearer_auth(&admin)
            .json(&json!({"role": "read", "label": "dashboard"})),
    )
    .await;
    assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
    let new_id = got.1["id"].as_str().unwrap().to_owned();
    let new_token = got.1["token"].as_str().unwrap().to_owned();
    let got = send(http.get(&tasks).bearer_auth(&new_token)).await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    let got = send(
        http.post(format!("{base}/v1/tokens"))
            .bearer_auth(&admin)
            .json(&json!({"role": "root"})),
    )
    .await;
    assert_eq!(got.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", got.1);
    let mut stream = http
        .get(format!("{base}/v1/events"))
        .header("accept", "text/event-stream")
        .bearer_auth(&new_token)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let got = send(
        http.delete(format!("{base}/v1/tokens/{new_id}"))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(got.0, StatusCode::NO_CONTENT, "{}", got.1);
    // an open stream ends soon after its token is gone
    tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while stream.chunk().await.unwrap().is_some() {}
    })
    .await
    .expect("the event stream outlived its deleted token");
    let got = send(http.get(&tasks).bearer_auth(&new_token)).await;
    assert_eq!(
        got.0,
        StatusCode::UNAUTHORIZED,
        "a deleted token stops at once"
    );
    let got = send(
        http.delete(format!("{base}/v1/tokens/{new_id}"))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(got.0, StatusCode::NOT_FOUND, "{}", got.1);

    // the CLI on the store itself is `local` in the audit log
    let other = env.enqueue(&["--type", "idle"]);
    env.ok(&["abort", &other, "--reason", "operator says so"]);

    let got = send(
        http.get(format!("{base}/v1/audit?limit=100"))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    let records = got.1["records"].as_array().unwrap().clone();
    let find = |action: &str, target: &str| -> Value {
        records
            .iter()
            .find(|r| r["action"] == json!(action) && r["target"] == json!(target))
            .unwrap_or_else(|| panic!("no {action} of {target} in {records:?}"))
            .clone()
    };
    let producer_id = env.json(&["tokens", "list"]).as_array().unwrap()[1]["id"].clone();
    let abort = find("task.abort", &id);
    assert_eq!(
        abort["actor"],
        json!(format!("token:{}", producer_id.as_str().unwrap()))
    );
    assert_eq!(abort["reason"], json!("customer cancelled"));
    assert_eq!(find("task.retry", &id)["reason"], json!("try again"));
    assert_eq!(
        find("task.delete", &id)["actor"],
        json!(format!("token:{admin_id}"))
    );
    assert_eq!(
        find("token.create", &new_id)["details"]["role"],
        json!("read")
    );
    find("token.delete", &new_id);
    let local = find("task.abort", &other);
    assert_eq!(local["actor"], json!("local"));
    assert_eq!(local["reason"], json!("operator says so"));
    // CLI-made tokens are in it too, newest first
    find("token.create", &worker_id);
    let seqs: Vec<i64> = records.iter().map(|r| r["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "{seqs:?}");
    let filtered = env.json(&["audit", "--action", "task.abort"]);
    let actions: Vec<&Value> = filtered["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["action"])
        .collect();
    assert_eq!(actions, vec![&json!("task.abort"), &json!("task.abort")]);
    let table = env.ok(&["audit", "--target", &other]);
    assert!(table.contains("operator says so"), "{table}");

    // Idempotency-Key: a repeat returns the first answer, enqueues nothing
    let before = env.all_tasks().len();
    let body = json!({"name": "idle", "input": {"order": 7}});
    let first = http
        .post(&tasks)
        .bearer_auth(&producer)
        .header("idempotency-key", "order-7")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let again = http
        .post(&tasks)
        .bearer_auth(&producer)
        .header("idempotency-key", "order-7")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(first, again);
    assert_eq!(env.all_tasks().len(), before + 1);
    let got = send(
        http.post(&tasks)
            .bearer_auth(&producer)
            .header("idempotency-key", "order-7")
            .json(&json!({"name": "idle", "input": {"order": 8}})),
    )
    .await;
    assert_eq!(got.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", got.1);
    assert_eq!(code(&got), "idempotency_key_reused");
    // keys belong to their token: the same key from another token is new
    let got = send(
        http.post(&tasks)
            .bearer_auth(&admin)
            .header("idempotency-key", "order-7")
            .json(&body),
    )
    .await;
    assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
    assert_ne!(got.1["id"], first["id"]);
    let got = send(
        http.post(&tasks)
            .bearer_auth(&admin)
            .header("idempotency-key", "x".repeat(256))
            .json(&body),
    )
    .await;
    assert_eq!(got.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", got.1);
    assert_eq!(got.1["error"]["field"], json!("Idempotency-Key"));
    assert_eq!(env.all_tasks().len(), before + 2);

    // no secret ever reaches the server's log
    let log = server.log_text();
    for secret in [&admin, &producer, &worker, &read, &new_token] {
        assert!(!log.contains(&secret[20..]), "a token secret is in the log");
    }
}

#[tokio::test]
async fn tokens_roles_audit_and_idempotency_on_sqlite() {
    let env = Env::with_config(&sh_runner("echo", "cat", ""));
    access(&env).await;
}

#[tokio::test]
async fn tokens_roles_audit_and_idempotency_on_postgres() {
    let schema = PgSchema::new().await;
    let mut env = Env::with_config(&sh_runner("echo", "cat", ""));
    env.database = Some(schema.url());
    access(&env).await;
}

#[test]
fn bad_token_commands_are_refused_with_one_line() {
    let env = Env::new();
    let out = env.run(&["tokens", "create", "--role", "root"]);
    common::assert_one_error(&out, 2, "unknown role");
    let out = env.run(&["tokens", "delete", "nosuchtoken"]);
    common::assert_one_error(&out, 1, "not found");
    let out = env.run(&["audit", "--limit", "0"]);
    common::assert_one_error(&out, 2, "limit");
}
