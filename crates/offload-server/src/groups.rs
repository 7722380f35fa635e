//! The group routes: enqueue a group (members and a callback that runs
//! once they have all ended), see where it stands, abort it.

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use offload::{AuditEntry, Client, GroupStatus};
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::error::{JsonBody, QueryArgs};
use crate::schema::{EnqueuedGroup, ErrorBody, GroupBody};
use crate::tasks::{ReasonQuery, audit, new_task, task_id};
use crate::{ApiError, Metrics};

/// `POST /v1/groups` `{"members": [task, …], "callback": task}` → 201
/// `{"id", "members", "callback"}`: all stored in one commit. The callback
/// becomes `pending` once every member has ended, whatever the outcome;
/// the group's id is the callback's id.
#[utoipa::path(post, path = "/v1/groups", operation_id = "enqueue_group", tag = "groups", request_body = GroupBody,
    responses((status = 201, description = "Enqueued", body = EnqueuedGroup), (status = 413, description = "Body over the limit", body = ErrorBody), (status = 415, description = "Not JSON", body = ErrorBody), (status = 422, description = "Invalid input (names the field)", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn create(
    State(client): State<Client>,
    State(metrics): State<Metrics>,
    JsonBody(body): JsonBody<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Value::Object(mut fields) = body else {
        return Err(ApiError::invalid(
            "body",
            "a group is a JSON object with `members` and `callback`",
        ));
    };
    let members = match fields.remove("members") {
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| new_task(item, &format!("members[{i}].")))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(ApiError::invalid("members", "must be an array of tasks")),
        None => return Err(ApiError::invalid("members", "is required")),
    };
    let callback = match fields.remove("callback") {
        Some(item) => new_task(item, "callback.")?,
        None => return Err(ApiError::invalid("callback", "is required")),
    };
    if let Some(extra) = fields.keys().next() {
        return Err(ApiError::invalid(
            extra.clone(),
            format!("unknown field `{extra}`, expected `members` or `callback`"),
        ));
    }
    let group = client.trigger_group(members, callback).await?;
    metrics.enqueued(group.members.len() + 1);
    let members: Vec<_> = group.members.iter().map(|h| h.id()).collect();
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": group.id(), "members": members, "callback": group.callback.id() })),
    ))
}

/// `GET /v1/groups/{id}` → where the group stands.
#[utoipa::path(get, path = "/v1/groups/{id}", operation_id = "get_group", tag = "groups", params(("id" = String, Path, description = "The group id (its callback's id)")),
    responses((status = 200, description = "The group", body = GroupStatus), (status = 404, description = "No such task", body = ErrorBody), (status = 422, description = "The task is not a group's callback", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn get(
    State(client): State<Client>,
    Path(id): Path<String>,
) -> Result<Json<GroupStatus>, ApiError> {
    Ok(Json(client.group(task_id(&id)?).await?))
}

/// `POST /v1/groups/{id}/abort?reason=` → the group after aborting its
/// callback and every member that has not ended.
#[utoipa::path(post, path = "/v1/groups/{id}/abort", operation_id = "abort_group", tag = "groups", params(("id" = String, Path, description = "The group id"), ReasonQuery),
    responses((status = 200, description = "The group afterwards", body = GroupStatus), (status = 404, description = "No such task", body = ErrorBody), (status = 422, description = "The task is not a group's callback", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn abort(
    State(client): State<Client>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    QueryArgs(query): QueryArgs<ReasonQuery>,
) -> Result<Json<GroupStatus>, ApiError> {
    let id = task_id(&id)?;
    let status = client
        .abort_group(id, query.reason.clone())
        .await
        .map_err(ApiError::from)?;
    audit(
        &client,
        AuditEntry::new(caller.actor(), "group.abort")
            .target(id.to_string())
            .reason(query.reason),
    )
    .await;
    Ok(Json(status))
}
