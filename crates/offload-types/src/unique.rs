//! Unique and coalesced tasks: one `unique_key` with a [`UniquePolicy`],
//! and what an enqueue did about it ([`EnqueueOutcome`]).
//!
//! | mode | a task with the key exists and … | the new enqueue |
//! | --- | --- | --- |
//! | `reject` (default) | is waiting or running — or, with a `window`, was created less than `window` ago, whatever its status | returns that task (`existing`) |
//! | `replace` | is waiting | its input becomes the new input (`replaced`) |
//! | `debounce` | is waiting | its input becomes the new input and its start moves to `now + window`, never past `created_at + max_wait` (`debounced`) |
//! | `throttle` | is waiting | its input becomes the new input (`throttled`) |
//! | `throttle` | started (or was due) less than `window` ago | a new task is scheduled `window` after that start (`throttled`) |
//!
//! Otherwise the task is inserted (`created`); a new `debounce` task starts
//! `window` after its enqueue.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{MAX_DURATION, Status, TaskId, ValidationError};

/// Longest `unique_key` accepted.
pub const MAX_UNIQUE_KEY_LEN: usize = 255;

/// What happens when a task with the same `unique_key` exists.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UniqueMode {
    /// Keep the existing task; the enqueue returns it.
    #[default]
    Reject,
    /// The new input replaces the waiting task's input.
    Replace,
    /// Each enqueue pushes the waiting task's start back by `window`, up
    /// to `max_wait` after the first; it then runs once with the latest input.
    Debounce,
    /// At most one run per `window`; enqueues in between update the one
    /// waiting run.
    Throttle,
}

impl UniqueMode {
    /// The name used in the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            UniqueMode::Reject => "reject",
            UniqueMode::Replace => "replace",
            UniqueMode::Debounce => "debounce",
            UniqueMode::Throttle => "throttle",
        }
    }
}

impl std::str::FromStr for UniqueMode {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            UniqueMode::Reject,
            UniqueMode::Replace,
            UniqueMode::Debounce,
            UniqueMode::Throttle,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
        .ok_or_else(|| {
            ValidationError::new(
                "unique.mode",
                format!("unknown mode {s:?}: expected reject, replace, debounce or throttle"),
            )
        })
    }
}

/// How a task's `unique_key` is applied.
///
/// ```
/// use std::time::Duration;
/// use offload_types::{UniqueMode, UniquePolicy};
/// let p = UniquePolicy::debounce(Duration::from_secs(1)).max_wait(Duration::from_secs(5));
/// assert_eq!(p.mode, UniqueMode::Debounce);
/// assert!(p.validate().is_ok());
/// ```
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UniquePolicy {
    /// What to do on a conflict; default `reject`.
    #[serde(default)]
    pub mode: UniqueMode,
    /// `reject`: the key is held for this long after a task's creation,
    /// whatever its status (without it: while the task waits or runs).
    /// `debounce`: the quiet time before the run. `throttle`: the shortest
    /// time between two runs. Required by `debounce` and `throttle`.
    #[serde(
        default,
        with = "crate::duration::serde_duration",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "1s"))]
    pub window: Option<Duration>,
    /// `debounce` only: the run starts at most this long after the first
    /// enqueue, however many follow.
    #[serde(
        default,
        with = "crate::duration::serde_duration",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "5s"))]
    pub max_wait: Option<Duration>,
}

impl UniquePolicy {
    /// `reject` while a task with the key waits or runs.
    pub fn reject() -> Self {
        Self::default()
    }
    /// `replace` the waiting task's input.
    pub fn replace() -> Self {
        Self {
            mode: UniqueMode::Replace,
            ..Self::default()
        }
    }
    /// `debounce` with a quiet time of `window`.
    pub fn debounce(window: Duration) -> Self {
        Self {
            mode: UniqueMode::Debounce,
            window: Some(window),
            max_wait: None,
        }
    }
    /// `throttle` to one run per `window`.
    pub fn throttle(window: Duration) -> Self {
        Self {
            mode: UniqueMode::Throttle,
            window: Some(window),
            max_wait: None,
        }
    }
    /// Sets the window.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = Some(window);
        self
    }
    /// Sets `max_wait` (debounce).
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// Checks the combination of mode, window and max_wait.
    pub fn validate(&self) -> Result<(), ValidationError> {
        for (field, d) in [
            ("unique.window", self.window),
            ("unique.max_wait", self.max_wait),
        ] {
            if let Some(d) = d
                && (d.is_zero() || d > MAX_DURATION)
            {
                return Err(ValidationError::new(
                    field,
                    format!("must be longer than 0s and at most 100 years, got {d:?}"),
                ));
            }
        }
        match self.mode {
            UniqueMode::Debounce | UniqueMode::Throttle if self.window.is_none() => {
                Err(ValidationError::new(
                    "unique.window",
                    format!("mode {} needs a window", self.mode.as_str()),
                ))
            }
            UniqueMode::Replace if self.window.is_some() => Err(ValidationError::new(
                "unique.window",
                "mode replace takes no window",
            )),
            m if m != UniqueMode::Debounce && self.max_wait.is_some() => Err(ValidationError::new(
                "unique.max_wait",
                "only mode debounce takes max_wait",
            )),
            _ => match (self.window, self.max_wait) {
                (Some(w), Some(m)) if m < w => Err(ValidationError::new(
                    "unique.max_wait",
                    format!("must be at least the window ({w:?}), got {m:?}"),
                )),
                _ => Ok(()),
            },
        }
    }
}

