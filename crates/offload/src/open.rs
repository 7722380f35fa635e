//! [`open`]: picks the storage backend from a database URL.

use std::sync::Arc;

use offload_store::Store;
use offload_store_sqlite::SqliteStore;

use crate::{Error, Result};

/// The database used when none is configured: `offload.db` in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://offload.db";

/// Opens the store a URL names: `sqlite://path/to/offload.db` (the embedded
/// default; `?durability=full` for power-loss safety). Migrations run on open.
///
/// ```no_run
/// # async fn demo() -> offload::Result<()> {
/// let store = offload::open("sqlite://offload.db").await?;
/// # Ok(()) }
/// ```
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or("");
    match scheme {
        "sqlite" => Ok(Arc::new(SqliteStore::open_url(url).await?)),
        "postgres" | "postgresql" => Err(Error::UnsupportedUrl(format!(
            "{scheme}:// URLs need the PostgreSQL backend, which this build does not have yet; use sqlite://PATH"
        ))),
        _ => Err(Error::UnsupportedUrl(format!(
            "unsupported database URL scheme {scheme:?}: expected sqlite://PATH (e.g. {DEFAULT_DATABASE_URL})"
        ))),
    }
}
