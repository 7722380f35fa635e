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
    /// Succeeded. Data: `{}` (the output is on the task). Like `task.failed`
    /// and `task.aborted`, it also carries `"webhook"`: the task's own
    /// webhook URL, when it has one (so the end of a task is delivered there
    /// even if the task is deleted first).
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

/// The `data` object of an event as the stores write it; absent fields
/// are left out. Built by [`EventData::created`], [`EventData::started`],
/// [`EventData::error`], [`finish_event`] and [`rescue_event`], so both
/// backends write the same shapes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize)]
pub struct EventData<'a> {
    /// `task.created`: the status the task starts in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'a str>,
    /// Why, when no error says it (`lease expired`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// The attempt's error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a offload_types::TaskErrorRecord>,
    /// When the task runs again (`task.retrying`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_at: Option<DateTime<Utc>>,
    /// `task.started`: the worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<&'a str>,
}

impl<'a> EventData<'a> {
    /// `task.created` of a task inserted as `status`.
    pub fn created(status: &'a str) -> Self {
        Self {
            status: Some(status),
            ..Self::default()
        }
    }

    /// `task.started` by `worker_id`.
    pub fn started(worker_id: &'a str) -> Self {
        Self {
            worker_id: Some(worker_id),
            ..Self::default()
        }
    }

    /// An event that carries only an error (`task.failed`, `task.aborted`).
    pub fn error(error: &'a offload_types::TaskErrorRecord) -> Self {
        Self {
            error: Some(error),
            ..Self::default()
        }
    }
}

/// The event a finish outcome writes (`None`: snooze and release write none).
pub fn finish_event(outcome: &crate::FinishOutcome) -> Option<(EventKind, EventData<'_>)> {
    use crate::FinishOutcome as F;
    match outcome {
        F::Success { .. } => Some((EventKind::Succeeded, EventData::default())),
        F::Retry { error, run_at } => Some((
            EventKind::Retrying,
            EventData {
                error: Some(error),
                run_at: Some(*run_at),
                ..EventData::default()
            },
        )),
        F::Fail { error } => Some((EventKind::Failed, EventData::error(error))),
        F::Abort { error } => Some((EventKind::Aborted, EventData::error(error))),
        F::Snooze { .. } | F::Release => None,
    }
}

/// The event a rescue writes: back to `pending` (`task.retrying`, due from
/// its `run_at`), or `failed` / `aborted` with the error the store recorded.
pub fn rescue_event(
    status: offload_types::Status,
    error: &offload_types::TaskErrorRecord,
    run_at: DateTime<Utc>,
) -> (EventKind, EventData<'_>) {
    use offload_types::Status as S;
    match status {
        S::Failed => (EventKind::Failed, EventData::error(error)),
        S::Aborted => (EventKind::Aborted, EventData::error(error)),
        _ => (
            EventKind::Retrying,
            EventData {
                reason: Some("lease expired"),
                run_at: Some(run_at),
                ..EventData::default()
            },
        ),
    }
}
