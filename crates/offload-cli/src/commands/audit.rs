//! `offload audit`: the log of operator actions (abort, retry, delete,
//! update, purge, token changes), newest first; through `--server` with an
//! admin token.

use offload::{AuditListParams, AuditRecord};

use crate::globals::Globals;
use crate::output;
use crate::tasks::Tasks;

/// Arguments of `offload audit`.
#[derive(Debug, clap::Args)]
pub(crate) struct AuditArgs {
    /// Only this action (repeat or comma list), e.g. task.abort.
    #[arg(long = "action", value_name = "ACTION", value_delimiter = ',')]
    actions: Vec<String>,
    /// Only records about this task or token id.
    #[arg(long)]
    target: Option<String>,
    /// How many records (1 to 1000).
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Older records: the cursor printed at the end of the previous page.
    #[arg(long)]
    before: Option<i64>,
}

/// Runs `offload audit`.
pub(crate) async fn run(args: AuditArgs, globals: &Globals) -> anyhow::Result<()> {
    let params = AuditListParams {
        before: args.before,
        actions: args.actions,
        target: args.target,
        limit: args.limit,
    };
    let page = match globals.tasks().await? {
        Tasks::Server(s) => s.audit_log(params).await?,
        Tasks::Store(client) => client.audit_log(params).await?,
    };
    if globals.json {
        return output::print_json(&serde_json::json!({
            "records": page.records,
            "next_cursor": page.next_cursor,
        }));
    }
    if page.records.is_empty() {
        return output::print("no audit records");
    }
    let mut table = output::Table::new(&["WHEN", "WHO", "ACTION", "TARGET", "REASON"]);
    for r in &page.records {
        table.row(row(r));
    }
    output::print(&table.render())?;
    if let Some(cursor) = page.next_cursor {
        output::note(&format!("older records: offload audit --before {cursor}"));
    }
    Ok(())
}

fn row(r: &AuditRecord) -> Vec<String> {
    vec![
        output::time(r.at),
        r.actor.clone(),
        r.action.clone(),
        r.target.clone().unwrap_or_default(),
        output::clip(r.reason.as_deref().unwrap_or(""), 60),
    ]
}
