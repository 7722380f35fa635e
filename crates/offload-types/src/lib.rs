//! The task model of offload, shared by every other crate: [`Task`] and its
//! [`Status`] with the legal transitions between them, the options a task is
//! enqueued with ([`TaskOptions`], [`NewTask`]), progress, errors and the
//! retry policy. This crate does no I/O: no tokio, no SQL.
//!
//! ```
//! use offload_types::{NewTask, Status, TaskOptions};
//! use serde_json::json;
//!
//! let task = NewTask::new("send_email", json!({"to": "a@example.com"}))
//!     .options(TaskOptions::new().priority(5).queue("mail"));
//! assert_eq!(task.options.priority, Some(5));
//! assert!(Status::Running.can_become(Status::Success));
//! assert!(!Status::Success.can_become(Status::Running));
//! ```

mod cron;
mod defaults;
mod duration;
mod error;
mod id;
mod limits;
mod options;
mod progress;
mod retry;
mod role;
mod schedule;
mod status;
mod task;
mod unique;

pub use cron::{CronSchedule, MAX_CRON_LEN};
pub use defaults::*;
pub use duration::{DurationParseError, parse_duration};
pub use error::{TaskError, TaskErrorRecord, ValidationError};
pub use id::{IdParseError, LeaseToken, TaskId};
pub use limits::{
    Limit, LimitScope, MAX_FAIRNESS_KEY_LEN, MAX_LIMIT, MAX_LIMIT_KEY_LEN, MAX_RATE_PERIOD, Rate,
    check_fairness_key,
};
pub use options::{
    MAX_DEPENDENCIES, MAX_GROUP_SIZE, MAX_WEBHOOK_URL_LEN, NewTask, TaskOptions, check_webhook_url,
};
pub use progress::Progress;
pub use retry::RetryPolicy;
pub use role::{Permission, Role, RoleParseError};
pub use schedule::{MISSED_TICK_GRACE, MissedTicks, Schedule, TickPlan, plan_tick};
pub use status::{Status, StatusParseError};
pub use task::{Attempt, AttemptOutcome, Task};
pub use unique::{
    EnqueueOutcome, Enqueued, MAX_UNIQUE_KEY_LEN, UniqueAction, UniqueHolder, UniqueMode,
    UniquePolicy, check_unique_key, unique_action,
};

/// Serde helpers for durations written as `"30s"`, `"2m"`, `"1h 30m"` (or a
/// number of seconds) in JSON and TOML.
pub mod serde_duration {
    pub use crate::duration::serde_duration::*;
}
