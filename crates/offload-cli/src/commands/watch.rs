//! `offload watch ID [--timeout DURATION]`: follows one task live — its
//! status, its progress (a bar on a terminal) and each attempt as it ends
//! — until it ends, and exits with a code that tells how it ended.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use offload::{Status, Task, TaskId};

use crate::commands::result::ended_message;
use crate::commands::{duration_arg, parse_id, status_phrase};
use crate::failure::{Failure, code};
use crate::globals::Globals;
use crate::output;
use crate::tasks::Tasks;

/// How often the task is read again when no change notification (or
/// event, through a server) comes.
const SAFETY_POLL: Duration = Duration::from_secs(1);

/// Shown under `offload watch --help`.
pub(crate) const WATCH_HELP: &str = "\
Exit codes:
  0  the task succeeded; its output is printed
  1  the task failed (its error is printed), or it does not exist
  2  malformed id
  4  --timeout ran out before the task ended
  5  the task was aborted";

/// Arguments of `offload watch`.
#[derive(Debug, clap::Args)]
pub(crate) struct WatchArgs {
    /// The task id.
    id: String,
    /// Give up after this long (exit code 4) [default: wait until it ends].
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    timeout: Option<Duration>,
}

/// What was last shown, so only changes are printed.
#[derive(Debug, Default, PartialEq)]
struct Seen {
    status: Option<Status>,
    attempt: u32,
    percent: Option<u8>,
    message: Option<String>,
    attempts_ended: usize,
}

/// Runs `offload watch`.
pub(crate) async fn run(args: WatchArgs, globals: &Globals) -> anyhow::Result<()> {
    let id = parse_id(&args.id)?;
    let tasks = globals.tasks().await?;
    let deadline = args.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut changes = tasks.changes();
    let bar = ProgressBar::new(100);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos:>3}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut seen = Seen::default();
    let task = loop {
        let task = tasks.get(id).await?;
        show(&tasks, &task, &mut seen, &bar, globals.json).await?;
        if task.status.is_terminal() {
            break task;
        }
        let mut wait = SAFETY_POLL;
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                bar.finish_and_clear();
                return Err(Failure::with_code(
                    code::TIMEOUT,
                    format!(
                        "task {id} did not end within {}; it is {}",
                        output::duration(args.timeout.unwrap_or_default()),
                        status_phrase(&task)
                    ),
                ));
            }
            wait = wait.min(left);
        }
        tasks.changed(&mut changes, id, wait).await;
    };
    bar.finish_and_clear();
    finish(&task, globals.json)
}

/// Prints what changed since `seen`.
async fn show(
    tasks: &Tasks,
    task: &Task,
    seen: &mut Seen,
    bar: &ProgressBar,
    json: bool,
) -> anyhow::Result<()> {
    let (percent, message) = match &task.progress {
        Some(p) => (Some(p.percent), p.message.clone()),
        None => (None, None),
    };
    if seen.attempt != task.attempt || seen.status != Some(task.status) {
        print_attempts(tasks, task.id, seen, bar, json).await?;
        let line = format!("{} {}", time(), status_phrase(task));
        if json {
            output::print_json(&serde_json::json!({
                "event": "status", "status": task.status, "attempt": task.attempt,
                "max_attempts": task.max_attempts,
            }))?;
        } else {
            bar.suspend(|| output::print(&line))?;
        }
    }
    if task.status == Status::Running
        && (seen.percent != percent || seen.message != message)
        && let Some(p) = percent
    {
        bar.set_position(u64::from(p));
        bar.set_message(message.clone().unwrap_or_default());
        let line = format!(
            "{} progress {p}%{}",
            time(),
            message
                .as_deref()
                .map(|m| format!(" {m}"))
                .unwrap_or_default()
        );
        if json {
            output::print_json(&serde_json::json!({
                "event": "progress", "percent": p, "message": message,
            }))?;
        } else {
            bar.suspend(|| output::print(&line))?;
        }
    }
    seen.status = Some(task.status);
    seen.attempt = task.attempt;
    seen.percent = percent;
    seen.message = message;
    Ok(())
}

/// Prints the attempts that ended since the last call.
async fn print_attempts(
    tasks: &Tasks,
    id: TaskId,
    seen: &mut Seen,
    bar: &ProgressBar,
    json: bool,
) -> anyhow::Result<()> {
    let attempts: Vec<_> = tasks
        .get_with_attempts(id)
        .await?
        .1
        .into_iter()
        .filter(|a| a.finished_at.is_some())
        .collect();
    for a in attempts.iter().skip(seen.attempts_ended) {
        if json {
            output::print_json(&serde_json::json!({ "event": "attempt", "attempt": a }))?;
        } else {
            let error = a
                .error
                .as_ref()
                .map(|e| format!(": {}: {}", e.kind, e.message))
                .unwrap_or_default();
            let outcome = serde_json::to_value(a.outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let line = format!("{} attempt {} ended: {outcome}{error}", time(), a.attempt);
            bar.suspend(|| output::print(&line))?;
        }
    }
    seen.attempts_ended = attempts.len();
    Ok(())
}

/// The last lines and the exit code: the output (0), the error of a
/// failed (1) or aborted (5) task.
fn finish(task: &Task, json: bool) -> anyhow::Result<()> {
    if json {
        output::print_json(&serde_json::json!({
            "event": "end", "id": task.id, "status": task.status,
            "output": task.output, "error": task.error,
        }))?;
    } else if task.status == Status::Success {
        output::print_json_pretty(task.output.as_ref().unwrap_or(&serde_json::Value::Null))?;
    }
    match task.status {
        Status::Success => Ok(()),
        Status::Aborted => Err(Failure::with_code(code::ABORTED, ended_message(task))),
        _ => Err(Failure::with_code(code::FAILED, ended_message(task))),
    }
}

fn time() -> String {
    chrono::Local::now().format("%H:%M:%S").to_string()
}
