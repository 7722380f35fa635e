//! Admin routes: API tokens (`/v1/tokens`) and the audit log (`/v1/audit`).

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use offload::{AuditEntry, AuditListParams, Client, Role};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::ApiError;
use crate::auth::{Auth, Caller};
use crate::error::{JsonBody, QueryArgs};
use crate::schema::{AuditPage, CreatedToken, ErrorBody, TokenInfo};
use crate::tasks::{ReasonQuery, audit};

/// Page size of `GET /v1/audit` unless `limit` says otherwise.
const DEFAULT_PAGE: u32 = 50;

/// The body of `POST /v1/tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewTokenBody {
    /// `admin`, `producer`, `worker` or `read`.
    role: Role,
    /// A note for people.
    label: Option<String>,
    /// Why, for the audit log.
    reason: Option<String>,
}

/// `GET /v1/tokens` → every token (never a secret). Admin only.
#[utoipa::path(get, path = "/v1/tokens", tag = "access",
    responses((status = 200, description = "The tokens, oldest first", body = Vec<TokenInfo>), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn list_tokens(State(client): State<Client>) -> Result<Json<Value>, ApiError> {
    let tokens = client.tokens().await?;
    Ok(Json(json!({ "tokens": tokens })))
}

/// `POST /v1/tokens` `{"role", "label"?}` → 201 with the new token, shown
/// this once. Admin only.
#[utoipa::path(post, path = "/v1/tokens", tag = "access", request_body = NewTokenBody,
    responses((status = 201, description = "Created; `token` is shown only now", body = CreatedToken), (status = 422, description = "Invalid input (names the field)", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn create_token(
    State(client): State<Client>,
    State(auth): State<Auth>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<NewTokenBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let created = client.create_token(body.role, body.label).await?;
    // the first token closes an open API at once
    auth.forget();
    audit(
        &client,
        AuditEntry::new(caller.actor(), "token.create")
            .target(created.info.id.clone())
            .reason(body.reason)
            .details(json!({ "role": created.info.role, "label": created.info.label })),
    )
    .await;
    let mut answer = serde_json::to_value(&created.info).map_err(offload::Error::from)?;
    if let Value::Object(fields) = &mut answer {
        fields.insert("token".into(), Value::String(created.token));
    }
    Ok((StatusCode::CREATED, Json(answer)))
}

/// `DELETE /v1/tokens/{id}` → 204. Admin only.
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "access", params(("id" = String, Path, description = "The token id"), ReasonQuery),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such token", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn delete_token(
    State(client): State<Client>,
    State(auth): State<Auth>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    QueryArgs(query): QueryArgs<ReasonQuery>,
) -> Result<StatusCode, ApiError> {
    if !client.delete_token(&id).await? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("token {id:?} not found"),
        ));
    }
    auth.forget();
    audit(
        &client,
        AuditEntry::new(caller.actor(), "token.delete")
            .target(id)
            .reason(query.reason),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// The query of `GET /v1/audit`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    /// Only these actions, comma-separated (`task.abort,task.delete`).
    action: Option<String>,
    /// Only records about this target (a task or token id).
    target: Option<String>,
    /// Page size, 1 to 1000 (default 50).
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<i64>,
}

/// `GET /v1/audit` → operator actions, newest first. Admin only.
#[utoipa::path(get, path = "/v1/audit", tag = "access", params(AuditQuery),
    responses((status = 200, description = "A page of the audit log", body = AuditPage), (status = 422, description = "Invalid input (names the field)", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn audit_log(
    State(client): State<Client>,
    QueryArgs(query): QueryArgs<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let page = client
        .audit_log(AuditListParams {
            before: query.cursor,
            actions: query
                .action
                .map(|a| {
                    a.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            target: query.target,
            limit: query.limit.unwrap_or(DEFAULT_PAGE),
        })
        .await?;
    Ok(Json(json!({
        "records": page.records,
        "next_cursor": page.next_cursor,
    })))
}
