//! [`Progress`]: how far a running task has come.

use serde::{Deserialize, Serialize};

/// A running task's progress, written by its runner.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Progress {
    /// 0 to 100.
    pub percent: u8,
    /// What the task is doing now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Anything else the runner wants to show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl Progress {
    /// Progress at `percent` (clamped to 100) with an optional message.
    pub fn new(percent: u8, message: Option<String>) -> Self {
        Self {
            percent: percent.min(100),
            message,
            data: None,
        }
    }
}
