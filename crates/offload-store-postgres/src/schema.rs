//! Versioned migrations, applied on open under an advisory lock so several
//! processes starting at once apply each exactly once.

use offload_store::{StoreError, StoreResult};
use sqlx::AssertSqlSafe;
use sqlx::{Connection, Executor, PgConnection, Row};

use crate::error::map;

/// The migrations in order: (version, name, SQL with `{schema}` for the
/// quoted schema name).
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "init", include_str!("../migrations/0001_init.sql")),
    (
        2,
        "events_access",
        include_str!("../migrations/0002_events_access.sql"),
    ),
    (3, "flow", include_str!("../migrations/0003_flow.sql")),
    (
        4,
        "schedules",
        include_str!("../migrations/0004_schedules.sql"),
    ),
    (5, "limits", include_str!("../migrations/0005_limits.sql")),
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i32 = 5;

/// The advisory-lock key of migrations in `schema` (two 32-bit halves).
fn migrate_lock_sql(schema: &str) -> String {
    format!("hashtext('offload-migrate'), hashtext('{schema}')")
}

/// Creates the schema if needed and applies every pending migration.
/// Refuses a schema written by a newer build, or one holding tables that
/// are not offload's, and changes nothing then.
pub(crate) async fn migrate(conn: &mut PgConnection, schema: &str) -> StoreResult<()> {
    let key = migrate_lock_sql(schema);
    conn.execute(AssertSqlSafe(format!("SELECT pg_advisory_lock({key})")))
        .await
        .map_err(map)?;
    let result = apply(conn, schema).await;
    let unlock = conn
        .execute(AssertSqlSafe(format!("SELECT pg_advisory_unlock({key})")))
        .await
        .map_err(map);
    result.and(unlock.map(|_| ()))
}

async fn apply(conn: &mut PgConnection, schema: &str) -> StoreResult<()> {
    let quoted = format!("\"{schema}\"");
    let tables: Vec<String> = sqlx::query(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
    )
    .bind(schema)
    .fetch_all(&mut *conn)
    .await
    .map_err(map)?
    .iter()
    .map(|r| r.try_get::<String, _>(0))
    .collect::<Result<_, _>>()
    .map_err(map)?;
    let has_ledger = tables.iter().any(|t| t == "offload_migrations");
    if !has_ledger && !tables.is_empty() {
        return Err(StoreError::Corrupt(format!(
            "schema {schema:?} holds tables that are not offload's ({}); choose another schema \
             with ?schema=NAME",
            tables.join(", ")
        )));
    }
    let mut tx = conn.begin().await.map_err(map)?;
    tx.execute(AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS {quoted}"
    )))
    .await
    .map_err(map)?;
    tx.execute(AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS {quoted}.offload_migrations (\
         version integer PRIMARY KEY, name text NOT NULL, \
         applied_at timestamptz NOT NULL DEFAULT now())"
    )))
    .await
    .map_err(map)?;
    let current: i32 = sqlx::query(AssertSqlSafe(format!(
        "SELECT coalesce(max(version), 0) FROM {quoted}.offload_migrations"
    )))
    .fetch_one(&mut *tx)
    .await
    .map_err(map)?
    .try_get(0)
    .map_err(map)?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::Corrupt(format!(
            "schema {schema:?} is at version {current}, newer than this build of offload \
             understands ({SCHEMA_VERSION}); upgrade offload"
        )));
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v > current) {
        tx.execute(AssertSqlSafe(sql.replace("{schema}", &quoted)))
            .await
            .map_err(map)?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {quoted}.offload_migrations (version, name) VALUES ($1, $2)"
        )))
        .bind(version)
        .bind(name)
        .execute(&mut *tx)
        .await
        .map_err(map)?;
        tracing::info!(schema, version, name, "applied migration");
    }
    tx.commit().await.map_err(map)
}
