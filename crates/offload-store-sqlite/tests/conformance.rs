//! The shared conformance suite, run against `SqliteStore`: every case
//! gets a fresh database file in its own temporary directory, and a second
//! store opened on the same file stands in for another process.

use std::sync::Arc;

use offload_store_conformance::Fixture;
use offload_store_sqlite::{SqliteOptions, SqliteStore};

async fn fresh_fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("offload.db");
    let store = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .expect("open the store");
    let second = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .expect("open a second handle on the same file");
    Fixture {
        store: Arc::new(store),
        second: Arc::new(second),
        guard: Box::new(dir),
    }
}

offload_store_conformance::suite!(fresh_fixture);
