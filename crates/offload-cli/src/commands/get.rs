//! `offload get ID`: every field of one task, its error, progress and the
//! history of its attempts.

use std::fmt::Write as _;

use offload::{Attempt, Task};

use crate::commands::parse_id;
use crate::globals::Globals;
use crate::output::{self, Table};

/// Arguments of `offload get`.
#[derive(Debug, clap::Args)]
pub(crate) struct GetArgs {
    /// The task id.
    id: String,
}

/// Runs `offload get`.
pub(crate) async fn run(args: GetArgs, globals: &Globals) -> anyhow::Result<()> {
    let id = parse_id(&args.id)?;
    let (task, attempts) = globals.tasks().await?.get_with_attempts(id).await?;
    if globals.json {
        let mut value = serde_json::to_value(&task)?;
        if let Some(obj) = value.as_object_mut() {
            obj.insert("attempts".to_owned(), serde_json::to_value(&attempts)?);
        }
        return output::print_json(&value);
    }
    output::print(&describe(&task, &attempts))
}

/// The task as `key: value` lines, then its attempts as a table.
fn describe(task: &Task, attempts: &[Attempt]) -> String {
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
