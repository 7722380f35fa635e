//! `offload purge`: delete finished tasks (`success`, `failed`, `aborted`)
//! by status, name, queue, tag and age.
//!
//! Hard to misuse: without any filter it refuses unless `--all` is given,
//! and it refuses statuses that are not terminal (waiting or running tasks
//! are aborted or deleted one by one instead).

use std::time::Duration;

use offload::{Status, TaskFilter};

use crate::commands::{duration_arg, status_arg};
use crate::failure::Failure;
use crate::globals::Globals;
use crate::output;

/// Arguments of `offload purge`.
#[derive(Debug, clap::Args)]
pub(crate) struct PurgeArgs {
    /// Only tasks with this terminal status (success, failed, aborted; repeat or comma list).
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
    /// Only tasks that finished longer ago than this, e.g. 7d.
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    older_than: Option<Duration>,
    /// Purge every finished task (required when no filter is given).
    #[arg(long, conflicts_with_all = ["statuses", "names", "queues", "tag", "older_than"])]
    all: bool,
    /// Why (kept in the audit log).
    #[arg(long)]
    reason: Option<String>,
}

/// Runs `offload purge`.
pub(crate) async fn run(args: PurgeArgs, globals: &Globals) -> anyhow::Result<()> {
    if let Some(s) = args.statuses.iter().find(|s| !s.is_terminal()) {
        return Err(Failure::usage(format!(
            "purge deletes finished tasks only (success, failed, aborted); `{s}` is not finished \
             (use `offload abort` or `offload delete` for such tasks)"
        )));
    }
    let no_filter = args.statuses.is_empty()
        && args.names.is_empty()
        && args.queues.is_empty()
        && args.tag.is_none()
        && args.older_than.is_none();
    if no_filter && !args.all {
        return Err(Failure::usage(
            "purge needs a filter (--status, --name, --queue, --tag, --older-than) \
             or --all to delete every finished task",
        ));
    }
    let finished_before = match args.older_than {
        None => None,
        Some(age) => {
            let age = chrono::Duration::from_std(age)
                .map_err(|_| Failure::usage("--older-than is too long"))?;
            Some(
                chrono::Utc::now()
                    .checked_sub_signed(age)
                    .ok_or_else(|| Failure::usage("--older-than is too long"))?,
            )
        }
    };
    let filter = TaskFilter {
        statuses: args.statuses,
        names: args.names,
        queues: args.queues,
        tag: args.tag,
        ..TaskFilter::default()
    };
    let purged = globals
        .tasks()
        .await?
        .purge(filter, finished_before, args.reason)
        .await?;
    if globals.json {
        return output::print_json(&serde_json::json!({ "purged": purged }));
    }
    output::print(&format!("purged {purged} tasks"))
}
