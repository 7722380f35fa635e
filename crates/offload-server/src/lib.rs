//! The HTTP API of offload, served by `offload serve`: JSON under `/v1`,
//! so that any language can enqueue, inspect and steer tasks.
//!
//! | method and path | what |
//! | --- | --- |
//! | `POST /v1/tasks` | enqueue one task (an object) or many (an array, all or nothing) |
//! | `GET /v1/tasks` | list, newest first: `status`, `name`, `queue`, `tag`, `limit`, `cursor` |
//! | `GET /v1/tasks/{id}` | one task with its attempt history |
//! | `PATCH /v1/tasks/{id}` | change a task that has not started |
//! | `DELETE /v1/tasks/{id}` | delete a task that is not running |
//! | `POST /v1/tasks/{id}/abort` | abort (a running task is asked to stop) |
//! | `POST /v1/tasks/{id}/retry` | run a failed or aborted task again |
//! | `GET /v1/tasks/{id}/result?wait=30s` | the outcome, waiting for it up to `wait` |
//! | `POST /v1/groups` | enqueue a group: members and a callback run once they all ended |
//! | `GET /v1/groups/{id}` | a group's progress: members by status, the callback's status |
//! | `POST /v1/groups/{id}/abort` | abort a group's callback and unfinished members |
//! | `GET/POST /v1/schedules`, `GET/DELETE /v1/schedules/{name}` | cron schedules, with their next run times |
//! | `POST /v1/schedules/{name}/pause`, `/resume` | pause or resume a schedule |
//! | `GET/POST /v1/limits`, `DELETE /v1/limits/{scope}/{target}` | flow-control limits (concurrency, per-key concurrency, rate, quota per fairness key) |
//! | `POST /v1/purge` | delete finished tasks by status, name, queue, tag, age |
//! | `GET /v1/queues` | task counts by queue and status |
//! | `GET /v1/events` | task events: Server-Sent Events (live, resumable) or JSON pages |
//! | `GET/POST /v1/tokens`, `DELETE /v1/tokens/{id}` | API tokens (admin) |
//! | `GET /v1/audit` | the audit log of operator actions (admin) |
//! | `GET/POST /v1/webhooks`, `DELETE /v1/webhooks/{id}`, `GET /v1/webhooks/deliveries` | webhook subscriptions and deliveries (admin) |
//! | `POST /v1/lease` | remote workers: lease ready tasks (long-poll) |
//! | `POST /v1/tasks/{id}/heartbeat`, `/progress`, `/complete`, `/fail` | remote workers: with the lease token |
//! | `GET /healthz`, `GET /readyz` | the process is up; the store answers |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /v1/openapi.json` | the OpenAPI 3.1 document of all of the above |
//!
//! Errors are `{"error": {"code", "message", "field"?}}` with a 4xx or 5xx
//! status (see [`ApiError`]).
//!
//! Once the store holds an API token, every route but `/healthz`, `/readyz`
//! and the OpenAPI document needs `Authorization: Bearer <token>` (401
//! without a valid one) with a role that allows it (403 otherwise).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = offload::Client::connect("sqlite://offload.db").await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8750").await?;
//! axum::serve(listener, offload_server::router(client)?).await?;
//! # Ok(()) }
//! ```

mod access;
mod auth;
mod error;
mod events;
mod groups;
mod health;
mod limits;
mod metrics;
mod remote;
mod schedules;
mod schema;
mod tasks;
pub mod webhooks;

pub use error::ApiError;
pub use metrics::{Metrics, MetricsHook};
pub use webhooks::WebhookSettings;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRef};
use axum::routing::get;
use axum::{Json, Router};
use offload::Client;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Largest request body accepted unless configured otherwise (1 MiB).
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// The API's routes over `client`'s store, with fresh [`Metrics`] and the
/// default body limit.
pub fn router(client: Client) -> Result<Router, prometheus::Error> {
    Ok(router_with(client, Metrics::new()?, &ApiConfig::default()))
}

/// Settings of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest request body in bytes (larger ones get 413).
    pub body_limit: usize,
    /// How subscriptions made through the API are checked.
    pub webhooks: WebhookSettings,
    /// Ask for a token even while the store holds none (a server exposed
    /// beyond loopback: deleting the last token must not open it).
    pub always_require_tokens: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            body_limit: DEFAULT_BODY_LIMIT,
            webhooks: WebhookSettings::default(),
            always_require_tokens: false,
        }
    }
}

/// What the handlers share.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) client: Client,
    pub(crate) metrics: Metrics,
    pub(crate) auth: auth::Auth,
    pub(crate) webhooks: WebhookSettings,
}

impl FromRef<AppState> for WebhookSettings {
    fn from_ref(state: &AppState) -> Self {
        state.webhooks.clone()
    }
}

impl FromRef<AppState> for auth::Auth {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

impl FromRef<AppState> for Client {
    fn from_ref(state: &AppState) -> Self {
        state.client.clone()
    }
}

impl FromRef<AppState> for Metrics {
    fn from_ref(state: &AppState) -> Self {
        state.metrics.clone()
    }
}

/// The API's routes, recording into `metrics` (share them with the
/// worker's [`Metrics::hook`]), with `config`'s body limit and webhook
/// checks.
pub fn router_with(client: Client, metrics: Metrics, config: &ApiConfig) -> Router {
    let (router, api) = OpenApiRouter::with_openapi(schema::ApiDoc::openapi())
        .routes(routes!(tasks::enqueue, tasks::list))
        .routes(routes!(tasks::get, tasks::update, tasks::delete))
        .routes(routes!(tasks::abort))
        .routes(routes!(tasks::retry))
        .routes(routes!(tasks::result))
        .routes(routes!(tasks::queues))
        .routes(routes!(tasks::purge))
        .routes(routes!(groups::create))
        .routes(routes!(groups::get))
        .routes(routes!(groups::abort))
        .routes(routes!(schedules::list, schedules::put))
        .routes(routes!(schedules::get, schedules::delete))
        .routes(routes!(schedules::pause))
        .routes(routes!(schedules::resume))
        .routes(routes!(limits::list, limits::put))
        .routes(routes!(limits::delete))
        .routes(routes!(events::events))
        .routes(routes!(access::list_tokens, access::create_token))
        .routes(routes!(access::delete_token))
        .routes(routes!(access::audit_log))
        .routes(routes!(webhooks::routes::list, webhooks::routes::create))
        .routes(routes!(webhooks::routes::delete))
        .routes(routes!(webhooks::routes::deliveries))
        .routes(routes!(remote::lease))
        .routes(routes!(remote::heartbeat))
        .routes(routes!(remote::progress))
        .routes(routes!(remote::complete))
        .routes(routes!(remote::fail))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(metrics::metrics))
        .split_for_parts();
    let mut api = api;
    schema::add_security(&mut api);
    let document = Arc::new(api);
    let auth = auth::Auth::new(client.clone(), config.always_require_tokens);
    router
        .route(
            OPENAPI_PATH,
            get(move || {
                let document = document.clone();
                async move { Json(document) }
            }),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            auth.clone(),
            auth::middleware,
        ))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(config.body_limit))
        .with_state(AppState {
            client,
            metrics,
            auth,
            webhooks: config.webhooks.clone(),
        })
}

/// Where the OpenAPI 3.1 document of the API is served.
pub const OPENAPI_PATH: &str = "/v1/openapi.json";
