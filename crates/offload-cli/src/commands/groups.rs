//! `offload groups enqueue|get|abort`: groups (fan-out / fan-in) — members
//! and a callback task that runs once every member has ended and reads
//! their outcomes.
//!
//! A group file is one JSON object:
//! `{"members": [task, …], "callback": task}`, each task written like a
//! line of `offload enqueue --file` (`name`, `input` and options).

use std::path::PathBuf;

use anyhow::Context as _;
use offload::{GroupStatus, NewTask, Status};
use serde_json::Value;

use crate::commands::enqueue::parse_line;
use crate::commands::parse_id;
use crate::config::Config;
use crate::failure::Failure;
use crate::globals::Globals;
use crate::output::{self, Table};

/// Shown under `offload groups --help`.
pub(crate) const GROUPS_HELP: &str = "\
Examples:
  offload groups enqueue --file report.json
  offload groups get 0190a5c4-…
  offload groups abort 0190a5c4-… --reason \"wrong month\"

A group file:
  {\"members\": [{\"name\": \"report_part\", \"input\": {\"part\": 1}},
               {\"name\": \"report_part\", \"input\": {\"part\": 2}}],
   \"callback\": {\"name\": \"report_assemble\", \"input\": {\"report\": 7}}}
The callback runs once every member has ended (succeeded, failed or aborted).";

/// Arguments of `offload groups`.
#[derive(Debug, clap::Args)]
pub(crate) struct GroupsArgs {
    #[command(subcommand)]
    command: GroupsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum GroupsCommand {
    /// Enqueue a group from a JSON file (`-` reads stdin); prints its id.
    Enqueue {
        /// The group file.
        #[arg(long, short = 'f', value_name = "PATH")]
        file: PathBuf,
    },
    /// A group's progress: members by status and the callback's status.
    Get {
        /// The group id (its callback's id).
        id: String,
    },
    /// Abort a group: its callback and every member that has not ended.
    Abort {
        /// The group id.
        id: String,
        /// Why (recorded as the tasks' error and in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
}

/// Runs `offload groups`.
pub(crate) async fn run(args: GroupsArgs, globals: &Globals) -> anyhow::Result<()> {
    match args.command {
        GroupsCommand::Enqueue { file } => {
            let (members, callback) = read_group(&file, &globals.config)?;
            let tasks = globals.tasks().await?;
            let (id, member_ids) = tasks
                .trigger_group(members, callback)
                .await
                .context("cannot enqueue the group")?;
            if globals.json {
                output::print_json(&serde_json::json!({ "id": id, "members": member_ids }))
            } else {
                output::print(&id.to_string())
            }
        }
        GroupsCommand::Get { id } => {
            let id = parse_id(&id)?;
            let status = globals.tasks().await?.group(id).await?;
            show(&status, globals.json)
        }
        GroupsCommand::Abort { id, reason } => {
            let id = parse_id(&id)?;
            let status = globals.tasks().await?.abort_group(id, reason).await?;
            show(&status, globals.json)
        }
    }
}

/// Reads and checks a group file before anything is enqueued.
fn read_group(path: &PathBuf, config: &Config) -> anyhow::Result<(Vec<NewTask>, NewTask)> {
    let label = path.display().to_string();
    let text = if label == "-" {
        std::io::read_to_string(std::io::stdin().lock())
            .map_err(|e| Failure::usage(format!("cannot read stdin: {e}")))?
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| Failure::usage(format!("cannot read {label}: {e}")))?
    };
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| Failure::usage(format!("{label} is not valid JSON: {e}")))?;
    let Value::Object(mut fields) = value else {
        return Err(Failure::usage(format!(
            "{label}: a group is an object with \"members\" and \"callback\""
        )));
    };
    let task = |v: &Value, at: &str| -> anyhow::Result<NewTask> {
        parse_line(&v.to_string(), config)
            .map_err(|e| Failure::usage(format!("{label}: {at}: {e}")))
    };
    let members = match fields.remove("members") {
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| task(v, &format!("members[{i}]")))
            .collect::<anyhow::Result<Vec<_>>>()?,
        _ => {
            return Err(Failure::usage(format!(
                "{label}: \"members\" must be an array of tasks"
            )));
        }
    };
    let callback = match fields.remove("callback") {
        Some(v) => task(&v, "callback")?,
        None => return Err(Failure::usage(format!("{label}: \"callback\" is required"))),
    };
    if let Some(extra) = fields.keys().next() {
        return Err(Failure::usage(format!(
            "{label}: unknown field {extra:?}, expected \"members\" or \"callback\""
        )));
    }
    Ok((members, callback))
}

/// Prints a group's progress.
fn show(status: &GroupStatus, json: bool) -> anyhow::Result<()> {
    if json {
        return output::print_json(status);
    }
    let mut text = format!(
        "group {}: {} of {} members ended ({}%); callback {}\n",
        status.id, status.ended, status.size, status.percent, status.callback_status
    );
    let mut t = Table::new(&["STATUS", "MEMBERS"]);
    for s in Status::ALL {
        if let Some(n) = status.members.get(&s) {
            t.row(vec![s.to_string(), n.to_string()]);
        }
    }
    text.push_str(&t.render());
    output::print(text.trim_end())
}
