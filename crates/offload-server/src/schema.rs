//! The OpenAPI document (`GET /v1/openapi.json`): the shapes of answers
//! that the handlers build as JSON, described here for the document, and
//! the document's frame. Every route is added by the router from the
//! handlers' `#[utoipa::path]` annotations.
//!
//! The types here are described for the document and never built (the
//! handlers answer with `serde_json` values of these shapes; the HTTP tests
//! check the shapes).
#![allow(dead_code)]

use offload_types::{Attempt, Status, Task, TaskErrorRecord, TaskId, TaskOptions};
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

/// The answer to enqueueing one task.
#[derive(Serialize, ToSchema)]
pub(crate) struct Enqueued {
    id: TaskId,
}

/// The answer to enqueueing an array.
#[derive(Serialize, ToSchema)]
pub(crate) struct EnqueuedMany {
    ids: Vec<TaskId>,
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

/// The document's frame; the router adds every path.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "offload",
        description = "Durable background tasks: enqueue, inspect and steer tasks, and run them from workers in any language."
    ),
    components(schemas(ErrorBody))
)]
pub(crate) struct ApiDoc;
