//! `http` runners: `[runners.NAME] http = "URL"` in `offload.toml`. Each
//! attempt POSTs the task to the URL as JSON:
//!
//! ```json
//! {"id": "…", "name": "notify_crm", "queue": "default", "input": {…}, "attempt": 1, "max_attempts": 3}
//! ```
//!
//! with the headers `offload-task-id` and `offload-attempt`. A 2xx answer
//! is success and its body the output (JSON; other text is kept as a JSON
//! string, an empty body as `null`). Any other answer, or no answer (the
//! connection failed, the runner's `timeout` passed), is a failed attempt,
//! retried with back-off while attempts are left. An abort request or a
//! shutdown cancels the request in flight.

use std::time::Duration;

use async_trait::async_trait;
use offload::{Context, Controller, Runner, Task, TaskError};
use serde_json::json;

use crate::exec::parse_output;

/// Longest part of an error answer's body kept in the task's error.
const ERROR_BODY_LIMIT: usize = 500;

/// Runs tasks by POSTing them to a URL.
pub(crate) struct HttpRunner {
    url: String,
    client: reqwest::Client,
    timeout: Option<Duration>,
}

impl HttpRunner {
    /// A runner for `url` with an optional per-attempt `timeout`.
    pub(crate) fn new(url: &str, timeout: Option<Duration>) -> Self {
        Self {
            url: url.to_owned(),
            client: reqwest::Client::new(),
            timeout,
        }
    }

    async fn post(&self, task: &Task) -> Result<serde_json::Value, TaskError> {
        let body = json!({
            "id": task.id,
            "name": task.name,
            "queue": task.queue,
            "input": task.input,
            "attempt": task.attempt,
            "max_attempts": task.max_attempts,
        });
        let answer = self
            .client
            .post(&self.url)
            .header("offload-task-id", task.id.to_string())
            .header("offload-attempt", task.attempt.to_string())
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                TaskError::new(format!("POST {} failed: {}", self.url, error_chain(&e)))
                    .kind("http")
            })?;
        let status = answer.status();
        let bytes = answer.bytes().await.map_err(|e| {
            TaskError::new(format!(
                "reading the answer of {} failed: {}",
                self.url,
                error_chain(&e)
            ))
            .kind("http")
        })?;
        if status.is_success() {
            return Ok(parse_output(&bytes));
        }
        let text = String::from_utf8_lossy(&bytes);
        let snippet: String = text.trim().chars().take(ERROR_BODY_LIMIT).collect();
        let mut message = format!("{} answered {status}", self.url);
        if !snippet.is_empty() {
            message.push_str(": ");
            message.push_str(&snippet);
        }
        Err(TaskError::new(message).kind("http"))
    }
}

/// An error with its causes, e.g. "error sending request: connection refused".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[async_trait]
impl Runner for HttpRunner {
    async fn run(
        &self,
        task: &Task,
        _ctx: &Context,
        ctl: &Controller,
    ) -> Result<serde_json::Value, TaskError> {
        tokio::select! {
            result = self.post(task) => result,
            reason = ctl.aborted() => Err(TaskError::new(format!(
                "the request to {} was cancelled ({reason:?})",
                self.url
            ))
            .kind("http")),
        }
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
}
