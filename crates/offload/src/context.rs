//! [`Context`]: what a run can reach — the application's shared state,
//! a [`Client`] for other tasks, and who runs it.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use offload_types::{Task, TaskId};
use serde::de::DeserializeOwned;

use crate::{Client, Error, Result};

/// Shared state registered once on the worker, keyed by type.
#[derive(Default)]
pub(crate) struct StateMap(HashMap<TypeId, Arc<dyn Any + Send + Sync>>);

impl StateMap {
    pub(crate) fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        self.0.insert(TypeId::of::<T>(), Arc::new(value));
    }

    fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.0.get(&TypeId::of::<T>())?.downcast_ref::<T>()
    }
}

/// What a run can reach.
///
/// ```
/// # use offload::{Context, Controller, TaskError, TaskType};
/// struct Config { api_base: String }
/// struct Ping;
/// impl TaskType for Ping {
///     const NAME: &'static str = "ping";
///     type Input = ();
///     type Output = String;
///     async fn run(&self, _: (), ctx: &Context, _: &Controller) -> Result<String, TaskError> {
///         let config = ctx.state::<Config>().ok_or_else(|| TaskError::fatal("no Config registered"))?;
///         Ok(config.api_base.clone())
///     }
/// }
/// ```
#[derive(Clone)]
pub struct Context {
    client: Client,
    state: Arc<StateMap>,
    worker_id: Arc<str>,
    /// The running task's `depends_on` and `after` (empty outside a run).
    depends_on: Arc<[TaskId]>,
    after: Arc<[TaskId]>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("worker_id", &self.worker_id)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub(crate) fn new(client: Client, state: Arc<StateMap>, worker_id: Arc<str>) -> Self {
        Self {
            client,
            state,
            worker_id,
            depends_on: Arc::from([]),
            after: Arc::from([]),
        }
    }

    /// This context for a run of `task`.
    pub(crate) fn for_task(mut self, task: &Task) -> Self {
        self.depends_on = Arc::from(task.depends_on.as_slice());
        self.after = Arc::from(task.after.as_slice());
        self
    }

    /// The tasks this run's task depends on (`depends_on`), in that order,
    /// as stored now: each has succeeded, and its `output` is what it
    /// returned. Empty for a task without dependencies.
    ///
    /// ```
    /// # use offload::{Context, Controller, TaskError, TaskType};
    /// struct Total;
    /// impl TaskType for Total {
    ///     const NAME: &'static str = "total";
    ///     type Input = ();
    ///     type Output = i64;
    ///     async fn run(&self, _: (), ctx: &Context, _: &Controller) -> Result<i64, TaskError> {
    ///         let parts = ctx.dependencies().await.map_err(|e| TaskError::new(e.to_string()))?;
    ///         Ok(parts.iter().filter_map(|t| t.output.as_ref()?.as_i64()).sum())
    ///     }
    /// }
    /// ```
    pub async fn dependencies(&self) -> Result<Vec<Task>> {
        self.client.get_many(&self.depends_on).await
    }

    /// The output of dependency `id` (one of `depends_on`), deserialized.
    pub async fn dependency_output<T: DeserializeOwned>(&self, id: TaskId) -> Result<T> {
        if !self.depends_on.contains(&id) {
            return Err(offload_types::ValidationError::new(
                "id",
                format!("task {id} is not a dependency of this task"),
            )
            .into());
        }
        let task = self.client.get(id).await?;
        let output = task.output.ok_or(Error::NoResult {
            id,
            status: task.status,
        })?;
        Ok(serde_json::from_value(output)?)
    }

    /// For a group's callback: the members (the task's `after` list), in
    /// enqueue order, as stored now — each has ended, with its `status`,
    /// `output` or `error`. Empty for other tasks.
    pub async fn group_results(&self) -> Result<Vec<Task>> {
        self.client.get_many(&self.after).await
    }

    /// The shared value of type `T` registered with
    /// [`WorkerBuilder::state`](crate::WorkerBuilder::state), if any.
    pub fn state<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.state.get::<T>()
    }

    /// A client to trigger, query and await other tasks.
    pub fn tasks(&self) -> &Client {
        &self.client
    }

    /// The id of the worker running this attempt.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }
}
