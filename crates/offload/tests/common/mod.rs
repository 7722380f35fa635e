//! What the library's integration tests share: a store of each kind, two
//! clients on it (two connection pools, as two processes would have), and
//! a macro that runs each check on both stores.

#![allow(dead_code, clippy::unwrap_used)]

use offload::Client;
use offload_test_support::PgSchema;

/// Keeps the SQLite file's folder or the PostgreSQL schema alive.
pub(crate) enum Backing {
    Sqlite(tempfile::TempDir),
    Postgres(PgSchema),
}

/// A fresh SQLite store and two clients on it.
pub(crate) async fn sqlite() -> (Backing, Client, Client) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("offload.db").display());
    let a = Client::connect(&url).await.unwrap();
    let b = Client::connect(&url).await.unwrap();
    (Backing::Sqlite(dir), a, b)
}

/// A fresh PostgreSQL schema and two clients on it.
pub(crate) async fn postgres() -> (Backing, Client, Client) {
    let schema = PgSchema::new().await;
    let a = Client::connect(&schema.url()).await.unwrap();
    let b = Client::connect(&schema.url()).await.unwrap();
    (Backing::Postgres(schema), a, b)
}

/// `on_both!(check, …)`: a test per check and store; each check is an
/// `async fn(Client, Client)`.
#[macro_export]
macro_rules! on_both {
    ($($check:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let (_backing, a, b) = $crate::common::sqlite().await;
                    super::$check(a, b).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let (_backing, a, b) = $crate::common::postgres().await;
                    super::$check(a, b).await;
                }
            )*
        }
    };
}
