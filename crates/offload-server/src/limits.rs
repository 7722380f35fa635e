//! The limit routes: set, list and delete the flow-control limits every
//! worker sharing the store applies (concurrency, per-key concurrency,
//! rate, and the quota of waiting tasks per fairness key).

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use offload::{AuditEntry, Client, Limit, LimitRecord, LimitScope};
use serde_json::{Value, json};

use crate::ApiError;
use crate::auth::Caller;
use crate::error::{JsonBody, QueryArgs};
use crate::schema::ErrorBody;
use crate::tasks::{ReasonQuery, audit};

/// `POST /v1/limits` with a limit → 201 the limit as stored (replacing
/// the one with the same scope and target).
#[utoipa::path(post, path = "/v1/limits", operation_id = "put_limit", tag = "limits", request_body = Limit,
    responses((status = 201, description = "Stored", body = LimitRecord), (status = 422, description = "Invalid input (names the field)", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn put(
    State(client): State<Client>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<Value>,
) -> Result<(StatusCode, Json<LimitRecord>), ApiError> {
    let limit: Limit = serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        ApiError::invalid(path, e.into_inner().to_string())
    })?;
    let target = format!("{}:{}", limit.scope.as_str(), limit.target);
    let record = client.set_limit(limit).await?;
    audit(
        &client,
        AuditEntry::new(caller.actor(), "limit.set").target(target),
    )
    .await;
    Ok((StatusCode::CREATED, Json(record)))
}

/// `GET /v1/limits` → `{"limits": [...]}`.
#[utoipa::path(get, path = "/v1/limits", operation_id = "list_limits", tag = "limits",
    responses((status = 200, description = "Every limit", body = Value), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn list(State(client): State<Client>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "limits": client.limits().await? })))
}

/// `DELETE /v1/limits/{scope}/{target}?reason=` → 204.
#[utoipa::path(delete, path = "/v1/limits/{scope}/{target}", operation_id = "delete_limit", tag = "limits", params(("scope" = String, Path, description = "`name` or `queue`"), ("target" = String, Path, description = "The task name or queue"), ReasonQuery),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such limit", body = ErrorBody), (status = 422, description = "Unknown scope", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn delete(
    State(client): State<Client>,
    Extension(caller): Extension<Caller>,
    Path((scope, target)): Path<(String, String)>,
    QueryArgs(query): QueryArgs<ReasonQuery>,
) -> Result<StatusCode, ApiError> {
    let scope: LimitScope = scope
        .parse()
        .map_err(|e: offload::ValidationError| ApiError::invalid(e.field, e.message))?;
    if !client.delete_limit(scope, &target).await? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no limit for {} {target:?}", scope.as_str()),
        ));
    }
    audit(
        &client,
        AuditEntry::new(caller.actor(), "limit.delete")
            .target(format!("{}:{target}", scope.as_str()))
            .reason(query.reason),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}
