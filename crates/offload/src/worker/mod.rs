//! [`Worker`]: runs tasks from the store. Inside, following River's split:
//! a [`producer`] per queue claims work into free slots, an [`executor`]
//! runs each attempt, the [`heartbeat`] renews leases and relays abort
//! requests, the [`completer`] writes outcomes back in batches, and
//! [`maintenance`] (on the elected leader only) rescues expired leases and
//! prunes old tasks, and the [`scheduler`] enqueues the ticks of cron
//! schedules.
//!
//! None of the loops ends because the store failed: a failed call (the
//! database restarted, a connection was cut) is logged and tried again
//! with [`backoff`], and they end only when the worker shuts down.

mod backoff;
mod builder;
mod completer;
mod executor;
pub(crate) use executor::later;
mod heartbeat;
mod maintenance;
mod producer;
mod scheduler;
mod shared;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

use std::future::Future;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use builder::{
    DEFAULT_ABORT_GRACE, DEFAULT_CLAIM_BATCH, DEFAULT_CONCURRENCY, DEFAULT_MAINTENANCE_INTERVAL,
    DEFAULT_POLL_INTERVAL, DEFAULT_SHUTDOWN_GRACE, MAX_CONCURRENCY, MAX_LEASE, MIN_LEASE,
    WorkerBuilder,
};
pub use scheduler::SCHEDULER_TICK;
pub use shared::WorkerStats;

use crate::{Error, Result};
use shared::Shared;

/// A configured worker, ready to [`start`](Worker::start) or [`run`](Worker::run).
///
/// ```no_run
/// use offload::{async_trait, Context, Controller, Runner, Task, TaskError, Worker};
/// use serde_json::{json, Value};
///
/// struct SendEmail;
///
/// #[async_trait]
/// impl Runner for SendEmail {
///     async fn run(&self, task: &Task, _ctx: &Context, _ctl: &Controller) -> Result<Value, TaskError> {
///         Ok(json!({"sent_to": task.input["to"]}))
///     }
/// }
///
/// # async fn demo() -> offload::Result<()> {
/// let store = offload::open("sqlite://offload.db").await?;
/// let worker = Worker::builder(store)
///     .runner("send_email", SendEmail)
///     .concurrency(50)
///     .build()?;
/// worker.run(async { tokio::signal::ctrl_c().await.ok(); }).await?;
/// # Ok(()) }
/// ```
pub struct Worker {
    shared: Arc<Shared>,
    schedules: Vec<offload_types::Schedule>,
    scheduler: bool,
    limits: Vec<offload_types::Limit>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("worker_id", &self.shared.worker_id)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Starts configuring a worker over `store`.
    pub fn builder(store: Arc<dyn offload_store::Store>) -> WorkerBuilder {
        WorkerBuilder::new(store)
    }

    /// This worker's id, recorded on every attempt it runs.
    pub fn id(&self) -> &str {
        &self.shared.worker_id
    }

    /// Starts every loop on the current tokio runtime. Limits given to the
    /// builder are stored first (a failure is logged; the worker runs).
    pub fn start(self) -> WorkerHandle {
        let shared = self.shared;
        if !self.limits.is_empty() {
            let client = shared.client.clone();
            let limits = self.limits;
            tokio::spawn(async move {
                for limit in limits {
                    let what = format!("{} {:?}", limit.scope.as_str(), limit.target);
                    if let Err(e) = client.set_limit(limit).await {
                        tracing::error!(limit = %what, error = %e, "could not store the limit");
                    }
                }
            });
        }
        let services_stop_for_scheduler = CancellationToken::new();
        let scheduler = self.scheduler.then(|| {
            tokio::spawn(scheduler::run(
                shared.clone(),
                self.schedules,
                services_stop_for_scheduler.clone(),
            ))
        });
        let producers_stop = CancellationToken::new();
        let services_stop = CancellationToken::new();
        let executors = TaskTracker::new();
        let completer = tokio::spawn(completer::run(
            shared.clone(),
            shared.take_completion_receiver(),
        ));
        let heartbeat = tokio::spawn(heartbeat::run(shared.clone(), services_stop.clone()));
        let maintenance = tokio::spawn(maintenance::run(shared.clone(), services_stop.clone()));
        let producers = shared
            .config
            .queues
            .iter()
            .map(|(queue, concurrency)| {
                tokio::spawn(producer::run(
                    shared.clone(),
                    queue.clone(),
                    *concurrency,
                    executors.clone(),
                    producers_stop.clone(),
                ))
            })
            .collect();
        tracing::info!(worker = %shared.worker_id, store = %shared.store.describe(), "worker started");
        WorkerHandle {
            shared,
            producers_stop,
            services_stop,
            executors,
            producers,
            heartbeat,
            maintenance,
            completer,
            scheduler,
            scheduler_stop: services_stop_for_scheduler,
        }
    }

