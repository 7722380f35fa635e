//! Remote workers: the calls a worker outside this process (any language,
//! through `offload serve`'s pull protocol) uses instead of a [`Worker`]:
//! lease tasks, renew the lease, report progress, and end the attempt. Every
//! call after the lease carries its token; a call whose lease is no longer
//! live (rescued after it expired, or the task deleted) fails with
//! [`Error::LeaseLost`] and changes nothing.
//!
//! [`Worker`]: crate::Worker

use std::time::Duration;

use offload_store::{
    FinishOutcome, LeaseRef, Notification, ProgressUpdate, TaskClaimParams, TaskFinish,
    TaskFinishParams, TaskHeartbeatParams, TaskProgressParams, check_claim_names,
};
use offload_types::{
    DEFAULT_LEASE, DEFAULT_QUEUE, LeaseToken, Progress, Status, Task, TaskError, TaskId,
    ValidationError,
};
use tokio::sync::broadcast::error::RecvError;

use crate::worker::{MAX_LEASE, MIN_LEASE, later};
use crate::{Client, Error, Result};

/// Most tasks one lease call hands out.
pub const MAX_LEASE_BATCH: u32 = 100;
/// Longest a lease call waits for work.
pub const MAX_LEASE_WAIT: Duration = Duration::from_secs(60);

/// What a remote worker asks for.
#[derive(Debug, Clone)]
pub struct LeaseRequest {
    /// Take tasks of these queues (in this order); default `default`.
    pub queues: Vec<String>,
    /// Only these task names (`None`: any).
    pub names: Option<Vec<String>>,
    /// At most this many tasks (1 to [`MAX_LEASE_BATCH`]).
    pub max: u32,
    /// Wait this long for work when none is ready (at most
    /// [`MAX_LEASE_WAIT`]; zero answers at once).
    pub wait: Duration,
    /// How long the lease lasts without a heartbeat.
    pub lease: Duration,
    /// The worker's name, recorded on the task and in its history.
    pub worker_id: String,
}

impl Default for LeaseRequest {
    fn default() -> Self {
        Self {
            queues: vec![DEFAULT_QUEUE.to_owned()],
            names: None,
            max: 1,
            wait: Duration::ZERO,
            lease: DEFAULT_LEASE,
            worker_id: "remote".to_owned(),
        }
    }
}

impl LeaseRequest {
    fn validate(&self) -> std::result::Result<(), ValidationError> {
        if !(1..=MAX_LEASE_BATCH).contains(&self.max) {
            return Err(ValidationError::new(
                "max",
                format!("must be between 1 and {MAX_LEASE_BATCH}, got {}", self.max),
            ));
        }
        if self.wait > MAX_LEASE_WAIT {
            return Err(ValidationError::new(
                "wait",
                format!("at most {}s", MAX_LEASE_WAIT.as_secs()),
            ));
        }
        check_lease(self.lease)?;
        if self.queues.is_empty() || self.queues.iter().any(String::is_empty) {
            return Err(ValidationError::new("queues", "name at least one queue"));
        }
        if self.worker_id.trim().is_empty() || self.worker_id.len() > 200 {
            return Err(ValidationError::new(
                "worker_id",
                "must be 1 to 200 characters",
            ));
        }
        check_claim_names(self.names.as_deref()).map_err(|e| match e {
            offload_store::StoreError::Invalid(v) => v,
            other => ValidationError::new("names", other.to_string()),
        })
    }
}

fn check_lease(lease: Duration) -> std::result::Result<(), ValidationError> {
    if (MIN_LEASE..=MAX_LEASE).contains(&lease) {
        Ok(())
    } else {
        Err(ValidationError::new(
            "lease",
            format!(
                "must be between {}ms and {}s",
                MIN_LEASE.as_millis(),
                MAX_LEASE.as_secs()
            ),
        ))
    }
}

/// What a renewal or progress report learned about a live lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseInfo {
    /// Someone asked the task to stop: end the attempt with
    /// [`Client::abort_attempt`] soon.
    pub abort_requested: bool,
}

