//! [`open`]: picks the storage backend from a database URL.

use std::sync::Arc;

use offload_store::Store;
use offload_store_postgres::PgStore;
use offload_store_sqlite::SqliteStore;

use crate::{Error, Result};

/// The database used when none is configured: `offload.db` in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://offload.db";

/// Opens the store a URL names, and applies pending migrations:
///
/// - `sqlite://path/to/offload.db`: the embedded default, one machine
///   (`?durability=full` for power-loss safety);
/// - `postgres://user:password@host:5432/db`: PostgreSQL, for workers on
///   many machines (`?schema=NAME` to keep offload's tables in a schema of
///   their own, default `offload`; `?pool_size=N`, default 10).
///
/// ```no_run
/// # async fn demo() -> offload::Result<()> {
/// let embedded = offload::open("sqlite://offload.db").await?;
/// let shared = offload::open("postgres://app@db.internal:5432/app?schema=offload").await?;
/// # Ok(()) }
/// ```
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or("");
    match scheme {
        "sqlite" => Ok(Arc::new(SqliteStore::open_url(url).await?)),
        "postgres" | "postgresql" => Ok(Arc::new(PgStore::open_url(url).await?)),
        _ => Err(Error::UnsupportedUrl(format!(
            "unsupported database URL scheme {scheme:?}: expected sqlite://PATH (e.g. \
             {DEFAULT_DATABASE_URL}) or postgres://USER@HOST:PORT/DB"
        ))),
    }
}
