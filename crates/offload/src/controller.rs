//! [`Controller`]: one attempt's control surface — progress, an explicit
//! outcome (success, error, abort, snooze), and cooperative cancellation
//! through [`Controller::aborted`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use offload_store::{LeaseRef, ProgressUpdate, Store, TaskProgressParams};
use offload_types::{Progress, TaskError, TaskId};
use tokio::sync::{Notify, watch};

use crate::{Error, Result};

/// Why an attempt was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Someone aborted the task.
    Abort,
    /// The attempt ran past its timeout.
    Timeout,
    /// The worker is shutting down and the grace period is over.
    Shutdown,
    /// The lease was lost (the task was rescued elsewhere).
    LeaseLost,
}

/// Where the attempt stands, as seen by its runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Running normally.
    Running,
    /// Asked to stop; finish up quickly.
    Stopping(StopReason),
    /// An outcome was already set through the controller.
    Decided,
}

/// An outcome chosen through the controller instead of a return value.
#[derive(Debug, Clone)]
pub(crate) enum Decision {
    Success(serde_json::Value),
    Error(TaskError),
    Abort,
    Snooze(Duration),
}

#[derive(Default)]
pub(crate) struct DecisionSlot {
    value: Mutex<Option<Decision>>,
    set: Notify,
}

impl DecisionSlot {
    fn decide(&self, d: Decision) {
        let mut slot = self.value.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(d);
            self.set.notify_one();
        }
    }

    /// The decision, if one was made.
    pub(crate) fn get(&self) -> Option<Decision> {
        self.value.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn is_set(&self) -> bool {
        self.value
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Resolves with the decision once one is made.
    pub(crate) async fn wait(&self) -> Decision {
        loop {
            let notified = self.set.notified();
            if let Some(d) = self.value.lock().unwrap_or_else(|e| e.into_inner()).clone() {
                return d;
            }
            notified.await;
        }
    }
}

/// The control surface of one attempt.
///
/// ```
/// # use offload::{Context, Controller, TaskError, TaskType};
/// # use std::time::Duration;
/// struct Import;
/// impl TaskType for Import {
///     const NAME: &'static str = "import";
///     type Input = Vec<String>;
///     type Output = usize;
///     async fn run(&self, rows: Vec<String>, _ctx: &Context, ctl: &Controller) -> Result<usize, TaskError> {
///         for (i, _row) in rows.iter().enumerate() {
///             if ctl.is_stopping() {
///                 return Err(TaskError::new("stopped early"));
///             }
///             let percent = u8::try_from(100 * (i + 1) / rows.len()).unwrap_or(100);
///             ctl.progress(percent, Some(format!("row {}", i + 1))).await.ok();
///         }
///         Ok(rows.len())
///     }
/// }
/// ```
#[derive(Clone)]
pub struct Controller {
    store: Arc<dyn Store>,
    clock: Arc<dyn offload_store::Clock>,
    lease: LeaseRef,
    attempt: u32,
    stop: watch::Receiver<Option<StopReason>>,
    decision: Arc<DecisionSlot>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("task_id", &self.lease.id)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl Controller {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn offload_store::Clock>,
        lease: LeaseRef,
        attempt: u32,
        stop: watch::Receiver<Option<StopReason>>,
        decision: Arc<DecisionSlot>,
    ) -> Self {
        Self {
            store,
            clock,
            lease,
            attempt,
            stop,
            decision,
        }
    }

    /// The task being run.
    pub fn task_id(&self) -> TaskId {
        self.lease.id
    }

    /// This attempt's number (1-based).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Records progress (`percent` is clamped to 100). Fails with
    /// [`Error::LeaseLost`] if this attempt no longer holds the task.
    pub async fn progress(&self, percent: u8, message: Option<String>) -> Result<()> {
        self.progress_with(Progress::new(percent, message)).await
    }

    /// Records progress with extra data.
    pub async fn progress_with(&self, progress: Progress) -> Result<()> {
        let states = self
            .store
            .task_progress_many(&TaskProgressParams {
                updates: vec![ProgressUpdate {
                    lease: self.lease,
                    progress,
                }],
                now: self.clock.now(),
            })
            .await?;
        match states.first() {
            Some(s) if s.live => Ok(()),
            _ => Err(Error::LeaseLost(self.lease.id)),
        }
    }

    /// Ends the attempt as a success with `output` (the runner's future is
    /// dropped; its return value no longer counts).
    pub fn success(&self, output: serde_json::Value) {
        self.decision.decide(Decision::Success(output));
    }

    /// Ends the attempt with an error (retried unless fatal and while
    /// attempts remain).
    pub fn error(&self, error: TaskError) {
        self.decision.decide(Decision::Error(error));
    }

    /// Ends the task as `aborted`, without retry.
    pub fn abort(&self) {
        self.decision.decide(Decision::Abort);
    }

    /// Puts the task back to run again after `delay`; this attempt is not counted.
    pub fn snooze(&self, delay: Duration) {
        self.decision.decide(Decision::Snooze(delay));
    }

    /// Where the attempt stands.
    pub fn status(&self) -> RunStatus {
        if self.decision.is_set() {
            return RunStatus::Decided;
        }
        match *self.stop.borrow() {
            Some(reason) => RunStatus::Stopping(reason),
            None => RunStatus::Running,
        }
    }

    /// Whether the attempt was asked to stop.
    pub fn is_stopping(&self) -> bool {
        self.stop.borrow().is_some()
    }

    /// Why the attempt was asked to stop, if it was.
    pub fn stop_reason(&self) -> Option<StopReason> {
        *self.stop.borrow()
    }

    /// Resolves when the attempt is asked to stop: an abort request, its
    /// timeout, or the end of a shutdown's grace period. The runner then has
    /// the worker's abort grace period to return before its future is
    /// dropped. (When the lease is lost the future is dropped at once:
    /// another worker may already run the task.)
    pub async fn aborted(&self) -> StopReason {
        let mut rx = self.stop.clone();
        loop {
            if let Some(reason) = *rx.borrow_and_update() {
                return reason;
            }
            if rx.changed().await.is_err() {
                // the executor is gone: the attempt is over
                return (*rx.borrow()).unwrap_or(StopReason::Shutdown);
            }
        }
    }
}
