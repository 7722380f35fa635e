//! `http` runners: the worker POSTs each task to a loopback receiver; a
//! 2xx JSON answer is the output, anything else a failed attempt that is
//! retried, and the runner's timeout cancels a request that hangs.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::{Env, wait_for};
use serde_json::{Value, json};

/// A receiver on a free loopback port: `/echo` answers `{"got": BODY}`,
/// `/flaky` answers 500 twice then `{"ok": true}`, `/hang` never answers
/// in time. Returns its base URL.
async fn receiver(calls: Arc<AtomicU32>) -> String {
    let app = axum::Router::new()
        .route(
            "/echo",
            post(|headers: HeaderMap, Json(body): Json<Value>| async move {
                let id = headers
                    .get("offload-task-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                Json(json!({ "got": body, "header_id": id }))
            }),
        )
        .route(
            "/flaky",
            post(move || {
                let calls = calls.clone();
                async move {
                    if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                        (StatusCode::INTERNAL_SERVER_ERROR, "try again".to_owned())
                    } else {
                        (StatusCode::OK, "{\"ok\": true}".to_owned())
                    }
                }
            }),
        )
        .route(
            "/hang",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_runners_post_tasks_and_retry_failures() {
    let calls = Arc::new(AtomicU32::new(0));
    let base = receiver(calls.clone()).await;
    let env = Env::with_config(&format!(
        "[runners.echo]\nhttp = \"{base}/echo\"\n\
         [runners.flaky]\nhttp = \"{base}/flaky\"\nmax_attempts = 5\n\
         [runners.hang]\nhttp = \"{base}/hang\"\ntimeout = \"500ms\"\nmax_attempts = 1\n"
    ));
    let _worker = env.worker(&["--concurrency", "4"]);

    let echo = env.enqueue(&["--type", "echo", "--data", r#"{"a": 1}"#]);
    let flaky = env.enqueue(&["--type", "flaky", "--data", "{}"]);
    let hang = env.enqueue(&["--type", "hang", "--data", "{}"]);
    let done = |id: &str| {
        wait_for("the task to end", Duration::from_secs(30), || {
            let t = env.task(id);
            ["success", "failed"]
                .contains(&t["status"].as_str().unwrap())
                .then_some(t)
        })
    };

    let t = done(&echo);
    assert_eq!(t["status"], json!("success"), "{t}");
    assert_eq!(t["output"]["got"]["input"], json!({"a": 1}), "{t}");
    assert_eq!(t["output"]["got"]["name"], json!("echo"), "{t}");
    assert_eq!(t["output"]["got"]["attempt"], json!(1), "{t}");
    assert_eq!(t["output"]["header_id"], json!(echo), "{t}");

    let t = done(&flaky);
    assert_eq!(t["status"], json!("success"), "{t}");
    assert_eq!(t["output"], json!({"ok": true}));
    assert_eq!(t["attempt"], json!(3), "{t}");
    let outcomes: Vec<&Value> = t["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["outcome"])
        .collect();
    assert_eq!(
        outcomes,
        vec![&json!("error"), &json!("error"), &json!("success")],
        "{t}"
    );
    let first_error = &t["attempts"][0]["error"]["message"];
    assert!(
        first_error
            .as_str()
            .unwrap()
            .contains("500 Internal Server Error: try again"),
        "{first_error}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    let t = done(&hang);
    assert_eq!(t["status"], json!("failed"), "{t}");
    assert_eq!(t["error"]["kind"], json!("timeout"), "{t}");
}
