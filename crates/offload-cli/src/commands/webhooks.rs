//! `offload webhooks add|list|deliveries|delete|secret`: webhook
//! subscriptions and what was delivered. `offload serve` delivers them.

use offload::{AuditEntry, DeliveryListParams, EventKind};
use offload_server::webhooks::{NewWebhook, WebhookError};

use crate::commands::{LOCAL_ACTOR, audit, parse_id};
use crate::failure::{Failure, code};
use crate::globals::Globals;
use crate::output;

/// Arguments of `offload webhooks`.
#[derive(Debug, clap::Args)]
pub(crate) struct WebhooksArgs {
    #[command(subcommand)]
    command: WebhooksCommand,
}

#[derive(Debug, clap::Subcommand)]
enum WebhooksCommand {
    /// Subscribe URL to task events; prints the id and the signing secret.
    Add {
        /// Where deliveries are POSTed (http:// or https://).
        url: String,
        /// Event types, comma-separated: task.succeeded, task.failed,
        /// task.aborted, task.retrying, task.progress, task.started, task.created.
        #[arg(long, value_delimiter = ',', required = true, value_parser = event_arg)]
        events: Vec<EventKind>,
        /// Only tasks with this name (repeatable).
        #[arg(long = "name", value_name = "NAME")]
        names: Vec<String>,
        /// Only tasks in this queue (repeatable).
        #[arg(long = "queue", value_name = "QUEUE")]
        queues: Vec<String>,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// List subscriptions (secrets are not shown).
    List,
    /// Deliveries with every attempt, newest first.
    Deliveries {
        /// Only those of this subscription.
        id: Option<String>,
        /// Only those about this task.
        #[arg(long)]
        task: Option<String>,
        /// How many (1 to 1000).
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Delete a subscription and its deliveries.
    Delete {
        /// The subscription id.
        id: String,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Print the secret that signs tasks' own webhooks (the `webhook` option).
    Secret,
}

fn event_arg(text: &str) -> Result<EventKind, String> {
    text.trim().parse::<EventKind>().map_err(|e| e.to_string())
}

/// Runs `offload webhooks`.
pub(crate) async fn run(args: WebhooksArgs, globals: &Globals) -> anyhow::Result<()> {
    globals.local_only("webhooks")?;
    let client = globals.client().await?;
    match args.command {
        WebhooksCommand::Add {
            url,
            events,
            names,
            queues,
            reason,
        } => {
            let settings = globals.config.webhooks.settings()?;
            let made = offload_server::webhooks::add(
                &client,
                NewWebhook {
                    url,
                    events,
                    names,
                    queues,
                },
                &settings,
            )
            .await
            .map_err(|e| match e {
                WebhookError::Invalid { field, message } => {
                    Failure::usage(format!("{field}: {message}"))
                }
                WebhookError::Store(e) => e.into(),
            })?;
            let info = offload_server::webhooks::webhook_json(&made);
            audit(
                &client,
                AuditEntry::new(LOCAL_ACTOR, "webhook.add")
                    .target(made.id.clone())
                    .reason(reason)
                    .details(info.clone()),
            )
            .await;
            if globals.json {
                let mut value = info;
                value["secret"] = made.secret.clone().into();
                return output::print_json(&value);
            }
            output::print(&format!("{}\n{}", made.id, made.secret))?;
            output::note(
                "the secret (whsec_...) signs every delivery (Standard Webhooks); it is shown only now",
            );
            Ok(())
        }
        WebhooksCommand::List => {
            let all = client
                .store()
                .webhook_list()
                .await
                .map_err(offload::Error::from)?;
            if globals.json {
                let shown: Vec<_> = all
                    .iter()
                    .map(offload_server::webhooks::webhook_json)
                    .collect();
                return output::print_json(&shown);
            }
            if all.is_empty() {
                return output::print("no webhooks");
            }
            let mut table =
                output::Table::new(&["ID", "URL", "EVENTS", "NAMES", "QUEUES", "CREATED"]);
            for w in &all {
                let events: Vec<&str> = w.events.iter().map(|e| e.as_str()).collect();
                table.row(vec![
                    w.id.clone(),
                    w.url.clone(),
                    events.join(","),
                    w.names.join(","),
                    w.queues.join(","),
                    output::time(w.created_at),
                ]);
            }
            output::print(&table.render())
        }
        WebhooksCommand::Deliveries { id, task, limit } => {
            let task_id = task.as_deref().map(parse_id).transpose()?;
            let list = client
                .store()
                .webhook_delivery_list(&DeliveryListParams {
                    webhook_id: id,
                    task_id,
                    limit,
                })
                .await
                .map_err(offload::Error::from)?;
            if globals.json {
                let shown: Vec<_> = list
                    .iter()
                    .map(offload_server::webhooks::delivery_json)
                    .collect();
                return output::print_json(&shown);
            }
            if list.is_empty() {
                return output::print("no deliveries");
            }
            let mut table = output::Table::new(&[
                "DELIVERY", "EVENT", "TASK", "STATUS", "ATTEMPT", "AT", "CODE", "LATENCY", "ERROR",
            ]);
            for d in &list {
                if d.attempts.is_empty() {
                    table.row(vec![
                        d.id.clone(),
                        d.event.to_string(),
                        d.task_id.to_string(),
                        d.status.as_str().to_owned(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        String::new(),
                    ]);
                }
                for a in &d.attempts {
                    table.row(vec![
                        d.id.clone(),
                        d.event.to_string(),
                        d.task_id.to_string(),
                        d.status.as_str().to_owned(),
                        a.attempt.to_string(),
                        output::time(a.at),
                        a.status_code.map_or("-".into(), |c| c.to_string()),
                        format!("{}ms", a.latency_ms),
                        output::clip(a.error.as_deref().unwrap_or(""), 60),
                    ]);
                }
            }
            output::print(&table.render())
        }
        WebhooksCommand::Delete { id, reason } => {
            let deleted = client
                .store()
                .webhook_delete(&id)
                .await
                .map_err(offload::Error::from)?;
            if !deleted {
                return Err(Failure::with_code(
                    code::FAILED,
                    format!("webhook {id:?} not found (see `offload webhooks list`)"),
                ));
            }
            audit(
                &client,
                AuditEntry::new(LOCAL_ACTOR, "webhook.delete")
                    .target(id.clone())
                    .reason(reason),
            )
            .await;
            if globals.json {
                return output::print_json(&serde_json::json!({ "deleted": id }));
            }
            output::print(&format!("deleted webhook {id}"))
        }
        WebhooksCommand::Secret => {
            let secret = client
                .store()
                .webhook_task_secret(&offload_server::webhooks::new_secret())
                .await
                .map_err(offload::Error::from)?;
            if globals.json {
                return output::print_json(&serde_json::json!({ "secret": secret }));
            }
            output::print(&secret)
        }
    }
}
