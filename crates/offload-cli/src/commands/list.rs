//! `offload list`: one page of tasks, newest first, as a table or JSON,
//! with the cursor for the next page.

use offload::{Status, Task, TaskFilter, TaskListParams};

use crate::commands::status_arg;
use crate::globals::Globals;
use crate::output::{self, Table};

/// Largest page `--limit` accepts.
const MAX_LIMIT: u32 = 10_000;

/// Arguments of `offload list`.
#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    /// Only tasks with this status (repeat, or a comma list: failed,aborted).
    #[arg(long = "status", value_name = "STATUS", value_delimiter = ',', value_parser = status_arg)]
    statuses: Vec<Status>,
    /// Only tasks with this name (repeatable).
    #[arg(long = "name", visible_alias = "type", value_name = "NAME")]
    names: Vec<String>,
    /// Only tasks in this queue (repeatable).
    #[arg(long = "queue", value_name = "QUEUE")]
    queues: Vec<String>,
    /// Only tasks carrying this tag.
    #[arg(long)]
    tag: Option<String>,
    /// Tasks per page.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_LIMIT)))]
    limit: u32,
    /// Continue after a previous page (the cursor it printed).
    #[arg(long)]
    cursor: Option<String>,
}

/// Runs `offload list`.
pub(crate) async fn run(args: ListArgs, globals: &Globals) -> anyhow::Result<()> {
    let filter = TaskFilter {
        statuses: args.statuses,
        names: args.names,
        queues: args.queues,
        tag: args.tag,
        ..TaskFilter::default()
    };
    let page = globals
        .tasks()
        .await?
        .list(TaskListParams {
            filter,
            cursor: args.cursor,
            limit: args.limit,
        })
        .await?;
    if globals.json {
        return output::print_json(&serde_json::json!({
            "tasks": page.tasks,
            "next_cursor": page.next_cursor,
        }));
    }
    if page.tasks.is_empty() {
        return output::print("no tasks");
    }
    output::print(&table(&page.tasks, chrono::Utc::now()))?;
    if let Some(cursor) = page.next_cursor {
        output::print(&format!(
            "more tasks: add --cursor {cursor} for the next page"
        ))?;
    }
    Ok(())
}

/// The task table: id, name, queue, status, attempt/max, priority,
/// progress, created, age.
pub(crate) fn table(tasks: &[Task], now: chrono::DateTime<chrono::Utc>) -> String {
    let mut t = Table::new(&[
        "ID", "NAME", "QUEUE", "STATUS", "ATTEMPT", "PRIORITY", "PROGRESS", "CREATED", "AGE",
    ]);
    for task in tasks {
        t.row(vec![
            task.id.to_string(),
            task.name.clone(),
            task.queue.clone(),
            task.status.to_string(),
            output::attempts(task),
            task.priority.to_string(),
            output::progress(task.progress.as_ref(), false),
            output::time(task.created_at),
            output::age(task.created_at, now),
        ]);
    }
    t.render()
}
