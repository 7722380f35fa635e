//! The event log: what happened to tasks, in commit order, kept for a
//! while. Stores append events in the same transaction as the change they
//! describe, so a reader that follows the log with a cursor sees every
//! event exactly once and in order (`GET /v1/events`, webhooks).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use offload_types::TaskId;
use serde::{Deserialize, Serialize};

/// What happened to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    /// Enqueued. Data: `{"status": "pending" | "scheduled" | "blocked"}`.
    #[serde(rename = "task.created")]
    Created,
    /// An attempt started (claimed by a worker). Data: `{"worker_id"}`.
    #[serde(rename = "task.started")]
    Started,
    /// Progress reported. Data: the progress object.
    #[serde(rename = "task.progress")]
    Progress,
    /// Succeeded. Data: `{}` (the output is on the task).
    #[serde(rename = "task.succeeded")]
    Succeeded,
    /// Failed for good. Data: `{"error": {...}}`.
    #[serde(rename = "task.failed")]
    Failed,
    /// An attempt failed and the task will run again. Data:
    /// `{"error": {...}, "run_at": "..."}` (`error` is absent when a lease
    /// expired and was rescued: then `{"reason": "lease expired", "run_at"}`).
    #[serde(rename = "task.retrying")]
    Retrying,
    /// Aborted. Data: `{"error": {...}}` when a reason was given.
    #[serde(rename = "task.aborted")]
    Aborted,
}

/// A string is not an event type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown event type {0:?}: expected one of task.created, task.started, task.progress, \
     task.succeeded, task.failed, task.retrying, task.aborted"
)]
pub struct EventKindParseError(pub String);

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 7] = [
        EventKind::Created,
        EventKind::Started,
        EventKind::Progress,
        EventKind::Succeeded,
        EventKind::Failed,
        EventKind::Retrying,
        EventKind::Aborted,
    ];

    /// The name used in the API, webhooks and the database (`task.succeeded`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "task.created",
            EventKind::Started => "task.started",
            EventKind::Progress => "task.progress",
            EventKind::Succeeded => "task.succeeded",
            EventKind::Failed => "task.failed",
            EventKind::Retrying => "task.retrying",
            EventKind::Aborted => "task.aborted",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = EventKindParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| EventKindParseError(s.to_owned()))
    }
}

/// One event of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEvent {
    /// Its position in the log: opaque, pass it as
    /// [`EventListParams::after`] to read what came after it.
    pub cursor: String,
    /// When it happened (the `now` of the store call that wrote it).
    pub at: DateTime<Utc>,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// The task.
    pub task_id: TaskId,
    /// The task's name.
    pub name: String,
    /// The task's queue.
    pub queue: String,
    /// The task's attempt number at the time (0 before its first start).
    pub attempt: u32,
    /// Details; see [`EventKind`].
    pub data: serde_json::Value,
}

/// Which events to return. Empty vectors match anything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    /// Any of these kinds.
    pub kinds: Vec<EventKind>,
    /// Any of these task names.
    pub names: Vec<String>,
    /// Any of these queues.
    pub queues: Vec<String>,
    /// Any of these tasks.
    pub task_ids: Vec<TaskId>,
}

/// Read the log forward from a cursor.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventListParams {
    /// Only events after this cursor (`None`: from the oldest kept event).
    /// A cursor not written by this store is refused as invalid.
    pub after: Option<String>,
    /// Which events.
    pub filter: EventFilter,
    /// At most this many (1 to 1000).
    pub limit: u32,
}

/// Events in log order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventPage {
    /// The events, oldest first.
    pub events: Vec<TaskEvent>,
    /// Where to continue: past every event this call looked at, including
    /// those the filter left out. Equal to the `after` given when nothing
    /// new was there.
    pub cursor: Option<String>,
}

/// Largest [`EventListParams::limit`].
pub const MAX_EVENT_PAGE: u32 = 1000;
