//! # offload
//!
//! Durable background tasks for Rust applications. Hand offload the work
//! that must not block a request — emails, slow API calls, research agents,
//! imports, reports — and it stores each task durably, runs it in the
//! background with retries, timeouts, progress, results and cancellation,
//! on an embedded SQLite store by default.
//!
//! The programming model:
//! - a [`Client`] triggers tasks and manages them ([`TaskHandle`] waits for results);
//! - a [`Worker`] runs them with the [`Runner`] registered for each task
//!   name (or a typed [`TaskType`]);
//! - each run sees a [`Context`] (shared state, a client) and a
//!   [`Controller`] (progress, snooze, cooperative cancellation).
//!
//! ```no_run
//! use std::time::Duration;
//! use offload::{Client, Context, Controller, TaskError, TaskType, Worker};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Welcome { email: String }
//!
//! struct SendWelcome;
//!
//! impl TaskType for SendWelcome {
//!     const NAME: &'static str = "send_welcome_email";
//!     type Input = Welcome;
//!     type Output = ();
//!     async fn run(&self, input: Welcome, _ctx: &Context, ctl: &Controller) -> Result<(), TaskError> {
//!         ctl.progress(50, Some(format!("writing to {}", input.email))).await.ok();
//!         Ok(())
//!     }
//! }
//!
//! # async fn demo() -> offload::Result<()> {
//! let store = offload::open("sqlite://offload.db").await?;
//! let worker = Worker::builder(store.clone()).task(SendWelcome).build()?.start();
//!
//! let client = offload::Client::new(store);
//! let handle = SendWelcome::enqueue(&client, Welcome { email: "ada@example.com".into() }).await?;
//! handle.result(Duration::from_secs(10)).await?;
//! worker.shutdown().await?;
//! # Ok(()) }
//! ```

mod access;
mod client;
mod context;
mod controller;
mod error;
mod group;
mod handle;
mod hooks;
mod limits;
mod open;
mod remote;
mod runner;
mod schedules;
mod typed;
mod worker;

pub use access::{
    AuditEntry, CreatedToken, MAX_TOKEN_LABEL, TOKEN_PREFIX, TokenInfo, token_id, verify,
};
pub use async_trait::async_trait;
pub use client::{Client, TaskUpdate};
pub use context::Context;
pub use controller::{Controller, RunStatus, StopReason};
pub use error::{Error, Result};
pub use group::{GroupHandle, GroupStatus};
pub use handle::{TaskHandle, TypedHandle};
pub use hooks::{AttemptResult, Hook};
pub use open::{DEFAULT_DATABASE_URL, open};
pub use remote::{LeaseInfo, LeaseRequest, MAX_LEASE_BATCH, MAX_LEASE_WAIT};
pub use runner::Runner;
pub use typed::TaskType;

/// The PostgreSQL backend: [`PgStore`](postgres::PgStore) and the `sqlx`
/// version it links, for [`Client::trigger_in_tx`].
pub mod postgres {
    pub use offload_store_postgres::{PgOptions, PgStore, check_schema, redact, sqlx};
}
pub use worker::{
    DEFAULT_ABORT_GRACE, DEFAULT_CLAIM_BATCH, DEFAULT_CONCURRENCY, DEFAULT_MAINTENANCE_INTERVAL,
    DEFAULT_POLL_INTERVAL, DEFAULT_SHUTDOWN_GRACE, MAX_CONCURRENCY, MAX_LEASE, MIN_LEASE,
    SCHEDULER_TICK, Worker, WorkerBuilder, WorkerHandle, WorkerStats,
};

pub use offload_store::{
    AuditListParams, AuditPage, AuditRecord, Clock, EventFilter, EventKind, EventListParams,
    EventPage, MAX_EVENT_PAGE, ManualClock, Notification, Store, StoreError, SystemClock,
    TaskCount, TaskEvent, TaskFilter, TaskListParams, TaskPage,
};
pub use offload_store::{
    Delivery, DeliveryAttempt, DeliveryClaimParams, DeliveryListParams, DeliveryRecordParams,
    DeliveryStatus, NewDelivery, WebhookEnqueueParams, WebhookRecord,
};
pub use offload_store::{
    LIMIT_CACHE_TTL, LimitRecord, MAX_UPCOMING, ScheduleFired, ScheduleRecord,
};
pub use offload_types::*;
