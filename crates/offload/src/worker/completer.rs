//! The completer: collects attempt outcomes and writes them with one
//! `task_finish_many` call per batch. A store that is unavailable (the
//! database restarted, a connection was cut) is retried with back-off
//! until each outcome is stored or refused as stale; meanwhile the
//! attempts keep their slots and their leases keep being renewed.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;

use super::backoff::Backoff;
use offload_store::{FinishOutcome, TaskFinish, TaskFinishParams};
use offload_types::Status;
use tokio::sync::mpsc;

use super::shared::{CompleterMsg, Counters, Shared};

/// Most outcomes written in one call.
const MAX_BATCH: usize = 1000;
/// Writes in flight at once: outcomes that arrive while one is being
/// written go out at once in a second, instead of waiting a round trip
/// (their slots stay taken until they are stored).
const MAX_WRITES_IN_FLIGHT: usize = 2;
/// Once shutdown has gone on this long, a failing write is given up
/// (the leases then expire and the tasks run again).
const CLOSING_RETRY_LIMIT: Duration = Duration::from_secs(30);

pub(crate) async fn run(shared: Arc<Shared>, mut inbox: mpsc::UnboundedReceiver<CompleterMsg>) {
    let mut writes = FuturesUnordered::new();
    loop {
        while writes.len() >= MAX_WRITES_IN_FLIGHT {
            writes.next().await;
        }
        let msg = tokio::select! {
            msg = inbox.recv() => msg,
            Some(()) = writes.next(), if !writes.is_empty() => continue,
        };
        let mut batch = Vec::new();
        let mut slots = Vec::new();
        // the inbox is closed: write what is left, then stop
        let mut closing = false;
        match msg {
            Some(CompleterMsg::Finish(f, held)) => {
                batch.push(f);
                slots.push(held);
            }
            Some(CompleterMsg::Close) | None => closing = true,
        }
        while !closing && batch.len() < MAX_BATCH {
            match inbox.try_recv() {
                Ok(CompleterMsg::Finish(f, held)) => {
                    batch.push(f);
                    slots.push(held);
                }
                Ok(CompleterMsg::Close) => closing = true,
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            let shared = shared.clone();
            writes.push(async move {
                write(&shared, batch).await;
                // the outcomes are stored: stop renewing their leases, free the slots
                drop(slots);
            });
        }
        if closing {
            while writes.next().await.is_some() {}
            return;
        }
    }
}

async fn write(shared: &Shared, batch: Vec<TaskFinish>) {
    let mut retry = Backoff::standard();
    loop {
        let params = TaskFinishParams {
            items: batch.clone(),
            now: shared.clock.now(),
        };
        match shared.store.task_finish_many(&params).await {
            Ok(results) => {
                let failures = retry.succeed();
                if failures > 0 {
                    tracing::info!(
                        failures,
                        count = batch.len(),
                        "outcomes written after retrying"
                    );
                }
                for (r, item) in results.iter().zip(&batch).filter(|(r, _)| !r.accepted) {
                    if failures > 0
                        && r.status.is_some()
                        && r.status == terminal_status(&item.outcome)
                    {
                        // most likely an earlier try was stored but its
                        // answer was lost with the connection
                        tracing::info!(task = %r.id, "outcome found already stored (an earlier try's answer was lost)");
                        continue;
                    }
                    Counters::add(&shared.stats.stale, 1);
                    tracing::warn!(task = %r.id, "result refused: the lease was no longer live (the task was rescued)");
                }
                return;
            }
            Err(e)
                if shared
                    .shutting_down_for()
                    .is_some_and(|t| t > CLOSING_RETRY_LIMIT) =>
            {
                tracing::error!(error = %e, count = batch.len(), "could not write outcomes before shutdown; their leases will expire and the tasks run again");
                return;
            }
            Err(e) if e.is_retryable() => {
                let wait = retry.fail();
                tracing::warn!(error = %e, failures = retry.failures(), retry_in = ?wait, count = batch.len(), "writing outcomes failed; retrying");
                tokio::time::sleep(wait).await;
            }
            Err(e) if batch.len() > 1 => {
                // one bad item must not hold back the others
                tracing::warn!(error = %e, "writing a batch of outcomes failed; writing them one by one");
                for item in batch {
                    Box::pin(write(shared, vec![item])).await;
                }
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, task = ?batch.first().map(|f| f.lease.id), "an outcome could not be written; the task's lease will expire and it runs again");
                return;
            }
        }
    }
}

/// The status a terminal outcome leaves its task in.
fn terminal_status(outcome: &FinishOutcome) -> Option<Status> {
    match outcome {
        FinishOutcome::Success { .. } => Some(Status::Success),
        FinishOutcome::Fail { .. } => Some(Status::Failed),
        FinishOutcome::Abort { .. } => Some(Status::Aborted),
        FinishOutcome::Retry { .. } | FinishOutcome::Snooze { .. } | FinishOutcome::Release => None,
    }
}
