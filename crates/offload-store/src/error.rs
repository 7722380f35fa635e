//! [`StoreError`]: portable error kinds every backend maps its native errors
//! onto, so nothing above the store parses a database message.

use offload_types::{Status, TaskId, ValidationError};

/// What went wrong in a store call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No task has this id.
    #[error("task {0} not found")]
    NotFound(TaskId),
    /// The lifecycle does not allow this change from the task's status.
    #[error("task {id} is {from}; it cannot become {to}")]
    InvalidTransition {
        /// The task.
        id: TaskId,
        /// Its current status.
        from: Status,
        /// The status asked for.
        to: Status,
    },
    /// The request conflicts with the task's state (e.g. deleting a running task).
    #[error("{0}")]
    Conflict(String),
    /// The input breaks a rule.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// An enqueue would put more waiting tasks under one fairness key than
    /// a limit's `max_queued_per_key` allows; nothing was stored. Trying
    /// again once some have run may succeed.
    #[error("{0}")]
    QuotaExceeded(String),
    /// The store cannot be reached or is busy; retrying may help.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store's files or schema are not what offload expects.
    #[error("store is corrupt or not an offload store: {0}")]
    Corrupt(String),
    /// Any other backend error.
    #[error("store error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// Whether retrying the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// Wraps any backend error.
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

/// `Result` with a [`StoreError`].
pub type StoreResult<T> = Result<T, StoreError>;
