//! The pull protocol for remote workers in any language: `POST /v1/lease`
//! hands out tasks with a lease token (long-polling for work); the
//! worker then calls `heartbeat`, `progress`, and finally `complete` or
//! `fail` on the task, each with that token. A token whose lease is no
//! longer live (it expired and the task was rescued, or the task was
//! deleted) gets 409 `lease_lost`, and nothing changes. Abort requests come
//! back in the heartbeat and progress answers (`"abort_requested": true`);
//! the worker then stops and calls `fail` with `"aborted": true`.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use offload::{
    Client, DEFAULT_LEASE, DEFAULT_QUEUE, Error, LeaseInfo, LeaseRequest, LeaseToken, Progress,
    Status, TaskError, parse_duration,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::JsonBody;
use crate::schema::{Ended, ErrorBody, LeaseAnswer, Leased};
use crate::tasks::task_id;
use crate::{ApiError, Metrics};
use utoipa::ToSchema;

/// The body of `POST /v1/lease`; every field is optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LeaseBody {
    /// Queues to take tasks from, in order (default `["default"]`).
    queues: Option<Vec<String>>,
    /// Only these task names.
    names: Option<Vec<String>>,
    /// At most this many tasks (1 to 100, default 1).
    max: Option<u32>,
    /// Wait this long for work when none is ready, e.g. `30s` (at most 60 s).
    wait: Option<String>,
    /// The lease length, e.g. `30s` (default 30 s); renew it with heartbeats.
    lease: Option<String>,
    /// The worker's name, kept on the task and in its history.
    worker_id: Option<String>,
}

fn duration(field: &str, text: Option<&str>, default: Duration) -> Result<Duration, ApiError> {
    match text {
        None => Ok(default),
        Some(t) => parse_duration(t).map_err(|e| ApiError::invalid(field, e.to_string())),
    }
}

