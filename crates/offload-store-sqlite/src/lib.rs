//! The embedded default store of offload: one SQLite file in WAL mode.
//!
//! [`SqliteStore`] implements [`offload_store::Store`] the way
//! `docs/architecture.md` ("SQLite backend") describes:
//!
//! - **one writer thread** owns the write connection; callers send commands
//!   over a channel and the thread runs every command waiting in one
//!   `BEGIN IMMEDIATE` transaction (a failing command rolls back only
//!   itself), with one commit for all (group commit);
//! - **a pool of read-only connections** serves gets, lists and counts in
//!   parallel with the writer, and **a checkpoint thread** copies the WAL
//!   back into the database so the writer's commits do not;
//! - **versioned migrations** (`migrations/NNNN_name.sql`) run on open; a
//!   file that is not ours, or is newer than this build, is refused
//!   untouched;
//! - **cross-process wake-ups** through Unix datagram sockets in a folder
//!   beside the database, so a worker in another process wakes within a
//!   fraction of a millisecond of an enqueue's commit.
//!
//! A call whose future is dropped before it completes may still commit:
//! the command is already on its way to the writer. Wake-up sockets need a
//! path shorter than the Unix limit (about 100 bytes); with a longer
//! database path the store logs a warning and other processes' changes are
//! seen by the workers' slow poll only.
//!
//! ```no_run
//! use offload_store::{Store, TaskInsertParams};
//! use offload_store_sqlite::SqliteStore;
//! use offload_types::NewTask;
//!
//! # async fn demo() -> Result<(), offload_store::StoreError> {
//! let store = SqliteStore::open_url("sqlite://offload.db").await?;
//! let ids = store
//!     .task_insert_many(&TaskInsertParams {
//!         tasks: vec![NewTask::new("send_email", serde_json::json!({"to": "a@example.com"}))],
//!         now: chrono::Utc::now(),
//!     })
//!     .await?;
//! assert_eq!(ids.len(), 1);
//! # Ok(()) }
//! ```

mod access;
mod checkpoint;
mod codec;
mod conn;
mod deps;
mod error;
mod events;
mod fairness;
mod flow;
mod idempotency;
mod limits;
mod options;
mod read;
mod schedules;
mod schema;
mod store;
mod unique;
mod wake;
mod webhooks;
mod write;
mod writer;

pub use options::{DEFAULT_BUSY_TIMEOUT, DEFAULT_READERS, Durability, SqliteOptions};
pub use store::SqliteStore;
#[doc(hidden)]
pub use writer::WriterStats;
