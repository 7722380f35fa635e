//! The PostgreSQL store of offload: every `offload` process and every
//! embedding application on any number of machines points at one
//! database and shares its tasks with the same guarantees as the embedded
//! SQLite store.
//!
//! - Claims take ready tasks with `FOR UPDATE SKIP LOCKED` in one
//!   statement, in priority order, through partial indexes that hold only
//!   waiting rows.
//! - Batches (insert, finish, heartbeat, progress) bind one array per
//!   column, so a batch of any size is one statement.
//! - Wake-ups cross processes with LISTEN/NOTIFY (one listening connection
//!   per store, re-established after a connection loss).
//! - Leadership rows are backed by advisory locks, so a dead leader is
//!   replaced within one election round.
//! - Migrations run on open under an advisory lock, in their own schema
//!   (`?schema=NAME`, default `offload`).
//! - [`PgStore::insert_in`] enqueues inside the application's own
//!   transaction: the task exists if and only if that transaction commits.
//! - Dependencies between tasks are edge rows with a counter of unmet
//!   edges per task; only tasks flagged as having dependents make a
//!   finish do more than its one statement, and row locks on the
//!   dependency close the race between a new edge and the dependency's
//!   end. Unique keys are serialised with transaction-scoped advisory
//!   locks.
//! - Limits (concurrency per name or queue, per input key, rate) and
//!   fairness across `fairness_key`s apply only to the claims they
//!   concern: those run in a transaction holding the schema's limits
//!   advisory lock (fairness alone needs no lock), while every other
//!   claim keeps its one statement. Quotas of waiting tasks per fairness
//!   key serialise inserts per key with advisory locks.
//! - Cron schedules fire each tick once however many schedulers run: a
//!   compare-and-set on the stored next tick and the insert of the tick's
//!   task commit together.
//!
//! ```no_run
//! use offload_store::Store;
//! use offload_store_postgres::PgStore;
//!
//! # async fn demo() -> Result<(), offload_store::StoreError> {
//! let store = PgStore::open_url("postgres://postgres@127.0.0.1:5432/app?schema=offload").await?;
//! assert!(store.capabilities().multi_host);
//! # Ok(()) }
//! ```

mod access;
mod codec;
mod copy;
mod deps;
mod error;
mod events;
mod fairness;
mod filter;
mod flow;
mod hot;
mod idempotency;
mod leader;
mod limits;
mod manage;
mod notify;
mod options;
mod schedules;
mod schema;
mod store;
mod unique;
mod webhooks;

pub use options::{DEFAULT_SCHEMA, MAX_SCHEMA_LEN, PgOptions, check_schema, redact};
pub use schema::SCHEMA_VERSION;
pub use store::PgStore;

/// The driver, re-exported so applications enqueue inside their own
/// transactions with the same `sqlx` version offload links.
pub use sqlx;
