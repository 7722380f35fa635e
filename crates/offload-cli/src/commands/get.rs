//! `offload get ID`: every field of one task, its error, progress, the
//! history of its attempts and, while it waits, what it waits for.

use std::fmt::Write as _;

use offload::{Attempt, LimitScope, Status, Task, TaskId};

use crate::commands::parse_id;
use crate::globals::Globals;
use crate::output::{self, Table};
use crate::tasks::Tasks;

/// Most unmet dependencies `get` names (the count covers the rest).
const MAX_NAMED: usize = 10;
/// Most dependencies `get` looks up to explain a blocked task.
const MAX_LOOKED_UP: usize = 100;

/// Arguments of `offload get`.
#[derive(Debug, clap::Args)]
pub(crate) struct GetArgs {
    /// The task id.
    id: String,
}

/// Runs `offload get`.
pub(crate) async fn run(args: GetArgs, globals: &Globals) -> anyhow::Result<()> {
    let id = parse_id(&args.id)?;
    let tasks = globals.tasks().await?;
    let (task, attempts) = tasks.get_with_attempts(id).await?;
    let waiting = waiting_for(&tasks, &task).await?;
    if globals.json {
        let mut value = serde_json::to_value(&task)?;
        if let Some(obj) = value.as_object_mut() {
            obj.insert("attempts".to_owned(), serde_json::to_value(&attempts)?);
            if let Some(w) = &waiting {
                obj.insert(
                    "waiting_for".to_owned(),
                    serde_json::Value::String(w.clone()),
                );
            }
        }
        return output::print_json(&value);
    }
    output::print(&describe(&task, &attempts, waiting))
}

/// Why a waiting task has not started, in one line (`None` once it has).
async fn waiting_for(tasks: &Tasks, task: &Task) -> anyhow::Result<Option<String>> {
    let now = chrono::Utc::now();
    Ok(match task.status {
        Status::Scheduled => Some(format!(
            "its start time, {} (in {})",
            output::time(task.run_at),
            output::age(now, task.run_at)
        )),
        Status::Pending => {
            let mut line = format!(
                "a free worker of queue {:?} (ready since {})",
                task.queue,
                output::time(task.run_at.max(task.created_at))
            );
            let limits: Vec<String> = tasks
                .limits()
                .await?
                .into_iter()
                .filter(|r| match r.limit.scope {
                    LimitScope::Name => r.limit.target == task.name,
                    LimitScope::Queue => r.limit.target == task.queue,
                })
                .map(|r| {
                    format!(
                        "{} {}: {}",
                        r.limit.scope.as_str(),
                        r.limit.target,
                        crate::commands::limits::describe(&r.limit)
                    )
                })
                .collect();
            if !limits.is_empty() {
                line.push_str(&format!(", within limits ({})", limits.join("; ")));
            }
            Some(line)
        }
        Status::Blocked => Some(blocked_on(tasks, task).await?),
        _ => None,
    })
}

/// The dependencies a blocked task still waits for.
async fn blocked_on(tasks: &Tasks, task: &Task) -> anyhow::Result<String> {
    let edges: Vec<(TaskId, bool)> = task
        .depends_on
        .iter()
        .map(|id| (*id, true))
        .chain(task.after.iter().map(|id| (*id, false)))
        .collect();
    let mut unmet = Vec::new();
    for (id, must_succeed) in edges.iter().take(MAX_LOOKED_UP) {
        let status = match tasks.get(*id).await {
            Ok(dep) => dep.status,
            // purged: it ended long ago
            Err(e) if matches!(e.downcast_ref(), Some(offload::Error::NotFound(_))) => continue,
            Err(e) => {
                unmet.push(format!("{id} (unknown: {e})"));
                continue;
            }
        };
        let met = if *must_succeed {
            status == Status::Success
        } else {
            status.is_terminal()
        };
        if !met {
            unmet.push(format!("{id} ({status})"));
        }
    }
    let total = edges.len();
    let looked = total.min(MAX_LOOKED_UP);
    let mut line = if looked < total {
        format!(
            "dependencies: {} of the first {looked} of {total} have not ended as needed",
            unmet.len()
        )
    } else {
        format!("dependencies: {} of {total} not yet met", unmet.len())
    };
    if !unmet.is_empty() {
        let shown: Vec<&str> = unmet.iter().take(MAX_NAMED).map(String::as_str).collect();
        line.push_str(": ");
        line.push_str(&shown.join(", "));
        if unmet.len() > MAX_NAMED {
            line.push_str(&format!(" and {} more", unmet.len() - MAX_NAMED));
        }
    }
    Ok(line)
}

