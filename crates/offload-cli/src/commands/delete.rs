//! `offload delete ID`: delete a task that is not running, with its history.

use crate::commands::parse_id;
use crate::globals::Globals;
use crate::output;

/// Arguments of `offload delete`.
#[derive(Debug, clap::Args)]
pub(crate) struct DeleteArgs {
    /// The task id.
    id: String,
    /// Why (kept in the audit log).
    #[arg(long)]
    reason: Option<String>,
}

/// Runs `offload delete`.
pub(crate) async fn run(args: DeleteArgs, globals: &Globals) -> anyhow::Result<()> {
    let id = parse_id(&args.id)?;
    globals.tasks().await?.delete(id, args.reason).await?;
    if globals.json {
        return output::print_json(&serde_json::json!({ "deleted": id }));
    }
    output::print(&format!("deleted task {id}"))
}
