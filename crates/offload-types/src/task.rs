//! [`Task`], the stored record of one unit of work, and [`Attempt`], one
//! entry of its history.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{LeaseToken, Progress, RetryPolicy, Status, TaskErrorRecord, TaskId};

/// One unit of background work, as stored. Field names are the public
/// vocabulary of the API, CLI and database.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// UUIDv7 assigned at enqueue.
    pub id: TaskId,
    /// The task type, which selects the runner.
    pub name: String,
    /// A named lane.
    pub queue: String,
    /// The task's arguments.
    pub input: serde_json::Value,
    /// Where it is in its lifecycle.
    pub status: Status,
    /// What a successful run returned.
    pub output: Option<serde_json::Value>,
    /// The last attempt's error; all of them are in the history.
    pub error: Option<TaskErrorRecord>,
    /// Progress reported by the current or last attempt.
    pub progress: Option<Progress>,
    /// Higher runs first.
    pub priority: i32,
    /// Attempts started so far.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Earliest start time.
    pub run_at: DateTime<Utc>,
    /// Per-attempt time limit; `None` is the runner's default (or none).
    #[serde(with = "crate::duration::serde_duration", default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "2m"))]
    pub timeout: Option<Duration>,
    /// Back-off between attempts; `None` is the runner's policy.
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    /// Free labels.
    pub tags: Vec<String>,
    /// A JSON object for the user.
    pub metadata: serde_json::Value,
    /// Where this task's end is POSTed (the `webhook` option).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Tasks that must succeed before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub depends_on: Vec<TaskId>,
    /// Tasks that must end, whatever their outcome, before this one
    /// starts (set on a group's callback: its members).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub after: Vec<TaskId>,
    /// The group this task belongs to (the id of the group's callback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub group_id: Option<TaskId>,
    /// Its de-duplication key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_key: Option<String>,
    /// The key claims are shared across, round-robin (e.g. a tenant id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fairness_key: Option<String>,
    /// Set when someone asked a running task to stop.
    pub abort_requested_at: Option<DateTime<Utc>>,
    /// Who holds the lease while running.
    pub worker_id: Option<String>,
    /// The live lease's token while running. It is the fencing credential
    /// of the attempt, so it is never serialized (not in `--json` output,
    /// logs or API answers); the worker holding the lease gets it from the claim.
    #[serde(skip_serializing, default)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub lease_token: Option<LeaseToken>,
    /// When the live lease lapses unless renewed.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Enqueue time.
    pub created_at: DateTime<Utc>,
    /// Start of the current or last attempt.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal status.
    pub finished_at: Option<DateTime<Utc>>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl Task {
    /// Whether another attempt is allowed after the current one.
    pub fn attempts_left(&self) -> bool {
        self.attempt < self.max_attempts
    }
}

/// How an attempt ended.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// Still running.
    Running,
    /// Returned an output.
    Success,
    /// Returned an error (the task may be retried).
    Error,
    /// Stopped on request.
    Aborted,
    /// Asked to run again later without using up an attempt.
    Snoozed,
    /// Handed back at shutdown; not counted.
    Released,
    /// The worker stopped renewing its lease and the task was rescued.
    LeaseExpired,
}

impl AttemptOutcome {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Running => "running",
            AttemptOutcome::Success => "success",
            AttemptOutcome::Error => "error",
            AttemptOutcome::Aborted => "aborted",
            AttemptOutcome::Snoozed => "snoozed",
            AttemptOutcome::Released => "released",
            AttemptOutcome::LeaseExpired => "lease_expired",
        }
    }

    /// Reads the stored name back.
    pub fn parse(s: &str) -> Option<Self> {
        use AttemptOutcome::*;
        [
            Running,
            Success,
            Error,
            Aborted,
            Snoozed,
            Released,
            LeaseExpired,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

/// One attempt in a task's history.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1-based attempt number.
    pub attempt: u32,
    /// The worker that ran it.
    pub worker_id: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended (`None` while running).
    pub finished_at: Option<DateTime<Utc>>,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// Its error, if any.
    pub error: Option<TaskErrorRecord>,
}