/// The task as `key: value` lines, then its attempts as a table.
fn describe(task: &Task, attempts: &[Attempt], waiting: Option<String>) -> String {
    let now = chrono::Utc::now();
    let json = |v: &serde_json::Value| serde_json::to_string(v).unwrap_or_default();
    let mut rows: Vec<(&str, String)> = vec![
        ("id", task.id.to_string()),
        ("name", task.name.clone()),
        ("queue", task.queue.clone()),
        ("status", task.status.to_string()),
        ("attempt", output::attempts(task)),
        ("priority", task.priority.to_string()),
        ("input", json(&task.input)),
        (
            "output",
            task.output.as_ref().map(json).unwrap_or_else(|| "-".into()),
        ),
        (
            "error",
            task.error
                .as_ref()
                .map(|e| {
                    format!(
                        "{}: {} (attempt {}, {})",
                        e.kind,
                        one_line(&e.message),
                        e.attempt,
                        output::time(e.at)
                    )
                })
                .unwrap_or_else(|| "-".into()),
        ),
        ("progress", output::progress(task.progress.as_ref(), true)),
        ("run_at", output::time(task.run_at)),
        (
            "timeout",
            task.timeout
                .map(output::duration)
                .unwrap_or_else(|| "-".into()),
        ),
        (
            "tags",
            if task.tags.is_empty() {
                "-".into()
            } else {
                task.tags.join(", ")
            },
        ),
        ("metadata", json(&task.metadata)),
        (
            "created_at",
            format!(
                "{} ({} ago)",
                output::time(task.created_at),
                output::age(task.created_at, now)
            ),
        ),
        ("started_at", output::opt_time(task.started_at)),
        ("finished_at", output::opt_time(task.finished_at)),
        ("updated_at", output::time(task.updated_at)),
    ];
    let ids = |ids: &[TaskId]| {
        let shown: Vec<String> = ids.iter().take(MAX_NAMED).map(|i| i.to_string()).collect();
        match ids.len() {
            n if n > MAX_NAMED => format!("{} and {} more", shown.join(", "), n - MAX_NAMED),
            _ => shown.join(", "),
        }
    };
    if let Some(w) = waiting {
        rows.insert(4, ("waiting_for", w));
    }
    if !task.depends_on.is_empty() {
        rows.push(("depends_on", ids(&task.depends_on)));
    }
    if !task.after.is_empty() {
        rows.push(("after", ids(&task.after)));
    }
    if let Some(g) = task.group_id {
        rows.push(("group_id", g.to_string()));
    }
    if let Some(k) = &task.unique_key {
        rows.push(("unique_key", k.clone()));
    }
    if let Some(k) = &task.fairness_key {
        rows.push(("fairness_key", k.clone()));
    }
    if let Some(w) = &task.worker_id {
        rows.push(("worker_id", w.clone()));
    }
    if let Some(t) = task.lease_expires_at {
        rows.push(("lease_expires_at", output::time(t)));
    }
    if let Some(t) = task.abort_requested_at {
        rows.push(("abort_requested_at", output::time(t)));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut text = String::new();
    for (key, value) in rows {
        let _ = writeln!(text, "{key:<width$}  {value}");
    }
    if attempts.is_empty() {
        text.push_str("\nno attempts yet");
    } else {
        let mut t = Table::new(&[
            "ATTEMPT", "OUTCOME", "WORKER", "STARTED", "DURATION", "ERROR",
        ]);
        for a in attempts {
            let took = a
                .finished_at
                .map(|f| output::duration((f - a.started_at).to_std().unwrap_or_default()))
                .unwrap_or_else(|| "-".into());
            t.row(vec![
                a.attempt.to_string(),
                a.outcome.as_str().to_owned(),
                a.worker_id.clone(),
                output::time(a.started_at),
                took,
                a.error
                    .as_ref()
                    .map(|e| output::clip(&format!("{}: {}", e.kind, one_line(&e.message)), 80))
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
        text.push_str("\nattempts:\n");
        text.push_str(&t.render());
    }
    text
}

/// A multi-line message (e.g. a command's stderr) on one line.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}
