//! [`Schedule`]: a cron schedule that enqueues a task at every tick, and
//! [`plan_tick`], the one rule for what a due tick does.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::options::check_name;
use crate::{CronSchedule, MAX_NAME_LEN, TaskOptions, ValidationError};

/// A tick found more than this late (the schedulers were all down) is
/// "missed": [`MissedTicks`] decides what happens to it.
pub const MISSED_TICK_GRACE: Duration = Duration::from_secs(60);

/// What a schedule does about ticks that passed while no scheduler ran.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissedTicks {
    /// Drop them; the next run is the next tick from now.
    #[default]
    Skip,
    /// Run once for all of them (at once), then follow the cron again.
    RunOnce,
}

impl MissedTicks {
    /// The name used in the API, the CLI and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            MissedTicks::Skip => "skip",
            MissedTicks::RunOnce => "run_once",
        }
    }
}

impl std::str::FromStr for MissedTicks {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "skip" => Ok(MissedTicks::Skip),
            "run_once" | "run-once" => Ok(MissedTicks::RunOnce),
            _ => Err(ValidationError::new(
                "missed",
                format!("unknown policy {s:?}: expected skip or run_once"),
            )),
        }
    }
}

fn utc() -> String {
    "UTC".to_owned()
}

/// A cron schedule: at every tick of `cron` in `time_zone`, one task
/// `task` with `input` and `options` is enqueued — exactly one, however
/// many schedulers run.
///
/// ```
/// use offload_types::Schedule;
/// use serde_json::json;
/// let s = Schedule::new("nightly-cleanup", "0 3 * * *", "cleanup")
///     .time_zone("Europe/Berlin")
///     .input(json!({"older_than": "30d"}));
/// assert!(s.validate().is_ok());
/// ```
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// The schedule's name, unique in the store (letters, digits, `_ - . : /`).
    pub name: String,
    /// A cron expression: 5 fields, an optional leading seconds field, or
    /// an alias such as `@hourly`.
    pub cron: String,
    /// The IANA zone the expression is read in; default `UTC`.
    #[serde(default = "utc")]
    pub time_zone: String,
    /// The task name to enqueue.
    pub task: String,
    /// The task's input; default `null`.
    #[serde(default)]
    pub input: serde_json::Value,
    /// The task's options (no `run_at`, `delay`, `depends_on` or `unique_key`).
    #[serde(default)]
    pub options: TaskOptions,
    /// Ticks missed while no scheduler ran: `skip` (default) or `run_once`.
    #[serde(default)]
    pub missed: MissedTicks,
}

impl Schedule {
    /// A schedule in UTC with input `null` and default options.
    pub fn new(name: impl Into<String>, cron: impl Into<String>, task: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            cron: cron.into(),
            time_zone: utc(),
            task: task.into(),
            input: serde_json::Value::Null,
            options: TaskOptions::default(),
            missed: MissedTicks::default(),
        }
    }
    /// Sets the time zone.
    pub fn time_zone(mut self, zone: impl Into<String>) -> Self {
        self.time_zone = zone.into();
        self
    }
    /// Sets the input.
    pub fn input(mut self, input: serde_json::Value) -> Self {
        self.input = input;
        self
    }
    /// Sets the task options.
    pub fn options(mut self, options: TaskOptions) -> Self {
        self.options = options;
        self
    }
    /// Sets the missed-ticks policy.
    pub fn missed(mut self, missed: MissedTicks) -> Self {
        self.missed = missed;
        self
    }

    /// The parsed cron expression, or the error naming `cron` or `time_zone`.
    pub fn cron_schedule(&self) -> Result<CronSchedule, ValidationError> {
        CronSchedule::parse(&self.cron, &self.time_zone)
    }

    /// Checks every rule; the error names the first field that breaks one.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_name("name", &self.name, MAX_NAME_LEN)?;
        self.cron_schedule()?;
        check_name("task", &self.task, MAX_NAME_LEN)?;
        let o = &self.options;
        for (field, set) in [
            ("options.run_at", o.run_at.is_some()),
            ("options.delay", o.delay.is_some()),
            ("options.depends_on", !o.depends_on.is_empty()),
            (
                "options.unique_key",
                o.unique_key.is_some() || o.unique.is_some(),
            ),
        ] {
            if set {
                return Err(ValidationError::new(
                    field,
                    "a schedule's task starts at its tick and cannot set this",
                ));
            }
        }
        o.validate()
            .map_err(|e| ValidationError::new(format!("options.{}", e.field), e.message))
    }
}

