//! API tokens and the audit log: plain rows, written through the writer
//! thread and read on the reader pool. Neither produces notifications.

use offload_store::{
    AuditListParams, AuditRecord, NewAuditRecord, StoreError, StoreResult, TokenRecord,
};
use offload_types::Role;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row};

use crate::codec::{micros, time};
use crate::error::{corrupt, map};
use crate::writer::WriteCtx;

// ---------------------------------------------------------------- tokens

/// A token in stored form.
#[derive(Debug, Clone)]
pub(crate) struct TokenRow {
    id: String,
    role: &'static str,
    label: Option<String>,
    secret_sha256: Vec<u8>,
    created_at: i64,
}

impl TokenRow {
    /// Validates `token` and encodes it.
    pub(crate) fn prepare(token: &TokenRecord) -> StoreResult<Self> {
        token.validate()?;
        Ok(Self {
            id: token.id.clone(),
            role: token.role.as_str(),
            label: token.label.clone(),
            secret_sha256: token.secret_sha256.clone(),
            created_at: micros(token.created_at),
        })
    }
}

const TOKEN_COLUMNS: &str = "id, role, label, secret_sha256, created_at";

/// A token row as read, before the role and time are checked.
type RawToken = (String, String, Option<String>, Vec<u8>, i64);

fn raw_token(r: &Row<'_>) -> rusqlite::Result<RawToken> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

/// A stored token read back; an unknown role is corruption.
pub(crate) fn into_token(raw: RawToken) -> StoreResult<TokenRecord> {
    let (id, role, label, secret_sha256, created_at) = raw;
    let role = role.parse::<Role>().map_err(|_| {
        corrupt(format!(
            "column api_tokens.role holds {role:?} (token {id:?})"
        ))
    })?;
    Ok(TokenRecord {
        id,
        role,
        label,
        secret_sha256,
        created_at: time(created_at)?,
    })
}

/// Stores a new token; `Conflict` when its id is taken.
pub(crate) fn token_insert(ctx: &mut WriteCtx<'_>, t: &TokenRow) -> StoreResult<()> {
    let n = ctx
        .conn
        .prepare_cached(&format!(
            "INSERT INTO api_tokens ({TOKEN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (id) DO NOTHING"
        ))
        .map_err(map)?
        .execute(rusqlite::params![
            t.id,
            t.role,
            t.label,
            t.secret_sha256,
            t.created_at
        ])
        .map_err(map)?;
    if n == 0 {
        return Err(StoreError::Conflict(format!(
            "token {:?} already exists",
            t.id
        )));
    }
    Ok(())
}

/// Deletes a token; whether there was one.
pub(crate) fn token_delete(ctx: &mut WriteCtx<'_>, id: &str) -> StoreResult<bool> {
    let n = ctx
        .conn
        .prepare_cached("DELETE FROM api_tokens WHERE id = ?1")
        .map_err(map)?
        .execute([id])
        .map_err(map)?;
    Ok(n > 0)
}

/// One token row.
pub(crate) fn token_get(conn: &Connection, id: &str) -> StoreResult<Option<RawToken>> {
    conn.prepare_cached(&format!(
        "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = ?1"
    ))
    .map_err(map)?
    .query_row([id], raw_token)
    .optional()
    .map_err(map)
}

/// Every token row, oldest first.
pub(crate) fn token_list(conn: &Connection) -> StoreResult<Vec<RawToken>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at, id"
        ))
        .map_err(map)?;
    let rows = stmt.query_map([], raw_token).map_err(map)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map)
}

// ---------------------------------------------------------------- audit

/// An audit record in stored form.
#[derive(Debug, Clone)]
pub(crate) struct AuditRow {
    at: i64,
    actor: String,
    action: String,
    target: Option<String>,
    reason: Option<String>,
    details: String,
}

impl AuditRow {
    /// Validates `record` and encodes it.
    pub(crate) fn prepare(record: &NewAuditRecord) -> StoreResult<Self> {
        record.validate()?;
        Ok(Self {
            at: micros(record.at),
            actor: record.actor.clone(),
            action: record.action.clone(),
            target: record.target.clone(),
            reason: record.reason.clone(),
            details: crate::codec::json(&record.details)?,
        })
    }
}

/// Appends a record; returns its `seq`.
pub(crate) fn audit_insert(ctx: &mut WriteCtx<'_>, r: &AuditRow) -> StoreResult<i64> {
    ctx.conn
        .prepare_cached(
            "INSERT INTO audit_log (at, actor, action, target, reason, details) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING seq",
        )
        .map_err(map)?
        .query_row(
            rusqlite::params![r.at, r.actor, r.action, r.target, r.reason, r.details],
            |row| row.get(0),
        )
        .map_err(map)
}

/// An audit row as read, before its time and JSON are parsed.
type RawAudit = (
    i64,
    i64,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
);

/// Up to `limit` records matching `params`, newest first.
pub(crate) fn audit_list(
    conn: &Connection,
    params: &AuditListParams,
    limit: u32,
) -> StoreResult<Vec<RawAudit>> {
    let mut sql = String::from(
        "SELECT seq, at, actor, action, target, reason, details FROM audit_log WHERE 1 = 1",
    );
    let mut values: Vec<Value> = Vec::new();
    if let Some(before) = params.before {
        values.push(Value::Integer(before));
        sql.push_str(&format!(" AND seq < ?{}", values.len()));
    }
    if !params.actions.is_empty() {
        // One parameter however many actions: a JSON array.
        values.push(Value::Text(crate::codec::json(&params.actions)?));
        sql.push_str(&format!(
            " AND action IN (SELECT value FROM json_each(?{}))",
            values.len()
        ));
    }
    if let Some(target) = &params.target {
        values.push(Value::Text(target.clone()));
        sql.push_str(&format!(" AND target = ?{}", values.len()));
    }
    values.push(Value::Integer(i64::from(limit)));
    sql.push_str(&format!(" ORDER BY seq DESC LIMIT ?{}", values.len()));
    let mut stmt = conn.prepare_cached(&sql).map_err(map)?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(values), |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .map_err(map)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map)
}

/// A stored audit record read back.
pub(crate) fn into_audit(raw: RawAudit) -> StoreResult<AuditRecord> {
    let (seq, at, actor, action, target, reason, details) = raw;
    let details = serde_json::from_str(&details).map_err(|e| {
        corrupt(format!(
            "column audit_log.details holds bad JSON (seq {seq}): {e}"
        ))
    })?;
    Ok(AuditRecord {
        seq,
        at: time(at)?,
        actor,
        action,
        target,
        reason,
        details,
    })
}
