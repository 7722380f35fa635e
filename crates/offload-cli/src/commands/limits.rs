//! `offload limits set|list|delete`: flow-control limits for a task name
//! or a queue, applied by every worker sharing the store — running at
//! once (in all and per input key), starts per period, and the quota of
//! waiting tasks per fairness key.

use offload::{Limit, LimitRecord, LimitScope, Rate};

use crate::failure::Failure;
use crate::globals::Globals;
use crate::output::{self, Table};

/// Shown under `offload limits --help`.
pub(crate) const LIMITS_HELP: &str = "\
Examples:
  offload limits set --name send_email --rate 10/s
  offload limits set --name import --key customer_id --key-concurrency 1 --concurrency 20
  offload limits set --queue reports --max-queued-per-key 1000
  offload limits list
  offload limits delete --name send_email

Tasks over a limit wait; they do not fail. Rates: 50/s, 10/m, 1000/h, 5/10s.
--key names an input field (customer_id) or a JSON pointer (/customer/id).";

/// Arguments of `offload limits`.
#[derive(Debug, clap::Args)]
pub(crate) struct LimitsArgs {
    #[command(subcommand)]
    command: LimitsCommand,
}

/// The task name or queue a limit applies to.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
struct Target {
    /// A task name.
    #[arg(long)]
    name: Option<String>,
    /// A queue.
    #[arg(long)]
    queue: Option<String>,
}

impl Target {
    fn split(self) -> (LimitScope, String) {
        match (self.name, self.queue) {
            (Some(n), _) => (LimitScope::Name, n),
            (None, Some(q)) => (LimitScope::Queue, q),
            (None, None) => (LimitScope::Name, String::new()),
        }
    }
}

#[derive(Debug, clap::Subcommand)]
enum LimitsCommand {
    /// Set the limit of a task name or queue (replacing the one it has).
    Set {
        #[command(flatten)]
        target: Target,
        /// At most N running at once, across all workers.
        #[arg(long, value_name = "N")]
        concurrency: Option<u32>,
        /// The input field (or JSON pointer) --key-concurrency counts by.
        #[arg(long, value_name = "FIELD", requires = "key_concurrency")]
        key: Option<String>,
        /// At most N running at once per value of --key.
        #[arg(long, value_name = "N", requires = "key")]
        key_concurrency: Option<u32>,
        /// At most N starts per period, across all workers: 50/s, 10/m, 5/10s.
        #[arg(long, value_name = "N/PERIOD", value_parser = rate_arg)]
        rate: Option<Rate>,
        /// At most N waiting tasks per fairness key; more are refused at enqueue.
        #[arg(long, value_name = "N")]
        max_queued_per_key: Option<u32>,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Every limit.
    List,
    /// Delete the limit of a task name or queue.
    Delete {
        #[command(flatten)]
        target: Target,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
}

fn rate_arg(text: &str) -> Result<Rate, String> {
    text.parse::<Rate>().map_err(|e| e.to_string())
}

/// Runs `offload limits`.
pub(crate) async fn run(args: LimitsArgs, globals: &Globals) -> anyhow::Result<()> {
    match args.command {
        LimitsCommand::Set {
            target,
            concurrency,
            key,
            key_concurrency,
            rate,
            max_queued_per_key,
            reason,
        } => {
            let (scope, target) = target.split();
            let limit = Limit {
                scope,
                target,
                concurrency,
                key,
                key_concurrency,
                rate,
                max_queued_per_key,
            };
            limit
                .validate()
                .map_err(|e| Failure::usage(e.to_string()))?;
            let record = globals.tasks().await?.set_limit(limit, reason).await?;
            show(&[record], globals.json)
        }
        LimitsCommand::List => show(&globals.tasks().await?.limits().await?, globals.json),
        LimitsCommand::Delete { target, reason } => {
            let (scope, target) = target.split();
            globals
                .tasks()
                .await?
                .delete_limit(scope, &target, reason)
                .await?;
            if globals.json {
                output::print_json(
                    &serde_json::json!({ "deleted": { "scope": scope, "target": target } }),
                )
            } else {
                output::print(&format!("deleted the limit of {} {target}", scope.as_str()))
            }
        }
    }
}

/// One line describing what a limit allows, e.g. `concurrency 4, 1 per customer_id, rate 50/s`.
pub(crate) fn describe(l: &Limit) -> String {
    let mut parts = Vec::new();
    if let Some(n) = l.concurrency {
        parts.push(format!("concurrency {n}"));
    }
    if let (Some(k), Some(n)) = (&l.key, l.key_concurrency) {
        parts.push(format!("{n} running per {k}"));
    }
    if let Some(r) = &l.rate {
        parts.push(format!("rate {r}"));
    }
    if let Some(n) = l.max_queued_per_key {
        parts.push(format!("{n} waiting per fairness key"));
    }
    parts.join(", ")
}

fn show(records: &[LimitRecord], json: bool) -> anyhow::Result<()> {
    if json {
        return output::print_json(&serde_json::json!({ "limits": records }));
    }
    if records.is_empty() {
        return output::print("no limits");
    }
    let mut t = Table::new(&["SCOPE", "TARGET", "LIMITS", "UPDATED"]);
    for r in records {
        t.row(vec![
            r.limit.scope.as_str().to_owned(),
            r.limit.target.clone(),
            describe(&r.limit),
            output::time(r.updated_at),
        ]);
    }
    output::print(t.render().trim_end())
}
