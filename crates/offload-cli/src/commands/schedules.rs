//! `offload schedules add|list|pause|resume|delete`: cron schedules. Every
//! `offload worker` and `offload serve` runs a scheduler that enqueues
//! their ticks, each tick exactly once however many run.

use std::time::Duration;

use offload::{MissedTicks, Schedule, ScheduleRecord, TaskOptions};

use crate::commands::{duration_arg, json_arg};
use crate::failure::Failure;
use crate::globals::Globals;
use crate::output::{self, Table};

/// Shown under `offload schedules --help`.
pub(crate) const SCHEDULES_HELP: &str = "\
Examples:
  offload schedules add nightly-cleanup --cron '0 3 * * *' --time-zone Europe/Berlin --type cleanup
  offload schedules add heartbeat --cron '*/10 * * * * *' --type ping --data '{\"to\": \"ops\"}'
  offload schedules list --next 3
  offload schedules pause nightly-cleanup --reason 'migration tonight'

Cron: 5 fields (minute hour day-of-month month day-of-week), an optional leading seconds
field, or @hourly, @daily (@midnight), @weekly, @monthly, @yearly.";

/// Arguments of `offload schedules`.
#[derive(Debug, clap::Args)]
pub(crate) struct SchedulesArgs {
    #[command(subcommand)]
    command: SchedulesCommand,
}

#[derive(Debug, clap::Subcommand)]
enum SchedulesCommand {
    /// Store a schedule (or replace the definition of the one with this name).
    Add {
        /// The schedule's name.
        name: String,
        /// The cron expression.
        #[arg(long)]
        cron: String,
        /// The task to enqueue at every tick.
        #[arg(long = "type", visible_alias = "task", value_name = "NAME")]
        task: String,
        /// The task's input as JSON [default: null]
        #[arg(long, visible_alias = "input", value_name = "JSON")]
        data: Option<String>,
        /// IANA time zone the cron is read in.
        #[arg(long, default_value = "UTC")]
        time_zone: String,
        /// Ticks missed while no scheduler ran: skip or run_once.
        #[arg(long, default_value = "skip")]
        missed: MissedTicks,
        /// The task's queue.
        #[arg(long)]
        queue: Option<String>,
        /// The task's priority.
        #[arg(long, allow_negative_numbers = true)]
        priority: Option<i32>,
        /// The task's attempts.
        #[arg(long, value_name = "N")]
        max_attempts: Option<u32>,
        /// The task's per-attempt time limit.
        #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
        timeout: Option<Duration>,
        /// Store it paused.
        #[arg(long)]
        paused: bool,
    },
    /// Every schedule with its next run times.
    List {
        /// How many next run times to show.
        #[arg(long, default_value_t = 1, value_name = "N")]
        next: usize,
    },
    /// Pause a schedule: its ticks enqueue nothing until resumed.
    Pause {
        /// The schedule's name.
        name: String,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume a schedule from its next tick after now.
    Resume {
        /// The schedule's name.
        name: String,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Delete a schedule (the tasks it enqueued stay).
    Delete {
        /// The schedule's name.
        name: String,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
}

/// Runs `offload schedules`.
pub(crate) async fn run(args: SchedulesArgs, globals: &Globals) -> anyhow::Result<()> {
    match args.command {
        SchedulesCommand::Add {
            name,
            cron,
            task,
            data,
            time_zone,
            missed,
            queue,
            priority,
            max_attempts,
            timeout,
            paused,
        } => {
            let input = match data {
                Some(text) => json_arg("--data", &text)?,
                None => serde_json::Value::Null,
            };
            let mut options = TaskOptions::new();
            options.queue = queue;
            options.priority = priority;
            options.max_attempts = max_attempts;
            options.timeout = timeout;
            let schedule = Schedule::new(name, cron, task)
                .time_zone(time_zone)
                .input(input)
                .options(options)
                .missed(missed);
            // checked before the store is opened
            schedule
                .validate()
                .map_err(|e| Failure::usage(e.to_string()))?;
            let tasks = globals.tasks().await?;
            let record = tasks.put_schedule(schedule, paused.then_some(true)).await?;
            show(&[record], 1, globals.json)
        }
        SchedulesCommand::List { next } => {
            let records = globals.tasks().await?.schedules().await?;
            show(&records, next, globals.json)
        }
        SchedulesCommand::Pause { name, reason } => {
            let record = globals
                .tasks()
                .await?
                .pause_schedule(&name, true, reason)
                .await?;
            show(&[record], 1, globals.json)
        }
        SchedulesCommand::Resume { name, reason } => {
            let record = globals
                .tasks()
                .await?
                .pause_schedule(&name, false, reason)
                .await?;
            show(&[record], 1, globals.json)
        }
        SchedulesCommand::Delete { name, reason } => {
            globals
                .tasks()
                .await?
                .delete_schedule(&name, reason)
                .await?;
            if globals.json {
                output::print_json(&serde_json::json!({ "deleted": name }))
            } else {
                output::print(&format!("deleted schedule {name}"))
            }
        }
    }
}

/// Prints schedules as a table (or JSON with `upcoming` run times).
fn show(records: &[ScheduleRecord], next: usize, json: bool) -> anyhow::Result<()> {
    if json {
        let values = records
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r)?;
                if let Some(obj) = v.as_object_mut() {
                    obj.insert("upcoming".into(), serde_json::to_value(r.upcoming(next)?)?);
                }
                Ok(v)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        return output::print_json(&serde_json::json!({ "schedules": values }));
    }
    if records.is_empty() {
        return output::print("no schedules");
    }
    let now = chrono::Utc::now();
    let mut t = Table::new(&[
        "NAME",
        "CRON",
        "TIME ZONE",
        "TASK",
        "STATE",
        "NEXT RUN",
        "LAST RUN",
    ]);
    for r in records {
        let s = &r.schedule;
        let upcoming = r.upcoming(next.max(1))?;
        let next_runs = if upcoming.is_empty() {
            "-".to_owned()
        } else {
            let first = format!(
                "{} (in {})",
                output::time(upcoming[0]),
                output::age(now, upcoming[0])
            );
            std::iter::once(first)
                .chain(upcoming[1..].iter().map(|t| output::time(*t)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        t.row(vec![
            s.name.clone(),
            s.cron.clone(),
            s.time_zone.clone(),
            s.task.clone(),
            if r.paused { "paused" } else { "active" }.to_owned(),
            next_runs,
            output::opt_time(r.last_run_at),
        ]);
    }
    output::print(t.render().trim_end())
}
