//! `offload result ID [--wait 30s]`: print a task's output.

use std::time::Duration;

use offload::{Status, Task};

use crate::commands::{duration_arg, parse_id, status_phrase};
use crate::failure::{Failure, code};
use crate::globals::Globals;
use crate::output;
use crate::tasks::Tasks;

/// Shown under `offload result --help`.
pub(crate) const RESULT_HELP: &str = "\
Exit codes:
  0  the task succeeded; its output is printed
  1  the task failed or was aborted (the error is printed), or it does not exist
  2  malformed id
  3  the task has not finished and --wait was not given
  4  --wait ran out of time";

/// Arguments of `offload result`.
#[derive(Debug, clap::Args)]
pub(crate) struct ResultArgs {
    /// The task id.
    id: String,
    /// Wait for the task to finish, at most this long.
    #[arg(long, value_name = "DURATION", num_args = 0..=1, default_missing_value = "30s", value_parser = duration_arg)]
    wait: Option<Duration>,
}

/// Runs `offload result`.
pub(crate) async fn run(args: ResultArgs, globals: &Globals) -> anyhow::Result<()> {
    let id = parse_id(&args.id)?;
    let tasks = globals.tasks().await?;
    let task = match args.wait {
        Some(timeout) => wait_for(&tasks, id, timeout).await?,
        None => tasks.get(id).await?,
    };
    report(&task, globals.json)
}

/// Waits for a task to finish; a timeout is exit code 4 naming its status.
pub(crate) async fn wait_for(
    tasks: &Tasks,
    id: offload::TaskId,
    timeout: Duration,
) -> anyhow::Result<Task> {
    match tasks.wait(id, timeout).await {
        Ok(task) => Ok(task),
        Err(e) if matches!(e.downcast_ref(), Some(offload::Error::Timeout(_))) => {
            let status = match tasks.get(id).await {
                Ok(task) => status_phrase(&task),
                Err(_) => "unknown".to_owned(),
            };
            Err(Failure::with_code(
                code::TIMEOUT,
                format!(
                    "task {id} did not finish within {}; it is {status}",
                    output::duration(timeout)
                ),
            ))
        }
        Err(e) => Err(e),
    }
}

/// Prints the outcome of `task` and picks the exit code: output (0),
/// error (1), not finished (3). With `json`, stdout gets one object
/// `{id, status, output, error}` in every case.
pub(crate) fn report(task: &Task, json: bool) -> anyhow::Result<()> {
    if json {
        output::print_json(&serde_json::json!({
            "id": task.id,
            "status": task.status,
            "output": task.output,
            "error": task.error,
        }))?;
    }
    if let Some(e) = outcome_error(task) {
        return Err(e);
    }
    if !json {
        output::print_json_pretty(task.output.as_ref().unwrap_or(&serde_json::Value::Null))?;
    }
    Ok(())
}

/// How a failed or aborted task ended, e.g. `task ID failed after 3
/// attempt(s): timeout: ...`.
pub(crate) fn ended_message(task: &Task) -> String {
    let why = task
        .error
        .as_ref()
        .map(|e| format!(": {}: {}", e.kind, e.message))
        .unwrap_or_default();
    format!(
        "task {} {} after {} attempt(s){why}",
        task.id, task.status, task.attempt
    )
}

/// The error (and exit code) for a task that did not succeed: failed or
/// aborted (1), not finished (3). `None` for a success.
pub(crate) fn outcome_error(task: &Task) -> Option<anyhow::Error> {
    match task.status {
        Status::Success => None,
        Status::Failed | Status::Aborted => {
            Some(Failure::with_code(code::FAILED, ended_message(task)))
        }
        _ => Some(Failure::with_code(
            code::NOT_FINISHED,
            format!(
                "task {} has not finished: it is {} (use --wait to wait for it)",
                task.id,
                status_phrase(task)
            ),
        )),
    }
}
