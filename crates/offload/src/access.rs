//! API tokens and the audit log, on [`Client`].
//!
//! A token reads `ofl_<id>_<secret>`: the id is public (lists, the audit
//! log), the secret is 32 random bytes shown once at creation; the store
//! keeps only its SHA-256, and checks compare digests in constant time.

use chrono::{DateTime, Utc};
use offload_store::{AuditListParams, AuditPage, NewAuditRecord, TokenRecord};
use offload_types::{Role, ValidationError};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{Client, Result};

/// What every token starts with.
pub const TOKEN_PREFIX: &str = "ofl_";
/// Characters of a token id: lowercase letters and digits, no look-alikes.
const ID_LEN: usize = 12;
const ID_ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
/// Random bytes of a secret (64 hex digits).
const SECRET_BYTES: usize = 32;
/// Longest label.
pub const MAX_TOKEN_LABEL: usize = 200;

/// A token as lists show it: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// The public id (`k3j9x2m4p7q1`).
    pub id: String,
    /// What it may do.
    pub role: Role,
    /// A note for people.
    pub label: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

impl From<&TokenRecord> for TokenInfo {
    fn from(r: &TokenRecord) -> Self {
        Self {
            id: r.id.clone(),
            role: r.role,
            label: r.label.clone(),
            created_at: r.created_at,
        }
    }
}

/// A token just created: its info and the whole token, which is shown
/// once and cannot be read back. `Debug` hides the secret.
#[derive(Clone)]
pub struct CreatedToken {
    /// Its info.
    pub info: TokenInfo,
    /// The token to hand to the client (`ofl_<id>_<secret>`).
    pub token: String,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken")
            .field("info", &self.info)
            .field("token", &"ofl_…(hidden)")
            .finish()
    }
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Splits a presented token into id and secret; `None` if it is not shaped
/// like one.
fn split(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.strip_prefix(TOKEN_PREFIX)?.split_once('_')?;
    let id_ok = id.len() == ID_LEN && id.bytes().all(|b| ID_ALPHABET.contains(&b));
    let secret_ok =
        secret.len() == SECRET_BYTES * 2 && secret.bytes().all(|b| b.is_ascii_hexdigit());
    (id_ok && secret_ok).then_some((id, secret))
}

/// One operator action to write to the audit log with [`Client::audit`].
///
/// ```
/// use offload::AuditEntry;
/// let entry = AuditEntry::new("local", "task.abort")
///     .target("0192f1c4-…")
///     .reason(Some("customer asked".into()));
/// assert_eq!(entry.action, "task.abort");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// Who: a token id, or `local` for the CLI on the store itself.
    pub actor: String,
    /// What (`task.abort`, `token.create`, …).
    pub action: String,
    /// To what.
    pub target: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// More, as a JSON object.
    pub details: serde_json::Value,
}

impl AuditEntry {
    /// An entry with no target, reason or details.
    pub fn new(actor: impl Into<String>, action: impl Into<String>) -> Self {
        Self {
            actor: actor.into(),
            action: action.into(),
            target: None,
            reason: None,
            details: serde_json::Value::Object(Default::default()),
        }
    }

    /// A purge by `actor`: its filter, cut-off and how many tasks went.
    pub fn purge(
        actor: impl Into<String>,
        filter: &offload_store::TaskFilter,
        finished_before: Option<DateTime<Utc>>,
        purged: u64,
    ) -> Self {
        Self::new(actor, "task.purge").details(serde_json::json!({
            "statuses": filter.statuses,
            "names": filter.names,
            "queues": filter.queues,
            "tag": filter.tag,
            "finished_before": finished_before,
            "purged": purged,
        }))
    }

    /// What it was done to.
    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    /// Why (as the operator said).
    pub fn reason(mut self, reason: Option<String>) -> Self {
        self.reason = reason;
        self
    }