/// What a due tick does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickPlan {
    /// Enqueue one task for `tick`, then wait for `next`.
    Fire {
        /// The tick the task stands for.
        tick: DateTime<Utc>,
        /// The next tick (`None`: the expression has no more).
        next: Option<DateTime<Utc>>,
    },
    /// Enqueue nothing (missed ticks, policy `skip`); wait for `next`.
    Skip {
        /// The next tick.
        next: Option<DateTime<Utc>>,
    },
}

/// What a scheduler does at `now` with a schedule whose stored next tick
/// `due` has come: a tick at most [`MISSED_TICK_GRACE`] late fires;
/// later ones were missed and follow `missed`. The next tick is the first
/// after both `due` and `now`, so ticks never repeat and a burst of
/// missed ticks runs at most once.
pub fn plan_tick(
    cron: &CronSchedule,
    due: DateTime<Utc>,
    now: DateTime<Utc>,
    missed: MissedTicks,
) -> TickPlan {
    let next = cron.next_after(now.max(due));
    let grace = chrono::Duration::from_std(MISSED_TICK_GRACE).unwrap_or(chrono::Duration::MAX);
    let late = now.signed_duration_since(due);
    if late <= grace || missed == MissedTicks::RunOnce {
        TickPlan::Fire { tick: due, next }
    } else {
        TickPlan::Skip { next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, h, m, s)
            .single()
            .unwrap_or_default()
    }

    #[test]
    fn an_on_time_tick_fires_and_the_next_follows_it() {
        let cron = CronSchedule::parse("*/5 * * * *", "UTC").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            plan_tick(&cron, at(10, 0, 0), at(10, 0, 1), MissedTicks::Skip),
            TickPlan::Fire {
                tick: at(10, 0, 0),
                next: Some(at(10, 5, 0))
            }
        );
    }

    #[test]
    fn missed_ticks_are_skipped_or_run_once() {
        let cron = CronSchedule::parse("*/5 * * * *", "UTC").unwrap_or_else(|e| panic!("{e}"));
        // down from 10:00 to 10:32
        assert_eq!(
            plan_tick(&cron, at(10, 0, 0), at(10, 32, 0), MissedTicks::Skip),
            TickPlan::Skip {
                next: Some(at(10, 35, 0))
            }
        );
        assert_eq!(
            plan_tick(&cron, at(10, 0, 0), at(10, 32, 0), MissedTicks::RunOnce),
            TickPlan::Fire {
                tick: at(10, 0, 0),
                next: Some(at(10, 35, 0))
            }
        );
    }

    #[test]
    fn schedules_are_checked() {
        assert!(Schedule::new("a", "0 3 * * *", "t").validate().is_ok());
        let bad_cron = Schedule::new("a", "0 25 * * *", "t").validate();
        assert_eq!(bad_cron.map_err(|e| e.field), Err("cron".to_owned()));
        let bad_zone = Schedule::new("a", "@daily", "t")
            .time_zone("Mars/Base")
            .validate();
        assert_eq!(bad_zone.map_err(|e| e.field), Err("time_zone".to_owned()));
        let delayed = Schedule::new("a", "@daily", "t")
            .options(TaskOptions::new().delay(Duration::from_secs(1)))
            .validate();
        assert_eq!(
            delayed.map_err(|e| e.field),
            Err("options.delay".to_owned())
        );
        assert!(Schedule::new("a b", "@daily", "t").validate().is_err());
        assert_eq!("run_once".parse::<MissedTicks>(), Ok(MissedTicks::RunOnce));
        assert!("sometimes".parse::<MissedTicks>().is_err());
    }
}