/// Checks a unique key: 1 to [`MAX_UNIQUE_KEY_LEN`] characters, no control
/// characters.
pub fn check_unique_key(key: &str) -> Result<(), ValidationError> {
    if key.is_empty() || key.len() > MAX_UNIQUE_KEY_LEN || key.chars().any(char::is_control) {
        return Err(ValidationError::new(
            "unique_key",
            format!(
                "must be 1 to {MAX_UNIQUE_KEY_LEN} characters without control characters, got {} \
                 characters",
                key.len()
            ),
        ));
    }
    Ok(())
}

/// What an enqueue did.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnqueueOutcome {
    /// A new task was stored.
    Created,
    /// A task with the same `unique_key` exists; it was left as it is.
    Existing,
    /// The waiting task with the key got the new input (`replace`).
    Replaced,
    /// The waiting task with the key got the new input and a later start (`debounce`).
    Debounced,
    /// `throttle`: the waiting run got the new input, or a run was
    /// scheduled one window after the last.
    Throttled,
}

impl EnqueueOutcome {
    /// The name used in the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            EnqueueOutcome::Created => "created",
            EnqueueOutcome::Existing => "existing",
            EnqueueOutcome::Replaced => "replaced",
            EnqueueOutcome::Debounced => "debounced",
            EnqueueOutcome::Throttled => "throttled",
        }
    }
}

/// One enqueued task: its id (the existing task's id when the enqueue was
/// coalesced with it) and what happened.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Enqueued {
    /// The task that will do the work.
    pub id: TaskId,
    /// What the enqueue did.
    pub outcome: EnqueueOutcome,
}

impl Enqueued {
    /// A freshly stored task.
    pub fn created(id: TaskId) -> Self {
        Self {
            id,
            outcome: EnqueueOutcome::Created,
        }
    }
}

/// The task already holding a unique key, as far as [`unique_action`]
/// needs it: the newest task with the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UniqueHolder {
    /// Its id.
    pub id: TaskId,
    /// Its status.
    pub status: Status,
    /// When it was enqueued (debounce's `max_wait` counts from here).
    pub created_at: DateTime<Utc>,
    /// Its start time.
    pub run_at: DateTime<Utc>,
    /// When its last attempt started, if one did.
    pub started_at: Option<DateTime<Utc>>,
}

/// What a store does with a task that has a unique key, given the newest
/// task holding the key. Every backend applies this one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniqueAction {
    /// Insert the new task, starting at `run_at`.
    Insert {
        /// Its start time.
        run_at: DateTime<Utc>,
        /// `created`, or `throttled` when the start was pushed back.
        outcome: EnqueueOutcome,
    },
    /// Insert nothing; answer with the holder.
    Keep {
        /// The holder.
        id: TaskId,
    },
    /// Give the waiting holder the new input (and `run_at` when set).
    Update {
        /// The holder.
        id: TaskId,
        /// Its new start time, if it changes (the task becomes `scheduled`
        /// or `pending` to match, unless it is `blocked`).
        run_at: Option<DateTime<Utc>>,
        /// `replaced`, `debounced` or `throttled`.
        outcome: EnqueueOutcome,
    },
}

fn plus(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(t)
}

