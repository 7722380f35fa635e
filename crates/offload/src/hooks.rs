//! [`Hook`]: code around every attempt (tracing, metrics, auth, DB
//! transactions), at worker level or per runner, composed like middleware:
//! `on_before_run` in registration order, the others in reverse.

use async_trait::async_trait;
use offload_types::{Task, TaskError};

use crate::Context;

/// How an attempt ended, as hooks see it.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptResult {
    /// The runner succeeded with this output.
    Success(serde_json::Value),
    /// The attempt failed; `will_retry` tells whether another attempt follows.
    Failure {
        /// The error.
        error: TaskError,
        /// Whether the task will be retried.
        will_retry: bool,
    },
    /// The task was aborted.
    Aborted,
    /// The task was snoozed or handed back at shutdown; it runs again later.
    Deferred,
}

/// Code that runs around attempts. Every method has an empty default.
///
/// ```
/// use offload::{async_trait, AttemptResult, Context, Hook, Task, TaskError};
///
/// struct LogHook;
///
/// #[async_trait]
/// impl Hook for LogHook {
///     async fn on_before_run(&self, task: &Task, _ctx: &Context) -> Result<(), TaskError> {
///         tracing::info!(task = %task.id, name = %task.name, "starting");
///         Ok(())
///     }
///     async fn on_after_run(&self, task: &Task, result: &AttemptResult, _ctx: &Context) {
///         tracing::info!(task = %task.id, ?result, "finished");
///     }
/// }
/// ```
#[async_trait]
pub trait Hook: Send + Sync + 'static {
    /// Before the runner; an error fails the attempt without running it.
    async fn on_before_run(&self, _task: &Task, _ctx: &Context) -> Result<(), TaskError> {
        Ok(())
    }

    /// After every attempt, whatever its result.
    async fn on_after_run(&self, _task: &Task, _result: &AttemptResult, _ctx: &Context) {}

    /// After an attempt that succeeded.
    async fn on_success(&self, _task: &Task, _output: &serde_json::Value, _ctx: &Context) {}

    /// After an attempt that failed (retried or not).
    async fn on_failure(&self, _task: &Task, _error: &TaskError, _ctx: &Context) {}
}
