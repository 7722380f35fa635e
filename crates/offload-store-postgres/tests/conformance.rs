//! The shared conformance suite, run unchanged against `PgStore`: every
//! case gets a schema of its own on the test server, and a second store
//! opened on the same schema stands in for another process.

use std::sync::Arc;

use offload_store_conformance::Fixture;
use offload_store_postgres::PgStore;
use offload_test_support::PgSchema;

async fn fresh_fixture() -> Fixture {
    let schema = PgSchema::new().await;
    let store = PgStore::open_url(&schema.url_with("pool_size=4"))
        .await
        .expect("open the store");
    let second = PgStore::open_url(&schema.url_with("pool_size=4"))
        .await
        .expect("open a second store on the same schema");
    Fixture {
        store: Arc::new(store),
        second: Arc::new(second),
        guard: Box::new(schema),
    }
}

offload_store_conformance::suite!(fresh_fixture);
