//! [`Error`]: everything the library can answer with, one readable line each.

use std::time::Duration;

use offload_store::StoreError;
use offload_types::{Status, TaskErrorRecord, TaskId, ValidationError};

/// An error from the offload library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed or refused the call.
    #[error(transparent)]
    Store(StoreError),
    /// Input breaks a rule (names the field).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// No task has this id.
    #[error("task {0} not found")]
    NotFound(TaskId),
    /// A wait ran out of time.
    #[error("timed out after {}", humanize(*.0))]
    Timeout(Duration),
    /// The database URL names no backend this build has.
    #[error("{0}")]
    UnsupportedUrl(String),
    /// The task ended `failed`.
    #[error("task failed: {}: {}", .0.kind, .0.message)]
    TaskFailed(TaskErrorRecord),
    /// The task ended `aborted`.
    #[error("task aborted{}", .0.as_ref().map(|e| format!(": {}", e.message)).unwrap_or_default())]
    TaskAborted(Option<TaskErrorRecord>),
    /// A value could not be (de)serialized.
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The worker's lease on this attempt is gone (rescued elsewhere).
    #[error("the lease on task {0} was lost; another worker may run it")]
    LeaseLost(TaskId),
    /// The worker was configured wrongly.
    #[error("invalid worker configuration: {0}")]
    Config(String),
    /// A loop of the worker failed (a bug: it is logged with the details).
    #[error("worker failure: {0}")]
    Worker(String),
    /// A task reached a status that has no result.
    #[error("task {id} is {status}")]
    NoResult {
        /// The task.
        id: TaskId,
        /// Its status.
        status: Status,
    },
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => Error::NotFound(id),
            StoreError::Invalid(v) => Error::Invalid(v),
            other => Error::Store(other),
        }
    }
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

/// `Result` with an offload [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
