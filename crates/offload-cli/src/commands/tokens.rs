//! `offload tokens create|list|delete`: API tokens for `offload serve`.
//!
//! Once the store holds a token, the HTTP API asks every request for one.
//! `create` prints the whole token once; the store keeps only a digest.
//! With `--server`, they work through the API (an admin token).

use offload::{AuditEntry, Role};

use crate::commands::{LOCAL_ACTOR, audit};
use crate::failure::Failure;
use crate::globals::Globals;
use crate::output;
use crate::tasks::Tasks;

/// Arguments of `offload tokens`.
#[derive(Debug, clap::Args)]
pub(crate) struct TokensArgs {
    #[command(subcommand)]
    command: TokensCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TokensCommand {
    /// Create a token and print it (shown only this once).
    Create {
        /// admin, producer, worker or read.
        #[arg(long, value_parser = role_arg)]
        role: Role,
        /// A note for people (`billing service`).
        #[arg(long)]
        label: Option<String>,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// List tokens (ids, roles, labels; never secrets).
    List,
    /// Delete a token: requests with it are refused from then on.
    Delete {
        /// The token id (as `offload tokens list` shows it).
        id: String,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
}

fn role_arg(text: &str) -> Result<Role, String> {
    text.parse::<Role>().map_err(|e| e.to_string())
}

/// Runs `offload tokens`: on the store itself, or through `--server`
/// (which then writes the audit log under the caller's token).
pub(crate) async fn run(args: TokensArgs, globals: &Globals) -> anyhow::Result<()> {
    let tasks = globals.tasks().await?;
    match args.command {
        TokensCommand::Create {
            role,
            label,
            reason,
        } => {
            let (info, token) = match &tasks {
                Tasks::Server(s) => s.create_token(role, label, reason).await?,
                Tasks::Store(client) => {
                    let created = client.create_token(role, label).await?;
                    audit(
                        client,
                        AuditEntry::new(LOCAL_ACTOR, "token.create")
                            .target(created.info.id.clone())
                            .reason(reason)
                            .details(serde_json::json!({
                                "role": created.info.role,
                                "label": created.info.label,
                            })),
                    )
                    .await;
                    (created.info, created.token)
                }
            };
            if globals.json {
                let mut value = serde_json::to_value(&info)?;
                value["token"] = token.into();
                return output::print_json(&value);
            }
            output::note(&format!(
                "created token {} with role {}; it is shown only now, keep it secret:",
                info.id, info.role
            ));
            output::print(&token)
        }
        TokensCommand::List => {
            let tokens = match &tasks {
                Tasks::Server(s) => s.tokens().await?,
                Tasks::Store(client) => client.tokens().await?,
            };
            if globals.json {
                return output::print_json(&tokens);
            }
            if tokens.is_empty() {
                return output::print(
                    "no tokens: the HTTP API is open (on loopback addresses only); \
                     create one with `offload tokens create --role admin`",
                );
            }
            let mut table = output::Table::new(&["ID", "ROLE", "LABEL", "CREATED"]);
            for t in &tokens {
                table.row(vec![
                    t.id.clone(),
                    t.role.to_string(),
                    t.label.clone().unwrap_or_default(),
                    output::time(t.created_at),
                ]);
            }
            output::print(&table.render())
        }
        TokensCommand::Delete { id, reason } => {
            let deleted = match &tasks {
                Tasks::Server(s) => s.delete_token(&id, reason).await?,
                Tasks::Store(client) => {
                    let deleted = client.delete_token(&id).await?;
                    if deleted {
                        audit(
                            client,
                            AuditEntry::new(LOCAL_ACTOR, "token.delete")
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
                    crate::failure::code::FAILED,
                    format!("token {id:?} not found (see `offload tokens list`)"),
                ));
            }
            if globals.json {
                return output::print_json(&serde_json::json!({ "deleted": id }));
            }
            output::print(&format!(
                "deleted token {id}; servers stop accepting it within 5 seconds"
            ))
        }
    }
}
