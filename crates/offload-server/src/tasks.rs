//! The task routes: enqueue, list, get, update, delete, abort, retry,
//! result (long-poll) and queue counts.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use offload::StoreError;
use offload::{
    AuditEntry, Client, EnqueueOutcome, Error, NewTask, Status, TaskFilter, TaskId, TaskListParams,
    TaskOptions, TaskUpdate, parse_duration,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::{JsonBody, QueryArgs};
use crate::schema::{
    EnqueueAnswer, EnqueueBody, ErrorBody, Purged, Queues, TaskDetail, TaskPage, TaskResult,
};
use crate::{ApiError, Metrics};
use offload::Task;

/// Page size of `GET /v1/tasks` unless `limit` says otherwise.
const DEFAULT_PAGE: u32 = 50;
/// Largest page.
const MAX_PAGE: u32 = 1000;
/// Longest `wait` of `GET /v1/tasks/{id}/result`.
const MAX_RESULT_WAIT: Duration = Duration::from_secs(300);

/// The request header that makes an enqueue idempotent.
pub(crate) const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The answer header set when an idempotent enqueue was a repeat.
pub(crate) const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// Longest `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// `POST /v1/tasks`: one task (an object) → 201 `{"id", "outcome"}`; many
/// (an array, all or nothing) → 201 `{"ids", "outcomes"}`. The outcome is
/// `created`, or — for a task with a `unique_key` — `existing`,
/// `replaced`, `debounced` or `throttled`; when nothing new was stored the
/// status is 200. With an `Idempotency-Key` header, a
/// repeat of the same request within 24 hours answers the first one's ids
/// (with `Idempotent-Replayed: true`) and enqueues nothing.
#[utoipa::path(post, path = "/v1/tasks", tag = "tasks", request_body = EnqueueBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Up to 255 visible ASCII characters; a repeat within 24 hours returns the first request's tasks")),
    responses((status = 201, description = "Enqueued (or replayed: header Idempotent-Replayed)", body = EnqueueAnswer), (status = 200, description = "Nothing new stored: every task matched one with its unique_key", body = EnqueueAnswer), (status = 413, description = "Body over the limit", body = ErrorBody), (status = 415, description = "Not JSON", body = ErrorBody), (status = 422, description = "Invalid input (names the field), or an Idempotency-Key reused with another request", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn enqueue(
    State(client): State<Client>,
    State(metrics): State<Metrics>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let fingerprint = key
        .as_ref()
        .map(|_| serde_json::to_vec(&body).map(|b| hex(&Sha256::digest(&b))))
        .transpose()
        .map_err(Error::from)?;
    let many = body.is_array();
    let tasks = match body {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(ApiError::invalid("tasks", "the array holds no task"));
            }
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| new_task(item, &format!("[{i}].")))
                .collect::<Result<Vec<_>, _>>()?
        }
        item => vec![new_task(item, "")?],
    };
    // a returned id equal to the one given means the task was stored (a
    // unique key may answer with an existing task instead)
    let given: Vec<TaskId> = tasks.iter().map(|t| t.id).collect();
    let (handles, replayed) = match (key, fingerprint) {
        (Some(key), Some(fingerprint)) => {
            // keys are per caller (two tokens may use the same key), stored
            // as a digest so a key of any allowed length fits
            let scoped = hex(&Sha256::digest(
                format!("{}:{key}", caller.actor()).as_bytes(),
            ));
            client
                .trigger_many_idempotent(tasks, &scoped, &fingerprint)
                .await
                .map_err(|e| match e {
                    Error::Store(StoreError::Conflict(_)) => ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "idempotency_key_reused",
                        format!(
                            "Idempotency-Key {key:?} was used in the last 24 hours with a \
                             different request; use a new key for a new request"
                        ),
                    ),
                    other => other.into(),
                })?
        }
        _ => (client.trigger_many(tasks).await?, false),
    };
    let ids: Vec<TaskId> = handles.iter().map(|h| h.id()).collect();
    let outcomes: Vec<EnqueueOutcome> = handles.iter().map(|h| h.outcome()).collect();
    let created = if replayed {
        // the first request's tasks: what was stored then
        outcomes
            .iter()
            .filter(|o| matches!(o, EnqueueOutcome::Created | EnqueueOutcome::Throttled))
            .count()
    } else {
        ids.iter().zip(&given).filter(|(id, g)| id == g).count()
    };
    if !replayed {
        metrics.enqueued(created);
    }
    let answer = match (many, ids.as_slice(), outcomes.as_slice()) {
        (false, [id], [outcome]) => json!({ "id": id, "outcome": outcome }),
        _ => json!({ "ids": ids, "outcomes": outcomes }),
    };
    // 201 when something new was stored; 200 when every task was
    // coalesced with one that exists (unique keys)
    let status = if created > 0 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = (status, Json(answer)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// The `Idempotency-Key` header, checked.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY)
        .filter(|k| k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::invalid(
                "Idempotency-Key",
                format!("must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
            )
        })?;
    Ok(Some(key.to_owned()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads one task of an enqueue body: `name` (or `type`), `input` (or
/// `payload`), and the [`TaskOptions`] fields beside them. `at` prefixes
/// field names in errors (`[3].` for the fourth of an array).
pub(crate) fn new_task(item: Value, at: &str) -> Result<NewTask, ApiError> {
    let Value::Object(mut fields) = item else {
        let field = if at.is_empty() {
            "body"
        } else {
            at.trim_end_matches('.')
        };
        return Err(ApiError::invalid(field, "a task is a JSON object"));
    };
    let name = one_of(&mut fields, "name", "type", at)?
        .ok_or_else(|| ApiError::invalid(format!("{at}name"), "`name` (or `type`) is required"))?;
    let Value::String(name) = name else {
        return Err(ApiError::invalid(format!("{at}name"), "must be a string"));
    };
    let input = one_of(&mut fields, "input", "payload", at)?.unwrap_or(Value::Null);
    let options: TaskOptions =
        serde_path_to_error::deserialize(Value::Object(fields)).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            // an unknown field is reported by serde as "unknown field `x`, ..."
            let field = match message.strip_prefix("unknown field `") {
                Some(rest) => rest.split('`').next().unwrap_or_default().to_owned(),
                None => path,
            };
            ApiError::invalid(format!("{at}{field}"), message)
        })?;
    let task = NewTask::new(name, input).options(options);
    task.validate()
        .map_err(|v| ApiError::invalid(format!("{at}{}", v.field), v.message))?;
    Ok(task)
}

/// Takes `a` or its alias `b` out of `fields`; both at once is an error.
fn one_of(
    fields: &mut Map<String, Value>,
    a: &str,
    b: &str,
    at: &str,
) -> Result<Option<Value>, ApiError> {
    match (fields.remove(a), fields.remove(b)) {
        (Some(_), Some(_)) => Err(ApiError::invalid(
            format!("{at}{a}"),
            format!("give `{a}` or `{b}`, not both"),
        )),
        (x, y) => Ok(x.or(y)),
    }
}

/// The query of `GET /v1/tasks`; lists are comma-separated.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Any of these statuses, comma-separated.
    status: Option<String>,
    /// Any of these names, comma-separated.
    name: Option<String>,
    /// Any of these queues, comma-separated.
    queue: Option<String>,
    /// Carrying this tag.
    tag: Option<String>,
    /// Created at or after (RFC 3339).
    created_after: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    created_before: Option<DateTime<Utc>>,
    /// Page size, 1 to 1000 (default 50).
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// `GET /v1/tasks` → `{"tasks": [...], "next_cursor"}`, newest first.
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", params(ListQuery),
    responses((status = 200, description = "A page of tasks, newest first", body = TaskPage), (status = 422, description = "Invalid input (names the field)", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn list(
    State(client): State<Client>,
    QueryArgs(q): QueryArgs<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("must be between 1 and {MAX_PAGE}, got {limit}"),
        ));
    }
    let statuses = split(q.status.as_deref())
        .into_iter()
        .map(|s| {
            s.parse::<Status>()
                .map_err(|e| ApiError::invalid("status", e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let filter = TaskFilter {
        statuses,
        names: split(q.name.as_deref()),
        queues: split(q.queue.as_deref()),
        tag: q.tag,
        created_after: q.created_after,
        created_before: q.created_before,
        ..TaskFilter::default()
    };
    let page = client
        .list(TaskListParams {
            filter,
            cursor: q.cursor,
            limit,
        })
        .await?;
    Ok(Json(
        json!({ "tasks": page.tasks, "next_cursor": page.next_cursor }),
    ))
}

fn split(list: Option<&str>) -> Vec<String> {
    list.map(|l| {
        l.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    })
    .unwrap_or_default()
}

pub(crate) fn task_id(raw: &str) -> Result<TaskId, ApiError> {
    raw.parse().map_err(|_| ApiError {
        field: Some("id".into()),
        ..ApiError::bad_request(format!("{raw:?} is not a task id"))
    })
}

/// `GET /v1/tasks/{id}` → the task with its `attempts`.
#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks", params(("id" = String, Path, description = "The task id")),
    responses((status = 200, description = "The task with its attempts", body = TaskDetail), (status = 404, description = "No such task", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn get(
    State(client): State<Client>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = task_id(&id)?;
    let task = client.get(id).await?;
    let attempts = client.attempts(id).await?;
    let mut body = serde_json::to_value(task).map_err(Error::from)?;
    if let Value::Object(fields) = &mut body {
        fields.insert(
            "attempts".into(),
            serde_json::to_value(attempts).map_err(Error::from)?,
        );
    }
    Ok(Json(body))
}

/// The body of `PATCH /v1/tasks/{id}`: what to change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateBody {
    /// New priority (higher runs first).
    priority: Option<i32>,
    /// New earliest start (RFC 3339).
    run_at: Option<DateTime<Utc>>,
    /// New input.
    input: Option<Value>,
    /// New attempt limit (1 to 1000).
    max_attempts: Option<u32>,
}

/// `PATCH /v1/tasks/{id}` → the changed task (409 once it has started).
#[utoipa::path(patch, path = "/v1/tasks/{id}", tag = "tasks", params(("id" = String, Path, description = "The task id"), ReasonQuery), request_body = UpdateBody,
    responses((status = 200, description = "The changed task", body = Task), (status = 404, description = "No such task", body = ErrorBody), (status = 409, description = "The task's status does not allow it", body = ErrorBody), (status = 413, description = "Body over the limit", body = ErrorBody), (status = 415, description = "Not JSON", body = ErrorBody), (status = 422, description = "Invalid input (names the field)", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn update(
    State(client): State<Client>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    QueryArgs(query): QueryArgs<ReasonQuery>,
    JsonBody(body): JsonBody<UpdateBody>,
) -> Result<Json<Value>, ApiError> {
    let id = task_id(&id)?;
    if body.priority.is_none()
        && body.run_at.is_none()
        && body.input.is_none()
        && body.max_attempts.is_none()
    {
        return Err(ApiError::invalid(
            "body",
            "nothing to change: give priority, run_at, input or max_attempts",
        ));
    }
    let details = json!({
        "priority": body.priority,
        "run_at": body.run_at,
        "input_changed": body.input.is_some(),
        "max_attempts": body.max_attempts,
    });
    let task = client
        .update(
            id,
            TaskUpdate {
                priority: body.priority,
                run_at: body.run_at,
                input: body.input,
                max_attempts: body.max_attempts,
            },
        )
        .await?;
    audit(
        &client,
        AuditEntry::new(caller.actor(), "task.update")
            .target(id.to_string())
            .reason(query.reason)
            .details(details),
    )
    .await;
    Ok(Json(serde_json::to_value(task).map_err(Error::from)?))
}

/// `DELETE /v1/tasks/{id}` → 204 (409 while it runs).
#[utoipa::path(delete, path = "/v1/tasks/{id}", tag = "tasks", params(("id" = String, Path, description = "The task id"), ReasonQuery),
    responses((status = 204, description = "Deleted with its history"), (status = 404, description = "No such task", body = ErrorBody), (status = 409, description = "The task's status does not allow it", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn delete(
    State(client): State<Client>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    QueryArgs(query): QueryArgs<ReasonQuery>,
) -> Result<StatusCode, ApiError> {
    let id = task_id(&id)?;
    client.delete(id).await?;
    audit(
        &client,
        AuditEntry::new(caller.actor(), "task.delete")
            .target(id.to_string())
            .reason(query.reason),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// The query of operator actions: why (kept in the audit log).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReasonQuery {
    /// Why, for the audit log.
    pub(crate) reason: Option<String>,
}

/// Records an operator action; a failure is logged, not answered (the
/// action itself happened).
pub(crate) async fn audit(client: &Client, entry: AuditEntry) {
    let action = entry.action.clone();
    if let Err(e) = client.audit(entry).await {
        tracing::error!(error = %e, action, "could not write the audit log");
    }
}

/// The optional body of `POST /v1/tasks/{id}/abort`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AbortBody {
    /// Why (recorded as the task's error).
    reason: Option<String>,
}

/// `POST /v1/tasks/{id}/abort` with an optional `{"reason"}` → the task.
#[utoipa::path(post, path = "/v1/tasks/{id}/abort", tag = "tasks", params(("id" = String, Path, description = "The task id")), request_body(content = Option<AbortBody>, description = "Optional: {\"reason\"}"),
    responses((status = 200, description = "The task (aborted, or running with an abort request)", body = Task), (status = 404, description = "No such task", body = ErrorBody), (status = 409, description = "The task's status does not allow it", body = ErrorBody), (status = 422, description = "Invalid input (names the field)", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn abort(
    State(client): State<Client>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = task_id(&id)?;
    let body: AbortBody = if body.iter().all(u8::is_ascii_whitespace) {
        AbortBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid("reason", e.to_string()))?
    };
    let task = client.abort(id, body.reason.clone()).await?;
    audit(
        &client,
        AuditEntry::new(caller.actor(), "task.abort")
            .target(id.to_string())
            .reason(body.reason),
    )
    .await;
    Ok(Json(serde_json::to_value(task).map_err(Error::from)?))
}

/// `POST /v1/tasks/{id}/retry` → the task, waiting again.
#[utoipa::path(post, path = "/v1/tasks/{id}/retry", tag = "tasks", params(("id" = String, Path, description = "The task id"), ReasonQuery),
    responses((status = 200, description = "The task, waiting again", body = Task), (status = 404, description = "No such task", body = ErrorBody), (status = 409, description = "The task's status does not allow it", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn retry(
    State(client): State<Client>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    QueryArgs(query): QueryArgs<ReasonQuery>,
) -> Result<Json<Value>, ApiError> {
    let id = task_id(&id)?;
    let task = client.retry(id).await?;
    audit(
        &client,
        AuditEntry::new(caller.actor(), "task.retry")
            .target(id.to_string())
            .reason(query.reason),
    )
    .await;
    Ok(Json(serde_json::to_value(task).map_err(Error::from)?))
}

/// The body of `POST /v1/purge`. Lists match any of their values; empty
/// or absent lists match anything.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PurgeBody {
    /// Terminal statuses only: `success`, `failed`, `aborted` (default: all three).
    #[serde(default)]
    status: Vec<Status>,
    /// Task names.
    #[serde(default)]
    name: Vec<String>,
    /// Queues.
    #[serde(default)]
    queue: Vec<String>,
    /// Carrying this tag.
    tag: Option<String>,
    /// Only tasks that finished before this time (RFC 3339).
    finished_before: Option<DateTime<Utc>>,
    /// Purge every finished task; required when no filter is given.
    #[serde(default)]
    all: bool,
    /// Why, for the audit log.
    reason: Option<String>,
}

/// `POST /v1/purge` → `{"purged": n}`: deletes finished tasks matching the
/// filter (in bounded batches).
#[utoipa::path(post, path = "/v1/purge", tag = "tasks", request_body = PurgeBody,
    responses((status = 200, description = "How many were deleted", body = Purged), (status = 422, description = "Invalid input (names the field)", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 413, description = "Body over the limit", body = ErrorBody), (status = 415, description = "Not JSON", body = ErrorBody), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn purge(
    State(client): State<Client>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<PurgeBody>,
) -> Result<Json<Value>, ApiError> {
    if let Some(s) = body.status.iter().find(|s| !s.is_terminal()) {
        return Err(ApiError::invalid(
            "status",
            format!(
                "purge deletes finished tasks only (success, failed, aborted); {s} is not finished"
            ),
        ));
    }
    let unfiltered = body.status.is_empty()
        && body.name.is_empty()
        && body.queue.is_empty()
        && body.tag.is_none()
        && body.finished_before.is_none();
    if unfiltered && !body.all {
        return Err(ApiError::invalid(
            "body",
            "purge needs a filter (status, name, queue, tag, finished_before) or \"all\": true",
        ));
    }
    if !unfiltered && body.all {
        return Err(ApiError::invalid(
            "all",
            "\"all\" cannot be combined with a filter",
        ));
    }
    let filter = TaskFilter {
        statuses: body.status,
        names: body.name,
        queues: body.queue,
        tag: body.tag,
        ..TaskFilter::default()
    };
    let purged = client.purge(filter.clone(), body.finished_before).await?;
    let entry = AuditEntry::purge(caller.actor(), &filter, body.finished_before, purged);
    audit(&client, entry.reason(body.reason)).await;
    Ok(Json(json!({ "purged": purged })))
}

/// The query of the result route.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResultQuery {
    /// How long to wait for the end, e.g. `30s` (default: do not wait).
    wait: Option<String>,
}

/// `GET /v1/tasks/{id}/result?wait=30s` → 200 `{"id", "status", "output",
/// "error"}` once the task has ended, 202 with its current status when it
/// has not by the end of `wait` (at most 5 minutes).
#[utoipa::path(get, path = "/v1/tasks/{id}/result", tag = "tasks", params(("id" = String, Path, description = "The task id"), ResultQuery),
    responses((status = 200, description = "The task ended", body = TaskResult), (status = 202, description = "Not ended by the end of wait", body = TaskResult), (status = 404, description = "No such task", body = ErrorBody), (status = 422, description = "Invalid input (names the field)", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn result(
    State(client): State<Client>,
    Path(id): Path<String>,
    QueryArgs(q): QueryArgs<ResultQuery>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = task_id(&id)?;
    let wait = match q.wait.as_deref() {
        None => Duration::ZERO,
        Some(w) => parse_duration(w).map_err(|e| ApiError::invalid("wait", e.to_string()))?,
    };
    if wait > MAX_RESULT_WAIT {
        return Err(ApiError::invalid(
            "wait",
            format!("at most {}s", MAX_RESULT_WAIT.as_secs()),
        ));
    }
    let task = match client.wait(id, wait).await {
        Ok(task) => task,
        Err(Error::Timeout(_)) => client.get(id).await?,
        Err(e) => return Err(e.into()),
    };
    let status = if task.status.is_terminal() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((
        status,
        Json(json!({
            "id": task.id,
            "status": task.status,
            "output": task.output,
            "error": task.error,
        })),
    ))
}

/// `GET /v1/queues` → `{"queues": {QUEUE: {STATUS: n, ...}, ...}}`.
#[utoipa::path(get, path = "/v1/queues", tag = "tasks",
    responses((status = 200, description = "Counts by queue and status", body = Queues), (status = 400, description = "Malformed request", body = ErrorBody), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn queues(State(client): State<Client>) -> Result<Json<Value>, ApiError> {
    let counts = client.count(TaskFilter::default()).await?;
    let mut queues: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for c in counts {
        *queues
            .entry(c.queue)
            .or_default()
            .entry(c.status.to_string())
            .or_default() += c.count;
    }
    Ok(Json(json!({ "queues": queues })))
}
