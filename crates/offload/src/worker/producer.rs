//! The producer of one queue: waits for a reason to look (a notification
//! that work is available, a freed slot, the next scheduled `run_at`, or the
//! slow safety poll), then claims up to the free slots in one call and hands
//! each task to an executor. A failed claim (the database restarted, a
//! connection was cut) is logged and tried again with back-off; the loop
//! ends only when the worker stops.

use std::sync::Arc;
use std::time::Duration;

use offload_store::{Notification, TaskClaimParams, TaskNextRunAtParams};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{Notify, Semaphore, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::backoff::Backoff;
use super::executor;
use super::shared::{Counters, Shared, Slot};

/// When fewer slots than 1/GATHER_FRACTION of the claim size are free and
/// work is running, wait up to GATHER_WAIT for more to free up, so claims
/// stay batched.
const GATHER_FRACTION: usize = 2;
const GATHER_WAIT: Duration = Duration::from_millis(2);

pub(crate) async fn run(
    shared: Arc<Shared>,
    queue: String,
    concurrency: usize,
    executors: TaskTracker,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(concurrency));
    let slot_freed = Arc::new(Notify::new());
    let mut notes = shared.store.notifier().subscribe();
    let names = Some(shared.names());
    let batch = shared.config.claim_batch;
    let mut retry = Backoff::standard();
    loop {
        if stop.is_cancelled() {
            return;
        }
        let mut free = slots.available_permits();
        if free == 0 {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = slot_freed.notified() => continue,
            }
        }
        let enough = (concurrency.min(batch) / GATHER_FRACTION).max(1);
        if free < enough && free < concurrency {
            // a few slots free while many run: let more finish (for at
            // most GATHER_WAIT) so the claim is batched
            let deadline = tokio::time::Instant::now() + GATHER_WAIT;
            while free < enough
                && tokio::time::timeout_at(deadline, slot_freed.notified())
                    .await
                    .is_ok()
            {
                free = slots.available_permits();
            }
            free = slots.available_permits();
        }
        drain(&mut notes);
        let want = free.min(batch);
        // the lease counts from before the claim is sent
        let claimed_at = tokio::time::Instant::now();
        let claimed = shared
            .store
            .task_claim(&TaskClaimParams {
                queue: queue.clone(),
                names: names.clone(),
                limit: u32::try_from(want).unwrap_or(u32::MAX),
                worker_id: shared.worker_id.to_string(),
                lease: shared.config.lease,
                now: shared.clock.now(),
            })
            .await;
        let tasks = match claimed {
            Ok(tasks) => {
                let failures = retry.succeed();
                if failures > 0 {
                    tracing::info!(queue = %queue, failures, "claiming works again");
                }
                tasks
            }
            Err(e) => {
                let wait = retry.fail();
                tracing::warn!(
                    queue = %queue,
                    error = %e,
                    failures = retry.failures(),
                    retry_in = ?wait,
                    "claim failed; retrying"
                );
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
        };
        let got = tasks.len();
        Counters::add(&shared.stats.claimed, got as u64);
        for task in tasks {
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                // cannot happen (we claimed at most the free slots)
                tracing::error!(task = %task.id, "no free slot for a claimed task");
                continue;
            };
            let slot = Slot::new(permit, slot_freed.clone());
            executors.spawn(executor::execute(shared.clone(), task, slot, claimed_at));
        }
        if got == want {
            continue; // there may be more
        }
        if !idle_wait(&shared, &queue, &mut notes, &stop).await {
            return;
        }
    }
}

/// Drops notifications already queued: the claim about to run sees their effect.
fn drain(notes: &mut broadcast::Receiver<Notification>) {
    loop {
        match notes.try_recv() {
            Ok(_) | Err(TryRecvError::Lagged(_)) => continue,
            Err(TryRecvError::Empty) | Err(TryRecvError::Closed) => return,
        }
    }
}

/// Waits until there may be work in `queue`. Returns `false` on stop.
async fn idle_wait(
    shared: &Shared,
    queue: &str,
    notes: &mut broadcast::Receiver<Notification>,
    stop: &CancellationToken,
) -> bool {
    let next = match shared
        .store
        .task_next_run_at(&TaskNextRunAtParams {
            queue: queue.to_owned(),
            names: Some(shared.names()),
        })
        .await
    {
        Ok(next) => next,
        Err(e) => {
            // the safety poll stands in for the scheduled time
            tracing::debug!(queue = %queue, error = %e, "could not read the next scheduled time");
            None
        }
    };
    let mut wait = shared.config.poll_interval;
    if let Some(at) = next {
        let until = (at - shared.clock.now()).to_std().unwrap_or(Duration::ZERO);
        wait = wait.min(until);
    }
    let timer = tokio::time::sleep(wait);
    tokio::pin!(timer);
    let mut listening = true;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return false,
            _ = &mut timer => return true,
            note = notes.recv(), if listening => match note {
                Ok(Notification::Available { queue: None }) => return true,
                Ok(Notification::Available { queue: Some(q) }) if q == queue => return true,
                Ok(_) => continue,
                Err(RecvError::Lagged(_)) => return true,
                Err(RecvError::Closed) => {
                    // subscribe afresh; until the timer fires, only it wakes
                    // us (a notifier that stays closed must not spin this loop)
                    *notes = shared.store.notifier().subscribe();
                    listening = false;
                }
            },
        }
    }
}
