//! Opening a database: migrations are idempotent, and every file the
//! store refuses (garbage, someone else's database, a newer schema, a
//! missing directory) is refused with a clear error and left unchanged.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::TempDb;
use offload_store::{Store, StoreError};
use offload_store_sqlite::{Durability, SqliteOptions, SqliteStore};

async fn open(path: &std::path::Path) -> Result<SqliteStore, StoreError> {
    SqliteStore::open(path, SqliteOptions::default()).await
}

#[tokio::test]
async fn open_migrates_once_and_reopens() {
    let db = TempDb::new();
    let store = db.open().await;
    let ids = common::insert_n(&store, "default", 3).await;
    drop(store);
    // Reopening applies nothing new and keeps the data.
    let store = db.open().await;
    assert_eq!(
        store.task_get(ids[0]).await.unwrap().map(|t| t.id),
        Some(ids[0])
    );
    drop(store);
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    let versions: Vec<i64> = conn
        .prepare("SELECT version FROM offload_migrations ORDER BY version")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(versions, vec![1, 2, 3, 4, 5]);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn garbage_file_is_corrupt_and_unchanged() {
    let db = TempDb::new();
    let bytes: Vec<u8> = (0u8..=250).cycle().step_by(7).take(5000).collect();
    std::fs::write(db.path(), &bytes).unwrap();
    let err = open(&db.path()).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(err.to_string().contains("not an SQLite database"), "{err}");
    assert_eq!(std::fs::read(db.path()).unwrap(), bytes);

    // A short file too.
    std::fs::write(db.path(), b"hello").unwrap();
    let err = open(&db.path()).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert_eq!(std::fs::read(db.path()).unwrap(), b"hello");
}

#[tokio::test]
async fn sqlite_header_with_garbage_body_is_corrupt_and_unchanged() {
    let db = TempDb::new();
    let mut bytes = b"SQLite format 3\0".to_vec();
    bytes.extend((0u8..=255).cycle().step_by(13).take(8000));
    std::fs::write(db.path(), &bytes).unwrap();
    let err = open(&db.path()).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert_eq!(std::fs::read(db.path()).unwrap(), bytes);
}

#[tokio::test]
async fn foreign_database_is_refused_and_unchanged() {
    let db = TempDb::new();
    {
        let conn = rusqlite::Connection::open(db.path()).unwrap();
        conn.execute_batch("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users (name) VALUES ('ada');")
            .unwrap();
    }
    let before = std::fs::read(db.path()).unwrap();
    let err = open(&db.path()).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("not an offload store"), "{message}");
    assert!(message.contains("users"), "{message}");
    assert_eq!(std::fs::read(db.path()).unwrap(), before);
}

#[tokio::test]
async fn newer_schema_is_refused_and_unchanged() {
    let db = TempDb::new();
    drop(db.open().await);
    {
        let conn = rusqlite::Connection::open(db.path()).unwrap();
        conn.execute(
            "INSERT INTO offload_migrations (version, name, applied_at) VALUES (999, 'future', 0)",
            [],
        )
        .unwrap();
    }
    let before = std::fs::read(db.path()).unwrap();
    let err = open(&db.path()).await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("schema version 999"), "{message}");
    assert!(message.contains("upgrade offload"), "{message}");
    assert_eq!(std::fs::read(db.path()).unwrap(), before);
}

#[tokio::test]
async fn missing_directory_is_unavailable_naming_the_path() {
    let db = TempDb::new();
    let path = db.dir.path().join("no/such/dir/offload.db");
    let err = open(&path).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("does not exist"), "{message}");
    assert!(!db.dir.path().join("no").exists());
}

#[tokio::test]
async fn directory_as_database_is_unavailable() {
    let db = TempDb::new();
    let err = open(db.dir.path()).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn create_if_missing_off_refuses_a_missing_file() {
    let db = TempDb::new();
    let options = SqliteOptions {
        create_if_missing: false,
        ..SqliteOptions::default()
    };
    let err = SqliteStore::open(db.path(), options.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(!db.path().exists());
    drop(db.open().await);
    SqliteStore::open(db.path(), options).await.unwrap();
}

#[tokio::test]
async fn open_url_forms_and_description() {
    let db = TempDb::new();
    let url = format!("sqlite://{}?durability=full", db.path().display());
    let store = SqliteStore::open_url(&url).await.unwrap();
    assert_eq!(store.describe(), format!("sqlite:{}", db.path().display()));
    let caps = store.capabilities();
    assert!(caps.cross_process_notify);
    assert!(!caps.multi_host);
    let err = SqliteStore::open_url(&format!("sqlite://{}?durabilty=full", db.path().display()))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    assert!(err.to_string().contains("durabilty"), "{err}");
    assert_eq!(Durability::default(), Durability::Normal);
}

#[tokio::test]
async fn dropping_the_last_clone_closes_everything() {
    let db = TempDb::new();
    let store = db.open().await;
    let clone = store.clone();
    assert!(store.listen());
    common::insert_n(&store, "default", 10).await;
    let wake_dir = {
        let mut p = db.path().into_os_string();
        p.push("-wake");
        std::path::PathBuf::from(p)
    };
    assert_eq!(std::fs::read_dir(&wake_dir).unwrap().count(), 1);
    drop(store);
    // A clone keeps it open.
    common::insert_n(&clone, "default", 1).await;
    drop(clone);
    // The last connection closed: SQLite checkpointed and removed the WAL,
    // and the wake-up socket is gone.
    let mut wal = db.path().into_os_string();
    wal.push("-wal");
    assert!(!std::path::Path::new(&wal).exists());
    assert_eq!(std::fs::read_dir(&wake_dir).unwrap().count(), 0);
}

/// A worker and an `enqueue` started at the same moment on a new file:
/// whichever switches the file to WAL while the other reads it used to get
/// "database is locked" at once (the switch bypasses the busy handler), so
/// the worker exited and the task stayed pending (`.ci/smoke`). Every
/// opener now waits for the lock like any other write, and all of them
/// see one migrated database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openers_racing_on_a_new_file_all_succeed() {
    const ROUNDS: usize = 60;
    const OPENERS: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    for round in 0..ROUNDS {
        let path = dir.path().join(format!("race-{round}.db"));
        let start = Arc::new(tokio::sync::Barrier::new(OPENERS));
        let openers: Vec<_> = (0..OPENERS)
            .map(|_| {
                let (path, start) = (path.clone(), Arc::clone(&start));
                tokio::spawn(async move {
                    start.wait().await;
                    open(&path).await
                })
            })
            .collect();
        let mut stores = Vec::new();
        for opener in openers {
            match opener.await.unwrap() {
                Ok(store) => stores.push(store),
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        // One schema, written once: a task inserted through one is seen
        // by the others.
        let ids = common::insert_n(&stores[0], "default", 1).await;
        for store in &stores[1..] {
            assert!(store.task_get(ids[0]).await.unwrap().is_some());
        }
    }
}
