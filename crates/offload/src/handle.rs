//! [`TaskHandle`] (and its typed form [`TypedHandle`]): what trigger
//! returns — the id, plus status, result and abort.

use std::marker::PhantomData;
use std::time::Duration;

use offload_types::{EnqueueOutcome, Status, Task, TaskId};

use crate::{Client, Error, Result, TaskType};

/// A handle on one task.
#[derive(Debug, Clone)]
pub struct TaskHandle {
    client: Client,
    id: TaskId,
    outcome: EnqueueOutcome,
}

impl TaskHandle {
    pub(crate) fn new(client: Client, id: TaskId) -> Self {
        Self::enqueued(client, id, EnqueueOutcome::Existing)
    }

    pub(crate) fn enqueued(client: Client, id: TaskId, outcome: EnqueueOutcome) -> Self {
        Self {
            client,
            id,
            outcome,
        }
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// What the enqueue that made this handle did: `created` a task, or
    /// found (`existing`) or updated (`replaced`, `debounced`,
    /// `throttled`) one with the same `unique_key`. A handle made by
    /// [`Client::handle`] says `existing`.
    pub fn outcome(&self) -> EnqueueOutcome {
        self.outcome
    }

    /// Its current status.
    pub async fn status(&self) -> Result<Status> {
        Ok(self.client.get(self.id).await?.status)
    }

    /// The whole task as stored now.
    pub async fn task(&self) -> Result<Task> {
        self.client.get(self.id).await
    }

    /// Waits (at most `timeout`) for the task to finish and returns its
    /// output; [`Error::TaskFailed`] / [`Error::TaskAborted`] if it did not
    /// succeed, [`Error::Timeout`] if it is still going.
    pub async fn result(&self, timeout: Duration) -> Result<serde_json::Value> {
        let task = self.client.wait(self.id, timeout).await?;
        outcome(task)
    }

    /// Aborts the task.
    pub async fn abort(&self) -> Result<Task> {
        self.client.abort(self.id, None).await
    }
}

/// The output of a terminal task, or why there is none.
pub(crate) fn outcome(task: Task) -> Result<serde_json::Value> {
    match task.status {
        Status::Success => Ok(task.output.unwrap_or(serde_json::Value::Null)),
        Status::Failed => Err(match task.error {
            Some(e) => Error::TaskFailed(e),
            None => Error::NoResult {
                id: task.id,
                status: task.status,
            },
        }),
        Status::Aborted => Err(Error::TaskAborted(task.error)),
        status => Err(Error::NoResult {
            id: task.id,
            status,
        }),
    }
}

/// A [`TaskHandle`] whose result has the task type's output type.
#[derive(Debug)]
pub struct TypedHandle<T: TaskType> {
    inner: TaskHandle,
    _task: PhantomData<fn() -> T>,
}

impl<T: TaskType> Clone for TypedHandle<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            _task: PhantomData,
        }
    }
}

impl<T: TaskType> TypedHandle<T> {
    pub(crate) fn new(inner: TaskHandle) -> Self {
        Self {
            inner,
            _task: PhantomData,
        }
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.inner.id()
    }

    /// The untyped handle.
    pub fn untyped(&self) -> &TaskHandle {
        &self.inner
    }

    /// Its current status.
    pub async fn status(&self) -> Result<Status> {
        self.inner.status().await
    }

    /// Waits for the typed output (see [`TaskHandle::result`]).
    pub async fn result(&self, timeout: Duration) -> Result<T::Output> {
        let value = self.inner.result(timeout).await?;
        Ok(serde_json::from_value(value)?)
    }

    /// Aborts the task.
    pub async fn abort(&self) -> Result<Task> {
        self.inner.abort().await
    }
}
