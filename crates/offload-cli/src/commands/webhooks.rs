//! `offload webhooks add|list|deliveries|delete|secret`: webhook
//! subscriptions and what was delivered. `offload serve` delivers them.
//! All but `secret` also work through `--server` (an admin token).

use offload::{AuditEntry, DeliveryListParams, EventKind};
use offload_server::webhooks::{NewWebhook, WebhookError};

use crate::commands::{LOCAL_ACTOR, audit, parse_id};
use crate::failure::{Failure, code};
use crate::globals::Globals;
use crate::output;
use crate::tasks::Tasks;
use serde_json::Value;

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

/// Runs `offload webhooks`: on the store itself, or through `--server`
/// (an admin token; the server checks targets with its own settings).
pub(crate) async fn run(args: WebhooksArgs, globals: &Globals) -> anyhow::Result<()> {
    let target = globals.tasks().await?;
    match args.command {
        WebhooksCommand::Add {
            url,
            events,
            names,
            queues,
            reason,
        } => {
            let made = match &target {
                Tasks::Server(s) => {
                    s.add_webhook(&url, &events, &names, &queues, reason)
                        .await?
                }
                Tasks::Store(client) => {
                    let settings = globals.config.webhooks.settings()?;
                    let made = offload_server::webhooks::add(
                        client,
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
                        client,
                        AuditEntry::new(LOCAL_ACTOR, "webhook.add")
                            .target(made.id.clone())
                            .reason(reason)
                            .details(info.clone()),
                    )
                    .await;
                    let mut value = info;
                    value["secret"] = made.secret.clone().into();
                    value
                }
            };
            if globals.json {
                return output::print_json(&made);
            }
            output::print(&format!("{}\n{}", text(&made["id"]), text(&made["secret"])))?;
            output::note(
                "the secret (whsec_...) signs every delivery (Standard Webhooks); it is shown only now",
            );
            Ok(())
        }
        WebhooksCommand::List => {
            let all = match &target {
                Tasks::Server(s) => s.webhooks().await?,
                Tasks::Store(client) => client
                    .store()
                    .webhook_list()
                    .await
                    .map_err(offload::Error::from)?
                    .iter()
                    .map(offload_server::webhooks::webhook_json)
                    .collect(),
            };
            if globals.json {
                return output::print_json(&all);
            }
            if all.is_empty() {
                return output::print("no webhooks");
            }
            let mut table =
                output::Table::new(&["ID", "URL", "EVENTS", "NAMES", "QUEUES", "CREATED"]);
            for w in &all {
                table.row(vec![
                    text(&w["id"]),
                    text(&w["url"]),
                    joined(&w["events"]),
                    joined(&w["names"]),
                    joined(&w["queues"]),
                    time(&w["created_at"]),
                ]);
            }
            output::print(&table.render())
        }
        WebhooksCommand::Deliveries { id, task, limit } => {
            let task_id = task.as_deref().map(parse_id).transpose()?;
            let list = match &target {
                Tasks::Server(s) => s.deliveries(id, task_id, limit).await?,
                Tasks::Store(client) => client
                    .store()
                    .webhook_delivery_list(&DeliveryListParams {
                        webhook_id: id,
                        task_id,
                        limit,
                    })
                    .await
                    .map_err(offload::Error::from)?
                    .iter()
                    .map(offload_server::webhooks::delivery_json)
                    .collect(),
            };
            if globals.json {
                return output::print_json(&list);
            }
            if list.is_empty() {
                return output::print("no deliveries");
            }
            let mut table = output::Table::new(&[
                "DELIVERY", "EVENT", "TASK", "STATUS", "ATTEMPT", "AT", "CODE", "LATENCY", "ERROR",
            ]);
            for d in &list {
                let head = [
                    text(&d["id"]),
                    text(&d["event"]),
                    text(&d["task_id"]),
                    text(&d["status"]),
                ];
                let attempts = d["attempts"].as_array().cloned().unwrap_or_default();
                if attempts.is_empty() {
                    let mut row = head.to_vec();
                    row.extend([
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        String::new(),
                    ]);
                    table.row(row);
                }
                for a in &attempts {
                    let mut row = head.to_vec();
                    row.extend([
                        text(&a["attempt"]),
                        time(&a["at"]),
                        a["status_code"]
                            .as_u64()
                            .map_or("-".into(), |c| c.to_string()),
                        format!("{}ms", a["latency_ms"].as_u64().unwrap_or(0)),
                        output::clip(a["error"].as_str().unwrap_or(""), 60),
                    ]);
                    table.row(row);
                }
            }
            output::print(&table.render())
        }
        WebhooksCommand::Delete { id, reason } => {
            let deleted = match &target {
                Tasks::Server(s) => s.delete_webhook(&id, reason).await?,
                Tasks::Store(client) => {
                    let deleted = client
                        .store()
                        .webhook_delete(&id)
                        .await
                        .map_err(offload::Error::from)?;
                    if deleted {
                        audit(
                            client,
                            AuditEntry::new(LOCAL_ACTOR, "webhook.delete")
                                .target(id.clone())
                                .reason(reason),
                        )
                        .await;
                    }
                    deleted
                }
            };
            if !deleted {
                return Err(Failure::with_code(
                    code::FAILED,
                    format!("webhook {id:?} not found (see `offload webhooks list`)"),
                ));
            }
            if globals.json {
                return output::print_json(&serde_json::json!({ "deleted": id }));
            }
            output::print(&format!("deleted webhook {id}"))
        }
        WebhooksCommand::Secret => {
            let Tasks::Store(client) = &target else {
                return Err(Failure::usage(
                    "`offload webhooks secret` reads the store itself and does not take --server",
                ));
            };
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

/// A JSON string as text (other values as JSON).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A JSON array of strings, comma-joined.
fn joined(v: &Value) -> String {
    v.as_array()
        .map(|a| a.iter().map(text).collect::<Vec<_>>().join(","))
        .unwrap_or_default()
}

/// An RFC 3339 time as the tables show times.
fn time(v: &Value) -> String {
    v.as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| output::time(t.with_timezone(&chrono::Utc)))
        .unwrap_or_else(|| text(v))
}
