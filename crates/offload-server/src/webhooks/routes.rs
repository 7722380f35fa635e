//! `/v1/webhooks`: subscriptions and their deliveries (admin only).

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use offload::{AuditEntry, Client, DeliveryListParams, EventKind, TaskId};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::{NewWebhook, WebhookError, WebhookSettings, delivery_json, webhook_json};
use crate::ApiError;
use crate::auth::Caller;
use crate::error::{JsonBody, QueryArgs};
use crate::schema::{CreatedWebhook, DeliveryList, ErrorBody, WebhookInfo};
use crate::tasks::{ReasonQuery, audit};

/// Page size of the deliveries list unless `limit` says otherwise.
const DEFAULT_PAGE: u32 = 50;

/// The body of `POST /v1/webhooks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewWebhookBody {
    /// Where deliveries go (`http://` or `https://`).
    url: String,
    /// Event types: `task.succeeded`, `task.failed`, `task.aborted`,
    /// `task.retrying`, `task.progress`, `task.started`, `task.created`.
    events: Vec<String>,
    /// Only tasks with these names.
    #[serde(default)]
    name: Vec<String>,
    /// Only tasks in these queues.
    #[serde(default)]
    queue: Vec<String>,
    /// Why, for the audit log.
    reason: Option<String>,
}

/// `GET /v1/webhooks` → every subscription (secrets are not shown).
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", operation_id = "list_webhooks",
    responses((status = 200, description = "The subscriptions, oldest first", body = Vec<WebhookInfo>), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn list(State(client): State<Client>) -> Result<Json<Value>, ApiError> {
    let all = client
        .store()
        .webhook_list()
        .await
        .map_err(offload::Error::from)?;
    let shown: Vec<Value> = all.iter().map(webhook_json).collect();
    Ok(Json(json!({ "webhooks": shown })))
}

/// `POST /v1/webhooks` → 201 with the subscription and its `secret`
/// (shown only now).
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", operation_id = "create_webhook", request_body = NewWebhookBody,
    responses((status = 201, description = "Subscribed; `secret` is shown only now", body = CreatedWebhook), (status = 422, description = "Invalid input, or a target on a private address (names the field)", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn create(
    State(client): State<Client>,
    State(settings): State<WebhookSettings>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<NewWebhookBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let events = body
        .events
        .iter()
        .map(|e| e.parse::<EventKind>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::invalid("events", e.to_string()))?;
    let made = super::add(
        &client,
        NewWebhook {
            url: body.url,
            events,
            names: body.name,
            queues: body.queue,
        },
        &settings,
    )
    .await
    .map_err(|e| match e {
        WebhookError::Invalid { field, message } => ApiError::invalid(field, message),
        WebhookError::Store(e) => e.into(),
    })?;
    audit(
        &client,
        AuditEntry::new(caller.actor(), "webhook.add")
            .target(made.id.clone())
            .reason(body.reason)
            .details(webhook_json(&made)),
    )
    .await;
    let mut answer = webhook_json(&made);
    answer["secret"] = json!(made.secret);
    Ok((StatusCode::CREATED, Json(answer)))
}

/// `DELETE /v1/webhooks/{id}` → 204; its deliveries go with it.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", operation_id = "delete_webhook", params(("id" = String, Path, description = "The subscription id"), ReasonQuery),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such subscription", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn delete(
    State(client): State<Client>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    QueryArgs(query): QueryArgs<ReasonQuery>,
) -> Result<StatusCode, ApiError> {
    let deleted = client
        .store()
        .webhook_delete(&id)
        .await
        .map_err(offload::Error::from)?;
    if !deleted {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("webhook {id:?} not found"),
        ));
    }
    audit(
        &client,
        AuditEntry::new(caller.actor(), "webhook.delete")
            .target(id)
            .reason(query.reason),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// The query of the deliveries list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeliveriesQuery {
    /// Only for this subscription.
    webhook_id: Option<String>,
    /// Only about this task.
    task_id: Option<String>,
    /// Page size, 1 to 1000 (default 50).
    limit: Option<u32>,
}

/// `GET /v1/webhooks/deliveries` → deliveries with every attempt, newest first.
#[utoipa::path(get, path = "/v1/webhooks/deliveries", tag = "webhooks", operation_id = "list_deliveries", params(DeliveriesQuery),
    responses((status = 200, description = "Deliveries, newest first", body = DeliveryList), (status = 422, description = "Invalid input (names the field)", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn deliveries(
    State(client): State<Client>,
    QueryArgs(query): QueryArgs<DeliveriesQuery>,
) -> Result<Json<Value>, ApiError> {
    let task_id = query
        .task_id
        .map(|t| t.parse::<TaskId>())
        .transpose()
        .map_err(|e| ApiError::invalid("task_id", e.to_string()))?;
    let list = client
        .store()
        .webhook_delivery_list(&DeliveryListParams {
            webhook_id: query.webhook_id,
            task_id,
            limit: query.limit.unwrap_or(DEFAULT_PAGE),
        })
        .await
        .map_err(offload::Error::from)?;
    let shown: Vec<Value> = list.iter().map(delivery_json).collect();
    Ok(Json(json!({ "deliveries": shown })))
}