    /// Starts, runs until `shutdown` resolves, then shuts down gracefully.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let handle = self.start();
        shutdown.await;
        handle.shutdown().await
    }
}

/// A running worker.
pub struct WorkerHandle {
    shared: Arc<Shared>,
    producers_stop: CancellationToken,
    services_stop: CancellationToken,
    executors: TaskTracker,
    producers: Vec<JoinHandle<()>>,
    heartbeat: JoinHandle<()>,
    maintenance: JoinHandle<()>,
    completer: JoinHandle<()>,
    scheduler: Option<JoinHandle<()>>,
    scheduler_stop: CancellationToken,
}

impl std::fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("worker_id", &self.shared.worker_id)
            .finish_non_exhaustive()
    }
}

impl WorkerHandle {
    /// This worker's id.
    pub fn id(&self) -> &str {
        &self.shared.worker_id
    }

    /// Counters since start.
    pub fn stats(&self) -> WorkerStats {
        self.shared.stats.snapshot(self.shared.running_count())
    }

    /// Graceful shutdown: stop claiming; let running attempts finish within
    /// the shutdown grace period; then ask the rest to stop, drop those that
    /// do not within the abort grace period, and hand them back as `pending`
    /// (attempt not counted); write every outcome; give up leadership.
    pub async fn shutdown(self) -> Result<()> {
        let config = &self.shared.config;
        tracing::info!(worker = %self.shared.worker_id, running = self.shared.running_count(), "worker shutting down");
        self.shared.begin_shutdown();
        self.producers_stop.cancel();
        // no new ticks once shutdown starts; a tick not yet handled stays
        // due for the other schedulers
        self.scheduler_stop.cancel();
        // every step runs even if an earlier one failed; the first error is returned
        let mut first_error = None;
        for p in self.producers {
            keep_first(&mut first_error, join("producer", p).await);
        }
        self.executors.close();
        if tokio::time::timeout(config.shutdown_grace, self.executors.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                running = self.shared.running_count(),
                "shutdown grace period over; stopping the remaining attempts"
            );
            self.shared
                .stop_all(crate::controller::StopReason::Shutdown);
            let bound = config.abort_grace.saturating_add(STOP_MARGIN);
            if tokio::time::timeout(bound, self.executors.wait())
                .await
                .is_err()
            {
                tracing::error!(
                    running = self.shared.running_count(),
                    "attempts still running after the abort grace period (a hook may hang); their leases will expire and the tasks run again"
                );
            }
        }
        if !self
            .shared
            .client
            .drain_background(config.shutdown_grace)
            .await
        {
            tracing::warn!("background work handed to wait_until was still running at shutdown");
        }
        // write the outcomes while heartbeats still renew their leases (a
        // write retried through a database restart must not find them lapsed)
        self.shared.close_completions();
        keep_first(&mut first_error, join("completer", self.completer).await);
        self.services_stop.cancel();
        keep_first(&mut first_error, join("heartbeat", self.heartbeat).await);
        keep_first(
            &mut first_error,
            join("maintenance", self.maintenance).await,
        );
        if let Some(scheduler) = self.scheduler {
            keep_first(&mut first_error, join("scheduler", scheduler).await);
        }
        tracing::info!(worker = %self.shared.worker_id, "worker stopped");
        first_error.map_or(Ok(()), Err)
    }
}

/// After the abort grace period, how much longer shutdown waits for
/// attempts to hand back their outcome.
const STOP_MARGIN: std::time::Duration = std::time::Duration::from_secs(5);

fn keep_first(first: &mut Option<Error>, result: Result<()>) {
    if let Err(e) = result {
        tracing::error!(error = %e, "worker shutdown step failed");
        first.get_or_insert(e);
    }
}

async fn join(name: &'static str, handle: JoinHandle<()>) -> Result<()> {
    handle
        .await
        .map_err(|e| Error::Worker(format!("the {name} loop ended abnormally: {e}")))
}
