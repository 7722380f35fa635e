//! `offload abort ID [--reason TEXT]`: stop a task. A waiting task is
//! aborted at once; a running one is asked to stop and its worker finishes it.

use offload::Status;

use crate::commands::parse_id;
use crate::globals::Globals;
use crate::output;

/// Arguments of `offload abort`.
#[derive(Debug, clap::Args)]
pub(crate) struct AbortArgs {
    /// The task id.
    id: String,
    /// Why (recorded as the task's error message and in the audit log).
    #[arg(long)]
    reason: Option<String>,
}

/// Runs `offload abort`.
pub(crate) async fn run(args: AbortArgs, globals: &Globals) -> anyhow::Result<()> {
    let id = parse_id(&args.id)?;
    let task = globals.tasks().await?.abort(id, args.reason).await?;
    if globals.json {
        return output::print_json(&task);
    }
    if task.status == Status::Aborted {
        output::print(&format!("task {id} aborted"))
    } else {
        output::print(&format!(
            "task {id} is {}: asked it to stop; it becomes aborted when its runner lets go",
            task.status
        ))
    }
}
