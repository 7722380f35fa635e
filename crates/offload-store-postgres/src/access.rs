//! API tokens and the audit log: plain rows, one statement per call,
//! without notifications.

use chrono::{DateTime, Utc};
use offload_store::{
    AuditListParams, AuditPage, AuditRecord, NewAuditRecord, StoreError, StoreResult, TokenRecord,
};
use offload_types::{Role, ValidationError};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Row};

use crate::PgStore;
use crate::error::{corrupt, map, sqlstate};

const TOKEN_COLUMNS: &str = "id, role, label, secret_sha256, created_at";

fn token(row: &PgRow) -> StoreResult<TokenRecord> {
    let id: String = row.try_get(0).map_err(map)?;
    let role: String = row.try_get(1).map_err(map)?;
    let role = role.parse::<Role>().map_err(|_| {
        corrupt(format!(
            "column api_tokens.role holds {role:?} (token {id:?})"
        ))
    })?;
    Ok(TokenRecord {
        id,
        role,
        label: row.try_get(2).map_err(map)?,
        secret_sha256: row.try_get(3).map_err(map)?,
        created_at: row.try_get(4).map_err(map)?,
    })
}

/// Stores a new token; `Conflict` when its id is taken.
pub(crate) async fn token_insert(store: &PgStore, t: &TokenRecord) -> StoreResult<()> {
    t.validate()?;
    let sql = format!(
        "INSERT INTO {}.api_tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (id) DO NOTHING",
        store.q()
    );
    let n = sqlx::query(AssertSqlSafe(sql))
        .bind(&t.id)
        .bind(t.role.as_str())
        .bind(&t.label)
        .bind(&t.secret_sha256)
        .bind(t.created_at)
        .execute(&store.inner.pool)
        .await
        .map_err(map)?
        .rows_affected();
    if n == 0 {
        return Err(StoreError::Conflict(format!(
            "token {:?} already exists",
            t.id
        )));
    }
    Ok(())
}

/// One token, or `None`.
pub(crate) async fn token_get(store: &PgStore, id: &str) -> StoreResult<Option<TokenRecord>> {
    if id.contains('\0') {
        // PostgreSQL text cannot hold it, so no stored id does.
        return Ok(None);
    }
    let sql = format!(
        "SELECT {TOKEN_COLUMNS} FROM {}.api_tokens WHERE id = $1",
        store.q()
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&store.inner.pool)
        .await
        .map_err(map)?;
    row.as_ref().map(token).transpose()
}

/// Every token, oldest first.
pub(crate) async fn token_list(store: &PgStore) -> StoreResult<Vec<TokenRecord>> {
    let sql = format!(
        "SELECT {TOKEN_COLUMNS} FROM {}.api_tokens ORDER BY created_at, id",
        store.q()
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .fetch_all(&store.inner.pool)
        .await
        .map_err(map)?;
    rows.iter().map(token).collect()
}

/// Deletes a token; whether there was one.
pub(crate) async fn token_delete(store: &PgStore, id: &str) -> StoreResult<bool> {
    if id.contains('\0') {
        return Ok(false);
    }
    let sql = format!("DELETE FROM {}.api_tokens WHERE id = $1", store.q());
    let n = sqlx::query(AssertSqlSafe(sql))
        .bind(id)
        .execute(&store.inner.pool)
        .await
        .map_err(map)?
        .rows_affected();
    Ok(n > 0)
}

/// Appends an audit record; returns its `seq`.
pub(crate) async fn audit_insert(store: &PgStore, r: &NewAuditRecord) -> StoreResult<i64> {
    r.validate()?;
    let sql = format!(
        "INSERT INTO {}.audit_log (at, actor, action, target, reason, details) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq",
        store.q()
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(r.at)
        .bind(&r.actor)
        .bind(&r.action)
        .bind(&r.target)
        .bind(&r.reason)
        .bind(&r.details)
        .fetch_one(&store.inner.pool)
        .await
        .map_err(|e| match sqlstate(&e).as_deref() {
            // jsonb refuses \u0000 in strings
            Some("22P05") => StoreError::Invalid(ValidationError::new(
                "details",
                format!("holds text PostgreSQL cannot store (such as \\u0000): {e}"),
            )),
            _ => map(e),
        })?;
    row.try_get(0).map_err(map)
}

/// One page of the audit log, newest first.
pub(crate) async fn audit_list(store: &PgStore, p: &AuditListParams) -> StoreResult<AuditPage> {
    p.validate()?;
    let mut sql = format!(
        "SELECT seq, at, actor, action, target, reason, details FROM {}.audit_log WHERE true",
        store.q()
    );
    // Only the filters given, so each shape gets its own plan (the
    // target filter can use its index).
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    if p.before.is_some() {
        sql.push_str(&format!(" AND seq < ${}", next()));
    }
    if !p.actions.is_empty() {
        sql.push_str(&format!(" AND action = ANY(${})", next()));
    }
    if p.target.is_some() {
        sql.push_str(&format!(" AND target = ${}", next()));
    }
    sql.push_str(&format!(" ORDER BY seq DESC LIMIT ${}", next()));
    let mut query = sqlx::query(AssertSqlSafe(sql));
    if let Some(before) = p.before {
        query = query.bind(before);
    }
    if !p.actions.is_empty() {
        query = query.bind(&p.actions);
    }
    if let Some(target) = &p.target {
        query = query.bind(target);
    }
    let rows = query
        .bind(i64::from(p.limit) + 1)
        .fetch_all(&store.inner.pool)
        .await
        .map_err(map)?;
    let limit = p.limit as usize;
    let more = rows.len() > limit;
    let records = rows
        .iter()
        .take(limit)
        .map(audit)
        .collect::<StoreResult<Vec<_>>>()?;
    let next_cursor = if more {
        records.last().map(|r| r.seq)
    } else {
        None
    };
    Ok(AuditPage {
        records,
        next_cursor,
    })
}

fn audit(row: &PgRow) -> StoreResult<AuditRecord> {
    let at: DateTime<Utc> = row.try_get(1).map_err(map)?;
    let details: Value = row.try_get(6).map_err(map)?;
    Ok(AuditRecord {
        seq: row.try_get(0).map_err(map)?,
        at,
        actor: row.try_get(2).map_err(map)?,
        action: row.try_get(3).map_err(map)?,
        target: row.try_get(4).map_err(map)?,
        reason: row.try_get(5).map_err(map)?,
        details,
    })
}
