//! `/healthz` (the process answers) and `/readyz` (and so does its store).

use axum::Json;
use axum::extract::State;
use offload::{Client, TaskListParams};
use serde_json::{Value, json};

use crate::ApiError;

/// The process is up.
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The store answers a query (503 `unavailable` when it does not).
pub(crate) async fn readyz(State(client): State<Client>) -> Result<Json<Value>, ApiError> {
    client
        .list(TaskListParams {
            limit: 1,
            ..TaskListParams::default()
        })
        .await?;
    Ok(Json(json!({ "status": "ready" })))
}
