//! Records of access control: API tokens (stored hashed) and the audit log
//! of operator actions.

use chrono::{DateTime, Utc};
use offload_types::{Role, ValidationError};
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

/// Refuses text longer than `max` characters, empty text unless
/// `allow_empty`, and text holding NUL (no store keeps it the same way).
fn check_text(
    field: &str,
    value: &str,
    max: usize,
    allow_empty: bool,
) -> Result<(), ValidationError> {
    let len = value.chars().count();
    if (!allow_empty && len == 0) || len > max {
        let least = if allow_empty { 0 } else { 1 };
        return Err(ValidationError::new(
            field,
            format!("must be {least} to {max} characters, got {len} characters"),
        ));
    }
    if value.contains('\0') {
        return Err(ValidationError::new(
            field,
            "must not contain NUL characters",
        ));
    }
    Ok(())
}

impl TokenRecord {
    /// Longest token id, in characters.
    pub const MAX_ID_LEN: usize = 64;
    /// Longest label, in characters.
    pub const MAX_LABEL_LEN: usize = 200;
    /// Length of `secret_sha256` in bytes.
    pub const SHA256_LEN: usize = 32;

    /// Checks what a store refuses to keep: an empty or over-long id
    /// ([`MAX_ID_LEN`](Self::MAX_ID_LEN)), an over-long label
    /// ([`MAX_LABEL_LEN`](Self::MAX_LABEL_LEN)), a digest that is not
    /// [`SHA256_LEN`](Self::SHA256_LEN) bytes, NUL characters.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_text("id", &self.id, Self::MAX_ID_LEN, false)?;
        if let Some(label) = &self.label {
            check_text("label", label, Self::MAX_LABEL_LEN, true)?;
        }
        if self.secret_sha256.len() != Self::SHA256_LEN {
            return Err(ValidationError::new(
                "secret_sha256",
                format!(
                    "must be a SHA-256 digest of {} bytes, got {} bytes",
                    Self::SHA256_LEN,
                    self.secret_sha256.len()
                ),
            ));
        }
        Ok(())
    }
}

impl NewAuditRecord {
    /// Longest `actor`, in characters.
    pub const MAX_ACTOR_LEN: usize = 100;
    /// Longest `action`, in characters.
    pub const MAX_ACTION_LEN: usize = 100;
    /// Longest `target`, in characters.
    pub const MAX_TARGET_LEN: usize = 255;
    /// Longest `reason`, in characters.
    pub const MAX_REASON_LEN: usize = 1000;

    /// Checks what a store refuses to keep: an empty or over-long `actor`
    /// or `action`, an over-long `target` or `reason`, NUL characters,
    /// `details` that are not a JSON object.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_text("actor", &self.actor, Self::MAX_ACTOR_LEN, false)?;
        check_text("action", &self.action, Self::MAX_ACTION_LEN, false)?;
        if let Some(target) = &self.target {
            check_text("target", target, Self::MAX_TARGET_LEN, true)?;
        }
        if let Some(reason) = &self.reason {
            check_text("reason", reason, Self::MAX_REASON_LEN, true)?;
        }
        if !self.details.is_object() {
            return Err(ValidationError::new(
                "details",
                format!("must be a JSON object, got {}", json_kind(&self.details)),
            ));
        }
        Ok(())
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

impl AuditListParams {
    /// Largest page.
    pub const MAX_LIMIT: u32 = 1000;

    /// Checks the page size (1 to [`MAX_LIMIT`](Self::MAX_LIMIT)) and
    /// that no filter value holds NUL.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.actions.iter().any(|a| a.contains('\0')) {
            return Err(ValidationError::new(
                "actions",
                "must not contain NUL characters",
            ));
        }
        if self.target.as_deref().is_some_and(|t| t.contains('\0')) {
            return Err(ValidationError::new(
                "target",
                "must not contain NUL characters",
            ));
        }
        if !(1..=Self::MAX_LIMIT).contains(&self.limit) {
            return Err(ValidationError::new(
                "limit",
                format!(
                    "must be between 1 and {}, got {}",
                    Self::MAX_LIMIT,
                    self.limit
                ),
            ));
        }
        Ok(())
    }
}