/// `POST /v1/lease` → `{"tasks": [...]}`, each with its `lease_token`
/// (possibly none after `wait`).
#[utoipa::path(post, path = "/v1/lease", tag = "remote workers", request_body = LeaseBody,
    responses((status = 200, description = "Leased tasks (maybe none after wait)", body = Leased), (status = 413, description = "Body over the limit", body = ErrorBody), (status = 415, description = "Not JSON", body = ErrorBody), (status = 422, description = "Invalid input (names the field)", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn lease(
    State(client): State<Client>,
    State(metrics): State<Metrics>,
    JsonBody(body): JsonBody<LeaseBody>,
) -> Result<Json<Value>, ApiError> {
    let req = LeaseRequest {
        queues: body
            .queues
            .unwrap_or_else(|| vec![DEFAULT_QUEUE.to_owned()]),
        names: body.names,
        max: body.max.unwrap_or(1),
        wait: duration("wait", body.wait.as_deref(), Duration::ZERO)?,
        lease: duration("lease", body.lease.as_deref(), DEFAULT_LEASE)?,
        worker_id: body.worker_id.unwrap_or_else(|| "remote".to_owned()),
    };
    let tasks = client.lease(&req).await?;
    for task in &tasks {
        metrics.started(task);
    }
    let tasks = tasks
        .into_iter()
        .map(|task| {
            let token = task.lease_token;
            let mut value = serde_json::to_value(task).map_err(Error::from)?;
            if let Value::Object(fields) = &mut value {
                // the one answer that carries the token: the lease holder's
                fields.insert("lease_token".into(), json!(token));
            }
            Ok(value)
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Json(json!({ "tasks": tasks })))
}

/// The body of `heartbeat`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeartbeatBody {
    /// From the lease.
    lease_token: LeaseToken,
    /// The new lease length from now (default 30 s).
    lease: Option<String>,
}

fn info(i: LeaseInfo) -> Json<Value> {
    Json(json!({ "abort_requested": i.abort_requested }))
}

/// `POST /v1/tasks/{id}/heartbeat` → `{"abort_requested"}`.
#[utoipa::path(post, path = "/v1/tasks/{id}/heartbeat", tag = "remote workers", params(("id" = String, Path, description = "The task id")), request_body = HeartbeatBody,
    responses((status = 200, description = "Lease renewed", body = LeaseAnswer), (status = 409, description = "The lease is no longer live (lease_lost)", body = ErrorBody), (status = 404, description = "No such task", body = ErrorBody), (status = 413, description = "Body over the limit", body = ErrorBody), (status = 415, description = "Not JSON", body = ErrorBody), (status = 422, description = "Invalid input (names the field)", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn heartbeat(
    State(client): State<Client>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<HeartbeatBody>,
) -> Result<Json<Value>, ApiError> {
    let lease = duration("lease", body.lease.as_deref(), DEFAULT_LEASE)?;
    let i = client
        .renew_lease(task_id(&id)?, body.lease_token, lease)
        .await?;
    Ok(info(i))
}

/// The body of `progress`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProgressBody {
    /// From the lease.
    lease_token: LeaseToken,
    /// 0 to 100.
    percent: u8,
    /// What the task is doing now.
    message: Option<String>,
    /// Anything else to show.
    data: Option<Value>,
}

/// `POST /v1/tasks/{id}/progress` → `{"abort_requested"}`.
#[utoipa::path(post, path = "/v1/tasks/{id}/progress", tag = "remote workers", params(("id" = String, Path, description = "The task id")), request_body = ProgressBody,
    responses((status = 200, description = "Progress recorded", body = LeaseAnswer), (status = 409, description = "The lease is no longer live (lease_lost)", body = ErrorBody), (status = 404, description = "No such task", body = ErrorBody), (status = 413, description = "Body over the limit", body = ErrorBody), (status = 415, description = "Not JSON", body = ErrorBody), (status = 422, description = "Invalid input (names the field)", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn progress(
    State(client): State<Client>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ProgressBody>,
) -> Result<Json<Value>, ApiError> {
    if body.percent > 100 {
        return Err(ApiError::invalid(
            "percent",
            format!("must be 0 to 100, got {}", body.percent),
        ));
    }
    let progress = Progress {
        percent: body.percent,
        message: body.message,
        data: body.data,
    };
    let i = client
        .report_progress(task_id(&id)?, body.lease_token, progress)
        .await?;
    Ok(info(i))
}

/// The body of `complete`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompleteBody {
    /// From the lease.
    lease_token: LeaseToken,
    /// The task's output (default `null`).
    #[serde(default)]
    output: Value,
}

/// `POST /v1/tasks/{id}/complete` → `{"status": "success"}`.
#[utoipa::path(post, path = "/v1/tasks/{id}/complete", tag = "remote workers", params(("id" = String, Path, description = "The task id")), request_body = CompleteBody,
    responses((status = 200, description = "The attempt succeeded", body = Ended), (status = 409, description = "The lease is no longer live (lease_lost)", body = ErrorBody), (status = 404, description = "No such task", body = ErrorBody), (status = 413, description = "Body over the limit", body = ErrorBody), (status = 415, description = "Not JSON", body = ErrorBody), (status = 422, description = "Invalid input (names the field)", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn complete(
    State(client): State<Client>,
    State(metrics): State<Metrics>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<CompleteBody>,
) -> Result<Json<Value>, ApiError> {
    let status = client
        .complete(task_id(&id)?, body.lease_token, body.output)
        .await?;
    metrics.attempt_ended("success");
    Ok(Json(json!({ "status": status })))
}

/// The error of a failed attempt.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AttemptError {
    /// What went wrong.
    message: String,
    /// A short class, e.g. `timeout` (default `error`).
    kind: Option<String>,
    /// `false`: do not retry (default `true`).
    retryable: Option<bool>,
}

/// The body of `fail`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FailBody {
    /// From the lease.
    lease_token: LeaseToken,
    /// The attempt's error (required unless `aborted`).
    error: Option<AttemptError>,
    /// The attempt stopped because an abort was requested: the task ends
    /// `aborted` (with `error.message` as the reason, if given).
    #[serde(default)]
    aborted: bool,
}

/// `POST /v1/tasks/{id}/fail` → `{"status"}`: `pending` or `scheduled`
/// when it will be retried, `failed` when not, `aborted` with `"aborted":
/// true`.
#[utoipa::path(post, path = "/v1/tasks/{id}/fail", tag = "remote workers", params(("id" = String, Path, description = "The task id")), request_body = FailBody,
    responses((status = 200, description = "The attempt failed (retried or not) or was aborted", body = Ended), (status = 409, description = "The lease is no longer live (lease_lost)", body = ErrorBody), (status = 404, description = "No such task", body = ErrorBody), (status = 413, description = "Body over the limit", body = ErrorBody), (status = 415, description = "Not JSON", body = ErrorBody), (status = 422, description = "Invalid input (names the field)", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn fail(
    State(client): State<Client>,
    State(metrics): State<Metrics>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<FailBody>,
) -> Result<Json<Value>, ApiError> {
    let id = task_id(&id)?;
    let status = if body.aborted {
        client
            .abort_attempt(id, body.lease_token, body.error.map(|e| e.message))
            .await?
    } else {
        let Some(e) = body.error else {
            return Err(ApiError::invalid(
                "error",
                "give the attempt's error: {\"message\": ...}",
            ));
        };
        let mut error = TaskError::new(e.message);
        if let Some(kind) = e.kind {
            error = error.kind(kind);
        }
        error.retryable = e.retryable.unwrap_or(true);
        client.fail(id, body.lease_token, error).await?
    };
    metrics.attempt_ended(match status {
        Status::Aborted => "aborted",
        Status::Failed => "failed",
        _ => "retry",
    });
    Ok(Json(json!({ "status": status })))
}
