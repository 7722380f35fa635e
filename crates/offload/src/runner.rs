//! [`Runner`]: the code for one task name.

use std::time::Duration;

use async_trait::async_trait;
use offload_types::{RetryPolicy, Task, TaskError};

use crate::{Context, Controller};

/// The code that runs tasks of one name. Return `Ok(output)` or
/// `Err(TaskError)` (retryable unless [`TaskError::fatal`]); the
/// [`Controller`] covers what a return value cannot say (progress, snooze,
/// cooperative cancellation).
///
/// For typed input and output, implement [`TaskType`](crate::TaskType) instead.
///
/// ```
/// use offload::{async_trait, Context, Controller, Runner, Task, TaskError};
/// use serde_json::{json, Value};
///
/// struct Echo;
///
/// #[async_trait]
/// impl Runner for Echo {
///     async fn run(&self, task: &Task, _ctx: &Context, ctl: &Controller) -> Result<Value, TaskError> {
///         ctl.progress(50, Some("halfway".into())).await.ok();
///         Ok(json!({"echo": task.input}))
///     }
/// }
/// ```
#[async_trait]
pub trait Runner: Send + Sync + 'static {
    /// Runs one attempt of `task`.
    async fn run(
        &self,
        task: &Task,
        ctx: &Context,
        ctl: &Controller,
    ) -> Result<serde_json::Value, TaskError>;

    /// The attempt time limit for tasks that set none.
    fn timeout(&self) -> Option<Duration> {
        None
    }

    /// Back-off between attempts for tasks that set none.
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::default()
    }
}
