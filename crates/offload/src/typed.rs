//! [`TaskType`]: typed tasks — serde input and output, a `NAME`, and
//! `MyTask::enqueue(&client, input)`.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use offload_types::{NewTask, RetryPolicy, Task, TaskError, TaskOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Client, Context, Controller, Result, Runner, TypedHandle};

/// A task type with typed input and output.
///
/// ```
/// use offload::{Context, Controller, TaskError, TaskType};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Topic { topic: String }
///
/// struct Research;
///
/// impl TaskType for Research {
///     const NAME: &'static str = "research";
///     type Input = Topic;
///     type Output = String;
///
///     async fn run(&self, input: Topic, _ctx: &Context, _ctl: &Controller) -> Result<String, TaskError> {
///         Ok(format!("notes on {}", input.topic))
///     }
/// }
///
/// # async fn demo(client: offload::Client) -> offload::Result<()> {
/// let handle = Research::enqueue(&client, Topic { topic: "AI agents".into() }).await?;
/// let notes: String = handle.result(std::time::Duration::from_secs(30)).await?;
/// # Ok(()) }
/// ```
pub trait TaskType: Send + Sync + Sized + 'static {
    /// The task name stored with every task of this type.
    const NAME: &'static str;
    /// The task's arguments.
    type Input: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// What a successful run returns.
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// Runs one attempt.
    fn run(
        &self,
        input: Self::Input,
        ctx: &Context,
        ctl: &Controller,
    ) -> impl Future<Output = Result<Self::Output, TaskError>> + Send;

    /// Options every enqueue of this type starts from.
    fn options() -> TaskOptions {
        TaskOptions::default()
    }

    /// The attempt time limit for tasks that set none.
    fn timeout(&self) -> Option<Duration> {
        None
    }

    /// Back-off between attempts for tasks that set none.
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::default()
    }

    /// A task of this type with the type's default options, to enqueue in
    /// a batch ([`Client::trigger_many`]) or a group ([`Client::trigger_group`]).
    fn new_task(input: Self::Input) -> Result<NewTask> {
        Ok(NewTask::new(Self::NAME, serde_json::to_value(&input)?).options(Self::options()))
    }

    /// Enqueues one task of this type with the type's default options.
    fn enqueue(
        client: &Client,
        input: Self::Input,
    ) -> impl Future<Output = Result<TypedHandle<Self>>> + Send {
        Self::enqueue_with(client, input, TaskOptions::default())
    }

    /// Enqueues one task of this type; unset `options` take the type's defaults.
    fn enqueue_with(
        client: &Client,
        input: Self::Input,
        options: TaskOptions,
    ) -> impl Future<Output = Result<TypedHandle<Self>>> + Send {
        let client = client.clone();
        async move {
            let value = serde_json::to_value(&input)?;
            let handle = client
                .trigger(Self::NAME, value, options.or(&Self::options()))
                .await?;
            Ok(TypedHandle::new(handle))
        }
    }
}

/// Runs a [`TaskType`] as a [`Runner`].
pub(crate) struct TypedRunner<T>(pub(crate) T);

#[async_trait]
impl<T: TaskType> Runner for TypedRunner<T> {
    async fn run(
        &self,
        task: &Task,
        ctx: &Context,
        ctl: &Controller,
    ) -> Result<serde_json::Value, TaskError> {
        let input: T::Input = serde_json::from_value(task.input.clone()).map_err(|e| {
            TaskError::fatal(format!("input does not match {}: {e}", T::NAME)).kind("input")
        })?;
        let output = self.0.run(input, ctx, ctl).await?;
        serde_json::to_value(output)
            .map_err(|e| TaskError::fatal(format!("output could not be serialized: {e}")))
    }

    fn timeout(&self) -> Option<Duration> {
        self.0.timeout()
    }

    fn retry_policy(&self) -> RetryPolicy {
        self.0.retry_policy()
    }
}
