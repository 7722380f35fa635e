//! Test helpers shared by offload's crates.
//!
//! [`PgSchema`] gives each test its own schema on the PostgreSQL server
//! named by `OFFLOAD_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), so tests run in parallel
//! against one server, and drops it when the test ends. An unreachable
//! server fails the test with a message saying how to start one: tests
//! are never skipped silently.

use std::time::Duration;

use sqlx::{Connection, PgConnection};

/// The server tests use unless `OFFLOAD_TEST_DATABASE_URL` names another.
pub const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The test server's URL.
pub fn database_url() -> String {
    std::env::var("OFFLOAD_TEST_DATABASE_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_TEST_DATABASE_URL.to_owned())
}

/// A schema of its own for one test, dropped (with everything in it) when
/// this value is dropped.
#[derive(Debug)]
pub struct PgSchema {
    name: String,
    base: String,
}

impl PgSchema {
    /// A fresh, unique schema name on the test server (the schema itself is
    /// created by the store that opens it). Panics with instructions when
    /// the server cannot be reached.
    pub async fn new() -> Self {
        let base = database_url();
        match tokio::time::timeout(Duration::from_secs(10), PgConnection::connect(&base)).await {
            Ok(Ok(conn)) => drop(conn.close().await),
            Ok(Err(e)) => panic!(
                "PostgreSQL at {base} cannot be reached ({e}). Start it (see docs/development.md) \
                 or point OFFLOAD_TEST_DATABASE_URL at a server."
            ),
            Err(_) => panic!("PostgreSQL at {base} did not answer within 10 s"),
        }
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        Self { name, base }
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The store URL of this schema: the test server with `?schema=NAME`.
    pub fn url(&self) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{sep}schema={}", self.base, self.name)
    }

    /// The same, with extra URL parameters (`"pool_size=4"`).
    pub fn url_with(&self, params: &str) -> String {
        format!("{}&{params}", self.url())
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let base = self.base.clone();
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name);
        // Drop runs outside any runtime the test may have; use a thread of
        // its own with a small runtime.
        let done = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect(&base).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                }
            });
        });
        let _ = done.join();
    }
}
