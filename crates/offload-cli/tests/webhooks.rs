//! Webhooks delivered by the real `offload serve` to a loopback receiver,
//! on SQLite and on PostgreSQL: every signature recomputed from the secret,
//! a receiver answering 500, 500, 200 gets the delivery on the third
//! attempt and all three attempts are listed, a task's own `webhook`
//! option, and private targets refused unless allowed.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{Env, sh_runner, wait_for};
use hmac::{Hmac, Mac};
use offload_test_support::PgSchema;
use serde_json::{Value, json};
use sha2::Sha256;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Got {
    path: String,
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
}

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Got>>>,
}

impl Receiver {
    fn on(&self, path: &str) -> Vec<Got> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|g| g.path == path)
            .cloned()
            .collect()
    }
}

async fn record(rx: &Receiver, path: &str, headers: &HeaderMap, body: Bytes) -> usize {
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let mut got = rx.got.lock().unwrap();
    got.push(Got {
        path: path.to_owned(),
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: body.to_vec(),
    });
    got.iter().filter(|g| g.path == path).count()
}

/// `/ok` and `/task` answer 200; `/flaky` answers 500 twice, then 200.
async fn receiver() -> (Receiver, String) {
    let rx = Receiver::default();
    let app = axum::Router::new()
        .route(
            "/ok",
            post(
                |State(rx): State<Receiver>, h: HeaderMap, b: Bytes| async move {
                    record(&rx, "/ok", &h, b).await;
                    StatusCode::OK
                },
            ),
        )
        .route(
            "/task",
            post(
                |State(rx): State<Receiver>, h: HeaderMap, b: Bytes| async move {
                    record(&rx, "/task", &h, b).await;
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .route(
            "/flaky",
            post(
                |State(rx): State<Receiver>, h: HeaderMap, b: Bytes| async move {
                    if record(&rx, "/flaky", &h, b).await <= 2 {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    }
                },
            ),
        )
        .with_state(rx.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (rx, format!("http://{addr}"))
}

/// Recomputes the Standard Webhooks signature of `got` with `secret`.
fn assert_signed(got: &Got, secret: &str) {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", got.id, got.timestamp).as_bytes());
    mac.update(&got.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    assert_eq!(got.signature, expected, "signature of {}", got.id);
    assert!(got.id.starts_with("msg_"), "{}", got.id);
    let ts: i64 = got.timestamp.parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - ts).abs() < 120);
}

fn body(got: &Got) -> Value {
    serde_json::from_slice(&got.body).unwrap()
}

fn config(extra: &str) -> String {
    format!(
        "{}{}{extra}",
        sh_runner("echo", "cat", ""),
        sh_runner("fail", "echo nope >&2; exit 1", "max_attempts = 1"),
    )
}

async fn webhooks(env: &Env, rx: &Receiver, base: &str) {
    let all = env.json(&[
        "webhooks",
        "add",
        &format!("{base}/ok"),
        "--events",
        "task.succeeded,task.failed",
    ]);
    let flaky = env.json(&[
        "webhooks",
        "add",
        &format!("{base}/flaky"),
        "--events",
        "task.succeeded",
        "--name",
        "echo",
        "--reason",
        "crm sync",
    ]);
    let secret = |v: &Value| v["secret"].as_str().unwrap().to_owned();
    assert!(secret(&all).starts_with("whsec_"));
    let task_secret = env.json(&["webhooks", "secret"])["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let listed = env.ok(&["webhooks", "list"]);
    assert!(listed.contains(&format!("{base}/flaky")), "{listed}");
    assert!(!listed.contains("whsec_"), "a list shows no secret");

    let (_server, api) = env.serve(&["--concurrency", "2"]);
    let ok_task = env.enqueue(&[
        "--type",
        "echo",
        "--data",
        r#"{"to": "a@example.com"}"#,
        "--webhook",
        &format!("{base}/task"),
    ]);
    let bad_task = env.enqueue(&["--type", "fail"]);

    let limit = Duration::from_secs(30);
    wait_for("2 deliveries to /ok", limit, || {
        (rx.on("/ok").len() >= 2).then_some(())
    });
    wait_for("3 attempts at /flaky", limit, || {
        (rx.on("/flaky").len() >= 3).then_some(())
    });
    wait_for("the task's own webhook", limit, || {
        (!rx.on("/task").is_empty()).then_some(())
    });

    // /ok: one succeeded, one failed, each signed with its subscription's secret
    let ok = rx.on("/ok");
    assert_eq!(ok.len(), 2, "no duplicates: {ok:?}");
    for got in &ok {
        assert_signed(got, &secret(&all));
    }
    let kinds: Vec<(Value, Value)> = ok
        .iter()
        .map(|g| (body(g)["type"].clone(), body(g)["data"]["id"].clone()))
        .collect();
    assert!(
        kinds.contains(&(json!("task.succeeded"), json!(ok_task))),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&(json!("task.failed"), json!(bad_task))),
        "{kinds:?}"
    );
    let succeeded = ok
        .iter()
        .map(body)
        .find(|b| b["type"] == json!("task.succeeded"))
        .unwrap();
    assert_eq!(succeeded["data"]["output"], json!({"to": "a@example.com"}));
    assert_eq!(succeeded["data"]["status"], json!("success"));
    let failed = ok
        .iter()
        .map(body)
        .find(|b| b["type"] == json!("task.failed"))
        .unwrap();
    assert!(failed["data"]["error"]["message"].is_string(), "{failed}");

    // /flaky: the same message three times (same id and body), each signed
    let attempts = rx.on("/flaky");
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    for got in &attempts {
        assert_signed(got, &secret(&flaky));
        assert_eq!(got.id, attempts[0].id);
        assert_eq!(got.body, attempts[0].body);
    }
    assert_eq!(body(&attempts[0])["data"]["id"], json!(ok_task));

    // the task's own webhook, signed with the store's task secret
    let own = rx.on("/task");
    assert_eq!(own.len(), 1);
    assert_signed(&own[0], &task_secret);
    assert_eq!(body(&own[0])["type"], json!("task.succeeded"));

    // every attempt is recorded and listed
    let flaky_id = flaky["id"].as_str().unwrap();
    let listed = wait_for("the third attempt to be recorded", limit, || {
        let listed = env.json(&["webhooks", "deliveries", flaky_id]);
        (listed[0]["status"] == json!("delivered")).then_some(listed)
    });
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let codes: Vec<&Value> = listed[0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["status_code"])
        .collect();
    assert_eq!(codes, [&json!(500), &json!(500), &json!(200)]);
    assert_eq!(listed[0]["id"], json!(attempts[0].id));
    let errors: Vec<&Value> = listed[0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["error"])
        .collect();
    assert!(errors[0].as_str().unwrap().contains("500"), "{errors:?}");
    assert_eq!(errors[2], &Value::Null);
    let table = env.ok(&["webhooks", "deliveries", flaky_id]);
    assert_eq!(table.matches("answered 500").count(), 2, "{table}");
    let http = reqwest::Client::new();
    let via_api: Value = http
        .get(format!("{api}/v1/webhooks/deliveries?task_id={ok_task}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        via_api["deliveries"].as_array().unwrap().len(),
        3,
        "{via_api}"
    );

    // subscriptions through the API, and deletion
    let r = http
        .post(format!("{api}/v1/webhooks"))
        .json(&json!({"url": format!("{base}/ok"), "events": ["task.exploded"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let made: Value = http
        .post(format!("{api}/v1/webhooks"))
        .json(&json!({"url": format!("{base}/ok"), "events": ["task.aborted"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        made["secret"].as_str().unwrap().starts_with("whsec_"),
        "{made}"
    );
    let r = http
        .delete(format!(
            "{api}/v1/webhooks/{}",
            made["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    env.ok(&["webhooks", "delete", flaky_id]);
    let left = env.json(&["webhooks", "list"]);
    assert_eq!(left.as_array().unwrap().len(), 1, "{left}");
    let audit = env.json(&["audit", "--action", "webhook.add,webhook.delete"]);
    assert_eq!(audit["records"].as_array().unwrap().len(), 5, "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_retried_and_listed_on_sqlite() {
    let (rx, base) = receiver().await;
    let env = Env::with_config(&config(
        "[webhooks]\nallow_private_targets = true\nretry_initial = \"100ms\"\n",
    ));
    webhooks(&env, &rx, &base).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_retried_and_listed_on_postgres() {
    let (rx, base) = receiver().await;
    let schema = PgSchema::new().await;
    let mut env = Env::with_config(&config(
        "[webhooks]\nallow_private_targets = true\nretry_initial = \"100ms\"\n",
    ));
    env.database = Some(schema.url());
    webhooks(&env, &rx, &base).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_targets_are_refused_unless_allowed() {
    let (rx, base) = receiver().await;
    let env = Env::with_config(&config(
        "[webhooks]\nretry_initial = \"50ms\"\nmax_attempts = 2\n",
    ));
    let out = env.run(&[
        "webhooks",
        "add",
        &format!("{base}/ok"),
        "--events",
        "task.failed",
    ]);
    common::assert_one_error(&out, 2, "allow_private_targets");
    let out = env.run(&[
        "webhooks",
        "add",
        "http://localhost:9/x",
        "--events",
        "task.failed",
    ]);
    common::assert_one_error(&out, 2, "allow_private_targets");
    let out = env.run(&[
        "webhooks",
        "add",
        "ftp://example.com/x",
        "--events",
        "task.failed",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        env.json(&["webhooks", "list"])
            .as_array()
            .unwrap()
            .is_empty()
    );

    let (_server, api) = env.serve(&[]);
    let r = reqwest::Client::new()
        .post(format!("{api}/v1/webhooks"))
        .json(&json!({"url": "http://169.254.169.254/latest", "events": ["task.failed"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["field"], json!("url"), "{v}");

    // a task's own webhook to loopback is attempted, refused, recorded
    let id = env.enqueue(&["--type", "echo", "--webhook", &format!("{base}/task")]);
    let listed = wait_for("the delivery to give up", Duration::from_secs(30), || {
        let listed = env.json(&["webhooks", "deliveries", "--task", &id]);
        (listed[0]["status"] == json!("failed")).then_some(listed)
    });
    let attempts = listed[0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{listed}");
    for a in attempts {
        assert!(
            a["error"]
                .as_str()
                .unwrap()
                .contains("allow_private_targets")
                || a["error"].as_str().unwrap().contains("no public address"),
            "{a}"
        );
        assert_eq!(a["status_code"], Value::Null);
    }
    assert!(
        rx.on("/task").is_empty(),
        "nothing reached the private target"
    );
}
