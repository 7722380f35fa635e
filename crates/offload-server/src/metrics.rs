//! `GET /metrics` in the Prometheus text format: task counts by queue and
//! status and the ready depth per queue (read from the store at each
//! scrape, so they cover every process sharing it), and this process's
//! counters and histograms: enqueues through the API, attempt outcomes,
//! attempt durations and pickup latency (of tasks run by the in-process
//! worker, through [`Metrics::hook`], and by remote workers through the
//! pull protocol).

use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use offload::{AttemptResult, Client, Context, Hook, Status, Task, TaskFilter};
use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::ApiError;
use crate::AppState;

/// The metrics of one `offload serve` process. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    tasks: IntGaugeVec,
    depth: IntGaugeVec,
    enqueued: IntCounter,
    attempts: IntCounterVec,
    duration: HistogramVec,
    pickup: HistogramVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Buckets of the duration histograms, in seconds: 1 ms to about 17 min.
fn buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.001, 4.0, 11).unwrap_or_else(|_| vec![0.01, 0.1, 1.0, 10.0])
}

impl Metrics {
    /// Fresh metrics, all at zero. Fails only if a metric cannot be
    /// registered (a bug).
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let tasks = IntGaugeVec::new(
            Opts::new("offload_tasks", "Tasks in the store by queue and status"),
            &["queue", "status"],
        )?;
        let depth = IntGaugeVec::new(
            Opts::new(
                "offload_queue_depth",
                "Tasks ready to run (pending) per queue",
            ),
            &["queue"],
        )?;
        let enqueued = IntCounter::new(
            "offload_enqueued_total",
            "Tasks enqueued through this server's API",
        )?;
        let attempts = IntCounterVec::new(
            Opts::new(
                "offload_attempts_total",
                "Attempts ended by this process's worker or through its pull protocol, by outcome",
            ),
            &["outcome"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "offload_attempt_duration_seconds",
                "Run time of attempts run by this process's worker",
            )
            .buckets(buckets()),
            &["name"],
        )?;
        let pickup = HistogramVec::new(
            HistogramOpts::new(
                "offload_pickup_latency_seconds",
                "Time from a task being ready (run_at) to its attempt starting",
            )
            .buckets(buckets()),
            &["queue"],
        )?;
        for c in [
            Box::new(tasks.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(depth.clone()),
            Box::new(enqueued.clone()),
            Box::new(attempts.clone()),
            Box::new(duration.clone()),
            Box::new(pickup.clone()),
        ] {
            registry.register(c)?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                registry,
                tasks,
                depth,
                enqueued,
                attempts,
                duration,
                pickup,
            }),
        })
    }

    /// A worker hook that records the attempts of an in-process worker.
    pub fn hook(&self) -> MetricsHook {
        MetricsHook(self.clone())
    }

    pub(crate) fn enqueued(&self, n: usize) {
        self.inner
            .enqueued
            .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    }

    pub(crate) fn attempt_ended(&self, outcome: &str) {
        self.inner.attempts.with_label_values(&[outcome]).inc();
    }

    pub(crate) fn started(&self, task: &Task) {
        if let Some(started) = task.started_at {
            let wait = (started - task.run_at).to_std().unwrap_or_default();
            self.inner
                .pickup
                .with_label_values(&[task.queue.as_str()])
                .observe(wait.as_secs_f64());
        }
    }

    fn ran(&self, task: &Task) {
        if let Some(started) = task.started_at {
            let took = (chrono::Utc::now() - started).to_std().unwrap_or_default();
            self.inner
                .duration
                .with_label_values(&[task.name.as_str()])
                .observe(took.as_secs_f64());
        }
    }

    /// The text of a scrape, with the store's counts read now.
    async fn render(&self, client: &Client) -> Result<String, ApiError> {
        let counts = client.count(TaskFilter::default()).await?;
        let inner = &self.inner;
        inner.tasks.reset();
        inner.depth.reset();
        for c in &counts {
            let n = i64::try_from(c.count).unwrap_or(i64::MAX);
            let status = c.status.to_string();
            inner
                .tasks
                .with_label_values(&[c.queue.as_str(), status.as_str()])
                .add(n);
            let depth = inner.depth.with_label_values(&[c.queue.as_str()]);
            if c.status == Status::Pending {
                depth.add(n);
            }
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&inner.registry.gather(), &mut out)
            .map_err(|e| ApiError::internal(format!("metrics: {e}")))?;
        String::from_utf8(out).map_err(|e| ApiError::internal(format!("metrics: {e}")))
    }
}

/// Records the attempts of a [`Worker`](offload::Worker) in [`Metrics`].
#[derive(Debug, Clone)]
pub struct MetricsHook(Metrics);

#[async_trait]
impl Hook for MetricsHook {
    async fn on_before_run(&self, task: &Task, _ctx: &Context) -> Result<(), offload::TaskError> {
        self.0.started(task);
        Ok(())
    }

    async fn on_after_run(&self, task: &Task, result: &AttemptResult, _ctx: &Context) {
        self.0.ran(task);
        let outcome = match result {
            AttemptResult::Success(_) => "success",
            AttemptResult::Failure {
                will_retry: true, ..
            } => "retry",
            AttemptResult::Failure { .. } => "failed",
            AttemptResult::Aborted => "aborted",
            AttemptResult::Deferred => "deferred",
        };
        self.0.attempt_ended(outcome);
    }
}

/// `GET /metrics`: the Prometheus text format (version 0.0.4).
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain; version=0.0.4", body = String),
              (status = 503, description = "The store cannot be reached", body = crate::schema::ErrorBody)))]
pub(crate) async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let text = state.metrics.render(&state.client).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    ))
}
