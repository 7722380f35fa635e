//! One module per command. Each has an `XxxArgs` (clap) and an
//! `async fn run(args, globals)`; this module holds the small parsers they
//! share.

pub(crate) mod abort;
pub(crate) mod audit;
pub(crate) mod bench;
pub(crate) mod delete;
pub(crate) mod enqueue;
pub(crate) mod get;
pub(crate) mod groups;
pub(crate) mod limits;
pub(crate) mod list;
pub(crate) mod monitor;
pub(crate) mod purge;
pub(crate) mod result;
pub(crate) mod retry;
pub(crate) mod schedules;
pub(crate) mod serve;
pub(crate) mod store;
pub(crate) mod tokens;
pub(crate) mod watch;
pub(crate) mod webhooks;
pub(crate) mod worker;

use std::time::Duration;

use chrono::{DateTime, Utc};
use offload::{Status, TaskId};

use crate::failure::Failure;

/// Reads a task id given on the command line (exit code 2 when malformed).
pub(crate) fn parse_id(text: &str) -> anyhow::Result<TaskId> {
    text.parse::<TaskId>()
        .map_err(|e| Failure::usage(e.to_string()))
}

/// clap value parser for durations such as `30s`, `2m`, `1h 30m`.
pub(crate) fn duration_arg(text: &str) -> Result<Duration, String> {
    offload::parse_duration(text).map_err(|e| e.to_string())
}

/// clap value parser for a status name.
pub(crate) fn status_arg(text: &str) -> Result<Status, String> {
    text.parse::<Status>().map_err(|e| e.to_string())
}

/// clap value parser for an RFC 3339 time such as `2025-01-31T09:00:00Z`.
pub(crate) fn time_arg(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{text:?} is not an RFC 3339 time such as 2025-01-31T09:00:00Z ({e})"))
}

/// Reads a JSON argument, naming the flag when it is not JSON (exit code 2).
pub(crate) fn json_arg(flag: &str, text: &str) -> anyhow::Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| Failure::usage(format!("{flag} is not valid JSON: {e}")))
}

/// The line describing where a task stands, e.g. `running (attempt 1/3, 40%)`.
pub(crate) fn status_phrase(task: &offload::Task) -> String {
    let mut s = format!(
        "{} (attempt {}/{}",
        task.status, task.attempt, task.max_attempts
    );
    if let Some(p) = &task.progress
        && task.status == Status::Running
    {
        s.push_str(&format!(", {}%", p.percent));
    }
    s.push(')');
    s
}

/// Who the audit log names for actions taken by the CLI on the store itself.
pub(crate) const LOCAL_ACTOR: &str = "local";

/// Records an operator action of the CLI. The action already happened, so
/// a failure to record it is reported as a warning, not as the command's
/// failure.
pub(crate) async fn audit(client: &offload::Client, entry: offload::AuditEntry) {
    let action = entry.action.clone();
    if let Err(e) = client.audit(entry).await {
        crate::output::note(&format!(
            "warning: {action} was done but not written to the audit log: {e}"
        ));
    }
}
