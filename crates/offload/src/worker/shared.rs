//! State shared by the worker's loops: configuration, runners, the table of
//! running attempts, the completer's inbox and the counters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use offload_store::{Clock, LeaseRef, Store, TaskFinish};
use offload_types::{LeaseToken, TaskId};
use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc, watch};

use crate::context::StateMap;
use crate::controller::StopReason;
use crate::{Client, Context, Hook, Runner};

/// Settings of one worker; defaults live in [`WorkerBuilder`](super::WorkerBuilder).
#[derive(Debug, Clone)]
pub(crate) struct WorkerConfig {
    pub(crate) queues: Vec<(String, usize)>,
    pub(crate) lease: Duration,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) shutdown_grace: Duration,
    pub(crate) abort_grace: Duration,
    pub(crate) poll_interval: Duration,
    pub(crate) maintenance_interval: Duration,
    pub(crate) leader_ttl: Duration,
    pub(crate) retention: Duration,
    pub(crate) event_retention: Duration,
    pub(crate) claim_batch: usize,
}

/// A runner and its own hooks.
pub(crate) struct RegisteredRunner {
    pub(crate) runner: Arc<dyn Runner>,
    pub(crate) hooks: Vec<Arc<dyn Hook>>,
}

/// One running attempt, as the heartbeat and shutdown see it.
struct RunningAttempt {
    lease: LeaseRef,
    stop: Arc<watch::Sender<Option<StopReason>>>,
    /// When the lease runs out unless renewed, by this process's clock:
    /// counted from just before the claim or the last renewal that the
    /// store confirmed was sent.
    lease_deadline: tokio::time::Instant,
    /// The outcome is with the completer: the attempt has ended, and the
    /// lease may vanish under a heartbeat as the outcome is stored.
    finishing: bool,
}

/// A claimed slot of a queue's concurrency. It is held until the attempt's
/// outcome is stored, so the store never shows more of this worker's tasks
/// `running` than its concurrency (and a crash re-runs at most that many).
pub(crate) struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    freed: Arc<Notify>,
}

impl Slot {
    pub(crate) fn new(permit: OwnedSemaphorePermit, freed: Arc<Notify>) -> Self {
        Self {
            permit: Some(permit),
            freed,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.freed.notify_one();
    }
}

/// An attempt's entry in the table of running attempts; dropping it
/// removes the entry (also when the executor panics), which ends the
/// heartbeats for that lease.
pub(crate) struct Registration {
    shared: Arc<Shared>,
    lease: LeaseRef,
}

impl Registration {
    /// `claimed_at`: just before the claim that took this lease was sent.
    pub(crate) fn new(
        shared: Arc<Shared>,
        lease: LeaseRef,
        stop: Arc<watch::Sender<Option<StopReason>>>,
        claimed_at: tokio::time::Instant,
    ) -> Self {
        let deadline = later_instant(claimed_at, shared.config.lease);
        shared.register(lease, stop, deadline);
        Self { shared, lease }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shared.unregister(self.lease);
    }
}

/// What an attempt holds until its outcome is stored: its slot and its
/// lease registration (so the lease keeps being renewed meanwhile).
pub(crate) struct Held {
    pub(crate) _slot: Slot,
    pub(crate) _registration: Registration,
}

/// What goes to the completer.
pub(crate) enum CompleterMsg {
    Finish(TaskFinish, Held),
    Close,
}

/// Counters since the worker started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Tasks claimed.
    pub claimed: u64,
    /// Attempts that succeeded.
    pub succeeded: u64,
    /// Tasks that ended `failed`.
    pub failed: u64,
    /// Attempts that failed and will be retried.
    pub retried: u64,
    /// Tasks that ended `aborted`.
    pub aborted: u64,
    /// Results the store refused because the lease was no longer live.
    pub stale: u64,
    /// Attempts running now.
    pub running: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) claimed: AtomicU64,
    pub(crate) succeeded: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) aborted: AtomicU64,
    pub(crate) stale: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, running: usize) -> WorkerStats {
        WorkerStats {
            claimed: self.claimed.load(Ordering::Relaxed),
            succeeded: self.succeeded.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            aborted: self.aborted.load(Ordering::Relaxed),
            stale: self.stale.load(Ordering::Relaxed),
            running: running as u64,
        }
    }
}

pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) client: Client,
    pub(crate) runners: HashMap<String, RegisteredRunner>,
    pub(crate) hooks: Vec<Arc<dyn Hook>>,
    pub(crate) state: Arc<StateMap>,
    pub(crate) worker_id: Arc<str>,
    pub(crate) config: WorkerConfig,
    pub(crate) stats: Counters,
    /// Keyed by lease token: a rescued task may run here again under a new
    /// lease while its old attempt is still being stopped.
    running: Mutex<HashMap<LeaseToken, RunningAttempt>>,
    completions: mpsc::UnboundedSender<CompleterMsg>,
    /// When graceful shutdown began; the completer stops retrying a failing
    /// write a while after it.
    shutdown_started: std::sync::OnceLock<tokio::time::Instant>,
    completion_rx: Mutex<Option<mpsc::UnboundedReceiver<CompleterMsg>>>,
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        runners: HashMap<String, RegisteredRunner>,
        hooks: Vec<Arc<dyn Hook>>,
        state: StateMap,
        worker_id: String,
        config: WorkerConfig,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            client: Client::new(store.clone()).clock(clock.clone()),
            store,
            clock,
            runners,
            hooks,
            state: Arc::new(state),
            worker_id: worker_id.into(),
            config,
            stats: Counters::default(),
            running: Mutex::new(HashMap::new()),
            completions: tx,
            shutdown_started: std::sync::OnceLock::new(),
            completion_rx: Mutex::new(Some(rx)),
        }
    }

    pub(crate) fn context(&self) -> Context {
        Context::new(
            self.client.clone(),
            self.state.clone(),
            self.worker_id.clone(),
        )
    }

    /// The task names this worker runs.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.runners.keys().cloned().collect();
        names.sort();
        names
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<LeaseToken, RunningAttempt>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(
        &self,
        lease: LeaseRef,
        stop: Arc<watch::Sender<Option<StopReason>>>,
        lease_deadline: tokio::time::Instant,
    ) {
        self.running().insert(
            lease.lease_token,
            RunningAttempt {
                lease,
                stop,
                lease_deadline,
                finishing: false,
            },
        );
    }

    fn unregister(&self, lease: LeaseRef) {
        self.running().remove(&lease.lease_token);
    }

    pub(crate) fn running_count(&self) -> usize {
        self.running().len()
    }

    pub(crate) fn leases(&self) -> Vec<LeaseRef> {
        self.running().values().map(|r| r.lease).collect()
    }

    /// Records that the store renewed `lease` with a heartbeat sent at `sent_at`.
    pub(crate) fn renewed(&self, lease: LeaseRef, sent_at: tokio::time::Instant) {
        let deadline = later_instant(sent_at, self.config.lease);
        if let Some(r) = self.running().get_mut(&lease.lease_token) {
            r.lease_deadline = r.lease_deadline.max(deadline);
        }
    }

    /// Asks every attempt still running whose lease ran out by `now` (the
    /// store could not be reached to renew it) to stop: another worker may
    /// run its task by now. Returns how many were newly asked. (An
    /// attempt whose outcome is with the completer has nothing left to
    /// stop; the store refuses its outcome if the task was rescued.)
    pub(crate) fn stop_lapsed(&self, now: tokio::time::Instant) -> usize {
        self.running()
            .values()
            .filter(|r| r.lease_deadline <= now && !r.finishing)
            .filter(|r| request_stop(&r.stop, StopReason::LeaseLost))
            .count()
    }

    /// A heartbeat found `lease` no longer live: asks its attempt to stop.
    /// Returns whether an attempt was still running under it (not when its
    /// outcome was already with the completer, which may just have stored
    /// it and so cleared the lease).
    pub(crate) fn lease_lost(&self, lease: LeaseRef) -> bool {
        match self.running().get(&lease.lease_token) {
            Some(r) if !r.finishing => {
                request_stop(&r.stop, StopReason::LeaseLost);
                true
            }
            _ => false,
        }
    }

    /// Asks the attempt holding `lease` to stop (the first reason wins).
    pub(crate) fn stop_lease(&self, lease: LeaseRef, reason: StopReason) {
        if let Some(r) = self.running().get(&lease.lease_token) {
            request_stop(&r.stop, reason);
        }
    }

    /// Asks every attempt of task `id` running here to stop.
    pub(crate) fn stop_task(&self, id: TaskId, reason: StopReason) {
        for r in self.running().values().filter(|r| r.lease.id == id) {
            request_stop(&r.stop, reason);
        }
    }

    pub(crate) fn stop_all(&self, reason: StopReason) {
        for r in self.running().values() {
            request_stop(&r.stop, reason);
        }
    }

    pub(crate) fn complete(&self, finish: TaskFinish, held: Held) {
        if let Some(r) = self.running().get_mut(&finish.lease.lease_token) {
            r.finishing = true;
        }
        if self
            .completions
            .send(CompleterMsg::Finish(finish, held))
            .is_err()
        {
            tracing::error!(
                "completer is gone; an outcome was not written (the lease will expire and the task will run again)"
            );
        }
    }

    pub(crate) fn begin_shutdown(&self) {
        let _ = self.shutdown_started.set(tokio::time::Instant::now());
    }

    /// How long ago graceful shutdown began, if it did.
    pub(crate) fn shutting_down_for(&self) -> Option<Duration> {
        self.shutdown_started.get().map(|t| t.elapsed())
    }

    pub(crate) fn close_completions(&self) {
        let _ = self.completions.send(CompleterMsg::Close);
    }

    pub(crate) fn take_completion_receiver(&self) -> mpsc::UnboundedReceiver<CompleterMsg> {
        match self
            .completion_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            Some(rx) => rx,
            // a worker starts once; a second start gets a closed inbox
            None => mpsc::unbounded_channel().1,
        }
    }
}

/// `at + d` (leases are at most an hour, so this does not overflow; if it
/// did, the far end of what an instant can hold is a day ahead at least).
fn later_instant(at: tokio::time::Instant, d: Duration) -> tokio::time::Instant {
    at.checked_add(d)
        .or_else(|| at.checked_add(Duration::from_secs(86_400)))
        .unwrap_or(at)
}

/// Sets the stop reason unless one is set already; whether it was set now.
pub(crate) fn request_stop(tx: &watch::Sender<Option<StopReason>>, reason: StopReason) -> bool {
    tx.send_if_modified(|current| {
        if current.is_none() {
            *current = Some(reason);
            true
        } else {
            false
        }
    })
}
