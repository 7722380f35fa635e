//! The schedule routes: store, list, pause, resume and delete cron
//! schedules. Every `offload serve` and `offload worker` runs a scheduler
//! that enqueues their ticks, each tick once.

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use offload::{AuditEntry, Client, Schedule, ScheduleRecord};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::ApiError;
use crate::auth::Caller;
use crate::error::{JsonBody, QueryArgs};
use crate::schema::ErrorBody;
use crate::tasks::{ReasonQuery, audit};

/// Next run times listed per schedule.
const UPCOMING: usize = 5;

/// A schedule as answered: its record and its next run times.
fn answer(record: ScheduleRecord) -> Result<Value, ApiError> {
    let upcoming = record.upcoming(UPCOMING).map_err(offload::Error::from)?;
    let mut value = serde_json::to_value(&record).map_err(offload::Error::from)?;
    if let Some(obj) = value.as_object_mut() {
        obj.insert("upcoming".to_owned(), json!(upcoming));
    }
    Ok(value)
}

/// The body of `POST /v1/schedules`: a schedule, optionally paused.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct ScheduleBody {
    #[serde(flatten)]
    schedule: Schedule,
    /// Store it paused (default: active; an existing schedule keeps its state).
    #[serde(default)]
    paused: Option<bool>,
}

/// `POST /v1/schedules` → 201 the schedule, stored or with its definition
/// replaced (an unchanged cron and time zone keep the next tick).
#[utoipa::path(post, path = "/v1/schedules", operation_id = "put_schedule", tag = "schedules", request_body = ScheduleBody,
    responses((status = 201, description = "Stored; with `upcoming` run times", body = ScheduleRecord), (status = 422, description = "Invalid input (names the field)", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn put(
    State(client): State<Client>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body: ScheduleBody = serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        ApiError::invalid(path, e.into_inner().to_string())
    })?;
    let name = body.schedule.name.clone();
    let mut record = client.put_schedule(body.schedule).await?;
    match body.paused {
        Some(true) if !record.paused => record = client.pause_schedule(&name).await?,
        Some(false) if record.paused => record = client.resume_schedule(&name).await?,
        _ => {}
    }
    audit(
        &client,
        AuditEntry::new(caller.actor(), "schedule.put").target(name),
    )
    .await;
    Ok((StatusCode::CREATED, Json(answer(record)?)))
}

/// `GET /v1/schedules` → `{"schedules": [...]}` by name, each with its
/// next run times.
#[utoipa::path(get, path = "/v1/schedules", operation_id = "list_schedules", tag = "schedules",
    responses((status = 200, description = "Every schedule", body = Value), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn list(State(client): State<Client>) -> Result<Json<Value>, ApiError> {
    let schedules = client
        .schedules()
        .await?
        .into_iter()
        .map(answer)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(json!({ "schedules": schedules })))
}

/// `GET /v1/schedules/{name}`.
#[utoipa::path(get, path = "/v1/schedules/{name}", operation_id = "get_schedule", tag = "schedules", params(("name" = String, Path, description = "The schedule's name")),
    responses((status = 200, description = "The schedule", body = ScheduleRecord), (status = 404, description = "No such schedule", body = ErrorBody), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn get(
    State(client): State<Client>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record = client
        .schedule(&name)
        .await?
        .ok_or_else(|| not_found(&name))?;
    Ok(Json(answer(record)?))
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no schedule is named {name:?}"),
    )
}

/// `DELETE /v1/schedules/{name}?reason=` → 204 (the tasks it enqueued stay).
#[utoipa::path(delete, path = "/v1/schedules/{name}", operation_id = "delete_schedule", tag = "schedules", params(("name" = String, Path, description = "The schedule's name"), ReasonQuery),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such schedule", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn delete(
    State(client): State<Client>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    QueryArgs(query): QueryArgs<ReasonQuery>,
) -> Result<StatusCode, ApiError> {
    if !client.delete_schedule(&name).await? {
        return Err(not_found(&name));
    }
    audit(
        &client,
        AuditEntry::new(caller.actor(), "schedule.delete")
            .target(name)
            .reason(query.reason),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Pause or resume, shared by the two routes.
async fn set_paused(
    client: &Client,
    caller: &Caller,
    name: &str,
    paused: bool,
    reason: Option<String>,
) -> Result<Json<Value>, ApiError> {
    if client.schedule(name).await?.is_none() {
        return Err(not_found(name));
    }
    let record = if paused {
        client.pause_schedule(name).await?
    } else {
        client.resume_schedule(name).await?
    };
    let action = if paused {
        "schedule.pause"
    } else {
        "schedule.resume"
    };
    audit(
        client,
        AuditEntry::new(caller.actor(), action)
            .target(name.to_owned())
            .reason(reason),
    )
    .await;
    Ok(Json(answer(record)?))
}

/// `POST /v1/schedules/{name}/pause?reason=` → the schedule, paused.
#[utoipa::path(post, path = "/v1/schedules/{name}/pause", operation_id = "pause_schedule", tag = "schedules", params(("name" = String, Path, description = "The schedule's name"), ReasonQuery),
    responses((status = 200, description = "The schedule, paused", body = ScheduleRecord), (status = 404, description = "No such schedule", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn pause(
    State(client): State<Client>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    QueryArgs(query): QueryArgs<ReasonQuery>,
) -> Result<Json<Value>, ApiError> {
    set_paused(&client, &caller, &name, true, query.reason).await
}

/// `POST /v1/schedules/{name}/resume?reason=` → the schedule, running from
/// the next tick after now.
#[utoipa::path(post, path = "/v1/schedules/{name}/resume", operation_id = "resume_schedule", tag = "schedules", params(("name" = String, Path, description = "The schedule's name"), ReasonQuery),
    responses((status = 200, description = "The schedule, active", body = ScheduleRecord), (status = 404, description = "No such schedule", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn resume(
    State(client): State<Client>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    QueryArgs(query): QueryArgs<ReasonQuery>,
) -> Result<Json<Value>, ApiError> {
    set_paused(&client, &caller, &name, false, query.reason).await
}
