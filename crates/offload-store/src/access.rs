//! Records of access control: API tokens (stored hashed) and the audit log
//! of operator actions.

use chrono::{DateTime, Utc};
use offload_types::Role;
use serde::{Deserialize, Serialize};

/// An API token as a store keeps it: never the secret, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// The public part of the token (`tok_…`), unique in the store.
    pub id: String,
    /// What the token may do.
    pub role: Role,
    /// A note for people (`ci`, `billing service`).
    pub label: Option<String>,
    /// SHA-256 of the secret part (32 bytes).
    pub secret_sha256: Vec<u8>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// One operator action to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditRecord {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Who: a token id, or `local` for the CLI on the store itself.
    pub actor: String,
    /// What: `task.abort`, `task.retry`, `task.delete`, `task.update`,
    /// `task.purge`, `token.create`, `token.delete`, `webhook.add`, …
    pub action: String,
    /// What it was done to: a task id, a token id, … (`None` for a purge).
    pub target: Option<String>,
    /// Why, as the operator said (`--reason`).
    pub reason: Option<String>,
    /// Anything else worth keeping (a purge's filter and count, an update's
    /// new values). A JSON object.
    pub details: serde_json::Value,
}

/// A recorded operator action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Its number: increasing, never reused.
    pub seq: i64,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// To what.
    pub target: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// More.
    pub details: serde_json::Value,
}

/// One page of the audit log, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditListParams {
    /// Only records with a `seq` below this (the `next_cursor` of the
    /// previous page).
    pub before: Option<i64>,
    /// Only these actions (empty: all).
    pub actions: Vec<String>,
    /// Only records about this target.
    pub target: Option<String>,
    /// Page size (1 to 1000).
    pub limit: u32,
}

/// A page of the audit log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditPage {
    /// The records, newest first.
    pub records: Vec<AuditRecord>,
    /// Pass it as `before` for the next page; `None` on the last page.
    pub next_cursor: Option<i64>,
}
