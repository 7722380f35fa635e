//! Errors of the task model: [`TaskError`] (what a run returns),
//! [`TaskErrorRecord`] (what the store keeps) and [`ValidationError`] (bad
//! input at enqueue or update).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Why an attempt did not succeed. Retryable unless made with [`TaskError::fatal`].
///
/// ```
/// use offload_types::TaskError;
/// let e = TaskError::new("upstream returned 503");
/// assert!(e.retryable);
/// let e = TaskError::fatal("invalid email address").kind("validation");
/// assert!(!e.retryable);
/// assert_eq!(e.kind, "validation");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct TaskError {
    /// A short machine-readable class: `error`, `timeout`, `panic`, `lease_expired`, ...
    pub kind: String,
    /// What went wrong, for people.
    pub message: String,
    /// Whether another attempt may help.
    pub retryable: bool,
}

impl TaskError {
    /// A retryable error of kind `error`.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            kind: "error".to_owned(),
            message: message.into(),
            retryable: true,
        }
    }

    /// An error that no retry can fix: the task fails at once.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            ..Self::new(message)
        }
    }

    /// Sets the kind.
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = kind.into();
        self
    }

    /// The attempt ran past its time limit.
    pub fn timeout(limit: std::time::Duration) -> Self {
        Self::new(format!(
            "attempt exceeded its timeout of {}",
            crate::duration::format_duration(limit)
        ))
        .kind("timeout")
    }

    /// The runner panicked.
    pub fn panic(message: impl Into<String>) -> Self {
        Self::new(message).kind("panic")
    }

    /// The record the store keeps for attempt `attempt` at `at`.
    pub fn record(&self, attempt: u32, at: DateTime<Utc>) -> TaskErrorRecord {
        TaskErrorRecord {
            kind: self.kind.clone(),
            message: self.message.clone(),
            attempt,
            at,
        }
    }
}

impl From<std::io::Error> for TaskError {
    fn from(e: std::io::Error) -> Self {
        Self::new(e.to_string()).kind("io")
    }
}

impl From<serde_json::Error> for TaskError {
    fn from(e: serde_json::Error) -> Self {
        Self::fatal(e.to_string()).kind("serde")
    }
}

/// A stored error: `{kind, message, attempt, at}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskErrorRecord {
    /// See [`TaskError::kind`].
    pub kind: String,
    /// What went wrong.
    pub message: String,
    /// Which attempt (1-based) it ended.
    pub attempt: u32,
    /// When.
    pub at: DateTime<Utc>,
}

/// Input that breaks a rule of the task model. Names the field, the rule and
/// the value received.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {message}")]
pub struct ValidationError {
    /// The offending field, e.g. `name` or `max_attempts`.
    pub field: String,
    /// The rule and the value received.
    pub message: String,
}

impl ValidationError {
    /// A validation error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}
