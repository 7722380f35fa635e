//! Rules every backend applies the same way, kept here once: the limit on
//! claim name filters, what each attempt outcome does to its task, and the
//! error records a store writes itself when it aborts a waiting task or
//! rescues an expired lease.

use chrono::{DateTime, Utc};
use offload_types::{AttemptOutcome, Status, TaskErrorRecord, TaskId, ValidationError};
use serde_json::Value;

use crate::{FinishOutcome, StoreError, StoreResult};

/// Most task names one claim (or `task_next_run_at`) may filter on.
pub const MAX_CLAIM_NAMES: usize = 1000;

/// Refuses a name filter longer than [`MAX_CLAIM_NAMES`].
pub fn check_claim_names(names: Option<&[String]>) -> StoreResult<()> {
    match names {
        Some(names) if names.len() > MAX_CLAIM_NAMES => {
            Err(StoreError::Invalid(ValidationError::new(
                "names",
                format!(
                    "at most {MAX_CLAIM_NAMES} task names per claim, got {}",
                    names.len()
                ),
            )))
        }
        _ => Ok(()),
    }
}

/// What ending an attempt with a [`FinishOutcome`] does, before a backend
/// encodes it: the task's new status and fields, and the attempt record's
/// outcome.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttemptEnd<'a> {
    /// The task's status from now on.
    pub status: Status,
    /// The task's new output (`None`: keep the old one).
    pub output: Option<&'a Value>,
    /// Whether the task's error is replaced by `error` (which may be
    /// `None`: a success clears it).
    pub set_error: bool,
    /// The error to store when `set_error`.
    pub error: Option<&'a TaskErrorRecord>,
    /// The task's new `run_at` (`None`: keep).
    pub run_at: Option<DateTime<Utc>>,
    /// The attempt is given back: it does not count toward `max_attempts`
    /// (snooze, release).
    pub uncount: bool,
    /// The outcome the attempt's history record gets.
    pub outcome: AttemptOutcome,
}

/// How `outcome` ends an attempt at `now` (a retry due by then is
/// `pending` at once, a later one `scheduled`).
pub fn attempt_end(outcome: &FinishOutcome, now: DateTime<Utc>) -> AttemptEnd<'_> {
    let base = AttemptEnd {
        status: Status::Success,
        output: None,
        set_error: false,
        error: None,
        run_at: None,
        uncount: false,
        outcome: AttemptOutcome::Success,
    };
    match outcome {
        FinishOutcome::Success { output } => AttemptEnd {
            output: Some(output),
            set_error: true,
            ..base
        },
        FinishOutcome::Retry { error, run_at } => AttemptEnd {
            status: if *run_at > now {
                Status::Scheduled
            } else {
                Status::Pending
            },
            set_error: true,
            error: Some(error),
            run_at: Some(*run_at),
            outcome: AttemptOutcome::Error,
            ..base
        },
        FinishOutcome::Fail { error } => AttemptEnd {
            status: Status::Failed,
            set_error: true,
            error: Some(error),
            outcome: AttemptOutcome::Error,
            ..base
        },
        FinishOutcome::Abort { error } => AttemptEnd {
            status: Status::Aborted,
            set_error: true,
            error: Some(error),
            outcome: AttemptOutcome::Aborted,
            ..base
        },
        FinishOutcome::Snooze { run_at } => AttemptEnd {
            status: Status::Scheduled,
            run_at: Some(*run_at),
            uncount: true,
            outcome: AttemptOutcome::Snoozed,
            ..base
        },
        FinishOutcome::Release => AttemptEnd {
            status: Status::Pending,
            uncount: true,
            outcome: AttemptOutcome::Released,
            ..base
        },
    }
}

/// The error a store records when it aborts a task that is not running.
pub fn abort_record(reason: Option<&str>, attempt: u32, at: DateTime<Utc>) -> TaskErrorRecord {
    record(
        "aborted",
        reason.unwrap_or("aborted on request"),
        attempt,
        at,
    )
}

/// What becomes of a task whose lease expired: `aborted` when an abort was
/// asked, `pending` with attempts left, else `failed`; with the error the
/// store records.
pub fn rescue_outcome(
    attempt: u32,
    max_attempts: u32,
    abort_requested: bool,
    at: DateTime<Utc>,
) -> (Status, TaskErrorRecord) {
    if abort_requested {
        (
            Status::Aborted,
            record(
                "aborted",
                "aborted on request; the worker stopped renewing its lease",
                attempt,
                at,
            ),
        )
    } else if attempt < max_attempts {
        (
            Status::Pending,
            record(
                "lease_expired",
                "the worker stopped renewing its lease; the task will run again",
                attempt,
                at,
            ),
        )
    } else {
        (
            Status::Failed,
            record(
                "lease_expired",
                "the worker stopped renewing its lease and no attempts are left",
                attempt,
                at,
            ),
        )
    }
}

