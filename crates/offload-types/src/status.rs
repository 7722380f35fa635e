//! [`Status`] and the one table of legal transitions between statuses.
//!
//! ```text
//!             ┌──────────── abort ───────────────────────────────┐
//! enqueue ─▶ scheduled ─(run_at reached)─▶ pending ─(claimed)─▶ running ─▶ success
//!    │          ▲                             ▲                   │  ├──▶ failed
//!    └─▶ blocked ─(all dependencies succeeded)┘                   │  └──▶ aborted
//!                           └─(retry with back-off)───────────────┘
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a task is in its lifecycle.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for its `run_at` time (a delayed task or a retry's back-off).
    Scheduled,
    /// Waiting for the tasks it depends on.
    Blocked,
    /// Ready to run; the next free worker takes it.
    Pending,
    /// Leased to a worker, running now.
    Running,
    /// Finished with an output. Terminal.
    Success,
    /// Attempts exhausted or a non-retryable error. Terminal.
    Failed,
    /// Stopped on request, or because a dependency failed. Terminal.
    Aborted,
}

/// A string is not a status name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown status {0:?}: expected one of scheduled, blocked, pending, running, success, failed, aborted"
)]
pub struct StatusParseError(pub String);

impl Status {
    /// Every status, in lifecycle order.
    pub const ALL: [Status; 7] = [
        Status::Scheduled,
        Status::Blocked,
        Status::Pending,
        Status::Running,
        Status::Success,
        Status::Failed,
        Status::Aborted,
    ];

    /// The statuses a task can start in at enqueue.
    pub const INITIAL: [Status; 3] = [Status::Scheduled, Status::Blocked, Status::Pending];

    /// The name used in the API, the CLI and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Scheduled => "scheduled",
            Status::Blocked => "blocked",
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Success => "success",
            Status::Failed => "failed",
            Status::Aborted => "aborted",
        }
    }

    /// `success`, `failed` and `aborted`: nothing more happens without an operator.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Success | Status::Failed | Status::Aborted)
    }

    /// Waiting to run: not started and not finished.
    pub fn is_waiting(self) -> bool {
        matches!(self, Status::Scheduled | Status::Blocked | Status::Pending)
    }

    /// Whether the lifecycle allows `self → to`. Every store checks its
    /// writes against this table; nothing else decides it.
    pub fn can_become(self, to: Status) -> bool {
        use Status::*;
        matches!(
            (self, to),
            // run_at reached / moved; dependencies done; abort of waiting work
            (Scheduled, Pending | Aborted)
                // dependencies met: ready now, or at a later run_at
                | (Blocked, Pending | Scheduled | Aborted)
                | (Pending, Running | Scheduled | Aborted)
                // an attempt ends: done, out of attempts, stopped, back-off
                // (scheduled), lease rescued or released at shutdown (pending)
                | (Running, Success | Failed | Aborted | Scheduled | Pending)
                // retried by hand (blocked again while a dependency is unmet)
                | (Failed | Aborted, Pending | Blocked)
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = StatusParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == wanted)
            .ok_or_else(|| StatusParseError(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn status() -> impl Strategy<Value = Status> {
        proptest::sample::select(Status::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn names_round_trip(s in status()) {
            prop_assert_eq!(s.as_str().parse::<Status>().unwrap(), s);
        }

        #[test]
        fn terminal_states_only_leave_by_manual_retry(from in status(), to in status()) {
            if from.is_terminal() && from.can_become(to) {
                prop_assert!(matches!(to, Status::Pending | Status::Blocked));
                prop_assert_ne!(from, Status::Success);
            }
        }

        #[test]
        fn only_running_finishes(from in status(), to in status()) {
            if matches!(to, Status::Success | Status::Failed) && from.can_become(to) {
                prop_assert_eq!(from, Status::Running);
            }
        }

        #[test]
        fn only_retried_tasks_become_blocked_again(from in status()) {
            if from.can_become(Status::Blocked) {
                prop_assert!(matches!(from, Status::Failed | Status::Aborted));
            }
        }
    }

    #[test]
    fn no_self_transitions() {
        for s in Status::ALL {
            assert!(!s.can_become(s), "{s} -> {s}");
        }
    }
}
