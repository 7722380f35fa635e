//! Cron schedules as stored, and the params of their store methods. A
//! schedule fires at most once per tick however many schedulers run:
//! [`Store::schedule_fire`](crate::Store::schedule_fire) moves the stored
//! next tick with a compare-and-set and inserts the tick's task in the
//! same commit, so the (schedule, tick) pair is claimed once in the database.

use chrono::{DateTime, Utc};
use offload_types::{NewTask, Schedule, TaskId, ValidationError};
use serde::{Deserialize, Serialize};

/// A schedule with its state.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    /// The definition.
    #[serde(flatten)]
    pub schedule: Schedule,
    /// Paused schedules enqueue nothing.
    pub paused: bool,
    /// The next tick (`None`: the expression has no more).
    pub next_run_at: Option<DateTime<Utc>>,
    /// The last tick that enqueued a task.
    pub last_run_at: Option<DateTime<Utc>>,
    /// The task that tick enqueued.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub last_task_id: Option<TaskId>,
    /// When the schedule was first stored.
    pub created_at: DateTime<Utc>,
    /// Its last change (definition, pause, or a tick).
    pub updated_at: DateTime<Utc>,
}

/// Most run times [`ScheduleRecord::upcoming`] lists.
pub const MAX_UPCOMING: usize = 100;

impl ScheduleRecord {
    /// The next `n` (at most [`MAX_UPCOMING`]) run times, from the stored
    /// next tick on; none while paused.
    pub fn upcoming(&self, n: usize) -> Result<Vec<DateTime<Utc>>, ValidationError> {
        let Some(first) = self.next_run_at.filter(|_| !self.paused) else {
            return Ok(Vec::new());
        };
        let n = n.min(MAX_UPCOMING);
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut times = vec![first];
        times.extend(self.schedule.cron_schedule()?.upcoming(first, n - 1));
        Ok(times)
    }
}

/// Store a schedule, or replace the definition of the one with its name.
#[derive(Debug, Clone)]
pub struct SchedulePutParams {
    /// The definition (already validated).
    pub schedule: Schedule,
    /// The next tick, computed from `now`. Kept instead when a schedule
    /// with the name exists with the same `cron` and `time_zone`, so
    /// re-stating a schedule at every start never drops or repeats a tick.
    pub next_run_at: Option<DateTime<Utc>>,
    /// `Some`: pause or resume. `None`: a new schedule is active; an
    /// existing one keeps its state (an operator's pause survives a restart).
    pub paused: Option<bool>,
    /// Now.
    pub now: DateTime<Utc>,
}

/// Pause or resume a schedule.
#[derive(Debug, Clone)]
pub struct SchedulePauseParams {
    /// The schedule.
    pub name: String,
    /// `true` pauses, `false` resumes.
    pub paused: bool,
    /// On resume: the next tick from now (ticks of the pause are not run).
    /// Ignored on pause.
    pub next_run_at: Option<DateTime<Utc>>,
    /// Now.
    pub now: DateTime<Utc>,
}

/// Active schedules whose next tick has come, earliest first.
#[derive(Debug, Clone)]
pub struct ScheduleDueParams {
    /// Ticks at or before this are due.
    pub now: DateTime<Utc>,
    /// At most this many.
    pub limit: u32,
}

/// Handle one due tick of a schedule.
#[derive(Debug, Clone)]
pub struct ScheduleFireParams {
    /// The schedule.
    pub name: String,
    /// The stored next tick the caller saw: the call changes nothing
    /// unless it still is (and the schedule is active).
    pub expected: DateTime<Utc>,
    /// The next tick to store.
    pub next_run_at: Option<DateTime<Utc>>,
    /// The task of this tick (`None`: a skipped tick). Inserted in the
    /// same commit as the move, through the insert path of
    /// [`task_insert_many`](crate::Store::task_insert_many).
    pub task: Option<NewTask>,
    /// Now.
    pub now: DateTime<Utc>,
}

/// What [`Store::schedule_fire`](crate::Store::schedule_fire) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleFired {
    /// This call moved the schedule; the task (if any) was inserted.
    Fired {
        /// The tick's task.
        task: Option<TaskId>,
    },
    /// Another scheduler handled the tick first, or the schedule was
    /// paused, changed or deleted: nothing was written.
    Lost,
}