impl Client {
    /// Leases up to `req.max` ready tasks, in priority order, queue after
    /// queue; waits up to `req.wait` for work when none is ready. Each task
    /// carries its `lease_token`.
    pub async fn lease(&self, req: &LeaseRequest) -> Result<Vec<Task>> {
        req.validate()?;
        let deadline = tokio::time::Instant::now() + req.wait;
        let mut notes = self.store().notifier().subscribe();
        loop {
            let mut got = Vec::new();
            for queue in &req.queues {
                let want = req.max - u32::try_from(got.len()).unwrap_or(req.max);
                if want == 0 {
                    break;
                }
                got.extend(
                    self.store()
                        .task_claim(&TaskClaimParams {
                            queue: queue.clone(),
                            names: req.names.clone(),
                            limit: want,
                            worker_id: req.worker_id.clone(),
                            lease: req.lease,
                            now: self.now(),
                        })
                        .await?,
                );
            }
            if !got.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(got);
            }
            // wait for work in one of the queues, or the deadline
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => break,
                    note = notes.recv() => match note {
                        Ok(Notification::Available { queue: None }) => break,
                        Ok(Notification::Available { queue: Some(q) }) if req.queues.contains(&q) => break,
                        Ok(_) => continue,
                        Err(RecvError::Lagged(_)) => break,
                        Err(RecvError::Closed) => {
                            notes = self.store().notifier().subscribe();
                            break;
                        }
                    },
                }
            }
        }
    }

    /// Renews a lease for `lease` from now.
    pub async fn renew_lease(
        &self,
        id: TaskId,
        token: LeaseToken,
        lease: Duration,
    ) -> Result<LeaseInfo> {
        check_lease(lease)?;
        let states = self
            .store()
            .task_heartbeat_many(&TaskHeartbeatParams {
                leases: vec![LeaseRef {
                    id,
                    lease_token: token,
                }],
                lease,
                now: self.now(),
            })
            .await?;
        live(id, states.first().copied())
    }

    /// Records the progress of a leased attempt.
    pub async fn report_progress(
        &self,
        id: TaskId,
        token: LeaseToken,
        progress: Progress,
    ) -> Result<LeaseInfo> {
        let states = self
            .store()
            .task_progress_many(&TaskProgressParams {
                updates: vec![ProgressUpdate {
                    lease: LeaseRef {
                        id,
                        lease_token: token,
                    },
                    progress,
                }],
                now: self.now(),
            })
            .await?;
        live(id, states.first().copied())
    }

    /// Ends a leased attempt with its output: the task is `success`.
    pub async fn complete(
        &self,
        id: TaskId,
        token: LeaseToken,
        output: serde_json::Value,
    ) -> Result<Status> {
        self.finish(id, token, FinishOutcome::Success { output })
            .await
    }

    /// Ends a leased attempt with an error: retried after the task's
    /// back-off when the error is retryable and attempts are left (the task
    /// is `pending` or `scheduled`), else the task is `failed`.
    pub async fn fail(&self, id: TaskId, token: LeaseToken, error: TaskError) -> Result<Status> {
        let task = self.leased(id, token).await?;
        let now = self.now();
        let record = error.record(task.attempt, now);
        let outcome = if error.retryable && task.attempts_left() {
            let backoff = task.retry.clone().unwrap_or_default().backoff(task.attempt);
            FinishOutcome::Retry {
                error: record,
                run_at: later(now, backoff),
            }
        } else {
            FinishOutcome::Fail { error: record }
        };
        self.finish(id, token, outcome).await
    }

    /// Ends a leased attempt because it was asked to stop: the task is
    /// `aborted`.
    pub async fn abort_attempt(
        &self,
        id: TaskId,
        token: LeaseToken,
        reason: Option<String>,
    ) -> Result<Status> {
        let task = self.leased(id, token).await?;
        let error = TaskError::fatal(reason.unwrap_or_else(|| "aborted on request".into()))
            .kind("aborted")
            .record(task.attempt, self.now());
        self.finish(id, token, FinishOutcome::Abort { error }).await
    }

    /// The task, if `token` is its live lease.
    async fn leased(&self, id: TaskId, token: LeaseToken) -> Result<Task> {
        let task = self.get(id).await?;
        if task.status == Status::Running && task.lease_token == Some(token) {
            Ok(task)
        } else {
            Err(Error::LeaseLost(id))
        }
    }

    async fn finish(
        &self,
        id: TaskId,
        token: LeaseToken,
        outcome: FinishOutcome,
    ) -> Result<Status> {
        let results = self
            .store()
            .task_finish_many(&TaskFinishParams {
                items: vec![TaskFinish {
                    lease: LeaseRef {
                        id,
                        lease_token: token,
                    },
                    outcome,
                }],
                now: self.now(),
            })
            .await?;
        match results.first() {
            Some(r) if r.accepted => Ok(r.status.unwrap_or(Status::Running)),
            _ => Err(Error::LeaseLost(id)),
        }
    }
}

fn live(id: TaskId, state: Option<offload_store::LeaseState>) -> Result<LeaseInfo> {
    match state {
        Some(s) if s.live => Ok(LeaseInfo {
            abort_requested: s.abort_requested,
        }),
        _ => Err(Error::LeaseLost(id)),
    }
}