    /// More details (a JSON object).
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

impl Client {
    /// Creates an API token with `role`. The returned token is the only
    /// copy of its secret.
    ///
    /// ```no_run
    /// # async fn demo(client: offload::Client) -> offload::Result<()> {
    /// let created = client.create_token(offload::Role::Producer, Some("billing".into())).await?;
    /// println!("{}", created.token); // ofl_k3j9x2m4p7q1_5f0c…
    /// # Ok(()) }
    /// ```
    pub async fn create_token(&self, role: Role, label: Option<String>) -> Result<CreatedToken> {
        if let Some(l) = &label
            && l.chars().count() > MAX_TOKEN_LABEL
        {
            return Err(ValidationError::new(
                "label",
                format!("is longer than {MAX_TOKEN_LABEL} characters"),
            )
            .into());
        }
        let (id, secret) = {
            let mut rng = rand::rng();
            let id: String = (0..ID_LEN)
                .map(|_| char::from(ID_ALPHABET[rng.random_range(0..ID_ALPHABET.len())]))
                .collect();
            let secret: String = (0..SECRET_BYTES)
                .map(|_| format!("{:02x}", rng.random::<u8>()))
                .collect();
            (id, secret)
        };
        let record = TokenRecord {
            id: id.clone(),
            role,
            label,
            secret_sha256: digest(&secret).to_vec(),
            created_at: self.now(),
        };
        self.store().token_insert(&record).await?;
        Ok(CreatedToken {
            info: TokenInfo::from(&record),
            token: format!("{TOKEN_PREFIX}{id}_{secret}"),
        })
    }

    /// Every token, oldest first (never their secrets).
    pub async fn tokens(&self) -> Result<Vec<TokenInfo>> {
        let records = self.store().token_list().await?;
        Ok(records.iter().map(TokenInfo::from).collect())
    }

    /// Deletes a token; it stops working at once for this store (servers
    /// that cached it stop accepting it within their cache time). `false`
    /// if there was none with that id.
    pub async fn delete_token(&self, id: &str) -> Result<bool> {
        Ok(self.store().token_delete(id).await?)
    }

    /// The token `presented` is, if it is one of this store's: the secret's
    /// digest is compared in constant time, and an unknown id costs the
    /// same digest and comparison as a known one.
    pub async fn authenticate(&self, presented: &str) -> Result<Option<TokenInfo>> {
        let Some((id, secret)) = split(presented) else {
            return Ok(None);
        };
        let record = self.store().token_get(id).await?;
        Ok(verify(record.as_ref(), secret)
            .then(|| record.as_ref().map(TokenInfo::from))
            .flatten())
    }

    /// Appends an operator action to the audit log.
    pub async fn audit(&self, entry: AuditEntry) -> Result<i64> {
        Ok(self
            .store()
            .audit_insert(&NewAuditRecord {
                at: self.now(),
                actor: entry.actor,
                action: entry.action,
                target: entry.target,
                reason: entry.reason,
                details: entry.details,
            })
            .await?)
    }

    /// One page of the audit log, newest first.
    pub async fn audit_log(&self, params: AuditListParams) -> Result<AuditPage> {
        Ok(self.store().audit_list(&params).await?)
    }
}

/// Whether `secret` is the secret of `record` (constant time; `None`
/// compares against a fixed digest and fails).
pub fn verify(record: Option<&TokenRecord>, secret: &str) -> bool {
    let presented = digest(secret);
    match record {
        Some(r) => bool::from(presented.as_slice().ct_eq(r.secret_sha256.as_slice())),
        None => {
            let _ = presented.as_slice().ct_eq(&[0u8; 32]);
            false
        }
    }
}

/// The id part of a presented token, if it is shaped like one (for caches
/// and logs; the id is not secret).
pub fn token_id(presented: &str) -> Option<&str> {
    split(presented).map(|(id, _)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(secret: &str) -> TokenRecord {
        TokenRecord {
            id: "abcdefghijkm".into(),
            role: Role::Read,
            label: None,
            secret_sha256: digest(secret).to_vec(),
            created_at: Utc::now(),
        }
    }

    #[test]
    fn only_well_formed_tokens_split() {
        let secret = "0".repeat(64);
        assert!(split(&format!("ofl_abcdefghijkm_{secret}")).is_some());
        assert!(split(&format!("ofl_abcdefghijk_{secret}")).is_none());
        assert!(split(&format!("ofl_ABCDEFGHIJKM_{secret}")).is_none());
        assert!(split(&format!("xyz_abcdefghijkm_{secret}")).is_none());
        assert!(split(&format!("ofl_abcdefghijkm_{}", &secret[1..])).is_none());
        assert!(split(&format!("ofl_abcdefghijkm_{}g", &secret[1..])).is_none());
        assert!(split("").is_none());
        assert!(split("ofl_").is_none());
    }

    #[test]
    fn verify_accepts_only_the_right_secret() {
        let good = "a".repeat(64);
        assert!(verify(Some(&record(&good)), &good));
        assert!(!verify(Some(&record(&good)), &"b".repeat(64)));
        assert!(!verify(None, &good));
        let mut short = record(&good);
        short.secret_sha256.truncate(16);
        assert!(!verify(Some(&short), &good));
    }
}
