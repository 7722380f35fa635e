//! The OpenAPI document (`GET /v1/openapi.json`): the shapes of answers
//! that the handlers build as JSON, described here for the document, and
//! the document's frame. Every route is added by the router from the
//! handlers' `#[utoipa::path]` annotations.
//!
//! The types here are described for the document and never built (the
//! handlers answer with `serde_json` values of these shapes; the HTTP tests
//! check the shapes).
#![allow(dead_code)]

use chrono::{DateTime, Utc};
use offload_types::{
    Attempt, EnqueueOutcome, Role, Status, Task, TaskErrorRecord, TaskId, TaskOptions,
};
use serde::Serialize;
use serde_json::Value;
use utoipa::{OpenApi, ToSchema};

/// One task to enqueue: `name` (or `type`), `input` (or `payload`), and
/// any of the [`TaskOptions`] fields beside them.
#[derive(Serialize, ToSchema)]
pub(crate) struct NewTaskBody {
    /// The task type (alias `type`).
    name: String,
    /// Its arguments (alias `payload`; default `null`).
    input: Option<Value>,
    #[serde(flatten)]
    options: TaskOptions,
}

/// `POST /v1/tasks` takes one task or an array of them (all or nothing).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum EnqueueBody {
    /// One task.
    One(Box<NewTaskBody>),
    /// Many tasks.
    Many(Vec<NewTaskBody>),
}

/// `POST /v1/groups`: members and the callback that runs once they have
/// all ended.
#[derive(Serialize, ToSchema)]
pub(crate) struct GroupBody {
    /// The group's tasks (each may depend on earlier ones; no `unique_key`).
    members: Vec<NewTaskBody>,
    /// Runs once every member has ended; reads their outcomes.
    callback: NewTaskBody,
}

/// The answer to enqueueing a group.
#[derive(Serialize, ToSchema)]
pub(crate) struct EnqueuedGroup {
    /// The group's id: its callback's id.
    id: TaskId,
    /// The members' ids, in the order given.
    members: Vec<TaskId>,
    /// The callback's id (the group's id).
    callback: TaskId,
}

/// The answer to enqueueing one task.
#[derive(Serialize, ToSchema)]
pub(crate) struct Enqueued {
    id: TaskId,
    /// What the enqueue did.
    outcome: EnqueueOutcome,
}

/// The answer to enqueueing an array.
#[derive(Serialize, ToSchema)]
pub(crate) struct EnqueuedMany {
    ids: Vec<TaskId>,
    /// What the enqueue did, per task.
    outcomes: Vec<EnqueueOutcome>,
}

/// `{"id"}` for one task, `{"ids"}` for an array.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum EnqueueAnswer {
    /// One task.
    One(Enqueued),
    /// Many tasks.
    Many(EnqueuedMany),
}

/// One page of tasks, newest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct TaskPage {
    tasks: Vec<Task>,
    /// Pass as `cursor` for the next page; `null` on the last.
    next_cursor: Option<String>,
}

/// A task with its attempt history.
#[derive(Serialize, ToSchema)]
pub(crate) struct TaskDetail {
    #[serde(flatten)]
    task: Task,
    attempts: Vec<Attempt>,
}

/// Where a task's outcome stands.
#[derive(Serialize, ToSchema)]
pub(crate) struct TaskResult {
    id: TaskId,
    status: Status,
    output: Option<Value>,
    error: Option<TaskErrorRecord>,
}

/// Task counts: queue → status → count.
#[derive(Serialize, ToSchema)]
pub(crate) struct Queues {
    queues: std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>,
}

/// A leased task: the task and the token every later call must carry.
#[derive(Serialize, ToSchema)]
pub(crate) struct LeasedTask {
    #[serde(flatten)]
    task: Task,
    lease_token: String,
}

/// The answer to `POST /v1/lease`.
#[derive(Serialize, ToSchema)]
pub(crate) struct Leased {
    tasks: Vec<LeasedTask>,
}

/// The answer to heartbeats and progress reports.
#[derive(Serialize, ToSchema)]
pub(crate) struct LeaseAnswer {
    /// Someone asked the task to stop: end the attempt with `fail`
    /// (`"aborted": true`).
    abort_requested: bool,
}

/// The task's status after an attempt ended.
#[derive(Serialize, ToSchema)]
pub(crate) struct Ended {
    status: Status,
}

/// Health answers.
#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    /// `ok` or `ready`.
    status: String,
}

/// Every error answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

/// What went wrong.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// Stable, e.g. `not_found`, `invalid_input`, `lease_lost`.
    code: String,
    /// For people.
    message: String,
    /// The input field at fault, for `invalid_input`.
    field: Option<String>,
}

/// The answer of `POST /v1/purge`.
#[derive(Serialize, ToSchema)]
pub(crate) struct Purged {
    /// Tasks deleted.
    purged: u64,
}

/// A webhook subscription (its secret is shown only when it is made).
#[derive(Serialize, ToSchema)]
pub(crate) struct WebhookInfo {
    /// `wh_…`.
    id: String,
    url: String,
    /// Event types delivered.
    events: Vec<String>,
    /// Only these task names (empty: any).
    names: Vec<String>,
    /// Only these queues (empty: any).
    queues: Vec<String>,
    created_at: DateTime<Utc>,
}

