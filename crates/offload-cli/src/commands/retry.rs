//! `offload retry ID`: run a failed or aborted task again, history kept.

use crate::commands::parse_id;
use crate::globals::Globals;
use crate::output;

/// Arguments of `offload retry`.
#[derive(Debug, clap::Args)]
pub(crate) struct RetryArgs {
    /// The task id.
    id: String,
    /// Why (kept in the audit log).
    #[arg(long)]
    reason: Option<String>,
}

/// Runs `offload retry`.
pub(crate) async fn run(args: RetryArgs, globals: &Globals) -> anyhow::Result<()> {
    let id = parse_id(&args.id)?;
    let task = globals.tasks().await?.retry(id, args.reason).await?;
    if globals.json {
        return output::print_json(&task);
    }
    output::print(&format!(
        "task {id} is {} again (attempts so far {}/{})",
        task.status, task.attempt, task.max_attempts
    ))
}
