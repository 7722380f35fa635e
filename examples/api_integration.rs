//! Run with: `cargo run --example api_integration`
//!
//! API integration with retries: a `sync_crm` task pushes a contact to a
//! CRM endpoint that is flaky (a stand-in on a loopback port answers 503
//! twice, then 200). 5xx answers are retryable errors, retried with
//! exponential back-off; a 4xx would be fatal (no retry). The attempt
//! history shows each failure.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::{Json, Router, http::StatusCode, routing::post};
use offload::{Client, Context, Controller, RetryPolicy, TaskError, TaskOptions, TaskType, Worker};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Serialize, Deserialize)]
struct Contact {
    email: String,
    plan: String,
}

struct Crm {
    url: String,
    http: reqwest::Client,
}

struct SyncCrm;

impl TaskType for SyncCrm {
    const NAME: &'static str = "sync_crm";
    type Input = Contact;
    type Output = serde_json::Value;

    fn options() -> TaskOptions {
        TaskOptions::new()
            .max_attempts(5)
            .timeout(Duration::from_secs(10))
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(5),
            multiplier: 2.0,
            jitter: 0.1,
        }
    }

    async fn run(
        &self,
        input: Contact,
        ctx: &Context,
        _ctl: &Controller,
    ) -> Result<serde_json::Value, TaskError> {
        let crm = ctx
            .state::<Crm>()
            .ok_or_else(|| TaskError::fatal("Crm is not registered"))?;
        let response = crm
            .http
            .post(&crm.url)
            .json(&input)
            .send()
            .await
            .map_err(|e| TaskError::new(format!("CRM unreachable: {e}")))?;
        let status = response.status();
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(TaskError::new(format!("CRM answered {status}")).kind("http"));
        }
        if !status.is_success() {
            return Err(
                TaskError::fatal(format!("CRM rejected the contact: {status}")).kind("http"),
            );
        }
        response
            .json()
            .await
            .map_err(|e| TaskError::new(format!("CRM answer unreadable: {e}")))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    offload_examples::init_logging();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let app = Router::new().route(
        "/contacts",
        post(move |Json(contact): Json<serde_json::Value>| {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n <= 2 {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        Json(json!({"error": "try again"})),
                    )
                } else {
                    (StatusCode::OK, Json(json!({"id": n, "stored": contact})))
                }
            }
        }),
    );
    let base = offload_examples::serve(app).await?;

    let store = offload::open(&offload_examples::database_url()).await?;
    let worker = Worker::builder(store.clone())
        .state(Crm {
            url: format!("{base}/contacts"),
            http: reqwest::Client::new(),
        })
        .task(SyncCrm)
        .build()?
        .start();
    let client = Client::new(store);

    offload_examples::with_worker(worker, async {
        let contact = Contact {
            email: "ada@example.com".into(),
            plan: "pro".into(),
        };
        let handle = SyncCrm::enqueue(&client, contact).await?;
        println!("enqueued sync {}", handle.id());
        let answer = handle.result(Duration::from_secs(30)).await?;
        for attempt in client.attempts(handle.id()).await? {
            let error = attempt.error.map(|e| e.message).unwrap_or_default();
            println!(
                "attempt {}: {:?} {}",
                attempt.attempt, attempt.outcome, error
            );
        }
        println!("CRM answer: {answer}");
        Ok(())
    })
    .await
}