/// The two kinds of dependency edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EdgeKind {
    /// `depends_on`: the dependency must succeed; its failure or abort
    /// aborts the dependent.
    Success,
    /// `after`: the dependency must end, whatever its outcome.
    End,
}

impl EdgeKind {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            EdgeKind::Success => "success",
            EdgeKind::End => "end",
        }
    }
    /// Reads the stored name back.
    pub fn parse(s: &str) -> Option<Self> {
        [EdgeKind::Success, EdgeKind::End]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// Checks one dependency of a task being enqueued: `Ok(true)` when it
/// still has to happen (the task starts `blocked`), `Ok(false)` when it is
/// met already, and an error naming `depends_on` when it never can be (a
/// `Success` dependency that failed or was aborted) or `status` is `None`
/// (no such task, and none earlier in the batch).
pub fn dependency_unmet(
    dep: TaskId,
    kind: EdgeKind,
    status: Option<Status>,
) -> Result<bool, ValidationError> {
    let field = match kind {
        EdgeKind::Success => "depends_on",
        EdgeKind::End => "after",
    };
    match (kind, status) {
        (_, None) => Err(ValidationError::new(
            field,
            format!("task {dep} does not exist (a dependency must be enqueued first)"),
        )),
        (EdgeKind::Success, Some(Status::Success)) => Ok(false),
        (EdgeKind::Success, Some(s)) if s.is_terminal() => Err(ValidationError::new(
            field,
            format!("task {dep} is {s} and can never succeed; retry it first"),
        )),
        (EdgeKind::End, Some(s)) => Ok(!s.is_terminal()),
        (EdgeKind::Success, Some(_)) => Ok(true),
    }
}

/// The error recorded on a task aborted because `dep`, which it depends
/// on, ended `dep_status` (`failed` or `aborted`), or was deleted (`None`).
pub fn dependency_record(
    dep: TaskId,
    dep_status: Option<Status>,
    attempt: u32,
    at: DateTime<Utc>,
) -> TaskErrorRecord {
    let message = match dep_status {
        Some(s) => format!("dependency {dep} ended {s}"),
        None => format!("dependency {dep} was deleted"),
    };
    record("dependency_failed", &message, attempt, at)
}

/// The status a task takes when its last dependency is met at `now`:
/// `scheduled` if its `run_at` is later, else `pending`.
pub fn unblocked_status(run_at: DateTime<Utc>, now: DateTime<Utc>) -> Status {
    if run_at > now {
        Status::Scheduled
    } else {
        Status::Pending
    }
}

fn record(kind: &str, message: &str, attempt: u32, at: DateTime<Utc>) -> TaskErrorRecord {
    TaskErrorRecord {
        kind: kind.to_owned(),
        message: message.to_owned(),
        attempt,
        at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rescue_outcomes_follow_attempts_and_abort_requests() {
        let now = Utc::now();
        assert_eq!(rescue_outcome(1, 3, false, now).0, Status::Pending);
        assert_eq!(rescue_outcome(3, 3, false, now).0, Status::Failed);
        let (status, error) = rescue_outcome(1, 3, true, now);
        assert_eq!(status, Status::Aborted);
        assert_eq!(error.kind, "aborted");
        assert_eq!(abort_record(None, 2, now).message, "aborted on request");
    }

    #[test]
    fn dependencies_are_met_unmet_or_impossible() {
        let id = TaskId::new();
        assert_eq!(
            dependency_unmet(id, EdgeKind::Success, Some(Status::Success)),
            Ok(false)
        );
        assert_eq!(
            dependency_unmet(id, EdgeKind::Success, Some(Status::Running)),
            Ok(true)
        );
        assert_eq!(
            dependency_unmet(id, EdgeKind::Success, Some(Status::Blocked)),
            Ok(true)
        );
        assert!(dependency_unmet(id, EdgeKind::Success, Some(Status::Failed)).is_err());
        assert!(dependency_unmet(id, EdgeKind::Success, None).is_err());
        assert_eq!(
            dependency_unmet(id, EdgeKind::End, Some(Status::Aborted)),
            Ok(false)
        );
        assert_eq!(
            dependency_unmet(id, EdgeKind::End, Some(Status::Pending)),
            Ok(true)
        );
        assert_eq!(EdgeKind::parse("end"), Some(EdgeKind::End));
        let r = dependency_record(id, Some(Status::Failed), 0, Utc::now());
        assert_eq!(r.kind, "dependency_failed");
        assert!(r.message.contains("ended failed"));
    }

    #[test]
    fn too_many_claim_names_are_refused() {
        let names: Vec<String> = (0..=MAX_CLAIM_NAMES).map(|i| i.to_string()).collect();
        assert!(check_claim_names(Some(&names)).is_err());
        assert!(check_claim_names(Some(&names[..MAX_CLAIM_NAMES])).is_ok());
        assert!(check_claim_names(None).is_ok());
    }
}