/// A subscription just made, with its signing secret.
#[derive(Serialize, ToSchema)]
pub(crate) struct CreatedWebhook {
    #[serde(flatten)]
    info: WebhookInfo,
    /// `whsec_…`: verify `webhook-signature` with it (Standard Webhooks).
    secret: String,
}

/// One attempt at a delivery.
#[derive(Serialize, ToSchema)]
pub(crate) struct DeliveryAttemptInfo {
    attempt: u32,
    at: DateTime<Utc>,
    /// The HTTP status received, if an answer came.
    status_code: Option<u16>,
    latency_ms: u64,
    /// What went wrong, if it did.
    error: Option<String>,
}

/// A delivery and its attempts.
#[derive(Serialize, ToSchema)]
pub(crate) struct DeliveryInfo {
    /// `msg_…`, also the `webhook-id` header.
    id: String,
    /// The subscription; `null` for a task's own `webhook`.
    webhook_id: Option<String>,
    url: String,
    event: String,
    task_id: TaskId,
    /// `pending`, `delivered` or `failed`.
    status: String,
    created_at: DateTime<Utc>,
    next_attempt_at: Option<DateTime<Utc>>,
    attempts: Vec<DeliveryAttemptInfo>,
    /// The body sent: `{"type", "timestamp", "data"}`.
    payload: Value,
}

/// Deliveries, newest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct DeliveryList {
    deliveries: Vec<DeliveryInfo>,
}

/// An API token as lists show it (never its secret).
#[derive(Serialize, ToSchema)]
pub(crate) struct TokenInfo {
    /// The public id.
    id: String,
    /// `admin`, `producer`, `worker` or `read`.
    role: Role,
    /// A note for people.
    label: Option<String>,
    /// When it was created.
    created_at: DateTime<Utc>,
}

/// A token just created: `token` is shown only in this answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct CreatedToken {
    #[serde(flatten)]
    info: TokenInfo,
    /// The whole token (`ofl_<id>_<secret>`), for `Authorization: Bearer`.
    token: String,
}

/// One operator action.
#[derive(Serialize, ToSchema)]
pub(crate) struct AuditRecord {
    /// Increasing number.
    seq: i64,
    /// When.
    at: DateTime<Utc>,
    /// Who: `token:<id>`, `anonymous` (open API) or `local` (the CLI on the store).
    actor: String,
    /// What: `task.abort`, `task.retry`, `task.delete`, `task.update`, `task.purge`, `token.create`, `token.delete`, …
    action: String,
    /// To what.
    target: Option<String>,
    /// Why.
    reason: Option<String>,
    /// More (an object).
    details: Value,
}

/// A page of the audit log, newest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct AuditPage {
    records: Vec<AuditRecord>,
    /// Pass as `cursor` for the next page; `null` on the last.
    next_cursor: Option<i64>,
}

/// One event of `GET /v1/events` (also the `data` of each Server-Sent Event).
#[derive(Serialize, ToSchema)]
pub(crate) struct Event {
    /// Its position: send it back as `after` (or `Last-Event-ID`) to resume.
    cursor: String,
    /// When it happened.
    at: DateTime<Utc>,
    /// `task.created`, `task.started`, `task.progress`, `task.succeeded`,
    /// `task.failed`, `task.retrying` or `task.aborted`.
    #[serde(rename = "type")]
    kind: String,
    task_id: TaskId,
    name: String,
    queue: String,
    /// The attempt number at the time (0 before the first start).
    attempt: u32,
    /// Depends on the type: `status` (created), `worker_id` (started), the
    /// progress (progress), `error` and `run_at` (retrying, failed, aborted).
    data: Value,
}

/// Events in log order, with where to continue.
#[derive(Serialize, ToSchema)]
pub(crate) struct EventPage {
    events: Vec<Event>,
    /// Pass as `after` to read on; `null` while the log is empty.
    cursor: Option<String>,
}

/// The document's frame; the router adds every path, then [`Security`]
/// adds the bearer scheme and the 401/403 answers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "offload",
        description = "Durable background tasks: enqueue, inspect and steer tasks, and run them from workers in any language."
    ),
    components(schemas(ErrorBody))
)]
pub(crate) struct ApiDoc;

/// Adds the bearer-token scheme, and to every route that needs a token
/// its security requirement and the 401 and 403 answers.
pub(crate) fn add_security(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::{
        HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
    };
    use utoipa::openapi::{RefOr, ResponseBuilder, content::ContentBuilder};
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An API token (`offload tokens create --role ...`). Needed once the store holds any token.",
                ))
                .build(),
        ),
    );
    let error = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build(),
        )
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops = [
            (axum::http::Method::GET, item.get.as_mut()),
            (axum::http::Method::POST, item.post.as_mut()),
            (axum::http::Method::PATCH, item.patch.as_mut()),
            (axum::http::Method::DELETE, item.delete.as_mut()),
            (axum::http::Method::PUT, item.put.as_mut()),
        ];
        for (method, op) in ops {
            let Some(op) = op else { continue };
            if crate::auth::permission(&method, path).is_none() {
                continue;
            }
            op.security = Some(vec![SecurityRequirement::new(
                "bearer",
                Vec::<String>::new(),
            )]);
            op.responses.responses.insert(
                "401".into(),
                error("No valid token, while the store holds tokens"),
            );
            op.responses
                .responses
                .insert("403".into(), error("The token's role does not allow this"));
        }
    }
}