/// Decides what an enqueue at `now` of a task with `policy` and start time
/// `run_at` does when `holder` is the newest task with the same key.
pub fn unique_action(
    policy: &UniquePolicy,
    run_at: DateTime<Utc>,
    holder: Option<&UniqueHolder>,
    now: DateTime<Utc>,
) -> UniqueAction {
    let window = policy.window.unwrap_or_default();
    let insert = |run_at| UniqueAction::Insert {
        run_at,
        outcome: EnqueueOutcome::Created,
    };
    let Some(h) = holder else {
        return match policy.mode {
            UniqueMode::Debounce => insert(run_at.max(plus(now, window))),
            _ => insert(run_at),
        };
    };
    let waiting = h.status.is_waiting();
    match policy.mode {
        UniqueMode::Reject => {
            let held = match policy.window {
                Some(w) => plus(h.created_at, w) > now,
                None => !h.status.is_terminal(),
            };
            if held {
                UniqueAction::Keep { id: h.id }
            } else {
                insert(run_at)
            }
        }
        UniqueMode::Replace if waiting => UniqueAction::Update {
            id: h.id,
            run_at: None,
            outcome: EnqueueOutcome::Replaced,
        },
        UniqueMode::Debounce if waiting => {
            let mut at = run_at.max(plus(now, window));
            if let Some(m) = policy.max_wait {
                at = at.min(plus(h.created_at, m));
            }
            UniqueAction::Update {
                id: h.id,
                run_at: Some(at.max(now)),
                outcome: EnqueueOutcome::Debounced,
            }
        }
        UniqueMode::Throttle if waiting => UniqueAction::Update {
            id: h.id,
            run_at: None,
            outcome: EnqueueOutcome::Throttled,
        },
        UniqueMode::Throttle => {
            let next = plus(h.started_at.unwrap_or(h.run_at), window);
            if next > run_at {
                UniqueAction::Insert {
                    run_at: next,
                    outcome: EnqueueOutcome::Throttled,
                }
            } else {
                insert(run_at)
            }
        }
        UniqueMode::Debounce => insert(run_at.max(plus(now, window))),
        UniqueMode::Replace => insert(run_at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0)
            .single()
            .unwrap_or_default()
    }
    fn holder(status: Status, created: i64, run_at: i64, started: Option<i64>) -> UniqueHolder {
        UniqueHolder {
            id: TaskId::from_bytes([7; 16]),
            status,
            created_at: t(created),
            run_at: t(run_at),
            started_at: started.map(t),
        }
    }
    const S: Duration = Duration::from_secs(1);

    #[test]
    fn reject_keeps_an_active_holder_and_ignores_a_finished_one() {
        let p = UniquePolicy::reject();
        for s in [
            Status::Pending,
            Status::Scheduled,
            Status::Blocked,
            Status::Running,
        ] {
            let h = holder(s, 0, 0, None);
            assert_eq!(
                unique_action(&p, t(10), Some(&h), t(10)),
                UniqueAction::Keep { id: h.id }
            );
        }
        let done = holder(Status::Success, 0, 0, Some(0));
        assert!(matches!(
            unique_action(&p, t(10), Some(&done), t(10)),
            UniqueAction::Insert {
                outcome: EnqueueOutcome::Created,
                ..
            }
        ));
    }

    #[test]
    fn reject_with_a_window_holds_the_key_after_the_task_ended() {
        let p = UniquePolicy::reject().window(60 * S);
        let done = holder(Status::Success, 0, 0, Some(0));
        assert!(matches!(
            unique_action(&p, t(30), Some(&done), t(30)),
            UniqueAction::Keep { .. }
        ));
        assert!(matches!(
            unique_action(&p, t(61), Some(&done), t(61)),
            UniqueAction::Insert { .. }
        ));
    }

    #[test]
    fn debounce_pushes_back_up_to_max_wait() {
        let p = UniquePolicy::debounce(S).max_wait(5 * S);
        assert_eq!(
            unique_action(&p, t(0), None, t(0)),
            UniqueAction::Insert {
                run_at: t(1),
                outcome: EnqueueOutcome::Created
            }
        );
        let h = holder(Status::Scheduled, 0, 1, None);
        assert_eq!(
            unique_action(&p, t(3), Some(&h), t(3)),
            UniqueAction::Update {
                id: h.id,
                run_at: Some(t(4)),
                outcome: EnqueueOutcome::Debounced
            }
        );
        assert_eq!(
            unique_action(&p, t(4), Some(&h), t(4)),
            UniqueAction::Update {
                id: h.id,
                run_at: Some(t(5)),
                outcome: EnqueueOutcome::Debounced
            }
        );
        // Running: a new debounced task.
        let r = holder(Status::Running, 0, 1, Some(1));
        assert!(matches!(
            unique_action(&p, t(6), Some(&r), t(6)),
            UniqueAction::Insert { .. }
        ));
    }

    #[test]
    fn throttle_spaces_runs_by_the_window() {
        let p = UniquePolicy::throttle(10 * S);
        let ran = holder(Status::Success, 0, 0, Some(2));
        assert_eq!(
            unique_action(&p, t(5), Some(&ran), t(5)),
            UniqueAction::Insert {
                run_at: t(12),
                outcome: EnqueueOutcome::Throttled
            }
        );
        assert!(matches!(
            unique_action(&p, t(13), Some(&ran), t(13)),
            UniqueAction::Insert {
                outcome: EnqueueOutcome::Created,
                ..
            }
        ));
        let waiting = holder(Status::Scheduled, 5, 12, None);
        assert_eq!(
            unique_action(&p, t(6), Some(&waiting), t(6)),
            UniqueAction::Update {
                id: waiting.id,
                run_at: None,
                outcome: EnqueueOutcome::Throttled
            }
        );
    }

    #[test]
    fn policies_are_checked() {
        assert!(
            UniquePolicy {
                mode: UniqueMode::Debounce,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
        assert!(UniquePolicy::replace().window(S).validate().is_err());
        assert!(UniquePolicy::throttle(S).max_wait(S).validate().is_err());
        assert!(
            UniquePolicy::debounce(5 * S)
                .max_wait(S)
                .validate()
                .is_err()
        );
        assert!(UniquePolicy::debounce(Duration::ZERO).validate().is_err());
        assert!(check_unique_key("").is_err());
        assert!(check_unique_key("a\nb").is_err());
        assert!(check_unique_key("import:42").is_ok());
    }
}
