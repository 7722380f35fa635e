//! `/healthz` (the process answers) and `/readyz` (and so does its store).

use axum::Json;
use axum::extract::State;
use offload::{Client, TaskListParams};
use serde_json::{Value, json};

use crate::ApiError;
use crate::schema::{ErrorBody, Health};

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "Up", body = Health)))]
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The store answers a query (503 `unavailable` when it does not).
#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, description = "The store answers", body = Health), (status = 503, description = "The store cannot be reached", body = ErrorBody)))]
pub(crate) async fn readyz(State(client): State<Client>) -> Result<Json<Value>, ApiError> {
    client
        .list(TaskListParams {
            limit: 1,
            ..TaskListParams::default()
        })
        .await?;
    Ok(Json(json!({ "status": "ready" })))
}
