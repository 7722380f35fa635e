//! Versioned migrations (`migrations/NNNN_name.sql`, embedded in the
//! binary) and the checks before them. Migrations are applied on open, in
//! order, inside one `BEGIN IMMEDIATE` transaction, and recorded in
//! `offload_migrations`; a database written by a newer offload, or one that
//! holds someone else's tables, is refused before anything is written.

use std::path::Path;

use offload_store::StoreError;
use rusqlite::{Connection, OptionalExtension};

/// One migration: its version (the file's number), name and SQL.
struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
}

/// Every migration, in order. A new one is a new file plus one entry here.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "events_access",
        sql: include_str!("../migrations/0002_events_access.sql"),
    },
    Migration {
        version: 3,
        name: "flow",
        sql: include_str!("../migrations/0003_flow.sql"),
    },
    Migration {
        version: 4,
        name: "schedules",
        sql: include_str!("../migrations/0004_schedules.sql"),
    },
    Migration {
        version: 5,
        name: "limits",
        sql: include_str!("../migrations/0005_limits.sql"),
    },
];

/// The schema version this build writes: the last migration's.
pub(crate) const LATEST_VERSION: i64 = match MIGRATIONS.last() {
    Some(m) => m.version,
    None => 0,
};

const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS offload_migrations (
    version    INTEGER NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL,
    applied_at INTEGER NOT NULL
)";

fn db_error(path: &Path, e: rusqlite::Error) -> StoreError {
    match crate::error::map(e) {
        StoreError::Corrupt(m) => StoreError::Corrupt(format!("{}: {m}", path.display())),
        StoreError::Unavailable(m) => {
            StoreError::Unavailable(format!("database {}: {m}", path.display()))
        }
        other => other,
    }
}

fn newer_error(path: &Path, version: i64) -> StoreError {
    StoreError::Corrupt(format!(
        "{} has schema version {version}, newer than this build of offload knows \
         (up to {LATEST_VERSION}); upgrade offload to open it (the file was left unchanged)",
        path.display()
    ))
}

/// The applied schema version (0: none), refusing what is not ours.
/// Reads only.
pub(crate) fn inspect(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
        )
        .map_err(|e| db_error(path, e))?;
    let tables = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|e| db_error(path, e))?;
    if tables.is_empty() {
        return Ok(0);
    }
    if !tables.iter().any(|t| t == "offload_migrations") {
        let shown: Vec<&str> = tables.iter().take(8).map(String::as_str).collect();
        return Err(StoreError::Corrupt(format!(
            "{} is an SQLite database but not an offload store (it has tables {}{}); \
             it was left unchanged",
            path.display(),
            shown.join(", "),
            if tables.len() > shown.len() {
                ", ..."
            } else {
                ""
            }
        )));
    }
    let version = current_version(conn).map_err(|e| db_error(path, e))?;
    if version > LATEST_VERSION {
        return Err(newer_error(path, version));
    }
    Ok(version)
}

fn current_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT coalesce(max(version), 0) FROM offload_migrations",
        [],
        |r| r.get(0),
    )
    .optional()
    .map(|v| v.unwrap_or(0))
}

/// Applies every migration the database lacks, in one transaction.
pub(crate) fn migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    // Most opens find the schema current: do not take the write lock then.
    if inspect(conn, path)? == LATEST_VERSION {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| db_error(path, e))?;
    let result = apply(conn, path);
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = conn.execute_batch(end).map_err(|e| db_error(path, e));
    if result.is_err() {
        // The rollback leaves the file as it was; report the cause.
        let _ = ended;
        return result;
    }
    ended
}

fn apply(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    // Another process may have migrated since the check above.
    let version = inspect(conn, path)?;
    conn.execute_batch(MIGRATIONS_TABLE)
        .map_err(|e| db_error(path, e))?;
    let now = chrono::Utc::now().timestamp_micros();
    for m in MIGRATIONS.iter().filter(|m| m.version > version) {
        tracing::info!(version = m.version, name = m.name, db = %path.display(), "applying migration");
        conn.execute_batch(m.sql).map_err(|e| {
            StoreError::Backend(Box::new(crate::error::Message(format!(
                "migration {:04}_{} failed on {}: {e}",
                m.version,
                m.name,
                path.display()
            ))))
        })?;
        conn.execute(
            "INSERT INTO offload_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            rusqlite::params![m.version, m.name, now],
        )
        .map_err(|e| db_error(path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i64::try_from(i).unwrap() + 1, "{}", m.name);
        }
        assert_eq!(MIGRATIONS.last().unwrap().version, LATEST_VERSION);
    }
}
